#!/usr/bin/env bash
# End-to-end: one relay and two nodes, each in its own network namespace on a shared bridge,
# started from the real `veil` binary with nothing but the tokens.
#
# Checks: both nodes get overlay addresses; IPv4 and IPv6 ping both ways over the overlay; a
# TCP transfer A->B (100 MiB, 1 GiB with FULL=1) arrives with the same sha256, and its speed is
# printed; `veil peers --json` on A shows B direct (same bridge); the status/peers JSON follows the CLI
# contract; the relay counts 2 clients; no node's state dir names the other node; `veil down`
# stops a node. Both nodes run with one crypto helper thread (`crypto_threads = 1`; auto
# gives none on two cores), so the transfer also checks the AEAD shared across threads:
# sealed by jobs on a, opened by jobs on b.
#
# Needs root. Env: VEIL_BIN (default target/release/veil), FULL=1 for the long variant,
# EXPECT_PATH (default direct: the nodes share a bridge), VEIL_KEEP=1 to keep the scratch dir.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source-path=SCRIPTDIR/../..
# shellcheck source=scripts/lib/netns.sh
source "$ROOT/scripts/lib/netns.sh"
CHECK_JSON="$ROOT/tests/e2e/lib/check_json.py"

FULL=${FULL:-0}
EXPECT_PATH=${EXPECT_PATH:-direct}
if [ "$FULL" = 1 ]; then
  SIZE_MIB=1024
  PING_COUNT=20
else
  SIZE_MIB=100
  PING_COUNT=5
fi
RELAY_PORT=7000
XFER_PORT=5001
TEST=two_nodes

step() { printf '\n==> %s\n' "$*"; }
ok() { printf '    ok: %s\n' "$*"; }

if [ ! -x "$VEIL_BIN" ]; then
  echo "FAIL: $VEIL_BIN not found; build it with: cargo build --release -p veil-cli" >&2
  exit 1
fi
for tool in jq python3 socat ping sha256sum ss; do
  command -v "$tool" >/dev/null 2>&1 || { echo "FAIL: $tool missing; run scripts/setup.sh" >&2; exit 1; }
done

netns_init
NET=$NETNS_DIR/net
SD=$NETNS_DIR/state
mkdir -p "$NET" "$SD"

step "topology: hub bridge + relay, a, b on ${NETNS_SUBNET}.0/24"
netns_hub_create
netns_add_host relay
netns_add_host a
netns_add_host b
RELAY_EP="${NETNS_IP[relay]}:$RELAY_PORT"
netns_exec a ping -c 1 -W 2 "${NETNS_IP[relay]}" >/dev/null || netns_fail "underlay a -> relay does not work"
ok "relay ${NETNS_IP[relay]}, a ${NETNS_IP[a]}, b ${NETNS_IP[b]}"

step "veil network create --relay $RELAY_EP"
token=$("$VEIL_BIN" network create --relay "$RELAY_EP" --out "$NET") \
  || netns_fail "veil network create failed"
[ "$(printf '%s\n' "$token" | grep -c .)" -eq 1 ] \
  || netns_fail "network create should print the join token alone on one line; got: $token"
for f in join.token relay-1.token; do
  [ -s "$NET/$f" ] || netns_fail "network create did not write $NET/$f"
done
[ "$(tr -d '[:space:]' <"$NET/join.token")" = "$(printf '%s' "$token" | tr -d '[:space:]')" ] \
  || netns_fail "the printed token differs from $NET/join.token"
if grep -qF "$(tr -d '[:space:]' <"$NET/join.token")" "$NET/relay-1.token"; then
  netns_fail "relay-1.token contains the join token (a relay must not get the network secret)"
fi
ok "join token (${#token} chars) and relay token written"

step "start the relay"
netns_spawn relay relay "$VEIL_BIN" relay --listen "$RELAY_EP" \
  --token-file "$NET/relay-1.token" --state-dir "$SD/relay"
netns_wait_relay_ready relay "$SD/relay" relay 20
ok "relay answers on its control socket"

