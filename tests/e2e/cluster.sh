#!/usr/bin/env bash
# End-to-end: three relays sharing one rendezvous through a three-server NATS JetStream
# cluster, all in one namespace ("core", one underlay address per relay); nodes a and b in
# namespaces of their own, homed on different relays (each node's kernel drops its TCP
# timing connections to some relays, so its round-trip ranking puts its home first), relayed
# only (--no-direct), so everything between them goes relay to relay.
#
# Checks: the relays see each other (links up, NATS connected); a and b find each other
# across relays and a 32 MiB transfer a -> b arrives with the same sha256; a's relay is
# SIGKILLed in the middle of a transfer and of a 20 ms ping: a fails over, the longest ping
# gap is at most 2 s, and the transfer completes intact; one NATS server is restarted: the
# rendezvous keeps every name (a restarted node b is found again, pings go through; its subnet
# route reaches a on the other relay) and the relays report NATS connected again; with UDP
# between the relays cut, their traffic goes on the NATS bus and pings still get through.
#
# NATS is secured as in production: TLS with a test CA, client certificates verified, and
# each relay authenticated its own way (relay 1 a user and a password file, relay 2 a
# password from the environment, relay 3 an NKey); the servers' connection lists must show
# each relay on TLS as its user. A wrong password, a missing CA, a missing client
# certificate and a missing password are each refused at start, the message naming the
# option; a relay also joins a server that takes a token, and one in operator mode with a
# credentials file (JWT and NKey seed).
#
# Needs root and nats-server (scripts/setup.sh installs it). Env: VEIL_BIN, FULL=1 (256 MiB).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=scripts/lib/netns.sh
source "$ROOT/scripts/lib/netns.sh"

FULL=${FULL:-0}
SIZE_MIB=$([ "$FULL" = 1 ] && echo 256 || echo 32)
XFER_PORT=5001

step() { printf '\n==> %s\n' "$*"; }
ok() { printf '    ok: %s\n' "$*"; }

[ -x "$VEIL_BIN" ] || { echo "FAIL: $VEIL_BIN not found; cargo build --release -p veil-cli" >&2; exit 1; }
for tool in nats-server jq python3 socat ping sha256sum curl nft openssl; do
  command -v "$tool" >/dev/null 2>&1 || { echo "FAIL: $tool missing; run scripts/setup.sh" >&2; exit 1; }
done

netns_init
NET=$NETNS_DIR/net
SD=$NETNS_DIR/state
mkdir -p "$NET" "$SD"

step "topology: core (3 relays + 3 NATS servers), a, b"
netns_hub_create
netns_add_host core
netns_add_host a
netns_add_host b
R=()
for i in 1 2 3; do
  ip="$NETNS_SUBNET.$((200 + i))"
  netns_exec core ip addr add "$ip/24" dev eth0
  R+=("$ip")
done
ok "relays at ${R[*]} (port 7000, TCP 443)"

step "NATS credentials: a test CA, server and client certificates, passwords, an NKey"
PKI=$NETNS_DIR/pki
mkdir -p "$PKI"
pki() { openssl "$@" 2>>"$PKI/openssl.log" || netns_fail "openssl $1 failed: $(tail -3 "$PKI/openssl.log")"; }
ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
pki req -x509 "${ec[@]}" -keyout "$PKI/ca.key" -out "$PKI/ca.pem" -days 2 -subj /CN=veil-test-nats-ca
for who in server client; do
  ext=$([ $who = server ] && echo "subjectAltName=IP:127.0.0.1" || echo "extendedKeyUsage=clientAuth")
  pki req "${ec[@]}" -keyout "$PKI/$who.key" -out "$PKI/$who.csr" -subj "/CN=veil-test-$who" -addext "$ext"
  pki x509 -req -in "$PKI/$who.csr" -CA "$PKI/ca.pem" -CAkey "$PKI/ca.key" -CAcreateserial \
    -out "$PKI/$who.pem" -days 2 -copy_extensions copy
