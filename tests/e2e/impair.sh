#!/usr/bin/env bash
# End-to-end under a bad underlay. Node a's underlay UDP, both ways, goes through
# `veil-impair` (tests/capture, an NFQUEUE helper): it drops LOSS% of the packets (5; 10
# with FULL=1), sends DUP% twice (2), delays every packet by DELAY_MS plus up to JITTER_MS
# (1 + 0-2 ms; jitter alone keeps order) and holds REORDER% back by REORDER_MS (5% by
# 5-20 ms) so that later packets overtake them. A TCP transfer a -> b over the overlay
# (64 MiB; 1 GiB with FULL=1) must arrive with the same sha256; the helper's counters must
# show each impairment in each direction at about its configured rate (within 5 standard
# deviations), the kernel must have dropped nothing on its own, and both nodes must have
# refused the other side's copies as replays.
#
# The queue rules are nft's `queue num N`; on kernels built without it (CONFIG_NFT_QUEUE),
# iptables' NFQUEUE target (xt, through nft_compat). The simulator covers reordering,
# jitter and duplication in every combination too (tests/sim/tests/network.rs).
#
# Needs root. Env: VEIL_BIN, IMPAIR_BIN (default: veil-impair next to VEIL_BIN), FULL, LOSS,
# DUP, REORDER (percent), DELAY_MS, JITTER_MS, REORDER_MS (MIN-MAX), SEED (default random),
# TCP_CC (the sender's congestion control; default bbr where the kernel has it),
# TRANSFER_SECS (how long the transfer may take; 600, 2200 with FULL=1).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source-path=SCRIPTDIR/../..
# shellcheck source=scripts/lib/netns.sh
source "$ROOT/scripts/lib/netns.sh"
TEST=impair
FULL=${FULL:-0}
SIZE_MIB=$((FULL == 1 ? 1024 : 64))
LOSS=${LOSS:-$((FULL == 1 ? 10 : 5))}
DUP=${DUP:-2}
REORDER=${REORDER:-5}
REORDER_MS=${REORDER_MS:-5-20}
DELAY_MS=${DELAY_MS:-1}
JITTER_MS=${JITTER_MS:-2}
SEED=${SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
IMPAIR_BIN=${IMPAIR_BIN:-$(dirname "$VEIL_BIN")/veil-impair}
QUEUE=7        # NFQUEUE numbers are per namespace
MARK=0x7e11    # the helper's copies carry it and skip the queue
ok() { printf '    ok: %s\n' "$*"; }
positive() { awk -v x="$1" 'BEGIN { exit !(x > 0) }'; }
[ -x "$VEIL_BIN" ] || { echo "FAIL: $VEIL_BIN not found" >&2; exit 1; }
[ -x "$IMPAIR_BIN" ] || { echo "FAIL: $IMPAIR_BIN not found (cargo build --release -p veil-capture)" >&2; exit 1; }
for tool in nft socat sha256sum jq awk; do
  command -v "$tool" >/dev/null 2>&1 || { echo "FAIL: $tool missing; run scripts/setup.sh" >&2; exit 1; }
done

netns_init
veil_network a b
veil_node a
veil_node b
B4=$(veil_ipv4 b)
# The sender's congestion control decides the time, not whether data arrives intact: on this
# link CUBIC moves 64 MiB at about 4 Mbit/s (over two minutes), BBR at about 220. So BBR by
# default where the kernel has it, set on the sender's socket (TCP_CONGESTION: IPPROTO_TCP 6,
# option 13; root may pick one the host does not allow by default); else the host's default.
# (A modular bbr loads on first use.)
if [ -z "${TCP_CC:-}" ] && { grep -qw bbr /proc/sys/net/ipv4/tcp_available_congestion_control \
  || modinfo tcp_bbr >/dev/null 2>&1; }; then
  TCP_CC=bbr
fi
CC=${TCP_CC:-$(netns_exec a sysctl -n net.ipv4.tcp_congestion_control)}
CC_OPT=${TCP_CC:+,setsockopt-string=6:13:$TCP_CC}
netns_wait_for "ping a -> b" 20 netns_exec a ping -c 1 -W 1 "$B4" || netns_fail "no ping a -> b"

STATS=$NETNS_DIR/impair.json
netns_spawn a impair "$IMPAIR_BIN" --queue "$QUEUE" --mark "$MARK" --seed "$SEED" \
  --loss "$LOSS" --duplicate "$DUP" --delay-ms "$DELAY_MS" --jitter-ms "$JITTER_MS" \
  --reorder "$REORDER" --reorder-ms "$REORDER_MS" --stats "$STATS"
# The helper writes its first counters once it is bound to the queue.
netns_wait_for "veil-impair bound to queue $QUEUE" 10 test -s "$STATS" || netns_fail "veil-impair did not start"

if netns_exec a nft -f - 2>"$NETNS_DIR/nft.err" <<EOF
table ip impair {
  chain in {
    type filter hook input priority filter;
    iifname "eth0" meta l4proto udp meta mark != $MARK queue num $QUEUE
  }
  chain out {
    type filter hook output priority filter;
    oifname "eth0" meta l4proto udp meta mark != $MARK queue num $QUEUE
  }
}
EOF
then
  RULES="nft queue"
else
  command -v iptables >/dev/null 2>&1 \
    || netns_fail "nft has no queue statement here ($(head -1 "$NETNS_DIR/nft.err")) and iptables is missing; run scripts/setup.sh"
  netns_exec a iptables -w -A INPUT -i eth0 -p udp -m mark ! --mark "$MARK" -j NFQUEUE --queue-num "$QUEUE"
  netns_exec a iptables -w -A OUTPUT -o eth0 -p udp -m mark ! --mark "$MARK" -j NFQUEUE --queue-num "$QUEUE"
  RULES="iptables NFQUEUE; this kernel's nft has no queue statement"
fi
ok "a's underlay UDP goes through veil-impair ($RULES): loss ${LOSS}%, duplicate ${DUP}%," \
  "delay ${DELAY_MS} ms + 0-${JITTER_MS} ms, ${REORDER}% held back ${REORDER_MS} ms, seed $SEED"
netns_wait_for "ping a -> b through the impairment" 20 netns_exec a ping -c 1 -W 1 "$B4" \
  || netns_fail "no ping a -> b through veil-impair"

SRC=$NETNS_DIR/send.bin
DST=$NETNS_DIR/recv.bin
dd if=/dev/urandom of="$SRC" bs=1M count="$SIZE_MIB" status=none
netns_spawn b recv socat -u "TCP-LISTEN:5001,bind=$B4,reuseaddr" "OPEN:$DST,creat,trunc"
netns_wait_tcp_listen b 5001 10 || netns_fail "receiver did not listen"
t0=$(date +%s.%N)
netns_spawn a send socat -u "OPEN:$SRC" "TCP:$B4:5001,connect-timeout=10$CC_OPT"
netns_wait_exit send "${TRANSFER_SECS:-$((FULL == 1 ? 2200 : 600))}" relay node-a node-b impair || netns_fail "the sender failed"
netns_wait_exit recv 60 || netns_fail "the receiver failed"
t1=$(date +%s.%N)
[ "$(sha256sum <"$SRC")" = "$(sha256sum <"$DST")" ] || netns_fail "sha256 differs"
SECS=$(awk -v t0="$t0" -v t1="$t1" 'BEGIN { printf "%.1f", t1 - t0 }')
MBPS=$(awk -v b="$((SIZE_MIB * 1048576))" -v t0="$t0" -v t1="$t1" 'BEGIN { printf "%.1f", b * 8 / (t1 - t0) / 1e6 }')
ok "$SIZE_MIB MiB intact (sha256) in ${SECS} s: ${MBPS} Mbit/s (TCP $CC)"

# Both nodes refused the other side's copies: they reached the engines and failed the replay
# window (a's copies of what it sends at b; copies of what a receives at a, over loopback).
replays() {
  netns_exec "$1" "$VEIL_BIN" status --json --state-dir "$NETNS_DIR/state/$1" \
    | jq -r '.counters.dropped_replay + .counters.dropped_handshake_replay'
}
REPLAYS_A=$(replays a)
REPLAYS_B=$(replays b)

# Stopping the helper releases what it holds and writes the final counters.
netns_stop impair 10
jq -e '.total.seen > 0' "$STATS" >/dev/null || netns_fail "no counters from veil-impair in $STATS"
echo "    veil-impair: $(jq -c '{in: .in, out: .out, io: .io, kernel: .kernel}' "$STATS")"

# near NAME COUNT OF PCT: COUNT of OF is within 5 standard deviations (plus one packet) of PCT%.
near() {
  awk -v name="$1" -v k="$2" -v n="$3" -v pct="$4" 'BEGIN {
    p = pct / 100; mean = n * p; sd = sqrt(n * p * (1 - p))
    printf "%s %d of %d (%.2f%%, configured %s%%)", name, k, n, (n ? 100 * k / n : 0), pct
    exit !(n > 0 && (k - mean) ^ 2 <= (5 * sd + 1) ^ 2)
  }'
}
for dir in out in; do
  read -r seen dropped dup held reord delayed released < <(jq -r --arg d "$dir" \
    '.[$d] | "\(.seen) \(.dropped) \(.duplicated) \(.held_back) \(.reordered) \(.delayed) \(.released)"' "$STATS")
  [ "$seen" -ge 1000 ] || netns_fail "$dir: only $seen packets went through veil-impair"
  passed=$((seen - dropped))
  [ "$released" -eq "$passed" ] || netns_fail "$dir: $released released, expected $passed"
  m=$(near dropped "$dropped" "$seen" "$LOSS") || netns_fail "$dir: $m"
  msg="$dir: $m"
  m=$(near duplicated "$dup" "$passed" "$DUP") || netns_fail "$dir: $m"
  msg="$msg; $m"
  m=$(near "held back" "$held" "$passed" "$REORDER") || netns_fail "$dir: $m"
  msg="$msg; $m"
  # A held-back packet is overtaken unless the link is idle for its whole hold-back time:
  # nearly all are with BBR, 58-91 % with CUBIC (which idles waiting for timers).
  if positive "$REORDER"; then
    [ "$reord" -gt 0 ] && [ $((4 * reord)) -ge "$held" ] \
      || netns_fail "$dir: only $reord of $held held-back packets arrived after later ones"
    msg="$msg; $reord arrived after later packets"
  fi
  if positive "$DELAY_MS"; then
    [ "$delayed" -eq "$released" ] || netns_fail "$dir: $delayed of $released delayed, expected all"
  else
    [ "$delayed" -gt 0 ] || netns_fail "$dir: nothing delayed"
  fi
  ok "$msg; $delayed delayed"
