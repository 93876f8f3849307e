#!/usr/bin/env bash
# policy-bench.sh [N]: one policy delivered to a whole fleet.
#
# Creates a throw-away instance, starts mdmd (2 shards, durability fsync, no APNs: the Macs
# poll), enrolls N Macs with mdm-bench, then creates a Firewall policy and a delivery group
# for all devices, and measures:
#   1. fan-out: from the group's creation until every Mac has a deployment with its
#      InstallProfile queued (the engine reconciles 64 Macs per storage job, signs the profile
#      once per job and stores one command record per job); mdmd's CPU time per Mac;
#   2. delivery: mdm-bench's Macs poll and acknowledge (--mode answer, which also queues one
#      command of its own per Mac) until every deployment reads "installed".
# Counts come from GET /api/v1/policies/{id}/deployments (paged, 1,000 a page).
#
# Needs build/ (ninja -C build). Only talks to 127.0.0.1; removes its temporary directory on
# exit (POLICY_BENCH_KEEP=1 keeps it). N defaults to 10000.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}
[[ "$N" =~ ^[0-9]+$ ]] || { echo "usage: $0 [N]" >&2; exit 2; }
MDMD=$PWD/build/actors/mdmd
BENCH=$PWD/build/bench/mdm-bench
for bin in "$MDMD" "$BENCH"; do
    [ -x "$bin" ] || { echo "$0: $bin is missing: build first (ninja -C build)" >&2; exit 1; }
done
TMP=$(mktemp -d "${TMPDIR:-/tmp}/mdmd-policy.XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT
[ -n "${POLICY_BENCH_KEEP:-}" ] && trap - EXIT
log() { echo "[policy-bench] $*" >&2; }
ms() { date +%s%3N; }
cpu_ms() { # utime + stime of a process, in ms
    awk -v hz="$(getconf CLK_TCK)" '{ printf "%d", ($14 + $15) * 1000 / hz }' "/proc/$1/stat"
}

cd "$TMP"
"$MDMD" init inst --hostnames localhost,127.0.0.1 >init.log 2>&1
API_KEY=$(sed -n 's/^Admin API key: //p' init.log)
"$MDMD" serve inst --shards 2 --device-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
    --set log.level=warn --set apns.url= >mdmd.log 2>&1 &
MDMD_PID=$!
PIDS+=("$MDMD_PID")
for _ in $(seq 150); do grep -q '^listening device=' mdmd.log && break; sleep 0.1; done
DEVICE_PORT=$(sed -n 's/^listening device=\([0-9]*\).*/\1/p' mdmd.log)
ADMIN_PORT=$(sed -n 's/^listening device=[0-9]* admin=\([0-9]*\).*/\1/p' mdmd.log)
[ -n "$DEVICE_PORT" ] || { cat mdmd.log >&2; exit 1; }
ADMIN=https://127.0.0.1:$ADMIN_PORT
api() { # api METHOD PATH [BODY]
    curl -sS --cacert inst/ca/ca.crt -H "Authorization: Bearer $API_KEY" \
        -H 'Content-Type: application/json' -X "$1" "$ADMIN$2" ${3:+--data "$3"}
}
# count_status PID STATUS: deployments of the policy with that status ("" = any)
count_status() {
    local after="" total=0 page
    while :; do
        page=$(api GET "/api/v1/policies/$1/deployments?limit=1000${after:+&after=$after}")
        total=$(( total + $(echo "$page" | grep -o '"status":"'"${2:-[a-z]*}"'"' | wc -l) ))
        after=$(echo "$page" | sed -n 's/.*"next_after":"\([^"]*\)".*/\1/p')
        [ -n "$after" ] || break
    done
    echo "$total"
}

log "enrolling $N Macs"
t0=$(ms)
URL="https://127.0.0.1:$DEVICE_PORT/zdm"
"$BENCH" checkin --url "$URL" --instance inst --macs "$N" --connections 200 --duration 1 \
    --mode idle --json >enroll.json 2>enroll.err || { tail enroll.err >&2; exit 1; }
log "enrolled in $(( ($(ms) - t0) / 1000 )) s"
sleep 3 # the enrollments' reconciles (nothing to deliver yet) settle

PID_JSON=$(api POST /api/v1/policies \
    '{"type":"firewall","name":"Firewall on","settings":{"EnableFirewall":true,"EnableStealthMode":true}}')
POLICY=$(echo "$PID_JSON" | sed -n 's/.*"id":"\([0-9a-f]*\)".*/\1/p')
[ -n "$POLICY" ] || { echo "$PID_JSON" >&2; exit 1; }
cpu0=$(cpu_ms "$MDMD_PID")
t0=$(ms)
api POST /api/v1/groups "{\"name\":\"All Macs\",\"all_devices\":true,\"policies\":[\"$POLICY\"]}" >/dev/null
queued=0
for _ in $(seq 1200); do
    queued=$(count_status "$POLICY" "")
    [ "$queued" -ge "$N" ] && break
    sleep 0.25
done
t_fan=$(( $(ms) - t0 ))
cpu_fan=$(( $(cpu_ms "$MDMD_PID") - cpu0 ))
echo "fan-out: $queued of $N Macs with the profile queued in $t_fan ms ($(awk -v n="$queued" -v t="$t_fan" 'BEGIN { printf "%.0f", n * 1000 / t }') Macs/s); mdmd CPU $cpu_fan ms ($(awk -v c="$cpu_fan" -v n="$queued" 'BEGIN { printf "%.1f", c * 1000 / n }') us per Mac, counting the status polls)"

cpu0=$(cpu_ms "$MDMD_PID")
t0=$(ms)
# answer mode also queues one command of its own per Mac (its minimum): the Macs answer both
"$BENCH" checkin --url "$URL" --instance inst --macs "$N" --connections 200 --duration 60 \
    --mode answer --visit 4 --no-enroll --api-url "$ADMIN" --api-key "$API_KEY" --commands 1 \
    --json >answer.json 2>answer.err &
BPID=$!
installed=0
for _ in $(seq 120); do
    kill -0 "$BPID" 2>/dev/null || { tail -3 answer.err >&2; break; }
    installed=$(count_status "$POLICY" installed)
    [ "$installed" -ge "$N" ] && break
    sleep 0.5
done
t_inst=$(( $(ms) - t0 ))
cpu_inst=$(( $(cpu_ms "$MDMD_PID") - cpu0 ))
kill "$BPID" 2>/dev/null || true
wait "$BPID" 2>/dev/null || true
echo "delivery: $installed of $N deployments installed in $t_inst ms ($(awk -v n="$installed" -v t="$t_inst" 'BEGIN { printf "%.0f", n * 1000 / t }') Macs/s, the Macs polling with 200 connections)"
echo "mdmd RSS $(( $(awk '/VmRSS/ {print $2}' /proc/$MDMD_PID/status) / 1024 )) MiB, peak $(( $(awk '/VmHWM/ {print $2}' /proc/$MDMD_PID/status) / 1024 )) MiB"
