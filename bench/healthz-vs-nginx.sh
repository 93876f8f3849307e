#!/usr/bin/env bash
# healthz-vs-nginx.sh [OUT.md]: GET /healthz on mdmd against nginx serving a 2-byte file, over
# HTTPS with the same certificate, key, TLS version and cipher suite, driven by the same clients
# (wrk and mdm-bench) in the same run. Prints a markdown report, or writes it to OUT.md.
#
# Two set-ups, each run with every client mode:
#   shared  mdmd --shards 2 and nginx with 2 workers, server and client unpinned (all cores)
#   pinned  server on core 1 (1 shard / 1 worker), client on core 0: the fair CPU comparison
# Client modes: wrk keep-alive; wrk with Connection: close (a new TLS connection per request;
# wrk resumes sessions); mdm-bench keep-alive, --new-conn (full handshakes) and --new-conn
# --resume. mdmd is measured on its admin listener, whose TLS set-up matches nginx's (no
# certificate request, session tickets); the pinned set-up adds the new-connection modes on the
# device listener, which asks for an optional client certificate (and then does not resume).
# The figure that holds on a noisy machine is server CPU time per request (utime+stime of the
# server processes from /proc/PID/stat, before and after each run, over requests served).
#
# Needs build/ (ninja -C build), wrk, nginx (nginx-light) and taskset: ./scripts/dev.sh bench
# installs and builds them, then runs this. Knobs (environment): BENCH_DURATION seconds per
# measurement (10), BENCH_CONNECTIONS (50). Touches nothing outside a temporary directory;
# only talks to 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${1:-}
DURATION=${BENCH_DURATION:-10}
CONNS=${BENCH_CONNECTIONS:-50}
MDMD=$PWD/build/actors/mdmd
BENCH=$PWD/build/bench/mdm-bench
CLIENT_TIMEOUT=$((DURATION + 30)) # hard bound on one client run, seconds

for tool in wrk nginx taskset timeout; do
    command -v "$tool" >/dev/null || { echo "$0: $tool is missing (./scripts/dev.sh bench installs it)" >&2; exit 1; }
done
for bin in "$MDMD" "$BENCH"; do
    [ -x "$bin" ] || { echo "$0: $bin is missing: build first (ninja -C build)" >&2; exit 1; }
