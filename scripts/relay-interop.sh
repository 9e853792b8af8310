#!/usr/bin/env bash
# The relay between real Postfix instances: Postfix submits to `mailtls
# serve` (its relayhost, smtp_tls_security_level = encrypt; once over a
# trusted network, once with SASL AUTH as a mailtls user), and mailtls
# delivers to Postfix MX hosts found through a DNSSEC-signed world (NSD +
# validating unbound): one with DANE (TLSA 3 1 1), one with STARTTLS and no
# TLSA, one without STARTTLS. Asserts that each message arrives in the
# receiver's Maildir, over TLS where it must, with mailtls's and the
# receiver's Received: headers, and that mailtls's TLS memory says DANE ok /
# SSL ok / no SSL. See docs/relay-interop.md.
#
# usage: scripts/relay-interop.sh [--postfix-only] [--hold]
#   --postfix-only  no mailtls: the submitters' relayhost is the DANE
#                   receiver itself (checks the Postfix side of the set-up)
#   --hold          keep everything running until Ctrl-C at the end
# env: MAILTLS=path/to/mailtls (default: cargo build -p mailtls, debug)
#      DNS_MODE=trust-ad|validate (default trust-ad: the AD bit of unbound)
#      DEADLINE=seconds to wait for all deliveries (default 60)
#      KEEP_ON_FAILURE=1 keeps the work directory (logs, mail) after a failure
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# Addresses of our own, so that this can run next to scripts/interop.sh.
NSD_ADDR=${NSD_ADDR:-127.63.0.1}
UNBOUND_ADDR=${UNBOUND_ADDR:-127.63.0.2}
UNBOUND_PLAIN_ADDR=${UNBOUND_PLAIN_ADDR:-127.63.0.3}
# shellcheck source=scripts/interop/lib.sh
. "$ROOT/scripts/interop/lib.sh"
# shellcheck source=scripts/relay/lib.sh
. "$ROOT/scripts/relay/lib.sh"

MX_DANE=${MX_DANE:-127.36.0.1}           # receiving Postfix, STARTTLS, TLSA 3 1 1
MX_TLS=${MX_TLS:-127.36.0.2}             # receiving Postfix, STARTTLS, no TLSA
MX_PLAIN=${MX_PLAIN:-127.36.0.3}         # receiving Postfix, no STARTTLS
RELAY_ADDR=${RELAY_ADDR:-127.36.0.10}    # mailtls serve: 587 (STARTTLS), 465
SUBMIT_TRUSTED=${SUBMIT_TRUSTED:-127.36.0.20} # submitting Postfix, in trusted_networks
SUBMIT_SASL=${SUBMIT_SASL:-127.36.0.21}  # submitting Postfix, SASL AUTH
DNS_MODE=${DNS_MODE:-trust-ad}
DEADLINE=${DEADLINE:-60}
RELAY_USER=submitter@relay.test
RELAY_PASS="interop-$RANDOM$RANDOM"

POSTFIX_ONLY=0 HOLD=0
for arg in "$@"; do
    case $arg in
    --postfix-only) POSTFIX_ONLY=1 ;;
    --hold) HOLD=1 ;;
    -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
    esac
done
case $DNS_MODE in trust-ad | validate) ;; *) die "DNS_MODE must be trust-ad or validate" ;; esac

world_require sendmail:postfix script:util-linux
# Postfix's SMTP client authenticates through Cyrus SASL, whose PLAIN
# mechanism is a plugin of its own (only "recommended" by libsasl2-2).
compgen -G "/usr/lib/*/sasl2/libplain.so*" >/dev/null ||
    die "missing: the Cyrus SASL PLAIN plugin (Debian package libsasl2-modules)"
trap world_stop EXIT
trap 'exit 130' INT TERM

if ((!POSTFIX_ONLY)); then
    if [[ -z ${MAILTLS:-} ]]; then
        # As scripts/interop.sh: the debug build, which `cargo test` has
        # just made in CI (a no-op then), never a stale binary.
        log "building mailtls (cargo build -p mailtls --locked)"
        (cd "$ROOT" && cargo build -q -p mailtls --locked) || die "cargo build -p mailtls failed"
        MAILTLS=$ROOT/target/debug/mailtls
    fi
    [[ -x $MAILTLS ]] || die "no mailtls binary at $MAILTLS"
    "$MAILTLS" serve --help >/dev/null 2>&1 || die "$MAILTLS has no serve command (stale build?)"
fi

world_init

# ------------------------------------------------------------ the world ----

