#!/usr/bin/env bash
# Interop with real software we did not write: NSD serving a DNSSEC-signed
# private world (root ., TLD test., signed interop.test., unsigned
# unsigned.test.), unbound as validating and as plain recursive resolver, and
# Postfix as MX hosts (STARTTLS, no STARTTLS, legacy TLS 1.0). Then
# `mailtls check --json` in both DNS modes, asserted address by address.
# See docs/interop.md.
#
# usage: scripts/interop.sh [--world-only] [--hold]
#   --world-only  bring the world up and run the sanity checks (dig, delv,
#                 posttls-finger), but not mailtls
#   --hold        keep everything running until Ctrl-C (prints how to use it)
# env: MAILTLS=path/to/mailtls (default: cargo build -p mailtls, debug)
#      KEEP_ON_FAILURE=1 keeps the work directory (logs, zones) after a failure
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/interop/lib.sh
. "$ROOT/scripts/interop/lib.sh"

WORLD_ONLY=0 HOLD=0
for arg in "$@"; do
    case $arg in
    --world-only) WORLD_ONLY=1 ;;
    --hold) HOLD=1 ;;
    -h | --help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
    esac
done

MX_TLS=${MX_TLS:-127.25.0.1}       # Postfix, STARTTLS (may), RSA cert from our CA
MX_PLAIN=${MX_PLAIN:-127.25.0.2}   # Postfix, no STARTTLS
MX_LEGACY=${MX_LEGACY:-127.25.0.3} # Postfix, STARTTLS with TLS 1.0 only
MX_DEAD=${MX_DEAD:-127.25.0.99}    # nothing listens: connection refused

world_require unshare:util-linux
trap world_stop EXIT
trap 'exit 130' INT TERM
world_init

# ------------------------------------------------------------ the world ----

# Every name the MX certificate is valid for. mx-wrongname is deliberately
# not among them (DANE-TA must check the name, RFC 7672 §3.2.3).
pki_make mx.interop.test mx-dane.interop.test mx-tls.interop.test mx-ta.interop.test \
    mx-mismatch.interop.test mx-pkix.interop.test mx.unsigned.test
EE=$(tlsa_311 "$W/pki/mx.pem")
TA=$(tlsa_201 "$W/pki/ca.pem")
WRONG=$(printf 'not the key' | sha256sum | cut -d' ' -f1)

{
    soa_ns interop.test.
    cat <<EOF
; DANE-EE(3) SPKI(1) SHA-256(1) of the Postfix certificate -> DANE ok
dane         MX 10 mx-dane
mx-dane      A  $MX_TLS
_25._tcp.mx-dane TLSA 3 1 1 $EE
; DANE-TA(2) Cert(0) SHA-256(1) of our CA, MX name in the certificate -> DANE ok
dane-ta      MX 10 mx-ta
mx-ta        A  $MX_TLS
_25._tcp.mx-ta TLSA 2 0 1 $TA
; DANE-TA, MX name NOT in the certificate -> mismatch, mail held
ta-wrongname MX 10 mx-wrongname
mx-wrongname A  $MX_TLS
_25._tcp.mx-wrongname TLSA 2 0 1 $TA
; signed, no TLSA -> SSL ok
tls          MX 10 mx-tls
mx-tls       A  $MX_TLS
; no STARTTLS -> no SSL
plain        MX 10 mx-plain
mx-plain     A  $MX_PLAIN
; TLSA that matches nothing -> mismatch, mail held
mismatch     MX 10 mx-mismatch
mx-mismatch  A  $MX_TLS
_25._tcp.mx-mismatch TLSA 3 1 1 $WRONG
; only PKIX usages: unusable, TLS still mandatory -> SSL ok, not DANE ok
pkix         MX 10 mx-pkix
mx-pkix      A  $MX_TLS
_25._tcp.mx-pkix TLSA 1 1 1 $EE
; RFC 7505 null MX
nullmx       MX 0 .
; RFC 5321 §5.1 implicit MX: no MX, an A record
implicit     A  $MX_TLS
; two MX, the preferred one refuses connections -> SSL ok from the second
twomx        MX 10 mx-dead
twomx        MX 20 mx-tls
mx-dead      A  $MX_DEAD
; only MX refuses connections -> unreachable
unreachable  MX 10 mx-dead
; legacy server: TLS 1.0, AES128-SHA, RSA key exchange -> SSL ok, legacy_tls
legacy       MX 10 mx-legacy
mx-legacy    A  $MX_LEGACY
; the signature over these MX records is corrupted below -> bogus
bogus        MX 10 mx-tls
; the signature over this TLSA RRset is corrupted below -> look-up fails, held
tlsa-bogus   MX 10 mx-tlsabogus
mx-tlsabogus A  $MX_TLS
_25._tcp.mx-tlsabogus TLSA 3 1 1 $EE
EOF
} >"$W/zones/interop.test.zone"

