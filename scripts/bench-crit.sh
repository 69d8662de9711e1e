#!/usr/bin/env bash
# The per-packet micro-benchmarks against the committed baseline (`scripts/bench.sh crit`
# runs it): criterion's datapath benches (seal, open, relay forward, handshake) are run, and
# each median is compared with docs/perf-baseline.tsv, so that a regression shows as a ratio
# above 1. Ends with one line per bench:
#   RESULT crit BENCH median_ns=… baseline_ns=… ratio=… [SLOWER]
# SLOWER marks a ratio above THRESHOLD (default 1.15). `--save` writes the medians of this
# run as the new baseline (commit it with the change that made them so).
# Not a test: nothing fails on a number; CI does not run it (timings on shared machines vary).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BASELINE=docs/perf-baseline.tsv
THRESHOLD=${THRESHOLD:-1.15}
SAVE=0
for a in "$@"; do
  case "$a" in
    --save) SAVE=1 ;;
    *) echo "unknown argument: $a (only --save)" >&2; exit 2 ;;
  esac
done
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
command -v jq >/dev/null || { echo "jq missing: run scripts/setup.sh" >&2; exit 1; }
cargo bench -p veil-proto --bench datapath -- --warm-up-time 1 --measurement-time 3 >/dev/null 2>&1
DIR=${CARGO_TARGET_DIR:-target}/criterion
# Every benchmark's latest median, in ns, as "group/function<TAB>median".
current=$(find "$DIR" -path '*/new/estimates.json' | sort | while read -r f; do
  id=${f#"$DIR"/}
  id=${id%/new/estimates.json}
  printf '%s\t%.0f\n' "$id" "$(jq -r .median.point_estimate "$f")"
done)
[ -n "$current" ] || { echo "no criterion results under $DIR" >&2; exit 1; }
echo "# criterion medians vs $BASELINE, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores"
while IFS=$'\t' read -r id ns; do
  base=$(awk -F'\t' -v id="$id" '$1 == id { print $2 }' "$BASELINE" 2>/dev/null || true)
  if [ -z "$base" ]; then
    echo "RESULT crit $id median_ns=$ns baseline_ns=- ratio=-"
    continue
  fi
  awk -v id="$id" -v n="$ns" -v b="$base" -v t="$THRESHOLD" 'BEGIN {
    r = n / b; printf "RESULT crit %s median_ns=%d baseline_ns=%d ratio=%.2f%s\n", id, n, b, r, (r > t ? " SLOWER" : "") }'
done <<<"$current"
if [ "$SAVE" = 1 ]; then
  {
    echo "# criterion medians (ns) of core/proto/benches/datapath.rs: the baseline scripts/bench-crit.sh compares with."
    echo "# Saved $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) cores, $(uname -r), $(rustc --version)."
    echo "$current"
  } >"$BASELINE"
  echo "saved $BASELINE"
fi
