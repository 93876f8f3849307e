#!/usr/bin/env bash
# checkin-bench.sh [OUT.md]: check-in throughput of mdmd with N simulated Macs (mdm-bench
# checkin), on 2 shards (server and client unpinned, sharing both cores) and on 1 shard (server
# pinned to core 1, client to core 0). Prints a markdown table, or writes it to OUT.md.
#
# One throw-away instance (durability fsync, the default). mdm-bench issues the Macs'
# identities from its CA (cached in INSTANCE/bench-macs for the run) and enrolls every Mac
# (Authenticate + TokenUpdate) once, on the first server start; later runs reuse the devices.
# Rows per set-up: idle over mTLS with keep-alive visits, idle with a new TLS connection per
# check-in (visit 1), tokenupdate, idle with Mdm-Signature (when the server supports it), and
# answer (commands queued through the admin API bulk endpoint, each acknowledged). Answer runs
# come last on each server start so that no other row meets a leftover queue.
#
# The stable figure is server CPU per request (utime+stime of the mdmd process from
# /proc/PID/stat over the measured phase, as mdm-bench --server-pid reports it).
#
# Needs build/ (ninja -C build) and taskset. Knobs (environment): BENCH_MACS (10000),
# BENCH_CONNECTIONS (200), BENCH_DURATION seconds per run (10), BENCH_VISIT requests per
# keep-alive visit (10), BENCH_COMMANDS per Mac in answer mode (4). Only talks to 127.0.0.1;
# touches nothing outside a temporary directory, which it removes on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${1:-}
MACS=${BENCH_MACS:-10000}
CONNS=${BENCH_CONNECTIONS:-200}
DURATION=${BENCH_DURATION:-10}
VISIT=${BENCH_VISIT:-10}
COMMANDS=${BENCH_COMMANDS:-4}
MDMD=$PWD/build/actors/mdmd
BENCH=$PWD/build/bench/mdm-bench
CLIENT_TIMEOUT=$((DURATION + 900)) # enrollment and queueing included

for v in "$MACS" "$CONNS" "$DURATION" "$VISIT" "$COMMANDS"; do
    [[ "$v" =~ ^[0-9]+$ ]] || { echo "$0: BENCH_* knobs are integers" >&2; exit 2; }
done
for tool in taskset timeout; do
    command -v "$tool" >/dev/null || { echo "$0: $tool is missing" >&2; exit 1; }
done
for bin in "$MDMD" "$BENCH"; do
    [ -x "$bin" ] || { echo "$0: $bin is missing: build first (ninja -C build)" >&2; exit 1; }
done
[ "$(nproc)" -ge 2 ] || { echo "$0: needs at least 2 cores (server and client are pinned apart)" >&2; exit 1; }

SIGNATURE=0
grep -q 'Mdm-Signature' actors/mdm.c && SIGNATURE=1

TMP=$(mktemp -d "${TMPDIR:-/tmp}/mdmd-checkin.XXXXXX")
MDMD_PID=""
log() { echo "[checkin-bench] $*" >&2; }

