//! `veil service install`, `uninstall` and the system side of `status`: the systemd unit
//! (`scripts/service/veil.service`) on Linux, the launchd plist
//! (`scripts/service/org.veil.service.plist`) on macOS, the Service Control Manager on
//! Windows (`windows.rs`). Both files are templates embedded in the binary with two
//! placeholders, `@VEIL_BIN@` (this executable) and `@STATE_DIR@`. Install also creates the
//! `veil` group (whose members may use the control socket), gives the state directory to
//! that group (0710: members reach the socket, cannot list the directory) and adds the user
//! who ran `sudo` to the group.

use super::ManagerStatus;
use crate::args::ServiceInstallArgs;
use crate::error::CliError;
use std::path::{Path, PathBuf};
use std::process::Command;
use veil_ipc::CONTROL_GROUP;

/// The systemd unit template.
pub const SYSTEMD_UNIT: &str = include_str!("../../../../scripts/service/veil.service");
/// The launchd plist template.
pub const LAUNCHD_PLIST: &str = include_str!("../../../../scripts/service/org.veil.service.plist");
/// The unit's file name.
pub const UNIT_NAME: &str = "veil.service";
/// The plist's label and file name (without `.plist`).
pub const LAUNCHD_LABEL: &str = "org.veil.service";

/// A template with its placeholders filled in. Paths with a quote or a newline are refused
/// (neither format could carry them safely).
pub fn render(template: &str, bin: &Path, state_dir: &Path) -> Result<String, CliError> {
    let text = |p: &Path, what: &str| {
        let s = p.to_str().ok_or_else(|| {
            CliError::Mismatch(format!("{what} {} is not valid UTF-8", p.display()))
        })?;
        if s.contains(['\n', '"', '\'', '<', '>', '&', '%', ' ']) || !p.is_absolute() {
            return Err(CliError::Mismatch(format!(
                "{what} `{s}` must be an absolute path without spaces, quotes, `%`, `<`, `>` or `&`"
            )));
        }
        Ok(s.to_owned())
    };
    Ok(template
        .replace("@VEIL_BIN@", &text(bin, "the veil binary")?)
        .replace("@STATE_DIR@", &text(state_dir, "--state-dir")?))
}

fn need_root() -> Result<(), CliError> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(CliError::Usage(
            "installing or removing the system service needs root: run it with sudo",
        ));
    }
    Ok(())
}

/// Runs a command, naming it in the error.
fn run(program: &str, args: &[&str]) -> Result<(), CliError> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| CliError::Mismatch(format!("could not run {program}: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(CliError::Mismatch(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn this_binary() -> Result<PathBuf, CliError> {
    std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .map_err(|e| CliError::Mismatch(format!("cannot find this program's path: {e}")))
}

/// Creates the group if missing; true when it was created.
fn ensure_group() -> Result<bool, CliError> {
    if veil_io::control::group_id(CONTROL_GROUP).is_some() {
        return Ok(false);
    }
    if cfg!(target_os = "macos") {
        run("dseditgroup", &["-o", "create", CONTROL_GROUP])?;
    } else {
        run("groupadd", &["--system", CONTROL_GROUP])?;
    }
    Ok(true)
}

/// The state directory, made (or given) to the group: 0710 root:veil.
fn prepare_state_dir(dir: &Path) -> Result<(), CliError> {
    use std::os::unix::fs::PermissionsExt;
    veil_io::state::ensure_dir(dir)?;
    let err = |source| CliError::File {
        path: dir.to_owned(),
        source,
    };
    if let Some(gid) = veil_io::control::group_id(CONTROL_GROUP) {
        std::os::unix::fs::chown(dir, Some(0), Some(gid)).map_err(err)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o710)).map_err(err)?;
    }
    Ok(())
}

/// The user who ran `sudo`, added to the group (they log in again for it to count).
fn add_sudo_user() -> Option<String> {
    let user = std::env::var("SUDO_USER")
        .ok()
        .filter(|u| !u.is_empty() && u != "root")?;
    let added = if cfg!(target_os = "macos") {
        run(
            "dseditgroup",
            &["-o", "edit", "-a", &user, "-t", "user", CONTROL_GROUP],
        )
    } else {
        run("usermod", &["-aG", CONTROL_GROUP, &user])
    };
    match added {
        Ok(()) => Some(user),
        Err(e) => {
            eprintln!("veil: could not add {user} to the {CONTROL_GROUP} group: {e}");
            None
        }
    }
}

