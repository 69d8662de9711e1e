#!/usr/bin/env bash
# End-to-end: `veil up --metrics`. Node a serves Prometheus text on its loopback; the test
# parses it with the official client library's parser and checks that the counters move with
# traffic (8 MiB to b over a direct path: inner bytes by path kind, the peer's PMTU and bytes)
# and with garbage sent at a's UDP port (dropped_total{reason="unauthenticated"}), that a
# wrong path is a 404, and that a taken port fails `veil up` with a message naming `metrics`.
#
# Needs root, curl, python3-prometheus-client (scripts/setup.sh).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source-path=SCRIPTDIR/../..
# shellcheck source=scripts/lib/netns.sh
source "$ROOT/scripts/lib/netns.sh"
PARSE=(/usr/bin/python3 "$ROOT/tests/e2e/lib/check_metrics.py")
PORT=9101
MIB=8

step() { printf '\n==> %s\n' "$*"; }
ok() { printf '    ok: %s\n' "$*"; }
for tool in curl socat jq; do
  command -v "$tool" >/dev/null 2>&1 || { echo "FAIL: $tool missing; run scripts/setup.sh" >&2; exit 1; }
done
/usr/bin/python3 -c 'import prometheus_client' 2>/dev/null \
  || { echo "FAIL: python3-prometheus-client missing; run scripts/setup.sh" >&2; exit 1; }

netns_init
step "relay, node a with --metrics 127.0.0.1:$PORT, node b"
veil_network a b
veil_node a --metrics "127.0.0.1:$PORT"
veil_node b
B4=$(veil_ipv4 b)

scrape() { netns_exec a curl -sf --max-time 5 "http://127.0.0.1:$PORT/metrics" | "${PARSE[@]}"; }
value() { # SAMPLES PATTERN -> the value of the one sample matching PATTERN (fixed string)
  grep -F "$2" <<<"$1" | head -n 1 | awk '{ printf "%d", $2 }'
}

step "scrape before traffic"
before=$(scrape) || netns_fail "the metrics endpoint did not answer with parseable Prometheus text"
[ "$(value "$before" 'veil_up{id=')" = 1 ] || netns_fail "veil_up is not 1: $(grep veil_up <<<"$before")"
[ "$(value "$before" 'veil_relay_connected{}')" = 1 ] || netns_fail "relay not connected in metrics"
grep -q '^veil_relay_rtt_seconds{} ' <<<"$before" || netns_fail "no relay RTT"
tx0=$(value "$before" 'veil_inner_bytes_total{direction=tx,path=direct}')
ok "$(wc -l <<<"$before") samples; relay connected; tx direct $tx0 bytes"

step "traffic: ping, then $MIB MiB a -> b"
netns_exec a ping -c 3 -i 0.2 -W 2 "$B4" >/dev/null || netns_fail "ping a -> b failed"
for _ in $(seq 50); do
  [ "$(netns_exec a "$VEIL_BIN" peers --json --state-dir "$NETNS_DIR/state/a" | jq -r '.[0].path')" = direct ] && break
  sleep 0.2
done
netns_spawn b recv socat -u "TCP-LISTEN:5001,bind=$B4,reuseaddr" "OPEN:/dev/null"
netns_wait_tcp_listen b 5001 10
head -c $((MIB << 20)) /dev/urandom >"$NETNS_DIR/data"
netns_exec a socat -u "OPEN:$NETNS_DIR/data" "TCP:$B4:5001,connect-timeout=10" || netns_fail "transfer failed"
after=$(scrape)
tx1=$(value "$after" 'veil_inner_bytes_total{direction=tx,path=direct}')
[ $((tx1 - tx0)) -ge $((MIB << 20)) ] || netns_fail "direct tx bytes moved by $((tx1 - tx0)), less than $MIB MiB"
[ "$(value "$after" 'veil_sessions{}')" -ge 1 ] || netns_fail "no session in metrics"
pmtu=$(value "$after" 'veil_peer_pmtu_bytes{path=direct,peer=')
[ "${pmtu:-0}" -ge 1280 ] || netns_fail "no direct peer PMTU >= 1280 (got '${pmtu:-}')"
peer_tx=$(value "$after" 'veil_peer_bytes_total{direction=tx,peer=')
[ "${peer_tx:-0}" -ge $((MIB << 20)) ] || netns_fail "peer tx bytes $peer_tx < $MIB MiB"
[ "$(value "$after" 'veil_handshakes_total{kind=initiated}')" -ge 1 ] || netns_fail "no handshake counted"
ok "tx direct +$((tx1 - tx0)) bytes, peer PMTU $pmtu, peer tx $peer_tx"

step "garbage at a's UDP port"
port=$(netns_exec a "$VEIL_BIN" status --json --state-dir "$NETNS_DIR/state/a" | jq -r .local_port)
A_UNDER=${NETNS_IP[a]}
d0=$(value "$after" 'veil_dropped_total{reason=unauthenticated}')
netns_exec b /usr/bin/python3 - "$A_UNDER" "$port" <<'PY'
import os, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(200):
    s.sendto(os.urandom(40 + i * 5), (sys.argv[1], int(sys.argv[2])))
PY
sleep 0.5
garbage=$(scrape)
d1=$(value "$garbage" 'veil_dropped_total{reason=unauthenticated}')
[ $((d1 - d0)) -ge 150 ] || netns_fail "200 garbage datagrams moved dropped_total{unauthenticated} by only $((d1 - d0))"
ok "dropped_total{reason=unauthenticated} +$((d1 - d0))"

step "a wrong path is a 404; a taken port stops veil up with a message"
code=$(netns_exec a curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$PORT/nope")
[ "$code" = 404 ] || netns_fail "GET /nope answered $code, not 404"
out=$(netns_exec a "$VEIL_BIN" up --token-file "$NETNS_DIR/net/join.token" --state-dir "$NETNS_DIR/state/a2" \
  --tun veil1 --metrics "127.0.0.1:$PORT" 2>&1) && netns_fail "a second veil up on the same metrics port started"
grep -q "metrics" <<<"$out" || netns_fail "the error does not name the metrics setting: $out"
ok "404; second node refused: $(tail -n 1 <<<"$out")"
echo "PASS: metrics"
