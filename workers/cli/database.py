"""Commands that prepare and describe the database and services: migrate, check, services."""

from __future__ import annotations

import argparse
from urllib.parse import urlsplit

from psycopg.conninfo import conninfo_to_dict

from shared.core.migrate import upgrade
from shared.core.preflight import run_preflight
from shared.core.settings import Settings


def migrate(args: argparse.Namespace, settings: Settings) -> int:
    revision = upgrade(settings.session_conninfo)
    print(f"database {settings.database_name} is at revision {revision}")
    return 0


def check(args: argparse.Namespace, settings: Settings) -> int:
    report = run_preflight(settings, services=not args.offline)
    print(report.render())
    return 0 if report.ok else 1


def services(args: argparse.Namespace, settings: Settings) -> int:
    """Where the fleet expects PostgreSQL and Redis (read by ops/services.sh), without credentials."""
    db = conninfo_to_dict(settings.database_conninfo)
    host = str(db.get("host") or "127.0.0.1")
    redis_url = urlsplit(settings.redis_url.get_secret_value())
    print(f"postgres {host} {db.get('port') or 5432} {db.get('dbname', '')}")
    print(f"redis {redis_url.hostname or '127.0.0.1'} {redis_url.port or 6379}")
    print(f"yclients {'configured' if settings.yclients.partner_token else 'standin'}")
    return 0