step "start nodes a and b with the join token only"
netns_spawn a node-a env VEIL_CRYPTO_THREADS=1 "$VEIL_BIN" up --token-file "$NET/join.token" --state-dir "$SD/a"
netns_spawn b node-b env VEIL_CRYPTO_THREADS=1 "$VEIL_BIN" up --token-file "$NET/join.token" --state-dir "$SD/b"
netns_wait_veil_ready a "$SD/a" node-a 30
netns_wait_veil_ready b "$SD/b" node-b 30

status_json() { netns_exec "$1" "$VEIL_BIN" status --json --state-dir "$SD/$1"; }
peers_json() { netns_exec "$1" "$VEIL_BIN" peers --json --state-dir "$SD/$1"; }

for n in a b; do
  js=$(status_json "$n") || netns_fail "veil status --json on $n failed"
  printf '%s' "$js" | python3 "$CHECK_JSON" status \
    || netns_fail "veil status --json on $n does not match the contract"
done
A4=$(status_json a | jq -r .overlay_ipv4)
A6=$(status_json a | jq -r .overlay_ipv6)
AID=$(status_json a | jq -r .id)
B4=$(status_json b | jq -r .overlay_ipv4)
B6=$(status_json b | jq -r .overlay_ipv6)
BID=$(status_json b | jq -r .id)
[ "$A4" != "$B4" ] || netns_fail "a and b got the same overlay IPv4 $A4"
[ "$A6" != "$B6" ] || netns_fail "a and b got the same overlay IPv6 $A6"
[ "$AID" != "$BID" ] || netns_fail "a and b have the same id $AID"
ok "a: id $AID, $A4, $A6"
ok "b: id $BID, $B4, $B6"
ok "status JSON follows the contract on both nodes"

# ping_over NAME DEST [-6]: first wait until one ping gets through (the first packet opens the
# session on demand), then require PING_COUNT pings without loss.
ping_over() {
  local from=$1 dest=$2 fam=${3:--4} out
  netns_wait_for "first ping $from -> $dest" 20 netns_exec "$from" ping "$fam" -c 1 -W 1 "$dest" \
    || netns_fail "no ping $from -> $dest over the overlay within 20s"
  out=$(netns_exec "$from" ping "$fam" -c "$PING_COUNT" -i 0.2 -W 2 "$dest" 2>&1) || {
    echo "$out" >&2
    netns_fail "ping $fam $from -> $dest lost packets after the session was up"
  }
  ok "ping $fam $from -> $dest: $(printf '%s\n' "$out" | grep -E 'packets transmitted|rtt' | tr '\n' ' ')"
}

step "ping over the overlay (IPv4 and IPv6, both ways)"
ping_over a "$B4" -4
ping_over b "$A4" -4
ping_over a "$B6" -6
ping_over b "$A6" -6

step "TCP transfer a -> b over the overlay: $SIZE_MIB MiB of random data"
SRC=$NETNS_DIR/send.bin
DST=$NETNS_DIR/recv.bin
dd if=/dev/urandom of="$SRC" bs=1M count="$SIZE_MIB" status=none
SIZE_BYTES=$(stat -c %s "$SRC")
netns_spawn b recv socat -u "TCP-LISTEN:$XFER_PORT,bind=$B4,reuseaddr" "OPEN:$DST,creat,trunc"
netns_wait_tcp_listen b "$XFER_PORT" 10 || netns_fail "receiver did not listen on $B4:$XFER_PORT"
XFER_TIMEOUT=$((SIZE_MIB < 200 ? 300 : 1500))
t0=$(date +%s.%N)
netns_spawn a send socat -u "OPEN:$SRC" "TCP:$B4:$XFER_PORT,connect-timeout=10"
rc=0
netns_wait_exit send "$XFER_TIMEOUT" relay node-a node-b || rc=$?
[ "$rc" -eq 0 ] || netns_fail "sender on a exited with status $rc"
# The transfer ends when the receiver has read EOF and written the file.
rc=0
netns_wait_exit recv 60 relay node-a node-b || rc=$?
[ "$rc" -eq 0 ] || netns_fail "receiver on b exited with status $rc"
t1=$(date +%s.%N)
SHA_A=$(netns_exec a sha256sum "$SRC" | cut -d' ' -f1)
SHA_B=$(netns_exec b sha256sum "$DST" | cut -d' ' -f1)
RECV_BYTES=$(stat -c %s "$DST")
echo "    sha256 on a: $SHA_A"
echo "    sha256 on b: $SHA_B"
[ "$RECV_BYTES" -eq "$SIZE_BYTES" ] || netns_fail "b received $RECV_BYTES bytes, a sent $SIZE_BYTES"
[ "$SHA_A" = "$SHA_B" ] || netns_fail "sha256 differs between a and b"
SPEED=$(awk -v b="$SIZE_BYTES" -v t0="$t0" -v t1="$t1" 'BEGIN {
  t = t1 - t0; if (t <= 0) t = 0.001
  printf "%.1f s, %.1f MB/s, %.0f Mbit/s", t, b / t / 1e6, b * 8 / t / 1e6 }')
