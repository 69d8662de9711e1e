#!/usr/bin/env bash
# End-to-end: what an observer of node a's link sees, measured with veil-capture
# (tests/capture) on tcpdump captures of a whole Veil session — join, lookups, hybrid
# handshakes, re-keys every 5 s, a direct peer (b) and a relayed one (c, --no-direct), data,
# path MTU discovery, keepalives:
#   * no byte offset among the first 64 of the UDP payloads has one value in more than 2% of
#     the datagrams;
#   * no public key (a's, b's, c's, the relay's), the network secret, the network's IPv6
#     prefix or an overlay IPv6 address occurs in any datagram; no overlay IPv4 address in
#     the datagrams of the join (which carry no user data);
#   * every datagram size is a multiple of the 64-byte padding bucket, the 1200-byte base or
#     a path's ceiling (padding is capped at the path's MTU, which path MTU discovery finds
#     among those sizes, probes included): no exception.
# Then the same analysis of a boringtun session between two namespaces must find
# WireGuard's fixed bytes (type byte and zeros) and its 148/92-byte handshakes: the test can
# fail, and shows what Veil hides.
#
# Needs root. Env: VEIL_BIN (default target/release/veil), CAPTURE_BIN (default
# target/release/veil-capture).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source-path=SCRIPTDIR/../..
# shellcheck source=scripts/lib/netns.sh
source "$ROOT/scripts/lib/netns.sh"
# shellcheck source=scripts/lib/boringtun.sh
source "$ROOT/scripts/lib/boringtun.sh"
CAPTURE_BIN=${CAPTURE_BIN:-$ROOT/target/release/veil-capture}
TEST=capture
ok() { printf '    ok: %s\n' "$*"; }
[ -x "$VEIL_BIN" ] || { echo "FAIL: $VEIL_BIN not found" >&2; exit 1; }
[ -x "$CAPTURE_BIN" ] || { echo "FAIL: $CAPTURE_BIN not found (cargo build --release -p veil-capture)" >&2; exit 1; }
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
for tool in tcpdump jq python3 wg boringtun-cli iperf3; do
  command -v "$tool" >/dev/null 2>&1 || { echo "FAIL: $tool missing; run scripts/setup.sh" >&2; exit 1; }
done

netns_init
SD=$NETNS_DIR/state
veil_network a b c
# Captures see the datagrams a wire carries, not the kernel's 64 KB runs of them.
netns_wire_segments relay a b c
A_IP=${NETNS_IP[a]}

# capture LABEL FILE: tcpdump of every UDP datagram on a's link.
capture() {
  netns_spawn a "$1" tcpdump -i eth0 -n -U -s 0 -w "$2" udp
  sleep 1
}

capture cap-join "$NETNS_DIR/join.pcap"
capture cap-all "$NETNS_DIR/all.pcap"
printf 'rekey_after_secs = 5\n' >"$NETNS_DIR/a.toml"
veil_node a --config "$NETNS_DIR/a.toml"
veil_node b
veil_node c --no-direct
sleep 2
netns_stop cap-join 3
B4=$(veil_ipv4 b)
C4=$(veil_ipv4 c)
netns_wait_for "ping a -> b" 20 netns_exec a ping -c 1 -W 1 "$B4" || netns_fail "no ping a -> b"
netns_wait_for "ping a -> c" 20 netns_exec a ping -c 1 -W 1 "$C4" || netns_fail "no ping a -> c"
sleep 2
capture cap-steady "$NETNS_DIR/steady.pcap"
# Data both ways and on both paths, across several re-keys.
netns_spawn b iperf-b iperf3 -s -B "$B4"
netns_spawn c iperf-c iperf3 -s -B "$C4"
netns_wait_tcp_listen b 5201 10
netns_wait_tcp_listen c 5201 10
netns_exec a iperf3 -c "$B4" -t 4 -b 40M >/dev/null || netns_fail "iperf3 to b failed"
netns_exec a iperf3 -c "$C4" -t 4 -b 40M -R >/dev/null || netns_fail "iperf3 from c failed"
netns_exec a ping -c 40 -i 0.25 -s 600 "$B4" >/dev/null || netns_fail "pings to b failed"
netns_exec a ping -c 20 -i 0.25 "$C4" >/dev/null || netns_fail "pings to c failed"
netns_stop cap-steady 3
netns_stop cap-all 3
REKEYS=$(netns_exec a "$VEIL_BIN" status --json --state-dir "$SD/a" | jq -r .counters.rekeys)
[ "$REKEYS" -ge 2 ] || netns_fail "only $REKEYS re-keys during the capture"
PATHS=$(netns_exec a "$VEIL_BIN" peers --json --state-dir "$SD/a" | jq -r '[.[].path] | sort | join(",")')
[ "$PATHS" = "direct,relayed" ] || netns_fail "paths during the capture: $PATHS (want one direct, one relayed)"
ok "session captured: join, 2 peers ($PATHS), $REKEYS re-keys, iperf3 both ways"

# The needles: keys, the secret, addresses.
hexof() { python3 -c 'import ipaddress,sys; print(ipaddress.ip_address(sys.argv[1]).packed.hex())' "$1"; }
key() { netns_exec "$1" "$VEIL_BIN" key --state-dir "$SD/$1"; }
TOKEN_NEEDLES=$(python3 - "$NETNS_DIR/net/join.token" <<'EOF'
import base64, sys
t = open(sys.argv[1]).read().strip()
raw = base64.urlsafe_b64decode(t[len("veil1."):] + "=" * (-len(t[len("veil1."):]) % 4))
body = raw[:-4]
secret, n = body[1:33], body[33]
print("secret=" + secret.hex())
print("relay_key=" + body[34:66].hex())
EOF
)
NEEDLES=()
for n in a b c; do
  NEEDLES+=(--needle "key_$n=$(key "$n")")
  NEEDLES+=(--needle "ipv6_$n=$(hexof "$(netns_exec "$n" "$VEIL_BIN" status --json --state-dir "$SD/$n" | jq -r .overlay_ipv6)")")
