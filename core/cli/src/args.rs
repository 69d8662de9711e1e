//! The command line, as clap derive types. Only shapes and help texts live here; what a
//! command does is in its own module.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Default state directory of a node.
#[cfg(not(windows))]
pub const NODE_STATE_DIR: &str = "/var/lib/veil";
/// Default state directory of a node.
#[cfg(windows)]
pub const NODE_STATE_DIR: &str = r"C:\ProgramData\veil";
/// Default state directory of a relay.
#[cfg(not(windows))]
pub const RELAY_STATE_DIR: &str = "/var/lib/veil-relay";
/// Default state directory of a relay.
#[cfg(windows)]
pub const RELAY_STATE_DIR: &str = r"C:\ProgramData\veil-relay";

/// Veil: an overlay network that joins by token, hides its metadata and opens no port.
#[derive(Debug, Parser)]
#[command(name = "veil", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Create a network.
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Run a relay (rendezvous and relay), or ask a running one for its status.
    Relay(RelayCmd),
    /// Join the network and run a node in the foreground.
    Up(UpArgs),
    /// Show the running node's status.
    Status(QueryArgs),
    /// List the running node's peers.
    Peers(QueryArgs),
    /// Stop the running node.
    Down(TargetArgs),
    /// Resolve a member's name through the node's DNS and measure round trips to it.
    Ping(PingArgs),
    /// Print this node's public key (creating the key if there is none), for `veil cert sign`.
    Key(KeyArgs),
    /// Certificates, in networks created with --with-ca.
    #[command(subcommand)]
    Cert(CertCmd),
    /// CA-signed policies (which tags may talk, which nodes are revoked).
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// The system service the desktop app talks to: install it, run it, join and connect.
    #[command(subcommand)]
    Service(ServiceCmd),
}

#[derive(Debug, Subcommand)]
pub enum ServiceCmd {
    /// Run the service in the foreground (what the system service starts): it owns the
    /// control socket and starts and stops the node on request.
    Run(ServiceRunArgs),
    /// Install the system service (systemd; launchd on macOS; the Service Control Manager on
    /// Windows), create the `veil` group and start it.
    Install(ServiceInstallArgs),
    /// Stop and remove the system service (the state dir, its key and token stay).
    Uninstall(ServiceInstallArgs),
    /// Whether the service is installed and running, and its state.
    Status(QueryArgs),
    /// Give the service a join token (it keeps it in its state dir, readable by root only).
    Join(ServiceJoinArgs),
    /// Start the node (with the token given by `join`).
    Connect(TargetArgs),
    /// Stop the node; the service keeps running.
    Disconnect(TargetArgs),
    /// Disconnect and forget the join token (the node key stays).
    Leave(TargetArgs),
}

