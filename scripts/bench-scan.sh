#!/usr/bin/env bash
# The issue #2 benchmark: `mailtls scan` over N_DOMAINS domains whose MX hosts
# are local Postfix instances with STARTTLS and DANE, beside Postfix's own
# prober, posttls-finger, run over the same domains with the same parallelism
# (xargs -P), in one run. Reports checks/second, client CPU per check
# (user+sys of the client processes only), peak RSS, the servers' CPU, and
# the ratios. Output: a markdown table on stdout and in target/bench/scan.md.
# See docs/benchmarks.md.
#
# usage: scripts/bench-scan.sh [--posttls-only] [--hold]
#   --hold  keep the world up after measuring, until Ctrl-C (to profile)
# env:   N_DOMAINS=1000 CONCURRENCY=16 N_SERVERS=4
#        MAILTLS=path (default: cargo build --release -p mailtls, then
#        target/release/mailtls)
#        VALIDATE_ROW=1 also measures mailtls in validate mode (in-process
#        DNSSEC validation through a non-validating unbound); 0 skips that row
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/interop/lib.sh
. "$ROOT/scripts/interop/lib.sh"

N_DOMAINS=${N_DOMAINS:-1000}
CONCURRENCY=${CONCURRENCY:-16}
N_SERVERS=${N_SERVERS:-4}
VALIDATE_ROW=${VALIDATE_ROW:-1}
POSTTLS_ONLY=0 HOLD=0
for arg in "$@"; do
    case $arg in
    --hold) HOLD=1 ;;
    --posttls-only) POSTTLS_ONLY=1 ;; # to debug the set-up without mailtls
    -h | --help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
    esac
done
((N_SERVERS >= 1 && N_SERVERS <= 250)) || { echo "N_SERVERS must be 1..250" >&2; exit 2; }

world_require unshare:util-linux
[[ -x /usr/bin/time ]] || die "GNU time missing: /usr/bin/time (Debian package time; .ci/install-deps installs it)"
OUT_DIR=$ROOT/target/bench
mkdir -p "$OUT_DIR"

if ((!POSTTLS_ONLY)); then
    if [[ -z ${MAILTLS:-} ]]; then
        MAILTLS=$ROOT/target/release/mailtls
        log "building mailtls (cargo build --release -p mailtls --locked)"
        (cd "$ROOT" && cargo build -q --release -p mailtls --locked) || die "cargo build failed"
    fi
    [[ -x $MAILTLS ]] || die "no mailtls binary at $MAILTLS"
fi

trap world_stop EXIT
trap 'exit 130' INT TERM
world_init

# ------------------------------------------------------------ the world ----
# bench.test: signed (NSEC), a delegation from test. with DS. Every domain
# dNNNN.bench.test has an MX host of its own, mx.dNNNN.bench.test (so no
# client can share look-ups or probes between domains), with an A record on
# one of the Postfix instances and a DANE-EE TLSA record (3 1 1) for the
# Postfix key: every check is a full DNSSEC + STARTTLS + DANE check, and
# every successful one is "DANE ok" / "Verified TLS connection".
pki_make mx.bench.test
EE=$(tlsa_311 "$W/pki/mx.pem")
{
    soa_ns bench.test.
    for ((i = 1; i <= N_DOMAINS; i++)); do
        d=$(printf 'd%05d' "$i")
        printf '%s MX 10 mx.%s\nmx.%s A 127.26.0.%d\n_25._tcp.mx.%s TLSA 3 1 1 %s\n' \
            "$d" "$d" "$d" $(((i - 1) % N_SERVERS + 1)) "$d" "$EE"
    done
} >"$W/zones/bench.test.zone"
for ((i = 1; i <= N_DOMAINS; i++)); do printf 'd%05d.bench.test\n' "$i"; done >"$W/domains.txt"

dns_world bench.test:signed
nsd_start "${NSD_ZONES[@]}"
unbound_start validating "$UNBOUND_ADDR" validate
((VALIDATE_ROW && !POSTTLS_ONLY)) && unbound_start plain "$UNBOUND_PLAIN_ADDR" plain
for ((s = 1; s <= N_SERVERS; s++)); do
    postfix_start "bench$s" "127.26.0.$s" tls mx.bench.test
