#!/usr/bin/env bash
# The shared rendezvous at scale (issue #9): N simulated nodes (real hybrid handshakes and
# registrations) register with one relay whose rendezvous is shared, through the in-memory
# store and through a NATS JetStream server started here on loopback; then a node of a second
# relay looks up random registered addresses. Prints one RESULT line per store: heap per node,
# NATS server memory per node, registration rate, lookup p50/p99.
#
#   scripts/bench.sh cluster [N...]      default N = 100000 (about 3 minutes in all)
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
cleanup() {
  [ -z "$NATS_PID" ] || { kill "$NATS_PID" 2>/dev/null || true; wait "$NATS_PID" 2>/dev/null || true; }
  rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
nats-server -a 127.0.0.1 -p "$port" -js -sd "$DIR/js" >"$DIR/nats.log" 2>&1 &
NATS_PID=$!
for _ in $(seq 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done

echo "# shared rendezvous at scale, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores; $(nats-server --version)"
cargo bench -p veil-sim --bench cluster_scale --quiet -- "${sizes[@]}" 2>/dev/null | grep '^RESULT'
cargo bench -p veil-sim --bench cluster_scale --quiet -- --nats "nats://127.0.0.1:$port" \
  --nats-pid "$NATS_PID" "${sizes[@]}" 2>/dev/null | grep '^RESULT'
