#!/usr/bin/env bash
# End-to-end: nodes behind NAT routers built with nftables, a relay on the "internet" between
# them. For each pair of NAT behaviours, two fresh nodes start from the join token only; a ping
# over the overlay opens the session; `veil peers --json` must then show the path the ICE rules
# predict:
#   endpoint-independent mapping on both sides (masquerade)         -> direct within 5 s
#   endpoint-dependent mapping on both sides (masquerade fully-random) -> relayed, with a reason
#   one of each (the other side filters by address and port)        -> relayed
# and traffic flows in every case. For the direct case a 20 MiB TCP transfer is checked with
# sha256 and `veil peers` must name the peer's NAT address as the endpoint.
#
# Needs root. Env: VEIL_BIN (default target/release/veil).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source-path=SCRIPTDIR/../..
# shellcheck source=scripts/lib/netns.sh
source "$ROOT/scripts/lib/netns.sh"

RELAY_PORT=7000
TEST=nat
step() { printf '\n==> %s\n' "$*"; }
ok() { printf '    ok: %s\n' "$*"; }

[ -x "$VEIL_BIN" ] || { echo "FAIL: $VEIL_BIN not found; build it with: cargo build --release -p veil-cli" >&2; exit 1; }
for tool in jq nft socat sha256sum; do
  command -v "$tool" >/dev/null 2>&1 || { echo "FAIL: $tool missing; run scripts/setup.sh" >&2; exit 1; }
done

netns_init
NET=$NETNS_DIR/net
mkdir -p "$NET"

# The LANs behind the routers use the other half of 198.18.0.0/15 than the internet subnet.
case "$NETNS_SUBNET" in
  198.18.*) LANBASE="198.19.${NETNS_SUBNET##*.}" ;;
  *) LANBASE="198.18.${NETNS_SUBNET##*.}" ;;
esac

step "topology: relay, router r1 and r2 on the internet ${NETNS_SUBNET}.0/24; LANs behind r1 and r2"
netns_hub_create
netns_add_host relay
netns_add_host r1
netns_add_host r2
RELAY_EP="${NETNS_IP[relay]}:$RELAY_PORT"

# lan ROUTER NODE OFFSET: node namespace NODE behind ROUTER on $LANBASE.OFFSET/26.
lan() {
  local router=$1 node=$2 off=$3
  netns_attach "$router" "$node" "$LANBASE.$((off + 1))" "$LANBASE.$((off + 2))" 26
  netns_exec "$node" ip route add default via "$LANBASE.$((off + 1))"
  netns_exec "$router" sysctl -qw net.ipv4.ip_forward=1
  NETNS_IP[$node]="$LANBASE.$((off + 2))"
}
lan r1 a 0
lan r2 b 64

# nat ROUTER KIND: source NAT on the router's internet side; conntrack filters inbound
# (address- and port-dependent filtering) in both kinds; unsolicited packets are dropped.
nat() {
  local router=$1 kind=$2 how
  case "$kind" in
    eim) how="masquerade" ;;               # keeps the source port: endpoint-independent mapping
    symmetric) how="masquerade fully-random" ;; # a random port per flow: endpoint-dependent
  esac
  netns_exec "$router" nft -f - <<EOF
table ip veilnat
delete table ip veilnat
table ip veilnat {
  chain vpost { type nat hook postrouting priority srcnat; oifname "eth0" $how; }
  chain vforward {
    type filter hook forward priority filter; policy drop;
    iifname "lan0" accept
    ct state established,related accept
  }
  # Like a home router, drop unsolicited packets to the router itself. (Without this, Linux
  # confirms a conntrack entry for a punch packet that arrives before the local side sent
  # its own, and the clash makes the NAT pick another port for that side's flow.)
  chain vinput {
    type filter hook input priority filter; policy accept;
    iifname "eth0" ct state new udp dport != $RELAY_PORT drop
  }
}
EOF
}

step "network and relay"
"$VEIL_BIN" network create --relay "$RELAY_EP" --out "$NET" >/dev/null 2>&1 \
  || netns_fail "veil network create failed"
netns_spawn relay relay "$VEIL_BIN" relay --listen "$RELAY_EP" \
  --token-file "$NET/relay-1.token" --state-dir "$NETNS_DIR/relay"
netns_wait_relay_ready relay "$NETNS_DIR/relay" relay 20
ok "relay on $RELAY_EP"

