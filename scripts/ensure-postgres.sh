#!/usr/bin/env bash
# Make sure a PostgreSQL server answers on 127.0.0.1:5432 (the rejections tests create and
# drop a database of their own on it); start the local cluster if it is down.
set -euo pipefail

PORT="${ROUTERD_TEST_PG_PORT:-5432}"
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

if ! port_open; then
    if command -v pg_lsclusters >/dev/null 2>&1 && pg_lsclusters -h 2>/dev/null | grep -q .; then
        # Debian's clusters: start each one that is down (normally just `15 main`).
        pg_lsclusters -h | while read -r version cluster port status _; do
            if [ "$status" != "online" ]; then
                echo "Starting PostgreSQL $version/$cluster (port $port)..." >&2
                pg_ctlcluster "$version" "$cluster" start || true
            fi
        done
    elif command -v service >/dev/null 2>&1 && service postgresql status >/dev/null 2>&1 \
        || [ -x /etc/init.d/postgresql ]; then
        echo "Starting PostgreSQL (service postgresql start)..." >&2
        service postgresql start || true
    else
        echo "No PostgreSQL answers on 127.0.0.1:$PORT and no local server is installed." >&2
        echo "Install it (Debian: apt-get install postgresql) with trust for user postgres" >&2
        echo "on 127.0.0.1, or run the tests on a machine that has one." >&2
        exit 1
    fi
    for _ in $(seq 1 60); do
        port_open && break
        sleep 1
    done
    if ! port_open; then
        echo "PostgreSQL did not come up on 127.0.0.1:$PORT within a minute;" >&2
        echo "see /var/log/postgresql/ and 'pg_lsclusters'." >&2
        exit 1
    fi
    echo "PostgreSQL is up." >&2
fi
# The tests connect as postgres without a password: say so now rather than in every test.
if command -v psql >/dev/null 2>&1 \
    && ! psql -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -w -tAc 'select 1' >/dev/null 2>&1; then
    echo "PostgreSQL answers on 127.0.0.1:$PORT but user postgres cannot log in without a" >&2
    echo "password; the rejections tests need 'host all postgres 127.0.0.1/32 trust' in" >&2
    echo "pg_hba.conf (or ROUTERD_TEST_PG_URL naming a user and password that work)." >&2
    exit 1
fi
