#!/usr/bin/env bash
# End-to-end private mode, in namespaces: a network with two relays, h (home: first in the
# token, where every node registers) and g (guard).
#  - c runs `--private --cover 10`: relays only, with cover traffic. A capture of c's link holds datagrams with h only;
#    b, which could reach c directly, is told no address of c's and stays relayed. Idle,
#    c's link carries 10 datagrams a second each way, all of one size.
#  - a runs `--private=2`: its socket talks to g only, which carries a circuit to h. A
#    capture of a's link holds datagrams with g only; g reports one circuit and h one
#    circuit client (with no address); a ping both ways and an 8 MiB transfer a -> b
#    arrive intact.
#  - d runs `--private=2` behind a network that drops all its UDP: it reaches its guard over
#    TCP (the fallback) and still talks to b through the circuit.
#  - `--private=2` with a one-relay token is refused with a message naming the fix.
#
# Needs root. Env: VEIL_BIN.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source-path=SCRIPTDIR/../..
# shellcheck source=scripts/lib/netns.sh
source "$ROOT/scripts/lib/netns.sh"
TEST=private
ok() { printf '    ok: %s\n' "$*"; }
[ -x "$VEIL_BIN" ] || { echo "FAIL: $VEIL_BIN not found" >&2; exit 1; }
for tool in tcpdump jq socat sha256sum; do
  command -v "$tool" >/dev/null 2>&1 || { echo "FAIL: $tool missing; run scripts/setup.sh" >&2; exit 1; }
done

netns_init
netns_hub_create
for h in h g a b c d; do netns_add_host "$h"; done
H=${NETNS_IP[h]}
G=${NETNS_IP[g]}
mkdir -p "$NETNS_DIR/net" "$NETNS_DIR/net1" "$NETNS_DIR/state"
"$VEIL_BIN" network create --relay "$H:7000" --relay "$G:7000" --out "$NETNS_DIR/net" >/dev/null \
  || netns_fail "veil network create failed"
netns_spawn h relay-h "$VEIL_BIN" relay --listen "$H:7000" \
  --token-file "$NETNS_DIR/net/relay-1.token" --state-dir "$NETNS_DIR/state/h"
netns_spawn g relay-g "$VEIL_BIN" relay --listen "$G:7000" \
  --token-file "$NETNS_DIR/net/relay-2.token" --state-dir "$NETNS_DIR/state/g"
netns_wait_relay_ready h "$NETNS_DIR/state/h" relay-h 20
netns_wait_relay_ready g "$NETNS_DIR/state/g" relay-g 20

# Captures start before the private nodes do, so that their joins are on them too (all of
# IP except multicast: the kernel's neighbour discovery, MLD and IGMP).
netns_spawn a cap-a tcpdump -i eth0 -n -U -s 96 -w "$NETNS_DIR/a.pcap" '(ip and not ip multicast) or (ip6 and not ip6 multicast)'
netns_spawn c cap-c tcpdump -i eth0 -n -U -s 96 -w "$NETNS_DIR/c.pcap" '(ip and not ip multicast) or (ip6 and not ip6 multicast)'
sleep 1

veil_node b
veil_node a --private=2
veil_node c --private --cover 10
A4=$(veil_ipv4 a)
B4=$(veil_ipv4 b)
C4=$(veil_ipv4 c)

relay_json() { netns_exec "$1" "$VEIL_BIN" relay status --json --state-dir "$NETNS_DIR/state/$1"; }
peers_json() { netns_exec "$1" "$VEIL_BIN" peers --json --state-dir "$NETNS_DIR/state/$1"; }
status_json() { netns_exec "$1" "$VEIL_BIN" status --json --state-dir "$NETNS_DIR/state/$1"; }

st=$(status_json a)
[ "$(jq -r .private <<<"$st")" = two-hop ] || netns_fail "a is not two-hop: $st"
[ "$(jq -r .guard <<<"$st")" = "$G:7000" ] || netns_fail "a's guard is not g: $st"
[ "$(jq -r .guard_circuit <<<"$st")" = true ] || netns_fail "a's circuit is not open: $st"
ok "a: private two-hop, guard $G:7000, circuit open, home relay $(jq -r .relay <<<"$st")"

