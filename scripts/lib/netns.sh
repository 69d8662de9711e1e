# shellcheck shell=bash
# Network-namespace helpers shared by tests/e2e/*.sh and scripts/demo.sh.
#
# Source this file, then call `netns_init` once. It picks a per-run name tag and a random
# 198.18.0.0/15 subnet, makes a scratch directory and registers `netns_cleanup` on EXIT, INT and
# TERM, so every process started with `netns_spawn` is killed and every namespace made with
# `netns_create` is deleted, on success and on failure alike.
#
# Topology: one hub namespace holding a Linux bridge, and one veth pair per host namespace
# (the host end is `eth0` inside the host namespace, the other end is enslaved to the bridge).
# Addresses come ONLY from 198.18.0.0/15 (RFC 2544 benchmarking range): 198.18.X.0/24 or
# 198.19.X.0/24 per run, X random. Nothing is ever routed outside the hub.
#
#   netns_init [PREFIX]               set up the run (PREFIX: fixed namespace prefix, e.g. veildemo)
#   netns_hub_create                  make the hub namespace and its bridge
#   netns_add_host NAME               make namespace NAME, attach it to the hub, give it an address;
#                                     sets NETNS_IP[NAME]
#   netns_create NAME                 make a bare namespace (loopback up) and record it
#   netns_name NAME                   print the real namespace name of NAME
#   netns_exec NAME CMD...            run CMD inside NAME
#   netns_spawn NAME LABEL CMD...     start CMD in the background inside NAME; its output goes to
#                                     $NETNS_LOGDIR/LABEL.log; sets NETNS_PID[LABEL]
#   netns_alive LABEL                 true if the process started as LABEL still runs
#   netns_stop LABEL [SECS]           TERM (then KILL after SECS) the process started as LABEL
#   netns_wait_exit LABEL SECS [WATCH...]
#                                     wait for LABEL to exit (returns its status); fail on timeout
#                                     or if a WATCH process dies first
#   netns_wait_for DESC SECS CMD...   poll CMD (every 0.2 s) until it succeeds or SECS pass
#   netns_wait_tcp_listen NAME PORT [SECS]
#                                     wait until something listens on TCP PORT in NAME
#   netns_wait_veil_ready NAME SDIR LABEL [SECS]
#                                     poll `veil status --json` until overlay_ipv4 is a string
#   netns_wait_relay_ready NAME SDIR LABEL [SECS]
#   netns_dump_logs [LINES]           print the tail of every log
#   netns_fail MSG                    print MSG and the logs, exit 1 (cleanup runs from the trap)
#   netns_purge_prefix PREFIX         kill processes in and delete namespaces named PREFIX-*
#                                     (leftovers of an interrupted run with a fixed prefix);
#                                     sets NETNS_PURGED to how many
#   netns_cleanup                     the trap handler; safe to call more than once
#   veil_network HOST...              hub, a relay host and HOSTs; `veil network create` into
#                                     $NETNS_DIR/net; the relay started (state $NETNS_DIR/state/relay)
#   veil_node NAME [VEIL-UP-ARGS...]  `veil up` in NAME (state $NETNS_DIR/state/NAME, label
#                                     node-NAME), waited for; prints nothing
#   veil_ipv4 NAME                    the overlay IPv4 of node NAME
#
# Environment: VEIL_BIN (default: <repo>/target/release/veil), VEIL_KEEP=1 keeps the scratch
# directory after the run, NETNS_QUIET=1 silences the helper's own messages.

if [ -n "${_VEIL_NETNS_SH:-}" ]; then
  return 0
fi
_VEIL_NETNS_SH=1

NETNS_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VEIL_BIN="${VEIL_BIN:-$NETNS_REPO_ROOT/target/release/veil}"

declare -A NETNS_IP=()     # NAME -> underlay IPv4 address (no prefix length)
declare -A NETNS_PID=()    # LABEL -> pid
declare -A NETNS_LOG=()    # LABEL -> log file
NETNS_CREATED=()           # real namespace names, in creation order
NETNS_LABELS=()            # process labels, in start order
NETNS_HOSTS=0              # hosts attached to the hub so far
NETNS_CLEANED=0

