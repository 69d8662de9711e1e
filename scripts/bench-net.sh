#!/usr/bin/env bash
# Side by side on one machine (`scripts/bench.sh net [SECTION...]` runs it): the raw veth
# link, Veil's direct path and boringtun (userspace WireGuard; `-t 1` and its default of 4
# threads, the better one kept), between two namespaces on one bridge. Sections:
#   tcp1   iperf3, one TCP stream
#   tcp4   iperf3, four TCP streams
#   udp    iperf3, UDP datagrams of 1372 bytes at an unlimited rate: receiver goodput and loss,
#          and where the lost datagrams went: dropped by the sender's interface (a TUN's full
#          ring, `tx_dropped`), by the tunnel's own sockets (their `drops` in /proc/net/udp),
#          by the receiving iperf3's socket (the receiver's `RcvbufErrors` less the tunnel's)
#   udprate  the loss-free UDP rate (RFC 2544's throughput): the highest rate iperf3 is told
#          to send 1372-byte datagrams at whose run loses < 1 %, found by bisection
#          (UDPRATE_STEPS runs of UDPRATE_SECS, default 7 × 5 s, between 0 and 4000 Mbit/s)
#   rtt    ping, 200 × 10 ms: average and median RTT in µs; and 1000 back to back (`ping -A`)
# Each iperf3 figure is the median of RUNS (default 3) runs of BENCH_SECS (default 10) s.
# Also the CPU seconds the tunnel processes used during tcp1, and the memory (RSS) of one
# tunnel process idle (10 s after its peer session is up) and at its peak after the run.
# Every section ends with a line
#   RESULT tcp1 raw_mbps=… veil_mbps=… boringtun_mbps=… veil_over_boringtun=… veil_over_raw=…
# Needs root. Not a test: nothing fails on a number.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SECS=${BENCH_SECS:-10}
RUNS=${RUNS:-3}
SECTIONS=("$@")
[ "${#SECTIONS[@]}" -gt 0 ] || SECTIONS=(tcp1 tcp4 udp udprate rtt)
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
bash scripts/setup.sh >/dev/null
cargo build --release -p veil-cli --quiet
VEIL_BIN="$ROOT/target/release/veil"
# shellcheck source=scripts/lib/netns.sh
source "$ROOT/scripts/lib/netns.sh"
# shellcheck source=scripts/lib/boringtun.sh
source "$ROOT/scripts/lib/boringtun.sh"
export NETNS_QUIET=1
netns_init
SD=$NETNS_DIR/state
veil_network wa wb
declare -A UNDERLAY=([wa]=${NETNS_IP[wa]} [wb]=${NETNS_IP[wb]})
mkdir -p "$NETNS_DIR/w"

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

sock_drops() { # NS: receive drops of the UDP sockets in NS other than iperf3's (port 5201)
  netns_exec "$1" cat /proc/net/udp /proc/net/udp6 | awk '$2 ~ /:/ && $2 !~ /:1451$/ { d += $NF } END { print d + 0 }'
}

# loss_counters DST: "tx_dropped tunnel_socket_drops receiver_rcvbuf_errors" now: of the
# interface wa's route to DST leaves by, of the sockets other than iperf3's in wa and wb,
# and wb's RcvbufErrors (every socket's).
loss_counters() {
  local dev
  dev=$(netns_exec wa ip -o route get "$1" | sed -n 's/.* dev \([^ ]*\).*/\1/p')
  echo "$(netns_exec wa cat "/sys/class/net/$dev/statistics/tx_dropped")" \
    "$(($(sock_drops wa) + $(sock_drops wb)))" \
    "$(netns_exec wb awk '/^Udp:/ { if (h) print $6; h = 1 }' /proc/net/snmp)"
}