# Pings both ways between a (two hops) and b, and between c (one hop) and b.
netns_wait_for "ping a -> b" 20 netns_exec a ping -c 1 -W 1 "$B4" || netns_fail "no ping a -> b"
netns_exec a ping -c 10 -i 0.2 -W 2 "$B4" >/dev/null || netns_fail "pings a -> b lost"
netns_exec b ping -c 10 -i 0.2 -W 2 "$A4" >/dev/null || netns_fail "pings b -> a lost"
netns_exec c ping -c 10 -i 0.2 -W 2 "$B4" >/dev/null || netns_fail "pings c -> b lost"
netns_exec b ping -c 10 -i 0.2 -W 2 "$C4" >/dev/null || netns_fail "pings b -> c lost"
ok "pings a <-> b (two hops) and c <-> b (one hop): 40/40"

SRC=$NETNS_DIR/send.bin
DST=$NETNS_DIR/recv.bin
dd if=/dev/urandom of="$SRC" bs=1M count=8 status=none
netns_spawn b recv socat -u "TCP-LISTEN:5001,bind=$B4,reuseaddr" "OPEN:$DST,creat,trunc"
netns_wait_tcp_listen b 5001 10 || netns_fail "receiver did not listen"
t0=$(date +%s.%N)
netns_spawn a send socat -u "OPEN:$SRC" "TCP:$B4:5001,connect-timeout=10"
netns_wait_exit send 120 relay-h relay-g node-a node-b || netns_fail "the sender failed"
netns_wait_exit recv 30 || netns_fail "the receiver failed"
t1=$(date +%s.%N)
[ "$(sha256sum <"$SRC")" = "$(sha256sum <"$DST")" ] || netns_fail "sha256 differs"
ok "8 MiB a -> b over two hops, sha256 intact ($(awk -v t0="$t0" -v t1="$t1" 'BEGIN { printf "%.1f", 8 * 8 / (t1 - t0) }') Mbit/s)"

# What each side knows.
gs=$(relay_json g)
hs=$(relay_json h)
[ "$(jq -r .circuits <<<"$gs")" = 1 ] || netns_fail "guard circuits: $gs"
[ "$(jq -r .links <<<"$gs")" = 1 ] || netns_fail "guard links: $gs"
[ "$(jq -r .circuit_clients <<<"$hs")" = 1 ] || netns_fail "home circuit clients: $hs"
ok "g carries 1 circuit; h has 1 circuit client and 1 relay link"
pb=$(peers_json b)
pa=$(peers_json a)
jq -e --arg a "$A4" --arg h "$H:7000" '.[] | select(.overlay_ipv4 == $a) | .path == "relayed" and .endpoint == $h' <<<"$pb" >/dev/null \
  || netns_fail "b should see a relayed through h: $pb"
jq -e --arg g "$G:7000" '.[0].path == "private" and .[0].endpoint == $g' <<<"$pa" >/dev/null \
  || netns_fail "a should see its path as private through g: $pa"
jq -e --arg c "$C4" '.[] | select(.overlay_ipv4 == $c) | .path == "relayed" and (.relay_reason | test("no direct candidates"))' <<<"$pb" >/dev/null \
  || netns_fail "b should see c relayed with no candidates: $pb"
ok "b sees a through h and c without candidates; a sees its path as private via g"