done
V6A=$(netns_exec a "$VEIL_BIN" status --json --state-dir "$SD/a" | jq -r .overlay_ipv6)
NEEDLES+=(--needle "ula_prefix=$(hexof "$V6A" | cut -c1-12)")
while read -r line; do NEEDLES+=(--needle "$line"); done <<<"$TOKEN_NEEDLES"

ALL=$("$CAPTURE_BIN" "$NETNS_DIR/all.pcap" --host "$A_IP" "${NEEDLES[@]}")
N=$(jq -r .datagrams <<<"$ALL")
[ "$N" -ge 2000 ] || netns_fail "only $N datagrams captured"
WORST=$(jq -c .worst <<<"$ALL")
awk -v s="$(jq -r .worst.share <<<"$ALL")" 'BEGIN { exit !(s <= 0.02) }' \
  || netns_fail "a byte offset is concentrated: $WORST"
FOUND=$(jq -c '.found | to_entries | map(select(.value > 0))' <<<"$ALL")
[ "$FOUND" = "[]" ] || netns_fail "known bytes on the wire: $FOUND"
ok "$N datagrams: most concentrated offset $(jq -r '.worst.offset' <<<"$ALL") at $(jq -r '.worst.share * 100 | . * 100 | round / 100' <<<"$ALL")% (≤ 2%); none of $(jq -r '.found | length' <<<"$ALL") keys, secrets or addresses occur"

V4NEEDLES=()
for n in a b c; do V4NEEDLES+=(--needle "ipv4_$n=$(hexof "$(veil_ipv4 "$n")")"); done
JOIN=$("$CAPTURE_BIN" "$NETNS_DIR/join.pcap" --host "$A_IP" "${V4NEEDLES[@]}")
FOUND=$(jq -c '.found | to_entries | map(select(.value > 0))' <<<"$JOIN")
[ "$FOUND" = "[]" ] || netns_fail "an overlay IPv4 in the join: $FOUND"
ok "join ($(jq -r .datagrams <<<"$JOIN") datagrams): no overlay IPv4 address"

# Sizes: multiples of 64, the 1200-byte base (what every path is assumed to carry before
# discovery) or a path's ceiling (TUN MTU 1400 + 35 direct, + 78 relayed): path MTU
# discovery probes only those sizes, so there is no exception, probes included.
ALLOWED="1200,1435,1478"
PROBES=0
for n in a b c; do
  PROBES=$((PROBES + $(netns_exec "$n" "$VEIL_BIN" status --json --state-dir "$SD/$n" | jq -r .counters.pmtu_probes_sent)))
done
STEADY=$("$CAPTURE_BIN" "$NETNS_DIR/steady.pcap" --host "$A_IP")
ODD=$(jq -r --argjson ok "[${ALLOWED}]" \
  '[.sizes | to_entries[] | select((.key | tonumber) % 64 != 0 and ((.key | tonumber) as $s | $ok | index($s) | not)) | .value] | add // 0' <<<"$STEADY")
[ "$ODD" = 0 ] || netns_fail "$ODD datagrams of sizes outside the buckets: $(jq -c .sizes <<<"$STEADY")"
[ "$PROBES" -gt 0 ] || netns_fail "no path MTU probe was sent: the check above saw none"
ok "traffic ($(jq -r .datagrams <<<"$STEADY") datagrams, $PROBES path MTU probes among them): every size is a multiple of 64, 1200 or a path ceiling ($ALLOWED)"

# boringtun, for contrast: two more namespaces, a handshake and a little traffic.
netns_add_host wga
netns_add_host wgb
declare -A UNDERLAY=([wga]=${NETNS_IP[wga]} [wgb]=${NETNS_IP[wgb]})
netns_spawn wga cap-wg tcpdump -i eth0 -n -U -s 0 -w "$NETNS_DIR/wg.pcap" udp
sleep 1
mkdir -p "$NETNS_DIR/wg"
wg_up wg || netns_fail "boringtun did not come up"
netns_exec wga ping -c 50 -i 0.05 -s 600 100.127.0.2 >/dev/null || netns_fail "boringtun ping failed"
netns_stop cap-wg 3
wg_down wg
WG=$("$CAPTURE_BIN" "$NETNS_DIR/wg.pcap" --host "${NETNS_IP[wga]}" --min-samples 50)
WG_SHARE=$(jq -r .worst.share <<<"$WG")
awk -v s="$WG_SHARE" 'BEGIN { exit !(s >= 0.9) }' \
  || netns_fail "the analyser did not find WireGuard's fixed bytes: $(jq -c .worst <<<"$WG")"
[ "$(jq -r '.sizes["148"] // 0' <<<"$WG")" -ge 1 ] || netns_fail "no 148-byte WireGuard handshake initiation seen"
ok "boringtun ($(jq -r .datagrams <<<"$WG") datagrams): offset $(jq -r .worst.offset <<<"$WG") is $(jq -r .worst.value <<<"$WG") in $(jq -r '.worst.share * 100 | round' <<<"$WG")% of datagrams; a 148-byte handshake"
printf '\n%s: PASS (worst offset %s%%, boringtun %s%%)\n' "$TEST" \
  "$(jq -r '.worst.share * 100 | . * 100 | round / 100' <<<"$ALL")" "$(jq -r '.worst.share * 100 | round' <<<"$WG")"
