#!/usr/bin/env bash
# The MTU benchmark (`scripts/bench.sh mtu` runs it): TCP throughput through Veil and through
# boringtun (userspace WireGuard, MTU 1420 as wg-quick sets it) over paths smaller than
# Ethernet, built by scripts/lib/mtu_topo.sh:
#   link1280   every link 1280 bytes
#   vxlan      nested in VXLAN (1450)
#   open1280   a router with a 1280-byte hop that sends ICMP and forwards fragments
#   blackhole  the same hop, ICMP "fragmentation needed" and IP fragments dropped
#   shrink     1500 until the middle of the run, then the hop shrinks to 1280
# Each: one iperf3 TCP stream a -> b for BENCH_SECS (default 8) seconds. For shrink, also
# Veil's recovery (longest stall of a paced transfer across the change). Ends with one line
# per case: `RESULT mtu_CASE veil_mbps=… boringtun_mbps=…`.
#
# Needs root. Installs what it needs (wireguard-tools, iperf3 from apt; boringtun-cli with
# cargo) when missing. Not a test: nothing fails on a number.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SECS=${BENCH_SECS:-8}
CASES=("$@")
[ "${#CASES[@]}" -gt 0 ] || CASES=(link1280 vxlan open1280 blackhole shrink)

if ! command -v cargo >/dev/null 2>&1 && [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]; then
  export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
for pkg in wireguard-tools iperf3; do
  dpkg -s "$pkg" >/dev/null 2>&1 || {
    echo "bench-mtu: installing $pkg" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$pkg" >/dev/null
  }
done
command -v boringtun-cli >/dev/null 2>&1 || {
  echo "bench-mtu: installing boringtun-cli (cargo install, a few minutes)" >&2
  cargo install boringtun-cli --locked >/dev/null 2>&1
}
cargo build --release -p veil-cli --quiet
VEIL_BIN="$ROOT/target/release/veil"
PACED="$ROOT/tests/e2e/lib/paced_tcp.py"
# shellcheck source=scripts/lib/netns.sh
source "$ROOT/scripts/lib/netns.sh"
# shellcheck source=scripts/lib/mtu_topo.sh
source "$ROOT/scripts/lib/mtu_topo.sh"
# shellcheck source=scripts/lib/boringtun.sh
source "$ROOT/scripts/lib/boringtun.sh"
export NETNS_QUIET=1
netns_init
netns_hub_create
mtu_topo_init

# iperf C A DST [SECS]: Mbit/s of one TCP stream from A to DST (an iperf3 server must run
# there); 0 when the connection stalls.
iperf() {
  local c=$1 a=$2 dst=$3 secs=${4:-$SECS} out
  out=$(timeout $((secs + 20)) ip netns exec "$(netns_name "$a")" \
    iperf3 -c "$dst" -t "$secs" -J --connect-timeout 5000 2>/dev/null || true)
  jq -r '(.end.sum_received.bits_per_second // 0) / 1e6 | floor' <<<"$out" 2>/dev/null || echo 0
}

# veil_up C: relay and nodes of C; prints b's overlay IPv4.
veil_up() {
  local c=$1 addr
  addr=${UNDERLAY[${c}rl]}
  mkdir -p "$NETNS_DIR/$c/state"
  "$VEIL_BIN" network create --relay "$addr:7000" --out "$NETNS_DIR/$c/net" >/dev/null 2>&1
  netns_spawn "${c}rl" "$c-relay" "$VEIL_BIN" relay --listen "$addr:7000" \
    --token-file "$NETNS_DIR/$c/net/relay-1.token" --state-dir "$NETNS_DIR/$c/state/relay"
  netns_wait_relay_ready "${c}rl" "$NETNS_DIR/$c/state/relay" "$c-relay" 20
  for n in a b; do
    netns_spawn "$c$n" "$c-veil-$n" "$VEIL_BIN" up --token-file "$NETNS_DIR/$c/net/join.token" \
      --state-dir "$NETNS_DIR/$c/state/$n" --tun veil0
    netns_wait_veil_ready "$c$n" "$NETNS_DIR/$c/state/$n" "$c-veil-$n" 30
  done
  netns_exec "${c}b" "$VEIL_BIN" status --json --state-dir "$NETNS_DIR/$c/state/b" | jq -r .overlay_ipv4
}

