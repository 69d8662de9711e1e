#!/usr/bin/env bash
# End-to-end: subnet routes and an exit node. gw advertises the subnet of a "lan" namespace
# behind it; ex is an exit in front of an "internet" namespace; c uses both (--exit-node ex)
# with the kill switch on. Checks: c's status lists the routes; c reaches the lan host (ping,
# HTTP) and the internet host (HTTP) only through the overlay: a capture on c's link has no
# packet to either subnet, only UDP; the lan host sees gw's address (masquerade); the relay
# and ex killed in the middle of a download: nothing leaves c in clear, and the internet is
# back once they return; `veil down` on ex withdraws the exit at once; c's own `veil down`
# leaves no route or rule behind.
#
# Needs root, nftables, tcpdump, curl (scripts/setup.sh).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source-path=SCRIPTDIR/../..
# shellcheck source=scripts/lib/netns.sh
source "$ROOT/scripts/lib/netns.sh"

step() { printf '\n==> %s\n' "$*"; }
ok() { printf '    ok: %s\n' "$*"; }
for tool in nft tcpdump curl jq; do
  command -v "$tool" >/dev/null 2>&1 || { echo "FAIL: $tool missing; run scripts/setup.sh" >&2; exit 1; }
done

netns_init
veil_network gw ex c
# Two more /24s of 198.18.0.0/15 next to the hub's, for the lan and the internet.
IFS=. read -r o1 o2 o3 <<<"$NETNS_SUBNET"
LAN="$o1.$o2.$(((o3 + 1) % 256))"
INET="$o1.$o2.$(((o3 + 2) % 256))"
netns_attach gw lan "$LAN.1" "$LAN.10" 24
netns_attach ex inet "$INET.1" "$INET.10" 24
netns_spawn lan lanweb /usr/bin/python3 -m http.server 8080 --bind "$LAN.10" --directory "$NETNS_DIR"
netns_spawn inet inetweb /usr/bin/python3 -m http.server 8080 --bind "$INET.10" --directory "$NETNS_DIR"
echo "lan page" >"$NETNS_DIR/index.html"
netns_wait_tcp_listen lan 8080 10
netns_wait_tcp_listen inet 8080 10

step "gw advertises $LAN.0/24, ex is an exit, c uses both under lockdown"
veil_node gw --advertise-routes "$LAN.0/24"
veil_node ex --name ex --advertise-exit
veil_node c --exit-node ex --lockdown
status() { netns_exec c "$VEIL_BIN" status --json --state-dir "$NETNS_DIR/state/c"; }
for _ in $(seq 50); do
  [ "$(status | jq '.routes | length')" = 3 ] && break
  sleep 0.2
done
routes=$(status | jq -r '.routes | join("; ")')
grep -q "$LAN.0/24 via" <<<"$routes" && grep -q "0.0.0.0/0 via" <<<"$routes" && grep -q "::/0 via" <<<"$routes" \
  || netns_fail "c's routes are '$routes'"
netns_exec c ip route show table 52110 | grep -q "^$LAN.0/24 dev veil0" || netns_fail "no route to $LAN.0/24 on veil0 in table 52110: $(netns_exec c ip route show table 52110)"
netns_exec c ip rule show | grep -q "lookup 52110" || netns_fail "no exit rule on c"
ok "routes: $routes"

step "c reaches the lan and the internet through the overlay only"
netns_spawn c cap tcpdump -n -i eth0 -w "$NETNS_DIR/c.pcap" "src host ${NETNS_IP[c]}"
sleep 1
netns_exec c ping -c 3 -i 0.2 -W 2 "$LAN.10" >/dev/null || netns_fail "c cannot ping the lan host"
body=$(netns_exec c curl -sf --max-time 5 "http://$LAN.10:8080/") || { netns_exec c curl -v --max-time 5 "http://$LAN.10:8080/" 2>&1 | tail -5; netns_exec gw "$VEIL_BIN" status --json --state-dir "$NETNS_DIR/state/gw" | jq -c .counters | tr , "\n" | grep -E "dropped|rx_packets|tx_packets"; cat "${NETNS_LOG[lanweb]}"; netns_fail "c cannot fetch from the lan host"; }
[ "$body" = "lan page" ] || netns_fail "lan page: '$body'"
grep -q "^$LAN.1 " "${NETNS_LOG[lanweb]}" || netns_fail "the lan host did not see gw's address ($LAN.1): $(tail -n 2 "${NETNS_LOG[lanweb]}")"
netns_exec c curl -sf --max-time 5 -o /dev/null "http://$INET.10:8080/" || netns_fail "c cannot reach the internet host through ex"
grep -q "^$INET.1 " "${NETNS_LOG[inetweb]}" || netns_fail "the internet host did not see ex's address"
ok "lan (ping, HTTP; seen as $LAN.1) and internet (HTTP; seen as $INET.1)"

