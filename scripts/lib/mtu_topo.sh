# shellcheck shell=bash
# Topologies with paths smaller than Ethernet, shared by tests/e2e/mtu.sh and
# scripts/bench-mtu.sh. Source scripts/lib/netns.sh first, call netns_init and
# netns_hub_create, then one function per topology. Each makes three hosts, C-relay host
# "${C}rl", "${C}a" and "${C}b", and sets UNDERLAY[host] to the address tunnels must use.
#
#   topo_flat C MTU           all three on the hub, every link (and hub port) at MTU
#   topo_vxlan C              all three on the hub, joined by VXLAN (MTU 1450) over eth0;
#                             UDP on eth0 other than VXLAN's is dropped, so tunnels nest
#   topo_router C OFF MODE    a behind router "${C}r" (LAN $LANBASE.OFF/29), relay and b on the
#                             hub; the router forwards at most 1280 bytes either way unless
#                             MODE is "full"; MODE "blackhole" also drops the router's ICMP
#                             "fragmentation needed" and every IP fragment it forwards
#   topo_v6 C                 all three on the hub with IPv6 only (V6NET::/64), links 1280;
#                             IPv4 UDP on eth0 dropped
#   router_shrink C           the router's link to a drops to 1280 (`ip link set … mtu`; MODE
#                             "full" before): larger datagrams from a vanish at its ingress,
#                             those to a get "fragmentation needed"
#
#   mtu_topo_init             after netns_init: sets LANBASE (the other half of 198.18.0.0/15
#                             than the hub's subnet, "198.1X.Y") and V6NET (a random /64 of
#                             fd00:198:18::/48, without "::/64")

declare -A UNDERLAY=()

mtu_topo_init() {
  case "$NETNS_SUBNET" in
    198.18.*) LANBASE="198.19.${NETNS_SUBNET##*.}" ;;
    *) LANBASE="198.18.${NETNS_SUBNET##*.}" ;;
  esac
  V6NET="fd00:198:18:$(printf '%x' $((RANDOM % 65536)))"
}

_hub_ports_mtu() {
  local hub port mtu=$1
  hub=$(netns_name hub)
  for port in $(ip -n "$hub" -o link show master "$NETNS_BRIDGE" | awk -F': ' '{print $2}' | cut -d@ -f1); do
    ip -n "$hub" link set "$port" mtu "$mtu" 2>/dev/null || true
  done
}

topo_flat() {
  local c=$1 mtu=$2 h
  for h in "${c}rl" "${c}a" "${c}b"; do
    netns_add_host "$h"
    netns_exec "$h" ip link set eth0 mtu "$mtu"
    UNDERLAY[$h]=${NETNS_IP[$h]}
  done
  _hub_ports_mtu "$mtu"
}

topo_vxlan() {
  local c=$1 h o i=0
  for h in "${c}rl" "${c}a" "${c}b"; do netns_add_host "$h"; done
  for h in "${c}rl" "${c}a" "${c}b"; do
    i=$((i + 1))
    netns_exec "$h" ip link add vxlan0 type vxlan id 42 dstport 4789 dev eth0 local "${NETNS_IP[$h]}"
    netns_exec "$h" ip addr add "$LANBASE.$((64 + i))/28" dev vxlan0
    netns_exec "$h" ip link set vxlan0 up
    UNDERLAY[$h]="$LANBASE.$((64 + i))"
  done
  for h in "${c}rl" "${c}a" "${c}b"; do
    for o in "${c}rl" "${c}a" "${c}b"; do
      [ "$h" = "$o" ] || netns_exec "$h" bridge fdb append 00:00:00:00:00:00 dev vxlan0 dst "${NETNS_IP[$o]}"
    done
    netns_exec "$h" nft -f - <<EOF
table inet onlyvx {
  chain in { type filter hook input priority filter; iifname "eth0" udp dport != 4789 drop; }
}
EOF
  done
}

topo_router() {
  local c=$1 off=$2 mode=$3 r=${1}r a=${1}a rns ans h
  netns_add_host "${c}rl"
  netns_add_host "${c}b"
  netns_add_host "$r"
  netns_create "$a"
  rns=$(netns_name "$r")
  ans=$(netns_name "$a")
  ip -n "$rns" link add lan0 type veth peer name eth0 netns "$ans"
  ip -n "$rns" addr add "$LANBASE.$((off + 1))/29" dev lan0
  ip -n "$rns" link set lan0 up
  ip -n "$ans" addr add "$LANBASE.$((off + 2))/29" dev eth0
  ip -n "$ans" link set eth0 up
  ip -n "$ans" route add default via "$LANBASE.$((off + 1))"
  ip netns exec "$rns" sysctl -qw net.ipv4.ip_forward=1
  for h in "${c}rl" "${c}b"; do
    netns_exec "$h" ip route add "$LANBASE.$off/29" via "${NETNS_IP[$r]}"
    UNDERLAY[$h]=${NETNS_IP[$h]}
  done
  UNDERLAY[$a]="$LANBASE.$((off + 2))"
  # The small hop is inside the path, invisible to a's and b's sockets: every link stays at
  # 1500 and the router forwards at most 1280 bytes either way (route MTUs), answering DF
  # packets above that with ICMP "fragmentation needed" and fragmenting the others, as a
  # router does.
  if [ "$mode" != full ]; then
    ip -n "$rns" route replace "$LANBASE.$off/29" dev lan0 mtu lock 1280
    ip -n "$rns" route replace "$NETNS_SUBNET.0/24" dev eth0 mtu lock 1280
  fi
  if [ "$mode" = blackhole ]; then
    netns_exec "$r" nft -f - <<EOF
table ip blackhole {
  chain noicmp { type filter hook output priority filter; icmp type destination-unreachable drop; }
  chain nofrag { type filter hook forward priority filter; ip frag-off & 0x3fff != 0 drop; }
}
EOF
  fi
}

router_shrink() {
  # a veth checks the size of what it receives only for unsegmented packets: a UDP GSO
  # batch from a would cross the 1280-byte lan0 whole and be cut into 1435-byte datagrams
  # behind it. A wire cuts batches before the link (a NIC segments them), so a's link does
  # too here (`gso_max_segs 1`, as tests/e2e/capture.sh does): every datagram meets the MTU.
  netns_exec "${1}a" ip link set eth0 gso_max_segs 1
  netns_exec "${1}r" ip link set lan0 mtu 1280
}

topo_v6() {
  local c=$1 h i=0
  ip netns exec "$(netns_name hub)" sysctl -qw net.ipv6.conf.all.disable_ipv6=0 >/dev/null 2>&1 || true
  for h in "${c}rl" "${c}a" "${c}b"; do netns_add_host "$h"; done
  for h in "${c}rl" "${c}a" "${c}b"; do
    i=$((i + 1))
    netns_exec "$h" sysctl -qw net.ipv6.conf.all.disable_ipv6=0
    netns_exec "$h" ip link set eth0 mtu 1280
    netns_exec "$h" ip addr add "$V6NET::$i/64" dev eth0 nodad
    UNDERLAY[$h]="$V6NET::$i"
    netns_exec "$h" nft -f - <<EOF
table ip nov4 {
  chain in { type filter hook input priority filter; iifname "eth0" udp dport 1-65535 drop; }
}
EOF
  done
  _hub_ports_mtu 1280
}
