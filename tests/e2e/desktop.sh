#!/usr/bin/env bash
# End-to-end: the desktop app in a real window against a real service, relay and second
# node. Node a runs `veil service run` in its namespace; the app runs unprivileged (user
# nobody, with a group given the socket as `veil service install` gives it to group veil)
# under Xvfb in a namespace of its own, with a fresh GNOME Keyring under dbus-run-session,
# and is driven through tauri-driver and WebKitWebDriver by raw WebDriver HTTP
# (tests/e2e/lib/desktop_driver.py). Node b is a foreground `veil up`.
#
# Steps, each with a screenshot in target/desktop-e2e/: the service missing (banner with the
# install command); running but refusing this user (banner with the group command); the
# first-run token screen; the token entered and remembered, connected (the token checked in
# the keyring with secret-tool); a ping to b, the peer appears direct with its path MTU; a
# paced transfer to b, the throughput shown rises; the switch disconnects (TUN gone); the
# service forgets the token, and a new app session joins again by itself with the token it
# reads back from the keyring.
#
# Needs root, Xvfb, tauri-driver (cargo install), WebKitWebDriver (webkit2gtk-driver),
# gnome-keyring, dbus-run-session, secret-tool, ImageMagick's import (screenshots of the
# window), xdotool (real clicks) (scripts/setup.sh). Env: VEIL_BIN,
# DESKTOP_BIN (default desktop/target/debug/veil-desktop, built if missing).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source-path=SCRIPTDIR/../..
# shellcheck source=scripts/lib/netns.sh
source "$ROOT/scripts/lib/netns.sh"
DRV_PY="$ROOT/tests/e2e/lib/desktop_driver.py"
PACED="$ROOT/tests/e2e/lib/paced_tcp.py"
DESKTOP_BIN=${DESKTOP_BIN:-$ROOT/desktop/target/debug/veil-desktop}
SHOTS="$ROOT/target/desktop-e2e"
APP_UID=65534 # nobody
XFER_PORT=5001

step() { printf '\n==> %s\n' "$*"; }
ok() { printf '    ok: %s\n' "$*"; }

[ -x "$VEIL_BIN" ] || { echo "FAIL: $VEIL_BIN not found; build it with: cargo build --release -p veil-cli" >&2; exit 1; }
TAURI_DRIVER=$(command -v tauri-driver || echo "${CARGO_HOME:-$HOME/.cargo}/bin/tauri-driver")
for tool in Xvfb WebKitWebDriver dbus-run-session gnome-keyring-daemon secret-tool setpriv jq import xdotool xwininfo "$TAURI_DRIVER"; do
  command -v "$tool" >/dev/null 2>&1 || { echo "FAIL: $tool missing; run scripts/setup.sh" >&2; exit 1; }
done
if [ ! -x "$DESKTOP_BIN" ]; then
  echo "building the desktop app (cargo build --manifest-path desktop/Cargo.toml)"
  cargo build --quiet --manifest-path "$ROOT/desktop/Cargo.toml" \
    || { echo "FAIL: the desktop app does not build" >&2; exit 1; }
fi

