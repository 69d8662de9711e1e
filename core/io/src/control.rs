//! The local control socket: a Unix stream socket in the state directory (`veil.sock` for a
//! node or the service, `relay.sock` for a relay), owned by root, group `veil` when that group
//! exists, mode 0660. One JSON request per line, answered by one JSON line; the protocol and
//! its types are `veil-ipc`'s (docs/ipc.md). Version 1 commands (`status`, `peers`, `down`,
//! `policy`, `adopt`) go to [`ControlHandler::handle`], version 2 ones to
//! [`ControlHandler::handle_v2`], and `subscribe` turns the connection into a stream of
//! events from [`ControlHandler::subscribe`]. This module owns the socket file (stale ones
//! are removed on bind, ours on drop) and the wire; what a command does belongs to the
//! handler. On Windows the socket is a named pipe ([`socket_path`]) with the same lines.

use serde::{Deserialize, Serialize};
#[cfg(unix)]
use std::ffi::CString;
use std::future::Future;
use std::io;
#[cfg(unix)]
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
#[cfg(unix)]
use tokio::net::UnixListener;
use tokio::sync::broadcast;
use veil_ipc::{Command, ErrorCode, Event, RemoteError, Request, Response};

/// Newest version of the control protocol (the oldest still answered is
/// [`veil_ipc::MIN_PROTOCOL_VERSION`]).
pub const PROTOCOL_VERSION: u32 = veil_ipc::PROTOCOL_VERSION;
/// Socket file name of a node.
pub const NODE_SOCKET: &str = "veil.sock";
/// Socket file name of a relay.
pub const RELAY_SOCKET: &str = "relay.sock";
/// Group that may use the control socket besides root.
pub const CONTROL_GROUP: &str = "veil";
/// How long an answer or event may wait for a client that does not read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

#[cfg(windows)]
mod pipe;
#[cfg(unix)]
type Listener = UnixListener;
#[cfg(windows)]
type Listener = pipe::PipeListener;

/// Where the control socket `name` ([`NODE_SOCKET`], [`RELAY_SOCKET`]) of the process with
/// the state directory `state_dir` is: that file in the directory.
#[cfg(unix)]
pub fn socket_path(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join(name)
}

/// Where the control socket `name` ([`NODE_SOCKET`], [`RELAY_SOCKET`]) is on Windows: the
/// named pipe `\\.\pipe\veil` for a node or the service, `\\.\pipe\veil-relay` for a
/// relay (pipes live in a namespace of their own, whatever the state directory).
#[cfg(windows)]
pub fn socket_path(_state_dir: &Path, name: &str) -> PathBuf {
    let stem = name.strip_suffix(".sock").unwrap_or(name);
    PathBuf::from(match stem {
        "veil" => r"\\.\pipe\veil".to_owned(),
        other => format!(r"\\.\pipe\veil-{other}"),
    })
}

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

impl ControlCommand {
    /// The version 1 command of a request, or the request's command back when it is of a
    /// later version.
    pub fn from_ipc(cmd: Command) -> Result<ControlCommand, Command> {
        Ok(match cmd {
            Command::Status => ControlCommand::Status,
            Command::Peers => ControlCommand::Peers,
            Command::Down => ControlCommand::Down,
            Command::Policy(t) => ControlCommand::Policy(t),
            Command::Adopt(t) => ControlCommand::Adopt(t),
            other => return Err(other),
        })
    }

    /// The same command in `veil-ipc`'s terms.
    pub fn into_ipc(self) -> Command {
        match self {
            ControlCommand::Status => Command::Status,
            ControlCommand::Peers => Command::Peers,
            ControlCommand::Down => Command::Down,
            ControlCommand::Policy(t) => Command::Policy(t),
            ControlCommand::Adopt(t) => Command::Adopt(t),
        }
    }
}

/// The future a handler returns: the result object, or an error message for the client.
pub type HandlerFuture<'a> =
    Pin<Box<dyn Future<Output = Result<serde_json::Value, String>> + Send + 'a>>;

/// The future of a version 2 command: the result object, or a typed refusal.
pub type ServiceFuture<'a> =
    Pin<Box<dyn Future<Output = Result<serde_json::Value, RemoteError>> + Send + 'a>>;

/// The future of `subscribe`.
pub type SubscribeFuture<'a> =
    Pin<Box<dyn Future<Output = Result<EventFeed, RemoteError>> + Send + 'a>>;

/// What a subscription gets: the answer to `subscribe` (a `Hello`), the events to send
/// first (the current state), then everything the channel carries.
#[derive(Debug)]
pub struct EventFeed {
    /// The answer line's result.
    pub hello: serde_json::Value,
    /// Events sent before the channel's.
    pub first: Vec<Event>,
    /// The live events.
    pub events: broadcast::Receiver<Event>,
}

