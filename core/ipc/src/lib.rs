//! # veil-ipc
//!
//! The protocol of the local control socket of a node, a relay and the `veil` service, as
//! typed values: requests ([`Command`]), answers ([`Response`], [`Hello`], [`Traffic`],
//! [`LogLine`]), the events of a subscription ([`Event`]) and the JSON shapes of `status` and
//! `peers` ([`report`]). [`client`] talks to a socket, blocking (the CLI, the desktop app).
//!
//! The wire: one JSON object per line each way. A request is `{"v":V,"cmd":CMD}`, answered by
//! `{"ok":true,"result":…}` or `{"ok":false,"error":"…","code":"…"}`. Version 1 (what
//! `veil status`, `peers`, `down`, `policy push` and `network adopt` send) knows `status`,
//! `peers`, `down`, `{"policy":TEXT}` and `{"adopt":TEXT}`; version 2 adds `hello`,
//! `{"join":{"token":T}}`, `leave`, `connect`, `disconnect`, `counters`,
//! `{"logs":{"lines":N}}` and `subscribe`, after whose answer the connection carries one
//! [`Event`] per line until either side closes it. A process answers every version from
//! [`MIN_PROTOCOL_VERSION`] to [`PROTOCOL_VERSION`]; fields are only ever added, so readers
//! ignore what they do not know (an unknown event is [`Event::Unknown`]). docs/ipc.md is the
//! reference.
//!
//! This crate owns no socket server and no runtime: `veil-io` serves, this crate describes.

pub mod client;
pub mod report;

pub use client::{Client, ClientError, Closer, Subscription};
pub use report::{Counters, NodeStatusReport, PeerReport};

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::Ipv4Addr;

/// The newest protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 2;
/// The oldest version a server still answers.
pub const MIN_PROTOCOL_VERSION: u32 = 1;
/// Longest request line a server accepts (a join token or a policy fits many times).
pub const MAX_REQUEST_LINE: usize = 8192;
/// Log lines a `logs` request returns when it names no count, and the most it may ask for.
pub const DEFAULT_LOG_LINES: usize = 200;
/// The most log lines one `logs` answer carries (the service keeps as many).
pub const MAX_LOG_LINES: usize = 1000;
/// Socket file name of a node or the service, inside its state directory.
pub const NODE_SOCKET: &str = "veil.sock";
/// The service's state directory when none is configured.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/veil";
/// Group whose members may use the control socket besides root.
pub const CONTROL_GROUP: &str = "veil";

/// A request's command. Variants up to `Adopt` are protocol version 1; the others need 2.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Command {
    /// The node's status ([`NodeStatusReport`]).
    Status,
    /// The node's peers (a list of [`PeerReport`]).
    Peers,
    /// Stop the process.
    Down,
    /// Offer a CA-signed policy (text form) to the node.
    Policy(String),
    /// Hand over a rotated token (text form).
    Adopt(String),
    /// Who answers: protocol versions, program version, mode and state ([`Hello`]).
    Hello,
    /// Validate a join token and keep it in the service's state directory (root only).
    Join {
        /// The join token.
        token: String,
    },
    /// Disconnect and forget the join token (the node key stays: same addresses on rejoin).
    Leave,
    /// Start the node with the kept token.
    Connect,
    /// Stop the node; the service keeps running and answering.
    Disconnect,
    /// Traffic counters now ([`Traffic`]).
    Counters,
    /// The newest log lines of the service, oldest first (a list of [`LogLine`]).
    Logs {
        /// How many (1 to [`MAX_LOG_LINES`]).
        #[serde(default = "default_log_lines")]
        lines: usize,
    },
    /// Turn the connection into a stream of [`Event`]s.
    Subscribe,
}

fn default_log_lines() -> usize {
    DEFAULT_LOG_LINES
}

impl Command {
    /// The protocol version that introduced the command.
    pub fn since(&self) -> u32 {
        match self {
            Command::Status
            | Command::Peers
            | Command::Down
            | Command::Policy(_)
            | Command::Adopt(_) => 1,
            _ => 2,
        }
    }

    /// The command's name on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Status => "status",
            Command::Peers => "peers",
            Command::Down => "down",
            Command::Policy(_) => "policy",
            Command::Adopt(_) => "adopt",
            Command::Hello => "hello",
            Command::Join { .. } => "join",
            Command::Leave => "leave",
            Command::Connect => "connect",
            Command::Disconnect => "disconnect",
            Command::Counters => "counters",
            Command::Logs { .. } => "logs",
            Command::Subscribe => "subscribe",
        }
    }
}

/// Tokens and policies stay out of logs and panics: only the command's name is shown.
impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Logs { lines } => write!(f, "Logs {{ lines: {lines} }}"),
            other => f.write_str(other.name()),
        }
    }
}