done
[[ "$DURATION" =~ ^[0-9]+$ && "$CONNS" =~ ^[0-9]+$ ]] || { echo "$0: BENCH_DURATION and BENCH_CONNECTIONS are integers" >&2; exit 2; }
[ "$(nproc)" -ge 2 ] || { echo "$0: needs at least 2 cores (server and client are pinned apart)" >&2; exit 1; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/mdmd-bench.XXXXXX")
MDMD_PID=""
NGINX_PID=""

log() { echo "[bench] $*" >&2; }

# Stops one process we started: TERM, then KILL after 5 s.
stop_pid() {
    local pid=$1 i
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

stop_servers() {
    stop_pid "$MDMD_PID"
    stop_pid "$NGINX_PID"
    MDMD_PID=""
    NGINX_PID=""
}

cleanup() {
    stop_servers
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A TCP port on 127.0.0.1 that nothing listens on (bounded tries).
free_port() {
    local i p
    for ((i = 0; i < 50; i++)); do
        p=$((20000 + RANDOM % 20000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    echo "$0: no free port found" >&2
    return 1
}

# Waits until URL answers 2xx (one mdm-bench request) while PID lives, at most ~15 s.
wait_ready() {
    local url=$1 pid=$2 i
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        if "$BENCH" http --url "$url" --requests 1 --connections 1 --new-conn --duration 1 \
            --timeout 1000 >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.2
    done
    echo "$0: $url did not come up" >&2
    return 1
}

# utime+stime (clock ticks) summed over the given PIDs.
proc_ticks() {
    local total=0 pid stat
    local -a f
    for pid in "$@"; do
        [ -r "/proc/$pid/stat" ] || continue
        stat=$(<"/proc/$pid/stat")
        read -r -a f <<<"${stat##*) }" # fields 3.. (comm may hold spaces)
        total=$((total + f[11] + f[12])) # fields 14 (utime) and 15 (stime)
    done
    echo "$total"
}

# The nginx master and its workers, separated by blanks.
nginx_pids() {
    echo "$NGINX_PID"
    cat "/proc/$NGINX_PID/task/$NGINX_PID/children" 2>/dev/null || true
}

# ---- the two servers ----

INSTANCE=$TMP/mdmd
log "creating an mdmd instance in $INSTANCE"
"$MDMD" init "$INSTANCE" --hostnames localhost,127.0.0.1 >"$TMP/init.log" 2>&1 ||
    { cat "$TMP/init.log" >&2; exit 1; }

mkdir -p "$TMP/nginx/www" "$TMP/nginx/tmp"
printf ok >"$TMP/nginx/www/healthz" # the 2-byte file


# start_mdmd SHARDS PIN...: starts mdmd (under taskset when PIN is given); sets MDMD_PID,
# MDMD_URL (admin listener) and MDMD_DEVICE_URL.
start_mdmd() {
    local shards=$1 i port="" admin=""
    shift
    "$@" "$MDMD" serve "$INSTANCE" --shards "$shards" --device-listen 127.0.0.1:0 \
        --admin-listen 127.0.0.1:0 >"$TMP/mdmd.log" 2>&1 &
    MDMD_PID=$!
    for ((i = 0; i < 100; i++)); do
        port=$(sed -n 's/^listening device=\([0-9]*\) admin=\([0-9]*\).*$/\1/p' "$TMP/mdmd.log")
        admin=$(sed -n 's/^listening device=\([0-9]*\) admin=\([0-9]*\).*$/\2/p' "$TMP/mdmd.log")
        [ -n "$port" ] && [ -n "$admin" ] && break
        kill -0 "$MDMD_PID" 2>/dev/null || break
        sleep 0.1
    done
    [ -n "$admin" ] || { cat "$TMP/mdmd.log" >&2; echo "$0: mdmd did not start" >&2; exit 1; }
    MDMD_URL=https://127.0.0.1:$admin/healthz
    MDMD_DEVICE_URL=https://127.0.0.1:$port/healthz
    wait_ready "$MDMD_URL" "$MDMD_PID" || { cat "$TMP/mdmd.log" >&2; exit 1; }
}

# start_nginx WORKERS PIN...: same for nginx, with a config of its own in $TMP/nginx.
start_nginx() {
    local workers=$1 port probe_port
    shift
    port=$(free_port)
    probe_port=$(free_port)
    local user
    user="$(id -un) $(id -gn)"
    cat >"$TMP/nginx/nginx.conf" <<EOF
# Written by bench/healthz-vs-nginx.sh; everything lives under $TMP/nginx.
worker_processes $workers;
user $user;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    default_type text/plain;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    open_file_cache max=16;
    open_file_cache_valid 60s;
    client_body_temp_path $TMP/nginx/tmp/body;
    proxy_temp_path $TMP/nginx/tmp/proxy;
    fastcgi_temp_path $TMP/nginx/tmp/fastcgi;
    ssl_certificate $INSTANCE/tls/chain.pem;
    ssl_certificate_key $INSTANCE/tls/server.key;
    ssl_protocols TLSv1.3;
    # The suite mdmd (wolfSSL) picks; OpenSSL would pick AES-256-GCM for OpenSSL clients.
    ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256;
    root $TMP/nginx/www;
    server {
        listen 127.0.0.1:$port ssl reuseport backlog=4096; # one socket per worker, as mdmd shards
        location = /healthz { }
    }
    # Same site with an access log of session reuse, to see whether a client resumes.
    log_format reuse '\$ssl_session_reused';
    server {
        listen 127.0.0.1:$probe_port ssl;
        access_log $TMP/nginx/reuse.log reuse;
        location = /healthz { }
    }
}
EOF
    "$@" nginx -p "$TMP/nginx/" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log" \
        -g 'daemon off;' >"$TMP/nginx/stdout.log" 2>&1 &
    NGINX_PID=$!
    NGINX_URL=https://127.0.0.1:$port/healthz
    NGINX_PROBE_URL=https://127.0.0.1:$probe_port/healthz
    wait_ready "$NGINX_URL" "$NGINX_PID" || { cat "$TMP/nginx/error.log" >&2; exit 1; }
}

# ---- one measurement ----

# Sets R_REQ R_RPS R_P99 (ms) R_ERR R_CPU (server us/request) R_NOTE from a client run.
# run_case SERVER CLIENT MODE, with CLIENT_PIN set by the caller.
run_case() {
    local server=$1 client=$2 mode=$3 url out t0 t1
    local -a pids cmd
    if [ "$server" = mdmd ]; then
        url=$MDMD_URL
        pids=("$MDMD_PID")
    elif [ "$server" = mdmd-device ]; then
        url=$MDMD_DEVICE_URL
        pids=("$MDMD_PID")
    else
        url=$NGINX_URL
        read -r -a pids <<<"$(nginx_pids | tr '\n' ' ')"
    fi
    case "$client/$mode" in
        wrk/keep-alive) cmd=(wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "$url") ;;
        wrk/close) cmd=(wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -H 'Connection: close' "$url") ;;
        mdm-bench/keep-alive) cmd=("$BENCH" http --url "$url" --connections "$CONNS" --duration "$DURATION" --json) ;;
        mdm-bench/new-conn) cmd=("$BENCH" http --url "$url" --connections "$CONNS" --duration "$DURATION" --new-conn --json) ;;
        mdm-bench/resume) cmd=("$BENCH" http --url "$url" --connections "$CONNS" --duration "$DURATION" --new-conn --resume --json) ;;
        *) echo "$0: bad case $client/$mode" >&2; exit 1 ;;
    esac
    out=$TMP/out.txt
    t0=$(proc_ticks "${pids[@]}")
    timeout "$CLIENT_TIMEOUT" "${CLIENT_PIN[@]}" "${cmd[@]}" >"$out" 2>&1 || true
    t1=$(proc_ticks "${pids[@]}")
    R_NOTE=""
    if [ "$client" = wrk ]; then
        read -r R_REQ R_RPS R_P99 R_ERR < <(awk '
            function ms(v, n) { n = v + 0
                if (v ~ /us$/) return n / 1000; if (v ~ /ms$/) return n
                if (v ~ /m$/) return n * 60000; if (v ~ /s$/) return n * 1000; return n }
            / 99%/ { p99 = ms($2) }
            /requests in/ { req = $1 }
            /^Requests\/sec:/ { rps = $2 }
            /Socket errors:/ { gsub(",", ""); err += $4 + $6 + $8 + $10 }
            /Non-2xx or 3xx responses:/ { err += $5 }
            END { printf "%d %.1f %.3f %d\n", req, rps, p99, err }' "$out")
    else
        R_REQ=$(grep -o '"requests":[0-9]*' "$out" | head -1 | cut -d: -f2)
        R_RPS=$(grep -o '"rps":[0-9.]*' "$out" | head -1 | cut -d: -f2)
        R_P99=$(grep -o '"latency_us":{[^}]*}' "$out" | grep -o '"p99":[0-9.]*' | cut -d: -f2)
        R_ERR=$(grep -o '"errors":[0-9]*' "$out" | head -1 | cut -d: -f2)
        R_P99=$(awk -v u="${R_P99:-0}" 'BEGIN { printf "%.3f", u / 1000 }')
        local cc hs rs
        cc=$(grep -o '"client_cpu_us_per_request":[0-9.]*' "$out" | cut -d: -f2)
        R_NOTE="client CPU $(printf %.0f "${cc:-0}") µs/req"
        if [ "$mode" = resume ]; then
            hs=$(grep -o '"handshakes":[0-9]*' "$out" | cut -d: -f2)
            rs=$(grep -o '"resumed":[0-9]*' "$out" | cut -d: -f2)
            R_NOTE="$R_NOTE, resumed ${rs:-0}/${hs:-0}"
        fi
    fi
    R_REQ=${R_REQ:-0}
    R_RPS=${R_RPS:-0}
    R_ERR=${R_ERR:-0}
    R_CPU=$(awk -v d=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v n="$R_REQ" \
        'BEGIN { printf "%.1f", (n > 0 ? d * 1e6 / hz / n : 0) }')
    if [ "$R_REQ" = 0 ]; then
        log "  $server: no requests completed; client output:"
        sed 's/^/    /' "$out" >&2
    fi
    log "  $server $client $mode: $R_REQ requests, $R_RPS req/s, p99 $R_P99 ms, server CPU $R_CPU us/req, $R_ERR errors ${R_NOTE}"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "n/a" }'; }

