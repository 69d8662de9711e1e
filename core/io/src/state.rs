//! Files in a node's state directory: the node key (`node.key`) and the last overlay IPv4 the
//! rendezvous confirmed (`ipv4`). The directory is private to its owner (0700) and the key file
//! to the key's owner (0600); this module refuses a key others can read. On Windows a directory
//! or file made here gets an access control list of its owner, SYSTEM and Administrators
//! instead of a mode (an existing key's list is not checked).

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::net::Ipv4Addr;
#[cfg(unix)]
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// File name of the node key inside the state directory.
pub const KEY_FILE: &str = "node.key";
/// File name of the remembered overlay IPv4.
pub const IPV4_FILE: &str = "ipv4";

/// A state directory problem, naming the path.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The directory could not be created or is not a directory.
    #[error("state dir {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The key file could not be read or written.
    #[error("node key {path}: {source}")]
    KeyIo {
        /// The key file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Group or others may read the key.
    #[error("node key {path} is accessible by group or others (mode {mode:04o}): run `chmod 600 {path}`")]
    KeyPermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file holds neither 64 hex digits nor 32 raw bytes.
    #[error("node key {path} is not 64 hex digits: restore it from a backup or delete it to make a new identity")]
    KeyFormat {
        /// The key file.
        path: PathBuf,
    },
}

/// Creates `dir` (and parents) with mode 0700 if it is missing. When the group `veil`
/// exists, a directory this call creates gets that group and mode 0710, so that members can
/// reach the control socket inside (itself 0660) without being able to list the directory;
/// the key file stays 0600 and root's alone.
pub fn ensure_dir(dir: &Path) -> Result<(), StateError> {
    let existed = dir.exists();
    let err = |source| StateError::Dir {
        path: dir.to_owned(),
        source,
    };
    let mut builder = DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    builder.mode(0o700);
    builder.create(dir).map_err(err)?;
    if !fs::metadata(dir).map_err(err)?.is_dir() {
        return Err(err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "not a directory",
        )));
    }
    #[cfg(unix)]
    if !existed {
        if let Some(gid) = crate::control::group_id(crate::control::CONTROL_GROUP) {
            std::os::unix::fs::chown(dir, None, Some(gid)).map_err(err)?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o710)).map_err(err)?;
        }
    }
    #[cfg(windows)]
    if !existed {
        crate::windows::restrict_dir(dir).map_err(err)?;
    }
    Ok(())
}

/// Reads the node key at `path`, or creates one with `fresh` (mode 0600) if there is none.
/// The file holds the 32-byte private key as 64 hex digits and a newline.
pub fn load_or_create_key(
    path: &Path,
    fresh: impl FnOnce() -> io::Result<[u8; 32]>,
) -> Result<[u8; 32], StateError> {
    let io_err = |source| StateError::KeyIo {
        path: path.to_owned(),
        source,
    };
    match fs::metadata(path) {
        Ok(meta) => {
            #[cfg(unix)]
            {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(StateError::KeyPermissions {
                        path: path.to_owned(),
                        mode,
                    });
                }
            }
            #[cfg(not(unix))]
            let _ = meta;
            let text = fs::read(path).map_err(io_err)?;
            parse_key(&text).ok_or_else(|| StateError::KeyFormat {
                path: path.to_owned(),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let key = fresh().map_err(io_err)?;
            write_private(path, format!("{}\n", hex(&key)).as_bytes()).map_err(io_err)?;
            Ok(key)
        }
        Err(e) => Err(io_err(e)),
    }
}

fn parse_key(bytes: &[u8]) -> Option<[u8; 32]> {
    let text = std::str::from_utf8(bytes).ok()?.trim();
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, b) in key.iter_mut().enumerate() {
        *b = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(key)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes a new file readable by its owner only; fails if it exists.
fn write_private(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut f = options.open(path)?;
    // Still empty: nothing is written before only its owner may read it.
    #[cfg(windows)]
    crate::windows::restrict_file(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// File in a node's state directory holding a join token adopted after a rotation.
pub const JOIN_TOKEN_FILE: &str = "join.token";
/// File in a relay's state directory holding a relay token adopted after a rotation.
pub const RELAY_TOKEN_FILE: &str = "relay.token";

/// Replaces `dir/name` atomically with `text` and a newline, readable by the owner only.
pub fn replace_private(dir: &Path, name: &str, text: &str) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let _ = fs::remove_file(&tmp);
    write_private(&tmp, format!("{text}\n").as_bytes())?;
    fs::rename(&tmp, dir.join(name))
}

/// Keeps a token adopted after a rotation as `dir/name` (when there is a state directory),
/// with a message for the operator if it cannot.
pub fn keep_adopted(dir: Option<&Path>, name: &str, text: &str) -> Result<(), String> {
    let Some(dir) = dir else { return Ok(()) };
    replace_private(dir, name, text).map_err(|e| {
        format!(
            "adopted, but could not keep the token in {}: {e}; a restart would use the old token",
            dir.display()
        )
    })
}

/// The overlay IPv4 remembered in `dir`, if any (a damaged file is ignored).
pub fn read_ipv4_hint(dir: &Path) -> Option<Ipv4Addr> {
    fs::read_to_string(dir.join(IPV4_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Remembers `addr` in `dir`, replacing the file atomically.
pub fn write_ipv4_hint(dir: &Path, addr: Ipv4Addr) -> io::Result<()> {
    replace_private(dir, IPV4_FILE, &addr.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("veil-io-state-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[cfg(unix)]
    #[test]
    fn key_is_created_private_and_reloaded() {
        let d = scratch("key");
        ensure_dir(&d).unwrap();
        let p = d.join(KEY_FILE);
        let k = load_or_create_key(&p, || Ok([7u8; 32])).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(load_or_create_key(&p, || Ok([9u8; 32])).unwrap(), k);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            load_or_create_key(&p, || Ok([9u8; 32])),
            Err(StateError::KeyPermissions { .. })
        ));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn ipv4_hint_round_trips() {
        let d = scratch("ipv4");
        ensure_dir(&d).unwrap();
        assert_eq!(read_ipv4_hint(&d), None);
        write_ipv4_hint(&d, Ipv4Addr::new(100, 64, 3, 4)).unwrap();
        write_ipv4_hint(&d, Ipv4Addr::new(100, 64, 3, 5)).unwrap();
        assert_eq!(read_ipv4_hint(&d), Some(Ipv4Addr::new(100, 64, 3, 5)));
        fs::remove_dir_all(&d).unwrap();
    }
}
