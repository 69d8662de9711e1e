#!/usr/bin/env bash
# End-to-end access control: a network created with --with-ca. Nodes print their key with
# `veil key`, the operator signs certificates with `veil cert sign` (one with a fixed overlay
# IPv4), and certified nodes join and ping each other. A node without a certificate, or with
# a certificate made for another node's key, is refused with a clear error before it starts.
# Then a policy signed with `veil policy sign` and pushed to one node (`veil policy push`)
# reaches every node: web may talk to db, so a (web) still reaches b (db) but no longer d
# (other); `veil cert revoke` adds b's key to that policy, and within seconds a cannot
# reach b and the relay has dropped it. (That the relay refuses uncertified handshakes is tested in the simulator,
# tests/sim/tests/access.rs.)
#
# Needs root. Env: VEIL_BIN (default target/release/veil).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source-path=SCRIPTDIR/../..
# shellcheck source=scripts/lib/netns.sh
source "$ROOT/scripts/lib/netns.sh"
TEST=access
ok() { printf '    ok: %s\n' "$*"; }
[ -x "$VEIL_BIN" ] || { echo "FAIL: $VEIL_BIN not found" >&2; exit 1; }

netns_init
NET=$NETNS_DIR/net
SD=$NETNS_DIR/state
mkdir -p "$SD"
netns_hub_create
netns_add_host relay
netns_add_host a
netns_add_host b
netns_add_host c
netns_add_host d
RELAY_EP="${NETNS_IP[relay]}:7000"

"$VEIL_BIN" network create --relay "$RELAY_EP" --out "$NET" --with-ca >/dev/null 2>"$NETNS_DIR/create.err" \
  || netns_fail "network create --with-ca failed: $(cat "$NETNS_DIR/create.err")"
[ -s "$NET/ca.key" ] || netns_fail "no ca.key written"
[ "$(stat -c %a "$NET/ca.key")" = 600 ] || netns_fail "ca.key is not mode 0600"
ok "network with a CA: $(grep -c . "$NET/ca.key") CA key line, mode 600"

netns_spawn relay relay "$VEIL_BIN" relay --listen "$RELAY_EP" --token-file "$NET/relay-1.token" \
  --state-dir "$SD/relay"
netns_wait_relay_ready relay "$SD/relay" relay 20

PINNED=100.64.77.7
KA=$(netns_exec a "$VEIL_BIN" key --state-dir "$SD/a")
KB=$(netns_exec b "$VEIL_BIN" key --state-dir "$SD/b")
[[ "$KA" =~ ^[0-9a-f]{64}$ ]] || netns_fail "veil key printed '$KA'"
"$VEIL_BIN" cert sign --ca "$NET/ca.key" --node-key "$KA" --tag web --out "$NETNS_DIR/a.cert" 2>/dev/null \
  || netns_fail "cert sign for a failed"
"$VEIL_BIN" cert sign --ca "$NET/ca.key" --node-key "$KB" --tag db --ipv4 "$PINNED" >"$NETNS_DIR/b.cert" \
  || netns_fail "cert sign for b failed"
ok "certificates signed for a (tag web) and b (tag db, IPv4 $PINNED)"

netns_spawn a node-a "$VEIL_BIN" up --token-file "$NET/join.token" --state-dir "$SD/a" --cert "$NETNS_DIR/a.cert"
netns_spawn b node-b "$VEIL_BIN" up --token-file "$NET/join.token" --state-dir "$SD/b" --cert "$NETNS_DIR/b.cert"
netns_wait_veil_ready a "$SD/a" node-a 30
netns_wait_veil_ready b "$SD/b" node-b 30
B4=$(netns_exec b "$VEIL_BIN" status --json --state-dir "$SD/b" | jq -r .overlay_ipv4)
[ "$B4" = "$PINNED" ] || netns_fail "b's overlay IPv4 is $B4, its certificate says $PINNED"
netns_wait_for "ping a -> b" 20 netns_exec a ping -c 1 -W 1 "$B4" || netns_fail "certified nodes cannot talk"
ok "certified nodes joined (b at its certificate's $PINNED) and a pings b"

