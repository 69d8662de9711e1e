//! A blocking client of the control socket: one connection, requests answered in order, or a
//! [`Subscription`] to the service's events. The CLI and the desktop app use it; neither
//! needs an async runtime for it.
//!
//! On Unix the socket is a Unix stream socket file; on Windows a named pipe path
//! (`\\.\pipe\…`) opened as a file.

use crate::{
    Command, ErrorCode, Event, Hello, LogLine, NodeStatusReport, PeerReport, RemoteError, Request,
    Response, Traffic,
};
use serde::de::DeserializeOwned;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The longest answer or event line read (a status with every counter is a few KiB; a peer
/// list of thousands fits).
const MAX_ANSWER: u64 = 16 << 20;
/// How long a request waits for its answer unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

#[cfg(unix)]
type Stream = std::os::unix::net::UnixStream;
#[cfg(not(unix))]
type Stream = std::fs::File;

#[cfg(unix)]
fn open(path: &Path) -> io::Result<Stream> {
    Stream::connect(path)
}

#[cfg(not(unix))]
fn open(path: &Path) -> io::Result<Stream> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
}

#[cfg(unix)]
fn set_timeout(s: &Stream, t: Option<Duration>) -> io::Result<()> {
    s.set_read_timeout(t)?;
    s.set_write_timeout(t)
}

#[cfg(not(unix))]
fn set_timeout(_: &Stream, _: Option<Duration>) -> io::Result<()> {
    Ok(())
}

#[cfg(unix)]
fn close(s: &Stream) {
    let _ = s.shutdown(std::net::Shutdown::Both);
}

#[cfg(not(unix))]
fn close(_: &Stream) {}

/// Why a request failed, on this side or the other.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens at the path (no file, or a stale one).
    #[error("no veil process answers at {} ({source})", path.display())]
    NotRunning {
        /// The socket path.
        path: PathBuf,
        /// The connect error.
        #[source]
        source: io::Error,
    },
    /// The socket exists but this user may not use it.
    #[error("permission denied on {}: only root and members of the `{}` group may use it (add yourself: sudo usermod -aG {} $USER, then log in again)", path.display(), crate::CONTROL_GROUP, crate::CONTROL_GROUP)]
    PermissionDenied {
        /// The socket path.
        path: PathBuf,
        /// The connect error.
        #[source]
        source: io::Error,
    },
    /// Talking to the socket failed (the process stopped, a time-out).
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
    Remote(RemoteError),
    /// The answer was not understood.
    #[error("unexpected answer on the control socket: {0}")]
    Protocol(String),
}

impl ClientError {
    /// A short key for the kind of failure, for a UI: `not_running`, `permission`, `io`,
    /// `remote` or `protocol`.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientError::NotRunning { .. } => "not_running",
            ClientError::PermissionDenied { .. } => "permission",
            ClientError::Io { .. } => "io",
            ClientError::Remote(_) => "remote",
            ClientError::Protocol(_) => "protocol",
        }
    }

    /// The server's error code, when the server refused.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Remote(e) => Some(e.code),
            _ => None,
        }
    }
}

/// One connection to a control socket.
#[derive(Debug)]
pub struct Client {
    path: PathBuf,
    writer: Stream,
    reader: BufReader<Stream>,
}