done

# posttls-finger resolves through the C library: a resolv.conf of its own in
# a private mount namespace, pointing at the validating unbound.
printf 'nameserver %s\noptions trust-ad edns0\n' "$UNBOUND_ADDR" >"$W/resolv.conf"

# Warm the resolvers' caches with every name both clients will ask for, so
# that neither pays for the first recursion and the order of the runs does
# not matter.
awk '{print $1 " MX"; print "mx." $1 " A"; print "_25._tcp.mx." $1 " TLSA"}' "$W/domains.txt" >"$W/warm.txt"
warm() { dig @"$1" +dnssec +time=2 +tries=2 -f "$W/warm.txt" >/dev/null; }
log "warming the resolver caches ($((N_DOMAINS * 3)) names)"
warm "$UNBOUND_ADDR"
((VALIDATE_ROW && !POSTTLS_ONLY)) && warm "$UNBOUND_PLAIN_ADDR"

# ----------------------------------------------------------- measuring -----
TCK=$(getconf CLK_TCK)
# CPU ticks (user+sys) of a process, its reaped children and its live
# children: Postfix's master forks smtpd, which lives on across sessions.
tree_ticks() {
    local pid=$1 total=0 c
    [[ -r /proc/$pid/stat ]] || { echo 0; return; }
    total=$(awk '{sub(/^.*\) /, ""); print $12 + $13 + $14 + $15}' "/proc/$pid/stat")
    for c in $(pgrep -P "$pid" || true); do
        total=$((total + $(awk '{sub(/^.*\) /, ""); print $12 + $13 + $14 + $15}' "/proc/$c/stat" 2>/dev/null || echo 0)))
    done
    echo "$total"
}
postfix_ticks() {
    local sum=0 s
    for ((s = 1; s <= N_SERVERS; s++)); do
        sum=$((sum + $(tree_ticks "$(tr -d ' ' <"$W/postfix/bench$s/queue/pid/master.pid")")))
    done
    echo "$sum"
}
dns_ticks() {
    local sum=0 name pid
    while read -r name pid; do
        [[ $name == nsd || $name == unbound-* ]] && sum=$((sum + $(tree_ticks "$pid")))
    done <"$W/pids"
    echo "$sum"
}
smtp_sessions() { cat "$W"/postfix/bench*/maillog 2>/dev/null | grep -c ': connect from ' || true; }

ROWS=()
# measure NAME OKCOUNT-FUNCTION OUT ERR CMD... : runs CMD (a program, not a
# shell function: GNU time execs it) with stdout to OUT and stderr to ERR
# under GNU time, and records a row
# "name|ok|wall|user|sys|maxrss_kb|postfix_ticks|dns_ticks|sessions".
measure() {
    local name=$1 okfn=$2 out=$3 err=$4 tf=$W/time.$RANDOM
    shift 4
    local p0 d0 s0 p1 d1 s1 ok
    sync
    sleep 1
    p0=$(postfix_ticks) d0=$(dns_ticks) s0=$(smtp_sessions)
    log "run: $name"
    /usr/bin/time -o "$tf" -f '%e %U %S %M' "$@" >"$out" 2>"$err" || log "warning: $name exited non-zero (see $err)"
    sleep 1 # let postlogd write the last connects
    p1=$(postfix_ticks) d1=$(dns_ticks) s1=$(smtp_sessions)
    ok=$($okfn)
    read -r wall user sys rss <"$tf"
    ROWS+=("$name|$ok|$wall|$user|$sys|$rss|$((p1 - p0))|$((d1 - d0))|$((s1 - s0))")
    log "  $name: $ok/$N_DOMAINS ok, wall ${wall}s, user ${user}s, sys ${sys}s, peak RSS ${rss} KB"
}

# shellcheck disable=SC2317 # called through measure
mailtls_ok() { jq -s '[.[] | select(.level == "dane")] | length' "$W/scan.jsonl" 2>/dev/null || echo 0; }
# shellcheck disable=SC2317
posttls_ok() { grep -c 'Verified TLS connection established' "$W/posttls.out" || true; }

