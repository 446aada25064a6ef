#!/usr/bin/env bash
# Make this checkout ready to run: virtual environment, the project installed, PostgreSQL and Redis
# reachable (started by ops/services.sh where they are not, in development and test only), and the schema
# migrated.
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

reachable() { # host port: something listens there (a directory host is PostgreSQL's unix socket)
    case "$1" in
        /*) [ -S "$1/.s.PGSQL.$2" ] ;;
        *) timeout 5 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null ;;
    esac
}

# Production is given its PostgreSQL and Redis; nothing is started for it. What ops/services.sh starts has no
# password, no TLS and no persistence: fit for a laptop or a test run, not for the salons' data.
require_running_services() { # environment
    local where what host port _rest name fix line unreachable=()
    where="$(fleet services)" || die "the settings are refused (above): fix them, then run bootstrap again"
    while read -r what host port _rest; do
        case "$what" in
            postgres) name=PostgreSQL fix="start it, or correct DATABASE_URL" ;;
            redis) name=Redis fix="start it (with requirepass and appendonly yes), or correct REDIS_URL" ;;
            *) continue ;;
        esac
        reachable "$host" "$port" || unreachable+=("$name at $host:$port is not reachable: $fix")
    done <<< "$where"
    if [ "${#unreachable[@]}" -gt 0 ]; then
        for line in "${unreachable[@]}"; do printf '[bootstrap] ERROR: %s\n' "$line" >&2; done
        die "FLEET_ENVIRONMENT=$1: bootstrap starts no service here (docs/deployment.md)"
    fi
    say "using PostgreSQL and Redis as they run (FLEET_ENVIRONMENT=$1: bootstrap starts none)"
}

fleet_environment="$("$VENV/bin/python" -c 'from shared.core.settings import configured_environment as e; print(e())')" \
    || die "FLEET_ENVIRONMENT could not be read (see above)"
case "$fleet_environment" in
    development | test) bash "$ROOT/ops/services.sh" ;;
    *) require_running_services "$fleet_environment" ;;
esac
say "applying migrations"
fleet migrate