/// One request line.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    /// The protocol version the client speaks.
    pub v: u32,
    /// What it asks.
    pub cmd: Command,
}

impl Request {
    /// A request at the newest version.
    pub fn new(cmd: Command) -> Self {
        Request {
            v: PROTOCOL_VERSION,
            cmd,
        }
    }

    /// Decodes and checks one request line: its size, its version and that the command
    /// exists at that version. The error names what is wrong and how to fix it.
    pub fn parse(line: &str) -> Result<Request, RemoteError> {
        if line.len() > MAX_REQUEST_LINE {
            return Err(RemoteError::new(
                ErrorCode::BadRequest,
                format!(
                    "request too long ({} bytes, at most {MAX_REQUEST_LINE})",
                    line.len()
                ),
            ));
        }
        // The version first, so that a newer client's unknown command says so.
        #[derive(Deserialize)]
        struct Version {
            v: Option<serde_json::Value>,
        }
        let version: Version = serde_json::from_str(line)
            .map_err(|e| RemoteError::new(ErrorCode::BadRequest, format!("bad request: {e}")))?;
        let v = match version.v {
            Some(serde_json::Value::Number(n)) => n.as_u64().unwrap_or(u64::MAX),
            Some(_) => {
                return Err(RemoteError::new(
                    ErrorCode::BadRequest,
                    "bad request: field `v` must be the protocol version, an integer".into(),
                ))
            }
            None => {
                return Err(RemoteError::new(
                    ErrorCode::BadRequest,
                    "bad request: missing field `v` (the protocol version)".into(),
                ))
            }
        };
        if !(u64::from(MIN_PROTOCOL_VERSION)..=u64::from(PROTOCOL_VERSION)).contains(&v) {
            return Err(RemoteError::new(
                ErrorCode::Version,
                format!(
                    "control protocol version {v} is not supported (this veil speaks {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}): update the program that asked, or veil"
                ),
            ));
        }
        let req: Request = serde_json::from_str(line)
            .map_err(|e| RemoteError::new(ErrorCode::BadRequest, format!("bad request: {e}")))?;
        if u64::from(req.cmd.since()) > v {
            return Err(RemoteError::new(
                ErrorCode::Version,
                format!(
                    "`{}` needs control protocol version {} (the request says {v})",
                    req.cmd.name(),
                    req.cmd.since()
                ),
            ));
        }
        Ok(req)
    }
}

/// One answer line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Response {
    /// Whether the command succeeded.
    pub ok: bool,
    /// Its result, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// A sentence for a human, when it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What kind of failure, for programs (absent from version 1 servers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<ErrorCode>,
}

impl Response {
    /// A success.
    pub fn ok(result: serde_json::Value) -> Self {
        Response {
            ok: true,
            result: Some(result),
            error: None,
            code: None,
        }
    }

    /// A failure.
    pub fn error(e: RemoteError) -> Self {
        Response {
            ok: false,
            result: None,
            error: Some(e.message),
            code: Some(e.code),
        }
    }
}

/// What kind of failure an answer reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request does not parse.
    BadRequest,
    /// The version or command is not one this process speaks.
    Version,
    /// The process is not the service (a foreground `veil up`, or a relay).
    NotService,
    /// The join token is missing: send `join` first.
    NoToken,
    /// The join token does not decode, or is of another kind.
    BadToken,
    /// The node is not running (disconnected).
    NotConnected,
    /// Another change of state is under way.
    Busy,
    /// The node could not start, or the command failed in the node.
    Failed,
    /// A code from a newer server.
    #[serde(other)]
    Other,
}

/// A failure as the server reports it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RemoteError {
    /// The kind.
    pub code: ErrorCode,
    /// The sentence.
    pub message: String,
}

impl RemoteError {
    /// A failure of kind `code`.
    pub fn new(code: ErrorCode, message: String) -> Self {
        RemoteError { code, message }
    }
}

/// Where the service is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    /// No join token yet: `join` first.
    NeedsToken,
    /// Not running a node.
    Disconnected,
    /// The node runs; its relay session is not up (yet, or lost: it retries).
    Connecting,
    /// The node runs and its relay session is up.
    Connected,
    /// The node is stopping.
    Disconnecting,
    /// A state from a newer server.
    #[serde(other)]
    Unknown,
}

impl ServiceState {
    /// The state's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceState::NeedsToken => "needs_token",
            ServiceState::Disconnected => "disconnected",
            ServiceState::Connecting => "connecting",
            ServiceState::Connected => "connected",
            ServiceState::Disconnecting => "disconnecting",
            ServiceState::Unknown => "unknown",
        }
    }
}