done
secret() { head -c 24 /dev/urandom | base64 | tr -d '/+='; }
secret >"$PKI/pw1"
PW2=$(secret)
TOKEN=$(secret)
# A user NKey as `nk -gen user` makes it (tests/e2e/lib/nats_keys.py).
NKEY_PUB=$(/usr/bin/python3 "$ROOT/tests/e2e/lib/nats_keys.py" nkey "$PKI/nkey.seed")
[[ "$NKEY_PUB" == U* ]] || netns_fail "no NKey made"
ok "CA, certificates for the servers (127.0.0.1) and the relays, two passwords, a token, an NKey"

step "start a three-server NATS JetStream cluster (127.0.0.1 in core): TLS, client certificates, users"
start_nats() {
  local i=$1
  mkdir -p "$NETNS_DIR/nats$i"
  cat >"$NETNS_DIR/nats$i.conf" <<CONF
server_name: veil-nats-$i
listen: 127.0.0.1:$((4221 + i))
http: 127.0.0.1:$((8221 + i))
jetstream { store_dir: "$NETNS_DIR/nats$i" }
tls { cert_file: "$PKI/server.pem", key_file: "$PKI/server.key", ca_file: "$PKI/ca.pem", verify: true }
authorization {
  users: [
    { user: relay1, password: "$(cat "$PKI/pw1")" }
    { user: relay2, password: "$PW2" }
    { nkey: $NKEY_PUB }
  ]
}
cluster {
  name: veiltest
  listen: 127.0.0.1:$((6221 + i))
  routes: [nats://127.0.0.1:6222, nats://127.0.0.1:6223, nats://127.0.0.1:6224]
}
CONF
  netns_spawn core "nats$i" nats-server -c "$NETNS_DIR/nats$i.conf"
}
nats_ready() { netns_exec core curl -sf "http://127.0.0.1:$((8221 + $1))/healthz?js-enabled-only=true" >/dev/null; }
for i in 1 2 3; do start_nats "$i"; done
for i in 1 2 3; do netns_wait_for "NATS server $i ready" 30 nats_ready "$i"; done
NATS_URLS="tls://127.0.0.1:4222,tls://127.0.0.1:4223,tls://127.0.0.1:4224"
TLS_ARGS=(--nats-tls-ca "$PKI/ca.pem" --nats-tls-cert "$PKI/client.pem" --nats-tls-key "$PKI/client.key")
ok "NATS servers up (JetStream, cluster of 3, TLS only, client certificates verified, three users)"

step "veil network create with three relays; start them with --nats"
"$VEIL_BIN" network create --relay "${R[0]}:7000" --relay "${R[1]}:7000" --relay "${R[2]}:7000" \
  --shared-rendezvous --out "$NET" >/dev/null || netns_fail "veil network create failed"
# Each relay authenticates its own way (relay 2's password comes from the environment).
AUTH1=(--nats-user relay1 --nats-password-file "$PKI/pw1")
AUTH2=(--nats-user relay2)
AUTH3=(--nats-nkey "$PKI/nkey.seed")
start_relay() {
  local i=$1 auth
  auth="AUTH$i[@]"
  netns_spawn core "relay$i" env VEIL_RELAY_NATS_PASSWORD="$([ "$i" != 2 ] || echo "$PW2")" \
    "$VEIL_BIN" relay --listen "${R[$((i - 1))]}:7000" --token-file "$NET/relay-$i.token" \
    --state-dir "$SD/relay$i" --nats "$NATS_URLS" "${TLS_ARGS[@]}" "${!auth}"
  netns_wait_relay_ready core "$SD/relay$i" "relay$i" 30
}
for i in 1 2 3; do start_relay "$i"; done
relay_status() { netns_exec core "$VEIL_BIN" relay status --json --state-dir "$SD/relay$1"; }
links_up() { [ "$(relay_status "$1" | jq '[.cluster.peers[] | select(.link_up)] | length')" = 2 ]; }
for i in 1 2 3; do netns_wait_for "relay $i links to both others" 20 links_up "$i"; done
for i in 1 2 3; do
  [ "$(relay_status "$i" | jq -r .cluster.store.connected)" = true ] || netns_fail "relay $i: NATS not connected"
done
ok "each relay has links up to the other two; NATS connected"
# The servers' own view: every client connection is TLS and authenticated as its relay.
conns=$(for i in 1 2 3; do netns_exec core curl -sf "http://127.0.0.1:$((8221 + i))/connz?auth=true"; done |
  jq -s '[.[].connections[]]')
for who in relay1 relay2 "$NKEY_PUB"; do
  n=$(jq --arg u "$who" '[.[] | select(.authorized_user == $u and (.tls_version // "") != "")] | length' <<<"$conns")
  [ "$n" -ge 1 ] || netns_fail "no TLS connection of $who in NATS' connz: $(jq -c '[.[] | {authorized_user, tls_version}]' <<<"$conns")"
done
[ "$(jq '[.[] | select((.tls_version // "") == "")] | length' <<<"$conns")" = 0 ] ||
  netns_fail "a NATS client connection without TLS: $(jq -c '[.[] | {authorized_user, tls_version}]' <<<"$conns")"
detail=$(relay_status 1 | jq -r .cluster.store.detail)
[[ "$detail" == *"user relay1, TLS with a client certificate, own CA"* ]] ||
  netns_fail "relay 1's status does not say how it connects: $detail"
ok "NATS sees relay1, relay2 and the NKey user, each on TLS $(jq -r '[.[].tls_version] | unique | join(", ")' <<<"$conns"); relay 1: $detail"

step "NATS refuses a wrong password, a relay without the CA or without a client certificate"
# refused LABEL PATTERN URLS ARGS...: a relay started with these NATS URLs and options exits
# within 15 s (not after the 20 s it retries an unreachable server), its error matching PATTERN.
refused() {
  local label=$1 pattern=$2 urls=$3
  shift 3
  netns_spawn core "$label" "$VEIL_BIN" relay --listen "${R[0]}:7100" --tcp-listen off \
    --token-file "$NET/relay-1.token" --state-dir "$SD/$label" --nats "$urls" "$@"
  if netns_wait_exit "$label" 15; then netns_fail "$label: the relay exited 0"; fi
  grep -Eq -- "$pattern" "${NETNS_LOG[$label]}" || netns_fail "$label: unexpected error: $(tail -2 "${NETNS_LOG[$label]}")"
  ok "$label: $(grep -Eo -- "$pattern" "${NETNS_LOG[$label]}" | head -1)"
}
echo wrong >"$PKI/wrong"
refused bad-password "refused this relay.*--nats-user" "$NATS_URLS" "${TLS_ARGS[@]}" --nats-user relay1 --nats-password-file "$PKI/wrong"
refused no-ca "TLS failed.*--nats-tls-ca" "$NATS_URLS" --nats-tls-cert "$PKI/client.pem" --nats-tls-key "$PKI/client.key" "${AUTH1[@]}"
refused no-client-cert "TLS failed.*--nats-tls-cert" "$NATS_URLS" --nats-tls-ca "$PKI/ca.pem" "${AUTH1[@]}"
refused no-password "--nats-user needs its password" "$NATS_URLS" "${TLS_ARGS[@]}" --nats-user relay1

step "a relay joins a NATS server that takes a token (TLS)"
mkdir -p "$NETNS_DIR/natstok"
cat >"$NETNS_DIR/natstok.conf" <<CONF
listen: 127.0.0.1:4300
http: 127.0.0.1:8300
jetstream { store_dir: "$NETNS_DIR/natstok" }
tls { cert_file: "$PKI/server.pem", key_file: "$PKI/server.key" }
authorization { token: "$TOKEN" }
CONF
netns_spawn core natstok nats-server -c "$NETNS_DIR/natstok.conf"
netns_wait_for "token NATS server ready" 30 netns_exec core curl -sf "http://127.0.0.1:8300/healthz?js-enabled-only=true" >/dev/null
netns_spawn core relaytok env VEIL_RELAY_NATS_TOKEN="$TOKEN" "$VEIL_BIN" relay --listen "${R[0]}:7100" \
  --tcp-listen off --token-file "$NET/relay-1.token" --state-dir "$SD/relaytok" \
  --nats tls://127.0.0.1:4300 --nats-tls-ca "$PKI/ca.pem"
netns_wait_relay_ready core "$SD/relaytok" relaytok 30
tok=$(netns_exec core "$VEIL_BIN" relay status --json --state-dir "$SD/relaytok" | jq -r '.cluster.store | "\(.connected) \(.detail)"')
[[ "$tok" == "true "*"token, TLS, own CA"* ]] || netns_fail "token relay: $tok"
netns_exec core curl -sf "http://127.0.0.1:8300/connz" | jq -e '[.connections[] | select((.tls_version // "") != "")] | length >= 1' >/dev/null ||
  netns_fail "the token relay's connection is not TLS"
netns_stop relaytok 5
netns_stop natstok 5
ok "connected with a token over TLS: $tok"

step "a relay joins a NATS server in operator mode with a credentials file (JWT and NKey)"
mkdir -p "$NETNS_DIR/natsop"
read -r ACC ACC_JWT SYS SYS_JWT < <(/usr/bin/python3 "$ROOT/tests/e2e/lib/nats_keys.py" operator "$PKI")
cat >"$NETNS_DIR/natsop.conf" <<CONF
listen: 127.0.0.1:4301
http: 127.0.0.1:8301
operator: "$PKI/operator.jwt"
system_account: $SYS
resolver: MEMORY
resolver_preload: { $ACC: "$ACC_JWT", $SYS: "$SYS_JWT" }
jetstream { store_dir: "$NETNS_DIR/natsop" }
CONF
netns_spawn core natsop nats-server -c "$NETNS_DIR/natsop.conf"
netns_wait_for "operator-mode NATS server ready" 30 netns_exec core curl -sf "http://127.0.0.1:8301/healthz?js-enabled-only=true" >/dev/null
refused no-creds "refused this relay.*--nats-creds" nats://127.0.0.1:4301
netns_spawn core relayop "$VEIL_BIN" relay --listen "${R[0]}:7100" --tcp-listen off \
  --token-file "$NET/relay-1.token" --state-dir "$SD/relayop" --nats nats://127.0.0.1:4301 --nats-creds "$PKI/relay.creds"
netns_wait_relay_ready core "$SD/relayop" relayop 30
op=$(netns_exec core "$VEIL_BIN" relay status --json --state-dir "$SD/relayop" | jq -r '.cluster.store | "\(.connected) \(.detail)"')
[[ "$op" == "true "*"credentials file"* ]] || netns_fail "creds relay: $op"
netns_exec core curl -sf "http://127.0.0.1:8301/connz?auth=true" | jq -e --arg a "$ACC" '[.connections[] | select(.account == $a)] | length >= 1' >/dev/null ||
  netns_fail "the creds relay is not in account veil: $(netns_exec core curl -sf "http://127.0.0.1:8301/connz?auth=true")"
netns_stop relayop 5
netns_stop natsop 5
ok "connected with a credentials file, in account veil: $op"

step "nodes: a homed on relay 1, b on relay 2 (relayed only)"
# The ranking times a TCP connection to each relay; dropping some SYNs makes the others win.
block_tcp() { # block_tcp NS IP...
  local ns=$1 ip
  shift
  netns_exec "$ns" nft add table inet veiltest
  netns_exec "$ns" nft add chain inet veiltest out '{ type filter hook output priority 0; }'
  for ip in "$@"; do
    netns_exec "$ns" nft add rule inet veiltest out ip daddr "$ip" tcp dport 443 drop
  done
}
block_tcp a "${R[1]}" "${R[2]}"
block_tcp b "${R[0]}" "${R[2]}"
veil_node a --no-direct
veil_node b --no-direct
clients() { relay_status "$1" | jq .clients; }
homed() { [ "$(clients 1)" = 1 ] && [ "$(clients 2)" = 1 ]; }
netns_wait_for "a on relay 1, b on relay 2" 10 homed || true
[ "$(clients 1)" = 1 ] && [ "$(clients 2)" = 1 ] && [ "$(clients 3)" = 0 ] \
  || netns_fail "expected a on relay 1 and b on relay 2; clients: $(clients 1) $(clients 2) $(clients 3)"
A4=$(veil_ipv4 a)
B4=$(veil_ipv4 b)
ok "a $A4 on relay 1, b $B4 on relay 2"

step "a and b find each other across relays"
netns_wait_for "first ping a -> b" 20 netns_exec a ping -c 1 -W 1 "$B4" >/dev/null \
  || netns_fail "no ping a -> b across relays"
netns_exec b ping -c 3 -i 0.2 -W 2 "$A4" >/dev/null || netns_fail "ping b -> a lost packets"
path=$(netns_exec a "$VEIL_BIN" peers --json --state-dir "$SD/a" | jq -r '.[0].path')
[ "$path" = relayed ] || netns_fail "a's path to b is $path, expected relayed"
hits=$(relay_status 1 | jq '.counters.cluster_hits')
moved=$(relay_status 1 | jq '.counters.transferred')
[ "$hits" -ge 1 ] && [ "$moved" -ge 3 ] || netns_fail "relay 1: cluster_hits $hits, transferred $moved"
ok "pings both ways; relay 1 found b in NATS ($hits hits) and carried $moved datagrams to relay 2"

# transfer NAME MIB: sends MIB MiB of random data a -> b over TCP, checks sha256 at b.
SRC=$NETNS_DIR/src.bin
head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom >"$SRC"
SUM=$(sha256sum "$SRC" | cut -d' ' -f1)
start_sink() {
  rm -f "$NETNS_DIR/dst.bin"
  netns_spawn b "sink$1" socat -u "TCP-LISTEN:$XFER_PORT,reuseaddr" "CREATE:$NETNS_DIR/dst.bin"
  netns_wait_tcp_listen b "$XFER_PORT" 10
}
check_sink() {
  netns_wait_exit "sink$1" 120 || netns_fail "the receiver failed"
  [ "$(sha256sum "$NETNS_DIR/dst.bin" | cut -d' ' -f1)" = "$SUM" ] || netns_fail "$1: sha256 differs"
}

step "transfer ${SIZE_MIB} MiB a -> b through relay 1 and relay 2"
start_sink 1
t0=$(date +%s.%N)
netns_exec a socat -u "FILE:$SRC" "TCP:$B4:$XFER_PORT" || netns_fail "sender failed"
check_sink 1
t1=$(date +%s.%N)
ok "sha256 matches ($(python3 -c "print(f'{$SIZE_MIB*8/($t1-$t0):.0f}')") Mbit/s relayed twice)"

step "kill relay 1 (a's home) during a transfer and a 20 ms ping"
start_sink 2
netns_spawn a pinger ping -D -i 0.02 -W 1 -c 400 "$B4"
netns_spawn a sender socat -u "FILE:$SRC" "TCP:$B4:$XFER_PORT"
sleep 2
kill -KILL "${NETNS_PID[relay1]}"
wait "${NETNS_PID[relay1]}" 2>/dev/null || true
ok "relay 1 killed at $(date +%T.%N | cut -c1-12)"
netns_wait_exit sender 180 || netns_fail "the transfer did not finish after the failover"
check_sink 2
netns_wait_exit pinger 30 || true
gap=$(python3 - "${NETNS_LOG[pinger]}" <<'EOF'
import re, sys
ts = [float(m.group(1)) for m in re.finditer(r"^\[(\d+\.\d+)\].*bytes from", open(sys.argv[1]).read(), re.M)]
print(f"{max(b - a for a, b in zip(ts, ts[1:])):.3f}" if len(ts) > 1 else "inf")
EOF
)
python3 -c "import sys; sys.exit(0 if float('$gap') <= 2.0 else 1)" \
  || netns_fail "longest ping gap during the failover: ${gap}s (want <= 2 s)"
ok "transfer intact; longest ping gap ${gap}s; relay clients now: 2 -> $(clients 2), 3 -> $(clients 3)"

step "restart NATS server 1: the rendezvous keeps its names"
netns_stop nats1 5
sleep 1
start_nats 1
netns_wait_for "NATS server 1 back" 30 nats_ready 1
netns_stop node-b 5
# b comes back as a subnet router: its route must reach a, homed on another relay.
LAN=198.19.254
[ "$NETNS_SUBNET" != "$LAN" ] || LAN=198.19.253
veil_node b --no-direct --advertise-routes "$LAN.0/24"
[ "$(veil_ipv4 b)" = "$B4" ] || netns_fail "b came back with another address"
a_routes() { netns_exec a "$VEIL_BIN" status --json --state-dir "$SD/a" | jq -r '.routes | join("; ")'; }
netns_wait_for "b's route at a" 10 bash -c "[ -n \"\$(ip netns exec $(netns_name a) $VEIL_BIN status --json --state-dir $SD/a | jq -r '.routes[]?')\" ]" \
  || netns_fail "a never saw b's route across relays"
grep -q "$LAN.0/24 via" <<<"$(a_routes)" || netns_fail "a's routes are '$(a_routes)'"
ok "b's route $LAN.0/24 reached a through the shared rendezvous: $(a_routes)"
netns_wait_for "ping a -> b after the NATS restart" 20 netns_exec a ping -c 1 -W 1 "$B4" >/dev/null \
  || netns_fail "a cannot reach the restarted b"
netns_exec a ping -c 5 -i 0.2 -W 2 "$B4" >/dev/null || netns_fail "pings lost after the NATS restart"
for i in 2 3; do
  netns_wait_for "relay $i NATS connected" 20 \
    bash -c "[ \"\$(ip netns exec $(netns_name core) $VEIL_BIN relay status --json --state-dir $SD/relay$i | jq -r .cluster.store.connected)\" = true ]"
done
ok "b re-registered, a found it again, NATS connected on both relays"

step "relay 1 back, a home there again; cut UDP between the relays: the NATS bus carries it"
start_relay 1
netns_stop node-a 5
veil_node a --no-direct
netns_wait_for "a on relay 1 again" 15 bash -c "[ \"\$(ip netns exec $(netns_name core) $VEIL_BIN relay status --json --state-dir $SD/relay1 | jq .clients)\" = 1 ]" \
  || netns_fail "a did not come back to relay 1"
netns_exec core nft add table inet veilrelays
netns_exec core nft add chain inet veilrelays out '{ type filter hook output priority 0; }'
netns_exec core nft add rule inet veilrelays out ip saddr "{ ${R[0]}, ${R[1]}, ${R[2]} }" \
  ip daddr "{ ${R[0]}, ${R[1]}, ${R[2]} }" udp dport 7000 drop
before=$(relay_status 2 | jq '.counters.bus_frames_received')
netns_exec a ping -c 20 -i 0.1 -W 3 "$B4" >/dev/null || netns_fail "pings lost with the relays' UDP cut"
netns_exec b ping -c 5 -i 0.1 -W 3 "$A4" >/dev/null || netns_fail "pings b -> a lost with the relays' UDP cut"
after=$(relay_status 2 | jq '.counters.bus_frames_received')
ok "pings both ways; relay 2 received $((after - before)) frames on the bus"
netns_exec core "$VEIL_BIN" relay status --state-dir "$SD/relay2"

step "PASS"