step "relay and ex killed mid-download: nothing in clear; back when they return"
head -c $((64 << 20)) /dev/urandom >"$NETNS_DIR/big"
netns_spawn c dl curl -s --limit-rate 4M -o "$NETNS_DIR/dl" "http://$INET.10:8080/big"
sleep 2
[ -s "$NETNS_DIR/dl" ] || netns_fail "the download through the exit did not start"
kill -KILL "${NETNS_PID[node-ex]}" "${NETNS_PID[relay]}"
wait "${NETNS_PID[node-ex]}" "${NETNS_PID[relay]}" 2>/dev/null || true
sleep 3
got=$(stat -c %s "$NETNS_DIR/dl")
if netns_exec c curl -sf --max-time 3 -o /dev/null "http://$INET.10:8080/"; then
  netns_fail "c reached the internet with its exit dead"
fi
[ "$got" -lt $((64 << 20)) ] || netns_fail "the download finished without the exit"
netns_stop dl 2
netns_spawn relay relay2 "$VEIL_BIN" relay --listen "${NETNS_IP[relay]}:7000" \
  --token-file "$NETNS_DIR/net/relay-1.token" --state-dir "$NETNS_DIR/state/relay"
netns_wait_relay_ready relay "$NETNS_DIR/state/relay" relay2 20
netns_spawn ex node-ex2 "$VEIL_BIN" up --token-file "$NETNS_DIR/net/join.token" --state-dir "$NETNS_DIR/state/ex" \
  --name ex --advertise-exit
netns_wait_veil_ready ex "$NETNS_DIR/state/ex" node-ex2 30
back=0
for _ in $(seq 40); do
  if netns_exec c curl -sf --max-time 2 -o /dev/null "http://$INET.10:8080/"; then back=1; break; fi
  sleep 0.5
done
if [ "$back" != 1 ]; then
  netns_exec c "$VEIL_BIN" peers --json --state-dir "$NETNS_DIR/state/c" | jq -c '.[] | {id, path, endpoint, overlay_ipv4, last_handshake_unix}'
  status | jq -c '{routes, counters: (.counters | with_entries(select(.key | test("dropped|handshake|lookup"))))}'
  netns_exec ex "$VEIL_BIN" status --json --state-dir "$NETNS_DIR/state/ex" | jq -c '{id, relay_connected, counters: (.counters | with_entries(select(.key | test("dropped|handshake|rx_packets"))))}'
  netns_fail "c did not reach the internet again after ex returned"
fi
ok "download stalled at $got bytes with the exit and relay gone; the internet came back through them"
netns_stop cap 3
count() { tcpdump -n -r "$NETNS_DIR/c.pcap" "$1" 2>/dev/null | wc -l; }
[ "$(count "src host ${NETNS_IP[c]}")" -gt 0 ] || netns_fail "empty capture"
[ "$(count "dst net $LAN.0/24 or dst net $INET.0/24")" = 0 ] || netns_fail "c's link carried packets to the lan or internet subnets in clear"
[ "$(count "not udp and not arp")" = 0 ] || netns_fail "c's link carried something else than UDP: $(tcpdump -n -r "$NETNS_DIR/c.pcap" "not udp and not arp" 2>/dev/null | head -n 3)"
ok "c's link carried only UDP, nothing to either subnet"

step "veil down on ex withdraws the exit; c's veil down leaves nothing behind"
netns_exec ex "$VEIL_BIN" down --state-dir "$NETNS_DIR/state/ex" >/dev/null
for _ in $(seq 25); do
  [ "$(status | jq '.routes | length')" = 1 ] && break
  sleep 0.2
done
[ "$(status | jq '.routes | length')" = 1 ] || netns_fail "c still lists the exit: $(status | jq -c .routes)"
netns_exec c ip route show table 52110 | grep -q "^default" && netns_fail "the exit's default route stayed on c after the exit left"
netns_exec ex nft list table inet veil_nat_veil0 >/dev/null 2>&1 && netns_fail "ex left its NAT table"
netns_exec c "$VEIL_BIN" down --state-dir "$NETNS_DIR/state/c" >/dev/null
netns_wait_exit node-c 15 || netns_fail "c's veil down failed"
netns_exec c ip route show table 52110 2>/dev/null | grep -q . && netns_fail "c left routes in table 52110"
netns_exec c ip rule show | grep -q "lookup 52110" && netns_fail "c left its routing rules"
netns_exec c nft list table inet veil_lockdown_veil0 >/dev/null 2>&1 && netns_fail "c left its kill switch"
ok "exit withdrawn at once; no route, rule or table left"
echo "PASS: routes"
