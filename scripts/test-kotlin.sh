#!/usr/bin/env bash
# The Kotlin side of veil-ffi on the JVM (issue #7, Android):
#   1. the generated Kotlin bindings (scripts/gen-bindings.sh kotlin) compile;
#   2. tests/ffi/kotlin/ApiTest.kt (with the app's JVM-only code, android/.../VeilBridge.kt and
#      SecretSealing.kt) calls the real library through JNA: errors, secret store, tunnel
#      settings, nextEvent() and its cancellation, a node on a socketpair whose relay does not
#      answer, and two nodes through a `veil relay` on 127.0.0.1 exchanging packets;
#   3. the app's VeilVpnService.kt, KeystoreSecretStore.kt and VeilBridge.kt compile against
#      the bindings and stubs of the android.* classes they use (tests/ffi/kotlin/android-stubs),
#      so a call that does not match the generated API fails here. (The Compose UI is not
#      compiled: that needs the Android SDK; see docs/android.md.)
#
#   scripts/test-kotlin.sh
#
# Needs: a JDK/JRE 17+ (java), Debian's libjna-java (/usr/share/java/jna.jar), npm (to fetch
# the npm package kotlin-compiler@2.4.20 into target/kotlin once; KOTLINC_HOME=DIR uses an
# installed one). kotlinx-coroutines-core comes with that compiler (lib/, 1.8.0): Debian's
# libkotlinx-coroutines-java (1.0.1) predates the bindings' DelicateCoroutinesApi and StateFlow
# and does not load without atomicfu. Traffic stays on 127.0.0.1.
# Prints the ApiTest's checks; exits non-zero on any failure.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
KOTLIN_VERSION=2.4.20
JNA_JAR=${JNA_JAR:-/usr/share/java/jna.jar}
OUT="$ROOT/target/kotlin-test"
START=$SECONDS

log() { printf 'test-kotlin: %s\n' "$*"; }
die() { printf 'test-kotlin: ERROR: %s\n' "$*" >&2; exit 1; }
step() { log "$1 ($((SECONDS - START)) s)"; }

# --- tools -----------------------------------------------------------------------------------
command -v java >/dev/null 2>&1 || die "no java; run scripts/setup.sh (a JDK/JRE 17+ is needed)"
[ -f "$JNA_JAR" ] || die "no $JNA_JAR; run scripts/setup.sh (Debian package libjna-java)"

if [ -z "${KOTLINC_HOME:-}" ]; then
  KOTLINC_HOME="$ROOT/target/kotlin/node_modules/kotlin-compiler"
  if [ "$(cat "$KOTLINC_HOME/build.txt" 2>/dev/null || true)" != "$KOTLIN_VERSION" ]; then
    command -v npm >/dev/null 2>&1 || die "no npm to install kotlin-compiler@$KOTLIN_VERSION; run scripts/setup.sh"
    log "installing the npm package kotlin-compiler@$KOTLIN_VERSION into target/kotlin"
    npm install --silent --no-audit --no-fund --prefix "$ROOT/target/kotlin" "kotlin-compiler@$KOTLIN_VERSION" >/dev/null \
      || die "npm install kotlin-compiler@$KOTLIN_VERSION failed"
  fi
fi
KOTLINC="$KOTLINC_HOME/bin/kotlinc"
STDLIB="$KOTLINC_HOME/lib/kotlin-stdlib.jar"
COROUTINES="$KOTLINC_HOME/lib/kotlinx-coroutines-core-jvm.jar"
for f in "$KOTLINC" "$STDLIB" "$COROUTINES"; do
  [ -e "$f" ] || die "$f is missing: is $KOTLINC_HOME the npm package kotlin-compiler@$KOTLIN_VERSION?"
