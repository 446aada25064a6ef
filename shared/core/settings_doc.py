"""docs/settings.md, generated from the Settings model, so the list of settings cannot drift from the code.

.venv/bin/python -m shared.core.settings_doc > docs/settings.md      (a test keeps the file current)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from shared.core.settings import Settings

HEADER = """# Settings

Every setting of the fleet, generated from `shared/core/settings.py` (the only place configuration comes from):
`.venv/bin/python -m shared.core.settings_doc > docs/settings.md`. Read from the environment and an optional
`.env` file in the working directory. `DATABASE_URL`, `REDIS_URL` and `SENTRY_DSN` keep their conventional
names; everything else is prefixed `FLEET_`, nested with `__` (`FLEET_POOL__MAX_SIZE=3`). Secrets are
`SecretStr`: they never appear in logs, reprs or error messages. In production the fleet refuses to start,
listing every problem at once, while a secret is missing or still the example's placeholder (see
[deployment](deployment.md)).

| variable | default | meaning |
|---|---|---|
"""


def _default(info: FieldInfo) -> str:
    if info.default_factory is not None:
        value: Any = info.default_factory()  # type: ignore[call-arg]
    else:
        value = info.default
    if value is None:
        return "unset"
    if isinstance(value, SecretStr):
        return f"`{value.get_secret_value()}`"  # a default holds no secret
    if isinstance(value, Path):
        return f"`{value}`"
    if isinstance(value, BaseModel):
        return ""
    return f"`{value}`"


def _rows(model: type[BaseModel], prefix: str) -> list[str]:
    rows = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows += _rows(annotation, f"{prefix}{name.upper()}__")
            continue
        aliases = getattr(info.validation_alias, "choices", None)
        variable = aliases[0] if aliases else f"{prefix}{name.upper()}"
        meaning = (info.description or _inherited_description(model, name)).replace("|", "\\|")
        rows.append(f"| `{variable}` | {_default(info)} | {meaning} |")
    return rows


def _inherited_description(model: type[BaseModel], name: str) -> str:
    """A worker type's own defaults redeclare the base class's fields; the meaning is the base's."""
    for base in model.__mro__[1:]:
        fields = getattr(base, "model_fields", {})
        if name in fields and fields[name].description:
            return fields[name].description
    return ""


def render() -> str:
    return HEADER + "\n".join(_rows(Settings, "FLEET_")) + "\n"


if __name__ == "__main__":
    print(render(), end="")
