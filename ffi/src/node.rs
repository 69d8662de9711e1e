//! [`VeilNode`]: the object apps hold. See the crate docs for the order of calls.

use crate::config::{Checked, VeilConfig};
use crate::error::VeilError;
use crate::events::{EventQueue, VeilEvent};
use crate::logging::{self, LogSink};
use crate::platform::{self, ProtectingFactory, SecretStore, SocketProtector};
use crate::records::{IpRoute, NodeStatus, PeerInfo, TunnelSettings};
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::runtime::Runtime;
use tokio::sync::{broadcast, oneshot};
use tracing::Dispatch;
use veil_io::tun::IPV6_PREFIX_LEN;
use veil_io::{NodeHandle, NodeOptions, NodeRunner, Offload, TunSource};
use veil_proto::{Identity, JoinToken, NodeEvent};

/// How long `status`, `peers` and `set_tun` wait for the node loop.
const ASK_TIMEOUT: Duration = Duration::from_secs(3);
/// How long `stop` waits for the goodbye to the relay and peers.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// The first routes of `TunnelSettings::routes`: the overlay's IPv4 pool and IPv6 /48.
const OVERLAY_ROUTES: usize = 2;
/// How often peers are looked at for MTU changes (paths changes arrive as events).
const PMTU_POLL: Duration = Duration::from_secs(1);

thread_local! {
    /// The node's log dispatcher on each of its runtime's threads.
    static LOG_GUARD: RefCell<Option<tracing::dispatcher::DefaultGuard>> = const { RefCell::new(None) };
}

/// A Veil node run by an app. Thread-safe; every method may be called from any thread except
/// the node's own (so not from inside a [`LogSink`] or other callback).
#[derive(uniffi::Object)]
pub struct VeilNode {
    rt: Option<Runtime>,
    token: JoinToken,
    key: [u8; 32],
    cert: Option<veil_proto::Certificate>,
    config: Checked,
    relays: Vec<(SocketAddr, [u8; 32])>,
    relay_tcp: Vec<(SocketAddr, SocketAddr)>,
    factory: Arc<ProtectingFactory>,
    log: Option<Dispatch>,
    events: Arc<EventQueue>,
    settings: Arc<Mutex<TunnelSettings>>,
    running: Mutex<Option<Running>>,
}

struct Running {
    handle: NodeHandle,
    /// Completes when the node loop has ended and its last events are queued.
    done: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for VeilNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VeilNode")
            .field("relays", &self.relays)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[uniffi::export]
impl VeilNode {
    /// A node of the network `token` names. The node key comes from `secrets` (made and
    /// stored there on first use); `protector` is called with each of the node's sockets
    /// (Android must pass one); `logger` receives the node's logs. Nothing is sent yet.
    #[uniffi::constructor]
    pub fn new(
        token: String,
        config: VeilConfig,
        secrets: Arc<dyn SecretStore>,
        protector: Option<Arc<dyn SocketProtector>>,
        logger: Option<Arc<dyn LogSink>>,
    ) -> Result<Arc<Self>, VeilError> {
        let token = JoinToken::decode(token.trim()).map_err(|e| VeilError::InvalidToken {
            detail: format!(
                "the join token is not valid ({e}); paste the whole token `veil network create` printed"
            ),
        })?;
        let config = config.check()?;
        if config.raw.private_mode == crate::PrivateMode::TwoHop && token.relays.len() < 2 {
            return Err(VeilError::InvalidConfig {
                field: "private_mode".into(),
                detail: format!(
                    "two-hop needs two relays and the token lists {}; use Relay, or a token of a network with two relays",
                    token.relays.len()
                ),
            });
        }
        let relays = token
            .relays
            .iter()
            .map(|r| Ok((resolve(&r.addr)?, r.public_key)))
            .collect::<Result<Vec<_>, VeilError>>()?;
        let relay_tcp = relays
            .iter()
            .zip(&token.relays)
            .filter(|(_, info)| info.tcp_port != 0)
            .map(|((addr, _), info)| (*addr, SocketAddr::new(addr.ip(), info.tcp_port)))
            .collect();
        let key = platform::node_key(secrets.as_ref())?;
        let cert = certificate(&token, &key, config.raw.certificate.as_deref())?;
        let pinned = cert.as_ref().and_then(|c| c.ipv4);
        let settings = initial_settings(&token, &key, &config, &relays, pinned);
        let log = logger.map(|sink| logging::dispatch(sink, &config.raw.log_filter));
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder
            .worker_threads(1)
            .thread_name("veil-node")
            .enable_all();
        if let Some(d) = log.clone() {
            builder.on_thread_start(move || {
                let guard = tracing::dispatcher::set_default(&d);
                LOG_GUARD.with(|g| *g.borrow_mut() = Some(guard));
            });
            builder.on_thread_stop(|| {
                LOG_GUARD.with(|g| g.borrow_mut().take());
            });
        }
        let rt = builder.build().map_err(|e| VeilError::Internal {
            detail: format!("could not start the node's threads: {e}"),
        })?;
        Ok(Arc::new(VeilNode {
            rt: Some(rt),
            token,
            key,
            cert,
            config,
            relays,
            relay_tcp,
            factory: Arc::new(ProtectingFactory { protector }),
            log,
            events: Arc::new(EventQueue::default()),
            settings: Arc::new(Mutex::new(settings)),
            running: Mutex::new(None),
        }))
    }

