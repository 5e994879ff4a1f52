#!/usr/bin/env bash
# Start a throwaway PostgreSQL server on 127.0.0.1 for the multi-machine sweep tests and print
# its URL on stdout (everything else goes to stderr):
#   export CHARLSTM_TEST_POSTGRES_URL=$(.ci/postgres.sh)
# Needs root (apt-get, and running the server as the postgres user). Idempotent: a server
# already running in the data folder is reused.
set -euo pipefail

PORT="${CHARLSTM_PG_PORT:-54329}"
DATA="${CHARLSTM_PG_DATA:-/tmp/charlstm-postgres}"
DB="${CHARLSTM_PG_DB:-charlstm_test}"
PASSWORD="${CHARLSTM_PG_PASSWORD:-charlstm}"

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    echo "installing postgresql (apt-get)" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
fi
BIN="$(dirname "$(ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)")"
as_postgres() { runuser -u postgres -- "$@"; }

if [ ! -f "$DATA/PG_VERSION" ]; then
    mkdir -p "$DATA"
    chown postgres:postgres "$DATA"
    chmod 700 "$DATA"
    pwfile="$(mktemp)"
    echo "$PASSWORD" > "$pwfile"
    chown postgres "$pwfile"
    as_postgres "$BIN/initdb" -D "$DATA" -U postgres --auth=scram-sha-256 --pwfile="$pwfile" >&2
    rm -f "$pwfile"
fi

if ! as_postgres "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
    as_postgres "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w \
        -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DATA" start >&2
fi

export PGPASSWORD="$PASSWORD"
if ! "$BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = '$DB'" | grep -q 1; then
    "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres "$DB"
fi
echo "postgresql://postgres:$PASSWORD@127.0.0.1:$PORT/$DB"