# One CA; each STARTTLS receiver has a key and certificate of its own, so the
# TLSA record of mx-dane matches only the DANE receiver.
pki_make mx.relay.test
pki_leaf dane mx-dane.relay.test
pki_leaf tls mx-tls.relay.test
{
    soa_ns relay.test.
    cat <<EOF
; DANE-EE(3) SPKI(1) SHA-256(1) of the DANE receiver's key -> DANE ok
dane         MX 10 mx-dane
mx-dane      A  $MX_DANE
_25._tcp.mx-dane TLSA 3 1 1 $(tlsa_311 "$W/pki/dane.pem")
; signed, STARTTLS, no TLSA -> SSL ok
tls          MX 10 mx-tls
mx-tls       A  $MX_TLS
; no STARTTLS -> no SSL, delivered in plaintext
plain        MX 10 mx-plain
mx-plain     A  $MX_PLAIN
EOF
} >"$W/zones/relay.test.zone"
dns_world relay.test:signed:nsec3
nsd_start "${NSD_ZONES[@]}"
unbound_start validating "$UNBOUND_ADDR" validate
[[ $DNS_MODE == validate ]] && unbound_start plain "$UNBOUND_PLAIN_ADDR" plain

dig +dnssec +time=2 +tries=1 @"$UNBOUND_ADDR" _25._tcp.mx-dane.relay.test TLSA | grep -Eq 'flags:[^;]* ad[ ;]' ||
    die "unbound does not validate the TLSA of mx-dane.relay.test"

pf_receiver dane "$MX_DANE" tls mx-dane.relay.test dane.relay.test
pf_receiver tls "$MX_TLS" tls mx-tls.relay.test tls.relay.test
pf_receiver plain "$MX_PLAIN" plain mx-plain.relay.test plain.relay.test

# ------------------------------------------------------------- mailtls -----

if ((POSTFIX_ONLY)); then
    RELAYHOST="[$MX_DANE]:25"
else
    port_free "$RELAY_ADDR" 587 tcp
    port_free "$RELAY_ADDR" 465 tcp
    CONF=$W/mailtls.toml
    mkdir -p "$W/mailtls"
    {
        cat <<EOF
data_dir = "$W/mailtls"
hostname = "relay.mailtls.test"

[dns]
EOF
        if [[ $DNS_MODE == trust-ad ]]; then
            printf 'resolver = "%s:53"\nmode = "trust-ad"\n' "$UNBOUND_ADDR"
        else
            printf 'resolver = "%s:53"\nmode = "validate"\ntrust_anchor = "%s"\n' "$UNBOUND_PLAIN_ADDR" "$W/root.key"
        fi
        cat <<EOF

[probe]
allow_private = true
timeout_secs = 10

[smtp.submission]
listen = ["$RELAY_ADDR:587"]
listen_tls = ["$RELAY_ADDR:465"]

[relay]
trusted_networks = ["$SUBMIT_TRUSTED/32"]
retry_base_secs = 2
retry_max_secs = 5
queue_lifetime_secs = 600
EOF
    } >"$CONF"
    printf '%s\n' "$RELAY_PASS" | "$MAILTLS" --config "$CONF" user add "$RELAY_USER" >"$W/user-add.out" 2>&1 ||
        { cat "$W/user-add.out" >&2; die "mailtls user add $RELAY_USER"; }
    MAILTLS_PORTS="$RELAY_ADDR:587 $RELAY_ADDR:465"
    mailtls_serve serve "$CONF"
    RELAYHOST="[$RELAY_ADDR]:587"
fi

pf_submitter trusted "$SUBMIT_TRUSTED" "$RELAYHOST"
pf_submitter sasl "$SUBMIT_SASL" "$RELAYHOST" sasl "$RELAY_USER" "$RELAY_PASS"

# ---------------------------------------------------------------- mail -----

# submitter | recipient | receiver | expected receiver protocol | expected memory verdict
CASES=(
    "trusted a@dane.relay.test dane tls DANE_ok"
    "trusted b@tls.relay.test tls tls SSL_ok"
    "trusted c@plain.relay.test plain plain no_SSL"
    "sasl d@dane.relay.test dane tls DANE_ok"
    "sasl e@tls.relay.test tls tls SSL_ok"
    "sasl f@plain.relay.test plain plain no_SSL"
)
if ((POSTFIX_ONLY)); then
    # The DANE receiver takes only dane.relay.test.
    CASES=("trusted a@dane.relay.test dane tls -" "sasl d@dane.relay.test dane tls -")
fi

TAG=$(date +%s)-$$
for c in "${CASES[@]}"; do
    read -r sub rcpt _ <<<"$c"
    pf_sendmail "$sub" "sender@$sub.submit.test" "$rcpt" "relay-interop $TAG $sub $rcpt" ||
        die "sendmail ($sub) to $rcpt"
