#!/usr/bin/env bash
# Measures Veil and prints the figures docs/benchmarks.md quotes, with their baselines from the
# same run. Not a test: nothing here passes or fails on a number.
#
#   scripts/bench.sh            criterion (crypto, handshake, a batch on helper threads),
#                               rendezvous at 10k nodes, and
#                               namespace throughput / first-packet latency
#   scripts/bench.sh --full     also the rendezvous at 100,000 nodes (about 2 minutes, 600 MB)
#   scripts/bench.sh --net      only the namespace measurements
#   scripts/bench.sh mtu [CASE...]  the MTU benchmark against boringtun (scripts/bench-mtu.sh)
#   scripts/bench.sh flood      throughput under a garbage flood (scripts/bench-flood.sh)
#   scripts/bench.sh net [tcp1|tcp4|udp|udprate|rtt...]  raw veth vs Veil vs boringtun (scripts/bench-net.sh)
#   scripts/bench.sh private    direct vs private one/two hops vs TCP fallback, cover traffic
#                               overhead (scripts/bench-private.sh)
#   scripts/bench.sh crit [--save]  criterion medians vs the committed docs/perf-baseline.tsv
#                               (scripts/bench-crit.sh)
#   scripts/bench.sh cluster [N...]  the shared rendezvous (memory and NATS) at N nodes
#                               (scripts/bench-cluster.sh; default 100,000)
#
# Needs root for the namespace part. SIZE_MIB (default 500) sets the transfer size.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
FULL=0
ONLY_NET=0
case "${1:-}" in
  mtu) shift; exec bash "$ROOT/scripts/bench-mtu.sh" "$@" ;;
  flood) shift; exec bash "$ROOT/scripts/bench-flood.sh" "$@" ;;
  net) shift; exec bash "$ROOT/scripts/bench-net.sh" "$@" ;;
  private) shift; exec bash "$ROOT/scripts/bench-private.sh" "$@" ;;
  crit) shift; exec bash "$ROOT/scripts/bench-crit.sh" "$@" ;;
  cluster) shift; exec bash "$ROOT/scripts/bench-cluster.sh" "$@" ;;
esac
for a in "$@"; do
  case "$a" in
    --full) FULL=1 ;;
    --net) ONLY_NET=1 ;;
    -h | --help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $a (try --help)" >&2; exit 2 ;;
  esac
done
SIZE_MIB=${SIZE_MIB:-500}

bash scripts/setup.sh >/dev/null
if ! command -v cargo >/dev/null 2>&1 && [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]; then
  export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi
echo "# Veil benchmarks, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(uname -r)"

if [ "$ONLY_NET" = 0 ]; then
  echo
  echo "## criterion: per-packet crypto and handshake"
  cargo bench -p veil-proto --bench datapath -- --warm-up-time 1 --measurement-time 3 2>/dev/null \
    | grep -E '^[a-z_]+/|time:|thrpt:' || true
  echo
  echo "## criterion: the AEAD of a batch alone and shared with a helper thread (crypto_threads)"
  cargo bench -p veil-io --bench batch -- --warm-up-time 1 --measurement-time 3 2>/dev/null \
    | grep -E '^[a-z_]+/|time:|thrpt:' || true
  echo
  echo "## rendezvous"
  if [ "$FULL" = 1 ]; then sizes=(10000 100000); else sizes=(10000); fi
  cargo bench -p veil-sim --bench rendezvous -- "${sizes[@]}" 2>/dev/null | grep '^nodes' || true
fi

