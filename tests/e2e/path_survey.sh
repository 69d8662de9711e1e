#!/usr/bin/env bash
# End-to-end path surveys: nodes a and b are dual-stack (an IPv4 and an IPv6 address on the
# same link), so each has two working direct paths to the other. Once they are direct on
# one family, that family's datagrams between them get SLOW_MS of delay each way (a's
# underlay UDP to and from b's address of that family goes through `veil-impair`, the
# NFQUEUE helper of tests/capture): the route got longer. During a 55-second paced TCP
# transfer a -> b, the node with the lower key must find the other family faster in its
# path surveys (every 30 s while data flows), move the data there, and the other node must
# follow. The data must arrive intact with no gap over MAX_GAP, exactly one move must be
# counted (`path_switches_faster`), and the nodes must not go back. Without surveys the
# data stays on the slow path; in the simulator the same is tested with a fake clock
# (tests/sim/tests/discovery.rs).
#
# Needs root. Env: VEIL_BIN (default target/release/veil), IMPAIR_BIN (default: veil-impair
# next to VEIL_BIN), SLOW_MS (default 15).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source-path=SCRIPTDIR/../..
# shellcheck source=scripts/lib/netns.sh
source "$ROOT/scripts/lib/netns.sh"
PACED="$ROOT/tests/e2e/lib/paced_tcp.py"
TEST=path_survey
SLOW_MS=${SLOW_MS:-15}
SECONDS_TOTAL=55
RATE=1000000 # bytes per second
MAX_GAP=1.0
IMPAIR_BIN=${IMPAIR_BIN:-$(dirname "$VEIL_BIN")/veil-impair}
QUEUE=9
MARK=0x7e11

step() { printf '\n==> %s\n' "$*"; }
ok() { printf '    ok: %s\n' "$*"; }
[ -x "$VEIL_BIN" ] || { echo "FAIL: $VEIL_BIN not found" >&2; exit 1; }
[ -x "$IMPAIR_BIN" ] || { echo "FAIL: $IMPAIR_BIN not found (cargo build --release -p veil-capture)" >&2; exit 1; }
for tool in nft jq python3; do
  command -v "$tool" >/dev/null 2>&1 || { echo "FAIL: $tool missing; run scripts/setup.sh" >&2; exit 1; }
done

netns_init
SD=$NETNS_DIR/state

step "topology: relay, a, b on ${NETNS_SUBNET}.0/24, a and b also on IPv6"
veil_network a b
# A /64 of fd00:198:18::/48 for this run.
V6="fd00:198:18:$(_netns_hex 4)"
A6="$V6::a"
B6="$V6::b"
for h in a b; do
  addr=$([ "$h" = a ] && echo "$A6" || echo "$B6")
  netns_exec "$h" ip -6 addr add "$addr/64" dev eth0 nodad
done
netns_wait_for "IPv6 between a and b" 10 netns_exec a ping -6 -c 1 -W 1 "$B6" \
  || netns_fail "no IPv6 between a and b on the underlay"
veil_node a
veil_node b
B4=$(veil_ipv4 b)
netns_wait_for "ping a -> b" 20 netns_exec a ping -c 1 -W 1 "$B4" || netns_fail "no ping a -> b"
peer() { netns_exec "$1" "$VEIL_BIN" peers --json --state-dir "$SD/$1" | jq -c '.[0]'; }
endpoint() { peer "$1" | jq -r 'if .path == "direct" then .endpoint else "-" end'; }
counter() { netns_exec "$1" "$VEIL_BIN" status --json --state-dir "$SD/$1" | jq -r ".counters.$2"; }
both_direct() { [ "$(endpoint a)" != - ] && [ "$(endpoint b)" != - ]; }
netns_wait_for "both direct" 15 both_direct || netns_fail "not direct: a $(peer a), b $(peer b)"
# Each side takes the first path to answer its punch; the higher key then follows the
# lower key's, if that is the other one, once data flows.
netns_exec a ping -c 10 -i 0.2 -W 1 "$B4" >/dev/null || netns_fail "pings a -> b lost"
EA=$(endpoint a)
EB=$(endpoint b)
case "$EA" in
  "[$B6]:"*) FAMILY=ip6 SLOW_PEER=$B6 ;;
  "${NETNS_IP[b]}:"*) FAMILY=ip SLOW_PEER=${NETNS_IP[b]} ;;
  *) netns_fail "a's endpoint for b is '$EA', neither $B6 nor ${NETNS_IP[b]}" ;;
esac
case "$EB" in
  "[$A6]:"* | "${NETNS_IP[a]}:"*) ;;
  *) netns_fail "b's endpoint for a is '$EB'" ;;
esac
[ "${EA:0:1}" = "${EB:0:1}" ] || netns_fail "a and b use different families: a -> $EA, b -> $EB"
ok "direct on $FAMILY: a -> $EA, b -> $EB"
V0=$(($(counter a direct_paths) + $(counter b direct_paths)))

step "the $FAMILY route between a and b gets ${SLOW_MS} ms longer each way"
STATS=$NETNS_DIR/impair.json
netns_spawn a impair "$IMPAIR_BIN" --queue "$QUEUE" --mark "$MARK" --delay-ms "$SLOW_MS" --stats "$STATS"
netns_wait_for "veil-impair bound to queue $QUEUE" 10 test -s "$STATS" || netns_fail "veil-impair did not start"
if netns_exec a nft -f - 2>"$NETNS_DIR/nft.err" <<EOF
table inet slow {
  chain in {
    type filter hook input priority filter;
    $FAMILY saddr $SLOW_PEER meta l4proto udp meta mark != $MARK queue num $QUEUE
  }
  chain out {
    type filter hook output priority filter;
    $FAMILY daddr $SLOW_PEER meta l4proto udp meta mark != $MARK queue num $QUEUE
  }
}
EOF
then
  RULES="nft queue"
