#!/usr/bin/env bash
# End-to-end roaming: node a changes its underlay address in the middle of a 20-second TCP
# transfer to b over the overlay (the old address is removed, as when a laptop changes
# networks). The data must arrive intact (sha256), the transfer may carry nothing for at most
# one second, and afterwards b must reach a directly at its new address. The longest gap is
# printed (it goes into docs/benchmarks.md).
#
# Needs root. Env: VEIL_BIN (default target/release/veil).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source-path=SCRIPTDIR/../..
# shellcheck source=scripts/lib/netns.sh
source "$ROOT/scripts/lib/netns.sh"
PACED="$ROOT/tests/e2e/lib/paced_tcp.py"
TEST=roaming
SECONDS_TOTAL=20
RATE=2000000 # bytes per second
MAX_GAP=1.0

step() { printf '\n==> %s\n' "$*"; }
ok() { printf '    ok: %s\n' "$*"; }
[ -x "$VEIL_BIN" ] || { echo "FAIL: $VEIL_BIN not found" >&2; exit 1; }

netns_init
SD=$NETNS_DIR/state

step "topology: relay, a, b on ${NETNS_SUBNET}.0/24"
veil_network a b
OLD=${NETNS_IP[a]}
NEW="$NETNS_SUBNET.250"
veil_node a
veil_node b
B4=$(veil_ipv4 b)
netns_wait_for "ping a -> b" 20 netns_exec a ping -c 1 -W 1 "$B4" || netns_fail "no ping a -> b"
path_of() { netns_exec "$1" "$VEIL_BIN" peers --json --state-dir "$SD/$1" | jq -r '.[0].path + " " + (.[0].endpoint // "-")'; }
netns_wait_for "direct path" 10 bash -c "[ \"\$(ip netns exec $(netns_name b) $VEIL_BIN peers --json --state-dir $SD/b | jq -r '.[0].path')\" = direct ]" \
  || netns_fail "no direct path before the move: $(path_of b)"
ok "b reaches a: $(path_of b)"

step "a ${SECONDS_TOTAL}-second paced TCP transfer a -> b; a moves from $OLD to $NEW after 10 s"
REPORT=$NETNS_DIR/report.json
netns_spawn b recv python3 "$PACED" recv "$B4" 5001 "$REPORT"
netns_wait_tcp_listen b 5001 10 || netns_fail "receiver did not listen"
netns_spawn a send python3 "$PACED" send "$B4" 5001 "$SECONDS_TOTAL" "$RATE"
sleep 10
# Keep the new address when the old (primary) one goes.
netns_exec a sysctl -qw net.ipv4.conf.eth0.promote_secondaries=1
netns_exec a ip addr add "$NEW/24" dev eth0
netns_exec a ip addr del "$OLD/24" dev eth0
ok "a now has $(netns_exec a ip -4 -o addr show dev eth0 | awk '{print $4}')"
netns_wait_exit send $((SECONDS_TOTAL + 30)) node-a node-b relay || netns_fail "the sender failed"
netns_wait_exit recv 30 || netns_fail "the receiver failed"
SENT_SHA=$(tail -n 1 "${NETNS_LOG[send]}")
GOT_SHA=$(jq -r .sha256 "$REPORT")
GAP=$(jq -r .longest_gap_s "$REPORT")
echo "    report: $(cat "$REPORT")"
[ "$SENT_SHA" = "$GOT_SHA" ] || netns_fail "sha256 differs: sent $SENT_SHA, received $GOT_SHA"
awk -v g="$GAP" -v m="$MAX_GAP" 'BEGIN { exit !(g <= m) }' \
  || netns_fail "the transfer carried nothing for ${GAP}s when a moved (goal ≤ ${MAX_GAP}s)"
ok "intact; longest gap ${GAP}s"

step "b follows a to its new address"
after=$(path_of b)
case "$after" in
  "direct $NEW:"*) ok "b -> a: $after" ;;
  *) netns_fail "b's path to a after the move is '$after', expected direct to $NEW" ;;
esac

printf '\n%s: PASS (longest gap %ss)\n' "$TEST" "$GAP"
