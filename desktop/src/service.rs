//! Talking to the veil service: where its socket is, one blocking request per call, and the
//! app's error shape ([`UiError`]) that the frontend renders as a banner or an inline message.

use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use veil_ipc::{Client, ClientError, ErrorCode};

/// The socket the app talks to: `VEIL_SOCKET`, else the service's default.
pub fn socket_path() -> PathBuf {
    if let Some(p) = std::env::var_os("VEIL_SOCKET").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    default_socket()
}

#[cfg(not(windows))]
fn default_socket() -> PathBuf {
    Path::new(veil_ipc::DEFAULT_STATE_DIR).join(veil_ipc::NODE_SOCKET)
}

#[cfg(windows)]
fn default_socket() -> PathBuf {
    PathBuf::from(r"\\.\pipe\veil")
}

/// What went wrong, for the frontend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// No service answers at the socket.
    ServiceMissing,
    /// The socket exists, this user may not use it.
    Permission,
    /// The service refused (see `code`).
    Refused,
    /// The connection broke or timed out.
    Io,
    /// The service answered something this app does not understand.
    Protocol,
    /// The keychain failed or does not exist.
    Keychain,
    /// The user's input is wrong.
    Input,
}

/// An error as the frontend shows it: a sentence and, where there is one, the fix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{message}")]
pub struct UiError {
    /// The kind.
    pub kind: ErrorKind,
    /// The service's code, when it refused.
    pub code: Option<ErrorCode>,
    /// What happened.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
}

impl UiError {
    /// An error of `kind` without a hint.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        UiError {
            kind,
            code: None,
            message: message.into(),
            hint: None,
        }
    }

    /// The same with a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// A client error in the user's terms.
    pub fn from_client(e: ClientError, socket: &Path) -> Self {
        match e {
            ClientError::NotRunning { .. } => UiError::new(
                ErrorKind::ServiceMissing,
                format!("The Veil service is not running (nothing answers at {}).", socket.display()),
            )
            .with_hint("Install it with `sudo veil service install`, or start it with `sudo systemctl start veil`."),
            ClientError::PermissionDenied { .. } => UiError::new(
                ErrorKind::Permission,
                format!("Permission denied on {}.", socket.display()),
            )
            .with_hint("Add yourself to the veil group: `sudo usermod -aG veil $USER`, then log out and in again."),
            ClientError::Io { source, .. } => UiError::new(
                ErrorKind::Io,
                format!("The connection to the Veil service failed: {source}."),
            )
            .with_hint("The service may have stopped or restarted; the app retries."),
            ClientError::Protocol(p) => UiError::new(
                ErrorKind::Protocol,
                format!("The Veil service answered something this app does not understand: {p}"),
            )
            .with_hint("Update the app and the service to the same version."),
            ClientError::Remote(r) => {
                let hint = match r.code {
                    ErrorCode::NotService => Some(
                        "A node started with `veil up` runs instead of the service: stop it with `sudo veil down`, then `sudo veil service install`.",
                    ),
                    ErrorCode::Version => Some("Update the app and the service to the same version."),
                    ErrorCode::NoToken => Some("Paste the join token of your network."),
                    _ => None,
                };
                UiError {
                    kind: ErrorKind::Refused,
                    code: Some(r.code),
                    message: r.message,
                    hint: hint.map(str::to_owned),
                }
            }
        }
    }
}

/// Connects to `socket`, runs `f` on the connection with `timeout` per answer.
pub fn call<T>(
    socket: &Path,
    timeout: Duration,
    f: impl FnOnce(&mut Client) -> Result<T, ClientError>,
) -> Result<T, UiError> {
    let run = || {
        let mut c = Client::connect(socket)?;
        c.set_timeout(Some(timeout))?;
        f(&mut c)
    };
    run().map_err(|e| UiError::from_client(e, socket))
}
