#!/usr/bin/env bash
# The garbage-flood benchmark (`scripts/bench.sh flood` runs it): one iperf3 TCP stream
# a -> b over Veil's direct path for BENCH_SECS (default 10) seconds, clean, then while
# veil-probe sends random datagrams at node b's socket at FLOOD_PPS (default 100,000) per
# second from a fourth namespace. Ends with
#   RESULT flood clean_mbps=… flooded_mbps=… ratio=… flood_pps=… flood_sent=… b_dropped=…
# Needs root. Not a test: nothing fails on a number.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SECS=${BENCH_SECS:-10}
PPS=${FLOOD_PPS:-100000}
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
bash scripts/setup.sh >/dev/null
cargo build --release -p veil-cli -p veil-capture --quiet
VEIL_BIN="$ROOT/target/release/veil"
PROBE_BIN="$ROOT/target/release/veil-probe"
# shellcheck source=scripts/lib/netns.sh
source "$ROOT/scripts/lib/netns.sh"
export NETNS_QUIET=1
netns_init
SD=$NETNS_DIR/state
veil_network a b p
printf 'port_rotation_secs = 0\n' >"$NETNS_DIR/b.toml"
veil_node a
veil_node b --config "$NETNS_DIR/b.toml"
B4=$(veil_ipv4 b)
netns_wait_for "ping a -> b" 20 netns_exec a ping -c 1 -W 1 "$B4"
netns_exec a ping -c 5 -i 0.2 "$B4" >/dev/null
B_EP="${NETNS_IP[b]}:$(netns_exec b "$VEIL_BIN" status --json --state-dir "$SD/b" | jq -r .local_port)"
netns_spawn b iperf iperf3 -s -B "$B4"
netns_wait_tcp_listen b 5201 10

mbps() {
  netns_exec a iperf3 -c "$B4" -t "$SECS" -J 2>/dev/null \
    | jq -r '(.end.sum_received.bits_per_second // 0) / 1e6 | floor'
}
drops() {
  netns_exec b "$VEIL_BIN" status --json --state-dir "$SD/b" | jq -r '.counters.dropped_unauthenticated'
}

CLEAN=$(mbps)
D0=$(drops)
netns_spawn p flood "$PROBE_BIN" --target "$B_EP" --kind random --count $((PPS * (SECS + 2))) --rate "$PPS"
sleep 1
FLOODED=$(mbps)
netns_wait_exit flood 30 >/dev/null || true
SENT=$(tail -n 1 "${NETNS_LOG[flood]}")
D1=$(drops)
RATIO=$(awk -v f="$FLOODED" -v c="$CLEAN" 'BEGIN { printf "%.2f", (c > 0 ? f / c : 0) }')
echo "# garbage flood, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, iperf3 ${SECS}s TCP a -> b, random datagrams at b"
echo "RESULT flood clean_mbps=$CLEAN flooded_mbps=$FLOODED ratio=$RATIO flood_pps=$PPS flood_sent=$SENT b_dropped=$((D1 - D0))"
