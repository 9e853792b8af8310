#!/usr/bin/env bash
# Relay throughput, mailtls serve versus a Postfix relay configured the same
# way, in one run (issue #3's benchmark; see docs/benchmarks-relay.md).
#
#   smtp-source --plaintext--> relay (mailtls serve | Postfix) --STARTTLS-->
#       sink (a Postfix MX on loopback that discards, found through DNS: a
#       signed zone served by NSD, resolved by a validating unbound)
#
# Both relays take the mail from a trusted network (smtp-source's address,
# 127.0.0.1), keep their queue on disk and fsync a message before the 250
# to DATA, look up the MX and deliver with opportunistic STARTTLS (Postfix:
# smtp_tls_security_level = may; mailtls: its policy, which for a signed
# domain without TLSA is the same: try STARTTLS). One after the other, same
# sink, same DNS. Reports messages/second end to end (first connection of
# smtp-source to the last message discarded by the sink) and the relay's CPU
# time per message (user+sys of the relay's own processes only), and the
# ratios mailtls/Postfix. Markdown table on stdout and in target/bench/relay.md.
#
# usage: scripts/bench-relay.sh
# env: N_MESSAGES (2000)  SIZE bytes of body (4096)  SESSIONS smtp-source -s (8)
#      RECIPIENTS per message (1)  WARMUP messages first, not measured (50)
#      MAILTLS=path (default: cargo build --release -p mailtls, then that)
#      SOURCE_FLAGS extra smtp-source flags, e.g. "-d" (one connection per session)
#      KEEP_ON_FAILURE=1 keeps the work directory after a failure
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
NSD_ADDR=${NSD_ADDR:-127.64.0.1}
UNBOUND_ADDR=${UNBOUND_ADDR:-127.64.0.2}
UNBOUND_PLAIN_ADDR=${UNBOUND_PLAIN_ADDR:-127.64.0.3}
# shellcheck source=scripts/interop/lib.sh
. "$ROOT/scripts/interop/lib.sh"
# shellcheck source=scripts/relay/lib.sh
. "$ROOT/scripts/relay/lib.sh"

SINK_ADDR=${SINK_ADDR:-127.37.0.1}         # Postfix MX, STARTTLS, discard
MAILTLS_ADDR=${MAILTLS_ADDR:-127.37.0.10}  # mailtls serve, submission port 587
POSTFIX_ADDR=${POSTFIX_ADDR:-127.37.0.11}  # Postfix relay, smtpd on 25
N_MESSAGES=${N_MESSAGES:-2000}
SIZE=${SIZE:-4096}
SESSIONS=${SESSIONS:-8}
RECIPIENTS=${RECIPIENTS:-1}
WARMUP=${WARMUP:-50}
SOURCE_FLAGS=${SOURCE_FLAGS:-}
OUT=$ROOT/target/bench/relay.md

