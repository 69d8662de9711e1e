#!/usr/bin/env bash
# End-to-end: a node whose network blocks UDP reaches its relay over TCP. nftables in node a's
# namespace drops ALL UDP in and out on its link; a runs with the default relay_transport
# (auto), b is unimpaired.
#
# Checks: a registers over TCP (status JSON: relay_transport "tcp", relay connected); pings
# a <-> b both ways; a 16 MiB TCP transfer a -> b over the overlay arrives with the same
# sha256 (its time is printed); 20 idle seconds cost a few datagrams (no loop, no spam); a
# capture of a's link holds no UDP from a, and the first 16 bytes of the TCP payloads of
# several connections (a restarted twice) all differ (no fixed prefix); a raw TCP connection
# to the relay's TCP port that sends garbage gets zero bytes back and is closed.
#
# Needs root. Env: VEIL_BIN (default target/release/veil).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source-path=SCRIPTDIR/../..
# shellcheck source=scripts/lib/netns.sh
source "$ROOT/scripts/lib/netns.sh"
TEST=tcp_fallback
SIZE_MIB=16
TCP_PORT=443
step() { printf '\n==> %s\n' "$*"; }
ok() { printf '    ok: %s\n' "$*"; }
[ -x "$VEIL_BIN" ] || { echo "FAIL: $VEIL_BIN not found" >&2; exit 1; }
for tool in nft socat sha256sum tcpdump tshark jq python3; do
  command -v "$tool" >/dev/null 2>&1 || { echo "FAIL: $tool missing; run scripts/setup.sh" >&2; exit 1; }
done

netns_init
SD=$NETNS_DIR/state
step "relay (UDP 7000, TCP $TCP_PORT by default), nodes a and b, a prober p"
veil_network a b p
R=${NETNS_IP[relay]}
A=${NETNS_IP[a]}
netns_wait_tcp_listen relay "$TCP_PORT" 10 || netns_fail "the relay does not listen on TCP $TCP_PORT"
[ "$(netns_exec relay "$VEIL_BIN" relay status --json --state-dir "$SD/relay" | jq -r .tcp_listen)" = "$R:$TCP_PORT" ] \
  || netns_fail "relay status does not name its TCP listener"
ok "relay listens on UDP $R:7000 and TCP $R:$TCP_PORT"

netns_exec a nft -f - <<'EOF'
table inet noudp {
  chain in {
    type filter hook input priority filter;
    iifname "eth0" meta l4proto udp counter drop
  }
  chain out {
    type filter hook output priority filter;
    oifname "eth0" meta l4proto udp counter drop
  }
}
EOF
ok "a's link drops all UDP, both ways"

netns_spawn a cap-a tcpdump -i eth0 -n -U -s 0 -w "$NETNS_DIR/a.pcap" "not arp"
sleep 1

step "a joins with relay_transport = auto (the default); b joins normally"
t0=$(date +%s.%N)
veil_node a
t1=$(date +%s.%N)
veil_node b
JOIN=$(awk -v t0="$t0" -v t1="$t1" 'BEGIN { printf "%.1f", t1 - t0 }')
SA=$(netns_exec a "$VEIL_BIN" status --json --state-dir "$SD/a")
[ "$(jq -r .relay_transport <<<"$SA")" = tcp ] || netns_fail "a's relay transport is not tcp: $SA"
[ "$(jq -r .relay_connected <<<"$SA")" = true ] || netns_fail "a is not connected to the relay: $SA"
[ "$(jq -r .counters.io_tcp_connects <<<"$SA")" -ge 1 ] || netns_fail "a counts no TCP connection: $SA"
SB=$(netns_exec b "$VEIL_BIN" status --json --state-dir "$SD/b")
[ "$(jq -r .relay_transport <<<"$SB")" = udp ] || netns_fail "b's relay transport is not udp: $SB"
TABLE=$(netns_exec a "$VEIL_BIN" status --state-dir "$SD/a")
grep -q "connected, over TCP" <<<"$TABLE" || netns_fail "veil status (table) on a does not say TCP: $TABLE"
ok "a registered over TCP ${JOIN}s after start (status: relay_transport tcp); b over UDP"

