#!/usr/bin/env bash
# Make this checkout ready to run: virtual environment, the project installed, PostgreSQL and Redis
# reachable (started by ops/services.sh where they are not), and the schema migrated.
# Sourced by ops/run-fleet and ops/run-tests; safe to run any number of times.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
PYTHON="${PYTHON:-python3}"

say() { printf '[bootstrap] %s\n' "$*"; }
die() { printf '[bootstrap] ERROR: %s\n' "$*" >&2; exit 1; }

command -v "$PYTHON" >/dev/null || die "no $PYTHON on PATH: install Python 3.11 or newer"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "$("$PYTHON" --version) is too old: Python 3.11 or newer is needed"

if [ ! -x "$VENV/bin/python" ]; then
    say "creating virtual environment in .venv"
    "$PYTHON" -m venv "$VENV" || die "python venv failed (on Debian: apt-get install python3-venv)"
fi

# Install exactly the locked versions (hashes checked), then the project itself without touching them.
# Reinstall only when pyproject.toml or requirements.lock changed since the last install.
stamp="$VENV/.fleet-installed"
want="$(cat pyproject.toml requirements.lock | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || [ ! -x "$VENV/bin/fleet" ]; then
    say "installing the locked dependencies (requirements.lock) and the project"
    "$VENV/bin/python" -m pip install --quiet --require-hashes --no-deps -r requirements.lock \
        || die "installing requirements.lock failed (see above)"
    "$VENV/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e . 2>/dev/null \
        || "$VENV/bin/python" -m pip install --quiet --no-deps -e . \
        || die "installing the project failed (see above)"
    "$VENV/bin/python" -m pip check >/dev/null || die "installed packages conflict: $("$VENV/bin/python" -m pip check)"
    echo "$want" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"

bash "$ROOT/ops/services.sh"
say "applying migrations"
fleet migrate
