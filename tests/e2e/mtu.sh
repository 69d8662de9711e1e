#!/usr/bin/env bash
# End-to-end path MTU. Each case builds its own small network (relay + nodes a and b) with a
# path smaller than Ethernet somewhere, and checks, through the overlay from a to b:
#   * a paced TCP transfer arrives intact (sha256) with no long stall;
#   * `veil peers` shows the path's MTU (the largest inner packet that crosses whole) as
#     discovered, and state "confirmed";
#   * `ping -M do` of that size passes, and a larger one makes a's stack learn the MTU from
#     the Packet Too Big / Fragmentation Needed that Veil writes into the TUN;
#   * a 4000-byte UDP datagram (fragmented by the inner stack) arrives intact.
# Cases:
#   link1280   every underlay link has MTU 1280 (the hybrid handshake, larger than that, must
#              complete through the relay too);
#   vxlan      Veil runs over VXLAN over veth (a nested overlay, MTU 1450);
#   blackhole  a sits behind a router whose link to it has MTU 1280 and that drops ICMP
#              Fragmentation Needed and IP fragments (the black hole WireGuard falls into);
#              also IPv6 inner traffic over this IPv4 underlay;
#   shrink     the router's link to a drops from 1500 to 1280 in the middle of a transfer;
#              the transfer completes and the longest stall is measured;
#   ipv6       an IPv6 underlay with 1280-byte links (IPv6's minimum), IPv4 inner traffic.
#
#   tests/e2e/mtu.sh [CASE...]     default: all cases
#
# Needs root. Env: VEIL_BIN (default target/release/veil).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source-path=SCRIPTDIR/../..
# shellcheck source=scripts/lib/netns.sh
source "$ROOT/scripts/lib/netns.sh"
# shellcheck source=scripts/lib/mtu_topo.sh
source "$ROOT/scripts/lib/mtu_topo.sh"
PACED="$ROOT/tests/e2e/lib/paced_tcp.py"
TEST=mtu
SECS=${MTU_SECS:-5}
RATE=${MTU_RATE:-4000000}
MAX_GAP=1.0
ok() { printf '    ok: %s\n' "$*"; }
step() { printf '\n==> %s\n' "$*"; }
[ -x "$VEIL_BIN" ] || { echo "FAIL: $VEIL_BIN not found" >&2; exit 1; }
for tool in jq nft python3 ping; do
  command -v "$tool" >/dev/null 2>&1 || { echo "FAIL: $tool missing; run scripts/setup.sh" >&2; exit 1; }
done

CASES=("$@")
[ "${#CASES[@]}" -gt 0 ] || CASES=(link1280 vxlan blackhole shrink ipv6)

netns_init
netns_hub_create
mtu_topo_init
RESULTS=()

# net CASE RELAY_NS RELAY_ADDR: a network for CASE, its relay in RELAY_NS on RELAY_ADDR.
net() {
  local c=$1 rns=$2 addr=$3
  mkdir -p "$NETNS_DIR/$c/state"
  "$VEIL_BIN" network create --relay "$addr" --out "$NETNS_DIR/$c/net" >/dev/null 2>&1 \
    || netns_fail "$c: network create failed"
  netns_spawn "$rns" "$c-relay" "$VEIL_BIN" relay --listen "$addr" \
    --token-file "$NETNS_DIR/$c/net/relay-1.token" --state-dir "$NETNS_DIR/$c/state/relay"
  netns_wait_relay_ready "$rns" "$NETNS_DIR/$c/state/relay" "$c-relay" 20
}

# node CASE NS: `veil up` in NS for CASE.
node() {
  local c=$1 ns=$2
  netns_spawn "$ns" "$c-$ns" "$VEIL_BIN" up --token-file "$NETNS_DIR/$c/net/join.token" \
    --state-dir "$NETNS_DIR/$c/state/$ns"
  netns_wait_veil_ready "$ns" "$NETNS_DIR/$c/state/$ns" "$c-$ns" 30
}

status() { netns_exec "$2" "$VEIL_BIN" status --json --state-dir "$NETNS_DIR/$1/state/$2"; }
peer() { netns_exec "$2" "$VEIL_BIN" peers --json --state-dir "$NETNS_DIR/$1/state/$2" | jq -c '.[0]'; }