done
log "submitted ${#CASES[@]} messages with sendmail; waiting up to ${DEADLINE}s for delivery"

# The delivered file of a case (empty when it has not arrived).
delivered() { # SUBMITTER RECIPIENT RECEIVER
    { grep -rlF -- "Subject: relay-interop $TAG $1 $2" "$W/postfix/$3/mail/inbox/new" 2>/dev/null || true; } | head -1
}
all_delivered() {
    local c sub rcpt recv
    for c in "${CASES[@]}"; do
        read -r sub rcpt recv _ <<<"$c"
        [[ -n $(delivered "$sub" "$rcpt" "$recv") ]] || return 1
    done
}
end=$(($(date +%s) + DEADLINE))
while ! all_delivered && (($(date +%s) < end)); do sleep 0.2; done

# The header block of a message file, with folded lines joined.
headers() { awk '/^\r?$/ {exit} /^[ \t]/ {sub(/^[ \t]+/, " "); h = h $0; next} {if (h != "") print h; h = $0} END {if (h != "") print h}' "$1" | tr -d '\r'; }

FAILS=0
RESULTS=$W/results.txt
: >"$RESULTS"
row() { # OK|FAIL SUBMITTER RECIPIENT WHAT DETAIL
    printf '%-5s %-8s %-20s %-37s %s\n' "$@" >>"$RESULTS"
    [[ $1 == ok ]] || FAILS=$((FAILS + 1))
}
for c in "${CASES[@]}"; do
    read -r sub rcpt recv proto verdict <<<"$c"
    f=$(delivered "$sub" "$rcpt" "$recv")
    if [[ -z $f ]]; then
        row FAIL "$sub" "$rcpt" "arrived at $recv" "not in $W/postfix/$recv/mail/inbox/new after ${DEADLINE}s"
        continue
    fi
    row ok "$sub" "$rcpt" "arrived at $recv" "${f#"$W"/}"
    hdr=$(headers "$f")
    # The receiver's own Received: header is the first one.
    first=$(grep -m1 '^Received:' <<<"$hdr")
    short=$(sed -E 's/^Received: from ([^ ]+).* by ([^ ]+) \(Postfix\) with ([A-Z]+).*/\1 -> \2 \3/' <<<"$first")
    tlsinfo=$(grep -oE '\(using TLSv[0-9.]+ with cipher [A-Z0-9_-]+' <<<"$first" | sed 's/^(using //' || true)
    if [[ $proto == tls ]]; then
        if [[ $first == *" with ESMTPS "* && -n $tlsinfo ]]; then
            row ok "$sub" "$rcpt" "receiver logged TLS" "$short ($tlsinfo)"
        else
            row FAIL "$sub" "$rcpt" "receiver logged TLS" "$first"
        fi
    else
        if [[ $first == *" with ESMTP "* && $first != *"(using TLS"* ]]; then
            row ok "$sub" "$rcpt" "receiver logged plaintext" "$short"
        else
            row FAIL "$sub" "$rcpt" "receiver logged plaintext" "$first"
        fi
    fi
    if ((POSTFIX_ONLY)); then continue; fi
    # mailtls's trace header: ESMTPS from the trusted submitter, ESMTPSA
    # (RFC 3848) with the authenticated user from the SASL one.
    ours=$(grep -m1 'by relay.mailtls.test (mailtls)' <<<"$hdr" || true)
    want=ESMTPS
    [[ $sub == sasl ]] && want=ESMTPSA
    from=SUBMIT_${sub^^}
    if [[ $ours == *"[${!from}]"* && $ours == *" with $want id "* && $ours == *"(using TLSv1."* ]] &&
        { [[ $sub != sasl ]] || [[ $ours == *"$RELAY_USER"* ]]; }; then
        row ok "$sub" "$rcpt" "mailtls Received: $want" "$(grep -oE '\(using TLSv[0-9.]+ with cipher [A-Z0-9_-]+' <<<"$ours" | sed 's/^(using //')"
    else
        row FAIL "$sub" "$rcpt" "mailtls Received: $want" "${ours:-no Received: by relay.mailtls.test (mailtls)}"
    fi
done