echo
echo "## namespaces: one TCP stream of $SIZE_MIB MiB, and the first packet to a new peer"
cargo build --release -p veil-cli --quiet
VEIL_BIN="$ROOT/target/release/veil"
# shellcheck source=scripts/lib/netns.sh
source "$ROOT/scripts/lib/netns.sh"
export NETNS_QUIET=1
netns_init
NET=$NETNS_DIR/net
mkdir -p "$NET"
netns_hub_create
netns_add_host relay
netns_add_host a
netns_add_host b
RELAY_EP="${NETNS_IP[relay]}:7000"
"$VEIL_BIN" network create --relay "$RELAY_EP" --out "$NET" >/dev/null 2>&1
netns_spawn relay relay "$VEIL_BIN" relay --listen "$RELAY_EP" --token-file "$NET/relay-1.token" \
  --state-dir "$NETNS_DIR/relay"
netns_wait_relay_ready relay "$NETNS_DIR/relay" relay 20
SRC=$NETNS_DIR/payload.bin
dd if=/dev/urandom of="$SRC" bs=1M count="$SIZE_MIB" status=none

# transfer LABEL DEST_IP: prints MB/s of one socat TCP stream a -> b.
transfer() {
  local label=$1 dst=$2 t0 t1
  netns_spawn b "recv-$label" socat -u "TCP-LISTEN:5001,bind=$dst,reuseaddr" "OPEN:/dev/null"
  netns_wait_tcp_listen b 5001 10
  t0=$(date +%s.%N)
  netns_exec a socat -u "OPEN:$SRC" "TCP:$dst:5001,connect-timeout=10"
  netns_wait_exit "recv-$label" 60 >/dev/null || true
  t1=$(date +%s.%N)
  awk -v b="$((SIZE_MIB * 1048576))" -v t0="$t0" -v t1="$t1" 'BEGIN { printf "%.1f", b / (t1 - t0) / 1e6 }'
}

RAW=$(transfer raw "${NETNS_IP[b]}")
printf '| path | MB/s | vs raw veth | first ping (lookup + handshake + reply) | time to direct |\n'
printf '|---|---|---|---|---|\n'
printf '| raw veth (no overlay), baseline | %s | 1.00 | - | - |\n' "$RAW"

for mode in direct relayed; do
  extra=()
  [ "$mode" = relayed ] && extra=(--no-direct)
  for n in a b; do
    netns_spawn "$n" "$n-$mode" "$VEIL_BIN" up --token-file "$NET/join.token" \
      --state-dir "$NETNS_DIR/$n-$mode" "${extra[@]}"
  done
  netns_wait_veil_ready a "$NETNS_DIR/a-$mode" "a-$mode" 30
  netns_wait_veil_ready b "$NETNS_DIR/b-$mode" "b-$mode" 30
  B4=$(netns_exec b "$VEIL_BIN" status --json --state-dir "$NETNS_DIR/b-$mode" | jq -r .overlay_ipv4)
  first=$(netns_exec a ping -c 1 -W 3 "$B4" | sed -n 's/.*time=\([0-9.]*\) ms.*/\1 ms/p')
  direct=-
  if [ "$mode" = direct ]; then
    t0=$(date +%s.%N)
    while :; do
      p=$(netns_exec a "$VEIL_BIN" peers --json --state-dir "$NETNS_DIR/a-$mode" | jq -r '.[0].path')
      [ "$p" = direct ] && break
      netns_exec a ping -c 1 -W 1 "$B4" >/dev/null || true
    done
    direct=$(awk -v t0="$t0" -v t1="$(date +%s.%N)" 'BEGIN { printf "< %.0f ms", (t1 - t0) * 1000 }')
  fi
  mbs=$(transfer "$mode" "$B4")
  ratio=$(awk -v a="$mbs" -v b="$RAW" 'BEGIN { printf "%.2f", a / b }')
  printf '| overlay, %s | %s | %s | %s | %s |\n' "$mode" "$mbs" "$ratio" "${first:-?}" "$direct"
  for n in a b; do
    netns_exec "$n" "$VEIL_BIN" down --state-dir "$NETNS_DIR/$n-$mode" >/dev/null 2>&1 || true
    netns_wait_exit "$n-$mode" 10 >/dev/null || true
  done
done
rm -f "$SRC"