A4=$(veil_ipv4 a)
B4=$(veil_ipv4 b)
step "ping over the overlay, both ways"
netns_wait_for "ping a -> b" 20 netns_exec a ping -c 1 -W 1 "$B4" || netns_fail "no ping a -> b"
netns_exec a ping -c 5 -i 0.2 -W 2 "$B4" >/dev/null || netns_fail "pings a -> b lost"
netns_wait_for "ping b -> a" 20 netns_exec b ping -c 1 -W 1 "$A4" || netns_fail "no ping b -> a"
out=$(netns_exec b ping -c 5 -i 0.2 -W 2 "$A4") || netns_fail "pings b -> a lost"
ok "ping a <-> b; b -> a: $(grep -E 'rtt' <<<"$out")"
PATH_AB=$(netns_exec a "$VEIL_BIN" peers --json --state-dir "$SD/a" | jq -r --arg ip "$B4" '.[] | select(.overlay_ipv4 == $ip) | .path')
[ "$PATH_AB" = relayed ] || netns_fail "a's path to b is '$PATH_AB', expected relayed (UDP is blocked)"
ok "a reaches b relayed"

step "TCP transfer a -> b over the overlay: $SIZE_MIB MiB"
SRC=$NETNS_DIR/send.bin
DST=$NETNS_DIR/recv.bin
dd if=/dev/urandom of="$SRC" bs=1M count="$SIZE_MIB" status=none
netns_spawn b recv socat -u "TCP-LISTEN:5001,bind=$B4,reuseaddr" "OPEN:$DST,creat,trunc"
netns_wait_tcp_listen b 5001 10 || netns_fail "receiver did not listen"
t0=$(date +%s.%N)
netns_spawn a send socat -u "OPEN:$SRC" "TCP:$B4:5001,connect-timeout=10"
netns_wait_exit send 300 relay node-a node-b || netns_fail "the sender failed"
netns_wait_exit recv 60 || netns_fail "the receiver failed"
t1=$(date +%s.%N)
[ "$(sha256sum <"$SRC")" = "$(sha256sum <"$DST")" ] || netns_fail "sha256 differs"
SPEED=$(awk -v b="$((SIZE_MIB * 1048576))" -v t0="$t0" -v t1="$t1" \
  'BEGIN { t = t1 - t0; printf "%.1f s, %.1f Mbit/s", t, b * 8 / t / 1e6 }')
ok "$SIZE_MIB MiB arrived intact over the relay's TCP stream: $SPEED"
rm -f "$SRC" "$DST"

step "idle: no loop, no spam"
# Once the transfer's tail has settled (discovery and path checks run for 10 s after data),
# an idle node sends its relay keepalives and little else, whatever UDP does.
sleep 12
cnt() { netns_exec a "$VEIL_BIN" status --json --state-dir "$SD/a" | jq -c .counters; }
before=$(cnt)
sleep 20
after=$(cnt)
IDLE=$(jq -n --argjson a "$after" --argjson b "$before" '$a.tx_datagrams - $b.tx_datagrams')
CHANGED=$(jq -n -c --argjson a "$after" --argjson b "$before" \
  '[$a | to_entries[] | select(.value != $b[.key]) | "\(.key)+\(.value - $b[.key])"] | join(" ")')
echo "    counters that moved in 20 idle seconds: $CHANGED"
[ "$IDLE" -le 20 ] || netns_fail "a sent $IDLE datagrams in 20 idle seconds"
SA=$(netns_exec a "$VEIL_BIN" status --json --state-dir "$SD/a")
[ "$(jq -r .relay_transport <<<"$SA")" = tcp ] || netns_fail "a left TCP: $SA"
ok "a sent $IDLE datagrams in 20 idle seconds; TCP connects so far: $(jq -r .counters.io_tcp_connects <<<"$SA"), transport switches: $(jq -r .counters.io_relay_transport_switches <<<"$SA")"

step "a restarts twice (more TCP connections to compare)"
for i in 1 2; do
  netns_exec a "$VEIL_BIN" down --state-dir "$SD/a" >/dev/null || netns_fail "veil down on a failed"
  netns_wait_exit node-a 10 || netns_fail "a did not stop"
  veil_node a
  netns_wait_for "a over TCP ($i)" 20 bash -c \
    "ip netns exec $(netns_name a) $VEIL_BIN status --json --state-dir $SD/a | jq -e '.relay_transport == \"tcp\" and .relay_connected' >/dev/null" \
    || netns_fail "a did not come back over TCP after restart $i"