ok "$SIZE_MIB MiB arrived intact: $SPEED"
rm -f "$SRC" "$DST"

step "the fast path batched the transfer"
# Counters of the I/O layer: TUN reads that gave several packets (segmentation offload),
# sends that carried several datagrams (UDP GSO), receives that gave several (recvmmsg, GRO).
CA=$(status_json a | jq -c .counters)
CB=$(status_json b | jq -c .counters)
per() { jq -r --arg n "$2" --arg d "$3" '(.[$n] // 0) / ([(.[$d] // 0), 1] | max) * 10 | floor / 10' <<<"$1"; }
TUN_PER=$(per "$CA" io_tun_read_packets io_tun_reads)
RUN_PER=$(per "$CA" io_udp_run_datagrams io_udp_runs)
RECV_PER=$(per "$CB" io_udp_recv_datagrams io_udp_recvs)
echo "    a: $TUN_PER packets per TUN read, $RUN_PER datagrams per UDP send; b: $RECV_PER datagrams per UDP receive"
awk -v t="$TUN_PER" -v r="$RUN_PER" -v v="$RECV_PER" 'BEGIN { exit !(t >= 4 && r >= 4 && v >= 2) }' \
  || netns_fail "the transfer was not batched (want >= 4 packets per TUN read, >= 4 datagrams per send, >= 2 per receive): a $CA b $CB"
ok "segmentation offload on the TUN, GSO on send, batched receives"
# Batches of at least parallel::MIN_SHARED jobs went through the helper path on both ends
# (whether the helper got a core for some of them depends on the machine's load).
declare -A COUNTERS=([a]=$CA [b]=$CB)
for n in a b; do
  shared=$(jq -r '.io_crypto_batches // 0' <<<"${COUNTERS[$n]}")
  helped=$(jq -r '.io_crypto_helper_jobs // 0' <<<"${COUNTERS[$n]}")
  [ "$shared" -gt 0 ] || netns_fail "$n shared no AEAD batch with its helper thread: ${COUNTERS[$n]}"
  echo "    $n: $shared AEAD batches shared, $helped jobs run by the helper"
done
ok "the AEAD of the transfer was shared with a helper thread on both nodes"

step "veil peers --json"
PA=$(peers_json a) || netns_fail "veil peers --json on a failed"
PB=$(peers_json b) || netns_fail "veil peers --json on b failed"
printf '%s' "$PA" | python3 "$CHECK_JSON" peers || netns_fail "veil peers --json on a does not match the contract"
printf '%s' "$PB" | python3 "$CHECK_JSON" peers || netns_fail "veil peers --json on b does not match the contract"
PEER_B=$(printf '%s' "$PA" | jq -c --arg ip "$B4" '[.[] | select(.overlay_ipv4 == $ip)] | first // empty')
[ -n "$PEER_B" ] || netns_fail "veil peers on a does not list b ($B4): $PA"
PEER_A=$(printf '%s' "$PB" | jq -c --arg ip "$A4" '[.[] | select(.overlay_ipv4 == $ip)] | first // empty')
[ -n "$PEER_A" ] || netns_fail "veil peers on b does not list a ($A4): $PB"
echo "    a sees b: $PEER_B"
PATH_B=$(printf '%s' "$PEER_B" | jq -r .path)
[ "$PATH_B" = "$EXPECT_PATH" ] || netns_fail "path a -> b is '$PATH_B', expected '$EXPECT_PATH'"
[ "$(printf '%s' "$PEER_B" | jq -r .overlay_ipv6)" = "$B6" ] \
  || netns_fail "peers on a gives b's IPv6 as $(printf '%s' "$PEER_B" | jq -r .overlay_ipv6), b says $B6"
