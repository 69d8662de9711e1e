//! The local control socket: a Unix stream socket in the state directory (`veil.sock` for a
//! node, `relay.sock` for a relay), owned by root, group `veil` when that group exists, mode
//! 0660. One JSON request per line, `{"v":1,"cmd":"status"|"peers"|"down"}`, answered by one
//! JSON line, `{"ok":true,"result":…}` or `{"ok":false,"error":"…"}`. This module owns the
//! socket file (stale ones are removed on bind, ours on drop) and the wire format; what a
//! command does belongs to the [`ControlHandler`].

use serde::{Deserialize, Serialize};
use std::ffi::CString;
use std::future::Future;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

/// Version of the control protocol.
pub const PROTOCOL_VERSION: u32 = 1;
/// Socket file name of a node.
pub const NODE_SOCKET: &str = "veil.sock";
/// Socket file name of a relay.
pub const RELAY_SOCKET: &str = "relay.sock";
/// Group that may use the control socket besides root.
pub const CONTROL_GROUP: &str = "veil";
/// Longest request line accepted.
const MAX_LINE: usize = 4096;

/// A command on the control socket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ControlCommand {
    /// Status snapshot.
    Status,
    /// Peer list.
    Peers,
    /// Stop the process.
    Down,
    /// Offer a CA-signed policy (its text form) to the node, which spreads it.
    Policy(String),
    /// Hand over the rotated token (text form) from `veil network rotate`: a join token to
    /// a node, a relay token to a relay. It is adopted at once and kept in the state
    /// directory for restarts.
    Adopt(String),
}

#[derive(Debug, Serialize, Deserialize)]
struct Request {
    v: u32,
    cmd: ControlCommand,
}

#[derive(Debug, Serialize, Deserialize)]
struct Response {
    ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// The future a handler returns: the result object, or an error message for the client.
pub type HandlerFuture<'a> =
    Pin<Box<dyn Future<Output = Result<serde_json::Value, String>> + Send + 'a>>;

/// What answers control commands (a node or a relay handle).
pub trait ControlHandler: Clone + Send + Sync + 'static {
    /// Executes `cmd`.
    fn handle(&self, cmd: ControlCommand) -> HandlerFuture<'_>;
}

/// A bound control socket. Dropping it removes the socket file.
#[derive(Debug)]
pub struct ControlServer {
    listener: Option<UnixListener>,
    path: PathBuf,
}

