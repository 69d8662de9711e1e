//! The node's event loop. [`NodeRunner`] owns the `veil_proto::Node`, its UDP socket, the TUN
//! device and a command channel, and moves packets between them in one task. It never looks
//! inside a packet: what to send, deliver or log is the engine's decision. It reads the clock
//! (`Instant::now()`) for the engine, and persists the overlay IPv4 the engine reports.
//!
//! Start-up: the TUN device needs the overlay IPv4. With a remembered address (`ipv4_hint`)
//! the device is created at once (and moved if the rendezvous assigns another address);
//! without one the loop runs on the socket and timers alone until `Ipv4Assigned`, and gives up
//! after [`IPV4_WAIT`].
//!
//! The relay's datagrams go over UDP, or over a TCP stream to the relay where UDP is blocked
//! ([`crate::link`]: `relay_transport`, and in `auto` the switch between the two).

use crate::control::{ControlCommand, ControlHandler, HandlerFuture, ServiceFuture};
use crate::dns::{self, DnsListener};
use crate::link::{Chooser, LinkCounters, Read, Ready, RelayTransport, TcpLink};
use crate::parallel::Helpers;
use crate::report::{self, Counters, NodeStatusReport, PeerReport};
use crate::routes::KernelRoutes;
use crate::socket::{self, SocketFactory};
use crate::tun::{Tun, TunAddrs, TunError, TunReader, TunSource, TunWriter};
use crate::udp::{self, Offload, RxBatch, SendFailure, TxRun, Udp};
use crate::{ifaddrs, os_seed, state, unix_now, BUF_SIZE, MAX_BATCH};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, oneshot};
use veil_proto::session::{OpenJob, Opened};
use veil_proto::{Identity, JoinToken, Node, NodeConfig, NodeEvent, Transmit};

/// How long a node without a remembered address waits for the rendezvous to assign one.
pub const IPV4_WAIT: Duration = Duration::from_secs(20);
/// File in the state directory holding the newest policy (text form).
pub const POLICY_FILE: &str = "policy";
/// How long the socket before a rotation is still read, and still carries the direct
/// paths validated from it until they are validated from the new one.
pub const OLD_SOCKET_GRACE: Duration = veil_proto::node::PREVIOUS_SOCKET_GRACE;
/// How often the interface addresses are read again where the OS does not say when they
/// change (a change is a roam); on Linux they are read when it does, and every 30 s.
pub const CANDIDATE_RESCAN: Duration = ifaddrs::POLL_EVERY;

/// How the runner is set up besides the engine's own configuration.
#[derive(Debug)]
pub struct NodeOptions {
    /// Where the TUN device comes from.
    pub tun: TunSource,
    /// Local UDP port (0 = ephemeral).
    pub port: u16,
    /// Move to a fresh ephemeral socket this often, and also after a session re-keys
    /// (at most once per half re-key interval) (None: never; ignored with a fixed port).
    pub rotate_every: Option<Duration>,
    /// Where the overlay IPv4 is remembered (`ipv4`); `None` keeps nothing.
    pub state_dir: Option<PathBuf>,
    /// How the relay is reached: UDP, a TCP stream, or UDP first and TCP if UDP gets no
    /// answer.
    pub relay_transport: RelayTransport,
    /// Each relay's TCP listener, by the relay's address as in the engine's configuration
    /// (relays without one are not listed).
    pub relay_tcp: Vec<(SocketAddr, SocketAddr)>,
    /// Which offloads the fast path uses.
    pub offload: Offload,
    /// Helper threads that share the AEAD work of a batch with the node's thread (0: the
    /// node's thread alone); see [`crate::parallel`] and [`auto_crypto_threads`].
    pub crypto_threads: usize,
    /// How the node learns that the host's addresses changed.
    pub address_changes: AddressChanges,
}

/// How a node learns that the host's addresses changed (it reads them then, and every
/// 30 s regardless).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AddressChanges {
    /// From the OS: Linux's rtnetlink reports, elsewhere (or without them) by reading the
    /// addresses every 250 ms.
    #[default]
    Watch,
    /// From the platform, which calls [`NodeHandle::network_changed`] when the network
    /// changes (the phones' shells: Android's `NetworkCallback`, iOS's `NWPathMonitor`);
    /// no scan of its own in between, so an idle phone is not woken four times a second.
    Reported,
}

/// The helper threads `crypto_threads = "auto"` starts: one per core beyond the first two,
/// at most 3. Measured on two shared cores (docs/performance.md, step 7), a helper took
/// CPU from the other processes of the flow and gained nothing there.
pub fn auto_crypto_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    cores.saturating_sub(2).min(3)
}

