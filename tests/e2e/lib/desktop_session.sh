#!/usr/bin/env bash
# The desktop test's user session, run inside `dbus-run-session` as the unprivileged user:
# unlocks a fresh GNOME Keyring (the Secret Service the app's keychain uses), writes the
# session bus address to ADDR_FILE so the test can ask the keyring too, then runs CMD
# (tauri-driver) until the test's cleanup ends it.
#
#   desktop_session.sh ADDR_FILE CMD...
set -euo pipefail
addr_file=$1
shift
# --unlock reads the password on stdin and creates the login keyring, the default collection.
eval "$(printf 'veil-e2e' | gnome-keyring-daemon --unlock --components=secrets)"
export GNOME_KEYRING_CONTROL
printf '%s\n' "$DBUS_SESSION_BUS_ADDRESS" >"$addr_file"
exec "$@"