#[derive(Clone, Debug, Args)]
pub struct ServiceRunArgs {
    /// State directory: node key, join token, control socket.
    #[arg(long, value_name = "DIR", env = "VEIL_STATE_DIR", default_value = NODE_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Config file (TOML; see docs/config.md), read at each connect.
    #[arg(long, value_name = "FILE", env = "VEIL_CONFIG")]
    pub config: Option<PathBuf>,
    /// This node's certificate (networks created with --with-ca).
    #[arg(long, value_name = "FILE", env = "VEIL_CERT")]
    pub cert: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ServiceInstallArgs {
    /// State directory the service uses.
    #[arg(long, value_name = "DIR", default_value = NODE_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Where the systemd unit goes.
    #[arg(long, value_name = "DIR", default_value = "/etc/systemd/system")]
    pub unit_dir: PathBuf,
    /// Only write (or remove) the files and the group; do not ask the service manager to
    /// start or stop anything.
    #[arg(long)]
    pub no_start: bool,
}

#[derive(Debug, Args)]
pub struct ServiceJoinArgs {
    /// The join token [env: VEIL_TOKEN].
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// File holding the join token [env: VEIL_TOKEN_FILE].
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Connect at once.
    #[arg(long)]
    pub connect: bool,
    #[command(flatten)]
    pub target: TargetArgs,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Sign a policy with the CA key; prints it (or writes --out).
    Sign(PolicySignArgs),
    /// Give a policy to a running node, which passes it to the relay and so to every node.
    Push(PolicyPushArgs),
}

#[derive(Debug, Args)]
pub struct PolicySignArgs {
    /// The CA key (ca.key).
    #[arg(long, value_name = "FILE")]
    pub ca: PathBuf,
    /// Serial number: a policy replaces any with a lower serial.
    #[arg(long, value_name = "N")]
    pub serial: u64,
    /// Let nodes tagged A and nodes tagged B talk, `A:B` (`*` = any tag); repeat. Without
    /// any --allow, tags do not restrict traffic.
    #[arg(long = "allow", value_name = "A:B")]
    pub allow: Vec<String>,
    /// Revoke a node key (64 hex digits, as `veil key` prints it); repeat.
    #[arg(long = "revoke", value_name = "HEX")]
    pub revoke: Vec<String>,
    /// Write the policy here instead of printing it.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PolicyPushArgs {
    /// The policy file (from `veil policy sign`).
    pub file: PathBuf,
    #[command(flatten)]
    pub target: TargetArgs,
}

#[derive(Debug, Args)]
pub struct KeyArgs {
    /// State directory of the node (its key is DIR/node.key).
    #[arg(long, value_name = "DIR", env = "VEIL_STATE_DIR", default_value = NODE_STATE_DIR)]
    pub state_dir: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum CertCmd {
    /// Sign a node certificate with the network's CA key; prints it (or writes --out).
    Sign(CertSignArgs),
    /// Revoke a node: the current policy plus this key, signed with the next serial
    /// (push it with `veil policy push`).
    Revoke(CertRevokeArgs),
}

#[derive(Debug, Args)]
pub struct CertRevokeArgs {
    /// The CA key (ca.key).
    #[arg(long, value_name = "FILE")]
    pub ca: PathBuf,
    /// The node key to revoke, 64 hex digits (repeat for several).
    #[arg(long = "node-key", value_name = "HEX", required = true)]
    pub node_keys: Vec<String>,
    /// The policy in force (its rules and revocations are kept); without it the new policy
    /// has serial 1 and no rules.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Write the new policy here instead of printing it.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CertSignArgs {
    /// The CA key written by `veil network create --with-ca` (ca.key).
    #[arg(long, value_name = "FILE")]
    pub ca: PathBuf,
    /// The node's public key, 64 hex digits, as `veil key` prints it on the node.
    #[arg(long, value_name = "HEX")]
    pub node_key: String,
    /// Fix the node's overlay IPv4 (otherwise it claims one first-come).
    #[arg(long, value_name = "ADDR")]
    pub ipv4: Option<std::net::Ipv4Addr>,
    /// A tag (group) for policy; repeat for several.
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Days until the certificate expires.
    #[arg(long, value_name = "N", default_value_t = 365)]
    pub days: u64,
    /// Write the certificate here (mode 0644) instead of printing it.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum NetworkCmd {
    /// Create a network: prints the join token, writes it and one token per relay to --out.
    Create(CreateArgs),
    /// Rotate the network secret: new join and relay tokens (same overlay addresses); the
    /// old secret keeps working until the overlap ends.
    Rotate(RotateArgs),
    /// Hand a running node the rotated join token (adopted at once, kept for restarts).
    Adopt(AdoptArgs),
}

#[derive(Debug, Args)]
pub struct RotateArgs {
    /// Directory with the current join.token and relay-N.token files (from `veil network
    /// create` or an earlier rotate).
    #[arg(long, value_name = "DIR")]
    pub from: PathBuf,
    /// Directory for the new tokens (created if missing; must not hold tokens yet).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Seconds during which the old secret still works, so nodes and relays can be given
    /// the new tokens one by one; 60 to 2592000 (30 days).
    #[arg(long, value_name = "SECS", default_value_t = 86_400)]
    pub overlap_secs: u64,
}

#[derive(Debug, Args)]
pub struct AdoptArgs {
    /// The rotated token file (join.token for a node; relay-N.token for `veil relay adopt`).
    #[arg(long, value_name = "FILE")]
    pub token_file: PathBuf,
    #[command(flatten)]
    pub target: TargetArgs,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// A relay's public address, HOST:PORT (repeat for several; order is kept).
    #[arg(long = "relay", value_name = "HOST:PORT", required = true)]
    pub relays: Vec<String>,
    /// Directory for join.token and relay-N.token (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Turn access control on: also write a CA key (DIR/ca.key, keep it offline); nodes
    /// then need a certificate signed with it (veil cert sign) to join.
    #[arg(long)]
    pub with_ca: bool,
    /// TCP port of the relays' stream listener (the fallback where UDP is blocked), on the
    /// host of each --relay; once for every relay, or once per --relay in order; 0 = that
    /// relay has none. Default 443 (then the token needs no trailer).
    #[arg(long = "relay-tcp-port", value_name = "PORT")]
    pub relay_tcp_ports: Vec<u16>,
    /// The relays share one rendezvous (each runs `veil relay --nats`): nodes start at the
    /// nearest relay (by round trip) instead of the first, and fail over in that order.
    /// Without it, every node starts at the first relay, so that all meet at one rendezvous.
    #[arg(long)]
    pub shared_rendezvous: bool,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct RelayCmd {
    #[command(subcommand)]
    pub sub: Option<RelaySub>,
    #[command(flatten)]
    pub run: RelayRunArgs,
}

#[derive(Debug, Subcommand)]
pub enum RelaySub {
    /// Show a running relay's status.
    Status(RelayStatusArgs),
    /// Hand a running relay its rotated token (adopted at once, kept for restarts).
    Adopt(RelayAdoptArgs),
}

#[derive(Debug, Args)]
pub struct RelayAdoptArgs {
    /// The relay's rotated token (relay-N.token from `veil network rotate`).
    #[arg(long, value_name = "FILE")]
    pub token_file: PathBuf,
    /// State directory of the relay (its socket is DIR/relay.sock).
    #[arg(long, value_name = "DIR", default_value = RELAY_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Control socket path (overrides --state-dir).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RelayRunArgs {
    /// Address to listen on, HOST:PORT (e.g. 0.0.0.0:7000).
    #[arg(long, value_name = "HOST:PORT", required = true)]
    pub listen: Option<String>,
    /// Also listen on TCP here, HOST:PORT, for nodes whose network blocks UDP (`off`: do
    /// not). Default: the host of --listen, port 443.
    #[arg(long, value_name = "HOST:PORT|off", env = "VEIL_RELAY_TCP_LISTEN")]
    pub tcp_listen: Option<String>,
    /// File holding this relay's token (relay-N.token).
    #[arg(long, value_name = "FILE", required = true)]
    pub token_file: Option<PathBuf>,
    /// State directory (holds relay.sock).
    #[arg(long, value_name = "DIR", default_value = RELAY_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Seconds after which a node that sent nothing is removed (its names expire and its
    /// peers are told it is unreachable); 30 to 86400.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 90,
        env = "VEIL_RELAY_LEASE_SECS"
    )]
    pub lease_secs: u64,
    /// Share the rendezvous with the network's other relays through this NATS cluster
    /// (JetStream on): comma-separated URLs, e.g. nats://10.0.0.5:4222,nats://10.0.0.6:4222.
    /// Nodes homed on different relays then find each other and are relayed relay to relay.
    #[arg(long, value_name = "URL[,URL…]", env = "VEIL_RELAY_NATS")]
    pub nats: Option<String>,
    /// With --nats: the address the other relays reach this one at, HOST:PORT (UDP, the
    /// --listen port). Default: the --listen address, when it is not a wildcard.
    #[arg(long, value_name = "HOST:PORT", env = "VEIL_RELAY_ADVERTISE")]
    pub advertise: Option<String>,
    /// With --nats: authenticate as this NATS user. The password comes from
    /// --nats-password-file or the environment variable VEIL_RELAY_NATS_PASSWORD (never the
    /// command line, which every local user can read).
    #[arg(long, value_name = "NAME", env = "VEIL_RELAY_NATS_USER")]
    pub nats_user: Option<String>,
    /// With --nats-user: a file holding the password.
    #[arg(long, value_name = "FILE", env = "VEIL_RELAY_NATS_PASSWORD_FILE")]
    pub nats_password_file: Option<PathBuf>,
    /// With --nats: a file holding the token the NATS servers expect (or the environment
    /// variable VEIL_RELAY_NATS_TOKEN).
    #[arg(long, value_name = "FILE", env = "VEIL_RELAY_NATS_TOKEN_FILE")]
    pub nats_token_file: Option<PathBuf>,
    /// With --nats: a file holding the seed (SU…) of the user NKey the NATS servers know
    /// this relay by (`nk -gen user`; the servers list only its public key, U…), or the seed
    /// itself in the environment variable VEIL_RELAY_NATS_NKEY_SEED.
    #[arg(long, value_name = "FILE", env = "VEIL_RELAY_NATS_NKEY")]
    pub nats_nkey: Option<PathBuf>,
    /// With --nats: a NATS credentials file (a user JWT and its NKey seed, as `nsc
    /// generate creds` writes it), for servers in operator mode.
    #[arg(long, value_name = "FILE", env = "VEIL_RELAY_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
    /// With --nats: PEM file of the CA certificates that sign the NATS servers' (instead
    /// of the system's). Implies TLS.
    #[arg(long, value_name = "FILE", env = "VEIL_RELAY_NATS_TLS_CA")]
    pub nats_tls_ca: Option<PathBuf>,
    /// With --nats: this relay's client certificate (PEM), for servers that verify clients
    /// (`verify: true`); with --nats-tls-key. Implies TLS.
    #[arg(long, value_name = "FILE", env = "VEIL_RELAY_NATS_TLS_CERT")]
    pub nats_tls_cert: Option<PathBuf>,
    /// With --nats-tls-cert: its private key (PEM).
    #[arg(long, value_name = "FILE", env = "VEIL_RELAY_NATS_TLS_KEY")]
    pub nats_tls_key: Option<PathBuf>,
    /// With --nats: refuse a NATS server that does not speak TLS (tls:// URLs and the
    /// --nats-tls-* files imply it).
    #[arg(long)]
    pub nats_tls: bool,
}

#[derive(Debug, Args)]
pub struct RelayStatusArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// State directory of the relay (its socket is DIR/relay.sock).
    #[arg(long, value_name = "DIR", default_value = RELAY_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Control socket path (overrides --state-dir).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// The join token [env: VEIL_TOKEN].
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// File holding the join token [env: VEIL_TOKEN_FILE].
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// State directory: node key, remembered address, control socket.
    #[arg(long, value_name = "DIR", env = "VEIL_STATE_DIR")]
    pub state_dir: PathBuf,
    /// TUN interface name (config key tun_name).
    #[arg(long, value_name = "NAME", env = "VEIL_TUN")]
    pub tun: Option<String>,
    /// Config file (TOML; see docs/config.md).
    #[arg(long, value_name = "FILE", env = "VEIL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Fixed local UDP port (config key port); by default an ephemeral one.
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
    /// Send everything through the relay: no candidates, no hole punching (config key
    /// direct_paths = false).
    #[arg(long)]
    pub no_direct: bool,
    /// Private mode (config key private): `--private` or `--private=1` sends everything
    /// through relays and tells no peer any address of this node; `--private=2` goes
    /// through two relays (needs a token with two), so that neither relay sees both ends.
    #[arg(long, value_name = "HOPS", num_args = 0..=1, default_missing_value = "1")]
    pub private: Option<u8>,
    /// Reach this peer (overlay address) through relays only, as in private mode; repeat
    /// (config key private_peers).
    #[arg(long = "private-peer", value_name = "ADDR")]
    pub private_peer: Vec<String>,
    /// Cover traffic: keep PPS datagrams a second flowing each way between this node and
    /// its relay, idle or not, padded to the path MTU (config key cover_pps; sets padding =
    /// "mtu"). Costs about PPS x 1.5 KB/s each way.
    #[arg(long, value_name = "PPS")]
    pub cover: Option<u64>,
    /// How to reach the relay: `auto` (UDP, and TCP if UDP gets no answer within 3 s),
    /// `udp` or `tcp` (config key relay_transport).
    #[arg(long, value_name = "auto|udp|tcp")]
    pub relay_transport: Option<String>,
    /// Offloads of the fast path: `all` (default: TUN segmentation offload and UDP
    /// GSO/GRO where the kernel has them), `udp` (UDP GSO/GRO only) or `off` (config key
    /// offload). For measuring and for drivers that mishandle an offload.
    #[arg(long, value_name = "all|udp|off")]
    pub offload: Option<String>,
    /// Helper threads that share the encryption of a batch with the node's thread: `auto`
    /// (default: one per core beyond two, at most 3) or 0 to 16 (config key
    /// crypto_threads).
    #[arg(long, value_name = "auto|N")]
    pub crypto_threads: Option<String>,
    /// Data cipher with peers: `auto` (default: AES-256-GCM when both CPUs have AES
    /// instructions, else ChaCha20-Poly1305) or `chacha20-poly1305` (config key cipher).
    #[arg(long, value_name = "auto|chacha20-poly1305")]
    pub cipher: Option<String>,
    /// Serve Prometheus metrics (text format, `GET /metrics`) on ADDRESS:PORT, e.g.
    /// 127.0.0.1:9101 (config key metrics). Anyone who can reach it learns peer ids, paths
    /// and traffic volumes: keep it on loopback or a monitoring network.
    #[arg(long, value_name = "ADDRESS:PORT")]
    pub metrics: Option<String>,
    /// This node's DNS name: members reach it as NAME.veil (NAME.<dns_domain>); a label of
    /// a-z, 0-9 and `-` (config key name). First come, first served in the network.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Kill switch: while the node runs (and reconnects), nothing leaves this host outside
    /// the tunnel except Veil's own datagrams, DHCP and IPv6 neighbour discovery (nftables;
    /// config key lockdown). Removed by `veil down`; after a crash it stays until the next
    /// `veil up`.
    #[arg(long)]
    pub lockdown: bool,
    /// Route these subnets (outside the overlay) for the network: this node forwards and
    /// masquerades what members send there; comma-separated or repeated (config key
    /// advertise_routes).
    #[arg(long, value_name = "PREFIX", value_delimiter = ',')]
    pub advertise_routes: Vec<String>,
    /// Be an exit node: forward (and masquerade) anything outside the overlay that members
    /// who chose this node send (config key advertise_exit).
    #[arg(long)]
    pub advertise_exit: bool,
    /// Send everything outside the overlay through this exit node (its DNS name or overlay
    /// IPv4); the relay and peers stay reachable directly (config key exit_node).
    #[arg(long, value_name = "NAME|ADDRESS")]
    pub exit_node: Option<String>,
    /// This node's certificate (networks created with --with-ca).
    #[arg(long, value_name = "FILE", env = "VEIL_CERT")]
    pub cert: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct TargetArgs {
    /// State directory of the node (its socket is DIR/veil.sock).
    #[arg(long, value_name = "DIR", env = "VEIL_STATE_DIR", default_value = NODE_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Control socket path (overrides --state-dir).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

/// `veil ping`.
#[derive(Debug, Args)]
pub struct PingArgs {
    /// A member's name (NAME or NAME.veil) or overlay IPv4.
    #[arg(value_name = "NAME|ADDRESS")]
    pub target_name: String,
    /// Echo requests to send.
    #[arg(long, short = 'c', default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    pub count: u16,
    /// Milliseconds between requests.
    #[arg(long, short = 'i', default_value_t = 500)]
    pub interval_ms: u64,
    #[command(flatten)]
    pub target: TargetArgs,
}

/// `status`, `peers`: which node, and how to print.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub target: TargetArgs,
}
