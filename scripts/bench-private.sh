#!/usr/bin/env bash
# What privacy costs (`scripts/bench.sh private` runs it): node a sends to node b over the
# raw veth (baseline), then over Veil as a runs direct (default), `--private` (one relay),
# `--private=2` (guard + home relay), and relayed over the TCP fallback (a's UDP dropped):
# one iperf3 TCP stream a -> b for BENCH_SECS (default 10) seconds and the ping RTT of each.
# Then a `--private --cover PPS` node idles for COVER_SECS (default 10) seconds: what cover
# traffic costs on its link. Two relays, h (home) and g (guard), in the same run. Ends with
#   RESULT private MODE_mbps=… MODE_rtt_us=… … cover_pps=… cover_bytes_per_s=…
# Needs root. Not a test: nothing fails on a number.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SECS=${BENCH_SECS:-10}
COVER_PPS=${COVER_PPS:-10}
COVER_SECS=${COVER_SECS:-10}
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
bash scripts/setup.sh >/dev/null
cargo build --release -p veil-cli --quiet
VEIL_BIN="$ROOT/target/release/veil"
# shellcheck source=scripts/lib/netns.sh
source "$ROOT/scripts/lib/netns.sh"
export NETNS_QUIET=1
netns_init
SD=$NETNS_DIR/state
netns_hub_create
for h in h g a b; do netns_add_host "$h"; done
H=${NETNS_IP[h]}
G=${NETNS_IP[g]}
mkdir -p "$NETNS_DIR/net" "$SD"
"$VEIL_BIN" network create --relay "$H:7000" --relay "$G:7000" --out "$NETNS_DIR/net" >/dev/null 2>&1
netns_spawn h relay-h "$VEIL_BIN" relay --listen "$H:7000" --token-file "$NETNS_DIR/net/relay-1.token" --state-dir "$SD/h"
netns_spawn g relay-g "$VEIL_BIN" relay --listen "$G:7000" --token-file "$NETNS_DIR/net/relay-2.token" --state-dir "$SD/g"
netns_wait_relay_ready h "$SD/h" relay-h 20
netns_wait_relay_ready g "$SD/g" relay-g 20
printf 'port_rotation_secs = 0\n' >"$NETNS_DIR/b.toml"
veil_node b --config "$NETNS_DIR/b.toml"
B4=$(veil_ipv4 b)
netns_spawn b iperf-overlay iperf3 -s -B "$B4" -p 5201
netns_spawn b iperf-raw iperf3 -s -B "${NETNS_IP[b]}" -p 5202
netns_wait_tcp_listen b 5201 10
netns_wait_tcp_listen b 5202 10

mbps() { # DEST PORT
  netns_exec a iperf3 -c "$1" -p "$2" -t "$SECS" -J 2>/dev/null \
    | jq -r '(.end.sum_received.bits_per_second // 0) / 1e6 | floor'
}
rtt_us() { # DEST
  netns_exec a ping -c 20 -i 0.05 -W 1 "$1" 2>/dev/null \
    | awk -F'/' '/^rtt/ { printf "%d", $5 * 1000 }'
}
RESULT="RESULT private raw_mbps=$(mbps "${NETNS_IP[b]}" 5202) raw_rtt_us=$(rtt_us "${NETNS_IP[b]}")"

RUN=0
# run MODE FLAGS...: a with FLAGS, warmed up, then measured.
run() {
  local mode=$1 label
  shift
  RUN=$((RUN + 1))
  label="node-a-$mode"
  netns_spawn a "$label" "$VEIL_BIN" up --token-file "$NETNS_DIR/net/join.token" --state-dir "$SD/a" \
    --config "$NETNS_DIR/b.toml" "$@"
  netns_wait_veil_ready a "$SD/a" "$label" 30
  netns_wait_for "ping a -> b ($mode)" 20 netns_exec a ping -c 1 -W 1 "$B4"
  # Let the path settle (direct paths, path MTU discovery) before measuring.
  netns_exec a ping -c 10 -i 0.2 "$B4" >/dev/null 2>&1 || true
  local path
  path=$(netns_exec a "$VEIL_BIN" peers --json --state-dir "$SD/a" | jq -r --arg b "$B4" '.[] | select(.overlay_ipv4 == $b) | .path')
  RESULT="$RESULT ${mode}_path=$path ${mode}_mbps=$(mbps "$B4" 5201) ${mode}_rtt_us=$(rtt_us "$B4")"
  netns_stop "$label" 5
}
run direct
run private1 --private
run private2 --private=2
netns_exec a nft -f - <<'EOF'
table inet noudp {
  chain in { type filter hook input priority filter; iifname "eth0" meta l4proto udp drop; }
  chain out { type filter hook output priority filter; oifname "eth0" meta l4proto udp drop; }
}
EOF
run tcp
netns_exec a nft delete table inet noudp

# Cover traffic: an idle node's link, COVER_SECS seconds.
label=node-a-cover
netns_spawn a "$label" "$VEIL_BIN" up --token-file "$NETNS_DIR/net/join.token" --state-dir "$SD/a" \
  --config "$NETNS_DIR/b.toml" --private --cover "$COVER_PPS"
netns_wait_veil_ready a "$SD/a" "$label" 30
sleep 12 # past the path checks of the join
netns_exec a timeout "$COVER_SECS" tcpdump -i eth0 -n -U -w "$NETNS_DIR/cover.pcap" udp >/dev/null 2>&1 || true
# Rates over the span between the first and the last datagram captured (tcpdump starts late).
read -r N SPAN BYTES < <(tcpdump -r "$NETNS_DIR/cover.pcap" -n -tt -v 2>/dev/null \
  | grep -o '^[0-9.]* IP .*proto UDP (17), length [0-9]*' \
  | awk 'NR == 1 { t0 = $1 } { t1 = $1; n++; s += $NF } END { printf "%d %.3f %d\n", n, t1 - t0, s }')
netns_stop "$label" 5
echo "# private mode and cover traffic, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, iperf3 ${SECS}s TCP a -> b"
echo "$RESULT cover_pps=$COVER_PPS $(awk -v n="$N" -v t="$SPAN" -v b="$BYTES" 'BEGIN { printf "cover_datagrams_per_s=%.1f cover_bytes_per_s=%d", (n - 1) / t, b / t }')"