fn systemd_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// `veil service install`.
pub fn install(args: &ServiceInstallArgs) -> Result<(), CliError> {
    need_root()?;
    let bin = this_binary()?;
    if ensure_group()? {
        eprintln!("veil: created the group `{CONTROL_GROUP}` (its members may use the service)");
    }
    prepare_state_dir(&args.state_dir)?;
    let (path, text) = if cfg!(target_os = "macos") {
        (
            PathBuf::from(format!("/Library/LaunchDaemons/{LAUNCHD_LABEL}.plist")),
            render(LAUNCHD_PLIST, &bin, &args.state_dir)?,
        )
    } else {
        (
            args.unit_dir.join(UNIT_NAME),
            render(SYSTEMD_UNIT, &bin, &args.state_dir)?,
        )
    };
    std::fs::create_dir_all(path.parent().unwrap_or(Path::new("/"))).map_err(|source| {
        CliError::File {
            path: path.clone(),
            source,
        }
    })?;
    std::fs::write(&path, text).map_err(|source| CliError::File {
        path: path.clone(),
        source,
    })?;
    eprintln!("veil: wrote {}", path.display());
    if args.no_start {
        eprintln!("veil: not started (--no-start)");
    } else if cfg!(target_os = "macos") {
        let target = path.to_string_lossy().into_owned();
        run("launchctl", &["bootstrap", "system", &target])?;
        eprintln!("veil: started ({LAUNCHD_LABEL})");
    } else if systemd_running() {
        run("systemctl", &["daemon-reload"])?;
        run("systemctl", &["enable", "--now", UNIT_NAME])?;
        eprintln!("veil: enabled and started {UNIT_NAME}");
    } else {
        eprintln!(
            "veil: systemd is not running here; start the service by hand: {} service run --state-dir {}",
            bin.display(),
            args.state_dir.display()
        );
    }
    match add_sudo_user() {
        Some(user) => eprintln!(
            "veil: added {user} to the group `{CONTROL_GROUP}`; log out and in again, then open the Veil app"
        ),
        None => eprintln!(
            "veil: users who may control Veil join the group: sudo usermod -aG {CONTROL_GROUP} USER"
        ),
    }
    Ok(())
}

/// `veil service uninstall`: stops and removes the service; keeps the group and the state
/// directory (its key and token) for a later install.
pub fn uninstall(args: &ServiceInstallArgs) -> Result<(), CliError> {
    need_root()?;
    let path = if cfg!(target_os = "macos") {
        PathBuf::from(format!("/Library/LaunchDaemons/{LAUNCHD_LABEL}.plist"))
    } else {
        args.unit_dir.join(UNIT_NAME)
    };
    if !args.no_start {
        if cfg!(target_os = "macos") {
            let _ = run(
                "launchctl",
                &["bootout", &format!("system/{LAUNCHD_LABEL}")],
            );
        } else if systemd_running() {
            let _ = run("systemctl", &["disable", "--now", UNIT_NAME]);
        }
    }
    match std::fs::remove_file(&path) {
        Ok(()) => eprintln!("veil: removed {}", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("veil: {} was not installed", path.display());
        }
        Err(source) => return Err(CliError::File { path, source }),
    }
    if !args.no_start && !cfg!(target_os = "macos") && systemd_running() {
        let _ = run("systemctl", &["daemon-reload"]);
    }
    eprintln!(
        "veil: kept {} (node key, join token) and the group `{CONTROL_GROUP}`",
        args.state_dir.display()
    );
    Ok(())
}

/// The system service's state, as far as this platform tells.
pub fn manager_status() -> ManagerStatus {
    if cfg!(target_os = "macos") {
        let installed =
            Path::new(&format!("/Library/LaunchDaemons/{LAUNCHD_LABEL}.plist")).exists();
        return ManagerStatus {
            installed,
            active: None,
        };
    }
    let installed = Path::new("/etc/systemd/system").join(UNIT_NAME).exists();
    let active = systemd_running()
        .then(|| {
            Command::new("systemctl")
                .args(["is-active", UNIT_NAME])
                .output()
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        })
        .flatten()
        .filter(|s| !s.is_empty());
    ManagerStatus { installed, active }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_in_the_binary_and_state_dir() {
        let unit = render(
            SYSTEMD_UNIT,
            Path::new("/usr/local/bin/veil"),
            Path::new("/var/lib/veil"),
        )
        .unwrap();
        assert!(unit
            .contains("\nExecStart=/usr/local/bin/veil service run --state-dir /var/lib/veil\n"));
        assert!(!unit.contains('@'));
        assert!(unit.contains("Restart=on-failure"));
        let plist = render(
            LAUNCHD_PLIST,
            Path::new("/usr/local/bin/veil"),
            Path::new("/var/lib/veil"),
        )
        .unwrap();
        assert!(plist.contains("<string>/usr/local/bin/veil</string>"));
        assert!(plist.contains("<string>org.veil.service</string>"));
        assert!(!plist.contains('@'));
    }

    #[test]
    fn unsafe_paths_are_refused_by_name() {
        let e = render(
            SYSTEMD_UNIT,
            Path::new("/opt/my veil"),
            Path::new("/var/lib/veil"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("the veil binary"), "{e}");
        let e = render(SYSTEMD_UNIT, Path::new("/usr/bin/veil"), Path::new("state")).unwrap_err();
        assert!(e.to_string().contains("--state-dir"), "{e}");
    }
}
