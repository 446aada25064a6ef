"""One repository per domain table or group of tables, each a class on shared/data/repository.py."""
