# shellcheck shell=bash
# A private, throwaway PostgreSQL for tests and benchmarks (issue #6).
# Source it, then:
#
#   pg_start   initdb into a fresh temporary directory, start the server on
#              127.0.0.1 (the first free port from 55432 on; its unix socket
#              in the same directory), create the role `mailtls` (password
#              `mailtls`, CREATEDB) and export
#              MAILTLS_TEST_POSTGRES_URL=postgres://mailtls:mailtls@127.0.0.1:PORT/postgres
#   pg_stop    stop the server and remove the directory (safe to call twice;
#              meant for `trap pg_stop EXIT`)
#
# Debian's `postgresql` package (.ci/install-deps) provides the binaries in
# /usr/lib/postgresql/<version>/bin; PG_BIN overrides. As root the server
# runs as the `postgres` user (PostgreSQL refuses to run as root). The
# cluster is for throwaway data: fsync and synchronous_commit are off.

pg_bin_dir() {
    if [[ -n ${PG_BIN:-} ]]; then
        echo "$PG_BIN"
        return
    fi
    local dir
    dir=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)
    [[ -n $dir ]] || return 1
    echo "$dir"
}

# Runs a PostgreSQL binary as the cluster's owner.
pg_as_owner() {
    if [[ $(id -u) == 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

pg_start() {
    local bin port
    bin=$(pg_bin_dir) || {
        echo "pg_start: no PostgreSQL binaries in /usr/lib/postgresql/*/bin (Debian package postgresql)" >&2
        return 1
    }
    PG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/mailtls-pg.XXXXXX") || return 1
    [[ $(id -u) == 0 ]] && chown postgres: "$PG_DIR"
    if ! pg_as_owner "$bin/initdb" -D "$PG_DIR/data" -U postgres --auth=trust \
        -E UTF8 --locale=C.UTF-8 --no-sync >"$PG_DIR/initdb.log" 2>&1; then
        echo "pg_start: initdb failed:" >&2
        cat "$PG_DIR/initdb.log" >&2
        return 1
    fi
    for port in $(seq 55432 55531); do
        if ss -Hltn "sport = :$port" 2>/dev/null | grep -q .; then
            continue
        fi
        if pg_as_owner "$bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 30 \
            -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$PG_DIR \
                -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
                -c max_connections=300 -c shared_buffers=64MB" \
            start >/dev/null; then
            PG_PORT=$port
            break
        fi
    done
    if [[ -z ${PG_PORT:-} ]]; then
        echo "pg_start: the server did not start:" >&2
        cat "$PG_DIR/server.log" >&2 2>/dev/null
        return 1
    fi
    if ! pg_as_owner "$bin/psql" -q -h "$PG_DIR" -p "$PG_PORT" -U postgres -d postgres \
        -c "CREATE ROLE mailtls LOGIN CREATEDB PASSWORD 'mailtls'" >/dev/null; then
        echo "pg_start: cannot create the role mailtls" >&2
        return 1
    fi
    export MAILTLS_TEST_POSTGRES_URL="postgres://mailtls:mailtls@127.0.0.1:$PG_PORT/postgres"
    echo "pg_start: PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$PG_PORT ($PG_DIR)"
}

pg_stop() {
    local bin
    [[ -n ${PG_DIR:-} && -d $PG_DIR ]] || return 0
    if bin=$(pg_bin_dir) && [[ -f $PG_DIR/data/postmaster.pid ]]; then
        pg_as_owner "$bin/pg_ctl" -D "$PG_DIR/data" -m immediate -w stop >/dev/null 2>&1
    fi
    rm -rf "$PG_DIR"
    unset PG_DIR PG_PORT MAILTLS_TEST_POSTGRES_URL
}