    /// This device's public key as 64 hex digits (what `veil key` prints): the operator of a
    /// network with a CA signs it with `veil cert sign --node-key`.
    pub fn public_key(&self) -> String {
        hex(Identity::from_secret(self.key).public())
    }

    /// What the platform builds its interface with. Callable before `start`; after a
    /// `SettingsChanged` event it returns the new settings.
    pub fn tunnel_settings(&self) -> TunnelSettings {
        lock(&self.settings).clone()
    }

    /// Runs the node on the TUN interface `tun_fd` (built with `tunnel_settings()`, no packet
    /// information header). The node works on its own duplicate of the descriptor: the
    /// caller keeps `tun_fd` and closes it when it tears the interface down.
    pub fn start(&self, tun_fd: i32) -> Result<(), VeilError> {
        let mut running = lock(&self.running);
        if running.as_ref().is_some_and(|r| !r.done.is_finished()) {
            return Err(VeilError::already_running());
        }
        let tun = dup_fd(tun_fd)?;
        let hint = lock(&self.settings).ipv4_address.parse::<Ipv4Addr>().ok();
        // Relays that share a rendezvous: the nearest first, as `veil up` orders them (timed
        // with the platform's protected sockets; at most 500 ms). Otherwise, and in two-hop
        // mode (its guard is the home relay's successor), the token's order.
        let relays = if self.token.shared
            && self.relays.len() > 1
            && self.config.raw.private_mode != crate::PrivateMode::TwoHop
        {
            // (Inside `with_log`, so that the order it logs reaches the app's log sink.)
            self.with_log(|| {
                veil_io::link::rank_relays(
                    self.relays.clone(),
                    &self.relay_tcp,
                    Duration::from_millis(500),
                    self.factory.as_ref(),
                )
                .0
            })
        } else {
            self.relays.clone()
        };
        let mut cfg = self.config.engine(relays, hint);
        cfg.cert = self.cert.clone();
        let raw = &self.config.raw;
        let opts = NodeOptions {
            tun: TunSource::Fd(tun),
            port: 0,
            rotate_every: (raw.port_rotation_secs > 0)
                .then(|| Duration::from_secs(raw.port_rotation_secs)),
            state_dir: raw.state_dir.as_ref().map(Into::into),
            relay_transport: self.config.relay_transport(),
            relay_tcp: self.relay_tcp.clone(),
            offload: Offload::All,
            crypto_threads: veil_io::node::auto_crypto_threads(),
            // The shells call `network_changed` on the platform's network callbacks.
            address_changes: veil_io::node::AddressChanges::Reported,
        };
        let rt = self.rt()?;
        let runner = self.with_log(|| {
            let _enter = rt.enter();
            NodeRunner::new(
                &self.token,
                Identity::from_secret(self.key),
                cfg,
                opts,
                self.factory.clone(),
            )
        })?;
        let handle = runner.handle();
        let pump = Pump {
            handle: handle.clone(),
            events: handle.subscribe(),
            queue: self.events.clone(),
            settings: self.settings.clone(),
            pool_len: self.config.pool.1,
            paths: HashMap::new(),
        };
        let queue = self.events.clone();
        let (ended_tx, ended_rx) = oneshot::channel();
        let pump_task = rt.spawn(pump.run(ended_rx));
        let done = rt.spawn(async move {
            let result = runner.run().await;
            let _ = ended_tx.send(());
            let _ = pump_task.await;
            if let Err(e) = result {
                tracing::error!(error = %e, "node stopped");
                queue.push(VeilEvent::Error {
                    message: VeilError::from(e).to_string(),
                });
            }
            queue.push(VeilEvent::Stopped);
        });
        *running = Some(Running { handle, done });
        Ok(())
    }