impl ControlServer {
    /// Binds the socket at `path`: refuses if a live process answers there, removes a stale
    /// file, then sets owner root, group `veil` (if it exists) and mode 0660.
    pub fn bind(path: &Path) -> io::Result<ControlServer> {
        if path.exists() {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "another veil process is running (it answers on {})",
                        path.display()
                    ),
                ));
            }
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        let server = ControlServer {
            listener: Some(listener),
            path: path.to_owned(),
        };
        if let Some(gid) = group_id(CONTROL_GROUP) {
            std::os::unix::fs::chown(path, None, Some(gid))?;
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
        Ok(server)
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves clients until the returned future is dropped. Each connection runs in its own
    /// task; the socket file stays owned by `self`.
    pub fn serve<H: ControlHandler>(&mut self, handler: H) -> impl Future<Output = ()> + Send {
        let listener = self.listener.take();
        async move {
            let Some(listener) = listener else { return };
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        tokio::spawn(serve_client(stream, handler.clone()));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "control socket accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn serve_client<H: ControlHandler>(stream: UnixStream, handler: H) {
    let (read, mut write) = stream.into_split();
    let mut lines = tokio::io::BufReader::new(read.take(64 * 1024)).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let response = match parse_request(&line) {
            // The process may be gone as soon as it accepts `down`: answer first. The client
            // then waits for the socket file to disappear.
            Ok(ControlCommand::Down) => {
                let sent = write_response(&mut write, &Response::ok("stopping".into())).await;
                let _ = handler.handle(ControlCommand::Down).await;
                if sent.is_err() {
                    return;
                }
                continue;
            }
            Ok(cmd) => match handler.handle(cmd).await {
                Ok(result) => Response::ok(result),
                Err(e) => Response::error(e),
            },
            Err(e) => Response::error(e),
        };
        if write_response(&mut write, &response).await.is_err() {
            return;
        }
    }
}

impl Response {
    fn ok(result: serde_json::Value) -> Self {
        Response {
            ok: true,
            result: Some(result),
            error: None,
        }
    }

    fn error(error: String) -> Self {
        Response {
            ok: false,
            result: None,
            error: Some(error),
        }
    }
}

async fn write_response(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    response: &Response,
) -> io::Result<()> {
    let mut text = serde_json::to_string(response).unwrap_or_else(|_| {
        r#"{"ok":false,"error":"internal error: response not serializable"}"#.into()
    });
    text.push('\n');
    write.write_all(text.as_bytes()).await?;
    write.flush().await
}

/// The command of one request line, or the error message for the client.
pub fn parse_request(line: &str) -> Result<ControlCommand, String> {
    if line.len() > MAX_LINE {
        return Err("request too long".into());
    }
    let req: Request = serde_json::from_str(line).map_err(|e| format!("bad request: {e}"))?;
    if req.v != PROTOCOL_VERSION {
        return Err(format!(
            "control protocol version {} is not supported (this veil speaks {PROTOCOL_VERSION})",
            req.v
        ));
    }
    Ok(req.cmd)
}

/// The group id of `name`, if the group exists.
pub(crate) fn group_id(name: &str) -> Option<u32> {
    let cname = CString::new(name).ok()?;
    let mut grp: libc::group = unsafe_zeroed_group();
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the duration of the call: `cname` is a NUL-terminated
    // string, `grp` and `result` are live locals, and `buf` has the length we pass.
    // getgrnam_r is the reentrant form and writes only into these.
    let rc = unsafe {
        libc::getgrnam_r(
            cname.as_ptr(),
            &mut grp,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    (rc == 0 && !result.is_null()).then_some(grp.gr_gid)
}

fn unsafe_zeroed_group() -> libc::group {
    // SAFETY: `libc::group` is a plain C struct of integers and raw pointers, for which the
    // all-zero bit pattern is valid (null pointers, gid 0).
    unsafe { std::mem::zeroed() }
}

/// Why a control request failed on the client side.
#[derive(Debug, thiserror::Error)]
pub enum ControlClientError {
    /// No process listens on the socket.
    #[error("no socket at {}", path.display())]
    NotRunning {
        /// The socket path.
        path: PathBuf,
        /// The connect error.
        #[source]
        source: io::Error,
    },
    /// Talking to the socket failed.
    #[error("control socket {}: {source}", path.display())]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The process answered with an error.
    #[error("{0}")]
    Remote(String),
    /// The answer was not understood.
    #[error("unexpected answer on the control socket: {0}")]
    Protocol(String),
}

/// Sends `cmd` to the control socket at `path` and returns its result (blocking; for CLIs).
pub fn request(path: &Path, cmd: ControlCommand) -> Result<serde_json::Value, ControlClientError> {
    let io_err = |source| ControlClientError::Io {
        path: path.to_owned(),
        source,
    };
    let stream = std::os::unix::net::UnixStream::connect(path).map_err(|source| {
        ControlClientError::NotRunning {
            path: path.to_owned(),
            source,
        }
    })?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(io_err)?;
    let mut line = serde_json::to_string(&Request {
        v: PROTOCOL_VERSION,
        cmd,
    })
    .map_err(|e| ControlClientError::Protocol(e.to_string()))?;
    line.push('\n');
    (&stream).write_all(line.as_bytes()).map_err(io_err)?;
    let mut answer = String::new();
    BufReader::new(&stream)
        .read_line(&mut answer)
        .map_err(io_err)?;
    let response: Response = serde_json::from_str(&answer)
        .map_err(|e| ControlClientError::Protocol(format!("{e}: {}", answer.trim())))?;
    match (response.ok, response.result, response.error) {
        (true, result, _) => Ok(result.unwrap_or(serde_json::Value::Null)),
        (false, _, error) => Err(ControlClientError::Remote(error.unwrap_or_default())),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[derive(Clone)]
    struct Echo;
    impl ControlHandler for Echo {
        fn handle(&self, cmd: ControlCommand) -> HandlerFuture<'_> {
            Box::pin(async move {
                match cmd {
                    ControlCommand::Status => Ok(serde_json::json!({"id": "x"})),
                    _ => Err("nope".into()),
                }
            })
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn request_and_answer() {
        let dir = std::env::temp_dir().join(format!("veil-io-ctl-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(NODE_SOCKET);
        std::fs::write(&path, b"stale").unwrap();
        let mut server = ControlServer::bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        let task = tokio::spawn(server.serve(Echo));
        let p = path.clone();
        let (status, peers) = tokio::task::spawn_blocking(move || {
            (
                request(&p, ControlCommand::Status),
                request(&p, ControlCommand::Peers),
            )
        })
        .await
        .unwrap();
        assert_eq!(status.unwrap()["id"], "x");
        assert!(matches!(peers, Err(ControlClientError::Remote(e)) if e == "nope"));
        assert!(
            ControlServer::bind(&path).is_err(),
            "a live socket is not replaced"
        );
        task.abort();
        drop(server);
        assert!(!path.exists());
        let gone = request(&path, ControlCommand::Status);
        assert!(matches!(gone, Err(ControlClientError::NotRunning { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
