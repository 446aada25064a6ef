#!/usr/bin/env bash
# Make sure the PostgreSQL and Redis named by the settings are reachable. Running ones are used as they are;
# local ones that are down are started (installing Debian's packages first when run as root).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN_DIR="$ROOT/.run"
mkdir -p "$RUN_DIR"

say() { printf '[services] %s\n' "$*"; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }

listening() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
is_local() { case "$1" in 127.*|localhost|::1|"") return 0 ;; *) return 1 ;; esac; }
wait_for() { # host port what
    for _ in $(seq 1 60); do listening "$1" "$2" && return 0; sleep 0.5; done
    die "$3 did not start listening on $1:$2 within 30 s"
}

read -r _ PG_HOST PG_PORT _ < <(fleet services | grep '^postgres ')
read -r _ REDIS_HOST REDIS_PORT < <(fleet services | grep '^redis ')

apt_install() {
    [ "$(id -u)" = 0 ] || die "$1 is not installed; install the Debian package(s) $* (needs root)"
    command -v apt-get >/dev/null || die "$1 is not installed and apt-get is missing: install $* by hand"
    say "installing $* with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

pg_bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

start_postgres() {
    if [ -z "$(pg_bindir)" ]; then apt_install postgresql postgresql-contrib; fi
    local bindir version
    bindir="$(pg_bindir)"
    version="$(basename "$(dirname "$bindir")")"
    if [ "$(id -u)" = 0 ]; then
        # initdb refuses to run as root: use the distribution's cluster, creating one if there is none.
        if ! pg_lsclusters -h 2>/dev/null | awk '{print $1" "$2}' | grep -q "^$version main$"; then
            say "creating PostgreSQL $version cluster 'main' on port $PG_PORT (trust on 127.0.0.1)"
            pg_createcluster "$version" main -p "$PG_PORT" -- --auth-host=trust --auth-local=peer >/dev/null
        fi
        say "starting PostgreSQL $version cluster 'main'"
        pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    else
        local data="$RUN_DIR/postgres"
        if [ ! -f "$data/PG_VERSION" ]; then
            say "initialising a private PostgreSQL $version cluster in .run/postgres (trust, 127.0.0.1 only)"
            "$bindir/initdb" -D "$data" -U postgres --auth=trust >/dev/null
        fi
        say "starting the private PostgreSQL cluster on 127.0.0.1:$PG_PORT"
        "$bindir/pg_ctl" -D "$data" -l "$RUN_DIR/postgres.log" -w \
            -o "-p $PG_PORT -k $data -c listen_addresses=127.0.0.1" start >/dev/null
    fi
    wait_for "$PG_HOST" "$PG_PORT" PostgreSQL
}

start_redis() {
    command -v redis-server >/dev/null || apt_install redis-server
    mkdir -p "$RUN_DIR/redis"
    say "starting Redis on 127.0.0.1:$REDIS_PORT (no persistence, noeviction)"
    redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
        --maxmemory-policy noeviction --dir "$RUN_DIR/redis" --logfile "$RUN_DIR/redis/redis.log"
    wait_for "$REDIS_HOST" "$REDIS_PORT" Redis
}

if listening "$PG_HOST" "$PG_PORT"; then
    say "using PostgreSQL on $PG_HOST:$PG_PORT"
elif is_local "$PG_HOST"; then
    start_postgres
else
    die "PostgreSQL at $PG_HOST:$PG_PORT is unreachable; start it or correct DATABASE_URL"
fi

if listening "$REDIS_HOST" "$REDIS_PORT"; then
    say "using Redis on $REDIS_HOST:$REDIS_PORT"
elif is_local "$REDIS_HOST"; then
    start_redis
else
    die "Redis at $REDIS_HOST:$REDIS_PORT is unreachable; start it or correct REDIS_URL"
fi

command -v pg_dump >/dev/null || say "note: pg_dump is not on PATH; backups need the PostgreSQL client"