# Each mailtls row gets a new data_dir (TLS memory) below $W.
PROBE_FLAG=()
((POSTTLS_ONLY)) || mailtls_probe_flag scan
scan_cmd() { # NAME : sets SCAN
    SCAN=("${MAILTLS:-mailtls}" --config "$(mailtls_config "$1")" scan "${PROBE_FLAG[@]}" "$W/domains.txt"
        --concurrency "$CONCURRENCY" --format jsonl --output "$W/scan.jsonl" --allow-private --timeout 30)
}
# shellcheck disable=SC2016 # expanded by the inner sh
POSTTLS=(unshare -m sh -c 'mount --bind "$1" /etc/resolv.conf && exec xargs -P "$2" -n 1 posttls-finger -c -l dane -L summary <"$3" 2>&1'
    sh "$W/resolv.conf" "$CONCURRENCY" "$W/domains.txt")

if ((!POSTTLS_ONLY)); then
    scan_cmd trust-ad
    measure "mailtls scan (trust-ad)" mailtls_ok /dev/null "$W/scan.err" \
        "${SCAN[@]}" --dns-mode trust-ad --resolver "$UNBOUND_ADDR:53"
    cp "$W/scan.jsonl" "$OUT_DIR/scan-trust-ad.jsonl"
fi
measure "posttls-finger -l dane (xargs -P $CONCURRENCY)" posttls_ok "$W/posttls.out" "$W/posttls.err" "${POSTTLS[@]}"
cp "$W/posttls.out" "$OUT_DIR/posttls-finger.out"

# The floor: what libssl and the kernel alone cost per STARTTLS handshake
# (scripts/bench/openssl-floor.c: sequential, no DNS, no verification).
# shellcheck disable=SC2317
floor_ok() { cat "$W/floor.out" 2>/dev/null || echo 0; }
read -ra SSL_FLAGS <<<"$(pkg-config --cflags --libs openssl)"
if cc -O2 -o "$W/openssl-floor" "$ROOT/scripts/bench/openssl-floor.c" "${SSL_FLAGS[@]}" 2>"$W/floor.cc.err"; then
    measure "OpenSSL floor (C, 1 at a time, no DNS/verification)" floor_ok "$W/floor.out" "$W/floor.err" \
        "$W/openssl-floor" "$N_DOMAINS" "$N_SERVERS" 127.26.0
else
    cat "$W/floor.cc.err" >&2
    die "could not compile scripts/bench/openssl-floor.c (needs cc and libssl-dev)"
fi
if ((VALIDATE_ROW && !POSTTLS_ONLY)); then
    scan_cmd validate
    measure "mailtls scan (validate)" mailtls_ok /dev/null "$W/scan.err" \
        "${SCAN[@]}" --dns-mode validate --resolver "$UNBOUND_PLAIN_ADDR:53" --trust-anchor "$W/root.key"
    cp "$W/scan.jsonl" "$OUT_DIR/scan-validate.jsonl"
fi

