"""Tasks of the inbound worker type (queue routed in workers/queues.py)."""

from __future__ import annotations

from workers.ping import define_ping

ping = define_ping(__name__)
