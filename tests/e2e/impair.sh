#!/usr/bin/env bash
# End-to-end under a bad underlay: nftables on node a's link drops LOSS% of the UDP
# datagrams in each direction at random (`numgen random`) and duplicates DUP% of those it
# sends (`dup`); a TCP transfer a -> b over the overlay (64 MiB; 1 GiB with FULL=1, where
# the loss is 10%) must arrive with the same sha256. (Reordering, jitter and duplication in
# every combination are covered by the simulator, tests/sim/tests/network.rs.)
#
# Needs root. Env: VEIL_BIN, FULL, LOSS (percent), DUP (percent).
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
ok() { printf '    ok: %s\n' "$*"; }
[ -x "$VEIL_BIN" ] || { echo "FAIL: $VEIL_BIN not found" >&2; exit 1; }
for tool in nft socat sha256sum; do
  command -v "$tool" >/dev/null 2>&1 || { echo "FAIL: $tool missing; run scripts/setup.sh" >&2; exit 1; }
done

netns_init
veil_network a b
veil_node a
veil_node b
B4=$(veil_ipv4 b)
netns_wait_for "ping a -> b" 20 netns_exec a ping -c 1 -W 1 "$B4" || netns_fail "no ping a -> b"

netns_exec a nft -f - <<EOF
table ip impair {
  chain in {
    type filter hook input priority filter;
    iifname "eth0" meta l4proto udp numgen random mod 100 < $LOSS counter drop
  }
  chain out {
    type filter hook output priority filter;
    oifname "eth0" meta l4proto udp numgen random mod 100 < $LOSS counter drop
    oifname "eth0" meta l4proto udp numgen random mod 100 < $DUP counter dup to ip daddr device "eth0"
  }
}
EOF
ok "a's link: ${LOSS}% of UDP dropped each way, ${DUP}% of what it sends duplicated"

SRC=$NETNS_DIR/send.bin
DST=$NETNS_DIR/recv.bin
dd if=/dev/urandom of="$SRC" bs=1M count="$SIZE_MIB" status=none
netns_spawn b recv socat -u "TCP-LISTEN:5001,bind=$B4,reuseaddr" "OPEN:$DST,creat,trunc"
netns_wait_tcp_listen b 5001 10 || netns_fail "receiver did not listen"
t0=$(date +%s.%N)
netns_spawn a send socat -u "OPEN:$SRC" "TCP:$B4:5001,connect-timeout=10"
netns_wait_exit send $((FULL == 1 ? 2400 : 600)) relay node-a node-b || netns_fail "the sender failed"
netns_wait_exit recv 60 || netns_fail "the receiver failed"
t1=$(date +%s.%N)
[ "$(sha256sum <"$SRC")" = "$(sha256sum <"$DST")" ] || netns_fail "sha256 differs"
DROPS=$(netns_exec a nft list table ip impair | grep -o 'packets [0-9]*' | awk '{print $2}' | paste -sd/ -)
MBPS=$(awk -v b="$((SIZE_MIB * 1048576))" -v t0="$t0" -v t1="$t1" 'BEGIN { printf "%.1f", b * 8 / (t1 - t0) / 1e6 }')
ok "$SIZE_MIB MiB intact under ${LOSS}% loss: ${MBPS} Mbit/s (in-drops/out-drops/dups: $DROPS)"
printf '\n%s: PASS (%s MiB, %s%% loss, %s Mbit/s)\n' "$TEST" "$SIZE_MIB" "$LOSS" "$MBPS"
