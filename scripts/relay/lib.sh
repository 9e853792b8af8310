# shellcheck shell=bash
# Shared by scripts/relay-interop.sh and scripts/bench-relay.sh, on top of
# scripts/interop/lib.sh (which the caller sources first: W, log, die,
# port_free, wait_for, remember_pid, world_stop, the DNS world). Adds Postfix
# instances that really take mail (lib.sh's only ever refuse recipients):
#
#   pf_receiver NAME ADDR tls|plain HOST DOMAIN  MX that delivers to a Maildir
#   pf_sink     NAME ADDR HOST QUEUE_DIR         MX (STARTTLS) that discards
#   pf_submitter NAME BIND RELAYHOST [sasl USER PASS]
#                                                sendmail -> relayhost, TLS
#   pf_relay    NAME ADDR MYNETWORKS RESOLV      smtpd -> queue -> smtp via MX
#
# Each is `postfix -c $W/postfix/NAME/etc start` with its own main.cf and
# master.cf, no chroot, logs in $W/postfix/NAME/maillog. Nothing in /etc is
# read or changed (except that pf_relay's daemons see $RESOLV as
# /etc/resolv.conf, through a bind mount in a mount namespace of their own).

# pf_main_common NAME HOST : the main.cf lines every instance shares.
pf_main_common() {
    local p=$W/postfix/$1
    cat <<EOF
compatibility_level = 3.6
queue_directory = $p/queue
data_directory = $p/data
mail_owner = postfix
setgid_group = postdrop
myhostname = $2
mydomain = relay.test
myorigin = \$myhostname
mydestination =
# Postfix accepts in inet_interfaces only addresses of an interface, and
# 127.x.y.z is not one (loopback answers all of 127/8 without being
# configured): keep 127.0.0.1 here, bind the real address in master.cf.
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
alias_maps =
alias_database =
local_recipient_maps =
smtpd_peername_lookup = no
maillog_file = $p/maillog
maillog_file_prefixes = $W
# No DSN chatter to postmaster about our test traffic.
notify_classes =
EOF
}

# pf_dirs NAME : the instance's directories; prints the instance directory.
pf_dirs() {
    local p=$W/postfix/$1
    mkdir -p "$p/etc" "$p/queue" "$p/data"
    chown postfix:postfix "$p/data"
    echo "$p"
}

# pf_start NAME [WRAPPER...] : `postfix check`, then start (through WRAPPER,
# e.g. a mount namespace), and remember the master's pid.
pf_start() {
    local name=$1 p=$W/postfix/$1
    shift
    # Postfix logs to syslog or a tty; script(1) gives its complaints a tty.
    script -qec "postfix -c '$p/etc' check" /dev/null </dev/null >"$p/check.out" 2>&1 ||
        { cat "$p/check.out" >&2; die "postfix check ($name)"; }
    "$@" postfix -c "$p/etc" start >"$p/start.out" 2>&1 ||
        { cat "$p/start.out" "$p/maillog" >&2 2>/dev/null; die "postfix start ($name)"; }
    wait_for test -s "$p/queue/pid/master.pid" || die "Postfix $name wrote no master.pid"
    remember_pid "postfix:$name" "$(tr -d ' ' <"$p/queue/pid/master.pid")"
}

# smtp_banner_port ADDR PORT : the greeting of ADDR:PORT is a 220.
smtp_banner_port() {
    local line
    exec 8<>"/dev/tcp/$1/$2" || return 1
    IFS= read -r -t 2 line <&8 || { exec 8<&-; return 1; }
    printf 'QUIT\r\n' >&8
    exec 8<&-
    [[ $line == 220* ]]
}