    /// Moves the running node to a rebuilt interface (after `SettingsChanged`); sessions stay
    /// up. As with `start`, the node uses a duplicate of `tun_fd`.
    pub fn set_tun(&self, tun_fd: i32) -> Result<(), VeilError> {
        let handle = self.handle()?;
        let tun = dup_fd(tun_fd)?;
        let r = self.ask(handle.set_tun(TunSource::Fd(tun)))?;
        r.map_err(|e| VeilError::Tun {
            detail: format!("the new TUN descriptor cannot be used: {e}"),
        })
    }

    /// Stops the node (peers and the relay are told); returns when it has stopped, or after
    /// a few seconds. A stopped node can be started again.
    pub fn stop(&self) {
        let Some(running) = lock(&self.running).take() else {
            return;
        };
        let Ok(rt) = self.rt() else { return };
        rt.block_on(async {
            running.handle.shutdown().await;
            let _ = tokio::time::timeout(STOP_TIMEOUT, running.done).await;
        });
    }

    /// The platform saw the network change (Wi-Fi to cellular, a new address): the node
    /// re-reads its addresses now, re-announces them, and searches direct paths and their
    /// MTU again. Returns at once.
    pub fn network_changed(&self) {
        if let (Ok(handle), Ok(rt)) = (self.handle(), self.rt()) {
            rt.spawn(async move { handle.network_changed().await });
        }
    }

    /// A status snapshot (as `veil status --json`).
    pub fn status(&self) -> Result<NodeStatus, VeilError> {
        let handle = self.handle()?;
        self.ask(handle.status())?
            .map(NodeStatus::from)
            .ok_or_else(VeilError::not_running)
    }

    /// The peers (as `veil peers --json`).
    pub fn peers(&self) -> Result<Vec<PeerInfo>, VeilError> {
        let handle = self.handle()?;
        let peers = self
            .ask(handle.peers())?
            .ok_or_else(VeilError::not_running)?;
        Ok(peers.into_iter().map(PeerInfo::from).collect())
    }

    /// The next event, waiting until there is one. Events are queued from `start` on, even
    /// while nobody waits (the oldest are dropped beyond 1024).
    pub async fn next_event(&self) -> VeilEvent {
        self.events.next().await
    }
}

impl VeilNode {
    fn rt(&self) -> Result<&Runtime, VeilError> {
        self.rt.as_ref().ok_or_else(VeilError::not_running)
    }

    fn handle(&self) -> Result<NodeHandle, VeilError> {
        lock(&self.running)
            .as_ref()
            .filter(|r| !r.done.is_finished())
            .map(|r| r.handle.clone())
            .ok_or_else(VeilError::not_running)
    }

    /// Runs `f` (on the caller's thread) with the node's log dispatcher.
    fn with_log<T>(&self, f: impl FnOnce() -> T) -> T {
        match &self.log {
            Some(d) => tracing::dispatcher::with_default(d, f),
            None => f(),
        }
    }