_netns_say() {
  if [ "${NETNS_QUIET:-0}" != 1 ]; then
    printf '[netns] %s\n' "$*" >&2
  fi
}

_netns_rand() { # _netns_rand N -> a random integer in [0, N)
  local n=$1 r
  r=$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')
  echo $((r % n))
}

_netns_hex() { # _netns_hex N -> N random hex characters
  od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n' | cut -c1-"$1"
}

# netns_init [PREFIX]
# Without PREFIX, the run tag is "v<pid><3 hex>" so parallel runs never share a name; with it
# (the demo), namespaces are PREFIX-NAME so leftovers can be found again.
# shellcheck disable=SC2120  # PREFIX is optional
netns_init() {
  local prefix=${1:-}
  if [ "$(id -u)" -ne 0 ]; then
    echo "ERROR: network namespaces need root; run this as root (or with sudo)" >&2
    exit 1
  fi
  command -v ip >/dev/null 2>&1 || { echo "ERROR: 'ip' (iproute2) not found; run scripts/setup.sh" >&2; exit 1; }

  # veth names must fit in 15 characters: <tag><index up to 200><h|n>, so the tag is at most 11:
  # "v", the pid (up to 7 digits) and 3 random hex digits.
  NETNS_TAG="v$$$(_netns_hex 3)"
  NETNS_TAG=${NETNS_TAG:0:11}
  if [ -n "$prefix" ]; then
    NETNS_PREFIX=$prefix
  else
    NETNS_PREFIX=$NETNS_TAG
  fi

  # 198.18.0.0/15 = 512 /24s; pick one at random.
  local x
  x=$(_netns_rand 512)
  NETNS_SUBNET="198.$((18 + x / 256)).$((x % 256))"
  NETNS_BRIDGE=br0

  NETNS_DIR=$(mktemp -d "${TMPDIR:-/tmp}/${NETNS_PREFIX}.XXXXXX")
  NETNS_LOGDIR=$NETNS_DIR/logs
  mkdir -p "$NETNS_LOGDIR"

  trap 'netns_cleanup' EXIT
  trap 'echo "interrupted; cleaning up" >&2; exit 130' INT
  trap 'echo "terminated" >&2; exit 143' TERM
  _netns_say "run $NETNS_PREFIX: subnet $NETNS_SUBNET.0/24, scratch dir $NETNS_DIR"
}

netns_name() { echo "$NETNS_PREFIX-$1"; }

netns_create() {
  local ns
  ns=$(netns_name "$1")
  ip netns add "$ns" || { echo "ERROR: cannot create namespace $ns" >&2; return 1; }
  NETNS_CREATED+=("$ns")
  ip -n "$ns" link set lo up
}

netns_exec() {
  local ns
  ns=$(netns_name "$1")
  shift
  ip netns exec "$ns" "$@"
}

netns_hub_create() {
  netns_create hub
  local hub
  hub=$(netns_name hub)
  ip -n "$hub" link add "$NETNS_BRIDGE" type bridge
  # No STP delay: ports forward as soon as they are up.
  ip -n "$hub" link set "$NETNS_BRIDGE" type bridge stp_state 0 forward_delay 0 2>/dev/null || true
  ip -n "$hub" link set "$NETNS_BRIDGE" up
  # Keep the bridge itself out of IPv6 chatter; it needs no address.
  ip netns exec "$hub" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 >/dev/null 2>&1 || true
}

