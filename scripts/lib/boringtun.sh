# shellcheck shell=bash
# boringtun (userspace WireGuard) between two namespaces, for the tests and benchmarks that
# compare with it. Source scripts/lib/netns.sh first.
#
#   wg_up C [T]   boringtun on "${C}a" and "${C}b" (100.127.0.1 and .2 on wg0, MTU 1420 as
#                 wg-quick sets it, T threads, default 1), each with the other as its peer at UNDERLAY[host]
#                 port 51820; labels C-wg-a and C-wg-b. Fails if the tunnel does not answer a
#                 ping within 20 s.
#   wg_down C     stops both.
#
# boringtun hard-codes /var/run/wireguard for its control socket: each runs in its own mount
# namespace with a private directory over /run, so runs never meet.

wg_up() {
  local c=$1 threads=${2:-1} n other key pub i
  declare -A PUB=() KEY=()
  for n in a b; do
    KEY[$n]=$(wg genkey)
    PUB[$n]=$(wg pubkey <<<"${KEY[$n]}")
  done
  i=0
  for n in a b; do
    i=$((i + 1))
    other=$([ "$n" = a ] && echo b || echo a)
    key=$NETNS_DIR/$c/wg-$n.key
    mkdir -p "$NETNS_DIR/$c/run-$n"
    printf '%s\n' "${KEY[$n]}" >"$key"
    netns_spawn "$c$n" "$c-wg-$n" unshare -m sh -c "
      mount --bind '$NETNS_DIR/$c/run-$n' /run
      mkdir -p /run/wireguard
      rm -f /run/wireguard/wg0.sock
      WG_SUDO=1 boringtun-cli wg0 --foreground --threads $threads --disable-drop-privileges &
      bt=\$!
      trap 'kill \$bt 2>/dev/null; wait \$bt' TERM INT
      while [ ! -S /run/wireguard/wg0.sock ]; do sleep 0.1; done
      wg set wg0 private-key '$key' listen-port 51820 \
        peer '${PUB[$other]}' endpoint '${UNDERLAY[$c$other]}:51820' allowed-ips 100.127.0.0/24
      ip addr add 100.127.0.$i/24 dev wg0
      ip link set wg0 mtu 1420 up
      wait \$bt"
  done
  netns_wait_for "$c: boringtun up" 20 netns_exec "${c}a" ping -c 1 -W 1 100.127.0.2 \
    || { echo "boringtun: $c: the tunnel did not come up" >&2; return 1; }
}

wg_down() {
  netns_stop "$1-wg-a" 5
  netns_stop "$1-wg-b" 5
}