else
  # Kernels without CONFIG_NFT_QUEUE: iptables' NFQUEUE target (xt, through nft_compat).
  IPT=$([ "$FAMILY" = ip ] && echo iptables || echo ip6tables)
  command -v "$IPT" >/dev/null 2>&1 \
    || netns_fail "nft has no queue statement here ($(head -1 "$NETNS_DIR/nft.err")) and $IPT is missing; run scripts/setup.sh"
  netns_exec a "$IPT" -w -A INPUT -s "$SLOW_PEER" -p udp -m mark ! --mark "$MARK" -j NFQUEUE --queue-num "$QUEUE"
  netns_exec a "$IPT" -w -A OUTPUT -d "$SLOW_PEER" -p udp -m mark ! --mark "$MARK" -j NFQUEUE --queue-num "$QUEUE"
  RULES="$IPT NFQUEUE"
fi
slow_rtt() { netns_exec a ping -c 3 -i 0.2 -W 1 "$B4" | awk -F/ '/^rtt/ { print $5 }'; }
RTT_SLOW=$(slow_rtt)
awk -v r="$RTT_SLOW" -v s="$SLOW_MS" 'BEGIN { exit !(r >= 2 * s) }' \
  || netns_fail "the overlay's round trip is ${RTT_SLOW} ms, not slowed by 2 x ${SLOW_MS} ms"
ok "overlay round trip a -> b now ${RTT_SLOW} ms ($RULES)"

step "a ${SECONDS_TOTAL}-second paced TCP transfer a -> b; the nodes must move to the faster family"
REPORT=$NETNS_DIR/report.json
netns_spawn b recv python3 "$PACED" recv "$B4" 5001 "$REPORT"
netns_wait_tcp_listen b 5001 10 || netns_fail "receiver did not listen"
t0=$(date +%s.%N)
netns_spawn a send python3 "$PACED" send "$B4" 5001 "$SECONDS_TOTAL" "$RATE"
moved() { [ "$(endpoint a)" != "$EA" ] && [ "$(endpoint a)" != - ] && [ "$(endpoint b)" != "$EB" ] && [ "$(endpoint b)" != - ]; }
netns_wait_for "a and b on the other family" 45 moved \
  || netns_fail "still on the slow path after 45 s: a $(peer a), b $(peer b); surveys a $(counter a path_surveys), b $(counter b path_surveys)"
t1=$(date +%s.%N)
MOVED_AFTER=$(awk -v t0="$t0" -v t1="$t1" 'BEGIN { printf "%.1f", t1 - t0 }')
ok "moved ${MOVED_AFTER} s into the transfer: a -> $(endpoint a), b -> $(endpoint b)"
netns_wait_exit send $((SECONDS_TOTAL + 30)) node-a node-b relay impair || netns_fail "the sender failed"
netns_wait_exit recv 30 || netns_fail "the receiver failed"
SENT_SHA=$(tail -n 1 "${NETNS_LOG[send]}")
GOT_SHA=$(jq -r .sha256 "$REPORT")
GAP=$(jq -r .longest_gap_s "$REPORT")
[ "$SENT_SHA" = "$GOT_SHA" ] || netns_fail "sha256 differs: sent $SENT_SHA, received $GOT_SHA"
awk -v g="$GAP" -v m="$MAX_GAP" 'BEGIN { exit !(g <= m) }' \
  || netns_fail "the transfer carried nothing for ${GAP}s (goal ≤ ${MAX_GAP}s)"
ok "intact; longest gap ${GAP}s"

step "one move, by the lower key, followed once, and no way back"
FA=$(counter a path_switches_faster)
FB=$(counter b path_switches_faster)
SA=$(counter a path_surveys)
SB=$(counter b path_surveys)
V1=$(($(counter a direct_paths) + $(counter b direct_paths)))
echo "    a: surveys $SA, moves $FA; b: surveys $SB, moves $FB; validations $V0 -> $V1"
[ $((FA + FB)) -eq 1 ] || netns_fail "expected one move, got a $FA, b $FB"
if [ "$FA" -eq 1 ]; then [ "$SB" -eq 0 ] || netns_fail "b surveyed too ($SB)"; else [ "$SA" -eq 0 ] || netns_fail "a surveyed too ($SA)"; fi
[ $((V1 - V0)) -eq 1 ] || netns_fail "expected one validation (the follower's), got $((V1 - V0))"
RTT_FAST=$(slow_rtt)
awk -v r="$RTT_FAST" -v s="$SLOW_MS" 'BEGIN { exit !(r < s) }' \
  || netns_fail "the overlay's round trip is still ${RTT_FAST} ms"
ok "overlay round trip a -> b now ${RTT_FAST} ms (was ${RTT_SLOW})"

printf '\n%s: PASS (moved after %ss, longest gap %ss, rtt %s -> %s ms)\n' \
  "$TEST" "$MOVED_AFTER" "$GAP" "$RTT_SLOW" "$RTT_FAST"
