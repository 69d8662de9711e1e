//! The relay's event loop. [`RelayRunner`] owns the `veil_proto::Relay`, its UDP socket bound
//! to the listen address, optionally a TCP listener for nodes whose network blocks UDP
//! ([`crate::relay_tcp`]), and a command channel. Like the node loop it only moves bytes and
//! reads the clock; answering, forwarding and expiring are the engine's decisions.

use crate::cluster::{ClusterAnswer, ClusterTask, RendezvousStore};
use crate::control::{ControlCommand, ControlHandler, HandlerFuture};
use crate::parallel::Helpers;
use crate::relay_tcp::{ConnEvent, TcpSide, SWEEP_INTERVAL};
use crate::report::{Counters, RelayStatusReport};
use crate::socket::SocketFactory;
use crate::udp::{self, datagrams, RxBatch, SendFailure, TxRun, Udp, MAX_RECV_CALLS};
use crate::{os_seed, unix_now, BUF_SIZE};
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};
use veil_proto::{Relay, RelayConfig, RelayToken, Transmit};

/// Why the relay stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The listen socket could not be opened.
    #[error("could not listen on {addr}: {source}")]
    Socket {
        /// The listen address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The TCP listener could not be opened.
    #[error("could not listen on TCP {addr}: {source} (choose another --tcp-listen, or `--tcp-listen off`)")]
    TcpListen {
        /// The TCP listen address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The randomness source failed.
    #[error("could not read random bytes from the OS: {0}")]
    Random(#[source] io::Error),
    /// Waiting on the socket failed.
    #[error("I/O failure on the relay socket: {0}")]
    Fatal(#[source] io::Error),
}

#[derive(Debug)]
enum Command {
    Status(oneshot::Sender<RelayStatusReport>),
    Shutdown(oneshot::Sender<()>),
    Adopt(String, oneshot::Sender<Result<serde_json::Value, String>>),
}

/// A cheap handle to a running relay.
#[derive(Clone, Debug)]
pub struct RelayHandle {
    tx: mpsc::Sender<Command>,
}

impl RelayHandle {
    /// Status snapshot.
    pub async fn status(&self) -> Option<RelayStatusReport> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Command::Status(tx)).await.ok()?;
        rx.await.ok()
    }

    /// Asks the relay to stop; returns once the loop has accepted (it ends right after).
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

impl ControlHandler for RelayHandle {
    fn handle(&self, cmd: ControlCommand) -> HandlerFuture<'_> {
        Box::pin(async move {
            match cmd {
                ControlCommand::Status => match self.status().await {
                    Some(s) => serde_json::to_value(s).map_err(|e| format!("internal error: {e}")),
                    None => Err("the relay is stopping".into()),
                },
                ControlCommand::Peers => {
                    Err("a relay has no peers: use `veil relay status`".into())
                }
                ControlCommand::Down => {
                    self.shutdown().await;
                    Ok(serde_json::Value::String("stopping".into()))
                }
                ControlCommand::Adopt(text) => {
                    let (tx, rx) = oneshot::channel();
                    if self.tx.send(Command::Adopt(text, tx)).await.is_err() {
                        return Err("the relay is stopping".into());
                    }
                    rx.await
                        .unwrap_or_else(|_| Err("the relay is stopping".into()))
                }
                ControlCommand::Policy(_) => Err(
                    "push a policy to any node (veil policy push … --state-dir NODE_DIR); the node gives it to the relay".into(),
                ),
            }
        })
    }
}

/// The relay's event loop; see the module docs.
pub struct RelayRunner {
    relay: Relay,
    socket: Udp,
    local: SocketAddr,
    /// Receive buffers (`recvmmsg`, GRO) and the run of forwarded datagrams waiting to
    /// leave in one segmented send.
    rx: RxBatch,
    tx: TxRun,
    /// The relay re-seals in the engine; its runs carry no jobs for helpers.
    no_helpers: Helpers,
    failures: Vec<SendFailure>,
    started: Instant,
    commands: mpsc::Receiver<Command>,
    handle: RelayHandle,
    send_errors: u64,
    recv_errors: u64,
    state_dir: Option<PathBuf>,
    tcp: Option<TcpSide>,
    client_timeout: std::time::Duration,
    buf: Box<[u8]>,
    out: Box<[u8]>,
    cluster: Option<ClusterIo>,
}

/// The shared rendezvous of a clustered relay: the task that talks to the store.
struct ClusterIo {
    store: Arc<dyn RendezvousStore>,
    advertise: SocketAddr,
    ops: mpsc::UnboundedSender<veil_proto::relay::ClusterOp>,
    answers: mpsc::Receiver<ClusterAnswer>,
}

impl RelayRunner {
    /// Builds the engine and binds `listen` (through `factory`). Must be called inside a tokio
    /// runtime.
    pub fn new(
        token: &RelayToken,
        cfg: RelayConfig,
        listen: SocketAddr,
        factory: &dyn SocketFactory,
    ) -> Result<RelayRunner, RelayError> {
        let sock_err = |source| RelayError::Socket {
            addr: listen,
            source,
        };
        let std_socket = factory.bind_udp(listen).map_err(sock_err)?;
        let socket = Udp::new(std_socket, true).map_err(sock_err)?;
        let local = socket.local_addr();
        let seed = os_seed().map_err(RelayError::Random)?;
        let client_timeout = cfg.client_timeout;
        let relay = Relay::new(token, cfg, seed, Instant::now(), unix_now());
        let (tx, commands) = mpsc::channel(16);
        Ok(RelayRunner {
            relay,
            socket,
            local,
            rx: RxBatch::default(),
            tx: TxRun::default(),
            no_helpers: Helpers::none(),
            failures: Vec::new(),
            started: Instant::now(),
            commands,
            handle: RelayHandle { tx },
            send_errors: 0,
            recv_errors: 0,
            state_dir: None,
            tcp: None,
            client_timeout,
            buf: vec![0u8; BUF_SIZE].into_boxed_slice(),
            out: vec![0u8; BUF_SIZE].into_boxed_slice(),
            cluster: None,
        })
    }

    /// Shares the rendezvous with the other relays of `store`: this relay lists itself
    /// there as reachable at `advertise` (its underlay address as the other relays see it).
    /// Must be called inside a tokio runtime, before [`RelayRunner::run`].
    pub fn enable_cluster(&mut self, store: Arc<dyn RendezvousStore>, advertise: SocketAddr) {
        self.relay.enable_cluster();
        let (ops, answers) = ClusterTask::spawn(
            store.clone(),
            self.relay.public_key(),
            advertise,
            self.client_timeout,
        );
        self.cluster = Some(ClusterIo {
            store,
            advertise,
            ops,
            answers,
        });
    }

    fn on_cluster_answer(&mut self, a: ClusterAnswer) {
        let now = Instant::now();
        match a {
            ClusterAnswer::Claimed(id, o) => self.relay.cluster_claimed(now, id, o),
            ClusterAnswer::Found(id, e) => self.relay.cluster_found(now, id, e.as_deref()),
            ClusterAnswer::Directory(v) => self.relay.set_cluster_relays(now, &v),
            ClusterAnswer::Routes(v) => self.relay.set_cluster_routes(now, &v),
            ClusterAnswer::Bus(p) => self.relay.cluster_bus(now, &p),
        }
    }

    /// Also listens on TCP at `addr` (through `factory`), for nodes whose network blocks UDP.
    /// Must be called inside a tokio runtime.
    pub fn listen_tcp(
        &mut self,
        addr: SocketAddr,
        factory: &dyn SocketFactory,
    ) -> Result<SocketAddr, RelayError> {
        let side = TcpSide::bind(addr, factory, self.relay.public_key(), self.client_timeout)
            .map_err(|source| RelayError::TcpListen { addr, source })?;
        let local = side.local_addr();
        self.tcp = Some(side);
        Ok(local)
    }

    /// The address of the TCP listener, if there is one.
    pub fn tcp_local_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().map(TcpSide::local_addr)
    }

    /// Keeps tokens adopted after a rotation in `dir` (as `relay.token`).
    pub fn set_state_dir(&mut self, dir: PathBuf) {
        self.state_dir = Some(dir);
    }

    fn adopt_token(&mut self, text: &str) -> Result<serde_json::Value, String> {
        let token = RelayToken::decode(text).map_err(|e| e.to_string())?;
        self.relay.adopt_token(&token).map_err(|e| e.to_string())?;
        let until = token.previous.as_ref().map(|p| p.until);
        tracing::info!(previous_key_until = ?until, "rotated relay token adopted");
        crate::state::keep_adopted(
            self.state_dir.as_deref(),
            crate::state::RELAY_TOKEN_FILE,
            &token.encode(),
        )?;
        Ok(serde_json::json!({ "adopted": true, "previous_key_until": until }))
    }

    /// A handle for status and shutdown requests.
    pub fn handle(&self) -> RelayHandle {
        self.handle.clone()
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The relay's short id (from its static public key).
    pub fn id(&self) -> String {
        veil_proto::keys::node_id(&self.relay.public_key())
    }

    /// Runs until a shutdown request.
    pub async fn run(mut self) -> Result<(), RelayError> {
        let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let timer = self
                .relay
                .poll_timeout()
                .map(tokio::time::Instant::from_std);
            tokio::select! {
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Status(reply)) => { let _ = reply.send(self.status()); }
                    Some(Command::Adopt(text, reply)) => { let _ = reply.send(self.adopt_token(&text)); }
                    Some(Command::Shutdown(reply)) => {
                        tracing::info!("shutdown requested");
                        let _ = reply.send(());
                        return Ok(());
                    }
                    None => return Ok(()),
                },
                r = self.socket.readable() => {
                    r.map_err(RelayError::Fatal)?;
                    self.on_readable();
                }
                () = sleep_until(timer) => self.relay.handle_timeout(Instant::now()),
                ev = tcp_event(self.tcp.as_mut()) => {
                    if let Some(ev) = ev {
                        self.on_tcp_event(ev);
                    }
                }
                _ = sweep.tick(), if self.tcp.is_some() => {
                    if let Some(t) = self.tcp.as_mut() {
                        t.sweep();
                    }
                }
                a = cluster_answer(self.cluster.as_mut()) => {
                    if let Some(a) = a {
                        self.on_cluster_answer(a);
                    }
                }
            }
            self.drain();
        }
    }

    /// Datagrams in batches: each is forwarded in place, and what leaves over UDP is
    /// gathered into runs per destination (a bulk flow between two nodes becomes runs of
    /// equal-sized datagrams, one `sendmsg` each).
    fn on_readable(&mut self) {
        for _ in 0..MAX_RECV_CALLS {
            let n = match self.socket.recv(&mut self.rx) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    self.recv_errors += 1;
                    tracing::debug!(error = %e, "UDP receive failed");
                    continue;
                }
            };
            let now = Instant::now();
            for i in 0..n {
                let Some((from, stride, buf)) = self.rx.get_mut(i) else {
                    continue;
                };
                for dg in datagrams(buf, stride) {
                    let Some(t) = self.relay.handle_datagram(now, from, dg) else {
                        continue;
                    };
                    let Some(data) = dg.get(..t.len) else {
                        self.send_errors += 1;
                        continue;
                    };
                    if self.tcp.as_mut().is_some_and(|tcp| tcp.route(t.dst, data)) {
                        continue;
                    }
                    self.tx.slot()[..t.len].copy_from_slice(data);
                    self.tx.commit(
                        udp::Sockets::one(&self.socket),
                        t.dst,
                        false,
                        t.len,
                        None,
                        &mut self.no_helpers,
                        &mut self.failures,
                    );
                }
            }
        }
        self.tx.flush(
            udp::Sockets::one(&self.socket),
            &mut self.no_helpers,
            &mut self.failures,
        );
        self.drain();
    }

    /// A datagram read from a TCP connection goes to the engine as if it came from the
    /// connection's peer address; answers to that address go back on the connection.
    fn on_tcp_event(&mut self, ev: ConnEvent) {
        let Some(tcp) = self.tcp.as_mut() else { return };
        match ev {
            ConnEvent::Ended(peer, id, reason) => tcp.on_ended(peer, id, reason),
            ConnEvent::Datagram(peer, id, dg) => {
                if !tcp.on_datagram(peer, id) {
                    return;
                }
                let Some(buf) = self.buf.get_mut(..dg.len()) else {
                    return;
                };
                buf.copy_from_slice(&dg);
                let now = Instant::now();
                if let Some(t) = self.relay.handle_datagram(now, peer, buf) {
                    self.send_errors += send(&self.socket, self.tcp.as_mut(), &self.buf, t);
                }
            }
        }
    }

    fn drain(&mut self) {
        if let Some(c) = &self.cluster {
            while let Some(op) = self.relay.poll_cluster() {
                let _ = c.ops.send(op);
            }
        }
        while let Some(t) = self.relay.poll_transmit(&mut self.out) {
            self.send_errors += send(&self.socket, self.tcp.as_mut(), &self.out, t);
        }
        for failure in self.failures.drain(..) {
            let (lost, e) = match failure {
                SendFailure::TooBig(_, _) => (1, io::Error::from_raw_os_error(libc::EMSGSIZE)),
                SendFailure::Other(e, lost) => (lost as u64, e),
            };
            self.send_errors += lost;
            tracing::debug!(error = %e, "UDP send failed");
        }
    }

    fn status(&self) -> RelayStatusReport {
        let now = Instant::now();
        let s = self.relay.status(now);
        let mut io = vec![
            ("io_send_errors", self.send_errors),
            ("io_recv_errors", self.recv_errors),
        ];
        if let Some(t) = &self.tcp {
            io.extend(t.counters());
        }
        RelayStatusReport {
            id: if s.id.is_empty() { self.id() } else { s.id },
            listen: self.local.to_string(),
            tcp_listen: self.tcp_local_addr().map(|a| a.to_string()),
            uptime_s: now.duration_since(self.started).as_secs(),
            clients: s.clients,
            names: s.names,
            links: s.links,
            circuits: s.circuits,
            circuit_clients: s.circuit_clients,
            counters: Counters::from_lists(&s.counters, &io),
            cluster: self.cluster.as_ref().map(|c| {
                let st = self.relay.cluster_status(now);
                crate::report::ClusterReport {
                    advertise: c.advertise.to_string(),
                    store: c.store.health(),
                    aliases: st.as_ref().map_or(0, |s| s.aliases),
                    pending: st.as_ref().map_or(0, |s| s.pending),
                    peers: st
                        .map(|s| {
                            s.peers
                                .into_iter()
                                .map(|p| crate::report::ClusterPeerReport {
                                    id: p.id,
                                    addr: p.addr.to_string(),
                                    link_up: p.link_up,
                                    last_rx_ms: p.last_rx_ms,
                                    aliases: p.aliases,
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                }
            }),
        }
    }
}

/// Sends `buf[..t.len]`, on the TCP connection whose peer is the destination if there is
/// one, else over UDP; returns 1 on failure (counted by the caller), never fails the loop.
fn send(socket: &Udp, tcp: Option<&mut TcpSide>, buf: &[u8], t: Transmit) -> u64 {
    let Some(data) = buf.get(..t.len) else {
        return 1;
    };
    if tcp.is_some_and(|tcp| tcp.route(t.dst, data)) {
        return 0;
    }
    match socket.send(t.dst, data, None) {
        Ok(()) => 0,
        Err(e) => {
            tracing::debug!(error = %e, "UDP send failed");
            1
        }
    }
}

/// The next event of the TCP side; never while there is none. `None`: a connection was
/// accepted (nothing for the loop to do).
async fn tcp_event(tcp: Option<&mut TcpSide>) -> Option<ConnEvent> {
    match tcp {
        Some(t) => t.next_event().await,
        None => std::future::pending().await,
    }
}

/// The next answer of the shared store; never without one.
async fn cluster_answer(c: Option<&mut ClusterIo>) -> Option<ClusterAnswer> {
    match c {
        Some(c) => c.answers.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
