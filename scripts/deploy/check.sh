#!/usr/bin/env bash
# Validates the deployment files in scripts/deploy/ where no container engine or cluster
# runs: the YAML parses, the Kubernetes objects are complete and refer to each other
# consistently, every `veil` command line in them uses flags the built binary accepts
# (its own --help, not a list kept here), and the Dockerfile installs what scripts/setup.sh
# and the code say it needs. Details in check.py; `kubectl kustomize` also renders the
# manifests when kubectl is installed (it needs no cluster).
#
#   scripts/deploy/check.sh            builds target/release/veil first if it is missing or
#                                      older than the sources (cargo build --release -p veil-cli)
#   VEIL_BIN=/path/to/veil scripts/deploy/check.sh    checks against that binary, no build
#
# Prints one line per problem; exit status 1 if there is any.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

log() { printf 'check: %s\n' "$*"; }
die() {
  printf 'check: FAIL %s\n' "$*" >&2
  exit 1
}

# Debian's python3 first: that is where scripts/setup.sh installs python3-yaml (a python3
# earlier on PATH, e.g. pyenv's, may lack it).
PYTHON=
for py in /usr/bin/python3 python3; do
  if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import yaml, tomllib' 2>/dev/null; then
    PYTHON=$py
    break
  fi
done
[ -n "$PYTHON" ] \
  || die "no python3 that imports yaml (PyYAML) and tomllib (Python 3.11+): run scripts/setup.sh (python3-yaml)"

if [ -n "${VEIL_BIN:-}" ]; then
  [ -x "$VEIL_BIN" ] || die "VEIL_BIN=$VEIL_BIN is not an executable"
else
  VEIL_BIN=$ROOT/target/release/veil
  # Sources that go into the binary (tests and benches do not), newer than it: rebuild, so
  # that the flags checked are those of this tree.
  stale=
  if [ -x "$VEIL_BIN" ]; then
    stale=$(find core Cargo.toml Cargo.lock .cargo \( -name tests -o -name benches \) -prune -o \
      -type f \( -name '*.rs' -o -name Cargo.toml -o -name Cargo.lock -o -name config.toml \) \
      -newer "$VEIL_BIN" -print 2>/dev/null | head -n 1)
  fi
  if [ ! -x "$VEIL_BIN" ] || [ -n "$stale" ]; then
    if ! command -v cargo >/dev/null 2>&1 && [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]; then
      export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
    fi
    log "building veil (${stale:+$stale is newer than the binary; }cargo build --release -p veil-cli)"
    cargo build --release -p veil-cli || die "cargo build --release -p veil-cli failed"
  fi
fi
log "veil: $("$VEIL_BIN" --version) ($VEIL_BIN)"

rc=0
"$PYTHON" scripts/deploy/check.py "$ROOT" "$VEIL_BIN" || rc=1

if command -v kubectl >/dev/null 2>&1; then
  if out=$(kubectl kustomize scripts/deploy/k8s 2>&1); then
    log "kubectl kustomize scripts/deploy/k8s: renders $(printf '%s\n' "$out" | grep -c '^kind:') objects"
  else
    printf 'check: FAIL kubectl kustomize scripts/deploy/k8s: %s\n' "$out"
    rc=1
  fi
else
  log "kubectl not installed: kustomize rendering not checked"
fi

if [ "$rc" -eq 0 ]; then
  log "all deployment checks passed"
else
  log "deployment checks FAILED (lines starting with 'check: FAIL' above)"
fi
exit "$rc"
