#!/usr/bin/env bash
# The shared rendezvous at scale (issue #9): N simulated nodes (real hybrid handshakes and
# registrations) register with one relay whose rendezvous is shared, through the in-memory
# store, through a NATS JetStream server started here on loopback, and through one that takes
# only TLS (a CA made here) and a user with a password, as production NATS would; then a node
# of a second relay looks up random registered addresses. Prints one RESULT line per store:
# heap per node, NATS server memory per node, registration rate, lookup p50/p99.
#
#   scripts/bench.sh cluster [N...]      default N = 100000 (about 5 minutes in all)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
sizes=("$@")
[ "${#sizes[@]}" -gt 0 ] || sizes=(100000)
command -v nats-server >/dev/null 2>&1 || bash scripts/setup.sh >/dev/null
if ! command -v cargo >/dev/null 2>&1 && [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]; then
  export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi

DIR=$(mktemp -d "${TMPDIR:-/tmp}/veil-bench-cluster.XXXXXX")
NATS_PID=
stop_nats() {
  [ -z "$NATS_PID" ] || { kill "$NATS_PID" 2>/dev/null || true; wait "$NATS_PID" 2>/dev/null || true; }
  NATS_PID=
}
cleanup() {
  stop_nats
  rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_nats ARGS...: a NATS server on a free loopback port ($port), JetStream in a fresh dir.
start_nats() {
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  rm -rf "$DIR/js"
  nats-server -a 127.0.0.1 -p "$port" -js -sd "$DIR/js" "$@" >"$DIR/nats.log" 2>&1 &
  NATS_PID=$!
  for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
}

echo "# shared rendezvous at scale, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores; $(nats-server --version)"
cargo bench -p veil-sim --bench cluster_scale --quiet -- "${sizes[@]}" 2>/dev/null | grep '^RESULT'
start_nats
cargo bench -p veil-sim --bench cluster_scale --quiet -- --nats "nats://127.0.0.1:$port" \
  --nats-pid "$NATS_PID" "${sizes[@]}" 2>/dev/null | grep '^RESULT'
stop_nats

# The same over TLS (ECDSA P-256, a CA made here) with a user and password.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$DIR/ca.key" \
  -out "$DIR/ca.pem" -days 1 -subj /CN=veil-bench-ca 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$DIR/server.key" \
  -out "$DIR/server.csr" -subj /CN=veil-bench-nats -addext subjectAltName=IP:127.0.0.1 2>/dev/null
openssl x509 -req -in "$DIR/server.csr" -CA "$DIR/ca.pem" -CAkey "$DIR/ca.key" -CAcreateserial \
  -out "$DIR/server.pem" -days 1 -copy_extensions copy 2>/dev/null
pw=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
start_nats --tls --tlscert "$DIR/server.pem" --tlskey "$DIR/server.key" --user relay --pass "$pw"
cargo bench -p veil-sim --bench cluster_scale --quiet -- --nats "tls://127.0.0.1:$port" \
  --nats-pid "$NATS_PID" --nats-tls-ca "$DIR/ca.pem" --nats-user relay --nats-password "$pw" \
  "${sizes[@]}" 2>/dev/null | grep '^RESULT'