ROWS=()
declare -A NGINX_RESULT # "client/mode" -> "rps p99 cpu err note" of the current set-up

# compare SETUP CLIENT MODE LABEL: both servers, one row.
compare() {
    local setup=$1 client=$2 mode=$3 label=$4
    local m_rps m_p99 m_cpu m_err m_note n_rps n_p99 n_cpu n_err n_note note
    run_case mdmd "$client" "$mode"
    m_rps=$R_RPS m_p99=$R_P99 m_cpu=$R_CPU m_err=$R_ERR m_note=$R_NOTE
    run_case nginx "$client" "$mode"
    n_rps=$R_RPS n_p99=$R_P99 n_cpu=$R_CPU n_err=$R_ERR n_note=$R_NOTE
    NGINX_RESULT[$client/$mode]="$n_rps $n_p99 $n_cpu $n_err $n_note"
    note=""
    [ -n "$m_note" ] && note="mdmd: $m_note; nginx: $n_note"
    ROWS+=("| $setup | $client | $label | $(printf %.0f "$m_rps") | $(printf %.0f "$n_rps") | $(ratio "$m_rps" "$n_rps") | $m_p99 | $n_p99 | $m_cpu | $n_cpu | $(ratio "$m_cpu" "$n_cpu") | $m_err / $n_err | $note |")
}

