#!/usr/bin/env bash
# Installs everything Veil's build, tests and demo need on a Debian/Ubuntu machine.
#
# Idempotent: a package is installed only if `dpkg -s` says it is missing, and `apt-get update`
# runs at most once, only when something has to be installed. Safe as root with no tty (CI).
# Prints what it did.
set -euo pipefail

# What building veil-cli needs from apt besides the Rust toolchain: a C compiler and libc
# headers (ring's build script compiles C; rustc links through cc). scripts/deploy/Dockerfile's
# builder installs exactly these (scripts/deploy/check.sh compares the two lists).
BUILD_PACKAGES=(
  gcc
  libc6-dev
)
APT_PACKAGES=(
  "${BUILD_PACKAGES[@]}"
  iproute2      # ip netns, veth, bridge
  nftables      # NAT and firewall rules in the namespace tests
  iptables      # NFQUEUE for veil-impair where the kernel lacks nft's `queue` (xt target via nft_compat)
  iperf3        # throughput measurements
  iputils-ping  # ping over the overlay
  procps        # pgrep, ps
  python3       # JSON validation and transfers in the e2e tests
  jq            # JSON in shell
  tcpdump       # captures
  tshark        # capture analysis (installed without setuid dumpcap)
  nmap          # port scans of a running node
  socat         # TCP transfers over the overlay
  psmisc        # fuser, killall (only for humans; the scripts kill by pid)
  wireguard-tools # `wg`, to drive boringtun (the userspace WireGuard tests and benchmarks compare with)
  python3-pytest  # the FFI tests (tests/ffi/python) with Debian's python3
  python3-prometheus-client # the official parser of the metrics test (tests/e2e/metrics.sh)
  curl            # scrapes the metrics endpoint
  nats-server     # the NATS JetStream cluster of tests/e2e/cluster.sh and scripts/bench.sh cluster
  openssl         # the test CA and certificates of NATS over TLS (tests/e2e/cluster.sh)
  python3-cryptography # Ed25519 for the NATS NKey of tests/e2e/cluster.sh (Debian's python3)
  python3-yaml    # scripts/deploy/check.sh parses the Kubernetes manifests
  default-jre-headless       # kotlinc and the Kotlin binding tests (tests/ffi/kotlin)
  libjna-java                # JNA, which UniFFI's Kotlin bindings load the library with
  gcc-mingw-w64-x86-64       # links veil.exe for Windows (scripts/build-windows.sh)
  # The desktop app (desktop/, Tauri 2): WebKitGTK and the tray, the Secret Service client's
  # D-Bus, and for its end-to-end test a headless X server, the WebDriver of WebKitGTK, a
  # keyring and its command-line client.
  libwebkit2gtk-4.1-dev libayatana-appindicator3-dev librsvg2-dev libxdo-dev libdbus-1-dev pkg-config
  xvfb webkit2gtk-driver gnome-keyring dbus-daemon libsecret-tools imagemagick xdotool
)
# npm fetches the Kotlin compiler (npm package kotlin-compiler, scripts/test-kotlin.sh). It
# comes with a nodejs package of NodeSource or with Debian's npm; installed only if missing.
command -v npm >/dev/null 2>&1 || APT_PACKAGES+=(npm)
# boringtun-cli: userspace WireGuard, the capture test's contrast and the benchmarks' baseline;
# tauri-driver: the WebDriver server of the desktop app's end-to-end test (tests/e2e/desktop.sh).
CARGO_TOOLS=(boringtun-cli tauri-driver)
RUST_COMPONENTS=(rustfmt clippy)
# The phones' builds of veil-ffi, checked here; veil.exe for Windows (scripts/build-windows.sh).
RUST_TARGETS=(aarch64-linux-android aarch64-apple-ios x86_64-pc-windows-gnu)

log() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: ERROR: %s\n' "$*" >&2; exit 1; }

# --- privileges -----------------------------------------------------------------------------
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
  else
    SUDO=()
  fi
fi

# --- apt packages ---------------------------------------------------------------------------
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  if dpkg -s "$pkg" >/dev/null 2>&1; then
    :
  else
    missing+=("$pkg")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  log "apt: all ${#APT_PACKAGES[@]} packages already installed (${APT_PACKAGES[*]})"
else
  command -v apt-get >/dev/null 2>&1 || die "missing packages (${missing[*]}) and no apt-get on this machine; install them by hand"
  if [ "$(id -u)" -ne 0 ] && [ "${#SUDO[@]}" -eq 0 ]; then
    die "missing packages (${missing[*]}); run this script as root or install sudo"
  fi
  export DEBIAN_FRONTEND=noninteractive
  # tshark asks whether non-root users may capture; answer "no" up front so it never prompts.
  if command -v debconf-set-selections >/dev/null 2>&1; then
    echo 'wireshark-common wireshark-common/install-setuid boolean false' \
      | "${SUDO[@]}" debconf-set-selections
  fi
  log "apt: missing ${missing[*]}; running apt-get update"
  "${SUDO[@]}" apt-get update -qq || die "apt-get update failed"
  log "apt: installing ${missing[*]}"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed"
  for pkg in "${missing[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || die "package $pkg still not installed after apt-get install"
  done
  log "apt: installed ${missing[*]}"
fi

# --- kernel features the namespace tests use ---------------------------------------------------
if [ -e /dev/net/tun ]; then
  log "kernel: /dev/net/tun present"
else
  log "WARNING: /dev/net/tun is missing; 'veil up' cannot create its TUN device (try: modprobe tun)"
fi

# --- Rust toolchain -------------------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1 && [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]; then
  export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
  log "rust: cargo found in ${CARGO_HOME:-$HOME/.cargo}/bin (not on PATH; add it to your PATH)"
fi
command -v cargo >/dev/null 2>&1 \
  || die "cargo not found. Install Rust with rustup (https://rustup.rs) and make sure ~/.cargo/bin is on PATH."
log "rust: $(cargo --version)"

if command -v rustup >/dev/null 2>&1; then
  installed=$(rustup component list --installed 2>/dev/null || true)
  for comp in "${RUST_COMPONENTS[@]}"; do
    if printf '%s\n' "$installed" | grep -q "^${comp}-"; then
      log "rust: component $comp already installed"
    else
      log "rust: installing component $comp"
      rustup component add "$comp" || die "rustup component add $comp failed"
    fi
  done
else
  for comp in "${RUST_COMPONENTS[@]}"; do
    case "$comp" in
      rustfmt) cargo fmt --version >/dev/null 2>&1 || die "rustfmt missing and no rustup to install it" ;;
      clippy) cargo clippy --version >/dev/null 2>&1 || die "clippy missing and no rustup to install it" ;;
    esac
  done
  log "rust: no rustup; rustfmt and clippy present"
fi

if command -v rustup >/dev/null 2>&1; then
  targets=$(rustup target list --installed 2>/dev/null || true)
  for t in "${RUST_TARGETS[@]}"; do
    if printf '%s\n' "$targets" | grep -qx "$t"; then
      log "rust: target $t already installed"
    else
      log "rust: installing target $t"
      rustup target add "$t" || die "rustup target add $t failed"
    fi
  done
else
  log "WARNING: no rustup; the phones' cross checks (targets ${RUST_TARGETS[*]}) cannot run"
fi

for tool in "${CARGO_TOOLS[@]}"; do
  if command -v "$tool" >/dev/null 2>&1 || [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/$tool" ]; then
    log "cargo: $tool already installed"
  else
    log "cargo: installing $tool (cargo install --locked; a few minutes)"
    cargo install --locked --quiet "$tool" || die "cargo install $tool failed"
  fi
done

log "done"