/// Why the node stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The UDP socket could not be opened.
    #[error("could not open the node's UDP socket on {addr}: {source}")]
    Socket {
        /// The address bound.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The TUN device could not be set up.
    #[error(transparent)]
    Tun(#[from] TunError),
    /// The AEAD helper threads could not be started.
    #[error("could not start the node's crypto threads: {0} (set crypto_threads = 0 to run without them)")]
    Threads(#[source] io::Error),
    /// No overlay IPv4 in time.
    #[error("could not reach the relay at {relay} within {} s: check the address in the token and that `veil relay` runs", IPV4_WAIT.as_secs())]
    RelayUnreachable {
        /// The relay address(es) tried.
        relay: String,
    },
    /// The randomness source failed.
    #[error("could not read random bytes from the OS: {0}")]
    Random(#[source] io::Error),
    /// A socket or TUN wait failed in a way the loop cannot continue after.
    #[error("I/O failure on the {what}: {source}")]
    Fatal {
        /// `UDP socket` or `TUN device`.
        what: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// Requests to a running node.
#[derive(Debug)]
enum Command {
    Status(oneshot::Sender<NodeStatusReport>),
    Peers(oneshot::Sender<Vec<PeerReport>>),
    Shutdown(oneshot::Sender<()>),
    Policy(String, oneshot::Sender<Result<serde_json::Value, String>>),
    Adopt(String, oneshot::Sender<Result<serde_json::Value, String>>),
    NetworkChanged,
    SetTun(TunSource, oneshot::Sender<Result<(), String>>),
}

/// A cheap handle to a running node (for the control socket or an app).
#[derive(Clone, Debug)]
pub struct NodeHandle {
    tx: mpsc::Sender<Command>,
    events: broadcast::Sender<NodeEvent>,
}

/// How many engine events a slow subscriber may fall behind before it misses some.
pub const EVENT_BACKLOG: usize = 256;

const STOPPED: &str = "the node is stopping";

impl NodeHandle {
    /// Status snapshot.
    pub async fn status(&self) -> Option<NodeStatusReport> {
        self.ask(Command::Status).await
    }

    /// Peers snapshot.
    pub async fn peers(&self) -> Option<Vec<PeerReport>> {
        self.ask(Command::Peers).await
    }

    /// The engine's events from now on (relay up and down, peers up and down, path changes,
    /// the overlay IPv4), in order. A subscriber more than [`EVENT_BACKLOG`] events behind
    /// gets `Lagged` and continues with the newest.
    pub fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.events.subscribe()
    }

    /// The platform saw the network change (Wi-Fi to cellular, a new address): the node
    /// reads its addresses now rather than at the next scan, so the relay and peers learn
    /// them, and direct paths (with their MTU) are searched again from the new network.
    pub async fn network_changed(&self) {
        let _ = self.tx.send(Command::NetworkChanged).await;
    }

    /// Moves the node to another TUN device (a platform rebuilt its interface, e.g. after
    /// the overlay IPv4 changed); sessions stay up. Before the first device is open, this
    /// one replaces the configured source.
    pub async fn set_tun(&self, source: TunSource) -> Result<(), String> {
        match self.ask(|tx| Command::SetTun(source, tx)).await {
            Some(r) => r,
            None => Err(STOPPED.into()),
        }
    }

    /// Asks the node to stop; returns once the loop has accepted (it ends right after).
    pub async fn shutdown(&self) {
        let _ = self.ask(Command::Shutdown).await;
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.ok()?;
        rx.await.ok()
    }
}

impl ControlHandler for NodeHandle {
    fn handle(&self, cmd: ControlCommand) -> HandlerFuture<'_> {
        Box::pin(async move {
            let value = match cmd {
                ControlCommand::Status => self.status().await.map(serde_json::to_value),
                ControlCommand::Peers => self.peers().await.map(serde_json::to_value),
                ControlCommand::Down => {
                    self.shutdown().await;
                    Some(Ok(serde_json::Value::String("stopping".into())))
                }
                ControlCommand::Policy(text) => {
                    return match self.ask(|tx| Command::Policy(text, tx)).await {
                        Some(r) => r,
                        None => Err(STOPPED.into()),
                    };
                }
                ControlCommand::Adopt(text) => {
                    return match self.ask(|tx| Command::Adopt(text, tx)).await {
                        Some(r) => r,
                        None => Err(STOPPED.into()),
                    };
                }
            };
            match value {
                Some(Ok(v)) => Ok(v),
                Some(Err(e)) => Err(format!("internal error: {e}")),
                None => Err(STOPPED.into()),
            }
        })
    }

    /// A foreground node (`veil up`) says who it is and counts; joining, connecting and
    /// events are the service's.
    fn handle_v2(&self, cmd: veil_ipc::Command) -> ServiceFuture<'_> {
        Box::pin(async move {
            let stopped =
                || veil_ipc::RemoteError::new(veil_ipc::ErrorCode::Failed, STOPPED.into());
            let internal = |e: serde_json::Error| {
                veil_ipc::RemoteError::new(
                    veil_ipc::ErrorCode::Failed,
                    format!("internal error: {e}"),
                )
            };
            match cmd {
                veil_ipc::Command::Hello => {
                    let s = self.status().await.ok_or_else(stopped)?;
                    serde_json::to_value(foreground_hello(&s)).map_err(internal)
                }
                veil_ipc::Command::Counters => {
                    let s = self.status().await.ok_or_else(stopped)?;
                    serde_json::to_value(veil_ipc::Traffic::from_status(&s, veil_ipc::unix_ms()))
                        .map_err(internal)
                }
                other => Err(crate::control::not_service(&other)),
            }
        })
    }
}

/// The `hello` of a node that runs in the foreground.
pub fn foreground_hello(s: &NodeStatusReport) -> veil_ipc::Hello {
    veil_ipc::Hello {
        protocol: veil_ipc::PROTOCOL_VERSION,
        min_protocol: veil_ipc::MIN_PROTOCOL_VERSION,
        version: env!("CARGO_PKG_VERSION").into(),
        mode: "foreground".into(),
        state: veil_ipc::StateInfo {
            state: if s.relay_connected {
                veil_ipc::ServiceState::Connected
            } else {
                veil_ipc::ServiceState::Connecting
            },
            error: None,
            overlay_ipv4: s.overlay_ipv4,
            relays: s.relay.iter().cloned().collect(),
        },
    }
}

/// Errors of this layer, reported with the engine's counters as `io_*`.
#[derive(Debug, Default)]
struct IoCounters {
    send_errors: u64,
    /// Datagrams the socket refused as larger than the interface allows (DF behaviour).
    send_too_big: u64,
    /// Their destinations and sizes, for the engine's path MTU discovery.
    too_big: Vec<(SocketAddr, usize)>,
    recv_errors: u64,
    tun_read_errors: u64,
    tun_write_errors: u64,
    socket_rotations: u64,
    /// Switches between UDP and TCP for the relay (auto mode).
    transport_switches: u64,
    /// TUN reads, and the packets they gave (more than one each: segmentation offload).
    tun_reads: u64,
    tun_read_packets: u64,
    /// UDP receive calls that returned data, and the datagrams they gave (more than one
    /// each: `recvmmsg` and GRO).
    udp_recvs: u64,
    udp_recv_datagrams: u64,
}

impl IoCounters {
    /// A send refused as larger than the interface allows: counted, and kept (up to 64)
    /// for the engine's path MTU discovery.
    fn note_too_big(&mut self, dst: SocketAddr, len: usize) {
        self.send_too_big += 1;
        if self.too_big.len() < 64 {
            self.too_big.push((dst, len));
        }
    }

    fn list(&self, tcp: &LinkCounters, tx: &TxRun, h: &Helpers) -> [(&'static str, u64); 22] {
        [
            ("io_send_errors", self.send_errors),
            ("io_send_too_big", self.send_too_big),
            ("io_recv_errors", self.recv_errors),
            ("io_tun_read_errors", self.tun_read_errors),
            ("io_tun_write_errors", self.tun_write_errors),
            ("io_socket_rotations", self.socket_rotations),
            ("io_relay_transport_switches", self.transport_switches),
            ("io_tcp_connects", tcp.connects),
            ("io_tcp_connect_failures", tcp.connect_failures),
            ("io_tcp_stream_ends", tcp.stream_ends),
            ("io_tcp_malformed", tcp.malformed),
            ("io_tcp_dropped", tcp.dropped),
            ("io_tcp_datagrams_out", tcp.datagrams_out),
            ("io_tcp_datagrams_in", tcp.datagrams_in),
            ("io_tun_reads", self.tun_reads),
            ("io_tun_read_packets", self.tun_read_packets),
            ("io_udp_recvs", self.udp_recvs),
            ("io_udp_recv_datagrams", self.udp_recv_datagrams),
            ("io_udp_runs", tx.runs),
            ("io_udp_run_datagrams", tx.run_datagrams),
            ("io_crypto_batches", h.batches),
            ("io_crypto_helper_jobs", h.jobs_by_helpers),
        ]
    }
}

/// The node's event loop; see the module docs.
pub struct NodeRunner {
    node: Node,
    socket: Udp,
    local: SocketAddr,
    tun: Option<Tun>,
    /// Buffers of the TUN's reads and writes (made with the device).
    tun_rx: Option<TunReader>,
    tun_tx: Option<TunWriter>,
    /// Receive buffers of the UDP socket.
    udp_rx: RxBatch,
    /// Sealed datagrams waiting to leave in one segmented send.
    udp_tx: TxRun,
    /// Threads that share a batch's AEAD work.
    helpers: Helpers,
    /// Sends that failed since the last look.
    failures: Vec<SendFailure>,
    /// The source of the TUN while it is not open yet.
    tun_source: Option<TunSource>,
    pool_len: u8,
    /// The overlay IPv4 pool: never offered as a candidate.
    pool: (Ipv4Addr, u8),
    /// Overlay IPv6 derived from the token and key (what the engine derives too).
    overlay_ipv6: Ipv6Addr,
    ipv4: Option<Ipv4Addr>,
    state_dir: Option<PathBuf>,
    relays: String,
    started: Instant,
    commands: mpsc::Receiver<Command>,
    handle: NodeHandle,
    counters: IoCounters,
    factory: Arc<dyn SocketFactory>,
    /// The wildcard address sockets are bound to.
    bind: SocketAddr,
    rotate_every: Option<Duration>,
    offload: Offload,
    /// How address changes reach the node.
    address_changes: AddressChanges,
    /// A re-key moves the node to a fresh socket unless it moved this recently.
    rekey_rotation_gap: Duration,
    last_rotation: tokio::time::Instant,
    /// The engine's re-key count when last looked at.
    seen_rekeys: u64,
    /// The socket before the last rotation, still read until the deadline.
    old_socket: Option<(Udp, tokio::time::Instant)>,
    /// Which transport carries the relay's datagrams.
    chooser: Chooser,
    /// The TCP stream to the relay, while the chooser says TCP and the relay has a listener.
    link: Option<TcpLink>,
    /// Counters of links closed before (the current link's are added in status).
    old_link_counters: LinkCounters,
    /// Each relay's address in the engine, public key and TCP listener.
    relay_targets: Vec<(SocketAddr, [u8; 32], Option<SocketAddr>)>,
    rx_buf: Box<[u8]>,
    out_buf: Box<[u8]>,
    /// DNS on the overlay IPv4 (a TUN made here only; phones answer inside the TUN).
    dns: Option<DnsListener>,
    /// The kernel's routes for the engine's subnet routes and exit (a TUN made here only).
    kernel_routes: Option<KernelRoutes>,
    /// The engine's routes, kept until the TUN exists.
    routes: Vec<veil_proto::route::Prefix>,
}

impl NodeRunner {
    /// Builds the engine and binds the UDP socket (through `factory`). Must be called inside a
    /// tokio runtime. `cfg.relays` must be resolved already.
    pub fn new(
        token: &JoinToken,
        identity: Identity,
        cfg: NodeConfig,
        opts: NodeOptions,
        factory: Arc<dyn SocketFactory>,
    ) -> Result<NodeRunner, NodeError> {
        let relay_addrs: Vec<SocketAddr> = cfg.relays.iter().map(|(a, _)| *a).collect();
        let relay_targets = cfg
            .relays
            .iter()
            .map(|(a, pk)| {
                let tcp = opts.relay_tcp.iter().find(|(r, _)| r == a).map(|(_, t)| *t);
                (*a, *pk, tcp)
            })
            .collect();
        let (std_socket, bind) = socket::bind_first(
            factory.as_ref(),
            &socket::wildcards_for(&relay_addrs, opts.port),
        )
        .map_err(|(addr, source)| NodeError::Socket { addr, source })?;
        let sock_err = |source| NodeError::Socket { addr: bind, source };
        let socket = Udp::new(std_socket, opts.offload.udp()).map_err(sock_err)?;
        let local = socket.local_addr();

        let derived_ipv6 = token.keys().overlay_ipv6(identity.public());
        let (pool, ipv4) = (cfg.ipv4_pool, cfg.ipv4_hint);
        let pool_len = pool.1;
        let seed = os_seed().map_err(NodeError::Random)?;
        let rekey_rotation_gap = cfg.rekey_after_time / 2;
        let node = Node::new(token, identity, cfg, seed, Instant::now(), unix_now());
        // The engine is the source of truth; the derivation covers an engine that does not
        // report the address before it is connected.
        let overlay_ipv6 = match node.overlay_ipv6() {
            a if a.is_unspecified() => derived_ipv6,
            a => a,
        };
        let rotate_every = opts.rotate_every.filter(|_| opts.port == 0);
        let (tx, commands) = mpsc::channel(16);
        let (events, _) = broadcast::channel(EVENT_BACKLOG);
        tracing::info!(port = local.port(), "node UDP socket bound");
        Ok(NodeRunner {
            node,
            socket,
            local,
            tun: None,
            tun_rx: None,
            tun_tx: None,
            udp_rx: RxBatch::default(),
            udp_tx: TxRun::default(),
            helpers: Helpers::new(opts.crypto_threads).map_err(NodeError::Threads)?,
            failures: Vec::new(),
            tun_source: Some(opts.tun),
            pool_len,
            pool,
            overlay_ipv6,
            ipv4,
            state_dir: opts.state_dir,
            relays: relay_addrs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            started: Instant::now(),
            commands,
            handle: NodeHandle { tx, events },
            counters: IoCounters::default(),
            factory,
            bind,
            rotate_every,
            offload: opts.offload,
            address_changes: opts.address_changes,
            rekey_rotation_gap,
            last_rotation: tokio::time::Instant::now(),
            seen_rekeys: 0,
            old_socket: None,
            chooser: Chooser::new(opts.relay_transport, tokio::time::Instant::now()),
            link: None,
            old_link_counters: LinkCounters::default(),
            relay_targets,
            rx_buf: vec![0u8; BUF_SIZE].into_boxed_slice(),
            out_buf: vec![0u8; BUF_SIZE].into_boxed_slice(),
            dns: None,
            kernel_routes: None,
            routes: Vec::new(),
        })
    }

    /// A handle for status, peers and shutdown requests.
    pub fn handle(&self) -> NodeHandle {
        self.handle.clone()
    }

    /// The local address of the UDP socket.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Runs until a shutdown request, or a fatal error (TUN set-up, no address in time).
    pub async fn run(mut self) -> Result<(), NodeError> {
        if let Some(addr) = self.ipv4 {
            self.open_tun(addr)?;
        }
        let give_up = tokio::time::Instant::now() + IPV4_WAIT;
        self.refresh_candidates();
        self.load_policy();
        // Addresses are read again when the OS (or the platform) says they changed, or
        // without such news every 250 ms, and every 30 s regardless.
        let mut watch = match self.address_changes {
            AddressChanges::Watch => ifaddrs::AddrWatch::new(),
            AddressChanges::Reported => ifaddrs::AddrWatch::reported(),
        };
        let mut rescan = tokio::time::interval(ifaddrs::REREAD_EVERY);
        rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        rescan.reset();
        let mut next_rotation = self.rotate_every.map(|d| tokio::time::Instant::now() + d);
        self.sync_link();
        loop {
            let timer = self.node.poll_timeout().map(tokio::time::Instant::from_std);
            let waiting = self.tun.is_none();
            let switch_at = self.chooser.deadline();
            tokio::select! {
                cmd = self.commands.recv() => {
                    // A reported change is read now; the regardless-read is 30 s from now.
                    let reported = matches!(cmd, Some(Command::NetworkChanged));
                    if self.on_command(cmd) {
                        self.node.shutdown(Instant::now());
                        self.drain()?;
                        return Ok(());
                    }
                    if reported {
                        rescan.reset();
                    }
                }
                r = self.socket.readable() => {
                    r.map_err(|source| NodeError::Fatal { what: "UDP socket", source })?;
                    self.on_socket_readable()?;
                }
                r = readable(self.tun.as_ref()), if !waiting => {
                    r.map_err(|source| NodeError::Fatal { what: "TUN device", source })?;
                    self.on_tun_readable()?;
                }
                () = sleep_until(timer) => {
                    self.node.handle_timeout(Instant::now());
                }
                _ = rescan.tick() => self.refresh_candidates(),
                () = watch.changed() => {
                    self.refresh_candidates();
                    rescan.reset();
                }
                () = sleep_until(next_rotation) => {
                    self.rotate();
                    next_rotation = self.rotate_every.map(|d| tokio::time::Instant::now() + d);
                }
                r = old_readable(self.old_socket.as_ref()) => {
                    match r {
                        Ok(true) => self.on_old_socket_readable(),
                        // The grace period is over (or the socket failed): close it.
                        Ok(false) | Err(_) => self.old_socket = None,
                    }
                }
                () = tokio::time::sleep_until(give_up), if waiting => {
                    return Err(NodeError::RelayUnreachable { relay: self.relays.clone() });
                }
                r = link_ready(self.link.as_mut()) => self.on_link(r)?,
                r = dns_readable(self.dns.as_ref()) => match r {
                    Ok(()) => self.on_dns_readable(),
                    Err(e) => {
                        tracing::warn!(error = %e, "DNS listener failed; closing it");
                        self.dns = None;
                    }
                },
                () = sleep_until(switch_at) => {
                    if self.chooser.poll(tokio::time::Instant::now()) {
                        self.counters.transport_switches += 1;
                        let to = if self.chooser.tcp() { "TCP" } else { "UDP" };
                        tracing::info!("relay unanswered; trying it over {to}");
                        self.sync_link();
                        if !self.chooser.tcp() {
                            // Back on UDP: start over there at once.
                            self.node.relay_transport_changed(Instant::now());
                            self.node.handle_timeout(Instant::now());
                        }
                    }
                }
            }
            self.drain()?;
            if self.rekey_rotation_due() {
                // New keys and a new port together: an observer cannot link the session's
                // old port to its new keys, nor keep following a port across re-keys.
                self.rotate();
                next_rotation = self.rotate_every.map(|d| tokio::time::Instant::now() + d);
            }
        }
    }

    /// Whether a session re-keyed since we last looked and rotation is on and not too
    /// recent.
    fn rekey_rotation_due(&mut self) -> bool {
        let rekeys = self.node.counters().rekeys;
        if rekeys == self.seen_rekeys {
            return false;
        }
        self.seen_rekeys = rekeys;
        self.rotate_every.is_some() && self.last_rotation.elapsed() >= self.rekey_rotation_gap
    }

    /// Moves to a fresh ephemeral socket: everything is sent from the new one at once; the
    /// old one is still read for `OLD_SOCKET_GRACE` so that datagrams in flight are not lost.
    /// The engine sees new local candidates, so the relay and peers learn the new port exactly
    /// as after a roam.
    fn rotate(&mut self) {
        let fresh = self
            .factory
            .bind_udp(self.bind)
            .and_then(|s| Udp::new(s, self.offload.udp()))
            .map(|s| (s.local_addr(), s));
        let (local, socket) = match fresh {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "could not open a fresh UDP socket; keeping the current one");
                return;
            }
        };
        self.last_rotation = tokio::time::Instant::now();
        self.udp_tx.flush(
            sockets(&self.socket, &self.old_socket),
            &mut self.helpers,
            &mut self.failures,
        );
        let old = std::mem::replace(&mut self.socket, socket);
        self.old_socket = Some((old, tokio::time::Instant::now() + OLD_SOCKET_GRACE));
        tracing::info!(port = local.port(), "moved to a fresh UDP socket");
        self.local = local;
        self.counters.socket_rotations += 1;
        let cands = match self.local_candidates() {
            Some(c) => c,
            // The interfaces could not be listed just now. The engine must still learn of
            // the rotation (else its direct paths would take the new port unannounced and
            // the peers would have to find it): the addresses it had, on the new port.
            None => self
                .node
                .local_candidates()
                .iter()
                .map(|a| SocketAddr::new(a.ip(), local.port()))
                .collect(),
        };
        self.node.socket_rotated(Instant::now(), &cands);
        if let Err(e) = self.drain() {
            tracing::debug!(error = %e, "drain after rotation");
        }
    }

    fn on_old_socket_readable(&mut self) {
        for _ in 0..udp::MAX_RECV_CALLS {
            let Some((old, _)) = self.old_socket.as_ref() else {
                return;
            };
            let n = match old.recv(&mut self.udp_rx) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.counters.recv_errors += 1;
                    continue;
                }
            };
            self.on_datagrams(n);
            if let Err(e) = self.drain() {
                tracing::debug!(error = %e, "drain after old socket");
            }
        }
    }

    /// The policy kept in the state directory by an earlier run, if any.
    fn load_policy(&mut self) {
        let Some(dir) = &self.state_dir else { return };
        let Ok(text) = std::fs::read_to_string(dir.join(POLICY_FILE)) else {
            return;
        };
        let result = veil_proto::Policy::text_to_bytes(&text)
            .and_then(|b| self.node.set_policy(Instant::now(), &b));
        if let Err(e) = result {
            tracing::warn!(error = %e, "ignoring the policy file in the state dir");
        }
    }

    /// Tells the engine the socket's current candidates; it acts only when they changed
    /// (a new address, an interface down or up: roaming).
    fn refresh_candidates(&mut self) {
        if let Some(cands) = self.local_candidates() {
            self.node.set_local_candidates(Instant::now(), &cands);
        }
    }

    /// The socket's candidates: its port at each interface address outside the overlay.
    fn local_candidates(&self) -> Option<Vec<SocketAddr>> {
        let addrs = match ifaddrs::interface_addresses() {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(error = %e, "could not list interface addresses");
                return None;
            }
        };
        let (pool, len) = self.pool;
        let ula = self.overlay_ipv6.octets();
        let overlay = |a: IpAddr| match a {
            IpAddr::V4(v4) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                u32::from(v4) & mask == u32::from(pool) & mask
            }
            IpAddr::V6(v6) => v6.octets()[..6] == ula[..6],
        };
        Some(ifaddrs::candidates(&addrs, self.local, overlay))
    }

    /// Returns true when the loop must stop.
    fn on_command(&mut self, cmd: Option<Command>) -> bool {
        match cmd {
            Some(Command::Status(reply)) => {
                let _ = reply.send(self.status());
                false
            }
            Some(Command::Peers(reply)) => {
                let now = Instant::now();
                let _ = reply.send(
                    self.node
                        .peers(now)
                        .iter()
                        .map(report::peer_report)
                        .collect(),
                );
                false
            }
            Some(Command::Policy(text, reply)) => {
                let _ = reply.send(self.push_policy(&text));
                false
            }
            Some(Command::Adopt(text, reply)) => {
                let _ = reply.send(self.adopt_token(&text));
                false
            }
            Some(Command::NetworkChanged) => {
                tracing::info!("network change reported by the platform");
                self.refresh_candidates();
                false
            }
            Some(Command::SetTun(source, reply)) => {
                let _ = reply.send(self.replace_tun(source).map_err(|e| e.to_string()));
                false
            }
            Some(Command::Shutdown(reply)) => {
                tracing::info!("shutdown requested");
                let _ = reply.send(());
                true
            }
            // Unreachable while `self.handle` lives, but stopping is the right answer.
            None => true,
        }
    }

    /// A rotated join token handed over by the operator: the engine adopts it, and the
    /// state directory keeps it so that a restart with the old token file still comes up
    /// with the new secret (see `veil up`).
    fn adopt_token(&mut self, text: &str) -> Result<serde_json::Value, String> {
        let token = JoinToken::decode(text).map_err(|e| e.to_string())?;
        self.node.adopt_token(&token).map_err(|e| e.to_string())?;
        let until = token.previous.as_ref().map(|p| p.until);
        tracing::info!(previous_key_until = ?until, "rotated join token adopted");
        crate::state::keep_adopted(
            self.state_dir.as_deref(),
            crate::state::JOIN_TOKEN_FILE,
            &token.encode(),
        )?;
        Ok(serde_json::json!({ "adopted": true, "previous_key_until": until }))
    }

    /// A policy pushed by the operator: the engine checks and spreads it.
    fn push_policy(&mut self, text: &str) -> Result<serde_json::Value, String> {
        let bytes = veil_proto::Policy::text_to_bytes(text).map_err(|e| e.to_string())?;
        let adopted = self
            .node
            .set_policy(Instant::now(), &bytes)
            .map_err(|e| e.to_string())?;
        if let Err(e) = self.drain() {
            tracing::debug!(error = %e, "drain after policy");
        }
        Ok(serde_json::json!({
            "adopted": adopted,
            "serial": self.node.policy_serial(),
        }))
    }

    fn status(&self) -> NodeStatusReport {
        let now = Instant::now();
        let s = self.node.status(now);
        NodeStatusReport {
            id: s.id,
            overlay_ipv4: s.overlay_ipv4,
            overlay_ipv6: if s.overlay_ipv6.is_unspecified() {
                self.overlay_ipv6
            } else {
                s.overlay_ipv6
            },
            relay: s.relay,
            relay_connected: s.relay_connected,
            private: s.private.into(),
            guard_circuit: s.guard.as_ref().is_some_and(|g| g.1),
            guard: s.guard.map(|g| g.0),
            previous_key_until: s.previous_key_until,
            relay_rtt_ms: s.relay_rtt_ms,
            name: s.name,
            name_taken: s.name_taken,
            routes: s.routes,
            dns_domain: self.node.dns_domain().to_owned(),
            uptime_s: now.duration_since(self.started).as_secs(),
            relay_transport: Some(if self.link.is_some() { "tcp" } else { "udp" }.into()),
            tun: self.tun.as_ref().map(|t| t.name().to_owned()),
            local_port: Some(self.local.port()),
            counters: Counters::from_lists(
                &s.counters,
                &self
                    .counters
                    .list(&self.link_counters(), &self.udp_tx, &self.helpers),
            ),
        }
    }

    /// Counters of every link so far.
    fn link_counters(&self) -> LinkCounters {
        let mut c = self.old_link_counters;
        if let Some(l) = &self.link {
            c.add(&l.counters);
        }
        c
    }

    /// Makes the TCP link match the chooser and the engine's current relay: none on UDP, a
    /// link to the current relay's listener on TCP (a new one after a failover). A relay
    /// without a listener is reached over UDP whatever the chooser says.
    fn sync_link(&mut self) {
        let want = if self.chooser.tcp() {
            let relay = self.node.relay_addr();
            self.relay_targets
                .iter()
                .find(|(a, _, _)| *a == relay)
                .and_then(|(a, pk, tcp)| tcp.map(|t| (*a, *pk, t)))
        } else {
            None
        };
        let current = self.link.as_ref().map(TcpLink::relay);
        if current == want.map(|(a, _, _)| a) {
            return;
        }
        if let Some(old) = self.link.take() {
            self.old_link_counters.add(&old.counters);
        }
        if let Some((relay, pk, target)) = want {
            tracing::info!("connecting to the relay over TCP");
            tracing::debug!(%target, "relay TCP listener");
            self.link = Some(TcpLink::new(relay, pk, target, LinkCounters::default()));
        } else if self.chooser.tcp() {
            tracing::warn!("the relay has no TCP port in the join token; using UDP");
        }
    }

    fn on_link(&mut self, ready: Ready) -> Result<(), NodeError> {
        let Some(link) = self.link.as_mut() else {
            return Ok(());
        };
        match ready {
            Ready::Retry => link.connect(self.factory.as_ref()),
            Ready::Connected(r) => {
                if link.on_connected(r) {
                    tracing::info!("TCP stream to the relay up");
                    // Whatever was sent the other way is lost: start over on this one.
                    let now = Instant::now();
                    self.node.relay_transport_changed(now);
                    self.node.handle_timeout(now);
                }
            }
            Ready::Writable => {
                if let Err(e) = link.flush() {
                    tracing::debug!(error = %e, "TCP stream to the relay failed");
                    link.on_ended(false);
                }
            }
            Ready::Failed(e) => {
                tracing::debug!(error = %e, "TCP stream to the relay failed");
                link.on_ended(false);
            }
            Ready::Readable => return self.on_link_readable(),
        }
        self.drain()
    }

    /// Datagrams from the relay's stream go to the engine as if they came from its address.
    fn on_link_readable(&mut self) -> Result<(), NodeError> {
        for _ in 0..MAX_BATCH {
            let Some(link) = self.link.as_mut() else {
                return Ok(());
            };
            let relay = link.relay();
            match link.read() {
                Ok(Read::Data) => {}
                Ok(Read::Blocked) => return Ok(()),
                Ok(Read::Ended) | Err(_) => {
                    tracing::info!("TCP stream to the relay ended; connecting again");
                    link.on_ended(false);
                    return Ok(());
                }
            }
            loop {
                let Some(link) = self.link.as_mut() else {
                    return Ok(());
                };
                let len = match link.next_datagram(&mut self.rx_buf) {
                    Ok(Some(len)) => len,
                    Ok(None) => break,
                    Err(()) => {
                        tracing::info!("malformed TCP stream from the relay; connecting again");
                        link.on_ended(true);
                        return Ok(());
                    }
                };
                let now = Instant::now();
                if let Some(range) = self
                    .node
                    .handle_datagram(now, relay, &mut self.rx_buf[..len])
                {
                    if let Some(packet) = self.rx_buf.get(range) {
                        write_tun(
                            self.tun.as_ref(),
                            self.tun_tx.as_mut(),
                            packet,
                            &mut self.counters,
                        );
                    }
                }
                self.drain()?;
            }
        }
        Ok(())
    }

    fn on_socket_readable(&mut self) -> Result<(), NodeError> {
        for _ in 0..udp::MAX_RECV_CALLS {
            let n = match self.socket.recv(&mut self.udp_rx) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // ICMP errors of earlier sends surface here; they never stop the loop.
                    self.counters.recv_errors += 1;
                    tracing::debug!(error = %e, "UDP receive failed");
                    continue;
                }
            };
            self.on_datagrams(n);
            self.drain()?;
        }
        self.drain()
    }

    /// Hands the datagrams of the last receive (`n` buffers, each one datagram or several
    /// of one size) to the engine, and queues the inner packets for the TUN.
    fn on_datagrams(&mut self, n: usize) {
        let now = Instant::now();
        self.counters.udp_recvs += 1;
        if self.helpers.threads() > 0 {
            self.on_datagrams_shared(now, n);
            return;
        }
        for i in 0..n {
            let Some((from, stride, buf)) = self.udp_rx.get_mut(i) else {
                continue;
            };
            for datagram in udp::datagrams(buf, stride) {
                self.counters.udp_recv_datagrams += 1;
                if let Some(range) = self.node.handle_datagram(now, from, datagram) {
                    if let Some(packet) = datagram.get(range) {
                        write_tun(
                            self.tun.as_ref(),
                            self.tun_tx.as_mut(),
                            packet,
                            &mut self.counters,
                        );
                    }
                }
            }
        }
    }

    /// [`NodeRunner::on_datagrams`] with the AEAD of the batch spread over the helpers: the
    /// engine makes the jobs in order, the helpers and this thread run them, and the engine
    /// takes the datagrams back in order.
    fn on_datagrams_shared(&mut self, now: Instant, n: usize) {
        struct Item<'a> {
            from: SocketAddr,
            datagram: &'a mut [u8],
            job: Option<OpenJob>,
            opened: Option<Opened>,
        }
        let mut items = Vec::new();
        for (from, stride, buf) in self.udp_rx.iter_mut(n) {
            for datagram in udp::datagrams(buf, stride) {
                let job = self.node.open_job(now, from, datagram);
                items.push(Item {
                    from,
                    datagram,
                    job,
                    opened: None,
                });
            }
        }
        if !self.helpers.for_each(&mut items, |item| {
            if let Some(job) = &item.job {
                item.opened = Some(job.run(item.datagram));
            }
        }) {
            // A job panicked (none does today): the batch is not trusted.
            self.counters.recv_errors += items.len() as u64;
            return;
        }
        for item in items {
            self.counters.udp_recv_datagrams += 1;
            let range = match item.opened {
                Some(o) => self.node.handle_opened(now, item.from, item.datagram, o),
                None => self.node.handle_datagram(now, item.from, item.datagram),
            };
            if let Some(packet) = range.and_then(|r| item.datagram.get(r)) {
                write_tun(
                    self.tun.as_ref(),
                    self.tun_tx.as_mut(),
                    packet,
                    &mut self.counters,
                );
            }
        }
    }

    fn on_tun_readable(&mut self) -> Result<(), NodeError> {
        // One clock read per wake-up: a UDP sender's datagrams come one per read, and the
        // packets of one wake-up are microseconds apart.
        let now = Instant::now();
        for _ in 0..MAX_BATCH {
            let (Some(tun), Some(rx)) = (self.tun.as_ref(), self.tun_rx.as_mut()) else {
                return Ok(());
            };
            let n = match tun.recv(rx) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    self.counters.tun_read_errors += 1;
                    tracing::debug!(error = %e, "TUN read failed");
                    break;
                }
            };
            self.counters.tun_reads += 1;
            self.counters.tun_read_packets += n as u64;
            for i in 0..n {
                let Some(packet) = rx.packet(i) else { continue };
                let made = if self.helpers.threads() > 0 {
                    self.node
                        .handle_tun_packet_later(now, packet, self.udp_tx.slot())
                } else {
                    self.node
                        .handle_tun_packet(now, packet, self.udp_tx.slot())
                        .map(|t| (t, None))
                };
                let Some((t, job)) = made else {
                    continue;
                };
                let link = self
                    .link
                    .as_mut()
                    .filter(|l| self.chooser.tcp() && l.relay() == t.dst);
                if let Some(link) = link {
                    if let Some(job) = job {
                        job.run(self.udp_tx.slot());
                    }
                    link.send(self.udp_tx.slot_datagram(t.len));
                } else {
                    self.udp_tx.commit(
                        sockets(&self.socket, &self.old_socket),
                        t.dst,
                        t.previous_socket,
                        t.len,
                        job,
                        &mut self.helpers,
                        &mut self.failures,
                    );
                }
            }
            if !self.node.has_transmits() {
                continue;
            }
            // Something else to send (a handshake, a fragment): in order, after the run.
            self.udp_tx.flush(
                sockets(&self.socket, &self.old_socket),
                &mut self.helpers,
                &mut self.failures,
            );
            self.drain()?;
        }
        self.udp_tx.flush(
            sockets(&self.socket, &self.old_socket),
            &mut self.helpers,
            &mut self.failures,
        );
        self.drain()
    }

    /// Empties every output queue of the engine and writes what waits for the TUN. Fails
    /// only when the TUN cannot be created.
    fn drain(&mut self) -> Result<(), NodeError> {
        self.sync_link();
        while let Some(t) = self.node.poll_transmit(&mut self.out_buf) {
            let link = self.link.as_mut().filter(|_| self.chooser.tcp());
            let socket = sockets(&self.socket, &self.old_socket).pick(t.previous_socket);
            send(socket, link, &self.out_buf, t, &mut self.counters);
        }
        while let Some(len) = self.node.poll_tun_packet(&mut self.rx_buf) {
            if let Some(packet) = self.rx_buf.get(..len) {
                write_tun(
                    self.tun.as_ref(),
                    self.tun_tx.as_mut(),
                    packet,
                    &mut self.counters,
                );
            }
        }
        flush_tun(self.tun.as_ref(), self.tun_tx.as_mut(), &mut self.counters);
        for failure in self.failures.drain(..) {
            match failure {
                SendFailure::TooBig(dst, len) => self.counters.note_too_big(dst, len),
                SendFailure::Other(e, lost) => {
                    self.counters.send_errors += lost as u64;
                    tracing::debug!(error = %e, "UDP send failed");
                }
            }
        }
        while let Some((token, answer)) = self.node.poll_dns_answer() {
            if let Some(dns) = self.dns.as_mut() {
                dns.answer(token, &answer);
            }
        }
        while let Some(event) = self.node.poll_event() {
            self.on_event(event)?;
        }
        if !self.counters.too_big.is_empty() {
            let now = Instant::now();
            for (dst, len) in std::mem::take(&mut self.counters.too_big) {
                self.node.datagram_too_big(now, dst, len);
            }
        }
        Ok(())
    }

    fn on_event(&mut self, event: NodeEvent) -> Result<(), NodeError> {
        match &event {
            NodeEvent::Ipv4Assigned(addr) => {
                tracing::info!("overlay IPv4 assigned");
                tracing::debug!(%addr, "overlay IPv4");
                self.on_ipv4(*addr)?;
            }
            NodeEvent::RelayUp(addr) => {
                let over = if self.link.is_some() { "TCP" } else { "UDP" };
                tracing::info!("relay session up over {over}");
                tracing::debug!(%addr, "relay up");
                self.chooser.relay_up();
            }
            NodeEvent::RelayDown(addr) => {
                tracing::info!("relay stopped answering; retrying");
                tracing::debug!(%addr, "relay down");
                self.chooser.relay_down(tokio::time::Instant::now());
            }
            NodeEvent::PeerUp { id } => tracing::info!(peer = %id, "peer session up"),
            NodeEvent::RoutesChanged { routes } => {
                self.routes.clone_from(routes);
                if let Some(k) = self.kernel_routes.as_mut() {
                    k.apply(routes);
                }
            }
            NodeEvent::NameTaken { name } => tracing::warn!(
                "another member holds the DNS name {name}; this node runs without one (pick another with --name)"
            ),
            NodeEvent::PeerDown { id } => tracing::info!(peer = %id, "peer session closed"),
            NodeEvent::PeerPath {
                id,
                direct: Some(addr),
            } => tracing::info!(peer = %id, endpoint = %addr, "direct path"),
            NodeEvent::Policy { serial, bytes } => {
                tracing::info!(serial, "policy adopted");
                if let Some(dir) = &self.state_dir {
                    let text = veil_proto::Policy::bytes_to_text(bytes);
                    if let Err(e) = std::fs::write(dir.join(POLICY_FILE), format!("{text}\n")) {
                        tracing::warn!(error = %e, "could not keep the policy in the state dir");
                    }
                }
            }
            NodeEvent::PeerPath { id, direct: None } => {
                tracing::info!(peer = %id, "path relayed")
            }
        }
        // Nobody listening is the usual case (the CLI), not an error.
        let _ = self.handle.events.send(event);
        Ok(())
    }

    fn on_ipv4(&mut self, addr: Ipv4Addr) -> Result<(), NodeError> {
        self.ipv4 = Some(addr);
        if let Some(dir) = &self.state_dir {
            if let Err(e) = state::write_ipv4_hint(dir, addr) {
                tracing::warn!(error = %e, "could not remember the overlay IPv4 in the state dir");
            }
        }
        match self.tun.as_mut() {
            Some(tun) => tun.set_ipv4(addr, self.pool_len)?,
            None => self.open_tun(addr)?,
        }
        self.listen_dns(addr);
        Ok(())
    }

    /// A new TUN device in place of the current one (or of the configured source, before
    /// the first is open). Packets queued for the old device are dropped with it.
    fn replace_tun(&mut self, source: TunSource) -> Result<(), NodeError> {
        self.tun_source = Some(source);
        let Some(ipv4) = self.ipv4 else {
            return Ok(());
        };
        if let Some(tx) = self.tun_tx.as_mut() {
            flush_tun(self.tun.as_ref(), Some(tx), &mut self.counters);
        }
        self.tun = None;
        self.tun_rx = None;
        self.tun_tx = None;
        self.open_tun(ipv4)
    }

    fn open_tun(&mut self, ipv4: Ipv4Addr) -> Result<(), NodeError> {
        let Some(source) = self.tun_source.take() else {
            return Ok(());
        };
        let addrs = TunAddrs {
            ipv4: (ipv4, self.pool_len),
            ipv6: self.overlay_ipv6,
        };
        let tun = Tun::open(source, addrs, self.offload.tun())?;
        tracing::info!(tun = tun.name(), offload = tun.offload(), "TUN device up");
        self.tun_rx = Some(tun.reader());
        self.tun_tx = Some(tun.writer());
        self.tun = Some(tun);
        self.listen_dns(ipv4);
        if let Some(tun) = self.tun.as_ref().filter(|t| t.managed()) {
            let mut k = KernelRoutes::new(tun.name());
            k.apply(&self.routes);
            self.kernel_routes = Some(k);
        }
        Ok(())
    }

    /// Serves DNS on `ipv4` (once it is the TUN's address), when veil-io made the TUN.
    fn listen_dns(&mut self, ipv4: Ipv4Addr) {
        let Some(tun) = self.tun.as_ref().filter(|t| t.managed()) else {
            return;
        };
        if self.dns.as_ref().is_some_and(|d| d.addr() == ipv4) {
            return;
        }
        self.dns = None;
        match DnsListener::bind(ipv4) {
            Ok(d) => {
                tracing::info!("answering DNS for *.{} on port 53", self.node.dns_domain());
                if let Some(done) =
                    dns::configure_resolved(tun.name(), ipv4, self.node.dns_domain())
                {
                    tracing::info!("{done}");
                }
                self.dns = Some(d);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot answer DNS on the overlay address (port 53)")
            }
        }
    }

    fn on_dns_readable(&mut self) {
        let now = Instant::now();
        let Some(dns) = self.dns.as_mut() else { return };
        let mut any = false;
        while let Some((token, query)) = dns.recv() {
            self.node.handle_dns_query(now, token, query);
            any = true;
        }
        if any {
            if let Err(e) = self.drain() {
                tracing::debug!(error = %e, "drain after DNS");
            }
        }
    }
}

