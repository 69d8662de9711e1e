#!/usr/bin/env bash
# End-to-end idling: after its idle timeout (5 s here) a session is closed and `veil peers`
# shows the peer with path "none"; then a one-minute capture on node a's underlay interface
# must hold at most 3 datagrams from a (its relay keepalives, every 25 s by default).
#
# Needs root. Env: VEIL_BIN (default target/release/veil).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source-path=SCRIPTDIR/../..
# shellcheck source=scripts/lib/netns.sh
source "$ROOT/scripts/lib/netns.sh"
TEST=idle
CAPTURE_SECS=${CAPTURE_SECS:-60}

ok() { printf '    ok: %s\n' "$*"; }
[ -x "$VEIL_BIN" ] || { echo "FAIL: $VEIL_BIN not found" >&2; exit 1; }
command -v tcpdump >/dev/null || { echo "FAIL: tcpdump missing; run scripts/setup.sh" >&2; exit 1; }

netns_init
NET=$NETNS_DIR/net
SD=$NETNS_DIR/state
mkdir -p "$NET" "$SD"
netns_hub_create
netns_add_host relay
netns_add_host a
netns_add_host b
RELAY_EP="${NETNS_IP[relay]}:7000"
printf 'idle_timeout_secs = 5\n' >"$NETNS_DIR/idle.toml"

"$VEIL_BIN" network create --relay "$RELAY_EP" --out "$NET" >/dev/null 2>&1 || netns_fail "network create failed"
netns_spawn relay relay "$VEIL_BIN" relay --listen "$RELAY_EP" --token-file "$NET/relay-1.token" \
  --state-dir "$SD/relay"
netns_wait_relay_ready relay "$SD/relay" relay 20
for n in a b; do
  netns_spawn "$n" "node-$n" "$VEIL_BIN" up --token-file "$NET/join.token" --state-dir "$SD/$n" \
    --config "$NETNS_DIR/idle.toml"
done
netns_wait_veil_ready a "$SD/a" node-a 30
netns_wait_veil_ready b "$SD/b" node-b 30
B4=$(netns_exec b "$VEIL_BIN" status --json --state-dir "$SD/b" | jq -r .overlay_ipv4)
netns_wait_for "ping a -> b" 20 netns_exec a ping -c 1 -W 1 "$B4" || netns_fail "no ping a -> b"
netns_exec a ping -c 5 -i 0.2 -W 1 "$B4" >/dev/null || netns_fail "pings lost"
path() { netns_exec a "$VEIL_BIN" peers --json --state-dir "$SD/a" | jq -r '.[0].path'; }
[ "$(path)" != none ] || netns_fail "no session after the pings"
sleep 7
[ "$(path)" = none ] || netns_fail "after the idle timeout the path is '$(path)', expected none"
ok "session closed after the idle timeout: path none"

CAP=$NETNS_DIR/idle.pcap
netns_exec a timeout "$CAPTURE_SECS" tcpdump -i eth0 -n -U -w "$CAP" "udp and src host ${NETNS_IP[a]}" \
  >/dev/null 2>&1 || true
count=$(tcpdump -r "$CAP" -n 2>/dev/null | wc -l)
tcpdump -r "$CAP" -n 2>/dev/null | sed 's/^/    /'
[ "$count" -le 3 ] || netns_fail "an idle node sent $count datagrams in ${CAPTURE_SECS}s (at most 3 allowed)"
ok "an idle node sent $count datagrams in ${CAPTURE_SECS}s"
printf '\n%s: PASS (%s datagrams in %ss)\n' "$TEST" "$count" "$CAPTURE_SECS"