{
    soa_ns unsigned.test.
    cat <<EOF
; unsigned zone: its TLSA (even a wrong one) must be ignored -> SSL ok
tlsa         MX 10 mx
mx           A  $MX_TLS
_25._tcp.mx  TLSA 3 1 1 $WRONG
EOF
} >"$W/zones/unsigned.test.zone"

# Sign interop.test with NSEC3 (as most signed zones today), root and test.
# with NSEC, so a validator has to handle both.
dns_world interop.test:signed:nsec3 unsigned.test:unsigned
# Break two signatures after signing, by hand, like a botched re-signing would.
corrupt_rrsig "$W/zones/interop.test.zone.signed" bogus.interop.test. MX
corrupt_rrsig "$W/zones/interop.test.zone.signed" _25._tcp.mx-tlsabogus.interop.test. TLSA
nsd_start "${NSD_ZONES[@]}"

unbound_start validating "$UNBOUND_ADDR" validate
unbound_start plain "$UNBOUND_PLAIN_ADDR" plain

postfix_start tls "$MX_TLS" tls
postfix_start plain "$MX_PLAIN" plain
postfix_start legacy "$MX_LEGACY" legacy

# ------------------------------------------------- sanity of the set-up ----
# Before mailtls is asked anything, third-party tools confirm that the world
# is what the table below assumes.

SANITY_FAILS=0
sanity() { # NAME CMD... : CMD must succeed
    local name=$1
    shift
    if "$@" >"$W/sanity.out" 2>&1; then
        printf '  ok    %s\n' "$name"
    else
        printf '  FAIL  %s\n' "$name"
        sed 's/^/        /' "$W/sanity.out" | head -20
        SANITY_FAILS=$((SANITY_FAILS + 1))
    fi
}
dig_has() { # FLAGS_RE STATUS @SERVER NAME TYPE : header flags and rcode
    local flags=$1 status=$2
    shift 2
    local out
    out=$(dig +dnssec +time=2 +tries=1 "$@")
    echo "$out"
    grep -q "status: $status" <<<"$out" && grep -Eq "flags:[^;]*$flags" <<<"$out"
}
dig_not_ad() {
    local out
    out=$(dig +dnssec +time=2 +tries=1 "$@")
    echo "$out"
    grep -q 'status: NOERROR' <<<"$out" && ! grep -Eq 'flags:[^;]* ad[ ;]' <<<"$out"
}
# delv: validates itself, from our root key, through the plain resolver.
delv_anchor() {
    local flags proto alg b64
    read -r flags proto alg b64 < <(awk '{for (i = 1; i <= NF; i++) if ($i == "DNSKEY") break;
        printf "%s %s %s ", $(i + 1), $(i + 2), $(i + 3);
        for (j = i + 4; j <= NF; j++) printf "%s", $j; print ""}' "$W/root.key")
    printf 'trust-anchors { "." static-key %s %s %s "%s"; };\n' "$flags" "$proto" "$alg" "$b64" >"$W/delv.anchor"
}
delv_secure() { delv -a "$W/delv.anchor" @"$UNBOUND_PLAIN_ADDR" +root=. "$@" 2>&1 | tee /dev/stderr | grep 'fully validated' >/dev/null; }
delv_insecure() { delv -a "$W/delv.anchor" @"$UNBOUND_PLAIN_ADDR" +root=. "$@" 2>&1 | tee /dev/stderr | grep '; unsigned answer' >/dev/null; }
delv_bogus() { delv -a "$W/delv.anchor" @"$UNBOUND_PLAIN_ADDR" +root=. "$@" 2>&1 | tee /dev/stderr | grep 'RRSIG failed to verify' >/dev/null; }