/// What answers control commands (a node or a relay handle, the service).
pub trait ControlHandler: Clone + Send + Sync + 'static {
    /// Executes a version 1 command.
    fn handle(&self, cmd: ControlCommand) -> HandlerFuture<'_>;

    /// Executes a version 2 command (never `subscribe`, which goes to
    /// [`ControlHandler::subscribe`]). Only the service knows them all; by default each is
    /// refused, naming the service.
    fn handle_v2(&self, cmd: Command) -> ServiceFuture<'_> {
        Box::pin(async move { Err(not_service(&cmd)) })
    }

    /// Starts a subscription. Refused by default.
    fn subscribe(&self) -> SubscribeFuture<'_> {
        Box::pin(async move { Err(not_service(&Command::Subscribe)) })
    }
}

/// The refusal of a version 2 command by a process that is not the service.
pub fn not_service(cmd: &Command) -> RemoteError {
    RemoteError::new(
        ErrorCode::NotService,
        format!(
            "`{}` is answered by the veil service only, and this process is a relay or a node started with `veil up`: stop it (`veil down`) and run the service (`sudo veil service install`)",
            cmd.name()
        ),
    )
}

/// A bound control socket. Dropping it removes the socket file.
#[derive(Debug)]
pub struct ControlServer {
    listener: Option<Listener>,
    path: PathBuf,
}

impl ControlServer {
    /// Binds the socket at `path`: refuses if a live process answers there, removes a stale
    /// file, then sets owner root, group `veil` (if it exists) and mode 0660.
    #[cfg(unix)]
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

    /// Creates the named pipe `path` (`\\.\pipe\…`, see [`socket_path`]); refuses if another
    /// process has it. Must be called inside a tokio runtime.
    #[cfg(windows)]
    pub fn bind(path: &Path) -> io::Result<ControlServer> {
        Ok(ControlServer {
            listener: Some(pipe::PipeListener::bind(path)?),
            path: path.to_owned(),
        })
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
        // A named pipe goes with its last handle.
        #[cfg(unix)]
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn serve_client<H, S>(stream: S, handler: H)
where
    H: ControlHandler,
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (read, mut write) = tokio::io::split(stream);
    let mut reader = tokio::io::BufReader::new(read);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        // One line at a time, each bounded: a client may send many requests.
        let limit = veil_ipc::MAX_REQUEST_LINE as u64 + 1;
        match (&mut reader).take(limit).read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if buf.last() != Some(&b'\n') && buf.len() as u64 >= limit {
            let e = RemoteError::new(
                ErrorCode::BadRequest,
                format!(
                    "request too long (at most {} bytes)",
                    veil_ipc::MAX_REQUEST_LINE
                ),
            );
            let _ = write_line(&mut write, &Response::error(e)).await;
            return;
        }
        let line = String::from_utf8_lossy(&buf);
        let req = match Request::parse(line.trim_end()) {
            Ok(req) => req,
            Err(e) => {
                if write_line(&mut write, &Response::error(e)).await.is_err() {
                    return;
                }
                continue;
            }
        };
        let v1 = req.v == 1;
        let response = match ControlCommand::from_ipc(req.cmd) {
            // The process may be gone as soon as it accepts `down`: answer first. The client
            // then waits for the socket file to disappear.
            Ok(ControlCommand::Down) => {
                let sent = write_line(&mut write, &Response::ok("stopping".into())).await;
                let _ = handler.handle(ControlCommand::Down).await;
                if sent.is_err() {
                    return;
                }
                continue;
            }
            Ok(cmd) => match handler.handle(cmd).await {
                Ok(result) => Response::ok(result),
                // Version 1 answers stay as they were: no `code`.
                Err(e) if v1 => Response {
                    code: None,
                    ..Response::error(RemoteError::new(ErrorCode::Failed, e))
                },
                Err(e) => Response::error(RemoteError::new(ErrorCode::Failed, e)),
            },
            Err(Command::Subscribe) => match handler.subscribe().await {
                Ok(feed) => {
                    if write_line(&mut write, &Response::ok(feed.hello))
                        .await
                        .is_ok()
                    {
                        stream_events(feed.first, feed.events, &mut reader, &mut write).await;
                    }
                    return;
                }
                Err(e) => Response::error(e),
            },
            Err(cmd) => match handler.handle_v2(cmd).await {
                Ok(result) => Response::ok(result),
                Err(e) => Response::error(e),
            },
        };
        if write_line(&mut write, &response).await.is_err() {
            return;
        }
    }
}

/// Writes `first`, then every event of `events`, one per line, until the client closes
/// its end, stops reading for [`WRITE_TIMEOUT`], or the channel closes (the process
/// stops). Anything the client sends meanwhile is ignored.
async fn stream_events(
    first: Vec<Event>,
    mut events: broadcast::Receiver<Event>,
    reader: &mut tokio::io::BufReader<impl AsyncRead + Unpin>,
    write: &mut (impl AsyncWrite + Unpin),
) {
    for e in first {
        if write_line(write, &e).await.is_err() {
            return;
        }
    }
    let mut sink = [0u8; 512];
    loop {
        let event = tokio::select! {
            e = events.recv() => match e {
                Ok(e) => e,
                Err(broadcast::error::RecvError::Lagged(missed)) => Event::Lagged { missed },
                Err(broadcast::error::RecvError::Closed) => return,
            },
            r = reader.read(&mut sink) => match r {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            },
        };
        if write_line(write, &event).await.is_err() {
            return;
        }
    }
}

