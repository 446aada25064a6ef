"""Every configured secret, masked wherever a fleet process writes text down: log lines and Sentry events.

Secrets reach text by accident, not by design: Telegram's Bot API takes the bot's token in the URL path and the
HTTP client logs every URL it requests at INFO (Sentry keeps that line, and the request, as breadcrumbs); an
error may quote a connection string. Rather than trusting every call site, each process collects the secret
values from its settings (every `SecretStr`, nested settings included, and the password inside each URL) and
masks them in every record its log handlers write (`SecretFilter`, put on the root's handlers of each process
by `install_secret_filter`) and in every Sentry event and breadcrumb (shared/observability/sentry.py).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from psycopg.conninfo import conninfo_to_dict
from pydantic import BaseModel, SecretStr

MASK = "[secret]"
# Shorter values are not masked: they would mask ordinary words in every line, and are guessed anyway.
MIN_MASKED_CHARS = 4
# URLs whose user name is itself the credential: a Sentry DSN's key (a database URL's user is not secret).
USER_IS_CREDENTIAL = frozenset({"sentry_dsn"})
# HTTP clients whose own loggers write request URLs: masked at the logger, before any handler or Sentry sees them.
HTTP_CLIENT_LOGGERS = ("httpx",)
_PLAIN = logging.Formatter()


def _url_credentials(text: str, user_is_credential: bool) -> set[str]:
    """The password (and a DSN's key) in a URL, as written and decoded; none in a URL without credentials."""
    url = urlsplit(text)
    parts = [url.password, url.username if user_is_credential else None]
    found = {form for part in parts if part for form in (part, unquote(part))}
    if url.scheme.startswith("postgres"):
        found |= _conninfo_password(text) or set()  # libpq also takes `?password=...`
    return found


def _conninfo_password(text: str) -> set[str] | None:
    """The password of a PostgreSQL URL or conninfo string; None when `text` is neither."""
    try:
        password = conninfo_to_dict(text).get("password")
    except Exception:  # noqa: BLE001  (psycopg raises ProgrammingError; anything unparsable is a plain token)
        return None
    return {str(password)} if password else set()


def secret_forms(text: str, *, user_is_credential: bool = False) -> set[str]:
    """What to mask for one secret setting: a token as it is and percent-encoded (it may travel in a URL); a URL
    or conninfo whole and its password, or nothing when it carries no credential (a URL is not a secret)."""
    if "://" in text:
        credentials = _url_credentials(text, user_is_credential)
        forms = {text, *credentials} if credentials else set()
    elif "=" in text and (password := _conninfo_password(text)) is not None:
        forms = {text, *password}
    else:
        forms = {text, quote(text, safe="")}
    return {form for form in forms if len(form) >= MIN_MASKED_CHARS}


def secret_values(model: BaseModel) -> set[str]:
    """Every secret value set in `model` (the Settings), nested settings included, in every form it may take."""
    found: set[str] = set()

    def walk(value: Any, name: str) -> None:
        if isinstance(value, SecretStr):
            found.update(secret_forms(value.get_secret_value(), user_is_credential=name in USER_IS_CREDENTIAL))
        elif isinstance(value, BaseModel):
            for field in type(value).model_fields:
                walk(getattr(value, field), field)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item, name)
        elif isinstance(value, list | tuple | set | frozenset):
            for item in value:
                walk(item, name)

    walk(model, "")
    return found


class SecretMasker:
    """Replaces each of a set of values with MASK in text, and in every string of a nested event."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        ordered = sorted(set(secrets), key=len, reverse=True)  # the longest first: a URL before its password
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def mask(self, text: str) -> str:
        return self._pattern.sub(MASK, text) if self._pattern is not None else text

    def mask_all(self, value: Any) -> Any:
        """`value` with every string in it masked (dicts, lists and tuples walked; other values kept)."""
        if self._pattern is None:
            return value
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, dict):
            return {key: self.mask_all(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self.mask_all(item) for item in value]
        return value


_masker = SecretMasker()


def configure_secrets(settings: BaseModel) -> SecretMasker:
    """Make `settings`' secrets the ones this process masks (its filters and Sentry scrubbers read them)."""
    global _masker  # one set of secrets per process, like its settings
    _masker = SecretMasker(secret_values(settings))
    return _masker


def current_masker() -> SecretMasker:
    return _masker


class SecretFilter(logging.Filter):
    """Masks the process's secrets in a record's message, traceback and stack before a handler writes it.

    The record is changed in place, so every handler after this one (Sentry's logging integration included)
    gets the masked text too.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        masker = current_masker()
        if not masker:
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001  (a broken record: the handler would print its arguments raw)
            record.msg, record.args = masker.mask(f"{record.msg} {record.args!r}"), ()
        else:
            masked = masker.mask(message)
            if masked != message:  # otherwise left alone: Sentry groups log events by the unformatted message
                record.msg, record.args = masked, ()
        if record.exc_info and isinstance(record.exc_info, tuple) and not record.exc_text:
            text = _PLAIN.formatException(record.exc_info)
            if masker.mask(text) != text:
                record.exc_text = masker.mask(text)
        elif record.exc_text:
            record.exc_text = masker.mask(record.exc_text)
        if record.stack_info:
            record.stack_info = masker.mask(record.stack_info)
        return True


def _add_once(target: logging.Handler | logging.Logger) -> None:
    if not any(isinstance(existing, SecretFilter) for existing in target.filters):
        target.addFilter(SecretFilter())


def install_secret_filter(settings: BaseModel, *loggers: logging.Logger | None) -> None:
    """Mask `settings`' secrets in every line the root logger's handlers write (and `loggers`' own handlers, for
    loggers that do not propagate), and in the HTTP clients' records at their source. Safe to repeat: call it
    again whenever a process (re)configures its handlers."""
    configure_secrets(settings)
    for logger in (logging.getLogger(), *loggers):
        if logger is not None:
            for handler in logger.handlers:
                _add_once(handler)
    for name in HTTP_CLIENT_LOGGERS:
        _add_once(logging.getLogger(name))