if ((!POSTFIX_ONLY)); then
    # What mailtls's TLS memory says about each recipient domain and its MX
    # host: the best and the last level, and (for TLS) the certificate the
    # receiver presented.
    declare -A seen=()
    for c in "${CASES[@]}"; do
        read -r _ rcpt recv _ verdict <<<"$c"
        domain=${rcpt#*@}
        [[ -n ${seen[$domain]:-} ]] && continue
        seen[$domain]=1
        want=${verdict//_/ }
        for name in "domain $domain" "host mx-$recv.relay.test"; do
            out=$("$MAILTLS" --config "$CONF" memory show "${name#* }" 2>&1) || true
            echo "$out" >"$W/memory-${name#* }.txt"
            line=$(grep -m1 -F -- "$name:" <<<"$out" || true)
            if [[ $line == "$name: best $want (last $want)" ]]; then
                row ok - "${name#* }" "memory show: $want" "$line"
            else
                row FAIL - "${name#* }" "memory show: $want" "$(tr '\n' ' ' <<<"$out" | cut -c1-200)"
            fi
        done
        if [[ $recv != plain ]]; then
            fp=$(openssl x509 -in "$W/pki/$recv.pem" -outform DER | sha256sum | cut -d' ' -f1)
            if grep -qF "certificate sha256: $fp" <<<"$out"; then
                row ok - "mx-$recv.relay.test" "memory: the receiver's certificate" "sha256 ${fp:0:16}…"
            else
                row FAIL - "mx-$recv.relay.test" "memory: the receiver's certificate" "want sha256 $fp"
            fi
        fi
    done
    # mailtls's queue: every recipient delivered, with the TLS facts the
    # policy demands (DANE-authenticated / TLS / plaintext).
    "$MAILTLS" --config "$CONF" queue list >"$W/queue-list.txt" 2>&1 || true
    for c in "${CASES[@]}"; do
        read -r sub rcpt recv _ verdict <<<"$c"
        case $verdict in
        DANE_ok) want="delivered after 1 attempt\\(s\\): .*mx-dane.relay.test \[$MX_DANE\] over TLSv1\.[23] .*DANE-authenticated: 250 " ;;
        SSL_ok) want="delivered after 1 attempt\\(s\\): .*mx-tls.relay.test \[$MX_TLS\] over TLSv1\.[23] \([A-Z0-9_]+\): 250 " ;;
        *) want="delivered after 1 attempt\\(s\\): .*mx-plain.relay.test \[$MX_PLAIN\] in plaintext: 250 " ;;
        esac
        line=$(grep -E -m1 "^ +$rcpt " "$W/queue-list.txt" || true)
        if grep -Eq -- "$want" <<<"$line"; then
            row ok "$sub" "$rcpt" "mailtls queue: delivered as required" "$(sed -E 's/^ +[^ ]+ delivered after 1 attempt\(s\): //; s/: 250 .*//' <<<"$line")"
        else
            row FAIL "$sub" "$rcpt" "mailtls queue: delivered as required" "${line:-not in queue list}"
        fi
    done
    # No alert: nothing dropped below what the memory knew.
    alerts=$("$MAILTLS" --config "$CONF" memory alerts 2>&1) || true
    echo "$alerts" >"$W/memory-alerts.txt"
    if [[ $alerts == "no alerts" ]]; then
        row ok - - "memory alerts: none" ""
    else
        row FAIL - - "memory alerts: none" "$(tr '\n' ' ' <<<"$alerts" | cut -c1-200)"
    fi
fi
for s in trusted sasl; do
    if pf_queue_empty "$s"; then
        row ok "$s" - "submitter queue empty" ""
    else
        row FAIL "$s" - "submitter queue empty" "$(grep -E 'status=(deferred|bounced)' "$W/postfix/$s/maillog" | tail -1)"
    fi
done

echo
printf '%-5s %-8s %-20s %-37s %s\n' "" submit recipient check detail
cat "$RESULTS"
echo
if ((HOLD)); then
    cat <<EOF
Everything is up (work directory $W):
  sendmail -C $W/postfix/trusted/etc -f x@submit.test -- a@dane.relay.test </some/message
  ${MAILTLS:-mailtls} --config ${CONF:-?} queue list | memory show dane.relay.test
  Maildirs: $W/postfix/{dane,tls,plain}/mail/inbox/new; logs: $W/postfix/*/maillog, $W/serve.log
Ctrl-C stops everything.
EOF
    while :; do sleep 3600; done
fi
if ((FAILS)); then
    echo "relay-interop: $FAILS FAILED (logs: $W/serve.log, $W/postfix/*/maillog; KEEP_ON_FAILURE=1 keeps them)"
    for l in "$W"/serve.log "$W"/postfix/*/maillog; do
        [[ -f $l ]] || continue
        echo "--- last lines of ${l#"$W"/}"
        tail -15 "$l"
    done
    exit 1
fi
echo "relay-interop: all $(wc -l <"$RESULTS") checks passed ($DNS_MODE; Postfix $(postconf -h mail_version), NSD $(nsd -v 2>&1 | awk 'NR==1{print $3}'), unbound $(unbound -V | awk 'NR==1{print $2}'))"
