#!/usr/bin/env bash
# End-to-end: `veil service install` and `uninstall` for real, in a private mount namespace
# whose /etc is a scratch copy, so that the group it creates and the user it adds never reach
# this machine. Checks: the unit is written with this
# binary and the state dir filled in, and `systemd-analyze verify` accepts it; the group `veil`
# exists afterwards and the user who ran sudo (SUDO_USER=nobody) is in it; the state dir is
# root:veil 0710 (a 0700 one from `veil up` is fixed); a second install is fine; without root
# it refuses, naming sudo; uninstall removes the unit and keeps the state dir.
#
# No service manager is asked anything (--no-start): systemd does not run here.
# Needs root, unshare, groupadd/usermod (passwd). Env: VEIL_BIN.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VEIL_BIN=${VEIL_BIN:-$ROOT/target/release/veil}
[ -x "$VEIL_BIN" ] || { echo "FAIL: $VEIL_BIN not found; build it with: cargo build --release -p veil-cli" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "FAIL: needs root (a private mount namespace)" >&2; exit 1; }
for tool in unshare groupadd usermod getent; do
  command -v "$tool" >/dev/null 2>&1 || { echo "FAIL: $tool missing" >&2; exit 1; }
done

SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/veil-install.XXXXXX")
trap 'rm -rf "$SCRATCH"' EXIT
cp "$VEIL_BIN" "$SCRATCH/veil"

# Everything below runs in the private mount namespace; its mounts end with it.
unshare --mount --propagation private bash -s "$SCRATCH" <<'INNER'
set -euo pipefail
S=$1
step() { printf '\n==> %s\n' "$*"; }
ok() { printf '    ok: %s\n' "$*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
# A copy of /etc over /etc (groupadd replaces /etc/group by renaming, which a file bind
# mount would refuse).
cp -a /etc "$S/etc"
mount --bind "$S/etc" /etc
getent group veil >/dev/null && groupdel veil
mkdir -p "$S/state" && chmod 700 "$S/state"

step "install --no-start as root, run through sudo by nobody"
SUDO_USER=nobody "$S/veil" service install --no-start --unit-dir "$S/units" --state-dir "$S/state" 2>"$S/err" \
  || fail "install failed: $(cat "$S/err")"
cat "$S/err"
unit="$S/units/veil.service"
[ -f "$unit" ] || fail "no unit written"
grep -qx "ExecStart=$S/veil service run --state-dir $S/state" "$unit" || fail "ExecStart is wrong: $(grep ExecStart "$unit")"
! grep -q '@' "$unit" || fail "a placeholder is left: $(grep '@' "$unit")"
if command -v systemd-analyze >/dev/null 2>&1; then
  out=$(systemd-analyze verify "$unit" 2>&1) || fail "systemd-analyze verify: $out"
  ok "systemd-analyze verify accepts the unit"
fi
gid=$(getent group veil | cut -d: -f3) || fail "the group veil was not created"
getent group veil | cut -d: -f4 | tr ',' '\n' | grep -qx nobody || fail "nobody is not in the group: $(getent group veil)"
[ "$(stat -c '%U:%g %a' "$S/state")" = "root:$gid 710" ] || fail "state dir is $(stat -c '%U:%G %a' "$S/state")"
grep -q "added nobody to the group" "$S/err" || fail "install does not say it added the user"
ok "unit written, group veil ($gid) with nobody, state dir root:veil 0710"

step "a second install is fine; without root it refuses"
"$S/veil" service install --no-start --unit-dir "$S/units" --state-dir "$S/state" 2>/dev/null || fail "second install failed"
chmod 755 "$S"
out=$(setpriv --reuid=65534 --regid=65534 --clear-groups "$S/veil" service install --no-start --unit-dir "$S/units2" 2>&1) \
  && fail "install without root succeeded"
grep -q "run it with sudo" <<<"$out" || fail "the refusal does not say sudo: $out"
ok "refused without root: $out"

step "uninstall removes the unit, keeps the state dir and the group"
"$S/veil" service uninstall --no-start --unit-dir "$S/units" --state-dir "$S/state" 2>"$S/err" || fail "uninstall failed"
[ ! -e "$unit" ] || fail "the unit is still there"
[ -d "$S/state" ] || fail "the state dir went"
getent group veil >/dev/null || fail "the group went"
# (Captured first: `| grep -q` under pipefail fails when grep stops reading early.)
out=$("$S/veil" service uninstall --no-start --unit-dir "$S/units" 2>&1) || true
grep -q "was not installed" <<<"$out" || fail "a second uninstall does not say so: $out"
ok "uninstalled"
INNER
getent group veil >/dev/null && { echo "FAIL: the group veil leaked out of the mount namespace" >&2; exit 1; }
echo "PASS: service_install"