# iperf KIND DST: the median Mbit/s of RUNS runs from wa to DST; for udp the median run's
# "mbps loss% sent lost at_sender at_tunnel at_receiver" (datagrams: sent, lost, and the
# drops counted at the sender's interface, the tunnel's sockets, the receiving iperf3).
iperf() {
  local kind=$1 dst=$2 i out args t0 s0 r0 t1 s1 r1
  case "$kind" in
    tcp1) args=(-t "$SECS") ;;
    tcp4) args=(-t "$SECS" -P 4) ;;
    udp) args=(-t "$SECS" -u -b 0 -l 1372) ;;
  esac
  for ((i = 0; i < RUNS; i++)); do
    [ "$kind" != udp ] || read -r t0 s0 r0 < <(loss_counters "$dst")
    out=$(netns_exec wa iperf3 -c "$dst" -J "${args[@]}" 2>/dev/null || echo '{}')
    if [ "$kind" = udp ]; then
      read -r t1 s1 r1 < <(loss_counters "$dst")
      # The receiver's own count (sum_received): `.end.sum` is the sender's view when the
      # server's report is missing, with 0 % loss whatever was lost. A run without the
      # receiver's report counts as nothing received.
      jq -r --argjson tun $((t1 - t0)) --argjson sock $((s1 - s0)) --argjson app $((r1 - r0 - (s1 - s0))) \
        '(.end.sum_sent.packets // 0) as $sent | .end.sum_received // {} | if (.packets // 0) > 0 then
          "\((.bits_per_second // 0) / 1e6 | floor) \(.lost_percent // 100) \($sent) \(.lost_packets // 0) \($tun) \($sock) \($app)"
          else "0 100 \($sent) \($sent) \($tun) \($sock) \($app)" end' <<<"$out"
      jq -r --argjson tun $((t1 - t0)) --argjson sock $((s1 - s0)) --argjson app $((r1 - r0 - (s1 - s0))) \
        '"# udp run to '"$dst"': sent \(.end.sum_sent.packets // 0) datagrams at \((.end.sum_sent.bits_per_second // 0) / 1e6 | floor) Mbit/s; the receiver got \(.end.sum_received.packets // 0), lost \(.end.sum_received.lost_packets // "?") (\(.end.sum_received.lost_percent // "?") %): \($tun) dropped by the sending interface, \($sock) by the tunnel'"'"'s sockets, \($app) by the receiving socket"' <<<"$out" >&2
    else
      jq -r '(.end.sum_received.bits_per_second // 0) / 1e6 | floor' <<<"$out"
    fi
  done | if [ "$kind" = udp ]; then sort -n | awk '{ r[NR] = $0 } END { i = int((NR + 1) / 2); split(r[i], f, " "); printf "%s %.2f %s %s %s %s %s\n", f[1], f[2], f[3], f[4], f[5], f[6], f[7] }'; else median; fi
}