# pf_receiver NAME ADDR tls|plain HOST DOMAIN : an MX for DOMAIN on ADDR:25
# that delivers every recipient of DOMAIN to the Maildir
# $W/postfix/NAME/mail/inbox/ (virtual(8), as user postfix). "tls" offers
# STARTTLS with $W/pki/NAME-chain.pem (a certificate of its own, so that
# its TLSA record names only it) and records the TLS facts in its
# Received: header; "plain" offers no STARTTLS.
pf_receiver() {
    local name=$1 addr=$2 mode=$3 host=$4 domain=$5 p
    port_free "$addr" 25 tcp
    p=$(pf_dirs "$name")
    mkdir -p "$p/mail"
    chown postfix:postfix "$p/mail"
    {
        pf_main_common "$name" "$host"
        cat <<EOF
mynetworks =
smtpd_banner = \$myhostname ESMTP receiver-$name
virtual_mailbox_domains = $domain
virtual_mailbox_base = $p/mail
virtual_mailbox_maps = static:inbox/
virtual_uid_maps = static:$(id -u postfix)
virtual_gid_maps = static:$(id -g postfix)
virtual_minimum_uid = 1
smtpd_relay_restrictions = reject_unauth_destination
smtpd_recipient_restrictions =
smtpd_tls_loglevel = 1
EOF
        case $mode in
        tls) printf 'smtpd_tls_security_level = may\nsmtpd_tls_chain_files = %s\nsmtpd_tls_received_header = yes\n' "$W/pki/$name-chain.pem" ;;
        plain) echo "smtpd_tls_security_level = none" ;;
        *) die "pf_receiver: unknown mode $mode" ;;
        esac
    } >"$p/etc/main.cf"
    { printf '%s:smtp inet n - n - - smtpd\n' "$addr"; pf_master_common; } >"$p/etc/master.cf"
    pf_start "$name"
    wait_for smtp_banner_port "$addr" 25 ||
        { cat "$p/maillog" >&2; die "Postfix $name did not answer on $addr:25"; }
    log "Postfix receiver $name ($mode) for $domain on $addr:25, Maildir $p/mail/inbox"
}

# pf_sink NAME ADDR HOST QUEUE_DIR : an MX on ADDR:25 that accepts any
# recipient (on loopback only), offers STARTTLS with $W/pki/mx-chain.pem and
# throws every message away (discard(8)). Its queue lives in QUEUE_DIR (give
# it a tmpfs: the sink's fsyncs are not what we measure). Every accepted
# recipient logs one "status=sent" line in its maillog.
pf_sink() {
    local name=$1 addr=$2 host=$3 qdir=$4 p
    port_free "$addr" 25 tcp
    p=$(pf_dirs "$name")
    rmdir "$p/queue" && ln -s "$qdir" "$p/queue"
    {
        pf_main_common "$name" "$host"
        cat <<EOF
queue_directory = $qdir
mynetworks = 127.0.0.0/8
smtpd_banner = \$myhostname ESMTP sink-$name
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions =
default_transport = discard:sink
relay_transport = discard:sink
smtpd_tls_security_level = may
smtpd_tls_chain_files = $W/pki/mx-chain.pem
smtpd_tls_received_header = yes
smtpd_tls_loglevel = 1
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
default_process_limit = 200
in_flow_delay = 0
EOF
    } >"$p/etc/main.cf"
    # queue_directory appears twice; the later one wins, but keep postconf quiet.
    sed -i "0,/^queue_directory = /{/^queue_directory = /d}" "$p/etc/main.cf"
    { printf '%s:smtp inet n - n - - smtpd\n' "$addr"; pf_master_common; } >"$p/etc/master.cf"
    pf_start "$name"
    wait_for smtp_banner_port "$addr" 25 ||
        { cat "$p/maillog" >&2; die "Postfix $name did not answer on $addr:25"; }
    log "Postfix sink $name (STARTTLS, discard) on $addr:25, queue in $qdir"
}

# pf_sink_count NAME : recipients the sink has accepted and discarded.
pf_sink_count() {
    grep -c ' status=sent ' "$W/postfix/$1/maillog" 2>/dev/null || true
}

