"""Infrastructure every process shares: settings, the per-process pool and its budget, the query runner,
the schema and its migrations, Redis clients, and the topology of queues and worker types."""