# netns_add_host NAME: namespace NAME with eth0 on the hub bridge at $NETNS_SUBNET.(10+i)/24.
netns_add_host() {
  local name=$1 ns hub idx addr hveth nveth
  ns=$(netns_name "$name")
  hub=$(netns_name hub)
  idx=$NETNS_HOSTS
  NETNS_HOSTS=$((NETNS_HOSTS + 1))
  if [ "$idx" -gt 200 ]; then
    echo "ERROR: too many hosts on one hub" >&2
    return 1
  fi
  addr="$NETNS_SUBNET.$((10 + idx))"
  hveth="${NETNS_TAG}${idx}h"
  nveth="${NETNS_TAG}${idx}n"

  netns_create "$name"
  ip -n "$hub" link add "$hveth" type veth peer name "$nveth" netns "$ns"
  ip -n "$hub" link set "$hveth" master "$NETNS_BRIDGE"
  ip -n "$hub" link set "$hveth" up
  ip -n "$ns" link set "$nveth" name eth0
  ip -n "$ns" addr add "$addr/24" dev eth0
  ip -n "$ns" link set eth0 up
  # shellcheck disable=SC2034  # read by the scripts that source this file
  NETNS_IP[$name]=$addr
}

# netns_attach ROUTER HOST ROUTER_ADDR HOST_ADDR LEN: a new namespace HOST joined to ROUTER by a
# veth pair (lan0 in ROUTER at ROUTER_ADDR/LEN, eth0 in HOST at HOST_ADDR/LEN), both up.
# Routes and forwarding are the caller's.
netns_attach() {
  local router=$1 host=$2 raddr=$3 haddr=$4 len=$5 rns hns
  rns=$(netns_name "$router")
  netns_create "$host"
  hns=$(netns_name "$host")
  ip -n "$rns" link add lan0 type veth peer name eth0 netns "$hns"
  ip -n "$rns" addr add "$raddr/$len" dev lan0
  ip -n "$rns" link set lan0 up
  ip -n "$hns" addr add "$haddr/$len" dev eth0
  ip -n "$hns" link set eth0 up
}

# netns_wire_segments NAME...: the kernel cuts segmentation-offloaded datagrams (Veil sends
# runs of equal-sized datagrams with UDP_SEGMENT) before each NAME's eth0, as it does for a
# NIC without UDP segmentation offload. A veth passes such a run to its peer whole, so a
# capture would otherwise see one 64 KB "datagram" where the wire carries 44.
netns_wire_segments() {
  local name
  for name in "$@"; do
    ip -n "$(netns_name "$name")" link set dev eth0 gso_max_segs 1
  done
}

# netns_spawn NAME LABEL CMD...: background CMD in NAME, stdin from /dev/null, output to a log.
# `ip netns exec` execs the command, so the recorded pid is the command's own.
netns_spawn() {
  local name=$1 label=$2 ns log
  shift 2
  ns=$(netns_name "$name")
  log="$NETNS_LOGDIR/$label.log"
  # NO_COLOR: plain logs (tracing and most CLIs honour it); env execs, so the pid stays the same.
  ip netns exec "$ns" env NO_COLOR=1 "$@" </dev/null >"$log" 2>&1 &
  NETNS_PID[$label]=$!
  NETNS_LOG[$label]=$log
  NETNS_LABELS+=("$label")
  _netns_say "started $label (pid ${NETNS_PID[$label]}) in $ns: $*"
}