/// Sends `buf[..t.len]`: on the TCP link when there is one and the datagram is for its
/// relay, else over UDP; failures are counted and logged at debug, never fatal.
fn send(socket: &Udp, link: Option<&mut TcpLink>, buf: &[u8], t: Transmit, c: &mut IoCounters) {
    let Some(data) = buf.get(..t.len) else {
        c.send_errors += 1;
        tracing::debug!(len = t.len, "engine asked to send more than its buffer");
        return;
    };
    if let Some(link) = link.filter(|l| l.relay() == t.dst) {
        link.send(data);
        return;
    }
    match socket.send(t.dst, data, None) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(udp::EMSGSIZE) => c.note_too_big(t.dst, t.len),
        Err(e) => {
            c.send_errors += 1;
            tracing::debug!(error = %e, "UDP send failed");
        }
    }
}

/// Queues one packet for the TUN, writing the batch first when it is full; without a
/// device the packet is dropped (counted).
fn write_tun(tun: Option<&Tun>, tx: Option<&mut TunWriter>, packet: &[u8], c: &mut IoCounters) {
    let (Some(tun), Some(tx)) = (tun, tx) else {
        c.tun_write_errors += 1;
        return;
    };
    if tx.is_full() {
        c.tun_write_errors += tun.send(tx) as u64;
    }
    tx.push(packet);
}

