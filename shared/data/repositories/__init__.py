"""One repository per domain table; see shared/repository.py for the shared query building."""
