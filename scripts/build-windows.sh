#!/usr/bin/env bash
# Builds the node for 64-bit Windows: `veil.exe` (x86_64-pc-windows-gnu, linked by MinGW-w64)
# with the signed wintun.dll it loads placed next to it, and checks both:
#   - veil.exe is a PE32+ x86-64 console executable that imports only Windows' own DLLs (no
#     MinGW runtime DLL to ship);
#   - wintun.dll is WireGuard LLC's amd64 build (sha256 pinned below), taken from the
#     `wintun-bindings` crate (crates.io; its version and checksum are pinned in Cargo.lock).
# Installs what it needs if missing (the rustup target; Debian's gcc-mingw-w64-x86-64, file).
# Output: target/x86_64-pc-windows-gnu/release/{veil.exe,wintun.dll,wintun-LICENSE.txt}
# (under $CARGO_TARGET_DIR if set). docs/windows.md says how to install and run it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

TARGET=x86_64-pc-windows-gnu
# wintun.dll 0.14.1, amd64, as in wintun-0.14.1.zip from https://www.wintun.net
WINTUN_SHA256=e5da8447dc2c320edc0fc52fa01885c103de8c118481f683643cacc3220dafce
WINTUN_CRATE=wintun-bindings

log() { printf 'build-windows: %s\n' "$*"; }
die() {
  printf 'build-windows: ERROR: %s\n' "$*" >&2
  exit 1
}

# --- tools ----------------------------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1 && [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]; then
  export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust with rustup (https://rustup.rs)"

if command -v rustup >/dev/null 2>&1; then
  if rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
    log "rust: target $TARGET already installed"
  else
    log "rust: installing target $TARGET"
    rustup target add "$TARGET" || die "rustup target add $TARGET failed"
  fi
else
  rustc --print target-libdir --target "$TARGET" >/dev/null 2>&1 \
    || die "no rustup, and the standard library for $TARGET is missing"
fi

SUDO=()
[ "$(id -u)" -eq 0 ] || ! command -v sudo >/dev/null 2>&1 || SUDO=(sudo)
missing=()
# The linker (and the C compiler of ring); its binutils bring objdump for the import check.
{ command -v x86_64-w64-mingw32-gcc && command -v x86_64-w64-mingw32-objdump; } >/dev/null 2>&1 \
  || missing+=(gcc-mingw-w64-x86-64)
command -v file >/dev/null 2>&1 || missing+=(file)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
if [ "${#missing[@]}" -eq 0 ]; then
  log "apt: gcc-mingw-w64-x86-64, file and python3 already installed"
else
  command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get: install them by hand"
  log "apt: installing ${missing[*]}"
  "${SUDO[@]}" apt-get update -qq || die "apt-get update failed"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
fi
command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1 \
  || die "x86_64-w64-mingw32-gcc not found after installing gcc-mingw-w64-x86-64"

# --- build ----------------------------------------------------------------------------------
log "cargo build --release --target $TARGET -p veil-cli"
cargo build --release --target "$TARGET" -p veil-cli

target_dir=$(cargo metadata --format-version 1 --no-deps \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
out="$target_dir/$TARGET/release"
exe="$out/veil.exe"
[ -f "$exe" ] || die "$exe was not built"

# The release profile keeps line tables (debug = 1): about 60 MB of DWARF in a PE file that
# Windows tools do not read. The copy handed out goes without them; cargo's copy in deps/ (a
# hard link until now) keeps them.
x86_64-w64-mingw32-strip --strip-debug -o "$exe.stripped" "$exe"
mv -f "$exe.stripped" "$exe"

# --- checks of veil.exe ---------------------------------------------------------------------
kind=$(file -b "$exe")
case "$kind" in
  *"PE32+ executable"*"console"*"x86-64"*) log "veil.exe: $kind" ;;
  *) die "veil.exe is not a 64-bit Windows console executable: $kind" ;;
esac
# Every DLL in the import table must come with Windows: a MinGW runtime DLL would have to ship
# too, and wintun.dll is loaded at run time (LoadLibrary), never imported.
imports=$(x86_64-w64-mingw32-objdump -p "$exe" | sed -n 's/^[[:space:]]*DLL Name: //p' | sort -u)
[ -n "$imports" ] || die "could not read the import table of veil.exe"
foreign=$(printf '%s\n' "$imports" | grep -viE '^(kernel32|kernelbase|advapi32|ntdll|ws2_32|userenv|bcrypt|bcryptprimitives|crypt32|secur32|iphlpapi|ole32|oleaut32|shell32|user32|setupapi|cfgmgr32|netapi32|msvcrt|ucrtbase|api-ms-win-[a-z0-9-]+|synchronization|dbghelp|mswsock|rpcrt4|version|wintrust|powrprof|winmm)\.dll$' || true)
[ -z "$foreign" ] || die "veil.exe imports DLLs that do not come with Windows: $(echo "$foreign" | tr '\n' ' ')"
log "veil.exe imports only Windows DLLs: $(echo "$imports" | tr '\n' ' ')"

# --- wintun.dll -----------------------------------------------------------------------------
crate_dir=$(cargo metadata --format-version 1 --filter-platform "$TARGET" \
  | python3 -c '
import json, os, sys
meta = json.load(sys.stdin)
dirs = [os.path.dirname(p["manifest_path"]) for p in meta["packages"] if p["name"] == sys.argv[1]]
print(dirs[0] if dirs else "")
' "$WINTUN_CRATE")
[ -n "$crate_dir" ] || die "the $WINTUN_CRATE crate is not in the build of veil-cli for $TARGET (core/cli/Cargo.toml)"
dll="$crate_dir/wintun/bin/amd64/wintun.dll"
[ -f "$dll" ] || die "$dll is missing from the $WINTUN_CRATE crate"
sum=$(sha256sum "$dll" | cut -d' ' -f1)
[ "$sum" = "$WINTUN_SHA256" ] || die "$dll has sha256 $sum, expected $WINTUN_SHA256 (wintun 0.14.1 amd64): check the crate before shipping it"
install -m 0644 "$dll" "$out/wintun.dll"
install -m 0644 "$crate_dir/wintun/LICENSE.txt" "$out/wintun-LICENSE.txt"
kind=$(file -b "$out/wintun.dll")
case "$kind" in
  *"PE32+ executable (DLL)"*"x86-64"*) log "wintun.dll: $kind, sha256 $sum" ;;
  *) die "wintun.dll is not a 64-bit Windows DLL: $kind" ;;
esac

size() { du -h "$1" | cut -f1; }
log "ok: $exe ($(size "$exe")), $out/wintun.dll ($(size "$out/wintun.dll")), $out/wintun-LICENSE.txt"
log "copy veil.exe and wintun.dll to the same folder on Windows (docs/windows.md)"