# pf_sink_sessions NAME FROM_LINE : "CONNECTIONS TLS MAILS" over the sink's
# sessions that ended after line FROM_LINE of its maillog (smtpd's
# "disconnect from" summary: starttls=1, mail=N).
pf_sink_sessions() {
    tail -n +"$(($2 + 1))" "$W/postfix/$1/maillog" | awk '
        / postfix\/smtpd\[[0-9]+\]: disconnect from / {
            c++
            if ($0 ~ / starttls=1/) t++
            if (match($0, / mail=[0-9]+/)) m += substr($0, RSTART + 6, RLENGTH - 6)
        }
        END { printf "%d %d %d\n", c, t, m }'
}

# pf_submitter NAME BIND RELAYHOST [sasl USER PASSWORD] : a Postfix that
# takes mail from sendmail(1) (pickup) and sends everything to RELAYHOST
# ("[addr]:port") from the address BIND, with TLS required
# (smtp_tls_security_level = encrypt). With "sasl", it authenticates as
# USER (smtp_sasl_auth_enable, password map in texthash: format).
pf_submitter() {
    local name=$1 bind=$2 relayhost=$3 sasl=${4:-} user=${5:-} pass=${6:-} p
    p=$(pf_dirs "$name")
    {
        pf_main_common "$name" "$name.submit.test"
        cat <<EOF
mynetworks = 127.0.0.1/32
relayhost = $relayhost
smtp_bind_address = $bind
smtp_tls_security_level = encrypt
smtp_tls_loglevel = 1
# The relay's certificate is self-signed (mailtls's generated default):
# encrypt does not authenticate it, as with most smart hosts on a LAN.
default_destination_concurrency_limit = 4
EOF
        if [[ $sasl == sasl ]]; then
            printf '%s %s:%s\n' "$relayhost" "$user" "$pass" >"$p/etc/sasl_passwd"
            chmod 600 "$p/etc/sasl_passwd"
            cat <<EOF
smtp_sasl_auth_enable = yes
smtp_sasl_password_maps = texthash:$p/etc/sasl_passwd
smtp_sasl_security_options = noanonymous
smtp_sasl_tls_security_options = noanonymous
smtp_sasl_mechanism_filter = plain, login
EOF
        fi
    } >"$p/etc/main.cf"
    { echo 'pickup    unix  n       -       n       60      1       pickup'; pf_master_common; } >"$p/etc/master.cf"
    pf_start "$name"
    log "Postfix submitter $name: sendmail -> $relayhost from $bind (encrypt${sasl:+, SASL as $user})"
}

# pf_sendmail NAME FROM TO SUBJECT : one message through NAME's sendmail.
pf_sendmail() {
    local name=$1 from=$2 to=$3 subject=$4
    printf 'From: <%s>\nTo: <%s>\nSubject: %s\nMessage-ID: <%s@relay-interop.test>\n\nrelay interop: %s\n' \
        "$from" "$to" "$subject" "$subject" "$subject" |
        sendmail -C "$W/postfix/$name/etc" -f "$from" -- "$to"
}

# pf_relay NAME ADDR MYNETWORKS RESOLV : a Postfix relay configured like
# mailtls: smtpd on ADDR:25 relays for MYNETWORKS only, queue on disk (below
# $W, fsync before 250 as always), delivery by MX through DNS with
# smtp_tls_security_level = may. Its daemons resolve with RESOLV as
# /etc/resolv.conf (a private mount namespace; the real file is untouched).
pf_relay() {
    local name=$1 addr=$2 nets=$3 resolv=$4 p
    port_free "$addr" 25 tcp
    p=$(pf_dirs "$name")
    {
        pf_main_common "$name" "$name.relay.test"
        cat <<EOF
mynetworks = $nets
smtpd_banner = \$myhostname ESMTP relay-$name
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions =
smtp_tls_security_level = may
smtp_tls_loglevel = 0
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
EOF
    } >"$p/etc/main.cf"
    { printf '%s:smtp inet n - n - - smtpd\n' "$addr"; pf_master_common; } >"$p/etc/master.cf"
    # shellcheck disable=SC2016 # expanded by the inner sh
    pf_start "$name" unshare -m sh -c 'mount --bind "$1" /etc/resolv.conf && shift && exec "$@"' sh "$resolv"
    wait_for smtp_banner_port "$addr" 25 ||
        { cat "$p/maillog" >&2; die "Postfix $name did not answer on $addr:25"; }
    log "Postfix relay $name on $addr:25 (mynetworks $nets, smtp_tls_security_level = may)"
}