case "$*" in -h | --help) sed -n '2,24p' "$0"; exit 0 ;; esac
(($# == 0)) || { echo "no arguments; see --help" >&2; exit 2; }

world_require smtp-source:postfix unshare:util-linux script:util-linux
if [[ -z ${MAILTLS:-} ]]; then
    # Always through cargo (a no-op when fresh): never a stale binary.
    log "building mailtls (cargo build --release -p mailtls --locked)"
    (cd "$ROOT" && cargo build -q --release -p mailtls --locked) || die "cargo build --release -p mailtls failed"
    MAILTLS=$ROOT/target/release/mailtls
fi
"$MAILTLS" serve --help >/dev/null 2>&1 || die "$MAILTLS has no serve command (stale build?)"

SHM=""
bench_stop() {
    local rc=$?
    (exit "$rc")
    world_stop
    [[ -n $SHM ]] && rm -rf "$SHM"
    return "$rc"
}
trap bench_stop EXIT
trap 'exit 130' INT TERM
world_init

# ------------------------------------------------------------ the world ----

pki_make mx-sink.relaybench.test
{
    soa_ns relaybench.test.
    printf 'sink     MX 10 mx-sink\nmx-sink  A  %s\n' "$SINK_ADDR"
} >"$W/zones/relaybench.test.zone"
dns_world relaybench.test:signed:nsec3
nsd_start "${NSD_ZONES[@]}"
unbound_start validating "$UNBOUND_ADDR" validate
printf 'nameserver %s\noptions edns0 trust-ad\n' "$UNBOUND_ADDR" >"$W/resolv.conf"

# The sink's queue on a tmpfs: its fsyncs are the same for both relays and
# not what we measure; they would only eat the cores the relays need.
SHM=$(mktemp -d /dev/shm/mailtls-bench-sink.XXXXXX)
chmod 755 "$SHM"
pf_sink sink "$SINK_ADDR" mx-sink.relaybench.test "$SHM"

# mailtls: a new data_dir (queue, spool, TLS memory) below $W, on disk.
port_free "$MAILTLS_ADDR" 587 tcp
CONF=$W/mailtls.toml
mkdir -p "$W/mailtls"
cat >"$CONF" <<EOF
data_dir = "$W/mailtls"
hostname = "mailtls.relaybench.test"

[dns]
resolver = "$UNBOUND_ADDR:53"
mode = "trust-ad"

[probe]
allow_private = true

[smtp.submission]
listen = ["$MAILTLS_ADDR:587"]
listen_tls = []

[relay]
trusted_networks = ["127.0.0.1/32"]
retry_base_secs = 5
retry_max_secs = 10
EOF

# ------------------------------------------------------------- running -----

TICKS=$(getconf CLK_TCK)
calc() { awk "BEGIN { printf \"%.6f\", $1 }"; } # EXPR: floating point

# run NAME TARGET PIDFN : warm-up, then the measured batch through TARGET
# (host:port); PIDFN prints the relay's root pid. Sets R_* for NAME.
declare -A R_SECS R_SUBMIT R_CPU R_MSGS R_L0 R_SESS
run() {
    local name=$1 target=$2 pidfn=$3 pid c0 want t0 t1 ts cpu0 cpu1 end n
    pid=$($pidfn)
    if ((WARMUP > 0)); then
        c0=$(pf_sink_count sink)
        # shellcheck disable=SC2086 # SOURCE_FLAGS is a word list
        smtp-source $SOURCE_FLAGS -s "$SESSIONS" -m "$WARMUP" -l "$SIZE" -r "$RECIPIENTS" \
            -M source.relaybench.test -f bench@source.relaybench.test -t rcpt@sink.relaybench.test "$target" ||
            die "$name: smtp-source (warm-up) failed"
        want=$((c0 + WARMUP * RECIPIENTS))
        end=$(($(date +%s) + 120))
        while (($(pf_sink_count sink) < want)); do
            (($(date +%s) < end)) || die "$name: warm-up not delivered within 120 s ($(pf_sink_count sink)/$want)"
            sleep 0.2
        done
    fi
    c0=$(pf_sink_count sink)
    want=$((c0 + N_MESSAGES * RECIPIENTS))
    R_L0[$name]=$(wc -l <"$W/postfix/sink/maillog")
    cpu0=$(tree_ticks "$pid")
    t0=$(date +%s.%N)
    log "$name: $N_MESSAGES messages × $RECIPIENTS recipient(s), ${SIZE} bytes, $SESSIONS sessions -> $target"
    # shellcheck disable=SC2086 # SOURCE_FLAGS is a word list
    smtp-source $SOURCE_FLAGS -s "$SESSIONS" -m "$N_MESSAGES" -l "$SIZE" -r "$RECIPIENTS" \
        -M source.relaybench.test -f bench@source.relaybench.test -t rcpt@sink.relaybench.test "$target" ||
        die "$name: smtp-source failed"
    ts=$(date +%s.%N)
    end=$(($(date +%s) + 60 + N_MESSAGES * RECIPIENTS / 10))
    while :; do
        n=$(pf_sink_count sink)
        ((n >= want)) && break
        (($(date +%s) < end)) || die "$name: only $((n - c0)) of $((want - c0)) recipients reached the sink in time"
        sleep 0.1
    done
    t1=$(date +%s.%N)
    cpu1=$(tree_ticks "$pid")
    R_SECS[$name]=$(calc "$t1 - $t0")
    R_SUBMIT[$name]=$(calc "$ts - $t0")
    R_CPU[$name]=$(calc "($cpu1 - $cpu0) / $TICKS")
    R_MSGS[$name]=$N_MESSAGES
    log "$name: submitted in $(printf '%.2f' "${R_SUBMIT[$name]}") s, all at the sink after $(printf '%.2f' "${R_SECS[$name]}") s, relay CPU $(printf '%.2f' "${R_CPU[$name]}") s"
}

mailtls_pid() { echo "$MAILTLS_PID"; }
postfix_pid() { tr -d ' ' <"$W/postfix/relay/queue/pid/master.pid"; }

MAILTLS_PORTS="$MAILTLS_ADDR:587"
MAILTLS_LOG=${MAILTLS_LOG:-info} mailtls_serve serve "$CONF"
run mailtls "$MAILTLS_ADDR:587" mailtls_pid
kill "$MAILTLS_PID"
wait "$MAILTLS_PID" 2>/dev/null || true
# The sink's view of the measured batch: connections, with STARTTLS, mails.
R_SESS[mailtls]=$(pf_sink_sessions sink "${R_L0[mailtls]}")

pf_relay relay "$POSTFIX_ADDR" 127.0.0.1/32 "$W/resolv.conf"
run postfix "$POSTFIX_ADDR:25" postfix_pid
pf_queue_empty relay || log "warning: the Postfix relay's queue is not empty"
postfix -c "$W/postfix/relay/etc" stop >/dev/null 2>&1 || true
wait_for bash -c "! kill -0 $(postfix_pid) 2>/dev/null" || log "warning: the Postfix relay did not stop"
R_SESS[postfix]=$(pf_sink_sessions sink "${R_L0[postfix]}")

# -------------------------------------------------------------- report -----

f2() { printf '%.2f' "$1"; }
f0() { printf '%.0f' "$1"; }
rate() { calc "${R_MSGS[$1]} / ${R_SECS[$1]}"; }
cpu_ms() { calc "1000 * ${R_CPU[$1]} / ${R_MSGS[$1]}"; }
RATE_M=$(rate mailtls) RATE_P=$(rate postfix)
CPU_M=$(cpu_ms mailtls) CPU_P=$(cpu_ms postfix)
RATIO_RATE=$(calc "$RATE_M / $RATE_P")
RATIO_CPU=$(calc "$CPU_M / $CPU_P")
verdict() { # CONDITION (awk)
    if awk "BEGIN { exit !($1) }"; then echo "met"; else echo "NOT met"; fi
}
mkdir -p "$(dirname "$OUT")"
{
    echo "## Relay throughput: mailtls serve vs Postfix ($(date -u +%FT%TZ))"
    echo
    echo "$N_MESSAGES messages × $RECIPIENTS recipient(s), $SIZE-byte body, smtp-source -s $SESSIONS${SOURCE_FLAGS:+ $SOURCE_FLAGS}," \
        "warm-up $WARMUP; $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), Postfix $(postconf -h mail_version), $("$MAILTLS" --version)."
    echo
    echo "| relay | submitted in (s) | end to end (s) | messages/s | relay CPU (s) | relay CPU per message (ms) | to the sink: connections / with STARTTLS / messages |"
    echo "|---|---:|---:|---:|---:|---:|---|"
    for r in mailtls postfix; do
        read -r conns tls mails <<<"${R_SESS[$r]}"
        echo "| $r | $(f2 "${R_SUBMIT[$r]}") | $(f2 "${R_SECS[$r]}") | $(f0 "$(rate "$r")") | $(f2 "${R_CPU[$r]}") | $(f2 "$(cpu_ms "$r")") | $conns / $tls / $mails |"
    done
    echo
    echo "| ratio mailtls / Postfix | value | goal | |"
    echo "|---|---:|---|---|"
    echo "| end-to-end rate | $(f2 "$RATIO_RATE") | ≥ 1 | $(verdict "$RATIO_RATE >= 1") |"
    echo "| relay CPU per message | $(f2 "$RATIO_CPU") | ≤ 0.33 | $(verdict "$RATIO_CPU <= 1/3") |"
} | tee "$OUT"
log "written to $OUT"
