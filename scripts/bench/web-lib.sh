# shellcheck shell=bash
# Shared by scripts/bench-web.sh and scripts/bench-fleet.sh: start a
# `mailtls serve` whose web side is on a given port, and read wrk's output.
# The caller sets WORK (a scratch directory), MAILTLS (the binary) and the
# array PIDS (processes to kill on exit), and defines die().

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_web_node NAME PORT [EXTRA_TOML]: `mailtls serve` with data in
# $WORK/NAME, config $WORK/NAME.toml, log $WORK/NAME.log, the web side on
# 127.0.0.1:PORT, every SMTP listener on a port of its own choosing (0).
# The benchmark is one client: the public limit (default 60/min) would
# answer 429 after a second, so it is raised out of the way.
start_web_node() {
    local name=$1 port=$2 extra=${3:-}
    cat >"$WORK/$name.toml" <<TOML
data_dir = "$WORK/$name"
hostname = "$name.mailtls.test"
[smtp.inbound]
listen = ["127.0.0.1:0"]
[smtp.submission]
listen = ["127.0.0.1:0"]
listen_tls = ["127.0.0.1:0"]
[web]
listen = "127.0.0.1:$port"
check_rate_per_minute = 4000000000
$extra
TOML
    NO_COLOR=1 "$MAILTLS" --config "$WORK/$name.toml" serve >"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do
        grep -q "web on http://" "$WORK/$name.log" && break
        sleep 0.1
    done
    grep -q "web on http://127.0.0.1:$port" "$WORK/$name.log" ||
        { cat "$WORK/$name.log" >&2; die "$name: mailtls serve did not start its web listener"; }
}

# Requests/sec of a wrk report.
rps() { awk '/^Requests\/sec:/ { print $2 }' "$1"; }

# p99 latency of a `wrk --latency` report, in milliseconds.
p99() {
    awk '$1 == "99%" {
        v = $2; unit = v; sub(/[0-9.]+/, "", unit); sub(/[a-z]+$/, "", v);
        if (unit == "us") v /= 1000; else if (unit == "s") v *= 1000; else if (unit == "m") v *= 60000;
        printf "%.3f\n", v }' "$1"
}