# posttls-finger resolves with the C library, i.e. /etc/resolv.conf: give it
# one of its own, pointing at our validating unbound, in a private mount
# namespace. The real /etc/resolv.conf is never touched.
printf 'nameserver %s\noptions trust-ad edns0\n' "$UNBOUND_ADDR" >"$W/resolv.conf"
finger() { # posttls-finger ARGS..., with our resolver
    # shellcheck disable=SC2016 # expanded by the inner sh
    unshare -m sh -c 'mount --bind "$1" /etc/resolv.conf && shift && exec posttls-finger "$@"' \
        sh "$W/resolv.conf" "$@"
}
finger_says() { # REGEX ARGS...
    local re=$1 out
    shift
    out=$(finger "$@" 2>&1) || true
    echo "$out"
    grep -Eq "$re" <<<"$out"
}

delv_anchor
echo "sanity of the set-up (third-party tools):"
sanity "unbound validates dane.interop.test MX (ad)" dig_has ' ad' NOERROR @"$UNBOUND_ADDR" dane.interop.test MX
sanity "unbound validates the TLSA of mx-dane (ad)" dig_has ' ad' NOERROR @"$UNBOUND_ADDR" _25._tcp.mx-dane.interop.test TLSA
sanity "unbound proves nowhere.interop.test NXDOMAIN (ad)" dig_has ' ad' NXDOMAIN @"$UNBOUND_ADDR" nowhere.interop.test MX
sanity "unbound: unsigned.test is insecure (no ad)" dig_not_ad @"$UNBOUND_ADDR" tlsa.unsigned.test MX
sanity "unbound: bogus.interop.test MX is SERVFAIL" dig_has '' SERVFAIL @"$UNBOUND_ADDR" bogus.interop.test MX
sanity "unbound: TLSA of mx-tlsabogus is SERVFAIL" dig_has '' SERVFAIL @"$UNBOUND_ADDR" _25._tcp.mx-tlsabogus.interop.test TLSA
sanity "plain unbound passes bogus data on (no validation)" dig_has '' NOERROR @"$UNBOUND_PLAIN_ADDR" bogus.interop.test MX
sanity "delv validates dane.interop.test MX from our root key" delv_secure dane.interop.test MX
sanity "delv validates an NSEC3 NXDOMAIN proof" delv_secure nowhere.interop.test MX
sanity "delv: tlsa.unsigned.test is unsigned" delv_insecure tlsa.unsigned.test MX
sanity "delv: bogus.interop.test MX fails validation" delv_bogus bogus.interop.test MX
sanity "delv: TLSA of mx-tlsabogus fails validation" delv_bogus _25._tcp.mx-tlsabogus.interop.test TLSA
sanity "posttls-finger: STARTTLS Postfix speaks TLS" \
    finger_says 'TLS connection established' -c -l may "[$MX_TLS]"
sanity "posttls-finger: DANE-EE verified for dane.interop.test" \
    finger_says 'Verified TLS connection established' -c -l dane dane.interop.test
sanity "posttls-finger: DANE-TA verified for dane-ta.interop.test" \
    finger_says 'Verified TLS connection established' -c -l dane dane-ta.interop.test
sanity "posttls-finger: DANE fails for mismatch.interop.test" \
    finger_says 'certificate verification failed|Untrusted|untrusted' -c -l dane mismatch.interop.test
sanity "posttls-finger: DANE-TA name check fails for ta-wrongname" \
    finger_says 'certificate verification failed|name mismatch|Untrusted|untrusted' -c -l dane ta-wrongname.interop.test
finger_no_starttls() {
    local out
    out=$(finger -l may "$@" 2>&1) || true
    echo "$out"
    grep -q '< 250 ' <<<"$out" && ! grep -q STARTTLS <<<"$out"
}
sanity "posttls-finger: plain Postfix offers no STARTTLS" finger_no_starttls "[$MX_PLAIN]"
sanity "posttls-finger: TLSA in the unsigned zone is not used" \
    finger_says 'Untrusted TLS connection established' -c -l dane tlsa.unsigned.test
sanity "posttls-finger: only PKIX usages are unusable for SMTP" \
    finger_says 'unsupported TLSA certificate usage: 1' -c -l dane pkix.interop.test
sanity "posttls-finger: bogus TLSA defers (lookup error)" \
    finger_says 'TLSA lookup error' -c -l dane tlsa-bogus.interop.test