done
netns_wait_for "ping a -> b after the restarts" 20 netns_exec a ping -c 1 -W 1 "$B4" || netns_fail "no ping after restarts"
ok "a came back over TCP twice"

step "a raw TCP connection to the relay's TCP port that sends garbage"
GARBAGE=$(netns_exec p python3 - "$R" "$TCP_PORT" <<'PY'
import os, socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
s.sendall(os.urandom(4096))
s.settimeout(30)
t0, got, how = time.time(), 0, "eof"
try:
    while True:
        b = s.recv(65536)
        if not b:
            break
        got += len(b)
except ConnectionResetError:
    how = "reset"
except socket.timeout:
    how = "open"
print(got, how, round(time.time() - t0, 1))
PY
) || netns_fail "the garbage client failed"
read -r G_BYTES G_HOW G_SECS <<<"$GARBAGE"
[ "$G_BYTES" = 0 ] || netns_fail "the relay answered $G_BYTES bytes to garbage"
[ "$G_HOW" != open ] || netns_fail "the relay kept a garbage connection open for 30 s"
RC=$(netns_exec relay "$VEIL_BIN" relay status --json --state-dir "$SD/relay")
ok "0 bytes back; closed ($G_HOW) after ${G_SECS}s; relay counters: malformed $(jq -r .counters.io_tcp_malformed <<<"$RC"), closed unanswered $(jq -r .counters.io_tcp_closed_unanswered <<<"$RC")"

step "a's link, as an observer sees it"
sleep 1
netns_stop cap-a 3
PCAP=$NETNS_DIR/a.pcap
UDP_OUT=$(tcpdump -r "$PCAP" -n "udp and src host $A" 2>/dev/null | wc -l)
[ "$UDP_OUT" = 0 ] || netns_fail "$UDP_OUT UDP datagrams left a"
DROPS=$(netns_exec a nft list table inet noudp | grep -o 'packets [0-9]*' | awk '{print $2}' | paste -sd/ -)
ok "no UDP from a on its link (nft drops in/out: $DROPS)"
# The first 16 bytes each connection from a carried, and the first 16 the relay answered.
tshark -r "$PCAP" -Y "ip.addr == $R && tcp.port == $TCP_PORT && tcp.len > 0" \
  -T fields -e tcp.stream -e ip.src -e tcp.payload 2>/dev/null >"$NETNS_DIR/payloads.txt"
PREFIXES=$(python3 - "$NETNS_DIR/payloads.txt" "$A" <<'PY'
import sys
first = {}
for line in open(sys.argv[1]):
    parts = line.rstrip("\n").split("\t")
    if len(parts) < 3 or not parts[2]:
        continue
    stream, src, hexdata = parts[0], parts[1], parts[2].replace(":", "")
    key = (stream, "c" if src == sys.argv[2] else "r")
    if len(first.get(key, "")) < 32:
        first[key] = (first.get(key, "") + hexdata)[:32]
clients = [v for (s, d), v in sorted(first.items()) if d == "c" and len(v) == 32]
relays = [v for (s, d), v in sorted(first.items()) if d == "r" and len(v) == 32]
print(len(clients), len(set(clients)), len(relays), len(set(relays)), " ".join(clients))
PY
)
read -r NC NCU NR NRU FIRSTS <<<"$PREFIXES"
[ "$NC" -ge 3 ] || netns_fail "only $NC TCP connections from a in the capture"
[ "$NC" = "$NCU" ] || netns_fail "first 16 bytes repeat across a's connections: $FIRSTS"
[ "$NR" = "$NRU" ] || netns_fail "the relay's first 16 bytes repeat across connections"
ok "$NC connections from a: the first 16 bytes of each differ ($FIRSTS); the relay's first 16 differ on all $NR"

step "relay counters"
RC=$(netns_exec relay "$VEIL_BIN" relay status --json --state-dir "$SD/relay")
echo "    $(jq -c '.counters | with_entries(select(.key | startswith("io_tcp")))' <<<"$RC")"
[ "$(jq -r .clients <<<"$RC")" = 2 ] || netns_fail "the relay counts $(jq -r .clients <<<"$RC") clients, expected 2"
ok "the relay counts a and b"

printf '\n%s: PASS (join over TCP %ss; %s MiB in %s)\n' "$TEST" "$JOIN" "$SIZE_MIB" "$SPEED"
