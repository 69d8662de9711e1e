#!/usr/bin/env bash
# End-to-end rotation of the network secret. Three nodes join with the first token; while a
# pings b and c every 100 ms, the operator runs `veil network rotate`, hands the relay its
# new token (`veil relay adopt`) and a and b theirs (`veil network adopt`); c is left on the
# old token. Not one ping may be lost. A node d that joins with the new token reaches both
# an adopted node and the stale one (the old secret works during the overlap), with the same
# overlay prefix. b restarted with its old token file and the relay restarted with its old
# token file come back with the adopted tokens kept in their state directories (nodes notice
# the restarted relay within a keepalive interval and the probe timeout, 30 s). (That the
# old secret stops working after the overlap is tested with a fake clock in
# tests/sim/tests/rotation.rs.)
#
# Needs root. Env: VEIL_BIN (default target/release/veil).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source-path=SCRIPTDIR/../..
# shellcheck source=scripts/lib/netns.sh
source "$ROOT/scripts/lib/netns.sh"
TEST=rotate
ok() { printf '    ok: %s\n' "$*"; }
[ -x "$VEIL_BIN" ] || { echo "FAIL: $VEIL_BIN not found" >&2; exit 1; }

netns_init
SD=$NETNS_DIR/state
NET=$NETNS_DIR/net
NEW=$NETNS_DIR/net2
veil_network a b c d
veil_node a
veil_node b
veil_node c
A4=$(veil_ipv4 a)
B4=$(veil_ipv4 b)
C4=$(veil_ipv4 c)
for t in "$B4" "$C4"; do
  netns_wait_for "ping a -> $t" 20 netns_exec a ping -c 1 -W 1 "$t" || netns_fail "no ping a -> $t"
done
ok "a, b, c joined with the first token; a reaches b and c"

# 25 s of pings at 10/s to b (will adopt) and c (will not), across the rotation.
PINGS=250
netns_exec a ping -c "$PINGS" -i 0.1 -W 2 "$B4" >"$NETNS_DIR/ping-b.out" 2>&1 &
PB=$!
netns_exec a ping -c "$PINGS" -i 0.1 -W 2 "$C4" >"$NETNS_DIR/ping-c.out" 2>&1 &
PC=$!
sleep 2

"$VEIL_BIN" network rotate --from "$NET" --out "$NEW" --overlap-secs 600 >"$NETNS_DIR/rotate.out" 2>"$NETNS_DIR/rotate.err" \
  || netns_fail "network rotate failed: $(cat "$NETNS_DIR/rotate.err")"
[ "$(stat -c %a "$NEW/join.token")" = 600 ] || netns_fail "the new join token is not mode 0600"
cmp -s "$NEW/join.token" "$NET/join.token" && netns_fail "the rotated join token is the old one"
ok "veil network rotate: $(head -n 1 "$NETNS_DIR/rotate.err")"
out=$(netns_exec relay "$VEIL_BIN" relay adopt --token-file "$NEW/relay-1.token" --state-dir "$SD/relay" 2>&1) \
  || netns_fail "relay adopt failed: $out"
ok "relay: $out"
sleep 1
for n in a b; do
  out=$(netns_exec "$n" "$VEIL_BIN" network adopt --token-file "$NEW/join.token" --state-dir "$SD/$n" 2>&1) \
    || netns_fail "network adopt on $n failed: $out"
  sleep 1
done
ok "a and b: $out"
# Adopting a join token as a relay token, or another network's token, is refused clearly.
if out=$(netns_exec relay "$VEIL_BIN" relay adopt --token-file "$NEW/join.token" --state-dir "$SD/relay" 2>&1); then
  netns_fail "a relay adopted a join token"
fi
ok "relay refuses a join token: $out"
"$VEIL_BIN" network create --relay "${NETNS_IP[relay]}:7000" --out "$NETNS_DIR/other" >/dev/null 2>&1
if out=$(netns_exec a "$VEIL_BIN" network adopt --token-file "$NETNS_DIR/other/join.token" --state-dir "$SD/a" 2>&1); then
  netns_fail "a node adopted another network's token"
