#!/usr/bin/env bash
# Builds what the iOS app links (docs/ios.md): the Rust core as VeilFFI.xcframework and its
# Swift bindings, both into ios/VeilKit (git-ignored).
#
#   scripts/build-ios.sh [--debug]
#
# On a Mac with Xcode:
#   1. veil-ffi as a static library for aarch64-apple-ios (devices), aarch64-apple-ios-sim
#      and x86_64-apple-ios (simulators; joined with lipo);
#   2. the Swift bindings (veil_ffi.swift, veil_ffiFFI.h, veil_ffiFFI.modulemap);
#   3. ios/VeilKit/VeilFFI.xcframework (xcodebuild -create-xcframework, the header and module
#      map in each slice's Headers) and ios/VeilKit/Sources/VeilKit/veil_ffi.swift.
# On Linux it does what it can without Apple's SDK: the aarch64-apple-ios static library and
# the Swift bindings, then stops before xcodebuild (scripts/check-swift.sh is the check that
# runs there).
set -euo pipefail  # (bash 3.2 of macOS included: no empty "${array[@]}" under -u)

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PROFILE=release
CARGO_PROFILE=(--release)
case "${1:-}" in
  "") ;;
  --debug) PROFILE=debug CARGO_PROFILE=() ;;
  -h | --help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "build-ios: unknown argument $1 (--debug)" >&2; exit 2 ;;
esac
say() { printf 'build-ios: %s\n' "$*"; }
die() { printf 'build-ios: ERROR: %s\n' "$*" >&2; exit 1; }

# The oldest iOS the app supports (ios/project.yml, Package.swift); the Rust code is built
# for it too.
export IPHONEOS_DEPLOYMENT_TARGET=16.0
DEVICE=aarch64-apple-ios
SIMULATORS=(aarch64-apple-ios-sim x86_64-apple-ios)
KIT=ios/VeilKit
STAGE="target/ios/$PROFILE"  # headers and the simulators' fat library

build_lib() { # TARGET: target/TARGET/PROFILE/libveil_ffi.a
  say "veil-ffi for $1 ($PROFILE)"
  # The crate's cdylib cannot be linked without Apple's linker: only the staticlib is built.
  cargo rustc ${CARGO_PROFILE[@]+"${CARGO_PROFILE[@]}"} -p veil-ffi --lib --target "$1" --crate-type staticlib \
    -- --print native-static-libs
  [ -s "target/$1/$PROFILE/libveil_ffi.a" ] || die "target/$1/$PROFILE/libveil_ffi.a was not built"
}

# The generated veil_ffi.swift goes next to VeilKit's own sources, the header and module map
# into the xcframework's Headers (as module.modulemap, which is what Xcode looks for).
stage_bindings() {
  rm -rf "$STAGE/headers"
  mkdir -p "$STAGE/headers"
  cp bindings/swift/veil_ffiFFI.h "$STAGE/headers/"
  cp bindings/swift/veil_ffiFFI.modulemap "$STAGE/headers/module.modulemap"
  cp bindings/swift/veil_ffi.swift "$KIT/Sources/VeilKit/veil_ffi.swift"
  say "bindings: $KIT/Sources/VeilKit/veil_ffi.swift, $STAGE/headers/"
}

if [ "$(uname -s)" != Darwin ]; then
  rustup target list --installed 2>/dev/null | grep -qx "$DEVICE" \
    || die "the rustup target $DEVICE is missing; run scripts/setup.sh"
  build_lib "$DEVICE"
  gen=(swift)
  [ "$PROFILE" = release ] && gen=(--release swift)
  scripts/gen-bindings.sh "${gen[@]}"
  stage_bindings
  say "built target/$DEVICE/$PROFILE/libveil_ffi.a and the Swift bindings."
  say "STOPPED before the simulator libraries, lipo and xcodebuild -create-xcframework:"
  say "they need macOS with Xcode. Run this script on a Mac to make $KIT/VeilFFI.xcframework."
  exit 0
fi

command -v xcodebuild >/dev/null || die "xcodebuild not found; install Xcode and run xcode-select -s"
rustup target add "$DEVICE" "${SIMULATORS[@]}"
build_lib "$DEVICE"
for t in "${SIMULATORS[@]}"; do
  build_lib "$t"
done
mkdir -p "$STAGE/simulator"
sims=()
for t in "${SIMULATORS[@]}"; do sims+=("target/$t/$PROFILE/libveil_ffi.a"); done
lipo -create "${sims[@]}" -output "$STAGE/simulator/libveil_ffi.a"

# scripts/gen-bindings.sh reads the host's cdylib as libveil_ffi.so, which a Mac names
# .dylib; the same uniffi-bindgen reads the device library instead (the same metadata:
# scripts/check-swift.sh compares the two on Linux).
cargo build ${CARGO_PROFILE[@]+"${CARGO_PROFILE[@]}"} -p uniffi-bindgen
rm -rf bindings/swift
mkdir -p bindings/swift
"target/$PROFILE/uniffi-bindgen" generate --library "target/$DEVICE/$PROFILE/libveil_ffi.a" \
  --language swift --out-dir bindings/swift --no-format
stage_bindings

rm -rf "$KIT/VeilFFI.xcframework"
xcodebuild -create-xcframework \
  -library "target/$DEVICE/$PROFILE/libveil_ffi.a" -headers "$STAGE/headers" \
  -library "$STAGE/simulator/libveil_ffi.a" -headers "$STAGE/headers" \
  -output "$KIT/VeilFFI.xcframework"
say "made $KIT/VeilFFI.xcframework; next: cd ios && xcodegen generate && open Veil.xcodeproj"