netns_init
SD=$NETNS_DIR/state
SOCK=$SD/a/veil.sock
mkdir -p "$SHOTS"
rm -f "$SHOTS"/*.png

# A group of our own stands in for `veil` (no system group is created): a free gid.
APP_GID=
for _ in $(seq 50); do
  g=$((60000 + $(_netns_rand 5000)))
  if ! getent group "$g" >/dev/null; then APP_GID=$g; break; fi
done
[ -n "$APP_GID" ] || netns_fail "no free gid for the app's group"

step "topology: relay, node b (veil up), node a's namespace for the service, the desktop's namespace"
veil_network a b
veil_node b
B4=$(veil_ipv4 b)
netns_create desk
# The app's files: binaries it can run, a home and runtime dir of its own. The scratch dir
# stays unreadable to it (traverse only); the node's state dir is given to its group below.
chmod 711 "$NETNS_DIR"
APPDIR=$NETNS_DIR/app
mkdir -p "$APPDIR/bin" "$APPDIR/home" "$APPDIR/run"
cp "$DESKTOP_BIN" "$APPDIR/bin/veil-desktop"
cp "$TAURI_DRIVER" "$APPDIR/bin/tauri-driver"
chmod 755 "$APPDIR" "$APPDIR/bin" "$APPDIR/bin/"*
chown "$APP_UID:$APP_GID" "$APPDIR/home" "$APPDIR/run"
chmod 700 "$APPDIR/home" "$APPDIR/run"
ok "b is $B4; the app runs as uid $APP_UID with group $APP_GID"

step "Xvfb, a keyring session and tauri-driver (as the app's user) in the desktop namespace"
for _ in $(seq 50); do
  DISPLAY_NUM=$((100 + $(_netns_rand 800)))
  [ -e "/tmp/.X$DISPLAY_NUM-lock" ] || [ -e "/tmp/.X11-unix/X$DISPLAY_NUM" ] || break
done
netns_spawn desk xvfb Xvfb ":$DISPLAY_NUM" -screen 0 1280x900x24 -nolisten tcp -ac
netns_wait_for "Xvfb on :$DISPLAY_NUM" 20 test -e "/tmp/.X11-unix/X$DISPLAY_NUM"
PORT=$((40000 + $(_netns_rand 20000)))
netns_spawn desk session setpriv --reuid="$APP_UID" --regid="$APP_GID" --groups="$APP_GID" \
  --inh-caps=-all env -i PATH=/usr/bin:/bin LANG=C.UTF-8 HOME="$APPDIR/home" \
  XDG_RUNTIME_DIR="$APPDIR/run" DISPLAY=":$DISPLAY_NUM" VEIL_SOCKET="$SOCK" NO_AT_BRIDGE=1 \
  WEBKIT_DISABLE_DMABUF_RENDERER=1 WEBKIT_DISABLE_COMPOSITING_MODE=1 LIBGL_ALWAYS_SOFTWARE=1 \
  dbus-run-session -- bash "$ROOT/tests/e2e/lib/desktop_session.sh" "$APPDIR/run/bus" \
  "$APPDIR/bin/tauri-driver" --port "$PORT" --native-port $((PORT + 1)) \
  --native-driver /usr/bin/WebKitWebDriver
netns_wait_tcp_listen desk "$PORT" 20
ok "display :$DISPLAY_NUM, tauri-driver on 127.0.0.1:$PORT"

drv() {
  netns_exec desk env DRIVER_URL="http://127.0.0.1:$PORT" DRIVER_STATE="$NETNS_DIR/driver.json" \
    /usr/bin/python3 "$DRV_PY" "$@"
}
# The window as the X server shows it (WebKitWebDriver's own screenshot does not return
# under Xvfb here): ImageMagick's import, by the window's title.
shot() {
  sleep 0.5 # let the page paint what the last step changed
  netns_exec desk env DISPLAY=":$DISPLAY_NUM" import -window Veil "$SHOTS/$1.png" \
    || netns_fail "screenshot $1 failed"
  ok "screenshot target/desktop-e2e/$1.png"
}
# A real mouse click through the X server (WebKitWebDriver's own element click crashes under
# Xvfb here): the element's centre from the page, the window's origin from X.
click() {
  local at win x y
  at=$(drv js "(() => { const e = document.querySelector('$1'); if (!e) return null; e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect(); return [Math.round(r.left + r.width / 2), Math.round(r.top + r.height / 2)]; })()") \
    || netns_fail "cannot find $1 in the page"
  [ "$at" != null ] || netns_fail "no element $1 in the page"
  win=$(netns_exec desk env DISPLAY=":$DISPLAY_NUM" xwininfo -name Veil) || netns_fail "no window named Veil"
  x=$(( $(awk '/Absolute upper-left X/ {print $4}' <<<"$win") + $(jq '.[0]' <<<"$at") ))
  y=$(( $(awk '/Absolute upper-left Y/ {print $4}' <<<"$win") + $(jq '.[1]' <<<"$at") ))
  netns_exec desk env DISPLAY=":$DISPLAY_NUM" xdotool mousemove --sync "$x" "$y" click 1 \
    mousemove --sync 1279 899 || netns_fail "clicking $1 failed"
}
# The app's user asks its keyring.
keyring_lookup() {
  netns_exec desk setpriv --reuid="$APP_UID" --regid="$APP_GID" --groups="$APP_GID" \
    env -i PATH=/usr/bin:/bin HOME="$APPDIR/home" XDG_RUNTIME_DIR="$APPDIR/run" \
    DBUS_SESSION_BUS_ADDRESS="$(cat "$APPDIR/run/bus")" \
    secret-tool lookup service org.veil.desktop username join-token
}
state_is() { # the app's state, as its page shows it
  drv wait "window.veilUi && veilUi.hello && veilUi.hello.state === '$1'" "$2" "the app to show state $1"
}

step "the app starts; no service yet: the banner says how to install it"
drv new "$APPDIR/bin/veil-desktop" || netns_fail "the app did not start under tauri-driver"
drv wait "document.getElementById('banner').dataset.kind === 'service_missing'" 30 "the service-missing banner" >/dev/null \
  || netns_fail "no service-missing banner"
drv wait "document.getElementById('banner-hint').textContent.includes('sudo veil service install')" 5 >/dev/null \
  || netns_fail "the banner does not name the install command"
shot 01-service-missing

step "the service starts in a's namespace; its state dir is root's alone: the app is refused"
netns_spawn a service "$VEIL_BIN" service run --state-dir "$SD/a"
netns_wait_for "the service's socket" 20 test -S "$SOCK" || netns_fail "the service did not bind $SOCK"
drv wait "document.getElementById('banner').dataset.kind === 'permission'" 20 "the permission banner" >/dev/null \
  || netns_fail "no permission-denied banner"
drv wait "document.getElementById('banner-hint').textContent.includes('usermod -aG veil')" 5 >/dev/null \
  || netns_fail "the banner does not name the group command"
shot 02-permission-denied

step "the socket is given to the app's group (as install does for group veil): first-run token screen"
chgrp "$APP_GID" "$SD/a" "$SOCK"
chmod 710 "$SD/a"
drv wait "!document.getElementById('join').classList.contains('hidden')" 20 "the token screen" >/dev/null \
  || netns_fail "no token screen once the socket is reachable"
drv wait "veilUi.keychain && veilUi.keychain.available === true" 10 "the keyring to answer" >/dev/null \
  || netns_fail "the app finds no keyring: $(drv js 'JSON.stringify(veilUi.keychain)')"
shot 03-join

step "paste the token, tick \"remember\", join and connect"
drv paste "#token-input" "$(tr -d '[:space:]' <"$NETNS_DIR/net/join.token")"
click "#remember"
click "#join-btn"
state_is connected 40 >/dev/null || netns_fail "not connected: the app shows $(drv js 'JSON.stringify(veilUi.hello)'); the service says $(netns_exec a "$VEIL_BIN" service status --json --state-dir "$SD/a" 2>&1)"
drv wait "veilUi.hello.overlay_ipv4 && document.getElementById('state-text').textContent.includes(veilUi.hello.overlay_ipv4)" 20 >/dev/null \
  || netns_fail "the header does not show the overlay address"
A4=$(drv js "veilUi.hello.overlay_ipv4" | jq -r .)
cli=$(netns_exec a "$VEIL_BIN" service status --json --state-dir "$SD/a") || netns_fail "veil service status failed"
[ "$(jq -r .hello.state <<<"$cli")" = connected ] || netns_fail "the service says: $cli"
[ "$(jq -r .hello.overlay_ipv4 <<<"$cli")" = "$A4" ] || netns_fail "app shows $A4, service says $cli"
kept=$(keyring_lookup) || netns_fail "the token is not in the keyring (secret-tool lookup failed)"
[ "$kept" = "$(tr -d '[:space:]' <"$NETNS_DIR/net/join.token")" ] || netns_fail "the keyring holds another token"
ok "connected as $A4; the service agrees; the keyring holds the token"
shot 04-connected

step "ping b: the peer appears, direct, with its path MTU"
netns_exec a ping -c 3 -i 0.2 -W 2 "$B4" >/dev/null || netns_fail "ping a -> b over the overlay failed"
netns_spawn b recv /usr/bin/python3 "$PACED" recv "$B4" "$XFER_PORT" "$NETNS_DIR/recv.json"
netns_wait_tcp_listen b "$XFER_PORT" 10
# 25 MB/s (200 Mbit/s) for 12 s: long enough for the once-a-second chart to show it.
netns_spawn a send /usr/bin/python3 "$PACED" send "$B4" "$XFER_PORT" 12 25000000
drv wait "(() => { const r = document.querySelector('#peers-body tr[data-path=\"direct\"]'); return r && Number(r.dataset.pmtu) >= 1280 && r.textContent.includes('$B4'); })()" 20 "a direct peer row with its MTU" >/dev/null \
  || netns_fail "no direct peer with a path MTU in the table: $(drv js 'JSON.stringify(veilUi.peers)')"
pmtu=$(drv js "Number(document.querySelector('#peers-body tr[data-path=\"direct\"]').dataset.pmtu)")
ok "peer $B4 direct, path MTU $pmtu"
shot 05-peer

step "during the transfer the throughput shown rises"
drv wait "veilUi.rate.tx > 100e6" 20 "the sent rate above 100 Mbit/s" >/dev/null \
  || netns_fail "the app's sent rate stayed at $(drv js 'veilUi.rate.tx') bit/s"
sleep 3
ok "sent $(drv js 'Math.round(veilUi.rate.tx / 1e6)') Mbit/s shown"
shot 06-throughput
netns_wait_exit send 30 || netns_fail "the paced transfer failed"
netns_wait_exit recv 10 || netns_fail "the receiver failed"
got=$(jq -r .bytes "$NETNS_DIR/recv.json")
[ "$got" -ge $((12 * 25000000 * 9 / 10)) ] || netns_fail "b received only $got bytes"
peak=$(drv js "Math.round(veilUi.peak.tx)")
[ "$peak" -ge 150000000 ] || netns_fail "the peak sent rate shown is $peak bit/s, below 150 Mbit/s"
ok "b got $got bytes; peak shown $((peak / 1000000)) Mbit/s"

step "the switch disconnects"
click "#switch"
state_is disconnected 30 >/dev/null || netns_fail "not disconnected: $(drv js 'JSON.stringify(veilUi.hello)')"
netns_wait_for "veil0 gone in a" 10 bash -c "! ip -n $(netns_name a) link show veil0" \
  || netns_fail "the TUN device is still there after disconnecting"
[ "$(netns_exec a "$VEIL_BIN" service status --json --state-dir "$SD/a" | jq -r .hello.state)" = disconnected ] \
  || netns_fail "the service is not disconnected"
drv wait "document.getElementById('switch').getAttribute('aria-checked') === 'false'" 5 >/dev/null \
  || netns_fail "the switch still shows on"
ok "disconnected; veil0 removed"
shot 07-disconnected

step "the service forgets the token; a new app session joins again with the keyring's copy"
netns_exec a "$VEIL_BIN" service leave --state-dir "$SD/a" 2>/dev/null || netns_fail "veil service leave failed"
[ ! -e "$SD/a/service.token" ] || netns_fail "the service kept its token after leave"
drv quit || true
drv new "$APPDIR/bin/veil-desktop" || netns_fail "the app did not start again"
state_is connected 40 >/dev/null || netns_fail "the app did not join again from the keyring: $(drv js 'JSON.stringify(veilUi.hello)')"
[ -e "$SD/a/service.token" ] || netns_fail "the service has no token after the app joined again"
netns_exec a ping -c 2 -i 0.2 -W 2 "$B4" >/dev/null || netns_fail "ping after joining again failed"
ok "joined and connected again with the token read back from the keyring"
shot 08-rejoined-from-keychain
drv quit || true

echo "PASS: desktop"