done
read -r dups sent failed skipped kdrop < <(jq -r \
  '"\(.total.duplicated) \(.io.copies_sent) \(.io.copies_failed) \(.io.copies_skipped) \(.kernel.queue_dropped + .kernel.user_dropped)"' "$STATS")
[ "$kdrop" -eq 0 ] || netns_fail "the kernel dropped $kdrop queued packets itself (veil-impair fell behind)"
if positive "$DUP"; then
  [ "$sent" -gt 0 ] && [ $((100 * sent)) -ge $((99 * dups)) ] \
    || netns_fail "only $sent of $dups copies sent ($failed refused, $skipped skipped)"
  [ "$REPLAYS_B" -gt 0 ] && [ "$REPLAYS_A" -gt 0 ] \
    || netns_fail "copies not refused as replays (node a: $REPLAYS_A, node b: $REPLAYS_B)"
fi
ok "$sent copies sent, refused as replays (node b: $REPLAYS_B, node a: $REPLAYS_A); kernel queue drops: 0"
printf '\n%s: PASS (%s MiB, %s%% loss, %s%% dup, %s%% reordered, TCP %s: %s s, %s Mbit/s)\n' \
  "$TEST" "$SIZE_MIB" "$LOSS" "$DUP" "$REORDER" "$CC" "$SECS" "$MBPS"
