#!/usr/bin/env bash
# Runs every test of the project: setup, release build of the CLI, `cargo test --workspace`
# (unit, property, simulation and CLI tests), the phones' checks of veil-ffi (Android cross
# check, iOS static library and Swift names, Kotlin bindings on the JVM), the Windows build of
# veil.exe (scripts/build-windows.sh), the desktop app's build and unit tests (desktop/, its own
# workspace), then each namespace end-to-end test in tests/e2e/.
#
#   scripts/test.sh          the default run (well under 45 minutes on 2 cores)
#   scripts/test.sh --full   also the long variants (FULL=1 for the e2e scripts)
#
# Every stage runs even if an earlier one failed (except that the e2e tests need the build).
# The last line is "N passed, M failed", counting stages; the exit status is non-zero if any
# stage failed. Logs of each stage go to target/test-logs/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

FULL=0
for arg in "$@"; do
  case "$arg" in
    --full) FULL=1 ;;
    -h | --help)
      sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "unknown argument: $arg (try --help)" >&2
      exit 2
      ;;
  esac
done

if ! command -v cargo >/dev/null 2>&1 && [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]; then
  export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi

LOGDIR=$ROOT/target/test-logs
mkdir -p "$LOGDIR"
E2E_TIMEOUT=$((FULL == 1 ? 2400 : 900))

RESULTS=()
PASSED=0
FAILED=0

STAGE_PID=
TAIL_PID=
on_signal() {
  echo "test.sh: interrupted; stopping the running stage" >&2
  if [ -n "$STAGE_PID" ]; then
    # timeout passes the TERM on to its child's whole process group; e2e scripts then clean up.
    kill -TERM "$STAGE_PID" 2>/dev/null || true
    wait "$STAGE_PID" 2>/dev/null || true
  fi
  [ -z "$TAIL_PID" ] || wait "$TAIL_PID" 2>/dev/null || true
  exit 130
}
trap on_signal INT TERM

# stage NAME TIMEOUT_S CMD...: run CMD with its output shown and logged, record pass or fail.
stage() {
  local name=$1 secs=$2 log rc start dur
  shift 2
  log="$LOGDIR/$(printf '%s' "$name" | tr -c 'A-Za-z0-9._-' '_').log"
  printf '\n========== %s ==========\n' "$name"
  start=$SECONDS
  : >"$log"
  # Run in the background and `wait`, so that Ctrl-C or a TERM reaches on_signal at once.
  timeout --kill-after=60 "$secs" "$@" </dev/null >"$log" 2>&1 &
  STAGE_PID=$!
  tail -n +1 -f --pid="$STAGE_PID" "$log" &
  TAIL_PID=$!
  rc=0
  wait "$STAGE_PID" || rc=$?
  wait "$TAIL_PID" || true
  STAGE_PID=
  TAIL_PID=
  dur=$((SECONDS - start))
  if [ "$rc" -eq 0 ]; then
    PASSED=$((PASSED + 1))
    RESULTS+=("PASS  $name (${dur}s)")
  else
    FAILED=$((FAILED + 1))
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
      RESULTS+=("FAIL  $name (timed out after ${secs}s; log: $log)")
    else
      RESULTS+=("FAIL  $name (exit $rc after ${dur}s; log: $log)")
    fi
  fi
}

skip_as_failed() {
  FAILED=$((FAILED + 1))
  RESULTS+=("FAIL  $1 (not run: $2)")
  printf '\n========== %s ==========\nnot run: %s\n' "$1" "$2"
}

stage "setup" 1200 bash scripts/setup.sh
stage "build (cargo build --release -p veil-cli -p veil-capture)" 2400 cargo build --release -p veil-cli -p veil-capture
build_ok=0
[ -x target/release/veil ] && [ -x target/release/veil-capture ] && [ "${RESULTS[-1]:0:4}" = PASS ] && build_ok=1
stage "cargo test --workspace" 2400 cargo test --workspace --no-fail-fast
# The phones' builds of veil-ffi: pure Rust (no ring, no tun-rs), checked for Android (no NDK
# here to link) and built as the iOS static library with the Swift names checked.
stage "ffi: Android cross check (cargo check --target aarch64-linux-android)" 1200 \
  bash -c 'cargo check --quiet -p veil-ffi --target aarch64-linux-android &&
    ! cargo tree -p veil-ffi --target aarch64-linux-android -e normal --prefix none | grep -E "^(ring|tun-rs) v"'
stage "ffi: iOS static library and Swift names (scripts/check-swift.sh)" 1800 bash scripts/check-swift.sh
stage "ffi: Kotlin bindings on the JVM, Android service against stubs (scripts/test-kotlin.sh)" 1800 \
  bash scripts/test-kotlin.sh
# The node for Windows: veil.exe cross-linked with MinGW-w64, wintun.dll next to it, both checked.
stage "windows: veil.exe with wintun (scripts/build-windows.sh)" 1800 bash scripts/build-windows.sh
# The desktop app is its own workspace (WebKit stays out of the main one): build, then its
# tauri::test unit tests on the mock runtime; its window is tested by tests/e2e/desktop.sh.
stage "desktop: build and unit tests (cargo build, cargo test in desktop/)" 3000 \
  bash -c 'cd desktop && cargo build --quiet && cargo test --quiet'
stage "deploy: manifests and Dockerfile (scripts/deploy/check.sh)" 600 bash scripts/deploy/check.sh

shopt -s nullglob
e2e=(tests/e2e/*.sh)
shopt -u nullglob
for t in "${e2e[@]}"; do
  name="e2e $(basename "$t" .sh)"
  if [ "$build_ok" != 1 ]; then
    skip_as_failed "$name" "the release build failed"
  elif [ "$(id -u)" -ne 0 ]; then
    skip_as_failed "$name" "needs root for network namespaces"
  else
    stage "$name" "$E2E_TIMEOUT" env FULL="$FULL" VEIL_BIN="$ROOT/target/release/veil" bash "$t"
  fi
done

printf '\n========== summary ==========\n'
for r in "${RESULTS[@]}"; do
  printf '%s\n' "$r"
done
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
