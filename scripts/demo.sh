#!/usr/bin/env bash
# A guided tour of Veil on one machine: a relay and three nodes (alpha, beta, gamma), each in
# its own network namespace, joined with nothing but one token. Shows status and peers, pings
# across the overlay and moves 100 MiB with a checksum on both ends. Cleans up on exit and on
# Ctrl-C; running it again first removes anything an interrupted run left behind.
#
# Needs root (network namespaces, TUN devices). Env: SIZE_MIB (default 100), NO_COLOR=1.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PREFIX=veildemo
PREBUILT=${VEIL_BIN:-} # set VEIL_BIN to use an existing binary and skip the build
SIZE_MIB=${SIZE_MIB:-100}
RELAY_PORT=7000
XFER_PORT=5001
NODES=(alpha beta gamma)

if [ -t 1 ] && [ -z "${NO_COLOR:-}" ]; then
  B=$'\e[1m' DIM=$'\e[2m' G=$'\e[32m' C=$'\e[36m' R=$'\e[31m' N=$'\e[0m'
else
  B='' DIM='' G='' C='' R='' N=''
fi
STEP=0
say() { printf '%s\n' "$*"; }
step() {
  STEP=$((STEP + 1))
  printf '\n%s%s%d. %s%s\n' "$B" "$C" "$STEP" "$*" "$N"
}
explain() { printf '%s   %s%s\n' "$DIM" "$*" "$N"; }
good() { printf '   %s✓%s %s\n' "$G" "$N" "$*"; }
run() { # show a command, then run it with its output indented
  printf '   %s$ %s%s\n' "$B" "$*" "$N"
  "$@" 2>&1 | sed 's/^/     /'
  return "${PIPESTATUS[0]}"
}
die() {
  printf '\n%sdemo failed: %s%s\n' "$R" "$*" "$N" >&2
  exit 1
}

if [ "$(id -u)" -ne 0 ]; then
  die "the demo creates network namespaces and TUN devices, so it needs root (try: sudo $0)"
fi

printf '%sVeil demo%s: an overlay network of three nodes and a relay, all on this machine.\n' "$B" "$N"
explain "Every host lives in its own network namespace, wired to a virtual switch (a bridge)."
explain "Underlay addresses come from 198.18.0.0/15, a range reserved for tests."

step "Preparing"
# shellcheck source-path=SCRIPTDIR/..
# shellcheck source=scripts/lib/netns.sh
source "$ROOT/scripts/lib/netns.sh"
export NETNS_QUIET=1
netns_purge_prefix "$PREFIX"
rm -rf "${TMPDIR:-/tmp}/$PREFIX".*
if [ "$NETNS_PURGED" -gt 0 ]; then
  good "removed $NETNS_PURGED namespaces left over from an interrupted demo"
else
  good "no leftovers from an earlier demo"
fi
explain "Installing tools if missing (scripts/setup.sh)…"
bash scripts/setup.sh </dev/null >/tmp/"$PREFIX"-setup.log 2>&1 \
  || { cat /tmp/"$PREFIX"-setup.log >&2; die "scripts/setup.sh failed"; }
rm -f /tmp/"$PREFIX"-setup.log
good "tools installed"
if ! command -v cargo >/dev/null 2>&1 && [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]; then
  export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi
if [ -n "$PREBUILT" ]; then
  VEIL=$PREBUILT
  good "using $VEIL"
else
  explain "Building veil in release mode (the first build takes a few minutes)…"
  cargo build --release -p veil-cli --quiet || die "cargo build --release -p veil-cli failed"
  VEIL="$ROOT/target/release/veil"
  good "built $VEIL"
fi
VEIL_BIN=$VEIL

netns_init "$PREFIX"
NET=$NETNS_DIR/net
SD=$NETNS_DIR/state
mkdir -p "$NET" "$SD"

step "Building the little data centre"
netns_hub_create
netns_add_host relay
for n in "${NODES[@]}"; do netns_add_host "$n"; done
RELAY_EP="${NETNS_IP[relay]}:$RELAY_PORT"
good "a switch and four hosts on ${NETNS_SUBNET}.0/24:"
printf '     %-7s %s\n' relay "${NETNS_IP[relay]}"
for n in "${NODES[@]}"; do printf '     %-7s %s\n' "$n" "${NETNS_IP[$n]}"; done

step "Creating a network"
explain "One command makes the network: a join token for nodes, and a token per relay"
explain "(relays get no network secret: they forward what they cannot read)."
printf '   %s$ veil network create --relay %s --out %s%s\n' "$B" "$RELAY_EP" "$NET" "$N"
token=$("$VEIL" network create --relay "$RELAY_EP" --out "$NET" 2>"$NETNS_DIR/create.err") \
  || { cat "$NETNS_DIR/create.err" >&2; die "veil network create failed"; }
sed 's/^/     /' "$NETNS_DIR/create.err"
good "join token: ${token:0:40}… (${#token} characters, saved in $NET/join.token)"

step "Starting the relay"
netns_spawn relay relay "$VEIL" relay --listen "$RELAY_EP" --token-file "$NET/relay-1.token" \
  --state-dir "$SD/relay"
netns_wait_relay_ready relay "$SD/relay" relay 20
good "relay listening on $RELAY_EP"

step "Starting three nodes with nothing but the join token"
explain "No peer lists, no keys to exchange: each node registers with the relay under its"
explain "name and gets its overlay addresses without anyone keeping a list."
for n in "${NODES[@]}"; do
  netns_spawn "$n" "$n" "$VEIL" up --token-file "$NET/join.token" --state-dir "$SD/$n" --name "$n"