netns_alive() {
  local pid=${NETNS_PID[$1]:-}
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

# netns_stop LABEL [SECS]: TERM, wait up to SECS (default 5), then KILL. Returns 0 once gone.
netns_stop() {
  local label=$1 secs=${2:-5} pid i
  pid=${NETNS_PID[$label]:-}
  [ -n "$pid" ] || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < secs * 10; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      _netns_say "$label (pid $pid) ignored SIGTERM for ${secs}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  wait "$pid" 2>/dev/null || true
}

# netns_wait_exit LABEL SECS [WATCH...]: wait until the process started as LABEL exits and return
# its exit status; fail (with the logs) if it runs longer than SECS or a WATCH process dies first.
netns_wait_exit() {
  local label=$1 secs=$2 pid deadline w rc=0
  shift 2
  pid=${NETNS_PID[$label]:-}
  [ -n "$pid" ] || netns_fail "netns_wait_exit: no process labelled $label"
  deadline=$((SECONDS + secs))
  # Bash reaps finished background jobs at once, so kill -0 fails as soon as the process is gone.
  while kill -0 "$pid" 2>/dev/null; do
    for w in "$@"; do
      netns_alive "$w" || netns_fail "$w exited while waiting for $label"
    done
    [ "$SECONDS" -lt "$deadline" ] || netns_fail "$label still runs after ${secs}s"
    sleep 0.1
  done
  wait "$pid" || rc=$?
  return "$rc"
}

# netns_wait_for DESC SECS CMD...: poll CMD until it succeeds; on timeout print DESC and fail.
netns_wait_for() {
  local desc=$1 secs=$2 deadline
  shift 2
  deadline=$((SECONDS + secs))
  while ! "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "TIMEOUT after ${secs}s waiting for: $desc" >&2
      return 1
    fi
    sleep 0.2
  done
}

_netns_veil_has_ipv4() { # NAME SDIR
  local out
  out=$(netns_exec "$1" "$VEIL_BIN" status --json --state-dir "$2" 2>/dev/null) || return 1
  printf '%s' "$out" | jq -e 'type == "object" and (.overlay_ipv4 | type) == "string"' >/dev/null 2>&1
}

# netns_wait_veil_ready NAME SDIR LABEL [SECS]: wait until the node started as LABEL in NAME has
# an overlay IPv4 address. Fails fast, with the log, if the process dies first.
netns_wait_veil_ready() {
  local name=$1 sdir=$2 label=$3 secs=${4:-30} deadline
  deadline=$((SECONDS + secs))
  while ! _netns_veil_has_ipv4 "$name" "$sdir"; do
    if ! netns_alive "$label"; then
      netns_fail "node $label exited before it got an overlay address (state dir $sdir)"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "last 'veil status --json' of $label:" >&2
      netns_exec "$name" "$VEIL_BIN" status --json --state-dir "$sdir" >&2 || true
      netns_fail "node $label got no overlay_ipv4 within ${secs}s (veil status --json --state-dir $sdir)"
    fi
    sleep 0.2
  done
  _netns_say "$label is up"
}

# netns_wait_relay_ready NAME SDIR LABEL [SECS]: wait until `veil relay status --json` answers.
netns_wait_relay_ready() {
  local name=$1 sdir=$2 label=$3 secs=${4:-20} deadline
  deadline=$((SECONDS + secs))
  until netns_exec "$name" "$VEIL_BIN" relay status --json --state-dir "$sdir" 2>/dev/null \
    | jq -e 'type == "object"' >/dev/null 2>&1; do
    if ! netns_alive "$label"; then
      netns_fail "relay $label exited during start-up"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      netns_fail "relay $label did not answer 'veil relay status --json' within ${secs}s"
    fi
    sleep 0.2
  done
  _netns_say "$label is up"
}

# netns_wait_tcp_listen NAME PORT [SECS]: wait until something listens on TCP PORT in NAME.
netns_wait_tcp_listen() {
  local name=$1 port=$2 secs=${3:-10}
  netns_wait_for "a TCP listener on port $port in $(netns_name "$name")" "$secs" \
    _netns_tcp_listening "$name" "$port"
}

_netns_tcp_listening() {
  netns_exec "$1" ss -Hltn "sport = :$2" | grep -q .
}

netns_dump_logs() {
  local lines=${1:-60} label log
  for label in "${NETNS_LABELS[@]}"; do
    log=${NETNS_LOG[$label]}
    [ -f "$log" ] || continue
    echo "----- log of $label (last $lines lines of $log) -----" >&2
    tail -n "$lines" "$log" >&2 || true
  done
  [ "${#NETNS_LABELS[@]}" -eq 0 ] || echo "----- end of logs -----" >&2
}

netns_fail() {
  echo >&2
  echo "FAIL: $*" >&2
  NETNS_LOGS_DUMPED=1
  netns_dump_logs 60
  exit 1
}

# Kills every process still inside namespace $1 (started by this run, since the namespace is
# ours) and deletes the namespace.
_netns_delete() {
  local ns=$1 pids p i
  pids=$(ip netns pids "$ns" 2>/dev/null || true)
  if [ -n "$pids" ]; then
    for p in $pids; do kill -TERM "$p" 2>/dev/null || true; done
    for ((i = 0; i < 30; i++)); do
      pids=$(ip netns pids "$ns" 2>/dev/null || true)
      [ -n "$pids" ] || break
      sleep 0.1
    done
    for p in $pids; do kill -KILL "$p" 2>/dev/null || true; done
  fi
  ip netns del "$ns" 2>/dev/null || true
  # Per-namespace files `ip netns exec` bind-mounts (resolv.conf of the DNS test).
  case "$ns" in
    */* | "" | . | ..) ;;
    *) rm -rf "/etc/netns/$ns" ;;
  esac
}

# netns_purge_prefix PREFIX: remove leftovers (namespaces PREFIX-*) of an earlier run.
netns_purge_prefix() {
  local prefix=$1 ns
  NETNS_PURGED=0
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
    case "$ns" in
      "$prefix"-*)
        _netns_say "removing leftover namespace $ns"
        _netns_delete "$ns"
        NETNS_PURGED=$((NETNS_PURGED + 1))
        ;;
    esac
  done
  return 0
}

veil_network() {
  local h
  netns_hub_create
  netns_add_host relay
  for h in "$@"; do netns_add_host "$h"; done
  mkdir -p "$NETNS_DIR/net" "$NETNS_DIR/state"
  "$VEIL_BIN" network create --relay "${NETNS_IP[relay]}:7000" --out "$NETNS_DIR/net" >/dev/null 2>&1 \
    || netns_fail "veil network create failed"
  netns_spawn relay relay "$VEIL_BIN" relay --listen "${NETNS_IP[relay]}:7000" \
    --token-file "$NETNS_DIR/net/relay-1.token" --state-dir "$NETNS_DIR/state/relay"
  netns_wait_relay_ready relay "$NETNS_DIR/state/relay" relay 20
}

veil_node() {
  local name=$1
  shift
  netns_spawn "$name" "node-$name" "$VEIL_BIN" up --token-file "$NETNS_DIR/net/join.token" \
    --state-dir "$NETNS_DIR/state/$name" "$@"
  netns_wait_veil_ready "$name" "$NETNS_DIR/state/$name" "node-$name" 30
}

veil_ipv4() {
  netns_exec "$1" "$VEIL_BIN" status --json --state-dir "$NETNS_DIR/state/$1" | jq -r .overlay_ipv4
}

netns_cleanup() {
  local rc=$? i label
  [ "$NETNS_CLEANED" = 1 ] && return 0
  NETNS_CLEANED=1
  trap - INT TERM
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 130 ] && [ "${NETNS_LOGS_DUMPED:-0}" != 1 ] && [ "${#NETNS_LABELS[@]}" -gt 0 ]; then
    echo "exit status $rc; logs follow" >&2
    netns_dump_logs 60
  fi
  # Stop processes in reverse start order (nodes before the relay), then delete namespaces.
  for ((i = ${#NETNS_LABELS[@]} - 1; i >= 0; i--)); do
    label=${NETNS_LABELS[$i]}
    netns_stop "$label" 3
  done
  for ((i = ${#NETNS_CREATED[@]} - 1; i >= 0; i--)); do
    _netns_delete "${NETNS_CREATED[$i]}"
  done
  if [ -n "${NETNS_DIR:-}" ] && [ -d "$NETNS_DIR" ]; then
    if [ "${VEIL_KEEP:-0}" = 1 ]; then
      _netns_say "kept scratch dir $NETNS_DIR"
    else
      rm -rf "$NETNS_DIR"
    fi
  fi
  _netns_say "cleaned up ${#NETNS_CREATED[@]} namespaces and ${#NETNS_LABELS[@]} processes"
  return "$rc"
}