# udprate DST: "goodput_mbps rate_mbps loss_pct" of the run that lost < 1 % and delivered
# the most. The unlimited udp section measures how a sender that outruns the path fares (a
# TUN drops what does not fit in its queue and never blocks the sender); this one measures
# what the path carries without loss, as a paced sender (video, games, QUIC with its
# congestion control) sees it.
udprate() {
  local dst=$1 lo=0 hi=4000 mid i out got loss best="0 0 100"
  for ((i = 0; i < ${UDPRATE_STEPS:-7}; i++)); do
    mid=$(((lo + hi) / 2))
    out=$(netns_exec wa iperf3 -c "$dst" -J -u -l 1372 -b "${mid}M" -t "${UDPRATE_SECS:-5}" 2>/dev/null || echo '{}')
    read -r got loss < <(jq -r '.end.sum_received // {} | if (.packets // 0) > 0 then
        "\((.bits_per_second // 0) / 1e6 | floor) \(.lost_percent // 100)" else "0 100" end' <<<"$out")
    echo "# udprate to $dst: told ${mid} Mbit/s, received $got Mbit/s, lost $loss %" >&2
    if awk -v l="$loss" 'BEGIN { exit !(l < 1) }'; then
      lo=$mid
      # The most received in a run under 1 %: a faster told rate may deliver less when
      # the sender itself cannot keep up.
      [ "$got" -le "${best%% *}" ] || best="$got $mid $loss"
    else
      hi=$mid
    fi
  done
  echo "$best"
}

rtt() { # DST: average and median RTT in µs of 200 pings 10 ms apart, then the average of
  # 1000 back to back (`ping -A`: the next one leaves when the reply is in, so no process
  # sleeps long enough for its CPU to idle; the difference is the machine's wake-up
  # latency, not the tunnel's). The median is there because one slow wake-up of a few ms
  # among 200 moves the average by tens of µs.
  local spaced busy
  spaced=$(netns_exec wa ping -c 200 -i 0.01 "$1" | awk -F'time=' '/time=/ { split($2, a, " "); print a[1] * 1000 }' |
    sort -n | awk '{ v[NR] = $1; s += $1 } END { if (NR) printf "%.0f %.0f", s / NR, (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; else print "0 0" }')
  busy=$(netns_exec wa ping -c 1000 -A -q "$1" | sed -n 's|.*= [0-9.]*/\([0-9.]*\)/.*|\1|p')
  awk -v b="$busy" -v s="$spaced" 'BEGIN { printf "%s %.0f", s, b * 1000 }'
}

tree() { # PID: it and its descendants
  local p
  echo "$1"
  for p in $(ps -o pid= --ppid "$1" 2>/dev/null); do tree "$p"; done
}

mem_kb() { # FIELD PID: VmRSS or VmHWM of a process and its descendants, in KiB (boringtun
  # runs under a shell; the shell's own few hundred KiB count too)
  local t=0 p v
  for p in $(tree "$2"); do
    v=$(awk -v f="$1:" '$1 == f { print $2 }' "/proc/$p/status" 2>/dev/null || true)
    t=$((t + ${v:-0}))
  done
  echo "$t"
}

cpu() { # PID...: CPU seconds used so far by these processes and their descendants
  local t=0 p
  for p in $(for r in "$@"; do tree "$r"; done); do
    [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{ print $14 + $15 }' "/proc/$p/stat")))
  done
  awk -v t="$t" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", t / hz }'
}

# measure TARGET_IP PIDS...: every section against TARGET_IP; fills RES[section].
measure() {
  local dst=$1 s c0
  shift
  netns_spawn wb "iperf-$dst" iperf3 -s -B "$dst"
  netns_wait_tcp_listen wb 5201 10
  for s in "${SECTIONS[@]}"; do
    case "$s" in
      tcp1) c0=$(cpu "$@"); RES[tcp1]=$(iperf tcp1 "$dst"); RES[cpu]=$(awk -v a="$(cpu "$@")" -v b="$c0" 'BEGIN { printf "%.1f", a - b }') ;;
      tcp4) RES[tcp4]=$(iperf tcp4 "$dst") ;;
      udp) RES[udp]=$(iperf udp "$dst") ;;
      udprate) RES[udprate]=$(udprate "$dst") ;;
      rtt) RES[rtt]=$(rtt "$dst") ;;
    esac
  done
  netns_stop "iperf-$dst" 3
}

declare -A RES RAW VEIL BT BT_IDLE_KB
measure "${NETNS_IP[wb]}"
for k in "${!RES[@]}"; do RAW[$k]=${RES[$k]}; done

veil_node wa
veil_node wb
B4=$(veil_ipv4 wb)
netns_wait_for "ping over Veil" 20 netns_exec wa ping -c 1 -W 1 "$B4"
for _ in 1 2 3 4 5; do
  [ "$(netns_exec wa "$VEIL_BIN" peers --json --state-dir "$SD/wa" | jq -r '.[0].path')" = direct ] && break
  netns_exec wa ping -c 2 -i 0.2 "$B4" >/dev/null || true
done
sleep 10
VEIL_IDLE_KB=$(mem_kb VmRSS "${NETNS_PID[node-wa]}")
RES=()
measure "$B4" "${NETNS_PID[node-wa]}" "${NETNS_PID[node-wb]}"
for k in "${!RES[@]}"; do VEIL[$k]=${RES[$k]}; done
VEIL_PEAK_KB=$(mem_kb VmHWM "${NETNS_PID[node-wa]}")
netns_stop node-wa 5
netns_stop node-wb 5