# transfer CASE A B DST LABEL: paced TCP from A to DST (in B); prints the longest gap.
transfer() {
  local c=$1 a=$2 b=$3 dst=$4 label=$5 report sent
  report=$NETNS_DIR/$c/$label.json
  netns_spawn "$b" "$c-recv-$label" python3 "$PACED" recv "$dst" 5001 "$report"
  netns_wait_tcp_listen "$b" 5001 10 || netns_fail "$c: receiver did not listen"
  netns_spawn "$a" "$c-send-$label" python3 "$PACED" send "$dst" 5001 "$SECS" "$RATE"
  netns_wait_exit "$c-send-$label" $((SECS + 60)) || netns_fail "$c: the sender failed"
  netns_wait_exit "$c-recv-$label" 30 || netns_fail "$c: the receiver failed"
  sent=$(tail -n 1 "${NETNS_LOG[$c-send-$label]}")
  [ "$sent" = "$(jq -r .sha256 "$report")" ] || netns_fail "$c: $label transfer corrupted"
  jq -r .longest_gap_s "$report"
}

# udp_big CASE A B DST: a 4096-byte UDP datagram from A to DST (in B) arrives intact.
udp_big() {
  local c=$1 a=$2 b=$3 dst=$4 want got
  want=$(python3 -c 'import hashlib;print(4096, hashlib.sha256(bytes(range(256))*16).hexdigest())')
  netns_spawn "$b" "$c-udp" python3 -c '
import hashlib, socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 5002)); s.settimeout(20)
d = s.recv(65535); print(len(d), hashlib.sha256(d).hexdigest())' "$dst"
  sleep 0.5
  for _ in 1 2 3; do
    netns_exec "$a" python3 -c '
import socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)
s.sendto(bytes(range(256)) * 16, (sys.argv[1], 5002))' "$dst"
    sleep 0.3
    netns_alive "$c-udp" || break
  done
  netns_wait_exit "$c-udp" 10 || netns_fail "$c: the 4096-byte UDP datagram did not arrive"
  got=$(tail -n 1 "${NETNS_LOG[$c-udp]}")
  [ "$got" = "$want" ] || netns_fail "$c: UDP datagram damaged: $got"
}

# check CASE A B LO HI: the checks of the header, from A to B; the discovered MTU must be
# within [LO, HI]. Sets GAP.
check() {
  local c=$1 a=$2 b=$3 lo=$4 hi=$5 dst p pmtu out big
  dst=$(status "$c" "$b" | jq -r .overlay_ipv4)
  netns_wait_for "$c: ping $a -> $b" 30 netns_exec "$a" ping -c 1 -W 1 "$dst" || netns_fail "$c: no ping"
  GAP=$(transfer "$c" "$a" "$b" "$dst" v4)
  awk -v g="$GAP" -v m="$MAX_GAP" 'BEGIN { exit !(g <= m) }' || netns_fail "$c: the transfer stalled ${GAP}s"
  p=$(peer "$c" "$a")
  pmtu=$(jq -r .pmtu <<<"$p")
  [ "$(jq -r .pmtu_state <<<"$p")" = confirmed ] || netns_fail "$c: PMTU state: $p"
  [ "$pmtu" -ge "$lo" ] && [ "$pmtu" -le "$hi" ] || netns_fail "$c: PMTU $pmtu outside [$lo, $hi]: $p"
  ok "$c: $(jq -r .path <<<"$p") path, PMTU $pmtu (confirmed); ${SECS}s TCP intact, longest gap ${GAP}s"
  netns_exec "$a" ping -M do -c 3 -i 0.2 -W 2 -s $((pmtu - 28)) "$dst" >/dev/null \
    || netns_fail "$c: ping -M do of the path MTU ($pmtu) failed"
  if [ "$pmtu" -lt 1400 ]; then
    out=$(netns_exec "$a" ping -M do -c 3 -i 0.3 -W 2 -s 1372 "$dst" 2>&1 || true)
    grep -Eq "mtu ?= ?$pmtu" <<<"$out" || netns_fail "$c: a 1400-byte DF ping did not teach MTU $pmtu: $out"
    big="; a 1400-byte one taught a's stack mtu $pmtu"
  else
    netns_exec "$a" ping -M do -c 3 -i 0.2 -W 2 -s 1372 "$dst" >/dev/null || netns_fail "$c: 1400-byte ping failed"
    big=""
  fi
  ok "$c: ping -M do of $pmtu bytes passes$big"
  udp_big "$c" "$a" "$b" "$dst"
  ok "$c: a 4096-byte UDP datagram arrived intact"
  RESULTS+=("$c pmtu=$pmtu gap=${GAP}s")
}

# up CASE: relay and nodes a and b of CASE on their topology's underlay addresses.
up() {
  local c=$1 rl=${1}rl addr
  addr=${UNDERLAY[$rl]}
  [[ "$addr" == *:* ]] && addr="[$addr]"
  net "$c" "$rl" "$addr:7000"
  node "$c" "${c}a"
  node "$c" "${c}b"
}