/// The service's state, as `hello` and the `state` event report it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateInfo {
    /// Where the service is.
    pub state: ServiceState,
    /// Why the last connection failed or ended, while disconnected or retrying.
    #[serde(default)]
    pub error: Option<String>,
    /// The node's overlay IPv4, once assigned.
    #[serde(default)]
    pub overlay_ipv4: Option<Ipv4Addr>,
    /// The relays of the kept join token (`HOST:PORT`), so a user sees which network.
    #[serde(default)]
    pub relays: Vec<String>,
}

/// The answer to `hello`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// The newest protocol version the server speaks.
    pub protocol: u32,
    /// The oldest one it still answers.
    pub min_protocol: u32,
    /// The server's program version.
    pub version: String,
    /// `service` (`veil service run`: join, connect and events) or `foreground` (`veil up`:
    /// status, peers and counters only).
    pub mode: String,
    /// The state.
    #[serde(flatten)]
    pub state: StateInfo,
}

/// The answer to `counters`, and the totals of a `stats` event: the node's inner traffic.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Traffic {
    /// When it was read (Unix time, milliseconds).
    pub unix_ms: u64,
    /// Inner bytes sent (direct and relayed).
    pub tx_bytes: u64,
    /// Inner bytes received.
    pub rx_bytes: u64,
    /// Inner packets sent.
    pub tx_packets: u64,
    /// Inner packets received.
    pub rx_packets: u64,
    /// Of `tx_bytes`, on direct paths.
    pub tx_bytes_direct: u64,
    /// Of `rx_bytes`, on direct paths.
    pub rx_bytes_direct: u64,
    /// Seconds since the node started.
    pub uptime_s: u64,
}

impl Traffic {
    /// The totals of a status report, stamped `unix_ms`.
    pub fn from_status(s: &NodeStatusReport, unix_ms: u64) -> Self {
        let c = |name: &str| s.counters.get(name).unwrap_or(0);
        Traffic {
            unix_ms,
            tx_bytes: c("tx_bytes_direct") + c("tx_bytes_relayed"),
            rx_bytes: c("rx_bytes_direct") + c("rx_bytes_relayed"),
            tx_packets: c("tx_packets_direct") + c("tx_packets_relayed"),
            rx_packets: c("rx_packets_direct") + c("rx_packets_relayed"),
            tx_bytes_direct: c("tx_bytes_direct"),
            rx_bytes_direct: c("rx_bytes_direct"),
            uptime_s: s.uptime_s,
        }
    }
}

/// One log line of the service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// When (Unix time, milliseconds).
    pub unix_ms: u64,
    /// `ERROR`, `WARN`, `INFO`, `DEBUG` or `TRACE`.
    pub level: String,
    /// The message and its fields, as the log shows them.
    pub message: String,
}

/// The once-a-second tick of a subscription while the node runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Traffic totals.
    pub traffic: Traffic,
    /// Whether the relay session is up.
    pub relay_connected: bool,
    /// Round trip to the relay, milliseconds.
    #[serde(default)]
    pub relay_rtt_ms: Option<f64>,
    /// Every peer, as `peers` reports them.
    pub peers: Vec<PeerReport>,
}

/// One line of a subscription. Tagged by `event`; unknown ones (from newer servers) read as
/// [`Event::Unknown`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The service's state changed (also the first event of every subscription).
    State(StateInfo),
    /// The relay session came up.
    RelayUp,
    /// The relay stopped answering; the node retries.
    RelayDown,
    /// A session with a peer came up.
    PeerUp {
        /// The peer's short id.
        id: String,
    },
    /// A peer's session closed.
    PeerDown {
        /// The peer's short id.
        id: String,
    },
    /// A peer's path changed.
    PeerPath {
        /// The peer's short id.
        id: String,
        /// `direct` or `relayed`.
        path: String,
    },
    /// Once a second while the node runs.
    Stats(Stats),
    /// A log line of the service.
    Log(LogLine),
    /// The subscriber fell behind and missed this many events.
    Lagged {
        /// How many.
        missed: u64,
    },
    /// An event this version does not know.
    #[serde(other)]
    Unknown,
}