BT_THREADS=1
for threads in 1 4; do
  wg_up w "$threads" || continue
  sleep 2
  BT_IDLE_KB[$threads]=$(mem_kb VmRSS "${NETNS_PID[w-wg-a]}")
  RES=()
  measure 100.127.0.2 "${NETNS_PID[w-wg-a]}" "${NETNS_PID[w-wg-b]}"
  if [ -z "${BT[tcp1]:-}" ] || [ "${RES[tcp1]:-0}" -gt "${BT[tcp1]:-0}" ]; then
    for k in "${!RES[@]}"; do BT[$k]=${RES[$k]}; done
    BT_THREADS=$threads
  fi
  wg_down w
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
echo "# Veil vs boringtun vs raw veth, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(uname -r), iperf3 median of $RUNS × ${SECS}s, boringtun -t $BT_THREADS"
for s in "${SECTIONS[@]}"; do
  case "$s" in
    tcp1 | tcp4)
      echo "RESULT $s raw_mbps=${RAW[$s]} veil_mbps=${VEIL[$s]} boringtun_mbps=${BT[$s]:-0} veil_over_boringtun=$(ratio "${VEIL[$s]}" "${BT[$s]:-0}") veil_over_raw=$(ratio "${VEIL[$s]}" "${RAW[$s]}")"
      ;;
    udp)
      read -r rm rl _ <<<"${RAW[udp]}"
      read -r vm vl _ <<<"${VEIL[udp]}"
      read -r bm bl _ <<<"${BT[udp]:-0 100}"
      echo "RESULT udp raw_mbps=$rm veil_mbps=$vm boringtun_mbps=$bm veil_over_boringtun=$(ratio "$vm" "$bm") veil_over_raw=$(ratio "$vm" "$rm") raw_loss_pct=$rl veil_loss_pct=$vl boringtun_loss_pct=$bl"
      # Where the median run's lost datagrams went, in % of those sent.
      where() { awk -v n="$1" -v l="$2" -v a="$3" -v b="$4" -v c="$5" 'BEGIN { if (n > 0) printf "%.2f %.2f %.2f %.2f", l * 100 / n, a * 100 / n, b * 100 / n, c * 100 / n; else print "0 0 0 0" }'; }
      for t in raw veil boringtun; do
        case $t in raw) f=${RAW[udp]} ;; veil) f=${VEIL[udp]} ;; boringtun) f=${BT[udp]:-0 100 0 0 0 0 0} ;; esac
        read -r _ _ n l a b c <<<"$f"
        read -r pl pa pb pc <<<"$(where "${n:-0}" "${l:-0}" "${a:-0}" "${b:-0}" "${c:-0}")"
        echo "RESULT udp_loss_where tunnel=$t sent=${n:-0} lost_pct=$pl at_sending_interface_pct=$pa at_tunnel_sockets_pct=$pb at_receiving_socket_pct=$pc"
      done
      ;;
    udprate)
      read -r rg rr rl <<<"${RAW[udprate]}"
      read -r vg vr vl <<<"${VEIL[udprate]}"
      read -r bg br bl <<<"${BT[udprate]:-0 0 100}"
      echo "RESULT udprate raw_mbps=$rg veil_mbps=$vg boringtun_mbps=$bg veil_over_boringtun=$(ratio "$vg" "$bg") veil_over_raw=$(ratio "$vg" "$rg") raw_rate=$rr veil_rate=$vr boringtun_rate=$br raw_loss_pct=$rl veil_loss_pct=$vl boringtun_loss_pct=$bl"
      ;;
    rtt)
      read -r rs rm rb <<<"${RAW[rtt]}"
      read -r vs vm vb <<<"${VEIL[rtt]}"
      read -r bs bm bb <<<"${BT[rtt]:-0 0 0}"
      echo "RESULT rtt_us raw=$rs veil=$vs boringtun=$bs veil_overhead_us=$((vs - rs))"
      echo "RESULT rtt_p50_us raw=$rm veil=$vm boringtun=$bm veil_overhead_us=$((vm - rm))"
      echo "RESULT rtt_busy_us raw=$rb veil=$vb boringtun=$bb veil_overhead_us=$((vb - rb))"
      ;;
  esac
done
[ -z "${VEIL[cpu]:-}" ] || echo "RESULT cpu_s_tcp1 veil=${VEIL[cpu]} boringtun=${BT[cpu]:-0}"
echo "RESULT rss_kb veil_idle=$VEIL_IDLE_KB veil_peak=$VEIL_PEAK_KB boringtun_idle=${BT_IDLE_KB[$BT_THREADS]:-0}"
