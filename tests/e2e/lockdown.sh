#!/usr/bin/env bash
# End-to-end: the kill switch (`veil up --lockdown`). Node a runs locked down next to an
# "internet" host (net) on the same underlay. Checks: a reaches b over the overlay, but
# nothing of a's reaches net outside the tunnel (ping, TCP; a capture on a's link sees no
# packet of a's to net's address, nor anything but Veil's datagrams); with the relay killed
# mid-transfer the transfer goes on and still nothing leaks, and a registers again when the
# relay returns (its own sockets are let out); after SIGKILL the rules stay; the next start
# without --lockdown removes them; `veil down` removes them.
#
# Needs root, nftables, tcpdump, curl (scripts/setup.sh).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source-path=SCRIPTDIR/../..
# shellcheck source=scripts/lib/netns.sh
source "$ROOT/scripts/lib/netns.sh"
TABLE=veil_lockdown_veil0

step() { printf '\n==> %s\n' "$*"; }
ok() { printf '    ok: %s\n' "$*"; }
for tool in nft tcpdump curl socat jq; do
  command -v "$tool" >/dev/null 2>&1 || { echo "FAIL: $tool missing; run scripts/setup.sh" >&2; exit 1; }
done

netns_init
step "relay, a (--lockdown), b, and an 'internet' host net"
veil_network a b net
veil_node a --lockdown
veil_node b
NET=${NETNS_IP[net]}
A=${NETNS_IP[a]}
B4=$(veil_ipv4 b)
netns_spawn net http /usr/bin/python3 -m http.server 8080 --bind "$NET" --directory "$NETNS_DIR"
netns_wait_tcp_listen net 8080 10
netns_exec a nft list table inet "$TABLE" >/dev/null || netns_fail "no nftables table $TABLE in a"
netns_exec b curl -sf --max-time 3 -o /dev/null "http://$NET:8080/" || netns_fail "b cannot reach net (the test's own setup)"
ok "table $TABLE in a; net ($NET) serves HTTP"

leaks() { # nothing of a's may reach net outside the tunnel
  if netns_exec a ping -c 1 -W 1 "$NET" >/dev/null 2>&1; then
    netns_fail "a pinged $NET outside the tunnel under lockdown"
  fi
  if netns_exec a curl -sf --max-time 2 -o /dev/null "http://$NET:8080/"; then
    netns_fail "a fetched http://$NET:8080/ outside the tunnel under lockdown"
  fi
}

step "the overlay works, the underlay is closed"
netns_spawn a cap tcpdump -n -i eth0 -w "$NETNS_DIR/a.pcap" "src host $A"
sleep 1
netns_exec a ping -c 3 -i 0.2 -W 2 "$B4" >/dev/null || netns_fail "a cannot ping b over the overlay under lockdown"
leaks
ok "ping b over the overlay; ping and HTTP to net refused"

step "relay killed mid-transfer"
netns_spawn b recv socat -u "TCP-LISTEN:5001,bind=$B4,reuseaddr" "OPEN:$NETNS_DIR/recv,creat,trunc"
netns_wait_tcp_listen b 5001 10
head -c $((32 << 20)) /dev/urandom >"$NETNS_DIR/send"
netns_spawn a send socat -u "OPEN:$NETNS_DIR/send" "TCP:$B4:5001,connect-timeout=10"
sleep 0.3
netns_stop relay 3
leaks
netns_wait_exit send 60 || netns_fail "the transfer failed after the relay was killed"
[ "$(sha256sum <"$NETNS_DIR/send")" = "$(sha256sum <"$NETNS_DIR/recv")" ] || netns_fail "the transfer arrived damaged"
ok "32 MiB arrived intact without the relay; nothing leaked"
netns_spawn relay relay2 "$VEIL_BIN" relay --listen "${NETNS_IP[relay]}:7000" \
  --token-file "$NETNS_DIR/net/relay-1.token" --state-dir "$NETNS_DIR/state/relay"
for _ in $(seq 100); do
  [ "$(netns_exec a "$VEIL_BIN" status --json --state-dir "$NETNS_DIR/state/a" | jq -r .relay_connected)" = true ] && break
  sleep 0.2
done
[ "$(netns_exec a "$VEIL_BIN" status --json --state-dir "$NETNS_DIR/state/a" | jq -r .relay_connected)" = true ] \
  || netns_fail "a did not reconnect to the restarted relay under lockdown"
leaks
ok "a reconnected to the relay; still nothing leaks"

step "capture of a's link"
netns_stop cap 3
count() { tcpdump -n -r "$NETNS_DIR/a.pcap" "$1" 2>/dev/null | wc -l; }
total=$(count "src host $A")
[ "$total" -gt 0 ] || netns_fail "the capture is empty"
to_net=$(count "dst host $NET")
[ "$to_net" = 0 ] || netns_fail "a's link carried $to_net packets to $NET"
not_udp=$(count "not udp and not arp")
[ "$not_udp" = 0 ] || netns_fail "a's link carried $not_udp packets that are not Veil's UDP: $(tcpdump -n -r "$NETNS_DIR/a.pcap" "not udp and not arp" 2>/dev/null | head -n 3)"
out=$total
ok "$out packets from a, all UDP (Veil's datagrams), none to $NET"

step "crash, restart without and with --lockdown, veil down"
kill -KILL "${NETNS_PID[node-a]}"
wait "${NETNS_PID[node-a]}" 2>/dev/null || true
netns_exec a nft list table inet "$TABLE" >/dev/null || netns_fail "the table went away with the crash"
leaks
ok "after SIGKILL the switch stays on"
netns_spawn a node-a2 "$VEIL_BIN" up --token-file "$NETNS_DIR/net/join.token" --state-dir "$NETNS_DIR/state/a"
netns_wait_veil_ready a "$NETNS_DIR/state/a" node-a2 30
grep -q "removed the kill switch" "${NETNS_LOG[node-a2]}" || netns_fail "the restart did not say it removed the leftover switch"
netns_exec a nft list table inet "$TABLE" >/dev/null 2>&1 && netns_fail "the leftover table is still there"
netns_exec a ping -c 1 -W 2 "$NET" >/dev/null || netns_fail "a cannot reach net without lockdown"
netns_exec a "$VEIL_BIN" down --state-dir "$NETNS_DIR/state/a" >/dev/null
netns_wait_exit node-a2 15 || true
netns_spawn a node-a3 "$VEIL_BIN" up --token-file "$NETNS_DIR/net/join.token" --state-dir "$NETNS_DIR/state/a" --lockdown
netns_wait_veil_ready a "$NETNS_DIR/state/a" node-a3 30
leaks
netns_exec a "$VEIL_BIN" down --state-dir "$NETNS_DIR/state/a" >/dev/null
netns_wait_exit node-a3 15 || netns_fail "veil down: the node exited with an error"
netns_exec a nft list table inet "$TABLE" >/dev/null 2>&1 && netns_fail "veil down left the table"
netns_exec a ping -c 1 -W 2 "$NET" >/dev/null || netns_fail "a cannot reach net after veil down"
ok "the restart removed the leftover; veil down removed its own"
echo "PASS: lockdown"