# pf_queue_empty NAME : nothing left in NAME's queue.
pf_queue_empty() {
    [[ -z $(find "$W/postfix/$1/queue/"{maildrop,incoming,active,deferred} -type f 2>/dev/null | head -1) ]]
}

# ---------------------------------------------------------------- PKI ------

# pki_leaf NAME HOST... : a certificate for HOST... from $W/pki/ca (made by
# pki_make), with a key of its own: $W/pki/NAME.{key,pem}, NAME-chain.pem.
pki_leaf() {
    local name=$1 p=$W/pki san="" h
    shift
    for h in "$@"; do san+="${san:+,}DNS:$h"; done
    openssl req -newkey rsa:2048 -nodes -subj "/CN=$1" \
        -keyout "$p/$name.key" -out "$p/$name.csr" 2>/dev/null
    printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' "$san" >"$p/$name.ext"
    openssl x509 -req -in "$p/$name.csr" -CA "$p/ca.pem" -CAkey "$p/ca.key" -CAcreateserial \
        -days 30 -extfile "$p/$name.ext" -out "$p/$name.pem" 2>/dev/null
    cat "$p/$name.key" "$p/$name.pem" "$p/ca.pem" >"$p/$name-chain.pem"
    chmod 644 "$p/$name".* "$p/$name-chain.pem"
}

# ------------------------------------------------------------- mailtls -----

# mailtls_serve NAME CONFIG : `mailtls --config CONFIG serve` in the
# background, log in $W/NAME.log; waits until every submission port in the
# config answers (MAILTLS_PORTS: "addr:port ..."). Sets MAILTLS_PID.
mailtls_serve() {
    local name=$1 config=$2 hp
    # NO_COLOR: tracing writes ANSI colours even into a file otherwise.
    NO_COLOR=1 MAILTLS_LOG=${MAILTLS_LOG:-info} "$MAILTLS" --config "$config" serve >>"$W/$name.log" 2>&1 &
    MAILTLS_PID=$!
    remember_pid "mailtls-$name" "$MAILTLS_PID"
    for hp in $MAILTLS_PORTS; do
        if [[ $hp == *:465 ]]; then
            wait_for bash -c "exec 7<>/dev/tcp/${hp%:*}/${hp##*:}" ||
                { cat "$W/$name.log" >&2; die "mailtls serve did not listen on $hp"; }
        else
            wait_for smtp_banner_port "${hp%:*}" "${hp##*:}" ||
                { cat "$W/$name.log" >&2; die "mailtls serve did not answer on $hp"; }
        fi
    done
    log "mailtls serve ($name, pid $MAILTLS_PID) on $MAILTLS_PORTS"
}

# cpu_ticks PID : utime+stime of PID plus its reaped children's (cutime+
# cstime), in clock ticks.
cpu_ticks() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
    # Fields after the command name (which may contain spaces): 14..17.
    awk '{print $12 + $13 + $14 + $15}' <<<"${stat##*) }"
}

# tree_ticks PID : cpu_ticks of PID and every live descendant. Reaped
# descendants are in their parents' cutime/cstime (Postfix's children are
# reaped by master).
tree_ticks() {
    local total=0 pid
    for pid in $(tree_pids "$1"); do
        total=$((total + $(cpu_ticks "$pid")))
    done
    echo "$total"
}

tree_pids() {
    local kid
    echo "$1"
    for kid in $(cat /proc/"$1"/task/*/children 2>/dev/null); do
        tree_pids "$kid"
    done
}
