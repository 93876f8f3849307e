#!/usr/bin/env bash
# push-bench.sh [N]: one bulk push to a whole fleet, mdmd -> fake APNs over loopback.
#
# Creates a throw-away instance, starts tests/fakes/fake-apns and mdmd (2 shards, durability
# fsync, apns.url naming the fake by host name, so the resolver runs too), uploads a push
# certificate made with openssl, enrolls N Macs with mdm-bench (Authenticate + TokenUpdate,
# each Mac with its own push token), then times `mdmd push DIR --all` (POST /api/v1/push {"all": true}) until the fake
# has recorded N pushes. Prints pushes/s, the connections the pushers used, and mdmd's peak
# resident memory before and after the push (VmHWM), which shows whether a push to the
# whole fleet is bounded in memory.
#
# Needs build/ (ninja -C build) and openssl. Only talks to 127.0.0.1; removes its temporary
# directory on exit. N defaults to 100000 (identity issuance and enrollment take minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100000}
[[ "$N" =~ ^[0-9]+$ ]] || { echo "usage: $0 [N]" >&2; exit 2; }
MDMD=$PWD/build/actors/mdmd
BENCH=$PWD/build/bench/mdm-bench
FAKE=$PWD/build/tests/fakes/fake-apns
DATA=$PWD/tests/data
TOPIC=com.apple.mgmt.External.11111111-2222-3333-4444-555555555555
for bin in "$MDMD" "$BENCH" "$FAKE"; do
    [ -x "$bin" ] || { echo "$0: $bin is missing: build first (ninja -C build)" >&2; exit 1; }
done
TMP=$(mktemp -d "${TMPDIR:-/tmp}/mdmd-push.XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT
[ -n "${PUSH_BENCH_KEEP:-}" ] && trap - EXIT
log() { echo "[push-bench] $*" >&2; }
ms() { date +%s%3N; }

cd "$TMP"
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -subj '/CN=Push CA' \
    -days 30 2>/dev/null
openssl req -x509 -CA ca.crt -CAkey ca.key -newkey rsa:2048 -nodes -keyout push.key \
    -out push.crt -subj "/UID=$TOPIC/CN=APSP:bench/C=US" -days 30 2>/dev/null
: >script
echo '* 200' >script
"$FAKE" --cert "$DATA/server.crt" --key "$DATA/server.key" --ca ca.crt --script script \
    --record record.jsonl --port 0 --max-streams 1000 >fake.out 2>fake.err &
PIDS+=($!)
for _ in $(seq 50); do grep -q '^listening' fake.out && break; sleep 0.1; done
APNS_PORT=$(sed -n 's/^listening \([0-9]*\)/\1/p' fake.out)
[ -n "$APNS_PORT" ] || { cat fake.err >&2; exit 1; }

"$MDMD" init inst --hostnames localhost,127.0.0.1 >init.log 2>&1
API_KEY=$(sed -n 's/^Admin API key: //p' init.log)
"$MDMD" serve inst --shards 2 --device-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
    --set log.level=warn --set "apns.url=https://localhost:$APNS_PORT" \
    --set "apns.ca=$DATA/test-ca.crt" >mdmd.log 2>&1 &
MDMD_PID=$!
PIDS+=("$MDMD_PID")
for _ in $(seq 150); do grep -q '^listening device=' mdmd.log && break; sleep 0.1; done
DEVICE_PORT=$(sed -n 's/^listening device=\([0-9]*\).*/\1/p' mdmd.log)
ADMIN_PORT=$(sed -n 's/^listening device=[0-9]* admin=\([0-9]*\).*/\1/p' mdmd.log)
[ -n "$DEVICE_PORT" ] || { cat mdmd.log >&2; exit 1; }
ADMIN=https://127.0.0.1:$ADMIN_PORT
MDMD_API_KEY=$API_KEY "$MDMD" push-cert inst upload --cert push.crt --key push.key \
    --url "$ADMIN" >/dev/null

log "enrolling $N Macs (identities issued first; minutes for 100,000)"
t0=$(ms)
"$BENCH" checkin --url "https://127.0.0.1:$DEVICE_PORT/zdm" --instance inst --macs "$N" \
    --connections 200 --duration 1 --mode idle --json >enroll.json 2>enroll.err ||
    { tail enroll.err >&2; exit 1; }
log "enrolled in $(( ($(ms) - t0) / 1000 )) s: $(grep -o '"enrolled":[0-9]*' enroll.json | head -1)"
sleep 2
HWM_BEFORE=$(awk '/VmHWM/ {print $2}' /proc/$MDMD_PID/status)
RSS_BEFORE=$(awk '/VmRSS/ {print $2}' /proc/$MDMD_PID/status)
: >record.jsonl
t0=$(ms)
MDMD_API_KEY=$API_KEY "$MDMD" push inst --all --url "$ADMIN" --json >push.json
t_answer=$(( $(ms) - t0 ))
for _ in $(seq 6000); do
    [ "$(wc -l <record.jsonl)" -ge "$N" ] && break
    sleep 0.05
done
t_all=$(( $(ms) - t0 ))
GOT=$(wc -l <record.jsonl)
HWM_AFTER=$(awk '/VmHWM/ {print $2}' /proc/$MDMD_PID/status)
CONNS=$(grep -o '"conn":[0-9]*' record.jsonl | sort -u | wc -l)
OK=$(grep -c '"status":200' record.jsonl || true)
echo "bulk push to $N Macs: API answered in $t_answer ms $(cat push.json)"
echo "pushes recorded by the fake: $GOT ($OK with 200) in $t_all ms: $(awk -v n="$GOT" -v t="$t_all" 'BEGIN { printf "%.0f", n * 1000 / t }') pushes/s over $CONNS connections"
echo "mdmd memory: RSS $((RSS_BEFORE / 1024)) MiB before; peak (VmHWM) $((HWM_BEFORE / 1024)) MiB before the push, $((HWM_AFTER / 1024)) MiB after"