# The captures: every datagram on a's link is to or from g; on c's link, h.
netns_stop cap-a 3
netns_stop cap-c 3
check_link() { # NAME PCAP OWN_IP ONLY_PEER
  local name=$1 pcap=$2 own=$3 only=$4 total others
  total=$(tcpdump -r "$pcap" -n 2>/dev/null | grep -c " IP" || true)
  others=$(tcpdump -r "$pcap" -n 2>/dev/null | grep " IP" | awk -v own="$own" -v only="$only" '
    { split($3, s, "."); split($5, d, ".");
      src = s[1] "." s[2] "." s[3] "." s[4]; dst = d[1] "." d[2] "." d[3] "." d[4];
      other = (src == own) ? dst : src;
      if (other != only) print }' | head -5)
  [ "$total" -gt 50 ] || netns_fail "$name's capture holds only $total packets"
  [ -z "$others" ] || netns_fail "$name exchanged packets with others than $only: $others"
  ok "$name's link: $total packets, every one with $only"
}
check_link a "$NETNS_DIR/a.pcap" "${NETNS_IP[a]}" "$G"
check_link c "$NETNS_DIR/c.pcap" "${NETNS_IP[c]}" "$H"

# Cover traffic: c has been quiet (no data, so no path checks either) for a while; its
# link still carries 10 datagrams a second each way, every one of the same size.
sleep 11
netns_exec c timeout 6 tcpdump -i eth0 -n -U -s 96 -w "$NETNS_DIR/c-idle.pcap" \
  "udp and host ${NETNS_IP[c]}" >/dev/null 2>&1 || true
# Datagrams per second each way, over the span between the first and the last captured.
rate() {
  tcpdump -r "$NETNS_DIR/c-idle.pcap" -n -tt "$1 host ${NETNS_IP[c]}" 2>/dev/null \
    | awk 'NR == 1 { t0 = $1 } { t1 = $1; n++ } END { if (n > 1) printf "%.1f", (n - 1) / (t1 - t0); else print 0 }'
}
r_up=$(rate src)
r_down=$(rate dst)
# (IP total lengths, from -v: tcpdump decodes port 7000 as AFS and prints no UDP length.)
sizes=$(tcpdump -r "$NETNS_DIR/c-idle.pcap" -n -v 2>/dev/null | grep -o 'proto UDP (17), length [0-9]*' \
  | awk '{ print $NF }' | sort | uniq -c | awk '{ printf "%s of %s bytes\n", $1, $2 }')
awk -v u="$r_up" -v d="$r_down" 'BEGIN { exit !(u >= 9 && u <= 11 && d >= 9 && d <= 11) }' \
  || netns_fail "cover: idle c sends $r_up and receives $r_down datagrams a second (want 10)"
[ "$(wc -l <<<"$sizes")" = 1 ] || netns_fail "cover: several sizes on c's link: $sizes"
ok "cover traffic: idle c sends $r_up and receives $r_down datagrams a second, one size ($sizes)"

# Two hops where UDP is blocked: the guard session goes over the TCP fallback.
netns_exec d nft -f - <<'EOF'
table inet noudp {
  chain in { type filter hook input priority filter; iifname "eth0" meta l4proto udp drop; }
  chain out { type filter hook output priority filter; oifname "eth0" meta l4proto udp drop; }
}
EOF
veil_node d --private=2
D4=$(veil_ipv4 d)
st=$(status_json d)
[ "$(jq -r .relay_transport <<<"$st")" = tcp ] && [ "$(jq -r .guard_circuit <<<"$st")" = true ] \
  || netns_fail "d (two hops, UDP blocked) is not on TCP with its circuit open: $st"
netns_exec d ping -c 5 -i 0.2 -W 2 "$B4" >/dev/null || netns_fail "pings d -> b lost"
netns_exec b ping -c 5 -i 0.2 -W 2 "$D4" >/dev/null || netns_fail "pings b -> d lost"
ok "d (two hops, all UDP dropped): guard over TCP $(jq -r .guard <<<"$st"), pings d <-> b 10/10"

# Two hops need two relays: a clear refusal otherwise.
"$VEIL_BIN" network create --relay "$H:7000" --out "$NETNS_DIR/net1" >/dev/null
if out=$("$VEIL_BIN" up --token-file "$NETNS_DIR/net1/join.token" --state-dir "$NETNS_DIR/state/x" --private=2 2>&1); then
  netns_fail "--private=2 with one relay was accepted"
fi
grep -q "at least two relays" <<<"$out" || netns_fail "unclear refusal: $out"
ok "--private=2 with a one-relay token: $out"
echo "PASS: private"
