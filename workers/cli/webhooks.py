"""`fleet webhook-secret`: each salon's own webhook secret, set, rotated or revoked by an operator.

The secret is printed once and stored only as its hash: lost, it is replaced, never shown again.
"""

from __future__ import annotations

import argparse
import secrets
import sys

from shared.core.db import transaction
from shared.core.settings import Settings
from shared.data.repositories.webhook_events import WebhookSecretRepository

SECRET_BYTES = 32  # 256 random bits: a fast hash of it needs no salt and no stretching


def new_secret() -> str:
    """A URL-safe random secret (letters, digits, `-` and `_`), fit for the webhook's path or header."""
    return secrets.token_urlsafe(SECRET_BYTES)


def webhook_secret(args: argparse.Namespace, settings: Settings) -> int:
    """set: a new secret, every older one invalid at once; rotate: a new one, the older valid for the grace
    period; revoke: the salon's webhooks refused until a secret is set again."""
    company: int = args.company
    repository = WebhookSecretRepository()
    if args.action == "revoke":
        removed = repository.revoke(company)
        print(f"company {company}: {removed} webhook secret(s) revoked; its webhooks are refused until `set`")
        return 0
    if company not in settings.yclients.company_ids:
        print(
            f"fleet webhook-secret: company {company} is not in FLEET_YCLIENTS__COMPANY_IDS; its webhooks would be"
            " refused",
            file=sys.stderr,
        )
    secret = new_secret()
    grace = settings.yclients.webhook_secret_grace_hours if args.action == "rotate" else None
    with transaction() as conn:
        repository.replace(company, secret, grace, conn=conn)
    print(f"company {company}: new webhook secret (shown once, stored only as its hash):")
    print(secret)
    print(f"URL for the salon's YClients webhook settings: https://<public host>/yclients/webhook/{company}/{secret}")
    print(f"(or /yclients/webhook/{company} with the header X-Fleet-Webhook-Secret: {secret})")
    if grace is not None:
        print(f"the previous secret stays valid for {grace:g} h")
    return 0