stop_mdmd() {
    local i
    [ -n "$MDMD_PID" ] || return 0
    kill -TERM "$MDMD_PID" 2>/dev/null || { MDMD_PID=""; return 0; }
    for ((i = 0; i < 100; i++)); do
        kill -0 "$MDMD_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$MDMD_PID" 2>/dev/null || true
    wait "$MDMD_PID" 2>/dev/null || true
    MDMD_PID=""
}
cleanup() {
    stop_mdmd
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

INSTANCE=$TMP/mdmd
log "creating an mdmd instance in $INSTANCE"
"$MDMD" init "$INSTANCE" --hostnames localhost,127.0.0.1 >"$TMP/init.log" 2>&1 ||
    { cat "$TMP/init.log" >&2; exit 1; }
API_KEY=$(sed -n 's/^Admin API key: //p' "$TMP/init.log")
[ -n "$API_KEY" ] || { echo "$0: no admin API key in the output of mdmd init" >&2; exit 1; }

# start_mdmd SHARDS PIN...: sets MDMD_PID, DEVICE_PORT, ADMIN_PORT.
start_mdmd() {
    local shards=$1 i line=""
    shift
    "$@" "$MDMD" serve "$INSTANCE" --shards "$shards" --device-listen 127.0.0.1:0 \
        --admin-listen 127.0.0.1:0 --set log.level=warn >"$TMP/mdmd.log" 2>&1 &
    MDMD_PID=$!
    for ((i = 0; i < 150; i++)); do
        line=$(grep -m1 '^listening device=' "$TMP/mdmd.log" || true)
        [ -n "$line" ] && break
        kill -0 "$MDMD_PID" 2>/dev/null || break
        sleep 0.1
    done
    [ -n "$line" ] || { cat "$TMP/mdmd.log" >&2; echo "$0: mdmd did not start" >&2; exit 1; }
    DEVICE_PORT=$(sed 's/.*device=\([0-9]*\).*/\1/' <<<"$line")
    ADMIN_PORT=$(sed 's/.*admin=\([0-9]*\).*/\1/' <<<"$line")
    log "mdmd --shards $shards ($*): pid $MDMD_PID, device port $DEVICE_PORT"
}

num() { grep -o "\"$1\":[0-9.-]*" "$2" | head -1 | cut -d: -f2; }
lat() { grep -o '"latency_us":{[^}]*}' "$2" | grep -o "\"$1\":[0-9.]*" | cut -d: -f2; }
ms() { awk -v u="${1:-0}" 'BEGIN { printf "%.1f", u / 1000 }'; }

ROWS=()
declare -A CPU RPS

# run SETUP LABEL CLIENT_PIN -- ARGS...: one mdm-bench checkin run, one table row.
run() {
    local setup=$1 label=$2 pin=$3
    shift 4
    local out=$TMP/out.json pinargs=()
    [ "$pin" = - ] || pinargs=(taskset -c "$pin")
    log "$setup / $label"
    if ! timeout "$CLIENT_TIMEOUT" "${pinargs[@]}" "$BENCH" checkin \
        --url "https://127.0.0.1:$DEVICE_PORT/zdm" --instance "$INSTANCE" --macs "$MACS" \
        --connections "$CONNS" --duration "$DURATION" --server-pid "$MDMD_PID" --json \
        "$@" >"$out" 2>"$TMP/err.log"; then
        sed 's/^/    /' "$TMP/err.log" "$out" >&2
    fi
    local req rps p50 p99 p999 err cpu ccpu enroll note=""
    req=$(num requests "$out"); rps=$(num rps "$out"); err=$(num errors "$out")
    p50=$(lat p50 "$out"); p99=$(lat p99 "$out"); p999=$(lat p999 "$out")
    cpu=$(num server_cpu_us_per_request "$out"); ccpu=$(num client_cpu_us_per_request "$out")
    enroll=$(num enroll_s "$out")
    if [ -n "$enroll" ] && [ "$enroll" != 0.000 ]; then
        note="enrolled $(grep -o '"enrolled":[0-9]*' "$out" | head -1 | cut -d: -f2) Macs in ${enroll} s; "
    fi
    local cmds
    cmds=$(grep -o '"sent":{[^}]*}' "$out" | grep -o '"commands":[0-9]*' | cut -d: -f2)
    [ "${cmds:-0}" != 0 ] && note="$note${cmds} commands answered; "
    note="${note}client CPU $(printf %.0f "${ccpu:-0}") µs/req; $(num handshakes "$out") handshakes"
    CPU[$setup/$label]=${cpu:-0}
    RPS[$setup/$label]=${rps:-0}
    log "  $req requests, $rps req/s, p99 $(ms "$p99") ms, server CPU $cpu µs/req, $err errors"
    ROWS+=("| $setup | $label | $(printf %.0f "${rps:-0}") | $(ms "$p50") | $(ms "$p99") | $(ms "$p999") | ${cpu:-?} | ${err:-?} | $note |")
}


rounds() {
    local setup=$1 pin=$2 enroll=$3
    run "$setup" "idle, mTLS, keep-alive (visit $VISIT)" "$pin" -- --mode idle --visit "$VISIT" $enroll
    run "$setup" "idle, mTLS, new connection per check-in" "$pin" -- --mode idle --visit 1 --no-enroll
    run "$setup" "tokenupdate, mTLS (visit $VISIT)" "$pin" -- --mode tokenupdate --visit "$VISIT" --no-enroll
    if [ "$SIGNATURE" = 1 ]; then
        run "$setup" "idle, Mdm-Signature, keep-alive" "$pin" -- --mode idle --visit "$VISIT" --signature --no-enroll
    fi
    run "$setup" "answer, mTLS (visit $VISIT)" "$pin" -- --mode answer --visit "$VISIT" \
        --api-url "https://127.0.0.1:$ADMIN_PORT" --api-key "$API_KEY" --commands "$COMMANDS" --no-enroll
}

start_mdmd 2
rounds "2 shards, unpinned" - ""
stop_mdmd
start_mdmd 1 taskset -c 1
rounds "1 shard, pinned" 0 --no-enroll
stop_mdmd

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "n/a" }'; }
RATIOS=()
for label in "idle, mTLS, keep-alive (visit $VISIT)" "idle, mTLS, new connection per check-in" \
    "tokenupdate, mTLS (visit $VISIT)" "idle, Mdm-Signature, keep-alive" "answer, mTLS (visit $VISIT)"; do
    [ -n "${RPS[2 shards, unpinned/$label]:-}" ] || continue
    RATIOS+=("| $label | $(ratio "${RPS[2 shards, unpinned/$label]}" "${RPS[1 shard, pinned/$label]}") | $(ratio "${CPU[2 shards, unpinned/$label]}" "${CPU[1 shard, pinned/$label]}") |")
done

report() {
    echo "Check-in throughput, $(date -u +%Y-%m-%d), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $MACS Macs, $CONNS connections, ${DURATION} s per run, durability fsync."
    echo
    echo "| set-up | mode | req/s | p50 ms | p99 ms | p99.9 ms | server CPU µs/req | errors | notes |"
    echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    printf '%s\n' "${ROWS[@]}"
    echo
    echo "| mode | req/s 2 shards / 1 shard | server CPU/req 2 shards / 1 shard |"
    echo "| --- | ---: | ---: |"
    printf '%s\n' "${RATIOS[@]}"
}
if [ -n "$OUT" ]; then report >"$OUT"; log "wrote $OUT"; else report; fi