case_link1280() {
  step "link1280: every link 1280 bytes"
  topo_flat l1 1280
  up l1
  # 1280 - 28 = 1252-byte datagrams cross; probes are 64-byte buckets (or the 1435 ceiling),
  # so the path's size is 1216 and its inner MTU 1216 - 35 = 1181.
  check l1 l1a l1b 1181 1181
  # The hybrid handshake (about 2.4 KB) crossed 1280-byte links, in fragments under the base.
  local hs
  hs=$(status l1 l1a | jq '.counters.handshakes_completed + .counters.handshakes_answered')
  [ "$hs" -ge 1 ] || netns_fail "l1: no completed peer handshake"
  ok "l1: $hs hybrid handshake(s) completed over 1280-byte links"
}

case_vxlan() {
  step "vxlan: Veil over VXLAN over veth (MTU 1450)"
  topo_vxlan vx
  [ "$(netns_exec vxa cat /sys/class/net/vxlan0/mtu)" = 1450 ] || netns_fail "vxlan0 MTU is not 1450"
  up vx
  # 1450 - 28 = 1422-byte datagrams: the bucket below is 1408, 1408 - 35 = 1373.
  check vx vxa vxb 1373 1373
}

case_blackhole() {
  step "blackhole: a 1280-byte hop that sends no ICMP and drops fragments"
  topo_router bh 0 blackhole
  up bh
  check bh bha bhb 1181 1181
  local dst6 gap6
  dst6=$(status bh bhb | jq -r .overlay_ipv6)
  gap6=$(transfer bh bha bhb "$dst6" v6)
  awk -v g="$gap6" -v m="$MAX_GAP" 'BEGIN { exit !(g <= m) }' || netns_fail "bh: the IPv6 transfer stalled ${gap6}s"
  netns_exec bha ping -6 -M do -c 3 -i 0.2 -W 2 -s $((1181 - 48 - 8)) "$dst6" >/dev/null \
    || netns_fail "bh: IPv6 ping -M do failed"
  ok "bh: IPv6 inner over the IPv4 underlay: ${SECS}s TCP intact, longest gap ${gap6}s"
}

case_shrink() {
  step "shrink: the router's link to a drops from 1500 to 1280 mid-transfer"
  topo_router sh 8 full
  up sh
  local dst report sent gap p
  dst=$(status sh shb | jq -r .overlay_ipv4)
  netns_wait_for "sh: ping" 30 netns_exec sha ping -c 1 -W 1 "$dst" || netns_fail "sh: no ping"
  netns_exec sha ping -c 3 -i 0.2 -W 1 -s 1372 "$dst" >/dev/null || netns_fail "sh: full-size ping before the shrink"
  [ "$(peer sh sha | jq -r .pmtu)" = 1400 ] || netns_fail "sh: PMTU before the shrink: $(peer sh sha)"
  report=$NETNS_DIR/sh/shrink.json
  netns_spawn shb sh-recv python3 "$PACED" recv "$dst" 5001 "$report"
  netns_wait_tcp_listen shb 5001 10 || netns_fail "sh: receiver did not listen"
  netns_spawn sha sh-send python3 "$PACED" send "$dst" 5001 $((SECS * 2)) "$RATE"
  sleep "$SECS"
  router_shrink sh
  netns_wait_exit sh-send $((SECS + 60)) || netns_fail "sh: the sender failed"
  netns_wait_exit sh-recv 30 || netns_fail "sh: the receiver failed"
  sent=$(tail -n 1 "${NETNS_LOG[sh-send]}")
  [ "$sent" = "$(jq -r .sha256 "$report")" ] || netns_fail "sh: transfer corrupted"
  gap=$(jq -r .longest_gap_s "$report")
  p=$(peer sh sha)
  ok "sh: transfer intact across the shrink; longest stall ${gap}s; now $(jq -c '{pmtu,pmtu_state}' <<<"$p"), black holes $(status sh sha | jq -r .counters.pmtu_black_holes)"
  [ "$(jq -r .pmtu <<<"$p")" -le 1217 ] || netns_fail "sh: PMTU after the shrink: $p"
  awk -v g="$gap" 'BEGIN { exit !(g <= 2.0) }' || netns_fail "sh: stalled ${gap}s after the shrink (goal ≤ 1 s)"
  RESULTS+=("shrink recovery=${gap}s")
}

case_ipv6() {
  step "ipv6: IPv6 underlay with 1280-byte links, IPv4 inner traffic"
  topo_v6 v6
  up v6
  # 1280 - 48 = 1232-byte datagrams: the bucket below is 1216, 1216 - 35 = 1181.
  check v6 v6a v6b 1181 1181
}

for c in "${CASES[@]}"; do
  "case_$c"
done
printf '\n%s: PASS (%s)\n' "$TEST" "${RESULTS[*]}"