done
declare -A V4=() V6=()
for n in "${NODES[@]}"; do
  netns_wait_veil_ready "$n" "$SD/$n" "$n" 30
  js=$(netns_exec "$n" "$VEIL" status --json --state-dir "$SD/$n")
  V4[$n]=$(printf '%s' "$js" | jq -r .overlay_ipv4)
  V6[$n]=$(printf '%s' "$js" | jq -r .overlay_ipv6)
  good "$(printf '%-6s is up: %-16s %s' "$n" "${V4[$n]}" "${V6[$n]}")"
done

show() { # show NODE status|peers: the human table, or the JSON if the CLI has no table
  local node=$1 what=$2 out
  printf '   %s[%s]$ veil %s%s\n' "$B" "$node" "$what" "$N"
  if out=$(netns_exec "$node" "$VEIL" "$what" --state-dir "$SD/$node" 2>&1); then
    # The counters are many; the demo shows the head of the status and says how to see them.
    printf '%s\n' "$out" | awk '/^counters/ { n = 1; next } n { c++; next } { print }
      END { if (c) printf "counters:     %d of them (run veil status to see all)\n", c }' \
      | sed 's/^/     /'
  else
    netns_exec "$node" "$VEIL" "$what" --json --state-dir "$SD/$node" | jq . | sed 's/^/     /'
  fi
}

step "What alpha knows"
show alpha status
explain "alpha knows no peer yet: sessions open on demand, on the first packet."
show alpha peers

step "Pinging across the overlay"
explain "The first packet to an overlay address makes the node look the peer up and open an"
explain "end-to-end encrypted session; the relay only forwards opaque datagrams."
ping_pair() {
  local from=$1 to=$2 fam=$3 dest out recv avg
  if [ "$fam" = -6 ]; then dest=${V6[$to]}; else dest=${V4[$to]}; fi
  netns_wait_for "ping $from -> $to" 20 netns_exec "$from" ping "$fam" -c 1 -W 1 "$dest" \
    || die "$from cannot reach $to ($dest)"
  out=$(netns_exec "$from" ping "$fam" -c 3 -i 0.2 -W 2 "$dest" 2>&1) || true
  recv=$(printf '%s\n' "$out" | grep -oE '[0-9]+ received' | cut -d' ' -f1)
  avg=$(printf '%s\n' "$out" | sed -n 's#^rtt [^=]*= [0-9.]*/\([0-9.]*\)/.*#\1#p')
  good "$(printf '%-5s → %-5s %-36s %s/3 replies, average %s ms' "$from" "$to" "$dest" "${recv:-0}" "${avg:-?}")"
}
ping_pair alpha beta -4
ping_pair beta gamma -4
ping_pair gamma alpha -4
ping_pair alpha beta -6
explain "By name: the node asks the rendezvous who holds gamma (a blinded lookup)."
printf '   %s[alpha]$ veil ping gamma -c 3%s\n' "$B" "$N"
netns_exec alpha "$VEIL" ping gamma -c 3 -i 200 --state-dir "$SD/alpha" 2>&1 | sed 's/^/     /' \
  || die "veil ping gamma failed on alpha"

step "Moving $SIZE_MIB MiB from alpha to gamma"
SRC=$NETNS_DIR/payload.bin
DST=$NETNS_DIR/received.bin
explain "Random data, sent over TCP to gamma's overlay address, checked with sha256 on both ends."
dd if=/dev/urandom of="$SRC" bs=1M count="$SIZE_MIB" status=none
BYTES=$(stat -c %s "$SRC")
netns_spawn gamma receiver socat -u "TCP-LISTEN:$XFER_PORT,bind=${V4[gamma]},reuseaddr" \
  "OPEN:$DST,creat,trunc"
netns_wait_tcp_listen gamma "$XFER_PORT" 10 || die "receiver did not start"
t0=$(date +%s.%N)
netns_exec alpha timeout 600 socat -u "OPEN:$SRC" "TCP:${V4[gamma]}:$XFER_PORT,connect-timeout=10" \
  || die "the transfer failed"
netns_wait_for "the receiver" 60 bash -c "! kill -0 ${NETNS_PID[receiver]} 2>/dev/null" \
  || die "the receiver did not finish"
t1=$(date +%s.%N)
SUM_A=$(netns_exec alpha sha256sum "$SRC" | cut -d' ' -f1)
SUM_G=$(netns_exec gamma sha256sum "$DST" | cut -d' ' -f1)
printf '     sha256 at alpha: %s\n' "$SUM_A"
printf '     sha256 at gamma: %s\n' "$SUM_G"
[ "$SUM_A" = "$SUM_G" ] || die "the checksums differ"
good "$(awk -v b="$BYTES" -v t0="$t0" -v t1="$t1" -v m="$SIZE_MIB" 'BEGIN {
  t = t1 - t0; if (t <= 0) t = 0.001
  printf "%d MiB arrived intact in %.1f s: %.1f MB/s, %.0f Mbit/s", m, t, b / t / 1e6, b * 8 / t / 1e6 }')"
rm -f "$SRC" "$DST"

step "alpha's peers now"
explain "'NAME' is the peer's name once the rendezvous confirmed it; 'path' says how packets"
explain "travel: direct, or relayed (and why); 'PMTU' what the path carries."
show alpha peers

step "Tearing down"
for n in "${NODES[@]}"; do
  netns_exec "$n" "$VEIL" down --state-dir "$SD/$n" >/dev/null 2>&1 || true
done
netns_cleanup
good "nodes stopped, namespaces removed"
printf '\n%sThat was Veil.%s Run the tests with scripts/test.sh; read docs/ for how it works.\n' "$B" "$N"
