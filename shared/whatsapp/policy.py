"""Which WhatsApp (Baileys) keys the fleet may delete, and when. Deleting the wrong ones breaks the session.

Facts and policy: docs/whatsapp-keys.md. The creds document (table whatsapp_auth) is never touched at all.
"""

from __future__ import annotations

from enum import StrEnum


class Retention(StrEnum):
    NEVER = "never"  # the session needs them; the gateway manages them itself
    EXPIRED = "expired"  # caches and tokens: may go once expires_at has passed
    IDLE = "idle"  # per-contact state: only after long idleness (days in settings)


POLICY: dict[str, Retention] = {
    "pre-key": Retention.NEVER,  # unused ones are still needed to decrypt ("Invalid PreKey ID")
    "app-state-sync-key": Retention.NEVER,  # "myAppStateKey not present" without them
    "app-state-sync-version": Retention.NEVER,  # losing them forces a heavy full resync
    "sender-key-memory": Retention.EXPIRED,
    "device-list": Retention.EXPIRED,
    "tctoken": Retention.EXPIRED,  # but never its __index entry
    "session": Retention.IDLE,
    "sender-key": Retention.IDLE,
    "lid-mapping": Retention.IDLE,
    "identity-key": Retention.IDLE,
}

PROTECTED_KEY_IDS: dict[str, frozenset[str]] = {"tctoken": frozenset({"__index"})}


def retention_of(key_type: str) -> Retention | None:
    """None for a type the policy does not know: such keys are kept and reported."""
    return POLICY.get(key_type)
