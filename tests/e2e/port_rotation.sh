#!/usr/bin/env bash
# End-to-end: with socket rotation forced short (port_rotation_secs = 3), node a moves to a
# fresh ephemeral UDP port again and again while a paced 15-second TCP transfer runs to b over
# the overlay. The port must change at least twice, the data must arrive intact (sha256) and
# the transfer may carry nothing for at most one second.
#
# Needs root. Env: VEIL_BIN (default target/release/veil).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source-path=SCRIPTDIR/../..
# shellcheck source=scripts/lib/netns.sh
source "$ROOT/scripts/lib/netns.sh"
PACED="$ROOT/tests/e2e/lib/paced_tcp.py"
TEST=port_rotation
SECS=15
MAX_GAP=1.0

ok() { printf '    ok: %s\n' "$*"; }
[ -x "$VEIL_BIN" ] || { echo "FAIL: $VEIL_BIN not found" >&2; exit 1; }

netns_init
SD=$NETNS_DIR/state
veil_network a b
printf 'port_rotation_secs = 3\n' >"$NETNS_DIR/rotate.toml"
veil_node a --config "$NETNS_DIR/rotate.toml"
veil_node b
B4=$(veil_ipv4 b)
netns_wait_for "ping a -> b" 20 netns_exec a ping -c 1 -W 1 "$B4" || netns_fail "no ping a -> b"

REPORT=$NETNS_DIR/report.json
netns_spawn b recv python3 "$PACED" recv "$B4" 5001 "$REPORT"
netns_wait_tcp_listen b 5001 10 || netns_fail "receiver did not listen"
netns_spawn a send python3 "$PACED" send "$B4" 5001 "$SECS" 2000000
ports=()
while netns_alive send; do
  p=$(netns_exec a "$VEIL_BIN" status --json --state-dir "$SD/a" | jq -r .local_port)
  [ "${#ports[@]}" -gt 0 ] && [ "${ports[-1]}" = "$p" ] || ports+=("$p")
  sleep 0.5
done
netns_wait_exit send 5 || netns_fail "the sender failed"
netns_wait_exit recv 30 || netns_fail "the receiver failed"
echo "    ports of a over the transfer: ${ports[*]}"
[ "${#ports[@]}" -ge 3 ] || netns_fail "the port changed $((${#ports[@]} - 1)) times, expected at least 2"
SENT_SHA=$(tail -n 1 "${NETNS_LOG[send]}")
GAP=$(jq -r .longest_gap_s "$REPORT")
echo "    report: $(cat "$REPORT")"
[ "$SENT_SHA" = "$(jq -r .sha256 "$REPORT")" ] || netns_fail "sha256 differs"
awk -v g="$GAP" -v m="$MAX_GAP" 'BEGIN { exit !(g <= m) }' \
  || netns_fail "the transfer carried nothing for ${GAP}s across a rotation (goal ≤ ${MAX_GAP}s)"
ok "port changed $((${#ports[@]} - 1)) times; intact; longest gap ${GAP}s"
printf '\n%s: PASS (longest gap %ss)\n' "$TEST" "$GAP"