async fn write_line(
    write: &mut (impl AsyncWrite + Unpin),
    value: &impl Serialize,
) -> io::Result<()> {
    let mut text = serde_json::to_string(value).unwrap_or_else(|_| {
        r#"{"ok":false,"error":"internal error: answer not serializable"}"#.into()
    });
    text.push('\n');
    let send = async {
        write.write_all(text.as_bytes()).await?;
        write.flush().await
    };
    match tokio::time::timeout(WRITE_TIMEOUT, send).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client does not read",
        )),
    }
}

/// The command of one request line, or the error message for the client.
pub fn parse_request(line: &str) -> Result<Command, String> {
    Request::parse(line).map(|r| r.cmd).map_err(|e| e.message)
}

/// The group id of `name`, if the group exists.
#[cfg(unix)]
pub fn group_id(name: &str) -> Option<u32> {
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

#[cfg(unix)]
fn unsafe_zeroed_group() -> libc::group {
    // SAFETY: `libc::group` is a plain C struct of integers and raw pointers, for which the
    // all-zero bit pattern is valid (null pointers, gid 0).
    unsafe { std::mem::zeroed() }
}

/// Sends `cmd` to the control socket at `path` and returns its result (blocking; for CLIs).
/// Version 1 commands go as version 1, so that older processes answer them.
pub fn request(
    path: &Path,
    cmd: ControlCommand,
) -> Result<serde_json::Value, veil_ipc::ClientError> {
    veil_ipc::Client::connect(path)?.call_at(1, cmd.into_ipc())
}

#[cfg(all(test, unix))]
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
        assert!(matches!(peers, Err(veil_ipc::ClientError::Remote(e)) if e.message == "nope"));
        assert!(
            ControlServer::bind(&path).is_err(),
            "a live socket is not replaced"
        );
        task.abort();
        drop(server);
        assert!(!path.exists());
        let gone = request(&path, ControlCommand::Status);
        assert!(matches!(
            gone,
            Err(veil_ipc::ClientError::NotRunning { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A handler with a subscription: two events first, then what the channel carries.
    #[derive(Clone)]
    struct Feed(broadcast::Sender<Event>);
    impl ControlHandler for Feed {
        fn handle(&self, _: ControlCommand) -> HandlerFuture<'_> {
            Box::pin(async move { Err("v1 refused".into()) })
        }
        fn subscribe(&self) -> SubscribeFuture<'_> {
            Box::pin(async move {
                Ok(EventFeed {
                    hello: serde_json::json!({"protocol": 2, "min_protocol": 1,
                        "version": "t", "mode": "service", "state": "connected"}),
                    first: vec![Event::RelayUp],
                    events: self.0.subscribe(),
                })
            })
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn versions_refusals_and_a_subscription() {
        let dir = std::env::temp_dir().join(format!("veil-io-ctl2-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(NODE_SOCKET);
        let mut server = ControlServer::bind(&path).unwrap();
        let (tx, _) = broadcast::channel(4);
        let task = tokio::spawn(server.serve(Feed(tx.clone())));
        let p = path.clone();
        let sender = tx.clone();
        tokio::task::spawn_blocking(move || {
            // Version 1 errors carry no code, as before; version 2 ones do.
            let mut c = veil_ipc::Client::connect(&p).unwrap();
            let e = c.call_at(1, Command::Status).unwrap_err();
            assert_eq!(e.code(), Some(ErrorCode::Other), "{e}");
            let e = c.call(Command::Status).unwrap_err();
            assert_eq!(e.code(), Some(ErrorCode::Failed));
            let e = c.call(Command::Counters).unwrap_err();
            assert_eq!(e.code(), Some(ErrorCode::NotService));
            assert!(e.to_string().contains("veil service install"), "{e}");
            let e = c.call_at(1, Command::Hello).unwrap_err();
            assert_eq!(e.code(), Some(ErrorCode::Version));
            // Many requests on one connection, then a subscription on it.
            for _ in 0..200 {
                assert!(c.call(Command::Peers).is_err());
            }
            let (hello, mut sub) = c.subscribe().unwrap();
            assert_eq!(hello.mode, "service");
            assert_eq!(sub.next_event().unwrap(), Some(Event::RelayUp));
            sender.send(Event::PeerUp { id: "p".into() }).unwrap();
            assert_eq!(
                sub.next_event().unwrap(),
                Some(Event::PeerUp { id: "p".into() })
            );
        })
        .await
        .unwrap();
        // A request line past the limit ends the connection with a reason.
        let p = path.clone();
        let answer = tokio::task::spawn_blocking(move || {
            use std::io::{BufRead, Write};
            let mut s = std::os::unix::net::UnixStream::connect(&p).unwrap();
            s.write_all(&vec![b'x'; veil_ipc::MAX_REQUEST_LINE + 10])
                .unwrap();
            let mut line = String::new();
            std::io::BufReader::new(s).read_line(&mut line).unwrap();
            line
        })
        .await
        .unwrap();
        assert!(answer.contains("request too long"), "{answer}");
        task.abort();
        drop(server);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