# c: no certificate.
if out=$(netns_exec c "$VEIL_BIN" up --token-file "$NET/join.token" --state-dir "$SD/c" 2>&1); then
  netns_fail "a node without a certificate started"
fi
printf '%s' "$out" | grep -q "requires a certificate" || netns_fail "unclear error without a certificate: $out"
ok "without a certificate: $out"
# c with a's certificate: another key.
if out=$(netns_exec c "$VEIL_BIN" up --token-file "$NET/join.token" --state-dir "$SD/c" --cert "$NETNS_DIR/a.cert" 2>&1); then
  netns_fail "a node with another node's certificate started"
fi
printf '%s' "$out" | grep -q "not this node's key" || netns_fail "unclear error with a foreign certificate: $out"
ok "with another node's certificate: $out"
clients() { netns_exec relay "$VEIL_BIN" relay status --json --state-dir "$SD/relay" | jq -r .clients; }
[ "$(clients)" = 2 ] || netns_fail "relay has $(clients) clients, expected 2"

# d: certified, tag other.
KD=$(netns_exec d "$VEIL_BIN" key --state-dir "$SD/d")
"$VEIL_BIN" cert sign --ca "$NET/ca.key" --node-key "$KD" --tag other >"$NETNS_DIR/d.cert"
netns_spawn d node-d "$VEIL_BIN" up --token-file "$NET/join.token" --state-dir "$SD/d" --cert "$NETNS_DIR/d.cert"
netns_wait_veil_ready d "$SD/d" node-d 30
D4=$(netns_exec d "$VEIL_BIN" status --json --state-dir "$SD/d" | jq -r .overlay_ipv4)
netns_wait_for "ping a -> d" 20 netns_exec a ping -c 1 -W 1 "$D4" || netns_fail "a cannot reach d before any policy"
ok "before any policy, a (web) reaches d (other)"

"$VEIL_BIN" policy sign --ca "$NET/ca.key" --serial 1 --allow web:db --out "$NETNS_DIR/p1" 2>/dev/null \
  || netns_fail "policy sign failed"
out=$(netns_exec b "$VEIL_BIN" policy push "$NETNS_DIR/p1" --state-dir "$SD/b" 2>&1) || netns_fail "policy push failed: $out"
ok "pushed to b: $out"
sleep 1
netns_exec a ping -c 2 -i 0.2 -W 1 "$B4" >/dev/null || netns_fail "web -> db refused under a web:db policy"
if netns_exec a ping -c 2 -i 0.2 -W 1 "$D4" >/dev/null 2>&1; then
  netns_fail "web -> other still works under a web:db policy"
fi
[ -s "$SD/a/policy" ] || netns_fail "a did not keep the policy in its state dir"
DROPPED=$(netns_exec a "$VEIL_BIN" status --json --state-dir "$SD/a" | jq -r .counters.dropped_policy)
[ "$DROPPED" -ge 1 ] || netns_fail "a counted no dropped_policy"
ok "policy web:db reached a: a -> b works, a -> d refused (dropped_policy $DROPPED), kept in a's state dir"

"$VEIL_BIN" cert revoke --ca "$NET/ca.key" --policy "$NETNS_DIR/p1" --node-key "$KB" >"$NETNS_DIR/p2" 2>/dev/null \
  || netns_fail "cert revoke failed"
netns_exec a "$VEIL_BIN" policy push "$NETNS_DIR/p2" --state-dir "$SD/a" >/dev/null 2>&1 || netns_fail "push of p2 failed"
t0=$SECONDS
netns_wait_for "relay drops b" 10 bash -c "[ \"\$(ip netns exec $(netns_name relay) $VEIL_BIN relay status --json --state-dir $SD/relay | jq -r .clients)\" = 2 ]" \
  || netns_fail "the relay still has $(clients) clients after b's revocation"
if netns_exec a ping -c 2 -i 0.2 -W 1 "$B4" >/dev/null 2>&1; then
  netns_fail "a still reaches b after b was revoked"
fi
ok "b revoked: the relay dropped it and a cannot reach it ($((SECONDS - t0)) s)"
printf '\n%s: PASS\n' "$TEST"