/// Unix time now, in milliseconds.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn version_one_requests_are_unchanged() {
        for (line, cmd) in [
            (r#"{"v":1,"cmd":"status"}"#, Command::Status),
            (r#"{"v":1,"cmd":"peers"}"#, Command::Peers),
            (r#"{"v":1,"cmd":"down"}"#, Command::Down),
            (r#"{"v":1,"cmd":{"adopt":"T"}}"#, Command::Adopt("T".into())),
            (r#"{"v":2,"cmd":"status"}"#, Command::Status),
        ] {
            assert_eq!(Request::parse(line).unwrap().cmd, cmd, "{line}");
        }
        let text = serde_json::to_string(&Request {
            v: 1,
            cmd: Command::Policy("P".into()),
        })
        .unwrap();
        assert_eq!(text, r#"{"v":1,"cmd":{"policy":"P"}}"#);
    }

    #[test]
    fn version_two_commands() {
        let join = serde_json::to_string(&Request::new(Command::Join { token: "t".into() }));
        assert_eq!(join.unwrap(), r#"{"v":2,"cmd":{"join":{"token":"t"}}}"#);
        assert_eq!(
            Request::parse(r#"{"v":2,"cmd":{"logs":{}}}"#).unwrap().cmd,
            Command::Logs {
                lines: DEFAULT_LOG_LINES
            }
        );
        assert_eq!(
            Request::parse(r#"{"v":2,"cmd":"subscribe"}"#).unwrap().cmd,
            Command::Subscribe
        );
        let old = Request::parse(r#"{"v":1,"cmd":"hello"}"#).unwrap_err();
        assert_eq!(old.code, ErrorCode::Version);
        assert!(old
            .message
            .contains("`hello` needs control protocol version 2"));
    }

    #[test]
    fn bad_requests_name_the_problem() {
        for (line, needle) in [
            (r#"{"v":3,"cmd":"status"}"#, "version 3 is not supported"),
            (r#"{"v":"x","cmd":"status"}"#, "field `v`"),
            (r#"{"cmd":"status"}"#, "missing field `v`"),
            (r#"{"v":2,"cmd":"fly"}"#, "unknown variant `fly`"),
            (r#"{"v":2,"cmd":{"join":{}}}"#, "missing field `token`"),
            ("not json", "bad request"),
            ("[1,2]", "bad request"),
        ] {
            let e = Request::parse(line).unwrap_err();
            assert!(e.message.contains(needle), "{line}: {}", e.message);
        }
        let long = format!(
            r#"{{"v":2,"cmd":{{"join":{{"token":"{}"}}}}}}"#,
            "a".repeat(9000)
        );
        assert!(Request::parse(&long)
            .unwrap_err()
            .message
            .contains("too long"));
    }

    #[test]
    fn debug_hides_secrets() {
        let shown = format!(
            "{:?}",
            Command::Join {
                token: "SECRET".into()
            }
        );
        assert!(!shown.contains("SECRET"));
        assert!(!format!("{:?}", Command::Adopt("SECRET".into())).contains("SECRET"));
    }

    #[test]
    fn events_round_trip_and_unknown_ones_are_tolerated() {
        let events = [
            Event::State(StateInfo {
                state: ServiceState::Connected,
                error: None,
                overlay_ipv4: Some(Ipv4Addr::new(100, 64, 0, 1)),
                relays: vec!["198.18.0.1:7000".into()],
            }),
            Event::PeerPath {
                id: "ab".into(),
                path: "direct".into(),
            },
            Event::Log(LogLine {
                unix_ms: 1,
                level: "INFO".into(),
                message: "hi".into(),
            }),
            Event::Lagged { missed: 3 },
            Event::RelayUp,
        ];
        for e in events {
            let text = serde_json::to_string(&e).unwrap();
            assert_eq!(serde_json::from_str::<Event>(&text).unwrap(), e, "{text}");
        }
        let state = serde_json::to_value(Event::RelayDown).unwrap();
        assert_eq!(state, serde_json::json!({"event": "relay_down"}));
        let future: Event = serde_json::from_str(r#"{"event":"teleport","x":1}"#).unwrap();
        assert_eq!(future, Event::Unknown);
        let state: ServiceState = serde_json::from_str(r#""hibernating""#).unwrap();
        assert_eq!(state, ServiceState::Unknown);
    }

    #[test]
    fn hello_is_flat() {
        let h = Hello {
            protocol: 2,
            min_protocol: 1,
            version: "0.1.0".into(),
            mode: "service".into(),
            state: StateInfo {
                state: ServiceState::NeedsToken,
                error: None,
                overlay_ipv4: None,
                relays: vec![],
            },
        };
        let v = serde_json::to_value(&h).unwrap();
        assert_eq!(v["state"], "needs_token");
        assert_eq!(serde_json::from_value::<Hello>(v).unwrap(), h);
    }

    #[test]
    fn traffic_sums_both_paths() {
        let s = NodeStatusReport {
            counters: Counters(vec![
                ("tx_bytes_direct".into(), 10),
                ("tx_bytes_relayed".into(), 5),
                ("rx_bytes_relayed".into(), 7),
                ("tx_packets_direct".into(), 2),
            ]),
            ..report::tests::status()
        };
        let t = Traffic::from_status(&s, 9);
        assert_eq!((t.tx_bytes, t.rx_bytes, t.tx_packets), (15, 7, 2));
        assert_eq!((t.tx_bytes_direct, t.unix_ms), (10, 9));
    }
}