fi
printf '%s' "$out" | grep -q "another network" || netns_fail "unclear error for another network's token: $out"
ok "a refuses another network's token: $out"

UNTIL=$(netns_exec a "$VEIL_BIN" status --json --state-dir "$SD/a" | jq -r .previous_key_until)
[ "$UNTIL" != null ] || netns_fail "a's status shows no rotation"
[ "$(netns_exec c "$VEIL_BIN" status --json --state-dir "$SD/c" | jq -r .previous_key_until)" = null ] \
  || netns_fail "c (not adopted) shows a rotation"

# d joins with the new token during the overlap and reaches a (adopted) and c (stale).
netns_spawn d node-d "$VEIL_BIN" up --token-file "$NEW/join.token" --state-dir "$SD/d"
netns_wait_veil_ready d "$SD/d" node-d 30
for t in "$A4" "$C4"; do
  netns_wait_for "ping d -> $t" 20 netns_exec d ping -c 1 -W 1 "$t" || netns_fail "d (new token) cannot reach $t"
done
V6A=$(netns_exec a "$VEIL_BIN" status --json --state-dir "$SD/a" | jq -r .overlay_ipv6)
V6D=$(netns_exec d "$VEIL_BIN" status --json --state-dir "$SD/d" | jq -r .overlay_ipv6)
[ "$(cut -d: -f1-3 <<<"$V6A")" = "$(cut -d: -f1-3 <<<"$V6D")" ] || netns_fail "d's overlay prefix ($V6D) differs from a's ($V6A)"
netns_exec d ping -c 1 -W 2 "$V6A" >/dev/null || netns_fail "d cannot ping a's overlay IPv6"
ok "d joined with the new token: reaches a and the stale c, same overlay prefix ($(cut -d: -f1-3 <<<"$V6D")::/48)"

wait "$PB" || true
wait "$PC" || true
for f in b c; do
  rcv=$(sed -n 's/.* \([0-9]*\) received.*/\1/p' "$NETNS_DIR/ping-$f.out")
  [ "$rcv" = "$PINGS" ] || netns_fail "a -> $f: $rcv of $PINGS pings came back across the rotation: $(tail -n 2 "$NETNS_DIR/ping-$f.out")"
done
ok "a -> b and a -> c: $PINGS of $PINGS pings each across the rotation"

# b restarts with its old token file: it comes up with the adopted token.
netns_stop node-b 5
netns_spawn b node-b2 "$VEIL_BIN" up --token-file "$NET/join.token" --state-dir "$SD/b"
netns_wait_veil_ready b "$SD/b" node-b2 30
grep -q "using the rotated join token" "${NETNS_LOG[node-b2]}" || netns_fail "b did not say it uses the adopted token"
[ "$(netns_exec b "$VEIL_BIN" status --json --state-dir "$SD/b" | jq -r .previous_key_until)" = "$UNTIL" ] \
  || netns_fail "b restarted without the adopted token"
netns_wait_for "ping a -> b after b's restart" 20 netns_exec a ping -c 1 -W 1 "$B4" || netns_fail "a cannot reach b after its restart"
ok "b restarted with the old token file and runs the adopted token"

# The relay restarts with its old token file: it comes up with the adopted one.
netns_stop relay 5
netns_spawn relay relay2 "$VEIL_BIN" relay --listen "${NETNS_IP[relay]}:7000" \
  --token-file "$NET/relay-1.token" --state-dir "$SD/relay"
netns_wait_relay_ready relay "$SD/relay" relay2 20
grep -q "using the rotated relay token" "${NETNS_LOG[relay2]}" || netns_fail "the relay did not say it uses the adopted token"
clients() { netns_exec relay "$VEIL_BIN" relay status --json --state-dir "$SD/relay" | jq -r .clients; }
netns_wait_for "4 clients back at the relay" 45 bash -c "[ \"\$(ip netns exec $(netns_name relay) $VEIL_BIN relay status --json --state-dir $SD/relay | jq -r .clients)\" = 4 ]" \
  || netns_fail "only $(clients) clients came back to the restarted relay"
ok "relay restarted with the old token file runs the adopted token; all 4 nodes are back"
printf '\n%s: PASS\n' "$TEST"