# -------------------------------------------------------------- report -----
report() {
    local r name ok wall user sys rss pt dt ses
    echo "### mailtls scan vs posttls-finger: $N_DOMAINS domains, concurrency $CONCURRENCY"
    echo
    echo "$(date -u +%F), $(nproc) cores ($(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)), $N_SERVERS Postfix $(postconf -h mail_version) instances (STARTTLS, RSA-2048, DANE-EE TLSA, no session cache), NSD + unbound, signed zone. Every check: MX, A, TLSA look-ups, EHLO, STARTTLS, full handshake, DANE verification, QUIT."
    echo
    echo "| client | ok | wall s | checks/s | client CPU ms/check | peak RSS MB | Postfix CPU ms/check | DNS CPU ms/check | SMTP sessions |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    for r in "${ROWS[@]}"; do
        IFS='|' read -r name ok wall user sys rss pt dt ses <<<"$r"
        awk -v n="$name" -v ok="$ok" -v wall="$wall" -v u="$user" -v s="$sys" -v rss="$rss" \
            -v pt="$pt" -v dt="$dt" -v ses="$ses" -v N="$N_DOMAINS" -v tck="$TCK" 'BEGIN {
            printf "| %s | %d/%d | %.1f | %.1f | %.2f | %.1f | %.2f | %.2f | %d |\n",
                n, ok, N, wall, N / wall, (u + s) * 1000 / N, rss / 1024, pt * 1000 / tck / N, dt * 1000 / tck / N, ses }'
    done
    local m p
    m=$(printf '%s\n' "${ROWS[@]}" | grep '^mailtls scan (trust-ad)' || true)
    p=$(printf '%s\n' "${ROWS[@]}" | grep '^posttls-finger' || true)
    f=$(printf '%s\n' "${ROWS[@]}" | grep '^OpenSSL floor' || true)
    if [[ -n $m && -n $p ]]; then
        IFS='|' read -r _ _ mw mu ms mr _ _ _ <<<"$m"
        IFS='|' read -r _ _ pw pu ps pr _ _ _ <<<"$p"
        echo
        awk -v mw="$mw" -v mu="$mu" -v ms="$ms" -v mr="$mr" -v pw="$pw" -v pu="$pu" -v ps="$ps" -v pr="$pr" -v c="$CONCURRENCY" 'BEGIN {
            cpu = (pu + ps) / (mu + ms)
            printf "Ratios (mailtls trust-ad vs posttls-finger): rate %.2fx; CPU per check: posttls-finger uses %.1fx as much (mailtls = %.3f of it; goal <= 0.100: %s); peak RSS: one mailtls process %.1f MB vs one posttls-finger process %.1f MB (x%d running at once = ~%.0f MB).\n",
                pw / mw, cpu, 1 / cpu, (1 / cpu <= 0.1 ? "met" : "NOT met"), mr / 1024, pr / 1024, c, pr * c / 1024 }'
    fi
    if [[ -n $m && -n $f ]]; then
        IFS='|' read -r _ _ _ mu ms _ _ _ _ <<<"$m"
        IFS='|' read -r _ _ _ fu fs _ _ _ _ <<<"$f"
        [[ -n $p ]] && IFS='|' read -r _ _ _ pu ps _ _ _ _ <<<"$p"
        awk -v mu="$mu" -v ms="$ms" -v fu="$fu" -v fs="$fs" -v pu="${pu:-0}" -v ps="${ps:-0}" 'BEGIN {
            printf "Against the OpenSSL floor (bare handshakes, same servers): mailtls %.1fx its CPU per check", (mu + ms) / (fu + fs)
            if (pu + ps > 0) printf ", posttls-finger %.1fx; a tenth of posttls-finger is %.2fx the floor", (pu + ps) / (fu + fs), (pu + ps) / 10 / (fu + fs)
            print "." }'
    fi
    echo
    echo "Client CPU = user+sys of the client process tree (GNU time; for posttls-finger the whole xargs tree). Server columns: CPU of the Postfix masters and their smtpd children, and of NSD+unbound, during each run, from /proc. SMTP sessions = connects logged by the Postfix instances."
}
report | tee "$OUT_DIR/scan.md"
log "written: $OUT_DIR/scan.md"

if ((HOLD)); then
    scan_cmd hold
    cat <<EOF

The world is up (work directory $W); the domains are in $W/domains.txt:
  ${SCAN[*]} --dns-mode trust-ad --resolver $UNBOUND_ADDR:53
  perf record -g -o $W/perf.data ${SCAN[*]} --dns-mode trust-ad --resolver $UNBOUND_ADDR:53
Ctrl-C stops everything.
EOF
    while :; do sleep 3600; done
fi

fail=0
for r in "${ROWS[@]}"; do
    IFS='|' read -r name ok _ <<<"$r"
    if ((ok != N_DOMAINS)); then
        log "FAIL: $name: only $ok of $N_DOMAINS checks succeeded (outputs in $OUT_DIR)"
        fail=1
    fi
done
exit "$fail"