veil_down() {
  local c=$1
  netns_stop "$c-veil-a" 5
  netns_stop "$c-veil-b" 5
  netns_stop "$c-relay" 5
}

# measure C: Veil then boringtun on topology C (already built); prints the RESULT line.
measure() {
  local c=$1 dst veil bt
  dst=$(veil_up "$c")
  netns_spawn "${c}b" "$c-iperf" iperf3 -s -B "$dst"
  netns_wait_tcp_listen "${c}b" 5201 10
  netns_exec "${c}a" ping -c 2 -W 2 "$dst" >/dev/null 2>&1 || true
  veil=$(iperf "$c" "${c}a" "$dst")
  PMTU=$(netns_exec "${c}a" "$VEIL_BIN" peers --json --state-dir "$NETNS_DIR/$c/state/a" | jq -r '.[0].pmtu')
  netns_stop "$c-iperf" 3
  veil_down "$c"
  if wg_up "$c"; then
    netns_spawn "${c}b" "$c-iperf-wg" iperf3 -s -B 100.127.0.2
    netns_wait_tcp_listen "${c}b" 5201 10
    bt=$(iperf "$c" "${c}a" 100.127.0.2)
    netns_stop "$c-iperf-wg" 3
    wg_down "$c"
  else
    bt=0
  fi
  echo "RESULT mtu_$c veil_mbps=$veil boringtun_mbps=$bt veil_pmtu=$PMTU"
}

case_link1280() { topo_flat l1 1280; measure l1; }
case_vxlan() { topo_vxlan vx; measure vx; }
case_open1280() { topo_router op 16 open; measure op; }
case_blackhole() { topo_router bh 24 blackhole; measure bh; }

case_shrink() {
  topo_router sh 32 full
  local dst report gap veil bt
  dst=$(veil_up sh)
  # Recovery: a paced transfer across the shrink; its longest stall.
  report=$NETNS_DIR/sh/paced.json
  netns_spawn shb sh-recv python3 "$PACED" recv "$dst" 5001 "$report"
  netns_wait_tcp_listen shb 5001 10
  netns_spawn sha sh-send python3 "$PACED" send "$dst" 5001 10 4000000
  sleep 5
  router_shrink sh
  netns_wait_exit sh-send 60 >/dev/null || true
  netns_wait_exit sh-recv 30 >/dev/null || true
  gap=$(jq -r .longest_gap_s "$report" 2>/dev/null || echo nan)
  # Throughput after the shrink.
  netns_spawn shb sh-iperf iperf3 -s -B "$dst"
  netns_wait_tcp_listen shb 5201 10
  veil=$(iperf sh sha "$dst")
  netns_stop sh-iperf 3
  veil_down sh
  # boringtun on the same path, now 1280: a fresh start is its best case.
  netns_exec shr ip link set lan0 mtu 1500
  wg_up sh || true
  netns_spawn shb sh-iperf-wg iperf3 -s -B 100.127.0.2
  netns_wait_tcp_listen shb 5201 10
  netns_spawn sha sh-wg-load iperf3 -c 100.127.0.2 -t $((SECS + 6)) -J
  sleep 3
  router_shrink sh
  netns_wait_exit sh-wg-load $((SECS + 30)) >/dev/null || true
  bt=$(jq -r '(.end.sum_received.bits_per_second // 0) / 1e6 | floor' "${NETNS_LOG[sh-wg-load]}" 2>/dev/null || echo 0)
  netns_stop sh-iperf-wg 3
  wg_down sh
  echo "RESULT mtu_shrink veil_recovery_s=$gap veil_mbps_after=$veil boringtun_mbps_across=$bt"
}

echo "# MTU benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, iperf3 ${SECS}s TCP, boringtun -t 1, MTU 1420"
for c in "${CASES[@]}"; do
  "case_$c"
done
