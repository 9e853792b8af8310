#!/usr/bin/env bash
# The issue #6 benchmark of the check API in a fleet: two `mailtls serve`
# nodes on ONE PostgreSQL (a throwaway cluster, scripts/postgres.sh), and
# `GET /api/v1/check?address=...` for an address whose answer is in the
# shared TLS memory. Three measurements in one run, same wrk settings:
#   1. one node alone (the other idle);
#   2. both nodes at once, one wrk each (the fleet's total);
#   3. the same single-node run on SQLite, for reference.
# Writes docs/benchmarks-fleet.md (and target/bench/fleet.md).
#
# The memory store's own operations per second (look-ups and records, both
# backends) are `cargo bench -p mailtls-store --bench memory` (docs/store.md).
#
# usage: scripts/bench-fleet.sh [--no-docs]
# env:   CONNECTIONS=16 DURATION=10s MAILTLS=path (default: a release build)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CONNECTIONS=${CONNECTIONS:-16}
DURATION=${DURATION:-10s}
WRITE_DOCS=1
for arg in "$@"; do
    case $arg in
    --no-docs) WRITE_DOCS=0 ;;
    -h | --help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
    esac
done

die() { echo "bench-fleet: $*" >&2; exit 1; }
for tool in wrk:wrk curl:curl python3:python3 psql:postgresql-client sqlite3:sqlite3; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || die "${tool%%:*} missing (Debian package ${tool#*:}; run .ci/install-deps)"
done
# shellcheck source=scripts/postgres.sh
source "$ROOT/scripts/postgres.sh"

if [[ -z ${MAILTLS:-} ]]; then
    (cd "$ROOT" && cargo build --release -p mailtls >&2)
    MAILTLS=$ROOT/target/release/mailtls
fi
[[ -x $MAILTLS ]] || die "no mailtls binary at $MAILTLS"

WORK=$(mktemp -d /tmp/mailtls-bench-fleet.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    pg_stop
    rm -rf "$WORK"
}
trap cleanup EXIT

pg_start >&2
DB_URL="${MAILTLS_TEST_POSTGRES_URL%/*}/mailtls_bench"
psql "$MAILTLS_TEST_POSTGRES_URL" -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE mailtls_bench" >/dev/null

# shellcheck source=scripts/bench/web-lib.sh
source "$ROOT/scripts/bench/web-lib.sh"

PG_STORE="[store]
url = \"$DB_URL\""
PORT_A=$(free_port) PORT_B=$(free_port) PORT_S=$(free_port)
start_web_node node-a "$PORT_A" "$PG_STORE
node = \"node-a\""
start_web_node node-b "$PORT_B" "$PG_STORE
node = \"node-b\""
start_web_node sqlite-node "$PORT_S"

# A learned memory entry, as a delivery records it, in both stores.
now=$(date +%s)
ENTRY="INSERT INTO tls_memory (kind, name, first_tls_at, last_tls_at, last_seen_at, best_level, last_level, protocol, cipher)
VALUES ('domain', 'bench.example', $((now - 86400)), $now, $now, 1, 1, 'TLSv1.3', 'TLS_AES_256_GCM_SHA384');"
psql "$DB_URL" -q -v ON_ERROR_STOP=1 -c "$ENTRY" >/dev/null
sqlite3 "$WORK/sqlite-node/mailtls.sqlite" "PRAGMA busy_timeout = 5000; $ENTRY" >/dev/null

PATH_Q="/api/v1/check?address=alice@bench.example"
for port in "$PORT_A" "$PORT_B" "$PORT_S"; do
    body=$(curl -sS --fail "http://127.0.0.1:$port$PATH_Q") || die "GET on port $port failed"
    [[ $body == *'"source":"memory"'* && $body == *'"status":"SSL ok"'* ]] ||
        die "port $port did not answer from the memory: $body"
done
curl -sS --fail "http://127.0.0.1:$PORT_A/api/v1/health" | grep -q '"backend":"postgres"' || die "node-a is not on PostgreSQL"

wrk_run() { # PORT OUT
    wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "http://127.0.0.1:$1$PATH_Q" >"$2"
}
for port in "$PORT_A" "$PORT_B" "$PORT_S"; do
    wrk -t1 -c"$CONNECTIONS" -d2s "http://127.0.0.1:$port$PATH_Q" >/dev/null
done

wrk_run "$PORT_A" "$WORK/one.txt"
wrk_run "$PORT_A" "$WORK/both-a.txt" &
wrk_a=$!
wrk_run "$PORT_B" "$WORK/both-b.txt"
wait "$wrk_a"
wrk_run "$PORT_S" "$WORK/sqlite.txt"

one=$(rps "$WORK/one.txt") a=$(rps "$WORK/both-a.txt") b=$(rps "$WORK/both-b.txt") s=$(rps "$WORK/sqlite.txt")
total=$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", a + b }')
queries=$(psql "$DB_URL" -At -c "SELECT xact_commit FROM pg_stat_database WHERE datname = 'mailtls_bench'")
COMMIT=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
CPU=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
table="| setup | req/s | p99 |
|---|---:|---:|
| one node on PostgreSQL (the other idle) | $one | $(p99 "$WORK/one.txt") ms |
| two nodes on one PostgreSQL, at once: node A | $a | $(p99 "$WORK/both-a.txt") ms |
| two nodes on one PostgreSQL, at once: node B | $b | $(p99 "$WORK/both-b.txt") ms |
| **two nodes, total** | **$total** | |
| one node on SQLite (reference) | $s | $(p99 "$WORK/sqlite.txt") ms |

PostgreSQL transactions committed in the database during the whole run: $queries."
summary="\`GET $PATH_Q\` answered from the shared TLS memory; wrk -t1 -c$CONNECTIONS -d$DURATION --latency per node after a 2 s warm-up; PostgreSQL $(pg_bin_dir | grep -o '[0-9]*' | head -1) throwaway cluster (fsync off) on the same machine; $(nproc) CPUs ($CPU) shared by the nodes, the database and both wrk; $(date -u +%Y-%m-%dT%H:%MZ); mailtls built from $COMMIT."
mkdir -p "$ROOT/target/bench"
printf '%s\n\n%s\n' "$table" "$summary" | tee "$ROOT/target/bench/fleet.md"

if ((WRITE_DOCS)); then
    cat >"$ROOT/docs/benchmarks-fleet.md" <<EOF
# Benchmark: the check API served by two nodes on one PostgreSQL (issue #6)

\`scripts/bench-fleet.sh\` starts a throwaway PostgreSQL, two \`mailtls serve\`
nodes sharing it (their own data directories and web ports), and a third
node on SQLite for reference; it records one learned memory entry and runs
wrk against \`GET /api/v1/check\` for it: one node alone, then both nodes at
once (one wrk each), then the SQLite node.

## Latest run

$table

$summary

## Reading it

Each node reads a domain's memory entry from the database at most every
2 s (\`crates/web/src/probes.rs\`, \`ENTRY_TTL\`), so the database is not on
the hot path of this benchmark: its transaction count above stays small
while the nodes answer tens of thousands of requests. On this 2-core
machine the two nodes, the database and two wrk processes share the same
cores, so "two nodes, total" shows sharing, not scaling; on separate
machines each node's rate is that of the single node. The store's own
operations per second (look-ups and records on SQLite and PostgreSQL) are
in \`docs/store.md\`.
EOF
fi