# compare_device SETUP CLIENT MODE LABEL: mdmd's device listener against the nginx figures of
# the same set-up (measured by compare just before).
compare_device() {
    local setup=$1 client=$2 mode=$3 label=$4 n_rps n_p99 n_cpu n_err n_note note
    run_case mdmd-device "$client" "$mode"
    read -r n_rps n_p99 n_cpu n_err n_note <<<"${NGINX_RESULT[$client/$mode]}"
    note="mdmd device listener (client certificate optional)"
    [ -n "$R_NOTE" ] && note="$note; mdmd: $R_NOTE; nginx: $n_note"
    ROWS+=("| $setup | $client | $label | $(printf %.0f "$R_RPS") | $(printf %.0f "$n_rps") | $(ratio "$R_RPS" "$n_rps") | $R_P99 | $n_p99 | $R_CPU | $n_cpu | $(ratio "$R_CPU" "$n_cpu") | $R_ERR / $n_err | $note |")
}

run_setup() {
    local setup=$1
    log "set-up $setup"
    compare "$setup" wrk keep-alive "keep-alive"
    compare "$setup" wrk close "new TLS conn per request (Connection: close)"
    compare "$setup" mdm-bench keep-alive "keep-alive"
    compare "$setup" mdm-bench new-conn "new TLS conn per request, full handshake"
    compare "$setup" mdm-bench resume "new TLS conn per request, resumed session"
}

# Does wrk resume TLS sessions when it reconnects? Count $ssl_session_reused on nginx.
probe_wrk_resumption() {
    : >"$TMP/nginx/reuse.log"
    timeout 20 wrk -t1 -c4 -d1s -H 'Connection: close' "$NGINX_PROBE_URL" >/dev/null 2>&1 || true
    sleep 0.5 # the log is written per request; let the last lines land
    local total reused
    total=$(wc -l <"$TMP/nginx/reuse.log")
    reused=$(grep -c '^r$' "$TMP/nginx/reuse.log" || true)
    WRK_RESUME="wrk with Connection: close resumed $reused of $total TLS sessions (nginx \$ssl_session_reused)"
    log "$WRK_RESUME"
}

# shared: 2 shards / 2 workers, nothing pinned.
CLIENT_PIN=()
start_mdmd 2
start_nginx 2
probe_wrk_resumption
run_setup "shared (2 shards / 2 workers, unpinned)"
stop_servers

# pinned: server alone on core 1, client alone on core 0.
CLIENT_PIN=(taskset -c 0)
start_mdmd 1 taskset -c 1
start_nginx 1 taskset -c 1
SETUP="pinned (1 shard / 1 worker on core 1, client on core 0)"
run_setup "$SETUP"
compare_device "$SETUP" wrk close "new TLS conn per request (Connection: close)"
compare_device "$SETUP" mdm-bench new-conn "new TLS conn per request, full handshake"
compare_device "$SETUP" mdm-bench resume "new TLS conn per request, resumed session"
stop_servers

# ---- report ----

report() {
    echo "### healthz: mdmd vs nginx ($(date -u +%Y-%m-%d))"
    echo
    echo "Machine: $(nproc) vCPU ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), Linux $(uname -r);" \
        "$(nginx -v 2>&1 | sed 's/.*: //'), $(wrk -v 2>&1 | head -1 | awk '{print "wrk " $2}')."
    echo "Each cell: one ${DURATION}s run, $CONNS connections, one client thread; TLS 1.3, TLS_AES_128_GCM_SHA256," \
        "X25519, ECDSA P-256 certificate (the mdmd instance's, for both servers)."
    echo "mdmd answers GET /healthz (28-byte JSON) on its admin listener unless the notes say device listener;" \
        "nginx serves a 2-byte static file (open_file_cache on, reuseport, access_log off)."
    echo "Server CPU = utime+stime of the server processes (all threads, nginx master + workers) over requests."
    echo "$WRK_RESUME."
    echo
    echo "| set-up | client | mode | mdmd req/s | nginx req/s | req/s mdmd/nginx | mdmd p99 ms | nginx p99 ms | mdmd server CPU µs/req | nginx server CPU µs/req | CPU mdmd/nginx | errors mdmd / nginx | notes |"
    echo "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    printf '%s\n' "${ROWS[@]}"
    echo
    echo "Clients: \`wrk -t1 -c$CONNS -d${DURATION}s --latency [-H 'Connection: close'] URL\`;" \
        "\`mdm-bench http --url URL --connections $CONNS --duration $DURATION [--new-conn [--resume]] --json\`;" \
        "pinned set-up: clients under \`taskset -c 0\`, servers under \`taskset -c 1\`."
}

if [ -n "$OUT" ]; then
    report >"$OUT"
    log "report written to $OUT"
    cat "$OUT"
else
    report
fi