sanity "posttls-finger: legacy Postfix negotiates TLSv1" \
    finger_says 'TLSv1 with cipher' -c -l may -o tls_low_cipherlist=ALL:@SECLEVEL=0 -o smtp_tls_ciphers=low -o 'smtp_tls_protocols=>=TLSv1' "[$MX_LEGACY]"
((SANITY_FAILS == 0 || HOLD)) || die "$SANITY_FAILS sanity check(s) of the set-up failed; mailtls was not run (logs in $W, KEEP_ON_FAILURE=1 keeps them)"

hold() {
    cat <<EOF

The world is up (work directory $W):
  dig @$UNBOUND_ADDR +dnssec dane.interop.test MX        # validating (AD)
  dig @$UNBOUND_PLAIN_ADDR +dnssec dane.interop.test MX  # plain recursive
  trust anchor: $W/root.key (DNSKEY), $W/root.ds (DS)
  mailtls check --allow-private --resolver $UNBOUND_PLAIN_ADDR:53 --trust-anchor $W/root.key a@dane.interop.test
  mailtls check --allow-private --dns-mode trust-ad --resolver $UNBOUND_ADDR:53 a@dane.interop.test
Ctrl-C stops everything.
EOF
    while :; do sleep 3600; done
}

if ((WORLD_ONLY)); then
    ((HOLD)) && hold
    echo "world-only: set-up is sane; mailtls not run"
    exit 0
fi

# --------------------------------------------------------------- mailtls ---

if [[ -z ${MAILTLS:-} ]]; then
    log "building mailtls (cargo build -p mailtls --locked)"
    (cd "$ROOT" && cargo build -q -p mailtls --locked) || die "cargo build -p mailtls failed"
    MAILTLS=$ROOT/target/debug/mailtls
fi
[[ -x $MAILTLS ]] || die "no mailtls binary at $MAILTLS"
log "mailtls: $MAILTLS"

# address | expected in validate mode | expected in trust-ad mode
# expectation: LEVEL/PROBLEM, where PROBLEM is - for none and alternatives are
# separated by '|'. Status follows from the level (dane: "DANE ok", tls:
# "SSL ok", none: "no SSL", unknown: "SSL ?").
EXPECT=$(
    cat <<'EOF'
a@dane.interop.test         dane/-                     dane/-
a@dane-ta.interop.test      dane/-                     dane/-
a@ta-wrongname.interop.test unknown/dane_mismatch      unknown/dane_mismatch
a@tls.interop.test          tls/-                      tls/-
a@plain.interop.test        none/-                     none/-
a@mismatch.interop.test     unknown/dane_mismatch      unknown/dane_mismatch
a@pkix.interop.test         tls/-                      tls/-
a@nullmx.interop.test       unknown/null_mx            unknown/null_mx
a@nowhere.interop.test      unknown/nxdomain           unknown/nxdomain
a@implicit.interop.test     tls/-                      tls/-
a@twomx.interop.test        tls/-                      tls/-
a@unreachable.interop.test  unknown/unreachable        unknown/unreachable
a@legacy.interop.test       tls/-                      tls/-
a@bogus.interop.test        unknown/dnssec_bogus       unknown/dnssec_bogus
a@tlsa-bogus.interop.test   unknown/tlsa_lookup_failed unknown/tlsa_lookup_failed
a@tlsa.unsigned.test        tls/-                      tls/-
EOF
)
# In trust-ad mode a bogus answer reaches us as SERVFAIL from the validating
# resolver with an Extended DNS Error (RFC 8914, unbound's `ede: yes`) that
# says "DNSSEC Bogus"; without it, it could not be told from other failures.

status_of() {
    case $1 in dane) echo "DANE ok" ;; tls) echo "SSL ok" ;; none) echo "no SSL" ;; *) echo "SSL ?" ;; esac
}

FAILS=0
RESULTS=$W/results.txt
: >"$RESULTS"

