#!/usr/bin/env bash
# End-to-end stealth: a node and a relay answer nothing that does not authenticate.
#   * veil-probe (tests/capture) sends 100,000 datagrams of each kind — random bytes,
#     truncated and bit-flipped captured datagrams, verbatim replays of captured traffic
#     (handshakes included), handshakes of another network — at node a's socket and at the
#     relay's, while a paced TCP transfer runs from a to b. A capture on the prober's link
#     must hold no reply at all; every datagram must reach the engine (its rx counter, plus
#     the kernel's receive-buffer drops) and every invalid one must be counted as dropped;
#     the transfer must arrive intact.
#   * nmap from another namespace: a TCP scan of every port of a finds nothing open, of the
#     relay only its TCP fallback port (443, where nodes behind UDP-blocking networks connect),
#     and a UDP scan of Veil's own ports gets no reply; connections to the relay's TCP port
#     that send garbage get zero bytes back and are closed.
# Node a runs with port_rotation_secs = 0 so that its port stays put for the prober.
#
# Needs root. Env: VEIL_BIN, PROBE_BIN (default target/release/veil-probe), PROBE_COUNT.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source-path=SCRIPTDIR/../..
# shellcheck source=scripts/lib/netns.sh
source "$ROOT/scripts/lib/netns.sh"
PROBE_BIN=${PROBE_BIN:-$ROOT/target/release/veil-probe}
PACED="$ROOT/tests/e2e/lib/paced_tcp.py"
COUNT=${PROBE_COUNT:-100000}
TEST=stealth
ok() { printf '    ok: %s\n' "$*"; }
[ -x "$VEIL_BIN" ] || { echo "FAIL: $VEIL_BIN not found" >&2; exit 1; }
[ -x "$PROBE_BIN" ] || { echo "FAIL: $PROBE_BIN not found (cargo build --release -p veil-capture)" >&2; exit 1; }
for tool in tcpdump jq nmap python3; do
  command -v "$tool" >/dev/null 2>&1 || { echo "FAIL: $tool missing; run scripts/setup.sh" >&2; exit 1; }
done

netns_init
SD=$NETNS_DIR/state
veil_network a b p
# Seeds and captures are the datagrams a wire carries, not 64 KB segmentation runs.
netns_wire_segments relay a b p
printf 'port_rotation_secs = 0\n' >"$NETNS_DIR/a.toml"
netns_spawn a seeds-a tcpdump -i eth0 -n -U -s 0 -w "$NETNS_DIR/seeds-a.pcap" udp
netns_spawn relay seeds-r tcpdump -i eth0 -n -U -s 0 -w "$NETNS_DIR/seeds-r.pcap" udp
sleep 1
veil_node a --config "$NETNS_DIR/a.toml"
veil_node b
B4=$(veil_ipv4 b)
netns_wait_for "ping a -> b" 20 netns_exec a ping -c 1 -W 1 "$B4" || netns_fail "no ping a -> b"
netns_exec a ping -c 20 -i 0.05 -s 1000 "$B4" >/dev/null || netns_fail "pings a -> b"
netns_stop seeds-a 3
netns_stop seeds-r 3
A_PORT=$(netns_exec a "$VEIL_BIN" status --json --state-dir "$SD/a" | jq -r .local_port)
A_EP="${NETNS_IP[a]}:$A_PORT"
R_EP="${NETNS_IP[relay]}:7000"
ok "seeds captured; targets: node a at $A_EP, relay at $R_EP"

# A transfer runs through everything below.
REPORT=$NETNS_DIR/transfer.json
netns_spawn b recv python3 "$PACED" recv "$B4" 5001 "$REPORT"
netns_wait_tcp_listen b 5001 10 || netns_fail "receiver did not listen"
netns_spawn a send python3 "$PACED" send "$B4" 5001 30 1000000

netns_spawn p cap-p tcpdump -i eth0 -n -U -s 0 -w "$NETNS_DIR/prober.pcap" "not arp"
sleep 1

counters() { # NS STATE_DIR SOCKET_KIND -> "rx drops"
  local v
  if [ "$3" = node ]; then
    v=$(netns_exec "$1" "$VEIL_BIN" status --json --state-dir "$2")
  else
    v=$(netns_exec "$1" "$VEIL_BIN" relay status --json --state-dir "$2")
  fi
  jq -r '.counters | "\(.rx_datagrams) \(.dropped_unauthenticated + .dropped_bad_aead + .dropped_replay + .dropped_malformed)"' <<<"$v"
}
rcvbuf() { netns_exec "$1" awk '/^Udp:/ { n++; if (n == 2) print $6 }' /proc/net/snmp; }

