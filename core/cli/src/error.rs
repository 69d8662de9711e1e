//! The CLI's error type: every failure as one line for stderr. Library errors keep their own
//! messages (they already name the path, key or address at fault).

use std::path::PathBuf;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The join or relay token does not decode.
    #[error(transparent)]
    Token(#[from] veil_proto::TokenError),
    /// A certificate or CA key problem.
    #[error("certificate: {0}")]
    Cert(#[from] veil_proto::CertError),
    /// The network has a CA and no certificate was given.
    #[error("this network requires a certificate: pass --cert FILE (the operator signs one with `veil cert sign --ca ca.key --node-key $(veil key --state-dir DIR)`)")]
    NeedCert,
    /// A certificate was given for a network without a CA.
    #[error(
        "--cert given, but this network has no CA (it was created without --with-ca): drop --cert"
    )]
    CertNotNeeded,
    /// A value that should be a hex public key.
    #[error("--node-key must be the node's public key as 64 hex digits (run `veil key` on the node), got `{0}`")]
    NodeKey(String),
    /// An --allow rule that is not `A:B`.
    #[error("--allow takes two tags as A:B (use * for any tag), got `{0}`")]
    Rule(String),
    /// Two-hop private mode with a token that names fewer than two relays.
    #[error("private = 2 needs a join token with at least two relays (this one lists {0}): create the network with two --relay addresses, or use --private (one hop)")]
    TwoHopNeedsTwoRelays(usize),
    /// No token was given.
    #[error("no join token: pass --token or --token-file (or set VEIL_TOKEN or VEIL_TOKEN_FILE)")]
    NoToken,
    /// A token file could not be read.
    #[error("token file {}: {source}", path.display())]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Bad settings.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// State directory or node key problem.
    #[error(transparent)]
    State(#[from] veil_io::state::StateError),
    /// Not root and no CAP_NET_ADMIN (on Windows: not elevated).
    #[cfg_attr(
        not(windows),
        error("veil up needs root (or CAP_NET_ADMIN) to create its TUN device: run it with sudo")
    )]
    #[cfg_attr(
        windows,
        error("veil up needs administrator rights to create its Wintun adapter: run it from an elevated prompt (Run as administrator)")
    )]
    NotPrivileged,
    /// A HOST:PORT argument that is not one.
    #[error("invalid {what} `{value}`: {reason} (expected HOST:PORT, e.g. relay.example.com:7000 or [2001:db8::1]:7000)")]
    HostPort {
        /// `--relay` or `--listen`.
        what: &'static str,
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A name did not resolve.
    #[error("could not resolve {what} `{addr}`: {source}")]
    Resolve {
        /// `relay address` or `listen address`.
        what: &'static str,
        /// The address.
        addr: String,
        /// The resolver error.
        #[source]
        source: std::io::Error,
    },
    /// A file could not be written or read.
    #[error("{}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Refusing to overwrite an existing network's tokens.
    #[error("{} already exists: choose another --out directory or remove the old tokens first", path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// The node stopped with an error.
    #[error(transparent)]
    Node(#[from] veil_io::NodeError),
    /// The relay stopped with an error.
    #[error(transparent)]
    Relay(#[from] veil_io::RelayError),
    /// No process on the control socket.
    #[error("{0}")]
    NotRunning(String),
    /// The service's socket failed or refused.
    #[error(transparent)]
    Ipc(#[from] veil_ipc::ClientError),
    /// The control socket could not be created.
    #[error("control socket {}: {source}", path.display())]
    ControlBind {
        /// The socket path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The TUN name is taken (another node runs on it).
    #[error("interface {0} exists already: another veil node runs on it (stop it with `veil down`), or choose another name with --tun")]
    TunInUse(String),
    /// Forwarding for advertised routes could not be set up.
    #[error("forwarding for advertised routes: {0}")]
    Forwarding(String),
    /// The kill switch could not be set up.
    #[error(transparent)]
    Lockdown(#[from] veil_io::lockdown::LockdownError),
    /// `veil ping` failed.
    #[error("ping: {0}")]
    Ping(String),
    /// The metrics listener could not be bound.
    #[error("metrics listener on {addr}: {source} (check that nothing else listens there, or set `metrics` to another ADDRESS:PORT)")]
    MetricsBind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The process did not stop in time after `down`.
    #[error("the process behind {} accepted the request but did not stop within {secs} s", path.display())]
    StopTimeout {
        /// The socket path.
        path: PathBuf,
        /// How long we waited.
        secs: u64,
    },
    /// The async runtime or a signal handler could not start.
    #[error("could not start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// Arguments clap could not check.
    #[error("{0}")]
    Usage(&'static str),

    #[error("{0}")]
    Cluster(String),
    /// Files that do not belong together.
    #[error("{0}")]
    Mismatch(String),
    /// The OS random source failed.
    #[error("could not read random bytes from the OS: {0}")]
    Random(String),
}
