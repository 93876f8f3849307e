#!/usr/bin/env bash
# mdmd developer entry point; the README's quick start is these two commands:
#   ./scripts/dev.sh run    install what is missing, build, create ./demo if absent, serve
#   ./scripts/dev.sh test   install what is missing, build, run every test (normal + ASan/UBSan)
# Other verbs: deps, build, bench. Only test installs the browser test's chromium, node, npm
# and playwright-core.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian 12 packages the build and the tests need (one list; docs/install.md shows it).
PACKAGES=(gcc pkg-config meson ninja-build openssl
          liburing-dev libwolfssl-dev libplist-dev librocksdb-dev libnghttp2-dev
          libhttp-parser-dev libjansson-dev libinih-dev libargon2-dev
          libldap-dev slapd ldap-utils python3-yaml)

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

deps() {
    local missing=()
    for p in "${PACKAGES[@]}" "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing: ${missing[*]}"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    fi
}

setup() { # setup DIR [meson options...]
    local dir=$1; shift
    if [ ! -f "$dir/build.ninja" ]; then
        meson setup "$dir" "$@" >/dev/null
    fi
}

build() {
    setup build -Dwerror=true
    ninja -C build
}

run() {
    deps
    build
    if [ ! -f demo/mdmd.conf ]; then
        ./build/actors/mdmd init demo
    fi
    exec ./build/actors/mdmd serve demo
}

# Runs one meson test run and adds its counts to the totals.
PASSED=0
FAILED=0
meson_tests() { # meson_tests BUILDDIR
    local dir=$1 log
    log=$(mktemp)
    local rc=0
    meson test -C "$dir" --print-errorlogs --num-processes 2 2>&1 | tee "$log" || rc=$?
    local ok fail timeout
    ok=$(awk '/^Ok:/ {print $2}' "$log" | tail -1)
    fail=$(awk '/^Fail:/ {print $2}' "$log" | tail -1)
    timeout=$(awk '/^Timeout:/ {print $2}' "$log" | tail -1)
    PASSED=$((PASSED + ${ok:-0}))
    FAILED=$((FAILED + ${fail:-0} + ${timeout:-0}))
    if [ "$rc" != 0 ] && [ "${fail:-0}" = 0 ] && [ "${timeout:-0}" = 0 ]; then
        FAILED=$((FAILED + 1))   # meson itself failed
    fi
    rm -f "$log"
}

# The browser test's needs (tests/browser): Debian's chromium, node and npm (Debian's nodejs
# and npm unless a node and npm are there already), and playwright-core from the lock file.
NODE_NEW=0
browser_deps() {
    local extra=(chromium)
    command -v node >/dev/null || { extra+=(nodejs); NODE_NEW=1; }
    command -v npm >/dev/null || extra+=(npm)
    deps "${extra[@]}"
    if [ -f tests/browser/package-lock.json ]; then
        (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    else
        (cd tests/browser && npm install --no-audit --no-fund --loglevel=error >/dev/null)
    fi
}

test_all() {
    deps
    browser_deps
    build
    setup build-asan -Dwerror=true -Db_sanitize=address,undefined -Db_lundef=false \
          -Dbuildtype=debug
    if [ "$NODE_NEW" = 1 ]; then # build dirs made before node was there lack the browser test
        meson setup --reconfigure build >/dev/null
        meson setup --reconfigure build-asan >/dev/null
    fi
    ninja -C build-asan
    meson_tests build
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
        meson_tests build-asan
    echo "tests: $PASSED passed, $FAILED failed"
    [ "$FAILED" = 0 ]
}

bench() {
    deps wrk nginx-light
    build
    exec ./bench/healthz-vs-nginx.sh "$@"
}

case "${1:-}" in
    deps) deps ;;
    build) deps; build ;;
    run) run ;;
    test) test_all ;;
    bench) shift; bench "$@" ;;
    *) echo "usage: $0 run|test|build|deps|bench" >&2; exit 2 ;;
esac
