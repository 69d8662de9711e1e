#!/usr/bin/env bash
# End-to-end idling: after its idle timeout (5 s here) a session is closed and `veil peers`
# shows the peer with path "none"; then a one-minute capture on node a's underlay interface
# must hold at most 3 datagrams from a (its relay keepalives, every 25 s by default), and
# node a may wake up at most once a second on average meanwhile (its threads' voluntary
# context switches: an idle node waits for the OS to report an address change instead of
# reading the addresses every 250 ms, which cost 8 wake-ups a second).
#
# Needs root. Env: VEIL_BIN (default target/release/veil).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source-path=SCRIPTDIR/../..
# shellcheck source=scripts/lib/netns.sh
source "$ROOT/scripts/lib/netns.sh"
TEST=idle
CAPTURE_SECS=${CAPTURE_SECS:-60}

ok() { printf '    ok: %s\n' "$*"; }
[ -x "$VEIL_BIN" ] || { echo "FAIL: $VEIL_BIN not found" >&2; exit 1; }
command -v tcpdump >/dev/null || { echo "FAIL: tcpdump missing; run scripts/setup.sh" >&2; exit 1; }

netns_init
SD=$NETNS_DIR/state
veil_network a b
printf 'idle_timeout_secs = 5\n' >"$NETNS_DIR/idle.toml"
veil_node a --config "$NETNS_DIR/idle.toml"
veil_node b --config "$NETNS_DIR/idle.toml"
B4=$(veil_ipv4 b)
netns_wait_for "ping a -> b" 20 netns_exec a ping -c 1 -W 1 "$B4" || netns_fail "no ping a -> b"
netns_exec a ping -c 5 -i 0.2 -W 1 "$B4" >/dev/null || netns_fail "pings lost"
path() { netns_exec a "$VEIL_BIN" peers --json --state-dir "$SD/a" | jq -r '.[0].path'; }
[ "$(path)" != none ] || netns_fail "no session after the pings"
sleep 7
[ "$(path)" = none ] || netns_fail "after the idle timeout the path is '$(path)', expected none"
ok "session closed after the idle timeout: path none"

wakeups() { # voluntary context switches of every thread of node a so far
  cat /proc/"${NETNS_PID[node-a]}"/task/*/status 2>/dev/null | awk '$1 == "voluntary_ctxt_switches:" { t += $2 } END { print t + 0 }'
}
W0=$(wakeups)
CAP=$NETNS_DIR/idle.pcap
netns_exec a timeout "$CAPTURE_SECS" tcpdump -i eth0 -n -U -w "$CAP" "udp and src host ${NETNS_IP[a]}" \
  >/dev/null 2>&1 || true
count=$(tcpdump -r "$CAP" -n 2>/dev/null | wc -l)
tcpdump -r "$CAP" -n 2>/dev/null | sed 's/^/    /'
[ "$count" -le 3 ] || netns_fail "an idle node sent $count datagrams in ${CAPTURE_SECS}s (at most 3 allowed)"
ok "an idle node sent $count datagrams in ${CAPTURE_SECS}s"
WOKE=$(($(wakeups) - W0))
[ "$WOKE" -le "$CAPTURE_SECS" ] || netns_fail "an idle node woke $WOKE times in ${CAPTURE_SECS}s (at most one a second allowed)"
ok "an idle node woke $WOKE times in ${CAPTURE_SECS}s"
printf '\n%s: PASS (%s datagrams and %s wake-ups in %ss)\n' "$TEST" "$count" "$WOKE" "$CAPTURE_SECS"
