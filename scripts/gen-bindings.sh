#!/usr/bin/env bash
# Generates the Kotlin, Swift and Python bindings of veil-ffi from the built library, with
# the uniffi-bindgen of the workspace (pinned to the library's uniffi version).
#
#   scripts/gen-bindings.sh [--release] [kotlin|swift|python ...]
#
# Builds veil-ffi for this machine (cdylib) and writes, git-ignored:
#   bindings/kotlin/uniffi/veil_ffi/veil_ffi.kt   (JNA; load libveil_ffi.so via jna.library.path)
#   bindings/swift/veil_ffi.swift, veil_ffiFFI.h, veil_ffiFFI.modulemap
#   bindings/python/veil_ffi.py + libveil_ffi.so  (import with bindings/python on sys.path)
# The phones' builds (scripts/build-ios.sh, android/'s Gradle task) call this with --release.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PROFILE=debug
CARGO_PROFILE=()
LANGS=()
for arg in "$@"; do
  case "$arg" in
    --release) PROFILE=release CARGO_PROFILE=(--release) ;;
    kotlin | swift | python) LANGS+=("$arg") ;;
    -h | --help)
      sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "gen-bindings: unknown argument $arg (languages: kotlin swift python; --release)" >&2
      exit 2
      ;;
  esac
done
[ "${#LANGS[@]}" -gt 0 ] || LANGS=(kotlin swift python)

# (The odd expansion keeps macOS's bash 3.2 from calling an empty array unbound.)
cargo build --quiet ${CARGO_PROFILE[@]+"${CARGO_PROFILE[@]}"} -p veil-ffi -p uniffi-bindgen
case "$(uname -s)" in
  Darwin) LIB="$ROOT/target/$PROFILE/libveil_ffi.dylib" ;;
  *) LIB="$ROOT/target/$PROFILE/libveil_ffi.so" ;;
esac
[ -f "$LIB" ] || { echo "gen-bindings: $LIB was not built" >&2; exit 1; }
BINDGEN="$ROOT/target/$PROFILE/uniffi-bindgen"

for lang in "${LANGS[@]}"; do
  out="$ROOT/bindings/$lang"
  rm -rf "$out"
  mkdir -p "$out"
  "$BINDGEN" generate --library "$LIB" --language "$lang" --out-dir "$out" --no-format >/dev/null
  if [ "$lang" = python ]; then
    cp "$LIB" "$out/"
  fi
  echo "gen-bindings: $lang -> ${out#"$ROOT"/}"
done
