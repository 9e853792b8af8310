#!/usr/bin/env bash
# The inbound MX and the secure alias (SPEC §4, issue #4) between software we
# did not write: a real Postfix sends to `mailtls serve` as another
# provider's MTA would, mailtls hands what it accepts to a real Dovecot over
# LMTP, and swaks talks to the MX directly. Asserts that
#   - with smtp_tls_security_level = none, Postfix's mail to the secure alias
#     comes back to its sender as a Postfix bounce that says 5.7.10
#     "encryption required", while mail to the normal address (alone, or in
#     the same transaction) lands in Dovecot's Maildir;
#   - with smtp_tls_security_level = encrypt (postfix reload), mail to the
#     alias is delivered, and mailtls's Received: header says ESMTPS and the
#     TLS version and cipher;
#   - swaks in plaintext to the alias gets 550 5.7.10, with --tls 250; an
#     unknown user 550 5.1.1; a foreign domain 554 5.7.1;
#   - expert --inbound-min-tls 1.3: Postfix limited to TLS 1.2 gets its mail
#     to the alias back (5.7.10), swaks over TLS 1.3 still gets through;
#   - `mailtls settings set ... encrypted-sending off` removes the alias at
#     once, without a restart (550 5.1.1 even over TLS).
# See docs/inbound-interop.md.
#
# usage: scripts/inbound-interop.sh [--hold]
#   --hold   keep everything running until Ctrl-C at the end
# env: MAILTLS=path/to/mailtls (default: cargo build -p mailtls, debug)
#      DEADLINE=seconds to wait for each delivery or bounce (default 60)
#      KEEP_ON_FAILURE=1 keeps the work directory (logs, mail) after a failure
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/interop/lib.sh
. "$ROOT/scripts/interop/lib.sh"
# shellcheck source=scripts/relay/lib.sh
. "$ROOT/scripts/relay/lib.sh"

# Addresses of our own (127.44/16), so that this can run next to the other
# interop scripts and benchmarks.
MX_ADDR=${MX_ADDR:-127.44.0.2}       # mailtls serve: 25 (MX), 587, 465
LMTP_ADDR=${LMTP_ADDR:-127.44.0.3}   # Dovecot LMTP, port 24
PF_ADDR=${PF_ADDR:-127.44.0.4}       # the sending Postfix's source address
DEAD_DNS=${DEAD_DNS:-127.44.0.9:53}  # nothing listens: the MX needs no DNS
DEADLINE=${DEADLINE:-60}

LOCAL_DOMAIN=example.org
SECURE_DOMAIN=secure.example.org
ME=me@$LOCAL_DOMAIN
ALIAS=me@$SECURE_DOMAIN
MX_HOST=mx.example.org
SENDER=sender@postfix.test           # the Postfix's own user, reads its bounces
PF_HOST=mta.postfix.test
# Dovecot will not deliver as root: the mailbox belongs to nobody/nogroup.
MAIL_UID=65534 MAIL_GID=65534

HOLD=0
for arg in "$@"; do
    case $arg in
    --hold) HOLD=1 ;;
    -h | --help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
    esac
done

