#!/usr/bin/env bash
# End-to-end through the FFI: the Python bindings of veil-ffi run a node inside a namespace of
# its own, on a TUN device the test opens and passes as a file descriptor (as Android's
# VpnService does), against a relay and a node started with the `veil` CLI
# (tests/ffi/python: ping, transfers both ways with sha256, events, status/peers, a rebuilt
# interface, errors as exceptions).
#
# Needs root, python3-pytest (scripts/setup.sh). Env: VEIL_BIN (default target/release/veil).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source-path=SCRIPTDIR/../..
# shellcheck source=scripts/lib/netns.sh
source "$ROOT/scripts/lib/netns.sh"

if [ ! -x "$VEIL_BIN" ]; then
  echo "FAIL: $VEIL_BIN not found; build it with: cargo build --release -p veil-cli" >&2
  exit 1
fi
# Debian's python3 with python3-pytest (scripts/setup.sh), whatever python3 comes first on PATH.
PYTHON=${VEIL_PYTHON:-/usr/bin/python3}
"$PYTHON" -c 'import pytest' 2>/dev/null \
  || { echo "FAIL: pytest missing for $PYTHON; run scripts/setup.sh (apt python3-pytest)" >&2; exit 1; }

"$ROOT/scripts/gen-bindings.sh" python

netns_init
netns_hub_create
netns_add_host relay
netns_add_host a
netns_add_host c
mkdir -p "$NETNS_DIR/ffi"

echo "==> pytest in $(netns_name c) (relay $(netns_name relay), node a $(netns_name a))"
netns_exec c env \
  VEIL_BIN="$VEIL_BIN" \
  VEIL_FFI_BINDINGS="$ROOT/bindings/python" \
  VEIL_FFI_SCRATCH="$NETNS_DIR/ffi" \
  VEIL_FFI_NS_RELAY="$(netns_name relay)" \
  VEIL_FFI_NS_A="$(netns_name a)" \
  VEIL_FFI_RELAY_IP="${NETNS_IP[relay]}" \
  PYTHONDONTWRITEBYTECODE=1 \
  "$PYTHON" -m pytest -p no:cacheprovider -v "$ROOT/tests/ffi/python" \
  || {
    for log in "$NETNS_DIR"/ffi/*.log; do
      [ -e "$log" ] || continue
      echo "--- last lines of $log" >&2
      tail -n 30 "$log" >&2
    done
    netns_fail "the FFI tests failed"
  }
echo "PASS: ffi_python"