    /// Waits for an answer of the node loop.
    fn ask<T>(&self, fut: impl std::future::Future<Output = T>) -> Result<T, VeilError> {
        self.rt()?
            .block_on(async { tokio::time::timeout(ASK_TIMEOUT, fut).await })
            .map_err(|_| VeilError::Internal {
                detail: format!(
                    "the node did not answer within {} s; it may be stopping (try again, or stop and start it)",
                    ASK_TIMEOUT.as_secs()
                ),
            })
    }
}

impl Drop for VeilNode {
    fn drop(&mut self) {
        self.stop();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

/// Resolves a relay's `HOST:PORT` from the token.
fn resolve(addr: &str) -> Result<SocketAddr, VeilError> {
    addr.to_socket_addrs()
        .map_err(|e| e.to_string())
        .and_then(|mut a| a.next().ok_or_else(|| "no address".to_owned()))
        .map_err(|e| VeilError::Network {
            detail: format!("cannot resolve the relay address {addr:?} of the token: {e}"),
        })
}

/// The certificate the configuration carries, checked against the token's CA and this key
/// (required when the token has a CA, refused when it has none).
fn certificate(
    token: &JoinToken,
    key: &[u8; 32],
    text: Option<&str>,
) -> Result<Option<veil_proto::Certificate>, VeilError> {
    let bad = |detail: String| VeilError::InvalidConfig {
        field: "certificate".into(),
        detail,
    };
    match (&token.ca, text) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(bad(
            "this network has no certificate authority; leave it empty".into(),
        )),
        (Some(_), None) => Err(bad(format!(
            "this network admits only nodes with a certificate; have the operator run `veil cert sign --ca CA_KEY --node-key {}` and pass what it prints",
            hex(Identity::from_secret(*key).public())
        ))),
        (Some(ca), Some(text)) => {
            let cert = veil_proto::Certificate::decode(text.trim()).map_err(|e| bad(e.to_string()))?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            cert.verify(ca, Identity::from_secret(*key).public(), now)
                .map_err(|e| bad(e.to_string()))?;
            Ok(Some(cert))
        }
    }
}

/// A duplicate of the platform's descriptor, owned by the node.
fn dup_fd(fd: i32) -> Result<OwnedFd, VeilError> {
    if fd < 0 {
        return Err(VeilError::Tun {
            detail: format!("{fd} is not a file descriptor; pass the one the platform's interface builder returned (VpnService.Builder.establish(), the utun of NEPacketTunnelProvider)"),
        });
    }
    // SAFETY: dup has no memory-safety preconditions; an invalid descriptor gives EBADF.
    let new = unsafe { libc::dup(fd) };
    if new < 0 {
        return Err(VeilError::Tun {
            detail: format!(
                "the TUN descriptor {fd} cannot be used: {}",
                std::io::Error::last_os_error()
            ),
        });
    }
    // SAFETY: `new` was just returned by dup, so it is open and nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// The settings before the rendezvous has spoken: the remembered address, else the one this
/// key claims first (the rendezvous confirms it, or a `SettingsChanged` follows).
fn initial_settings(
    token: &JoinToken,
    key: &[u8; 32],
    config: &Checked,
    relays: &[(SocketAddr, [u8; 32])],
    pinned: Option<Ipv4Addr>,
) -> TunnelSettings {
    let identity = Identity::from_secret(*key);
    let (pool, pool_len) = config.pool;
    let in_pool = |a: Ipv4Addr| {
        let mask = u32::MAX << (32 - u32::from(pool_len));
        u32::from(a) & mask == u32::from(pool)
    };
    let remembered = config
        .raw
        .state_dir
        .as_ref()
        .and_then(|d| veil_io::state::read_ipv4_hint(std::path::Path::new(d)))
        .filter(|a| in_pool(*a));
    let ipv4 = pinned
        .or(remembered)
        .unwrap_or_else(|| veil_proto::keys::ipv4_candidate(identity.public(), pool, pool_len, 0));
    let ipv6 = token.keys().overlay_ipv6(identity.public());
    settings_for(ipv4, ipv6, config, relays)
}

fn settings_for(
    ipv4: Ipv4Addr,
    ipv6: Ipv6Addr,
    config: &Checked,
    relays: &[(SocketAddr, [u8; 32])],
) -> TunnelSettings {
    let (pool, pool_len) = config.pool;
    let net6 = u128::from(ipv6) & (u128::MAX << (128 - u32::from(IPV6_PREFIX_LEN)));
    let host = |ip: IpAddr| IpRoute {
        address: ip.to_string(),
        prefix_len: if ip.is_ipv4() { 32 } else { 128 },
    };
    TunnelSettings {
        ipv4_address: ipv4.to_string(),
        ipv4_prefix_len: pool_len,
        ipv6_address: ipv6.to_string(),
        ipv6_prefix_len: IPV6_PREFIX_LEN,
        routes: vec![
            IpRoute {
                address: pool.to_string(),
                prefix_len: pool_len,
            },
            IpRoute {
                address: Ipv6Addr::from(net6).to_string(),
                prefix_len: IPV6_PREFIX_LEN,
            },
        ],
        mtu: config.raw.tun_mtu,
        dns_servers: config.dns.iter().map(ToString::to_string).collect(),
        overlay_dns_server: veil_proto::node::dns_address(pool, pool_len).map(|a| a.to_string()),
        overlay_dns_domain: config.raw.dns_domain.clone(),
        excluded_routes: relays.iter().map(|(a, _)| host(a.ip())).collect(),
    }
}

/// Turns the node loop's events into the app's, and watches the path MTU of each peer.
struct Pump {
    handle: NodeHandle,
    events: broadcast::Receiver<NodeEvent>,
    queue: Arc<EventQueue>,
    settings: Arc<Mutex<TunnelSettings>>,
    pool_len: u8,
    /// The last path, endpoint and MTU reported per peer.
    paths: HashMap<String, (String, Option<String>, Option<u32>)>,
}

impl Pump {
    async fn run(mut self, mut ended: oneshot::Receiver<()>) {
        let mut tick = tokio::time::interval(PMTU_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                e = self.events.recv() => match e {
                    Ok(e) => self.on_event(e).await,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::debug!(missed = n, "event pump fell behind");
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = tick.tick() => self.poll_paths(None).await,
                _ = &mut ended => break,
            }
        }
        // The loop has ended: what it said last is still in the channel.
        while let Ok(e) = self.events.try_recv() {
            self.on_plain_event(e);
        }
    }

    async fn on_event(&mut self, e: NodeEvent) {
        if let NodeEvent::PeerPath { id, .. } = &e {
            let id = id.clone();
            self.poll_paths(Some(&id)).await;
            return;
        }
        self.on_plain_event(e);
    }

    /// Events that need no question to the node loop.
    fn on_plain_event(&mut self, e: NodeEvent) {
        let ev = match e {
            NodeEvent::RelayUp(a) => VeilEvent::Connected {
                relay: a.to_string(),
            },
            NodeEvent::RelayDown(a) => VeilEvent::Disconnected {
                relay: a.to_string(),
            },
            NodeEvent::PeerUp { id } => VeilEvent::PeerUp { peer: id },
            NodeEvent::PeerDown { id } => {
                self.paths.remove(&id);
                VeilEvent::PeerDown { peer: id }
            }
            NodeEvent::Ipv4Assigned(a) => {
                let mut s = self.settings.lock().unwrap_or_else(PoisonError::into_inner);
                if s.ipv4_address == a.to_string() && s.ipv4_prefix_len == self.pool_len {
                    return;
                }
                s.ipv4_address = a.to_string();
                VeilEvent::SettingsChanged {
                    settings: s.clone(),
                }
            }
            NodeEvent::NameTaken { name } => VeilEvent::NameTaken { name },
            NodeEvent::RoutesChanged { routes } => {
                // The platform routes them into the interface: the overlay's own two, then
                // other nodes' subnets and the exit's default routes.
                let mut s = self.settings.lock().unwrap_or_else(PoisonError::into_inner);
                s.routes.truncate(OVERLAY_ROUTES);
                s.routes.extend(routes.iter().map(|p| IpRoute {
                    address: p.addr().to_string(),
                    prefix_len: p.prefix_len(),
                }));
                VeilEvent::SettingsChanged {
                    settings: s.clone(),
                }
            }
            NodeEvent::PeerPath { .. } | NodeEvent::Policy { .. } => return,
        };
        self.queue.push(ev);
    }

    /// Reports peers whose path, endpoint or MTU changed (`only`: that peer, reported even
    /// if unchanged, since the node said its path changed).
    async fn poll_paths(&mut self, only: Option<&str>) {
        let Some(peers) = self.handle.peers().await else {
            return;
        };
        for p in peers {
            if only.is_some_and(|id| id != p.id) {
                continue;
            }
            let now = (p.path.clone(), p.endpoint.clone(), p.pmtu);
            if only.is_none() && self.paths.get(&p.id) == Some(&now) {
                continue;
            }
            self.paths.insert(p.id.clone(), now);
            self.queue.push(VeilEvent::PathChanged {
                peer: p.id,
                path: p.path,
                endpoint: p.endpoint,
                pmtu: p.pmtu,
            });
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