impl Client {
    /// Connects to the socket at `path`, with [`DEFAULT_TIMEOUT`] for each answer.
    pub fn connect(path: &Path) -> Result<Client, ClientError> {
        let stream = open(path).map_err(|source| match source.kind() {
            io::ErrorKind::PermissionDenied => ClientError::PermissionDenied {
                path: path.to_owned(),
                source,
            },
            _ => ClientError::NotRunning {
                path: path.to_owned(),
                source,
            },
        })?;
        let io_err = |source| ClientError::Io {
            path: path.to_owned(),
            source,
        };
        set_timeout(&stream, Some(DEFAULT_TIMEOUT)).map_err(io_err)?;
        let reader = BufReader::new(stream.try_clone().map_err(io_err)?);
        Ok(Client {
            path: path.to_owned(),
            writer: stream,
            reader,
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How long each answer may take (`None`: forever).
    pub fn set_timeout(&self, timeout: Option<Duration>) -> Result<(), ClientError> {
        set_timeout(&self.writer, timeout).map_err(|e| self.io(e))
    }

    fn io(&self, source: io::Error) -> ClientError {
        ClientError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Sends `cmd` at the newest protocol version and returns its result.
    pub fn call(&mut self, cmd: Command) -> Result<serde_json::Value, ClientError> {
        self.call_at(crate::PROTOCOL_VERSION, cmd)
    }

    /// Sends `cmd` as protocol version `v` (the CLI's version 1 commands use 1, so that an
    /// older node answers them).
    pub fn call_at(&mut self, v: u32, cmd: Command) -> Result<serde_json::Value, ClientError> {
        let mut line = serde_json::to_string(&Request { v, cmd })
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .and_then(|()| self.writer.flush())
            .map_err(|e| self.io(e))?;
        let answer = self.read_line()?.ok_or_else(|| {
            self.io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the process closed the connection without answering",
            ))
        })?;
        let response: Response = serde_json::from_str(&answer)
            .map_err(|e| ClientError::Protocol(format!("{e}: {}", answer.trim())))?;
        match response {
            Response {
                ok: true, result, ..
            } => Ok(result.unwrap_or(serde_json::Value::Null)),
            Response { error, code, .. } => Err(ClientError::Remote(RemoteError::new(
                code.unwrap_or(ErrorCode::Other),
                error.unwrap_or_else(|| "the process refused without saying why".into()),
            ))),
        }
    }

    /// One line, or `None` at the end of the stream.
    fn read_line(&mut self) -> Result<Option<String>, ClientError> {
        let mut line = String::new();
        let n = (&mut self.reader)
            .take(MAX_ANSWER)
            .read_line(&mut line)
            .map_err(|e| ClientError::Io {
                path: self.path.clone(),
                source: e,
            })?;
        Ok((n > 0).then_some(line))
    }

    /// Sends `cmd` and decodes its result as `T`.
    pub fn call_as<T: DeserializeOwned>(&mut self, cmd: Command) -> Result<T, ClientError> {
        let name = cmd.name();
        serde_json::from_value(self.call(cmd)?)
            .map_err(|e| ClientError::Protocol(format!("the answer to `{name}`: {e}")))
    }

    /// `hello`.
    pub fn hello(&mut self) -> Result<Hello, ClientError> {
        self.call_as(Command::Hello)
    }

    /// `status`.
    pub fn status(&mut self) -> Result<NodeStatusReport, ClientError> {
        self.call_as(Command::Status)
    }

    /// `peers`.
    pub fn peers(&mut self) -> Result<Vec<PeerReport>, ClientError> {
        self.call_as(Command::Peers)
    }

    /// `counters`.
    pub fn counters(&mut self) -> Result<Traffic, ClientError> {
        self.call_as(Command::Counters)
    }

    /// `logs`: the newest `lines` log lines, oldest first.
    pub fn logs(&mut self, lines: usize) -> Result<Vec<LogLine>, ClientError> {
        self.call_as(Command::Logs { lines })
    }

    /// `join`: the service checks the token and keeps it; answers the new state.
    pub fn join(&mut self, token: &str) -> Result<Hello, ClientError> {
        self.call_as(Command::Join {
            token: token.trim().to_owned(),
        })
    }

    /// `leave`, `connect` or `disconnect`: answers the new state.
    pub fn change(&mut self, cmd: Command) -> Result<Hello, ClientError> {
        self.call_as(cmd)
    }

    /// `subscribe`: the answer (the service's [`Hello`]) and the events after it. Events
    /// have no time-out (a disconnected service may say nothing for hours).
    pub fn subscribe(mut self) -> Result<(Hello, Subscription), ClientError> {
        let hello: Hello = self.call_as(Command::Subscribe)?;
        self.set_timeout(None)?;
        Ok((
            hello,
            Subscription {
                client: self,
                ended: false,
            },
        ))
    }
}

/// Sends one request to the socket at `path` and returns its result (connects for it).
pub fn request(path: &Path, cmd: Command) -> Result<serde_json::Value, ClientError> {
    Client::connect(path)?.call(cmd)
}

/// The events of a subscription, in order; blocking. Iterate, or call
/// [`Subscription::next_event`]. [`Subscription::closer`] ends it from another thread.
#[derive(Debug)]
pub struct Subscription {
    client: Client,
    ended: bool,
}

/// Ends a [`Subscription`] from another thread: its reader sees the end at once.
#[derive(Debug)]
pub struct Closer(Stream);

impl Closer {
    /// Closes the connection.
    pub fn close(&self) {
        close(&self.0);
    }
}

impl Subscription {
    /// The next event, or `None` once the service closed the stream (it stopped).
    pub fn next_event(&mut self) -> Result<Option<Event>, ClientError> {
        if self.ended {
            return Ok(None);
        }
        let Some(line) = self.client.read_line()? else {
            self.ended = true;
            return Ok(None);
        };
        serde_json::from_str(&line)
            .map(Some)
            .map_err(|e| ClientError::Protocol(format!("event {}: {e}", line.trim())))
    }

    /// A handle that closes this subscription.
    pub fn closer(&self) -> Result<Closer, ClientError> {
        self.client
            .writer
            .try_clone()
            .map(Closer)
            .map_err(|e| self.client.io(e))
    }
}

impl Iterator for Subscription {
    type Item = Result<Event, ClientError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_event().transpose()
    }
}

#[cfg(all(test, unix))]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("veil-ipc-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn missing_socket_is_not_running() {
        let dir = scratch("missing");
        let e = Client::connect(&dir.join("veil.sock")).unwrap_err();
        assert_eq!(e.kind(), "not_running");
        assert!(e.to_string().contains("veil.sock"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn answers_errors_and_events() {
        let dir = scratch("answers");
        let path = dir.join("veil.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut w = s;
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            assert_eq!(line.trim(), r#"{"v":2,"cmd":"counters"}"#);
            w.write_all(b"{\"ok\":false,\"error\":\"no node\",\"code\":\"not_connected\"}\n")
                .unwrap();
            line.clear();
            r.read_line(&mut line).unwrap();
            assert_eq!(line.trim(), r#"{"v":2,"cmd":"subscribe"}"#);
            w.write_all(
                b"{\"ok\":true,\"result\":{\"protocol\":2,\"min_protocol\":1,\"version\":\"x\",\"mode\":\"service\",\"state\":\"disconnected\"}}\n{\"event\":\"relay_up\"}\n{\"event\":\"from_the_future\"}\n",
            )
            .unwrap();
        });
        let mut c = Client::connect(&path).unwrap();
        let e = c.counters().unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::NotConnected));
        assert_eq!(e.to_string(), "no node");
        let (hello, mut sub) = c.subscribe().unwrap();
        assert_eq!(hello.state.state, crate::ServiceState::Disconnected);
        assert_eq!(sub.next_event().unwrap(), Some(Event::RelayUp));
        assert_eq!(sub.next_event().unwrap(), Some(Event::Unknown));
        server.join().unwrap();
        assert_eq!(sub.next_event().unwrap(), None);
        assert!(sub.next().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