# What this needs, each with its Debian package. Missing ones fail; never
# skipped.
missing=()
for pair in postfix:postfix postconf:postfix sendmail:postfix swaks:swaks \
    dovecot:dovecot-core script:util-linux ss:iproute2; do
    bin=${pair%%:*} pkg=${pair#*:}
    command -v "$bin" >/dev/null 2>&1 || [[ -x /usr/sbin/$bin ]] || missing+=("$bin (Debian package $pkg)")
done
[[ -x /usr/lib/dovecot/lmtp ]] || missing+=("Dovecot's LMTP server /usr/lib/dovecot/lmtp (Debian package dovecot-lmtpd)")
if ((${#missing[@]})); then
    log "missing: ${missing[*]}"
    log "install them with: sudo .ci/install-deps"
    exit 1
fi
[[ $(id -u) == 0 ]] || die "must run as root (binds port 25, runs Postfix and Dovecot)"
DOVECOT_PID="" HOLD_SLEEP=""
# exited PID : our child PID has ended (gone, or a zombie not yet reaped).
exited() {
    local state
    state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 0
    [[ -z $state || $state == Z ]]
}
# Dovecot's master needs a moment to stop its children: give it up to 5 s
# before world_stop (which sends SIGKILL after 0.3 s).
on_exit() {
    local rc=$? i
    set +e
    [[ -n $HOLD_SLEEP ]] && kill "$HOLD_SLEEP" 2>/dev/null
    if [[ -n $DOVECOT_PID ]] && kill "$DOVECOT_PID" 2>/dev/null; then
        for ((i = 0; i < 50; i++)); do exited "$DOVECOT_PID" && break; sleep 0.1; done
        wait "$DOVECOT_PID" 2>/dev/null
        log "stopped dovecot (pid $DOVECOT_PID)"
    fi
    # world_stop takes the exit status from $?.
    rc_is() { return "$1"; }
    rc_is "$rc"
    world_stop
}
trap on_exit EXIT
trap 'exit 130' INT TERM

if [[ -z ${MAILTLS:-} ]]; then
    # As the other interop scripts: the debug build, which `cargo test` has
    # just made in CI (a no-op then), never a stale binary.
    log "building mailtls (cargo build -p mailtls --locked)"
    (cd "$ROOT" && cargo build -q -p mailtls --locked) || die "cargo build -p mailtls failed"
    MAILTLS=$ROOT/target/debug/mailtls
fi
[[ -x $MAILTLS ]] || die "no mailtls binary at $MAILTLS"
"$MAILTLS" settings --help >/dev/null 2>&1 || die "$MAILTLS has no settings command (stale build?)"

world_init
# The target directory is shared with concurrent builds: keep the binary we
# checked for the whole run (a hard link keeps this inode even if cargo
# replaces target/debug/mailtls meanwhile).
ln -f "$MAILTLS" "$W/mailtls" 2>/dev/null || cp "$MAILTLS" "$W/mailtls"
MAILTLS=$W/mailtls
RESULTS=$W/results.txt
: >"$RESULTS"
FAILS=0
row() { # ok|FAIL CHECK DETAIL
    printf '%-5s %-50s %s\n' "$1" "$2" "$3" >>"$RESULTS"
    [[ $1 == ok ]] || FAILS=$((FAILS + 1))
}

LOGS=("$W/serve.log" "$W/postfix/sender/maillog" "$W/dovecot/dovecot.log" "$W/dovecot/stderr")
show_logs() {
    local l
    for l in "${LOGS[@]}"; do
        [[ -s $l ]] || continue
        echo "--- last lines of ${l#"$W"/}"
        tail -25 "$l"
    done
}
# Set-up failures stop at once, with every log.
fatal() { show_logs >&2; die "$*"; }

# ------------------------------------------------------------- Dovecot -----

# Only the LMTP service, on $LMTP_ADDR:24; everything (sockets, state, log,
# the user's home) below $W/dovecot. The passwd-file userdb holds only $ME,
# so Dovecot itself would refuse anyone else at RCPT.
D=$W/dovecot
mkdir -p "$D/home/me" "$D/run" "$D/state"
chown "$MAIL_UID:$MAIL_GID" "$D/home/me"
printf '%s::%s:%s::%s::\n' "$ME" "$MAIL_UID" "$MAIL_GID" "$D/home/me" >"$D/users"
port_free "$LMTP_ADDR" 24 tcp
cat >"$D/dovecot.conf" <<EOF
base_dir = $D/run
state_dir = $D/state
instance_name = mailtls-inbound-interop
protocols = lmtp
listen = $LMTP_ADDR
ssl = no
log_path = $D/dovecot.log
first_valid_uid = $MAIL_UID
first_valid_gid = $MAIL_GID
mail_location = maildir:~/Maildir
passdb {
  driver = passwd-file
  args = $D/users
}
userdb {
  driver = passwd-file
  args = $D/users
}
service lmtp {
  inet_listener lmtp {
    address = $LMTP_ADDR
    port = 24
  }
}
EOF
dovecot -F -c "$D/dovecot.conf" >"$D/stderr" 2>&1 &
DOVECOT_PID=$!
wait_for smtp_banner_port "$LMTP_ADDR" 24 || fatal "Dovecot did not answer LMTP on $LMTP_ADDR:24"
MAILDIR=$D/home/me/Maildir
log "Dovecot $(dovecot --version | cut -d' ' -f1) LMTP on $LMTP_ADDR:24, Maildir of $ME in $MAILDIR"

# ------------------------------------------------------------- mailtls -----

for port in 25 587 465 8080; do port_free "$MX_ADDR" "$port" tcp; done
CONF=$W/mailtls.toml
mkdir -p "$W/data"
cat >"$CONF" <<EOF
data_dir = "$W/data"
hostname = "$MX_HOST"

# The MX needs no DNS; nothing listens here, so any look-up would fail.
[dns]
resolver = "$DEAD_DNS"
mode = "trust-ad"

[smtp.inbound]
listen = ["$MX_ADDR:25"]
local_domains = ["$LOCAL_DOMAIN"]
secure_domain = "$SECURE_DOMAIN"

# Not under test; on our address so that the defaults (127.0.0.1) do not clash.
[smtp.submission]
listen = ["$MX_ADDR:587"]
listen_tls = ["$MX_ADDR:465"]

[web]
listen = "$MX_ADDR:8080"

[delivery]
lmtp = "$LMTP_ADDR:24"
EOF
mailtls() { "$MAILTLS" --config "$CONF" "$@"; }
printf 'interop-%s\n' "$RANDOM$RANDOM" | mailtls user add "$ME" >"$W/user-add.out" 2>&1 ||
    { cat "$W/user-add.out" >&2; die "mailtls user add $ME"; }
mailtls settings set "$ME" encrypted-sending on >"$W/settings-on.out" 2>&1 ||
    { cat "$W/settings-on.out" >&2; die "mailtls settings set $ME encrypted-sending on"; }
if grep -qF "secure alias $ALIAS" "$W/settings-on.out"; then
    row ok "settings on: secure alias $ALIAS" "$(grep -m1 -F "secure alias" "$W/settings-on.out")"
else
    row FAIL "settings on: secure alias $ALIAS" "$(tr '\n' ' ' <"$W/settings-on.out")"
fi
MAILTLS_PORTS="$MX_ADDR:25 $MX_ADDR:587 $MX_ADDR:465"
mailtls_serve serve "$CONF"

# ------------------------------------------------------------- Postfix -----

# The sending MTA: sendmail(1) -> pickup -> qmgr -> smtp(8) to mailtls for
# both domains (transport_maps, no DNS), from $PF_ADDR. Its own user
# $SENDER gets its mail, the bounces, in a Maildir (virtual(8)).
P=$W/postfix/sender
pf_dirs sender >/dev/null
mkdir -p "$P/mail"
chown postfix:postfix "$P/mail"
printf '%s smtp:[%s]:25\n%s smtp:[%s]:25\n' "$SECURE_DOMAIN" "$MX_ADDR" "$LOCAL_DOMAIN" "$MX_ADDR" >"$P/etc/transport"
{
    pf_main_common sender "$PF_HOST"
    cat <<EOF
mynetworks = 127.0.0.1/32
virtual_mailbox_domains = postfix.test
virtual_mailbox_base = $P/mail
virtual_mailbox_maps = static:inbox/
virtual_uid_maps = static:$(id -u postfix)
virtual_gid_maps = static:$(id -g postfix)
virtual_minimum_uid = 1
transport_maps = texthash:$P/etc/transport
smtp_bind_address = $PF_ADDR
smtp_tls_security_level = none
smtp_tls_loglevel = 1
# One SMTP session per delivery: no plaintext session of before the reload
# may carry the mail that must go encrypted.
smtp_connection_cache_on_demand = no
EOF
} >"$P/etc/main.cf"
{ echo 'pickup    unix  n       -       n       60      1       pickup'; pf_master_common; } >"$P/etc/master.cf"
pf_start sender
log "Postfix $(postconf -h mail_version) sender: sendmail -> smtp:[$MX_ADDR]:25 from $PF_ADDR (smtp_tls_security_level = none)"

# ------------------------------------------------------------- helpers -----

TAG=$(date +%s)-$$
f="" # the message file the last await found

# send SUBJECT RCPT... : one message from $SENDER through Postfix's sendmail.
send() {
    local subject=$1 to
    shift
    to=$(printf '<%s>, ' "$@")
    printf 'From: <%s>\nTo: %s\nSubject: %s\nMessage-ID: <%s@inbound-interop.test>\n\ninbound interop: %s\n' \
        "$SENDER" "${to%, }" "$subject" "${subject// /.}" "$subject" |
        sendmail -C "$P/etc" -f "$SENDER" -- "$@" || fatal "sendmail to $*"
}

# mail_with DIR TEXT : the first message file in the Maildir DIR (its new/)
# that contains TEXT; empty when there is none.
mail_with() {
    { grep -rlF -- "$2" "$1/new" 2>/dev/null || true; } | head -1
}

# await VAR DIR TEXT WHAT : polls up to $DEADLINE s for mail_with DIR TEXT,
# sets VAR to the file; on timeout records a FAIL row for WHAT and returns 1.
await() {
    local -n found=$1
    local end=$(($(date +%s) + DEADLINE))
    found=$(mail_with "$2" "$3")
    while [[ -z $found ]] && (($(date +%s) < end)); do
        sleep 0.2
        found=$(mail_with "$2" "$3")
    done
    [[ -n $found ]] && return 0
    row FAIL "$4" "nothing with '$3' in ${2#"$W"/}/new after ${DEADLINE}s"
    return 1
}

# The header block of a message, folded lines joined, CRs dropped.
headers() {
    tr -d '\r' <"$1" | awk '
        /^$/ { exit }
        /^[ \t]/ { sub(/^[ \t]+/, " "); cur = cur $0; next }
        { if (cur != "") print cur; cur = $0 }
        END { if (cur != "") print cur }'
}

# ours FILE : mailtls's Received: header of a delivered message.
ours() { headers "$1" | grep -m1 -F "by $MX_HOST (mailtls)" || true; }

# expect_received CHECK FILE tls|plain CLIENT_IP : mailtls's Received: says
# ESMTPS and the TLS facts (tls), or ESMTP and nothing about TLS (plain).
expect_received() {
    local check=$1 file=$2 mode=$3 ip=$4 h
    h=$(ours "$file")
    if [[ $mode == tls && $h == *"([$ip])"*" with ESMTPS id "* && $h =~ \(using\ TLSv1\.[23]\ with\ cipher\ [A-Z0-9_]+\) ]]; then
        row ok "$check" "$(grep -oE 'with ESMTPS id [^ ]+ \(using TLSv[0-9.]+ with cipher [A-Z0-9_]+' <<<"$h")"
    elif [[ $mode == plain && $h == *"([$ip])"*" with ESMTP id "* && $h != *"(using TLS"* ]]; then
        row ok "$check" "$(grep -oE 'from [^;]* with ESMTP id [^ ;]+' <<<"$h")"
    else
        row FAIL "$check" "${h:-no Received: by $MX_HOST (mailtls) in ${file#"$W"/}}"
    fi
}

# swaks_mx NAME [--tls] RCPT : swaks to the MX; transcript in $W/swaks-NAME.txt.
SWAKS_RC=0
swaks_mx() {
    local name=$1 tls=()
    shift
    [[ $1 == --tls ]] && { tls=(--tls); shift; }
    SWAKS_RC=0
    swaks --server "$MX_ADDR" --port 25 --helo client.elsewhere.test --timeout 20 "${tls[@]}" \
        --from friend@elsewhere.test --to "$1" \
        --header "Subject: inbound-interop $TAG swaks $name" --body "swaks $name" \
        >"$W/swaks-$name.txt" 2>&1 || SWAKS_RC=$?
}

# expect_swaks CHECK NAME CODE [TEXT] : swaks run NAME got the server reply
# CODE (e.g. "550 5.7.10", with TEXT in it) to a command, and failed; or,
# for CODE "250", its message was accepted ("queued as") and swaks
# succeeded.
expect_swaks() {
    local check=$1 name=$2 want=$3 text=${4:-} line ok=0
    if [[ $want == 250 ]]; then
        line=$(grep -E -m1 '^<[-~] +250 .*queued as ' "$W/swaks-$name.txt" || true)
        [[ -n $line ]] && ((SWAKS_RC == 0)) && ok=1
    else
        # swaks marks a refusal <** (plaintext) or <~* (over TLS).
        line=$(grep -E -m1 "^<(\*\*|~\*) +$want " "$W/swaks-$name.txt" || true)
        [[ -n $line && $line == *"$text"* ]] && ((SWAKS_RC != 0)) && ok=1
    fi
    if ((ok)); then
        row ok "$check" "$(sed -E 's/^<[-~*]* +//' <<<"$line" | cut -c1-110)"
    else
        row FAIL "$check" "swaks exit $SWAKS_RC: $(grep -E '^<' "$W/swaks-$name.txt" | tail -2 | tr '\n' ' ' | cut -c1-200)"
    fi
}

# ----------------------------------------- 1. Postfix, no TLS (level none) --

S_ALIAS="inbound-interop $TAG none to the alias"
S_ME="inbound-interop $TAG none to me"
S_BOTH="inbound-interop $TAG none to both"
send "$S_ALIAS" "$ALIAS"
send "$S_ME" "$ME"
send "$S_BOTH" "$ALIAS" "$ME"
log "Postfix (none): 3 messages sent; waiting up to ${DEADLINE}s each for the bounces and deliveries"

# check_bounce CHECK SUBJECT [TEXT] : the bounce Postfix returns to its
# sender for the alias: Postfix's own notification, the DSN says the alias
# failed with 5.7.10 and mailtls's reply (quoted by Postfix) says
# "encryption required" (and TEXT); no other recipient is in it.
check_bounce() {
    local bounce b
    await bounce "$P/mail/inbox" "Subject: $2" "$1" || return 0
    # Postfix wraps long lines of its bounce text: compare with every run
    # of white space as one space.
    b=$(tr -s ' \t\r\n' ' ' <"$bounce")
    if [[ $b == *"<MAILER-DAEMON@$PF_HOST>"* && $b == *"Undelivered Mail Returned to Sender"* &&
        $b == *"<$ALIAS>: host ${MX_ADDR}[${MX_ADDR}] said: 550 5.7.10 "* &&
        $b == *"Final-Recipient: rfc822; $ALIAS Original-Recipient: rfc822;$ALIAS Action: failed Status: 5.7.10 "* &&
        $b == *"(encryption required)"* && $b == *"${3:-}"* && $b != *"Final-Recipient: rfc822; $ME "* ]]; then
        row ok "$1" "$(grep -oE '550 5\.7\.10 [^)]*\)' <<<"$b" | head -1 | cut -c1-120)"
    else
        row FAIL "$1" "${bounce#"$W"/}: $(grep -oE '(said:|Diagnostic-Code:).{0,120}' <<<"$b" | head -1 || echo 'no 5.7.10 diagnostic')"
    fi
}
check_bounce "Postfix none: bounce for $ALIAS" "$S_ALIAS"
check_bounce "Postfix none, $ALIAS + $ME: bounce for the alias" "$S_BOTH"

if await f "$MAILDIR" "Subject: $S_ME" "Postfix none: $ME delivered to Dovecot"; then
    row ok "Postfix none: $ME delivered to Dovecot" "${f#"$W"/}"
    expect_received "  mailtls Received: ESMTP, no TLS, from Postfix" "$f" plain "$PF_ADDR"
fi
if await f "$MAILDIR" "Subject: $S_BOTH" "Postfix none, $ALIAS + $ME: $ME delivered"; then
    row ok "Postfix none, $ALIAS + $ME: $ME delivered" "${f#"$W"/}"
fi
# The alias and the normal address went in one delivery (one smtp(8)
# process, one queue id): the refusal of one RCPT did not touch the other.
qid=$(grep -m1 -F "message-id=<${S_BOTH// /.}@inbound-interop.test>" "$P/maillog" | sed -E 's/.*: ([0-9A-F]+): message-id=.*/\1/' || true)
sent=$(grep -E "postfix/smtp\[[0-9]+\]: ${qid:-none}: to=<$ME>,.* status=sent " "$P/maillog" | grep -oE 'smtp\[[0-9]+\]' || true)
bounced=$(grep -E "postfix/smtp\[[0-9]+\]: ${qid:-none}: to=<$ALIAS>,.* status=bounced " "$P/maillog" | grep -oE 'smtp\[[0-9]+\]' || true)
if [[ -n $qid && -n $sent && $sent == "$bounced" ]]; then
    row ok "Postfix none, $ALIAS + $ME: one delivery, one sent, one bounced" "queue id $qid, $sent"
else
    row FAIL "Postfix none, $ALIAS + $ME: one delivery, one sent, one bounced" "queue id ${qid:-?}: sent by '${sent:-}', bounced by '${bounced:-}'"
fi
# (The bounce is back, so mailtls has answered that RCPT long ago.)
if [[ -z $(mail_with "$MAILDIR" "Subject: $S_ALIAS") ]]; then
    row ok "Postfix none: nothing for the alias in Dovecot" ""
else
    row FAIL "Postfix none: nothing for the alias in Dovecot" "$(mail_with "$MAILDIR" "Subject: $S_ALIAS")"
fi

# ---------------------------------- 2. Postfix, TLS required (encrypt) ----

# smtp(8) processes of the sender's master.
smtp_children() {
    local master kid
    master=$(tr -d ' ' <"$P/queue/pid/master.pid")
    for kid in $(cat /proc/"$master"/task/*/children 2>/dev/null); do
        [[ $(cat /proc/"$kid"/comm 2>/dev/null) == smtp ]] && echo "$kid"
    done
    return 0
}
# none_alive PID... : none of them exists any more.
none_alive() {
    local pid
    for pid in "$@"; do [[ -d /proc/$pid ]] && return 1; done
    return 0
}
# pf_reload "NAME = VALUE"... : postconf -e, then `postfix reload`; returns
# once (bounded) the master has re-read main.cf and no smtp(8) process of
# before the reload is left to deliver with the old settings.
pf_reload() {
    local old reloads end
    mapfile -t old < <(smtp_children)
    reloads=$(grep -c 'postfix/master.*: reload ' "$P/maillog" || true)
    postconf -c "$P/etc" -e "$@"
    postfix -c "$P/etc" reload >"$P/reload.out" 2>&1 || { cat "$P/reload.out" >&2; fatal "postfix reload"; }
    end=$(($(date +%s) + DEADLINE))
    until (($(grep -c 'postfix/master.*: reload ' "$P/maillog" || true) > reloads)) && none_alive "${old[@]}"; do
        (($(date +%s) < end)) || fatal "Postfix did not reload within ${DEADLINE}s (smtp processes of before: ${old[*]:-none})"
        sleep 0.2
    done
    log "Postfix reloaded: $*"
}
pf_reload "smtp_tls_security_level = encrypt"

S_TLS="inbound-interop $TAG encrypt to the alias"
send "$S_TLS" "$ALIAS"
if await f "$MAILDIR" "Subject: $S_TLS" "Postfix encrypt: $ALIAS delivered to Dovecot"; then
    row ok "Postfix encrypt: $ALIAS delivered to Dovecot" "${f#"$W"/}"
    expect_received "  mailtls Received: ESMTPS, TLS, from Postfix" "$f" tls "$PF_ADDR"
    # Dovecot's own trace: it got the message from mailtls over LMTP.
    dh=$(headers "$f" | grep -m1 -E "^Received: from $MX_HOST .* with LMTP" || true)
    if [[ -n $dh ]]; then
        row ok "  Dovecot Received: from mailtls with LMTP" "$(cut -c1-100 <<<"$dh")"
    else
        row FAIL "  Dovecot Received: from mailtls with LMTP" "$(headers "$f" | grep -m1 '^Received:' | cut -c1-150)"
    fi
    # The copy names the alias it was sent to, for the user's filters.
    if headers "$f" | grep -qx "X-Original-To: $ALIAS"; then
        row ok "  X-Original-To: $ALIAS" ""
    else
        row FAIL "  X-Original-To: $ALIAS" "$(headers "$f" | grep -m1 -i '^X-Original-To:' || echo none)"
    fi
fi
# (The first TLS session in the log: there was none before the reload.)
tlsline=$(grep -m1 -E "postfix/smtp\[[0-9]+\]: .*TLS connection established to $MX_ADDR\[$MX_ADDR\]:25" "$P/maillog" || true)
if [[ -n $tlsline ]]; then
    row ok "Postfix encrypt: its log says TLS to mailtls" "$(sed -E 's/.*TLS connection established to //' <<<"$tlsline" | cut -c1-100)"
else
    row FAIL "Postfix encrypt: its log says TLS to mailtls" "no 'TLS connection established to $MX_ADDR' in ${P#"$W"/}/maillog"
fi
if [[ -z $(mail_with "$P/mail/inbox" "Subject: $S_TLS") ]]; then
    row ok "Postfix encrypt: no bounce" ""
else
    row FAIL "Postfix encrypt: no bounce" "a bounce for '$S_TLS' in ${P#"$W"/}/mail/inbox/new"
fi
# ------------------------------------------------ 3. swaks to the MX -------

swaks_mx plain-alias "$ALIAS"
expect_swaks "swaks plaintext to $ALIAS: 550 5.7.10" plain-alias "550 5.7.10" "encryption required"
swaks_mx tls-alias --tls "$ALIAS"
expect_swaks "swaks --tls to $ALIAS: 250" tls-alias 250
if await f "$MAILDIR" "swaks tls-alias" "swaks --tls to $ALIAS: in Dovecot"; then
    row ok "swaks --tls to $ALIAS: in Dovecot" "${f#"$W"/}"
    expect_received "  mailtls Received: ESMTPS, TLS, from swaks" "$f" tls 127.0.0.1
fi
swaks_mx unknown --tls "nobody@$LOCAL_DOMAIN"
expect_swaks "swaks --tls to nobody@$LOCAL_DOMAIN: 550 5.1.1" unknown "550 5.1.1"
swaks_mx foreign --tls bob@elsewhere.test
expect_swaks "swaks --tls to bob@elsewhere.test: 554 5.7.1" foreign "554 5.7.1"

# ---------------------- 4. expert: TLS 1.3 at least for mail to the alias --

# A real MTA whose TLS stops at 1.2: mailtls refuses the alias at RCPT,
# Postfix bounces; swaks (TLS 1.3) still gets through.
mailtls settings set "$ME" encrypted-sending expert --inbound-min-tls 1.3 >"$W/settings-expert.out" 2>&1 ||
    { cat "$W/settings-expert.out" >&2; fatal "mailtls settings set $ME encrypted-sending expert --inbound-min-tls 1.3"; }
pf_reload "smtp_tls_mandatory_protocols = >=TLSv1.2, <=TLSv1.2"
S_TLS12="inbound-interop $TAG TLS 1.2 to the alias"
send "$S_TLS12" "$ALIAS"
check_bounce "expert min TLS 1.3: Postfix at TLS 1.2 bounced" "$S_TLS12" "TLS 1.3 or newer, not TLS 1.2"
tlsline=$(grep -E "postfix/smtp\[[0-9]+\]: .*TLS connection established to $MX_ADDR\[$MX_ADDR\]:25: TLSv1\.2 " "$P/maillog" | tail -1 || true)
if [[ -n $tlsline ]]; then
    row ok "  Postfix's log: that session was TLS 1.2" "$(sed -E 's/.*TLS connection established to //' <<<"$tlsline" | cut -c1-100)"
else
    row FAIL "  Postfix's log: that session was TLS 1.2" "no 'TLS connection established to $MX_ADDR...: TLSv1.2' in ${P#"$W"/}/maillog"
fi
swaks_mx expert-tls13 --tls "$ALIAS"
expect_swaks "expert min TLS 1.3: swaks --tls (TLS 1.3) 250" expert-tls13 250

# ---------------------------------- 5. the setting off, serve running ------

mailtls settings set "$ME" encrypted-sending off >"$W/settings-off.out" 2>&1 ||
    { cat "$W/settings-off.out" >&2; fatal "mailtls settings set $ME encrypted-sending off"; }
swaks_mx off-alias --tls "$ALIAS"
expect_swaks "setting off, no restart: swaks --tls to alias 5.1.1" off-alias "550 5.1.1"
swaks_mx off-me "$ME"
expect_swaks "setting off: plaintext to $ME still 250" off-me 250
if await f "$MAILDIR" "swaks off-me" "setting off: $ME's mail in Dovecot"; then
    row ok "setting off: $ME's mail in Dovecot" "${f#"$W"/}"
fi
if kill -0 "$MAILTLS_PID" 2>/dev/null; then
    row ok "mailtls serve still the same process" "pid $MAILTLS_PID"
else
    row FAIL "mailtls serve still the same process" "pid $MAILTLS_PID is gone"
fi

# Nothing deferred in Postfix: every message was delivered or bounced.
end=$(($(date +%s) + DEADLINE))
until pf_queue_empty sender || (($(date +%s) >= end)); do sleep 0.2; done
if pf_queue_empty sender; then
    row ok "Postfix queue empty (nothing deferred)" ""
else
    row FAIL "Postfix queue empty (nothing deferred)" "$(grep -E 'status=deferred' "$P/maillog" | tail -1 | cut -c1-200)"
fi

# LMTP delivered it all: mailtls's own Maildir root stayed empty.
if [[ -z $(find "$W/data/mail" -type f 2>/dev/null | head -1) ]]; then
    row ok "nothing in mailtls's own Maildirs (all over LMTP)" ""
else
    row FAIL "nothing in mailtls's own Maildirs (all over LMTP)" "$(find "$W/data/mail" -type f | head -3 | tr '\n' ' ')"
fi

# ---------------------------------------------------------------- report ---

echo
cat "$RESULTS"
echo
if ((HOLD)); then
    cat <<EOF
Everything is up (work directory $W):
  sendmail -C $P/etc -f $SENDER -- $ALIAS </some/message
  swaks --server $MX_ADDR --port 25 [--tls] --to $ALIAS
  $MAILTLS --config $CONF settings set $ME encrypted-sending on|off
  Dovecot's Maildir: $MAILDIR/new; bounces: $P/mail/inbox/new
  logs: $W/serve.log, $P/maillog, $D/dovecot.log
Ctrl-C stops everything.
EOF
    # wait (unlike a foreground sleep) returns at once on a signal.
    while :; do
        sleep 3600 &
        HOLD_SLEEP=$!
        wait "$HOLD_SLEEP" || true
    done
fi
if ((FAILS)); then
    echo "inbound-interop: $FAILS of $(wc -l <"$RESULTS") checks FAILED (KEEP_ON_FAILURE=1 keeps $W)"
    show_logs
    exit 1
fi
echo "inbound-interop: all $(wc -l <"$RESULTS") checks passed (Postfix $(postconf -h mail_version), Dovecot $(dovecot --version | cut -d' ' -f1), swaks $(swaks --version 2>&1 | grep -oE '[0-9]+\.[0-9.]+' | head -1))"