/// Writes the packets queued for the TUN.
fn flush_tun(tun: Option<&Tun>, tx: Option<&mut TunWriter>, c: &mut IoCounters) {
    if let (Some(tun), Some(tx)) = (tun, tx) {
        if !tx.is_empty() {
            c.tun_write_errors += tun.send(tx) as u64;
        }
    }
}

/// What the TCP link waits for; never while there is none.
async fn link_ready(link: Option<&mut TcpLink>) -> Ready {
    match link {
        Some(l) => l.ready().await,
        None => std::future::pending().await,
    }
}

async fn readable(tun: Option<&Tun>) -> io::Result<()> {
    match tun {
        Some(t) => t.readable().await,
        None => std::future::pending().await,
    }
}

/// The node's sockets: the current one and, during its grace, the one before a rotation.
fn sockets<'a>(current: &'a Udp, old: &'a Option<(Udp, tokio::time::Instant)>) -> udp::Sockets<'a> {
    udp::Sockets {
        current,
        previous: old.as_ref().map(|(s, _)| s),
    }
}

/// Resolves with Ok(true) when the old socket has data, Ok(false) when its grace period is
/// over; never while there is no old socket.
async fn old_readable(old: Option<&(Udp, tokio::time::Instant)>) -> io::Result<bool> {
    match old {
        Some((s, until)) => tokio::select! {
            r = s.readable() => r.map(|()| true),
            () = tokio::time::sleep_until(*until) => Ok(false),
        },
        None => std::future::pending().await,
    }
}

async fn dns_readable(dns: Option<&DnsListener>) -> io::Result<()> {
    match dns {
        Some(d) => d.readable().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