peer_json() { netns_exec "$1" "$VEIL_BIN" peers --json --state-dir "$2" | jq -c '.[0] // empty'; }

# run_case N KIND_A KIND_B EXPECT
run_case() {
  local n=$1 ka=$2 kb=$3 expect=$4 sa sb b4 pa path t0 waited
  step "case $n: r1 $ka, r2 $kb -> expect $expect"
  nat r1 "$ka"
  nat r2 "$kb"
  sa=$NETNS_DIR/state-a$n
  sb=$NETNS_DIR/state-b$n
  netns_spawn a "a$n" "$VEIL_BIN" up --token-file "$NET/join.token" --state-dir "$sa"
  netns_spawn b "b$n" "$VEIL_BIN" up --token-file "$NET/join.token" --state-dir "$sb"
  netns_wait_veil_ready a "$sa" "a$n" 30
  netns_wait_veil_ready b "$sb" "b$n" 30
  b4=$(netns_exec b "$VEIL_BIN" status --json --state-dir "$sb" | jq -r .overlay_ipv4)
  netns_wait_for "first ping a -> b" 20 netns_exec a ping -c 1 -W 1 "$b4" \
    || netns_fail "case $n: no ping a -> b ($b4)"
  t0=$SECONDS
  # Keep traffic flowing (path checks run while data flows) and watch the path.
  netns_spawn a "ping$n" ping -i 0.2 -W 1 "$b4"
  path=none
  while [ $((SECONDS - t0)) -lt 8 ]; do
    pa=$(peer_json a "$sa")
    path=$(printf '%s' "$pa" | jq -r '.path // "none"')
    [ "$path" = direct ] && break
    sleep 0.2
  done
  waited=$((SECONDS - t0))
  pa=$(peer_json a "$sa")
  path=$(printf '%s' "$pa" | jq -r .path)
  echo "    a sees b: $pa"
  [ "$path" = "$expect" ] || netns_fail "case $n ($ka/$kb): path is '$path', expected '$expect'"
  if [ "$expect" = direct ]; then
    [ "$waited" -le 5 ] || netns_fail "case $n: direct only after ${waited}s (goal 5 s)"
    endpoint=$(printf '%s' "$pa" | jq -r .endpoint)
    [ "${endpoint%:*}" = "${NETNS_IP[r2]}" ] \
      || netns_fail "case $n: endpoint $endpoint is not b's NAT address ${NETNS_IP[r2]}"
    local src=$NETNS_DIR/send.bin dst=$NETNS_DIR/recv.bin
    dd if=/dev/urandom of="$src" bs=1M count=20 status=none
    netns_spawn b "recv$n" socat -u "TCP-LISTEN:5001,bind=$b4,reuseaddr" "OPEN:$dst,creat,trunc"
    netns_wait_tcp_listen b 5001 10 || netns_fail "receiver did not listen"
    netns_exec a timeout 120 socat -u "OPEN:$src" "TCP:$b4:5001,connect-timeout=10" \
      || netns_fail "case $n: transfer failed"
    netns_wait_exit "recv$n" 30 || netns_fail "case $n: receiver did not finish"
    [ "$(sha256sum <"$src")" = "$(sha256sum <"$dst")" ] || netns_fail "case $n: sha256 differs"
    rm -f "$src" "$dst"
    ok "direct after ${waited}s via ${endpoint}; 20 MiB arrived intact"
  else
    reason=$(printf '%s' "$pa" | jq -r .relay_reason)
    [ -n "$reason" ] && [ "$reason" != null ] || netns_fail "case $n: relayed without a relay_reason"
    out=$(netns_exec a ping -c 5 -i 0.2 -W 2 "$b4" 2>&1) || netns_fail "case $n: relayed ping lost packets: $out"
    ok "relayed ($reason); pings flow"
  fi
  netns_stop "ping$n"
  netns_exec a "$VEIL_BIN" down --state-dir "$sa" >/dev/null
  netns_exec b "$VEIL_BIN" down --state-dir "$sb" >/dev/null
  netns_wait_exit "a$n" 10 >/dev/null || true
  netns_wait_exit "b$n" 10 >/dev/null || true
}

run_case 1 eim eim direct
run_case 2 symmetric symmetric relayed
run_case 3 symmetric eim relayed

printf '\n%s: PASS\n' "$TEST"