# check_mode MODE COLUMN ARGS... : one `mailtls check --json` over all
# addresses; compares each object with the expectation in COLUMN.
check_mode() {
    local mode=$1 col=$2 rc=0
    shift 2
    local addrs
    mapfile -t addrs < <(awk '{print $1}' <<<"$EXPECT")
    log "mailtls check --json ($mode) over ${#addrs[@]} addresses"
    "$MAILTLS" --config "$(mailtls_config "$mode")" check --json "${PROBE_FLAG[@]}" \
        --allow-private --timeout 10 "$@" "${addrs[@]}" \
        >"$W/check-$mode.json" 2>"$W/check-$mode.err" || rc=$?
    if ((rc != 0)); then
        echo "FAIL  [$mode] mailtls check exited $rc (expected 0); stderr:"
        sed 's/^/      /' "$W/check-$mode.err" | head -20
        FAILS=$((FAILS + 1))
    fi
    if ! jq -e 'type == "array"' "$W/check-$mode.json" >/dev/null 2>&1; then
        echo "FAIL  [$mode] output is not one JSON array:"
        head -c 2000 "$W/check-$mode.json"
        FAILS=$((FAILS + 1))
        return
    fi
    local addr exp level problem want_level want_problem want_status got_status ok mx
    while read -r addr exp; do
        want_level=${exp%%/*} want_problem=${exp#*/}
        want_status=$(status_of "$want_level")
        read -r level got_status problem mx < <(jq -r --arg a "$addr" '
            [.[] | select(.address == $a)][0] // {} |
            [(.level // "MISSING"), ((.status // "MISSING") | gsub(" "; "_")),
             (.problem // "-"), ([.mx[]? | "\(.host)=\(.dane // "-")/\(.tls_version // "-")"] | join(",") | if . == "" then "-" else . end)]
            | @tsv' "$W/check-$mode.json")
        got_status=${got_status//_/ }
        ok=1
        [[ $level == "$want_level" ]] || ok=0
        [[ $got_status == "$want_status" ]] || ok=0
        [[ "|$want_problem|" == *"|$problem|"* ]] || ok=0
        if ((ok)); then
            printf '%-5s %-9s %-28s %-8s %-8s %-19s %s\n' ok "$mode" "$addr" "$level" "$got_status" "$problem" "$mx" >>"$RESULTS"
        else
            printf '%-5s %-9s %-28s %-8s %-8s %-19s %s  (expected %s / %s / %s)\n' FAIL "$mode" "$addr" "$level" "$got_status" "$problem" "$mx" \
                "$want_level" "$want_status" "$want_problem" >>"$RESULTS"
            FAILS=$((FAILS + 1))
        fi
    done < <(awk -v c="$col" '{print $1, $c}' <<<"$EXPECT")
}

# The extra per-MX facts the issue promises, checked where they are certain.
check_details() {
    local mode=$1 f=$W/check-$1.json
    detail() { # NAME JQ-EXPR (must be true)
        if jq -e "$2" "$f" >/dev/null 2>&1; then
            printf '%-5s %-9s %s\n' ok "$mode" "$1" >>"$RESULTS"
        else
            printf '%-5s %-9s %s\n' FAIL "$mode" "$1" >>"$RESULTS"
            FAILS=$((FAILS + 1))
        fi
    }
    local by='def r(a): [.[] | select(.address == a)][0];'
    detail "dane: tlsa 3 1 1 matched, dnssec secure, cert sha256 present" \
        "$by r(\"a@dane.interop.test\").mx[0] | .dane == \"ok\" and .dnssec == \"secure\" and .starttls == true and any(.tlsa[]; .matched and .usage == 3) and (.certificate.sha256 | length) > 0"
    detail "pkix: only PKIX-EE published -> dane unusable" \
        "$by r(\"a@pkix.interop.test\").mx[0].dane == \"unusable\""
    detail "plain: starttls false" \
        "$by r(\"a@plain.interop.test\").mx[0].starttls == false"
    detail "legacy: TLSv1, legacy_tls true" \
        "$by r(\"a@legacy.interop.test\").mx[0] | .legacy_tls == true and .tls_version == \"TLSv1\""
    detail "tls: TLSv1.3, legacy_tls false, pkix_valid false (private CA)" \
        "$by r(\"a@tls.interop.test\").mx[0] | .legacy_tls == false and .tls_version == \"TLSv1.3\" and .pkix_valid == false"
    detail "unsigned zone: dnssec insecure, TLSA ignored (dane none)" \
        "$by r(\"a@tlsa.unsigned.test\").mx[0] | .dnssec == \"insecure\" and .dane == \"none\""
    detail "twomx: both MX listed in preference order" \
        "$by [r(\"a@twomx.interop.test\").mx[].preference] == [10, 20]"
}

# --------------------------------------------------------------- run -------

mailtls_probe_flag check
log "mailtls check${PROBE_FLAG[*]:+ ${PROBE_FLAG[*]}}, a new data_dir (TLS memory) per run"

# validate: our in-process validator, fed by unbound as a plain recursive
# resolver (no validation there), anchored at our private root KSK.
check_mode validate 2 --resolver "$UNBOUND_PLAIN_ADDR:53" --trust-anchor "$W/root.key"
check_details validate
# trust-ad: the AD bit of the validating unbound on loopback.
check_mode trust-ad 3 --dns-mode trust-ad --resolver "$UNBOUND_ADDR:53"
check_details trust-ad

# Exit status 1 when any address is invalid; a reason, no panic.
rc=0
"$MAILTLS" --config "$(mailtls_config invalid)" check --json "${PROBE_FLAG[@]}" \
    --allow-private --timeout 10 --resolver "$UNBOUND_PLAIN_ADDR:53" \
    --trust-anchor "$W/root.key" not-an-address a@tls.interop.test >"$W/check-invalid.json" 2>"$W/check-invalid.err" || rc=$?
if ((rc == 1)) && jq -e '[.[] | select(.address == "not-an-address")][0].problem == "invalid_address"' "$W/check-invalid.json" >/dev/null 2>&1; then
    printf '%-5s %-9s %s\n' ok validate "invalid address: exit 1, problem invalid_address" >>"$RESULTS"
else
    printf '%-5s %-9s %s (exit %s)\n' FAIL validate "invalid address: exit 1, problem invalid_address" "$rc" >>"$RESULTS"
    FAILS=$((FAILS + 1))
fi

# `scan` reads the same addresses from a file and must give the same answers
# as `check`, as JSON lines; and a CSV with a header and one row per address.
awk '{print $1}' <<<"$EXPECT" >"$W/addresses.txt"
mailtls_probe_flag scan
rc=0
"$MAILTLS" --config "$(mailtls_config scan-jsonl)" scan "${PROBE_FLAG[@]}" "$W/addresses.txt" --format jsonl --output "$W/scan.jsonl" --concurrency 4 --allow-private \
    --timeout 10 --resolver "$UNBOUND_PLAIN_ADDR:53" --trust-anchor "$W/root.key" 2>"$W/scan.err" || rc=$?
summary='[.[] | {address, level, status, problem}] | sort_by(.address)'
if ((rc == 0)) && [[ $(jq -c -s "$summary" "$W/scan.jsonl" 2>&1) == "$(jq -c "$summary" "$W/check-validate.json")" ]]; then
    printf '%-5s %-9s %s\n' ok validate "scan --format jsonl: same answers as check, one JSON object per line" >>"$RESULTS"
else
    printf '%-5s %-9s %s (exit %s; see %s)\n' FAIL validate "scan --format jsonl: same answers as check" "$rc" "$W/scan.jsonl" >>"$RESULTS"
    FAILS=$((FAILS + 1))
fi
rc=0
"$MAILTLS" --config "$(mailtls_config scan-csv)" scan "${PROBE_FLAG[@]}" "$W/addresses.txt" --format csv --output "$W/scan.csv" --concurrency 4 --allow-private \
    --timeout 10 --resolver "$UNBOUND_PLAIN_ADDR:53" --trust-anchor "$W/root.key" 2>"$W/scan-csv.err" || rc=$?
if ((rc == 0)) && head -1 "$W/scan.csv" | grep -q address && (($(wc -l <"$W/scan.csv") == $(wc -l <"$W/addresses.txt") + 1)); then
    printf '%-5s %-9s %s\n' ok validate "scan --format csv: a header and one row per address" >>"$RESULTS"
else
    printf '%-5s %-9s %s (exit %s; see %s)\n' FAIL validate "scan --format csv: a header and one row per address" "$rc" "$W/scan.csv" >>"$RESULTS"
    FAILS=$((FAILS + 1))
fi

echo
printf '%-5s %-9s %-28s %-8s %-8s %-19s %s\n' "" mode address level status problem "mx=dane/tls_version"
cat "$RESULTS"
echo
((HOLD)) && hold
if ((FAILS)); then
    echo "interop: $FAILS FAILED (outputs in $W/check-*.json; KEEP_ON_FAILURE=1 keeps them)"
    exit 1
fi
echo "interop: all $(wc -l <"$RESULTS") checks passed (NSD $(nsd -v 2>&1 | awk 'NR==1{print $3}'), unbound $(unbound -V | awk 'NR==1{print $2}'), Postfix $(postconf -h mail_version))"
