#!/usr/bin/env bash
# End-to-end: overlay DNS. Node a runs with `--name alpha`; node b resolves through its own
# node (its resolv.conf, bind-mounted by `ip netns exec`, names b's overlay address, where
# `veil up` answers DNS): `getent hosts alpha.veil`, `ping alpha.veil` and
# `curl http://alpha.veil:8080/` reach a; an unknown name gets NXDOMAIN within a relay round
# trip; a foreign name is REFUSED at once; `veil peers` on b names a alpha (and a shows b,
# which has no name, without one); a third node asking for the same name runs without it and
# says so in `veil status`.
#
# Needs root, curl (scripts/setup.sh).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source-path=SCRIPTDIR/../..
# shellcheck source=scripts/lib/netns.sh
source "$ROOT/scripts/lib/netns.sh"

step() { printf '\n==> %s\n' "$*"; }
ok() { printf '    ok: %s\n' "$*"; }
command -v curl >/dev/null 2>&1 || { echo "FAIL: curl missing; run scripts/setup.sh" >&2; exit 1; }

netns_init
step "relay, node a (--name alpha), node b"
veil_network a b c
veil_node a --name alpha
veil_node b
A4=$(veil_ipv4 a)
B4=$(veil_ipv4 b)
name=$(netns_exec a "$VEIL_BIN" status --json --state-dir "$NETNS_DIR/state/a" | jq -r .name)
[ "$name" = alpha ] || netns_fail "veil status --json of a shows name '$name'"
# The output is read whole before grep looks at it: `grep -q` stops reading at the first
# match, and under pipefail the writer's broken pipe would fail the line.
out=$(netns_exec a "$VEIL_BIN" status --state-dir "$NETNS_DIR/state/a")
grep -Eq '^ *name +alpha' <<<"$out" \
  || netns_fail "veil status of a does not show its name"
mkdir -p "/etc/netns/$(netns_name b)"
printf 'nameserver %s\noptions timeout:2 attempts:1\n' "$B4" >"/etc/netns/$(netns_name b)/resolv.conf"
ok "a is alpha ($A4); b ($B4) resolves through its own node"