TX=$(printf '%s' "$PEER_B" | jq -r .tx_bytes)
[ "$TX" -ge "$SIZE_BYTES" ] || netns_fail "a counts tx_bytes=$TX to b, less than the $SIZE_BYTES bytes sent"
RX=$(printf '%s' "$PEER_A" | jq -r .rx_bytes)
[ "$RX" -ge "$SIZE_BYTES" ] || netns_fail "b counts rx_bytes=$RX from a, less than the $SIZE_BYTES bytes received"
ok "a lists b with path '$PATH_B', tx_bytes $TX; b lists a with rx_bytes $RX; peers JSON follows the contract"

step "veil relay status --json"
RS=$(netns_exec relay "$VEIL_BIN" relay status --json --state-dir "$SD/relay") \
  || netns_fail "veil relay status --json failed"
printf '%s' "$RS" | python3 "$CHECK_JSON" relay-status || netns_fail "relay status JSON is malformed"
CLIENTS=$(printf '%s' "$RS" | jq -r .clients)
[ "$CLIENTS" = 2 ] || netns_fail "relay reports clients=$CLIENTS, expected 2: $RS"
ok "relay has 2 clients"

step "no file lists a peer"
# find_in_dir DIR NEEDLE...: print files under DIR holding any needle, as text or (for IPv6)
# as the packed 16 bytes.
find_in_dir() {
  local dir=$1
  shift
  python3 - "$dir" "$@" <<'PY'
import ipaddress, os, sys
root, needles = sys.argv[1], [n for n in sys.argv[2:] if n]
pats = []
for n in needles:
    pats.append((n, n.encode()))
    try:
        a = ipaddress.ip_address(n)
        if a.version == 6:
            pats.append((n + " (packed)", a.packed))
            pats.append((n + " (exploded)", a.exploded.encode()))
    except ValueError:
        pass
for dp, _, files in os.walk(root):
    for f in files:
        p = os.path.join(dp, f)
        if not os.path.isfile(p) or os.path.islink(p):
            continue
        data = open(p, "rb").read()
        for label, pat in pats:
            if pat in data:
                print(f"{p}: contains {label}")
PY
}
hits=$(find_in_dir "$SD/a" "$B4" "$B6" "$BID")
[ -z "$hits" ] || netns_fail "a's state dir names b: $hits"
hits=$(find_in_dir "$SD/b" "$A4" "$A6" "$AID")
[ -z "$hits" ] || netns_fail "b's state dir names a: $hits"
hits=$(find_in_dir "$SD/relay" "$A4" "$A6" "$B4" "$B6")
[ -z "$hits" ] || netns_fail "the relay's state dir holds a node's overlay address: $hits"
ok "state dirs of a, b and the relay hold no other node's id or overlay address"
echo "    files: $(cd "$SD" && find . -type f | sort | tr '\n' ' ')"

step "veil down"
for n in b a; do
  out=$(netns_exec "$n" "$VEIL_BIN" down --state-dir "$SD/$n" 2>&1) || netns_fail "veil down on $n failed: $out"
  rc=0
  netns_wait_exit "node-$n" 10 || rc=$?
  [ "$rc" -eq 0 ] || netns_fail "node $n exited with status $rc after veil down"
  ok "node $n stopped (exit status 0)"
  if [ "$n" = b ]; then
    # b said goodbye: the relay freed its registration at once (not after the lease), and
    # a closed the session.
    netns_wait_for "relay frees b" 3 bash -c "[ \"\$(ip netns exec $(netns_name relay) $VEIL_BIN relay status --json --state-dir $SD/relay | jq -r .clients)\" = 1 ]" \
      || netns_fail "the relay still counts b after veil down"
    [ "$(peers_json a | jq -r '.[0].path')" = none ] || netns_fail "a still has a session with b after b left"
    ok "the relay freed b at once and a closed its session"
  fi
done

printf '\n%s: PASS (%s)\n' "$TEST" "$SPEED"
