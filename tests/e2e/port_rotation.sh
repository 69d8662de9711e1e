#!/usr/bin/env bash
# End-to-end: with socket rotation forced short (port_rotation_secs = 3), node a moves to a
# fresh ephemeral UDP port again and again while a paced 15-second TCP transfer runs to b over
# the overlay. The port must change at least twice, the data must arrive intact (sha256) and
# the transfer may carry nothing for at most one second. Then a runs with a long rotation
# period but sessions that re-key every 4 s (rekey_after_secs = 4): each re-key moves it to a
# fresh port too (new keys and a new port together), with the same three checks. In both,
# the old socket keeps carrying the direct path until the new port is validated (make
# before break): neither node may send a single data packet through the relay during the
# transfer (their tx_packets_relayed counters stay put), b must end up sending to a's
# current port, and a's stack is never told of a smaller path (no Packet Too Big, no MTU
# in a's route cache).
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
veil_node b
B4=$(veil_ipv4 b)

# transfer PHASE CONFIG: runs node a with CONFIG, a paced TCP transfer a -> b, and checks it.
relayed() { netns_exec "$1" "$VEIL_BIN" status --json --state-dir "$SD/$1" | jq -r .counters.tx_packets_relayed; }
both_direct() {
  netns_exec a ping -c 1 -W 1 "$B4" >/dev/null 2>&1 || return 1
  [ "$(netns_exec a "$VEIL_BIN" peers --json --state-dir "$SD/a" | jq -r '.[0].path')" = direct ] \
    && [ "$(netns_exec b "$VEIL_BIN" peers --json --state-dir "$SD/b" | jq -r '.[0].path')" = direct ]
}

local_port() { netns_exec "$1" "$VEIL_BIN" status --json --state-dir "$SD/$1" | jq -r .local_port; }
endpoint_at_b() { netns_exec b "$VEIL_BIN" peers --json --state-dir "$SD/b" | jq -r '.[0].endpoint'; }
b_follows_a() {
  netns_exec a ping -c 1 -W 1 "$B4" >/dev/null 2>&1 || return 1
  local seen
  seen=$(endpoint_at_b)
  [ "${seen##*:}" = "$(local_port a)" ]
}

transfer() {
  local phase=$1 config=$2 report ports p sent_sha gap relayed_a relayed_b
  veil_node a --config "$config"
  netns_wait_for "ping a -> b" 20 netns_exec a ping -c 1 -W 1 "$B4" || netns_fail "no ping a -> b"
  netns_wait_for "a and b direct" 20 both_direct || netns_fail "a and b not direct to each other"
  relayed_a=$(relayed a)
  relayed_b=$(relayed b)
  report=$NETNS_DIR/report-$phase.json
  netns_spawn b "recv-$phase" python3 "$PACED" recv "$B4" 5001 "$report"
  netns_wait_tcp_listen b 5001 10 || netns_fail "receiver did not listen"
  netns_spawn a "send-$phase" python3 "$PACED" send "$B4" 5001 "$SECS" 2000000
  ports=()
  while netns_alive "send-$phase"; do
    p=$(local_port a)
    [ "${#ports[@]}" -gt 0 ] && [ "${ports[-1]}" = "$p" ] || ports+=("$p")
    sleep 0.5
  done
  netns_wait_exit "send-$phase" 5 || netns_fail "the sender failed"
  netns_wait_exit "recv-$phase" 30 || netns_fail "the receiver failed"
  echo "    ports of a over the transfer ($phase): ${ports[*]}"
  [ "${#ports[@]}" -ge 3 ] || netns_fail "$phase: the port changed $((${#ports[@]} - 1)) times, expected at least 2"
  sent_sha=$(tail -n 1 "${NETNS_LOG[send-$phase]}")
  gap=$(jq -r .longest_gap_s "$report")
  echo "    report: $(cat "$report")"
  [ "$sent_sha" = "$(jq -r .sha256 "$report")" ] || netns_fail "$phase: sha256 differs"
  awk -v g="$gap" -v m="$MAX_GAP" 'BEGIN { exit !(g <= m) }' \
    || netns_fail "$phase: the transfer carried nothing for ${gap}s across a rotation (goal ≤ ${MAX_GAP}s)"
  ok "$phase: port changed $((${#ports[@]} - 1)) times; intact; longest gap ${gap}s"
  [ "$(relayed a)" = "$relayed_a" ] && [ "$(relayed b)" = "$relayed_b" ] \
    || netns_fail "$phase: data went through the relay across a rotation (a: $relayed_a -> $(relayed a), b: $relayed_b -> $(relayed b) packets)"
  # (a keeps rotating: compare with its port of the moment, and give b a ping to follow it.)
  netns_wait_for "b to send to a's current port" 5 b_follows_a \
    || netns_fail "$phase: b sends to $(endpoint_at_b), a is on port $(local_port a)"
  ok "$phase: no data packet through the relay; b follows a to its current port"
  # While a direct path is validated again after a rotation, a's data goes through the
  # relay, whose path is smaller (1394-byte inner MTU). That passing path must not be told to
  # a's TCP as a Packet Too Big: the kernel would keep the smaller MTU for 10 minutes.
  local ptb cache
  ptb=$(netns_exec a "$VEIL_BIN" status --json --state-dir "$SD/a" | jq -r .counters.too_big_sent)
  cache=$(netns_exec a ip route show cache "$B4" | grep -o 'mtu [0-9]*' || true)
  [ "$ptb" = 0 ] && [ -z "$cache" ] \
    || netns_fail "$phase: a Packet Too Big for a path in passing (too_big_sent $ptb, route cache '${cache}')"
  ok "$phase: no Packet Too Big, no MTU in a's route cache"
  GAPS+=("$phase ${gap}s")
  netns_exec a "$VEIL_BIN" down --state-dir "$SD/a" >/dev/null 2>&1 || netns_fail "veil down failed"
  netns_wait_exit node-a 10 || netns_fail "node a did not stop"
}

GAPS=()
printf 'port_rotation_secs = 3\n' >"$NETNS_DIR/periodic.toml"
transfer periodic "$NETNS_DIR/periodic.toml"
printf 'port_rotation_secs = 86400\nrekey_after_secs = 4\n' >"$NETNS_DIR/rekey.toml"
transfer rekey "$NETNS_DIR/rekey.toml"
printf '\n%s: PASS (longest gap %s)\n' "$TEST" "${GAPS[*]}"