step "getent, ping and curl by name from b"
got=$(netns_exec b getent ahostsv4 alpha.veil | awk 'NR == 1 { print $1 }')
[ "$got" = "$A4" ] || netns_fail "alpha.veil resolved to '$got', not $A4"
A6=$(netns_exec a "$VEIL_BIN" status --json --state-dir "$NETNS_DIR/state/a" | jq -r .overlay_ipv6)
got6=$(netns_exec b getent ahostsv6 alpha.veil | awk 'NR == 1 { print $1 }')
[ "$got6" = "$A6" ] || netns_fail "alpha.veil AAAA resolved to '$got6', not $A6"
netns_exec b ping -c 2 -i 0.2 -W 2 alpha.veil >/dev/null || netns_fail "ping alpha.veil failed"
mkdir -p "$NETNS_DIR/www"
echo "hello from alpha" >"$NETNS_DIR/www/index.html"
netns_spawn a http /usr/bin/python3 -m http.server 8080 --bind "$A4" --directory "$NETNS_DIR/www"
netns_wait_tcp_listen a 8080 10
body=$(netns_exec b curl -sf --max-time 5 http://alpha.veil:8080/) || netns_fail "curl http://alpha.veil:8080/ failed"
[ "$body" = "hello from alpha" ] || netns_fail "curl got '$body'"
ok "A $got, AAAA $got6, ping and curl by name"

step "veil ping NAME"
out=$(netns_exec b "$VEIL_BIN" ping alpha -c 3 -i 200 --state-dir "$NETNS_DIR/state/b") \
  || netns_fail "veil ping alpha failed: $out"
grep -q "^PING alpha.veil ($A4)" <<<"$out" || netns_fail "veil ping did not resolve alpha to $A4: $out"
[ "$(grep -c "^reply from $A4" <<<"$out")" = 3 ] || netns_fail "veil ping got fewer than 3 replies: $out"
grep -q "3 sent, 0 lost; rtt min/avg/max .* path: direct" <<<"$out" || netns_fail "veil ping summary: $out"
if out=$(netns_exec b "$VEIL_BIN" ping nobody -c 1 --state-dir "$NETNS_DIR/state/b" 2>&1); then
  netns_fail "veil ping nobody succeeded: $out"
fi
grep -q "no member is named nobody.veil" <<<"$out" || netns_fail "veil ping nobody: $out"
ok "$(tail -n 1 <<<"$(netns_exec b "$VEIL_BIN" ping alpha.veil -c 2 -i 100 --state-dir "$NETNS_DIR/state/b")")"

step "veil peers names a on b (and b, without a name, stays unnamed on a)"
peer_name() { # NODE OVERLAY_IPV4: the name `veil peers --json` on NODE shows for that peer
  netns_exec "$1" "$VEIL_BIN" peers --json --state-dir "$NETNS_DIR/state/$1" |
    jq -r --arg ip "$2" '.[] | select(.overlay_ipv4 == $ip) | .name // "null"'
}
netns_wait_for "a named alpha in b's peers" 10 bash -c "[ \"\$(ip netns exec $(netns_name b) $VEIL_BIN peers --json --state-dir $NETNS_DIR/state/b | jq -r '.[] | .name // empty')\" = alpha ]" ||
  netns_fail "b's peers: $(netns_exec b "$VEIL_BIN" peers --json --state-dir "$NETNS_DIR/state/b")"
[ "$(peer_name b "$A4")" = alpha ] || netns_fail "b lists alpha, but not for a's address $A4"
[ "$(peer_name a "$B4")" = null ] || netns_fail "a names b '$(peer_name a "$B4")', which has no name"
netns_exec b "$VEIL_BIN" peers --state-dir "$NETNS_DIR/state/b" | awk 'NR == 1 && $2 != "NAME" { exit 1 } NR == 2 && $2 != "alpha" { exit 1 }' ||
  netns_fail "the peers table on b: $(netns_exec b "$VEIL_BIN" peers --state-dir "$NETNS_DIR/state/b")"
ok "b: $(netns_exec b "$VEIL_BIN" peers --state-dir "$NETNS_DIR/state/b" | awk 'NR == 2 { print $1, $2, $3 }')"

step "unknown and foreign names"
# rcode and milliseconds of one query to b's node, straight over UDP.
probe() {
  netns_exec b /usr/bin/python3 - "$B4" "$1" <<'PY'
import socket, struct, sys, time
server, name = sys.argv[1], sys.argv[2]
q = struct.pack(">HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
t = time.monotonic()
s.sendto(q, (server, 53))
data, _ = s.recvfrom(4096)
ms = (time.monotonic() - t) * 1000
assert data[:2] == b"\x42\x42", "wrong id"
print(data[3] & 0x0F, int(ms))
PY
}
read -r rc ms <<<"$(probe nobody.veil)"
[ "$rc" = 3 ] || netns_fail "nobody.veil: rcode $rc, not NXDOMAIN (3)"
[ "$ms" -lt 500 ] || netns_fail "NXDOMAIN took $ms ms"
ok "nobody.veil: NXDOMAIN in $ms ms"
read -r rc ms <<<"$(probe example.com)"
[ "$rc" = 5 ] || netns_fail "example.com: rcode $rc, not REFUSED (5)"
ok "example.com: REFUSED in $ms ms (other names are the system resolvers' business)"
netns_exec b getent hosts nobody.veil >/dev/null && netns_fail "getent resolved nobody.veil"

step "a name already held"
veil_node c --name alpha
for _ in $(seq 50); do
  taken=$(netns_exec c "$VEIL_BIN" status --json --state-dir "$NETNS_DIR/state/c" | jq -r .name_taken)
  [ "$taken" = true ] && break
  sleep 0.2
done
[ "$taken" = true ] || netns_fail "c asked for the name alpha, held by a, and its status does not say it is taken"
out=$(netns_exec c "$VEIL_BIN" status --state-dir "$NETNS_DIR/state/c")
grep -q 'held by another member' <<<"$out" \
  || netns_fail "veil status of c does not explain the name"
got=$(netns_exec b getent ahostsv4 alpha.veil | awk 'NR == 1 { print $1 }')
[ "$got" = "$A4" ] || netns_fail "after c asked for it, alpha.veil resolves to '$got', not a's $A4"
grep -q "another member holds the DNS name alpha" "${NETNS_LOG[node-c]}" || netns_fail "c's log does not warn about the name"
ok "c runs without the name; alpha.veil is still a"
echo "PASS: dns"