done
chmod +x "$KOTLINC_HOME"/bin/* 2>/dev/null || true
# One JVM per kotlinc run, sized for this 2-core machine.
export JAVA_OPTS="${JAVA_OPTS:--Xmx1g -Xss4m -XX:+UseSerialGC -XX:TieredStopAtLevel=1}"

# --- bindings, the CLI (for tokens and the relay) --------------------------------------------
step "generating the Kotlin bindings"
scripts/gen-bindings.sh kotlin
BINDINGS="$ROOT/bindings/kotlin/uniffi/veil_ffi/veil_ffi.kt"
[ -f "$BINDINGS" ] || die "gen-bindings wrote no $BINDINGS"
step "building the veil CLI (release)"
cargo build --quiet --release -p veil-cli
VEIL="$ROOT/target/release/veil"

rm -rf "$OUT"
mkdir -p "$OUT/classes-bindings" "$OUT/classes-test" "$OUT/classes-android"
SCRATCH="$(mktemp -d "${TMPDIR:-/tmp}/veil-kotlin.XXXXXX")"
RELAY_PID=""
cleanup() {
  if [ -n "$RELAY_PID" ]; then
    kill "$RELAY_PID" 2>/dev/null || true
    wait "$RELAY_PID" 2>/dev/null || true
  fi
  rm -rf "$SCRATCH"
}
trap cleanup EXIT

# compile NAME [kotlinc arguments]: the bindings' warnings are uniffi's, so hidden; ours shown.
compile() {
  local what=$1 log="$OUT/kotlinc-$1.log" quiet=()
  shift
  [ "$what" = bindings ] && quiet=(-nowarn)
  if ! "$KOTLINC" "${quiet[@]}" -jvm-target 17 "$@" >"$log" 2>&1; then
    cat "$log" >&2
    die "kotlinc failed: $what"
  fi
  if [ -s "$log" ]; then sed 's/^/  kotlinc: /' "$log"; fi
}

step "compiling the bindings"
compile bindings -cp "$JNA_JAR:$COROUTINES" -d "$OUT/classes-bindings" "$BINDINGS"

APP="$ROOT/android/app/src/main/java/net/veil/android"
step "compiling ApiTest.kt with VeilBridge.kt and SecretSealing.kt"
compile apitest -cp "$JNA_JAR:$COROUTINES:$OUT/classes-bindings" -d "$OUT/classes-test" \
  tests/ffi/kotlin/ApiTest.kt "$APP/VeilBridge.kt" "$APP/SecretSealing.kt"

# --- the run -------------------------------------------------------------------------------
# A network whose relay (127.0.0.1:7999) does not answer, and one with a relay on a free
# loopback port (no TCP listener: the token says port 0).
UNREACHABLE_TOKEN="$("$VEIL" network create --relay 127.0.0.1:7999 --out "$SCRATCH/unreachable" 2>/dev/null)"
PORT="$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
RELAY_TOKEN="$("$VEIL" network create --relay "127.0.0.1:$PORT" --relay-tcp-port 0 --out "$SCRATCH/net" 2>/dev/null)"
"$VEIL" relay --listen "127.0.0.1:$PORT" --tcp-listen off --token-file "$SCRATCH/net/relay-1.token" \
  --state-dir "$SCRATCH/relay" >"$SCRATCH/relay.log" 2>&1 &
RELAY_PID=$!
for _ in $(seq 1 100); do
  "$VEIL" relay status --json --state-dir "$SCRATCH/relay" >/dev/null 2>&1 && break
  kill -0 "$RELAY_PID" 2>/dev/null || { cat "$SCRATCH/relay.log" >&2; die "the relay exited"; }
  sleep 0.1
done
"$VEIL" relay status --json --state-dir "$SCRATCH/relay" >/dev/null 2>&1 \
  || { cat "$SCRATCH/relay.log" >&2; die "the relay on 127.0.0.1:$PORT did not answer"; }

step "running ApiTest (relay on 127.0.0.1:$PORT)"
set +e
VEIL_TEST_TOKEN="$UNREACHABLE_TOKEN" VEIL_TEST_RELAY_TOKEN="$RELAY_TOKEN" \
  timeout 300 java -Djna.library.path="$ROOT/target/debug" -Xss4m \
  -cp "$OUT/classes-test:$OUT/classes-bindings:$STDLIB:$COROUTINES:$JNA_JAR" ApiTestKt
rc=$?
set -e
if [ "$rc" -ne 0 ]; then
  echo "--- relay log (last 40 lines)" >&2
  tail -n 40 "$SCRATCH/relay.log" >&2 || true
  die "ApiTest failed (exit $rc)"
fi

# --- the app's service, store and bridge against the bindings ------------------------------
step "compiling VeilVpnService.kt, KeystoreSecretStore.kt, VeilBridge.kt against the android stubs"
mapfile -t STUBS < <(find tests/ffi/kotlin/android-stubs -name '*.java' | sort)
compile android -cp "$JNA_JAR:$COROUTINES:$OUT/classes-bindings" -d "$OUT/classes-android" \
  "$APP/VeilVpnService.kt" "$APP/KeystoreSecretStore.kt" "$APP/VeilBridge.kt" "$APP/SecretSealing.kt" \
  "${STUBS[@]}"
for cls in VeilVpnService KeystoreSecretStore VeilBridge AndroidLogSink; do
  [ -f "$OUT/classes-android/net/veil/android/$cls.class" ] || die "no $cls.class was produced"
done

step "passed"
