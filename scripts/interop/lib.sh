# shellcheck shell=bash
# Shared by scripts/interop.sh and scripts/bench-scan.sh: brings up, on
# loopback and inside one temporary directory, a private DNSSEC world served by
# NSD, unbound as validating (and as plain, non-validating) recursive resolver,
# and Postfix instances as MX hosts. Nothing here touches the system's own
# configuration (/etc/postfix, /etc/unbound, /etc/nsd, /etc/resolv.conf).
#
# The caller sets W (the work directory, created by world_init) and calls
# world_stop from an EXIT trap. Every daemon we start is recorded in
# $W/pids with its pid; world_stop stops exactly those.

# CI runs us without standard input. A closed fd 0 gets reused by the first
# socket a daemon opens, and some (NSD) then misbehave: give it /dev/null.
exec </dev/null

# Addresses (all on 127.0.0.0/8, port 53 / 25; override from the environment).
NSD_ADDR=${NSD_ADDR:-127.53.0.1}             # authoritative: ., test., *.test.
UNBOUND_ADDR=${UNBOUND_ADDR:-127.53.0.2}     # validating recursive resolver
UNBOUND_PLAIN_ADDR=${UNBOUND_PLAIN_ADDR:-127.53.0.3} # iterator only, no validation

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

# The external programs the world needs, with the Debian package of each.
# Missing ones are reported by name; never skipped.
world_require() {
    local missing=() pair bin pkg
    for pair in nsd:nsd unbound:unbound unbound-checkconf:unbound \
        ldns-keygen:ldnsutils ldns-signzone:ldnsutils ldns-key2ds:ldnsutils \
        postfix:postfix posttls-finger:postfix openssl:openssl \
        dig:bind9-dnsutils delv:bind9-dnsutils jq:jq ss:iproute2 "$@"; do
        bin=${pair%%:*} pkg=${pair#*:}
        if ! command -v "$bin" >/dev/null 2>&1 && [[ ! -x /usr/sbin/$bin ]]; then
            missing+=("$bin (Debian package $pkg)")
        fi
    done
    if ((${#missing[@]})); then
        log "missing: ${missing[*]}"
        log "install them with: sudo .ci/install-deps"
        exit 1
    fi
    [[ $(id -u) == 0 ]] || die "must run as root (binds port 25/53, runs Postfix)"
}

world_init() {
    W=$(mktemp -d "${TMPDIR:-/tmp}/mailtls-interop.XXXXXX")
    # Postfix daemons run as user postfix and must reach files below $W.
    chmod 755 "$W"
    mkdir -p "$W"/{keys,zones,nsd,unbound,pki,postfix}
    : >"$W/pids"
    log "work directory $W"
}

# Refuse to start if something we did not start already holds ADDR:PORT (or
# the wildcard address on that port, which would make our bind fail).
port_free() {
    local addr=$1 port=$2 proto=${3:-tcp} flag=-ltnH
    [[ $proto == udp ]] && flag=-lunH
    if ss "$flag" "( sport = :$port )" | awk '{print $4}' |
        grep -E "^($addr|0\.0\.0\.0|\*|\[::\]):$port$" >/dev/null; then
        ss "$flag"p "( sport = :$port )" >&2
        die "$addr:$port/$proto is taken by a process we did not start"
    fi
}

# wait_for CMD... : retry for up to 10 s.
wait_for() {
    local i
    for ((i = 0; i < 100; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}

remember_pid() { printf '%s %s\n' "$1" "$2" >>"$W/pids"; }

world_stop() {
    local rc=$?
    set +e
    [[ -n ${W:-} && -d ${W:-/nonexistent} ]] || return "$rc"
    local d
    for d in "$W"/postfix/*/; do
        [[ -f $d/etc/main.cf ]] || continue
        postfix -c "$d/etc" stop >/dev/null 2>&1
    done
    local name pid
    while read -r name pid; do
        [[ $name == postfix:* ]] && continue
        kill "$pid" 2>/dev/null && log "stopped $name (pid $pid)"
    done <"$W/pids"
    # Give them a moment, then make sure.
    sleep 0.3
    while read -r name pid; do
        [[ $name == postfix:* ]] && continue
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
    done <"$W/pids"
    if [[ ${KEEP_WORKDIR:-0} == 1 || $rc != 0 && ${KEEP_ON_FAILURE:-0} == 1 ]]; then
        log "kept $W"
    else
        rm -rf "$W"
    fi
    return "$rc"
}

# ------------------------------------------------------------- mailtls -----

# mailtls_config NAME : writes a config whose data_dir (the TLS memory) is
# $W/mailtls-NAME, new and empty, and prints its path. Every run, and every
# DNS mode in it, starts with an empty memory (the check answers from the
# memory first), and mailtls writes nothing outside $W.
mailtls_config() {
    mkdir -p "$W/mailtls-$1"
    printf 'data_dir = "%s"\n' "$W/mailtls-$1" >"$W/mailtls-$1.toml"
    echo "$W/mailtls-$1.toml"
}

# mailtls_probe_flag SUBCOMMAND : sets PROBE_FLAG to (--probe) when the
# subcommand has it (always probe live instead of answering from memory).
# shellcheck disable=SC2034 # PROBE_FLAG is read by the caller
mailtls_probe_flag() {
    PROBE_FLAG=()
    if "$MAILTLS" "$1" --help 2>/dev/null | grep -- '--probe' >/dev/null; then
        PROBE_FLAG=(--probe)
    fi
}

# ---------------------------------------------------------------- PKI ------

# A private CA and one RSA-2048 MX certificate (leaf+CA chain) whose names
# cover the given host names. Files: $W/pki/{ca.pem,ca.key,mx.key,mx.pem,
# mx-chain.pem}. RSA because that is still what most MX hosts present.
pki_make() {
    local p=$W/pki san="" h
    for h in "$@"; do san+="${san:+,}DNS:$h"; done
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=mailtls interop CA" \
        -keyout "$p/ca.key" -out "$p/ca.pem" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=$1" \
        -keyout "$p/mx.key" -out "$p/mx.csr" 2>/dev/null
    printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' "$san" >"$p/mx.ext"
    openssl x509 -req -in "$p/mx.csr" -CA "$p/ca.pem" -CAkey "$p/ca.key" -CAcreateserial \
        -days 30 -extfile "$p/mx.ext" -out "$p/mx.pem" 2>/dev/null
    cat "$p/mx.key" "$p/mx.pem" "$p/ca.pem" >"$p/mx-chain.pem"
    chmod 644 "$p"/*.pem "$p"/*.key
}

# TLSA data, computed by openssl from the files themselves.
tlsa_311() { # DANE-EE, SPKI, SHA-256 of a certificate file
    openssl x509 -in "$1" -noout -pubkey | openssl pkey -pubin -outform DER | sha256sum | cut -d' ' -f1
}
tlsa_201() { # DANE-TA, full certificate, SHA-256 of a certificate file
    openssl x509 -in "$1" -outform DER | sha256sum | cut -d' ' -f1
}

# ---------------------------------------------------------------- DNS ------

# zone_keys ZONE : makes a KSK and a ZSK (ECDSA P-256, algorithm 13); sets
# KSK to the KSK's path without .key/.private.
zone_keys() {
    local zone=$1
    (cd "$W/keys" && ldns-keygen -a ECDSAP256SHA256 -k "$zone" >"$W/keys/$zone.ksk" &&
        ldns-keygen -a ECDSAP256SHA256 "$zone" >"$W/keys/$zone.zsk")
    KSK=$W/keys/$(cat "$W/keys/$zone.ksk")
}

# zone_ds ZONE : the SHA-256 DS record of ZONE's KSK, for the parent zone.
zone_ds() {
    ldns-key2ds -n -2 "$W/keys/$(cat "$W/keys/$1.ksk").key"
}

# zone_sign ZONE FILE [nsec3] : signs $W/zones/FILE into $W/zones/FILE.signed.
# NSEC3 per RFC 9276 (SHA-1, 0 extra iterations, empty salt).
zone_sign() {
    local zone=$1 file=$W/zones/$2 nsec=(-n -a 1 -t 0 -s '')
    [[ ${3:-nsec} == nsec3 ]] || nsec=()
    local ksk zsk
    ksk=$W/keys/$(cat "$W/keys/$zone.ksk")
    zsk=$W/keys/$(cat "$W/keys/$zone.zsk")
    # Inception an hour ago so that a slightly slow clock elsewhere does not matter.
    ldns-signzone "${nsec[@]}" -i "$(($(date +%s) - 3600))" -e "$(($(date +%s) + 14 * 86400))" \
        -o "$zone" -f "$file.signed" "$file" "$zsk" "$ksk"
}

# soa_ns ZONE : the SOA and NS lines every zone here starts with; NSD serves
# every zone, so every zone names the same server.
soa_ns() {
    # shellcheck disable=SC2016 # $TTL is zone-file syntax
    printf '$TTL 300\n%s IN SOA ns.root-servers. hostmaster.root-servers. 1 3600 600 86400 60\n%s IN NS ns.root-servers.\n' "$1" "$1"
}

# corrupt_rrsig FILE OWNER TYPE : flips characters in the signature of the
# RRSIG covering OWNER/TYPE, so a validator must find it bogus.
corrupt_rrsig() {
    local file=$1 owner=$2 type=$3
    awk -v o="$owner" -v t="$type" '
        $1 == o && $4 == "RRSIG" && $5 == t && !done {
            sig = $NF
            # swap the first 8 base64 characters for others of the same length
            $NF = (substr(sig, 1, 1) == "A" ? "BBBBBBBB" : "AAAAAAAA") substr(sig, 9)
            done = 1
        }
        { print }
        END { if (!done) exit 3 }' "$file" >"$file.tmp" || die "no RRSIG for $owner $type in $file"
    mv "$file.tmp" "$file"
}

# dns_world CHILD... : the signed root and the signed TLD test., which
# delegates to each CHILD, given as NAME:signed[:nsec3] or NAME:unsigned, whose
# zone text the caller has written to $W/zones/NAME.zone. Signed children get
# keys, signatures and a DS in test.; unsigned ones only NS (a proven insecure
# delegation). Writes the trust anchor (the root KSK) to $W/root.key (DNSKEY)
# and $W/root.ds (DS), and the zones for nsd_start to NSD_ZONES.
dns_world() {
    local spec name kind nsec served=()
    soa_ns test. >"$W/zones/test.zone"
    for spec in "$@"; do
        IFS=: read -r name kind nsec <<<"$spec"
        echo "$name. IN NS ns.root-servers." >>"$W/zones/test.zone"
        if [[ $kind == signed ]]; then
            zone_keys "$name."
            zone_sign "$name." "$name.zone" "${nsec:-nsec}" || die "signing $name"
            zone_ds "$name." >>"$W/zones/test.zone"
            served+=("$name.=$name.zone.signed")
        else
            served+=("$name.=$name.zone")
        fi
    done
    zone_keys test.
    zone_sign test. test.zone || die "signing test."
    { soa_ns .; echo "ns.root-servers. IN A $NSD_ADDR"; echo "test. IN NS ns.root-servers."; zone_ds test.; } >"$W/zones/root.zone"
    zone_keys .
    zone_sign . root.zone || die "signing ."
    sed -e '/^;/d' -e 's/[[:space:]]*;.*$//' "$KSK.key" >"$W/root.key"
    ldns-key2ds -n -2 "$KSK.key" >"$W/root.ds"
    # shellcheck disable=SC2034 # read by the caller, for nsd_start
    NSD_ZONES=(".=root.zone.signed" "test.=test.zone.signed" "${served[@]}")
}

# nsd_start ZONE=FILE... : NSD in the foreground (backgrounded here), own
# config, no chroot, no privilege drop, everything below $W/nsd.
nsd_start() {
    local conf=$W/nsd/nsd.conf z
    port_free "$NSD_ADDR" 53 udp
    port_free "$NSD_ADDR" 53 tcp
    cat >"$conf" <<EOF
server:
    ip-address: $NSD_ADDR@53
    do-ip6: no
    username: ""
    chroot: ""
    zonesdir: "$W/zones"
    pidfile: "$W/nsd/nsd.pid"
    database: ""
    zonelistfile: "$W/nsd/zone.list"
    xfrdfile: "$W/nsd/xfrd.state"
    xfrdir: "$W/nsd"
    logfile: "$W/nsd/nsd.log"
    server-count: 1
    verbosity: 1
    hide-version: yes
    refuse-any: no
remote-control:
    control-enable: no
EOF
    for z in "$@"; do
        printf 'zone:\n    name: "%s"\n    zonefile: "%s"\n' "${z%%=*}" "${z#*=}" >>"$conf"
    done
    nsd-checkconf "$conf" || die "nsd-checkconf $conf"
    nsd -d -c "$conf" >>"$W/nsd/nsd.log" 2>&1 &
    remember_pid nsd $!
    wait_for dig +time=1 +tries=1 @"$NSD_ADDR" . SOA ||
        { cat "$W/nsd/nsd.log" >&2; die "NSD did not answer on $NSD_ADDR"; }
    log "NSD serving $* on $NSD_ADDR:53"
}

# unbound_start NAME ADDR validate|plain : a recursive resolver whose only
# root server is our NSD. "validate" checks DNSSEC against our root KSK and
# sets AD; "plain" only iterates (what mailtls's in-process validator needs:
# the answers with their RRSIGs, untouched, bogus ones included).
unbound_start() {
    local name=$1 addr=$2 mode=$3 conf=$W/unbound/$1.conf modules="iterator" ta=""
    port_free "$addr" 53 udp
    port_free "$addr" 53 tcp
    if [[ $mode == validate ]]; then
        modules="validator iterator"
        ta="trust-anchor-file: \"$W/root.key\""
    fi
    printf '.\t3600000\tNS\tns.root-servers.\nns.root-servers.\t3600000\tA\t%s\n' "$NSD_ADDR" >"$W/unbound/root.hints"
    cat >"$conf" <<EOF
server:
    interface: $addr
    port: 53
    do-ip6: no
    username: ""
    chroot: ""
    directory: "$W/unbound"
    pidfile: "$W/unbound/$name.pid"
    do-daemonize: no
    use-syslog: no
    logfile: "$W/unbound/$name.log"
    log-servfail: yes
    # RFC 8914: say why a SERVFAIL happened; mailtls's trust-ad mode reads
    # the DNSSEC-family Extended DNS Errors as bogus.
    ede: yes
    verbosity: 1
    val-log-level: 2
    num-threads: 1
    so-reuseport: no
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    root-hints: "$W/unbound/root.hints"
    module-config: "$modules"
    $ta
    # RFC 6761 special-use names are served locally by default; not here.
    local-zone: "test." nodefault
    harden-referral-path: no
    qname-minimisation: no
    infra-keep-probing: yes
    cache-max-ttl: 300
remote-control:
    control-enable: no
EOF
    unbound-checkconf "$conf" >/dev/null || { unbound-checkconf "$conf"; die "unbound-checkconf $conf"; }
    unbound -d -c "$conf" >>"$W/unbound/$name.log" 2>&1 &
    remember_pid "unbound-$name" $!
    wait_for dig +time=1 +tries=1 @"$addr" . SOA ||
        { cat "$W/unbound/$name.log" >&2; die "unbound $name did not answer on $addr"; }
    log "unbound ($mode) on $addr:53"
}

# ------------------------------------------------------------- Postfix -----

# The services every Postfix instance needs besides its listeners (shared
# with scripts/relay/lib.sh).
pf_master_common() {
    cat <<'EOF'
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
virtual   unix  -       n       n       -       -       virtual
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
}

# postfix_start NAME ADDR tls|plain|legacy [HOSTNAME] : a Postfix instance
# of its own (config, queue and data directories below $W/postfix/NAME) whose
# only listener is smtpd on ADDR:25. It never accepts a recipient: probes
# stop at QUIT. "tls": STARTTLS offered (may), the $W/pki chain. "plain":
# no STARTTLS. "legacy": STARTTLS with TLS 1.0 only and old ciphers, as on
# many port-25 servers still.
postfix_start() {
    local name=$1 addr=$2 mode=$3 host=${4:-mx.interop.test} p=$W/postfix/$1
    port_free "$addr" 25 tcp
    mkdir -p "$p/etc" "$p/queue" "$p/data"
    chown postfix:postfix "$p/data"
    cat >"$p/etc/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $p/queue
data_directory = $p/data
mail_owner = postfix
setgid_group = postdrop
myhostname = $host
mydomain = interop.test
myorigin = \$myhostname
mydestination =
relayhost =
# Postfix accepts in inet_interfaces only addresses of an interface, and
# 127.25.0.1 is not one (loopback answers all of 127/8 without being
# configured): keep 127.0.0.1 here, bind $addr in master.cf.
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
local_recipient_maps =
smtpd_peername_lookup = no
smtpd_banner = \$myhostname ESMTP interop-$name
smtpd_relay_restrictions = reject
smtpd_recipient_restrictions = reject
maillog_file = $p/maillog
maillog_file_prefixes = $W
smtpd_tls_loglevel = 0
# No session cache: every probe pays for a full handshake, as a first
# contact does.
smtpd_tls_session_cache_database =
EOF
    case $mode in
    plain)
        echo "smtpd_tls_security_level = none" >>"$p/etc/main.cf"
        ;;
    tls)
        printf 'smtpd_tls_security_level = may\nsmtpd_tls_chain_files = %s\n' "$W/pki/mx-chain.pem" >>"$p/etc/main.cf"
        ;;
    legacy)
        # OpenSSL 3 allows TLS < 1.2 only at security level 0.
        cat >>"$p/etc/main.cf" <<EOF
smtpd_tls_security_level = may
smtpd_tls_chain_files = $W/pki/mx-chain.pem
smtpd_tls_protocols = >=TLSv1, <=TLSv1
smtpd_tls_ciphers = low
tls_low_cipherlist = AES128-SHA:@SECLEVEL=0
EOF
        ;;
    *) die "postfix_start: unknown mode $mode" ;;
    esac
    # Only what smtpd needs; chroot off (the queue directory is not a jail
    # with /etc/services and friends).
    printf '%s:smtp inet n - n - - smtpd\n' "$addr" >"$p/etc/master.cf"
    pf_master_common >>"$p/etc/master.cf"
    # Postfix logs to syslog or a tty; script(1) gives its complaints a tty.
    script -qec "postfix -c '$p/etc' check" /dev/null </dev/null || die "postfix check ($name)"
    postfix -c "$p/etc" start >/dev/null 2>&1 || { cat "$p/maillog" >&2; die "postfix start ($name)"; }
    remember_pid "postfix:$name" "$(tr -d ' ' <"$p/queue/pid/master.pid" 2>/dev/null || echo 0)"
    wait_for smtp_banner "$addr" ||
        { cat "$p/maillog" >&2; die "Postfix $name did not answer on $addr:25"; }
    log "Postfix $name ($mode) on $addr:25"
}

# Reads the greeting of ADDR:25 with bash's /dev/tcp.
smtp_banner() {
    local line
    exec 9<>"/dev/tcp/$1/25" || return 1
    IFS= read -r -t 2 line <&9 || { exec 9<&-; return 1; }
    printf 'QUIT\r\n' >&9
    exec 9<&-
    [[ $line == 220* ]]
}
