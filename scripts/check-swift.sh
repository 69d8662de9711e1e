#!/usr/bin/env bash
# The iOS app's check that runs on Linux, where there is no Swift compiler (docs/ios.md says
# what it covers and what only a Mac can):
#   1. veil-ffi builds as a static library for aarch64-apple-ios (a change that breaks the
#      iOS build fails here), with no `ring` and no `tun-rs` in its dependency tree, and no
#      native library that ios/VeilKit/Package.swift does not link;
#   2. the Swift bindings are generated (scripts/gen-bindings.sh swift), and the iOS library
#      carries the same API (its own bindings are generated and compared);
#   3. every Veil name the Swift under ios/ uses exists in those bindings, with its labels
#      (tests/ffi/swift/check_swift_api.py), and the checker fails on misspelled copies of
#      the sources (its self-test).
#
#   scripts/check-swift.sh
#
# Needs the rustup target aarch64-apple-ios (scripts/setup.sh adds it) and python3.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
START=$SECONDS
TARGET=aarch64-apple-ios
say() { printf 'check-swift: %s\n' "$*"; }
die() { printf 'check-swift: FAILED: %s\n' "$*" >&2; exit 1; }
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

rustup target list --installed 2>/dev/null | grep -qx "$TARGET" \
  || die "the rustup target $TARGET is missing; run scripts/setup.sh"

say "1/3 veil-ffi as a static library for $TARGET"
# The same command as scripts/build-ios.sh (debug here), so the two share the build.
IPHONEOS_DEPLOYMENT_TARGET=16.0 cargo rustc --quiet -p veil-ffi --lib --target "$TARGET" \
  --crate-type staticlib -- --print native-static-libs 2>"$TMP/rustc.log" \
  || { cat "$TMP/rustc.log" >&2; die "veil-ffi does not build for $TARGET"; }
LIB="target/$TARGET/debug/libveil_ffi.a"
[ -s "$LIB" ] || die "$LIB was not built"
tree="$(cargo tree -p veil-ffi --target "$TARGET" -e normal --prefix none)"
for crate in ring tun-rs; do
  if grep -q "^$crate v" <<<"$tree"; then
    cargo tree -p veil-ffi --target "$TARGET" -e normal -i "$crate" >&2 || true
    die "$crate is in veil-ffi's dependencies for $TARGET (the phones' builds are pure Rust, issue #7)"
  fi
done
# Native libraries the Rust code needs must be linked by VeilKit (libSystem, libc and libm
# are always there).
native="$(sed -n 's/.*native-static-libs: //p' "$TMP/rustc.log" | tail -1)"
[ -n "$native" ] || die "rustc did not print the native libraries of $LIB"
for flag in $native; do
  case "$flag" in
    -lSystem | -lc | -lm | -framework) continue ;;
    -l*) name="${flag#-l}" kind=linkedLibrary ;;
    *) name="$flag" kind=linkedFramework ;;
  esac
  grep -q "\.$kind(\"$name\")" ios/VeilKit/Package.swift \
    || die "$LIB needs $flag; add .$kind(\"$name\") to the linkerSettings of ios/VeilKit/Package.swift"
done
say "   $LIB: $(du -h "$LIB" | cut -f1), no ring or tun-rs, native libraries: $native"

say "2/3 Swift bindings"
scripts/gen-bindings.sh swift >/dev/null
BINDINGS=bindings/swift/veil_ffi.swift
[ -s "$BINDINGS" ] || die "$BINDINGS was not generated"
target/debug/uniffi-bindgen generate --library "$LIB" --language swift --out-dir "$TMP/ios" \
  --no-format >/dev/null
diff -r bindings/swift "$TMP/ios" >"$TMP/diff" \
  || { cat "$TMP/diff" >&2; die "the $TARGET library's API differs from the host's bindings"; }
say "   $BINDINGS ($(grep -c '' "$BINDINGS") lines), the same from the $TARGET library"

say "3/3 the Swift under ios/ against the bindings"
CHECK=tests/ffi/swift/check_swift_api.py
python3 "$CHECK" --bindings "$BINDINGS" --sources ios --root "$ROOT"
python3 "$CHECK" --bindings "$BINDINGS" --sources ios --self-test

say "passed in $((SECONDS - START)) s (compiling and linking the Swift needs a Mac: docs/ios.md)"
