"""What tests and benchmarks both use to drive a real fleet: start its processes, seed a salon, point workers
at the stand-ins, watch its connections. Benchmarks never import `tests`; tests may import this."""