# probe NAME NS STATE KIND_OF_TARGET ENDPOINT SEEDS
probe() {
  local name=$1 ns=$2 sd=$3 what=$4 ep=$5 seeds=$6 kind before after rb0 rb1 sent=0 invalid=0 n rx drops
  read -r -a before <<<"$(counters "$ns" "$sd" "$what")"
  rb0=$(rcvbuf "$ns")
  for kind in random truncated bitflip replay foreign; do
    n=$(netns_exec p "$PROBE_BIN" --target "$ep" --kind "$kind" --count "$COUNT" --rate 100000 \
      --seeds "$seeds" --seed "$RANDOM") || netns_fail "veil-probe $kind at $name failed"
    sent=$((sent + n))
    [ "$kind" = replay ] || invalid=$((invalid + n))
  done
  sleep 1
  read -r -a after <<<"$(counters "$ns" "$sd" "$what")"
  rb1=$(rcvbuf "$ns")
  rx=$((after[0] - before[0]))
  drops=$((after[1] - before[1]))
  [ $((rx + rb1 - rb0)) -ge "$sent" ] \
    || netns_fail "$name: $sent sent, but the engine saw $rx and the kernel dropped $((rb1 - rb0))"
  [ "$drops" -ge $((invalid - (rb1 - rb0))) ] \
    || netns_fail "$name: $invalid invalid datagrams sent, only $drops counted as dropped"
  ok "$name: $sent datagrams (5 kinds × $COUNT); engine saw $rx, kernel buffer drops $((rb1 - rb0)); $drops counted as dropped (≥ $invalid invalid)"
}
probe "node a" a "$SD/a" node "$A_EP" "$NETNS_DIR/seeds-a.pcap"
probe "relay" relay "$SD/relay" relay "$R_EP" "$NETNS_DIR/seeds-r.pcap"

# nmap: TCP, every port, of a and the relay; UDP of Veil's own ports. The relay's one open
# TCP port is its fallback listener, which answers nothing that does not authenticate.
RELAY_TCP=443
for h in a relay; do
  out=$(netns_exec p nmap -n -Pn -sT -p- --max-retries 1 -T5 "${NETNS_IP[$h]}" 2>&1)
  open=$(grep -Eo '^[0-9]+/tcp +open' <<<"$out" | cut -d/ -f1 | paste -sd, - || true)
  want=""
  [ "$h" = relay ] && want=$RELAY_TCP
  [ "$open" = "$want" ] || netns_fail "nmap finds TCP port(s) '${open}' open on $h, expected '${want:-none}': $out"
done
GARBAGE=$(netns_exec p python3 - "${NETNS_IP[relay]}" "$RELAY_TCP" <<'PY'
import os, socket, sys, threading, time
results = []
def one(size):
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
    s.settimeout(30)
    t0, got = time.time(), 0
    try:
        # The relay may close before it has read everything (malformed framing).
        s.sendall(os.urandom(size))
        while True:
            b = s.recv(65536)
            if not b:
                break
            got += len(b)
    except (ConnectionResetError, BrokenPipeError):
        pass
    except socket.timeout:
        got = -1
    results.append((got, time.time() - t0))
    s.close()
threads = [threading.Thread(target=one, args=(n,)) for n in (1, 17, 100, 4096, 70000)]
for t in threads:
    t.start()
for t in threads:
    t.join()
bad = [g for g, _ in results if g != 0] + [-2] * (len(threads) - len(results))
print(bad[0] if bad else 0, round(max([t for _, t in results] + [0]), 1))
PY
) || netns_fail "the garbage client failed"
read -r G_BYTES G_SECS <<<"$GARBAGE"
[ "$G_BYTES" = 0 ] || netns_fail "the relay's TCP port answered garbage ($G_BYTES bytes; -1: kept open 30 s, -2: a client failed)"
ok "garbage to the relay's TCP port $RELAY_TCP (5 connections, 1 to 70000 bytes): 0 bytes back, each closed within ${G_SECS}s"
udp=""
for target in "${NETNS_IP[a]}:$A_PORT" "${NETNS_IP[relay]}:7000"; do
  out=$(netns_exec p nmap -n -Pn -sU -p "${target##*:}" "${target%:*}" 2>&1)
  if grep -Eq '^[0-9]+/udp +open ' <<<"$out"; then netns_fail "nmap finds an open UDP port: $out"; fi
  udp+=" ${target}: $(grep -Eo '^[0-9]+/udp +[a-z|]+' <<<"$out" | awk '{print $2}')"
done
ok "nmap -sT -p-: nothing open on a, only $RELAY_TCP (the TCP fallback) on the relay; -sU of their Veil ports:$udp (no answer)"

sleep 1
netns_stop cap-p 3
REPLIES=$(tcpdump -r "$NETNS_DIR/prober.pcap" -n "udp and (src host ${NETNS_IP[a]} or src host ${NETNS_IP[relay]})" 2>/dev/null | wc -l)
[ "$REPLIES" = 0 ] || netns_fail "$REPLIES UDP datagrams came back to the prober"
ICMP=$(tcpdump -r "$NETNS_DIR/prober.pcap" -n "icmp and (src host ${NETNS_IP[a]} or src host ${NETNS_IP[relay]})" 2>/dev/null \
  | grep -c "port $A_PORT unreachable\|port 7000 unreachable" || true)
[ "$ICMP" = 0 ] || netns_fail "ICMP port unreachable about Veil's ports"
ok "capture on the prober's link: no UDP reply from a or the relay, no ICMP about their ports"

netns_wait_exit send 60 || netns_fail "the sender failed"
netns_wait_exit recv 30 || netns_fail "the receiver failed"
[ "$(tail -n 1 "${NETNS_LOG[send]}")" = "$(jq -r .sha256 "$REPORT")" ] || netns_fail "the transfer was damaged"
ok "the transfer during the probes arrived intact ($(jq -r .bytes "$REPORT") bytes, longest gap $(jq -r .longest_gap_s "$REPORT") s)"
printf '\n%s: PASS\n' "$TEST"
