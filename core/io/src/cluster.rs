//! The rendezvous store relays share (`veil relay --nats`), behind [`RendezvousStore`]:
//! [`MemoryStore`] for relays in one process (tests, benchmarks) and, with the `nats`
//! feature, [`NatsStore`] on a NATS JetStream cluster. The relay engine asks
//! (`veil_proto::relay::ClusterOp`), [`ClusterTask`] executes against the store and hands
//! the answers back; the engine never waits on the network.
//!
//! What a store holds: per blinded name (its 16-byte prefix, hex), the encoded
//! `ClusterEntry` (home relay key, handle there, the node's key, its sealed record), and per
//! relay its key and underlay address (the directory). Nothing a relay does not hold already.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use veil_proto::relay::{ClaimOutcome, ClusterOp, RemoteAnnouncement, StoreAnswer};

/// What arrives for a relay on the bus.
pub type Inbox = mpsc::UnboundedReceiver<Vec<u8>>;

/// A boxed future of a store operation.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The relay directory: each relay's key and underlay address.
pub type Directory = Vec<([u8; 32], SocketAddr)>;

/// A store operation failed (the store is unreachable, or refused).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

/// What `veil relay status` shows of the store.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoreHealth {
    /// `memory` or `nats`.
    pub backend: String,
    /// Whether the store answers now.
    pub connected: bool,
    /// The server the relay is connected to, or what is wrong.
    pub detail: String,
    /// Names this relay holds in the store (refreshed every lease / 3).
    pub held: usize,
    /// Operations that failed since start.
    pub errors: u64,
}

/// A rendezvous store shared by relays. Names are 16-byte prefixes of blinded names.
pub trait RendezvousStore: Send + Sync + 'static {
    /// Holds `entry` under every name unless one belongs to another `owner` (then the index
    /// of the first such name).
    fn claim<'a>(
        &'a self,
        names: &'a [[u8; 16]],
        owner: [u8; 32],
        entry: &'a [u8],
    ) -> StoreFuture<'a, Result<ClaimOutcome, StoreError>>;
    /// Removes the names whose entry is still this relay's for this owner.
    fn release<'a>(
        &'a self,
        names: &'a [[u8; 16]],
        owner: [u8; 32],
        relay: [u8; 32],
    ) -> StoreFuture<'a, Result<(), StoreError>>;
    /// The entry of a name.
    fn lookup(&self, name: [u8; 16]) -> StoreFuture<'_, Result<Option<Vec<u8>>, StoreError>>;
    /// Lists this relay in the directory (refreshed by the caller every few seconds).
    fn publish_relay(
        &self,
        relay: [u8; 32],
        addr: SocketAddr,
    ) -> StoreFuture<'_, Result<(), StoreError>>;
    /// The relays of the directory.
    fn relays(&self) -> StoreFuture<'_, Result<Directory, StoreError>>;
    /// Stores (or, `blob` empty, removes) the route announcement of client `handle` of
    /// relay `relay`.
    fn announce(
        &self,
        relay: [u8; 32],
        handle: u64,
        blob: Vec<u8>,
    ) -> StoreFuture<'_, Result<(), StoreError>>;
    /// Every relay's clients' route announcements.
    fn routes(&self) -> StoreFuture<'_, Result<Vec<RemoteAnnouncement>, StoreError>>;
    /// Sends a sealed frame to relay `to` on the bus.
    fn send(&self, to: [u8; 32], payload: Vec<u8>) -> StoreFuture<'_, Result<(), StoreError>>;
    /// This relay's inbox on the bus.
    fn inbox(&self, me: [u8; 32]) -> StoreFuture<'_, Result<Inbox, StoreError>>;
    /// Renews the lease of every name (and announcement) this relay holds; returns how many.
    fn refresh(&self) -> StoreFuture<'_, Result<usize, StoreError>>;
    /// A snapshot for status.
    fn health(&self) -> StoreHealth;
}

/// The in-memory store: relays in one process share it through an `Arc`.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<(
        veil_proto::relay::MemoryStore,
        HashMap<[u8; 32], SocketAddr>,
    )>,
    bus: Mutex<HashMap<[u8; 32], mpsc::UnboundedSender<Vec<u8>>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn apply(&self, op: &ClusterOp) -> Option<StoreAnswer> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.0.apply(op).map(|(_, a)| a)
    }
}

impl RendezvousStore for MemoryStore {
    fn claim<'a>(
        &'a self,
        names: &'a [[u8; 16]],
        owner: [u8; 32],
        entry: &'a [u8],
    ) -> StoreFuture<'a, Result<ClaimOutcome, StoreError>> {
        let op = ClusterOp::Claim {
            id: 0,
            names: names.to_vec(),
            owner,
            entry: entry.to_vec(),
        };
        let r = match self.apply(&op) {
            Some(StoreAnswer::Claim(o)) => Ok(o),
            _ => Err(StoreError("the memory store gave no claim answer".into())),
        };
        Box::pin(async move { r })
    }

    fn release<'a>(
        &'a self,
        names: &'a [[u8; 16]],
        owner: [u8; 32],
        relay: [u8; 32],
    ) -> StoreFuture<'a, Result<(), StoreError>> {
        self.apply(&ClusterOp::Release {
            names: names.to_vec(),
            owner,
            relay,
        });
        Box::pin(async { Ok(()) })
    }

    fn lookup(&self, name: [u8; 16]) -> StoreFuture<'_, Result<Option<Vec<u8>>, StoreError>> {
        let r = match self.apply(&ClusterOp::Lookup { id: 0, name }) {
            Some(StoreAnswer::Found(e)) => Ok(e),
            _ => Ok(None),
        };
        Box::pin(async move { r })
    }

    fn publish_relay(
        &self,
        relay: [u8; 32],
        addr: SocketAddr,
    ) -> StoreFuture<'_, Result<(), StoreError>> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.1.insert(relay, addr);
        Box::pin(async { Ok(()) })
    }

    fn relays(&self) -> StoreFuture<'_, Result<Directory, StoreError>> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let v: Vec<_> = g.1.iter().map(|(k, a)| (*k, *a)).collect();
        Box::pin(async move { Ok(v) })
    }

    fn announce(
        &self,
        relay: [u8; 32],
        handle: u64,
        blob: Vec<u8>,
    ) -> StoreFuture<'_, Result<(), StoreError>> {
        self.apply(&ClusterOp::Announce {
            relay,
            handle,
            blob,
        });
        Box::pin(async { Ok(()) })
    }

    fn routes(&self) -> StoreFuture<'_, Result<Vec<RemoteAnnouncement>, StoreError>> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let v = g.0.routes();
        Box::pin(async move { Ok(v) })
    }

    fn send(&self, to: [u8; 32], payload: Vec<u8>) -> StoreFuture<'_, Result<(), StoreError>> {
        let bus = self.bus.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = bus.get(&to) {
            let _ = tx.send(payload);
        }
        Box::pin(async { Ok(()) })
    }

    fn inbox(&self, me: [u8; 32]) -> StoreFuture<'_, Result<Inbox, StoreError>> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.bus
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(me, tx);
        Box::pin(async { Ok(rx) })
    }

    fn refresh(&self) -> StoreFuture<'_, Result<usize, StoreError>> {
        Box::pin(async { Ok(0) })
    }

    fn health(&self) -> StoreHealth {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        StoreHealth {
            backend: "memory".into(),
            connected: true,
            detail: "in this process".into(),
            held: g.0.len(),
            errors: 0,
        }
    }
}

/// An answer for the relay loop.
#[derive(Debug)]
pub enum ClusterAnswer {
    /// To claim `id`.
    Claimed(u64, ClaimOutcome),
    /// To lookup `id`.
    Found(u64, Option<Vec<u8>>),
    /// The directory as listed now.
    Directory(Directory),
    /// Every relay's clients' route announcements, as listed now.
    Routes(Vec<RemoteAnnouncement>),
    /// A sealed frame from another relay, off the bus.
    Bus(Vec<u8>),
}

/// How often the relay lists itself in the directory and reads it.
pub const DIRECTORY_INTERVAL: Duration = Duration::from_secs(1);

/// Runs store operations for one relay: ops in, answers out, plus the directory and lease
/// refresh timers. Each op is its own task, so a slow answer holds up no other.
pub struct ClusterTask;

impl ClusterTask {
    /// Spawns the task on the current runtime. `lease` is the relay's client timeout: held
    /// names are renewed every third of it.
    pub fn spawn(
        store: Arc<dyn RendezvousStore>,
        me: [u8; 32],
        advertise: SocketAddr,
        lease: Duration,
    ) -> (
        mpsc::UnboundedSender<ClusterOp>,
        mpsc::Receiver<ClusterAnswer>,
    ) {
        let (op_tx, mut op_rx) = mpsc::unbounded_channel::<ClusterOp>();
        let (ans_tx, ans_rx) = mpsc::channel::<ClusterAnswer>(4096);
        let s = store.clone();
        let a = ans_tx.clone();
        tokio::spawn(async move {
            while let Some(op) = op_rx.recv().await {
                let store = s.clone();
                let answers = a.clone();
                tokio::spawn(async move {
                    let answer = match op {
                        ClusterOp::Claim {
                            id,
                            names,
                            owner,
                            entry,
                        } => {
                            let o = match store.claim(&names, owner, &entry).await {
                                Ok(o) => o,
                                Err(e) => {
                                    tracing::warn!(error = %e, "shared rendezvous: claim failed; serving the registration from this relay alone");
                                    ClaimOutcome::Unavailable
                                }
                            };
                            Some(ClusterAnswer::Claimed(id, o))
                        }
                        ClusterOp::Release {
                            names,
                            owner,
                            relay,
                        } => {
                            if let Err(e) = store.release(&names, owner, relay).await {
                                tracing::debug!(error = %e, "shared rendezvous: release failed (the lease expires it)");
                            }
                            None
                        }
                        ClusterOp::Lookup { id, name } => {
                            let e = store.lookup(name).await.unwrap_or_else(|e| {
                                tracing::debug!(error = %e, "shared rendezvous: lookup failed");
                                None
                            });
                            Some(ClusterAnswer::Found(id, e))
                        }
                        ClusterOp::Send { to, payload } => {
                            if let Err(e) = store.send(to, payload).await {
                                tracing::debug!(error = %e, "shared rendezvous: bus send failed");
                            }
                            None
                        }
                        ClusterOp::Announce {
                            relay,
                            handle,
                            blob,
                        } => {
                            if let Err(e) = store.announce(relay, handle, blob).await {
                                tracing::warn!(error = %e, "shared rendezvous: a route announcement was not stored");
                            }
                            None
                        }
                    };
                    if let Some(x) = answer {
                        let _ = answers.send(x).await;
                    }
                });
            }
        });
        let s = store.clone();
        let a = ans_tx.clone();
        tokio::spawn(async move {
            let mut inbox = match s.inbox(me).await {
                Ok(i) => i,
                Err(e) => {
                    tracing::warn!(error = %e, "shared rendezvous: no bus inbox; frames between relays go on links only");
                    return;
                }
            };
            while let Some(p) = inbox.recv().await {
                if a.send(ClusterAnswer::Bus(p)).await.is_err() {
                    return;
                }
            }
        });
        let s = store.clone();
        let a = ans_tx;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(DIRECTORY_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let refresh_every = (lease / 3).max(Duration::from_secs(1));
            let mut last_refresh = tokio::time::Instant::now();
            loop {
                tick.tick().await;
                if let Err(e) = s.publish_relay(me, advertise).await {
                    tracing::debug!(error = %e, "shared rendezvous: could not list this relay");
                }
                match s.relays().await {
                    Ok(v) => {
                        if a.send(ClusterAnswer::Directory(v)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "shared rendezvous: no directory"),
                }
                match s.routes().await {
                    Ok(v) => {
                        if a.send(ClusterAnswer::Routes(v)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "shared rendezvous: no routes"),
                }
                if last_refresh.elapsed() >= refresh_every {
                    last_refresh = tokio::time::Instant::now();
                    if let Err(e) = s.refresh().await {
                        tracing::warn!(error = %e, "shared rendezvous: lease refresh failed");
                    }
                }
            }
        });
        (op_tx, ans_rx)
    }
}

#[cfg(feature = "nats")]
pub use nats::NatsStore;

/// How a relay proves itself to NATS and protects the connection (`veil relay --nats-…`).
/// NATS takes one way of authenticating per connection: at most one of `user`, `token`,
/// `nkey_seed` and `creds` is set (the CLI refuses more).
#[derive(Clone, Default)]
pub struct NatsSecurity {
    /// User name and password.
    pub user: Option<(String, String)>,
    /// An authentication token.
    pub token: Option<String>,
    /// The seed (`SU…`) of the user NKey NATS knows this relay by; it signs the server's
    /// nonce, and only the public key is in the server's configuration.
    pub nkey_seed: Option<String>,
    /// A credentials file (a user JWT and its NKey seed, as `nsc` writes them) for servers
    /// in operator mode (decentralized JWT authentication, e.g. Synadia Cloud).
    pub creds: Option<std::path::PathBuf>,
    /// PEM file of the certificates that may sign the servers' (instead of the system's).
    pub tls_ca: Option<std::path::PathBuf>,
    /// PEM files of this relay's client certificate and its key (for servers that verify
    /// clients).
    pub tls_client: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// Refuse a server that does not offer TLS (also implied by any of the TLS files and by
    /// `tls://` URLs).
    pub tls_required: bool,
}

impl NatsSecurity {
    /// Whether the connection must be TLS.
    pub fn tls(&self) -> bool {
        self.tls_required || self.tls_ca.is_some() || self.tls_client.is_some()
    }

    /// What `veil relay status` shows: the method and whether TLS is required, no secret.
    pub fn describe(&self) -> String {
        let auth = match (&self.user, &self.token, &self.nkey_seed, &self.creds) {
            (Some((u, _)), _, _, _) => format!("user {u}"),
            (_, Some(_), _, _) => "token".to_owned(),
            (_, _, Some(_), _) => "nkey".to_owned(),
            (_, _, _, Some(_)) => "credentials file".to_owned(),
            _ => "no credentials".to_owned(),
        };
        let mut tls = match (self.tls(), &self.tls_client) {
            (true, Some(_)) => "TLS with a client certificate".to_owned(),
            (true, None) => "TLS".to_owned(),
            (false, _) => "TLS if the server asks".to_owned(),
        };
        if self.tls_ca.is_some() {
            tls.push_str(", own CA");
        }
        format!("{auth}, {tls}")
    }
}

/// Secrets stay out of logs and `Debug` output.
impl std::fmt::Debug for NatsSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

#[cfg(feature = "nats")]
mod nats {
    use super::*;
    use async_nats::jetstream::{self, kv};
    use bytes::Bytes;
    use futures_util::StreamExt;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Lifetime of a directory entry: a relay that stopped listing itself is gone after it.
    const DIRECTORY_AGE: Duration = Duration::from_secs(10);
    /// Replicas of the buckets when the cluster has enough servers.
    const REPLICAS: usize = 3;
    /// How long a starting relay waits for NATS.
    const CONNECT_WAIT: Duration = Duration::from_secs(20);

    /// The store on a NATS JetStream cluster: two key-value buckets per network, one for
    /// names (`max_age` = the lease) and one for the relay directory.
    pub struct NatsStore {
        client: async_nats::Client,
        names: kv::Store,
        dir: kv::Store,
        routes: kv::Store,
        /// Announcements of this relay's clients: key → blob, renewed by `refresh`.
        held_routes: Mutex<HashMap<String, Bytes>>,
        /// Names this relay wrote: key → (revision, value); renewed by `refresh`, released
        /// with the revision, dropped when another relay wrote the key since.
        held: Mutex<HashMap<String, (u64, Bytes)>>,
        errors: AtomicU64,
        urls: String,
        /// How the relay authenticates and whether TLS is required (`describe`), for status.
        security: String,
        /// Subject prefix of the relays' bus: `<prefix>.<relay key hex>`.
        bus: String,
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn unhex32(s: &str) -> Option<[u8; 32]> {
        let mut out = [0u8; 32];
        if s.len() != 64 {
            return None;
        }
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(out)
    }

    fn err(e: impl std::fmt::Display) -> StoreError {
        StoreError(e.to_string())
    }

    /// The client's options for `security` (reads the credentials file).
    async fn options(security: &NatsSecurity) -> Result<async_nats::ConnectOptions, StoreError> {
        let mut o = async_nats::ConnectOptions::new();
        if let Some(path) = &security.creds {
            o = o.credentials_file(path).await.map_err(|e| {
                StoreError(format!(
                    "--nats-creds {}: {e} (a NATS credentials file holds a user JWT and its NKey seed, as `nsc generate creds` writes it)",
                    path.display()
                ))
            })?;
        }
        if let Some((user, password)) = &security.user {
            o = o.user_and_password(user.clone(), password.clone());
        }
        if let Some(token) = &security.token {
            o = o.token(token.clone());
        }
        if let Some(seed) = &security.nkey_seed {
            o = o.nkey(seed.clone());
        }
        if let Some(ca) = &security.tls_ca {
            o = o.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &security.tls_client {
            o = o.add_client_certificate(cert.clone(), key.clone());
        }
        Ok(o.require_tls(security.tls()))
    }

    /// The TLS error behind a failed connection, if that is what it was (the client reports
    /// a handshake that failed as an I/O error).
    fn tls_cause<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
        let mut cur = Some(e);
        while let Some(err) = cur {
            if let Some(t) = err.downcast_ref::<rustls::Error>() {
                return Some(t);
            }
            // io::Error's `source` skips the error it wraps: look at that one too.
            if let Some(t) = err
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            {
                return Some(t);
            }
            cur = err.source();
        }
        None
    }

    /// Why a failed connection will not succeed by trying again, in words that name the
    /// setting to look at; `None` for what may pass (a server not up yet, a timeout).
    fn fatal(e: &async_nats::ConnectError, security: &NatsSecurity) -> Option<String> {
        use async_nats::ConnectErrorKind as K;
        let used = security.describe();
        if let Some(tls) = tls_cause(e) {
            return Some(match tls {
                rustls::Error::AlertReceived(alert) => format!(
                    "TLS failed: the server ended the handshake ({alert:?}; this relay used {used}): a server that verifies clients needs --nats-tls-cert and --nats-tls-key, a certificate signed by a CA it trusts"
                ),
                other => format!(
                    "TLS failed: {other} (this relay used {used}): --nats-tls-ca must hold the CA that signed the server's certificate, and that certificate must name the host of the URL"
                ),
            });
        }
        match e.kind() {
            K::AuthorizationViolation | K::Authentication => Some(format!(
                "the server refused this relay ({e}; it connected with {used}): check --nats-user with its password, --nats-token-file, --nats-nkey or --nats-creds against the server's authorization"
            )),
            K::Tls => Some(format!(
                "TLS failed ({e}; this relay used {used}): check --nats-tls-ca, --nats-tls-cert and --nats-tls-key"
            )),
            K::ServerParse => Some(format!(
                "{e}: give URLs as nats://HOST:PORT or tls://HOST:PORT, comma-separated"
            )),
            _ => None,
        }
    }

    impl NatsStore {
        /// Connects to `urls` (comma-separated `nats://host:port` or `tls://host:port`) with
        /// `security` and opens (or creates) the buckets of the network named by `network`
        /// (a hash of its relay peering key). `lease` is the names' `max_age`. A server that
        /// cannot be reached is tried again for `CONNECT_WAIT`; refused credentials and a
        /// failed TLS handshake end it at once (waiting does not change them).
        pub async fn connect(
            urls: &str,
            security: &NatsSecurity,
            network: &str,
            lease: Duration,
        ) -> Result<NatsStore, StoreError> {
            let list: Vec<&str> = urls
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .collect();
            if list.is_empty() {
                return Err(StoreError(
                    "--nats needs at least one URL, e.g. nats://127.0.0.1:4222".into(),
                ));
            }
            // NATS may start after the relay (a container platform starts both at once):
            // try for CONNECT_WAIT before giving up with the cause.
            let deadline = tokio::time::Instant::now() + CONNECT_WAIT;
            let client = loop {
                match options(security)
                    .await?
                    .connection_timeout(Duration::from_secs(3))
                    .request_timeout(Some(Duration::from_secs(2)))
                    .connect(list.clone())
                    .await
                {
                    Ok(c) => break c,
                    Err(e) => {
                        if let Some(why) = fatal(&e, security) {
                            return Err(StoreError(format!("NATS at {urls}: {why}")));
                        }
                        if tokio::time::Instant::now() < deadline {
                            tracing::warn!(error = %e, "NATS at {urls} not reachable yet; retrying");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            continue;
                        }
                        return Err(StoreError(format!(
                            "could not connect to NATS at {urls} within {} s: {e} (is nats-server running there, and reachable from this relay?)",
                            CONNECT_WAIT.as_secs()
                        )));
                    }
                }
            };
            let js = jetstream::new(client.clone());
            let names = open_bucket(&js, &format!("veil_{network}_names"), lease).await?;
            let dir = open_bucket(&js, &format!("veil_{network}_relays"), DIRECTORY_AGE).await?;
            let routes = open_bucket(&js, &format!("veil_{network}_routes"), lease).await?;
            Ok(NatsStore {
                client,
                names,
                dir,
                routes,
                held_routes: Mutex::new(HashMap::new()),
                held: Mutex::new(HashMap::new()),
                errors: AtomicU64::new(0),
                urls: urls.to_string(),
                security: security.describe(),
                bus: format!("veil_{network}.bus"),
            })
        }

        fn failed(&self, e: StoreError) -> StoreError {
            self.errors.fetch_add(1, Ordering::Relaxed);
            e
        }

        /// Reads the current entry of a key: (revision, value) of a live put.
        async fn current(&self, key: &str) -> Result<Option<(u64, Bytes)>, StoreError> {
            match self.names.entry(key).await.map_err(err)? {
                Some(e) if e.operation == kv::Operation::Put => Ok(Some((e.revision, e.value))),
                _ => Ok(None),
            }
        }

        async fn write(
            &self,
            key: &str,
            value: Bytes,
            seen: Option<u64>,
        ) -> Result<u64, StoreError> {
            match seen {
                Some(rev) => self.names.update(key, value, rev).await.map_err(err),
                None => self.names.create(key, value).await.map_err(err),
            }
        }
    }

    async fn open_bucket(
        js: &jetstream::Context,
        bucket: &str,
        max_age: Duration,
    ) -> Result<kv::Store, StoreError> {
        if let Ok(b) = js.get_key_value(bucket).await {
            return Ok(b);
        }
        // The bucket's stream as `create_key_value` would make it, created directly: the
        // client's helper first reads the account info, whose form NATS 2.9 (Debian's) does
        // not match.
        let cfg = |replicas| jetstream::stream::Config {
            name: format!("KV_{bucket}"),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            max_age,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: jetstream::stream::DiscardPolicy::New,
            num_replicas: replicas,
            ..Default::default()
        };
        let created = match js.create_stream(cfg(REPLICAS)).await {
            Ok(_) => Ok(()),
            Err(e3) => {
                // Fewer than three servers (or JetStream on one only): one replica.
                tracing::warn!(error = %e3, bucket, "NATS: could not create the bucket with {REPLICAS} replicas (fewer servers?); trying 1");
                js.create_stream(cfg(1)).await.map(|_| ())
            }
        };
        if let Err(e) = created {
            // Another relay may have created it meanwhile.
            if let Ok(b) = js.get_key_value(bucket).await {
                return Ok(b);
            }
            return Err(StoreError(format!(
                "could not create the NATS key-value bucket {bucket}: {e} (is JetStream enabled on the server? start nats-server with -js)"
            )));
        }
        js.get_key_value(bucket)
            .await
            .map_err(|e| StoreError(format!("NATS bucket {bucket}: {e}")))
    }

    impl RendezvousStore for NatsStore {
        fn claim<'a>(
            &'a self,
            names: &'a [[u8; 16]],
            owner: [u8; 32],
            entry: &'a [u8],
        ) -> StoreFuture<'a, Result<ClaimOutcome, StoreError>> {
            Box::pin(async move {
                let keys: Vec<String> = names.iter().map(|n| hex(n)).collect();
                let reads =
                    futures_util::future::join_all(keys.iter().map(|k| self.current(k))).await;
                let mut seen = Vec::with_capacity(keys.len());
                for (i, r) in reads.into_iter().enumerate() {
                    let cur = r.map_err(|e| self.failed(e))?;
                    if let Some((_, v)) = &cur {
                        let other = veil_proto::relay::ClusterEntry::decode(v)
                            .is_some_and(|e| e.owner != owner);
                        if other {
                            return Ok(ClaimOutcome::Conflict(i));
                        }
                    }
                    seen.push(cur.map(|(rev, _)| rev));
                }
                let value = Bytes::copy_from_slice(entry);
                let writes = futures_util::future::join_all(
                    keys.iter()
                        .zip(&seen)
                        .map(|(k, s)| self.write(k, value.clone(), *s)),
                )
                .await;
                let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
                let mut lost = None;
                for (i, (k, w)) in keys.iter().zip(writes).enumerate() {
                    match w {
                        Ok(rev) => {
                            held.insert(k.clone(), (rev, value.clone()));
                        }
                        // Another relay wrote the key between our read and write: it won.
                        Err(_) if lost.is_none() => lost = Some(i),
                        Err(_) => {}
                    }
                }
                Ok(lost.map_or(ClaimOutcome::Claimed, ClaimOutcome::Conflict))
            })
        }

        fn release<'a>(
            &'a self,
            names: &'a [[u8; 16]],
            _owner: [u8; 32],
            _relay: [u8; 32],
        ) -> StoreFuture<'a, Result<(), StoreError>> {
            Box::pin(async move {
                let mine: Vec<(String, u64)> = {
                    let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
                    names
                        .iter()
                        .filter_map(|n| {
                            let k = hex(n);
                            held.remove(&k).map(|(rev, _)| (k, rev))
                        })
                        .collect()
                };
                // Only where our write is still the last one: a node that moved to another
                // relay keeps its names.
                let _ = futures_util::future::join_all(
                    mine.iter()
                        .map(|(k, rev)| self.names.delete_expect_revision(k, Some(*rev))),
                )
                .await;
                Ok(())
            })
        }

        fn lookup(&self, name: [u8; 16]) -> StoreFuture<'_, Result<Option<Vec<u8>>, StoreError>> {
            Box::pin(async move {
                let k = hex(&name);
                match self.names.get(k).await {
                    Ok(v) => Ok(v.map(|b| b.to_vec())),
                    Err(e) => Err(self.failed(err(e))),
                }
            })
        }

        fn publish_relay(
            &self,
            relay: [u8; 32],
            addr: SocketAddr,
        ) -> StoreFuture<'_, Result<(), StoreError>> {
            Box::pin(async move {
                self.dir
                    .put(hex(&relay), Bytes::from(addr.to_string()))
                    .await
                    .map(|_| ())
                    .map_err(|e| self.failed(err(e)))
            })
        }

        fn relays(&self) -> StoreFuture<'_, Result<Directory, StoreError>> {
            Box::pin(async move {
                let mut keys = self.dir.keys().await.map_err(|e| self.failed(err(e)))?;
                let mut out = Vec::new();
                while let Some(k) = keys.next().await {
                    let Ok(k) = k else { continue };
                    let Some(public) = unhex32(&k) else { continue };
                    if let Ok(Some(v)) = self.dir.get(&k).await {
                        if let Some(a) = std::str::from_utf8(&v).ok().and_then(|s| s.parse().ok()) {
                            out.push((public, a));
                        }
                    }
                }
                Ok(out)
            })
        }

        fn announce(
            &self,
            relay: [u8; 32],
            handle: u64,
            blob: Vec<u8>,
        ) -> StoreFuture<'_, Result<(), StoreError>> {
            Box::pin(async move {
                let key = format!("{}_{handle:016x}", hex(&relay));
                if blob.is_empty() {
                    self.held_routes
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&key);
                    return self
                        .routes
                        .delete(&key)
                        .await
                        .map_err(|e| self.failed(err(e)));
                }
                let v = Bytes::from(blob);
                self.held_routes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key.clone(), v.clone());
                self.routes
                    .put(&key, v)
                    .await
                    .map(|_| ())
                    .map_err(|e| self.failed(err(e)))
            })
        }

        fn routes(&self) -> StoreFuture<'_, Result<Vec<RemoteAnnouncement>, StoreError>> {
            Box::pin(async move {
                let mut keys = self.routes.keys().await.map_err(|e| self.failed(err(e)))?;
                let mut out = Vec::new();
                while let Some(k) = keys.next().await {
                    let Ok(k) = k else { continue };
                    let Some((r, h)) = k.split_once('_') else {
                        continue;
                    };
                    let (Some(relay), Ok(handle)) = (unhex32(r), u64::from_str_radix(h, 16)) else {
                        continue;
                    };
                    if let Ok(Some(v)) = self.routes.get(&k).await {
                        out.push((relay, handle, v.to_vec()));
                    }
                }
                Ok(out)
            })
        }

        fn send(&self, to: [u8; 32], payload: Vec<u8>) -> StoreFuture<'_, Result<(), StoreError>> {
            Box::pin(async move {
                self.client
                    .publish(format!("{}.{}", self.bus, hex(&to)), Bytes::from(payload))
                    .await
                    .map_err(|e| self.failed(err(e)))
            })
        }

        fn inbox(&self, me: [u8; 32]) -> StoreFuture<'_, Result<Inbox, StoreError>> {
            Box::pin(async move {
                let mut sub = self
                    .client
                    .subscribe(format!("{}.{}", self.bus, hex(&me)))
                    .await
                    .map_err(|e| self.failed(err(e)))?;
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(async move {
                    while let Some(m) = sub.next().await {
                        if tx.send(m.payload.to_vec()).is_err() {
                            return;
                        }
                    }
                });
                Ok(rx)
            })
        }

        fn refresh(&self) -> StoreFuture<'_, Result<usize, StoreError>> {
            Box::pin(async move {
                let routes: Vec<(String, Bytes)> = {
                    let held = self.held_routes.lock().unwrap_or_else(|e| e.into_inner());
                    held.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
                };
                for (k, v) in routes {
                    let _ = self.routes.put(&k, v).await;
                }
                let all: Vec<(String, u64, Bytes)> = {
                    let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
                    held.iter()
                        .map(|(k, (r, v))| (k.clone(), *r, v.clone()))
                        .collect()
                };
                let mut renewed = 0;
                let mut results =
                    futures_util::stream::iter(all.into_iter().map(|(k, rev, v)| async move {
                        let r = self.names.update(&k, v, rev).await;
                        (k, r)
                    }))
                    .buffer_unordered(64);
                let mut updates = Vec::new();
                while let Some((k, r)) = results.next().await {
                    updates.push((k, r.ok()));
                }
                let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
                for (k, r) in updates {
                    match r {
                        Some(rev) => {
                            renewed += 1;
                            if let Some(x) = held.get_mut(&k) {
                                x.0 = rev;
                            }
                        }
                        // Another relay holds it now (the node moved), or it expired.
                        None => {
                            held.remove(&k);
                        }
                    }
                }
                Ok(renewed)
            })
        }

        fn health(&self) -> StoreHealth {
            let state = self.client.connection_state();
            let connected = matches!(state, async_nats::connection::State::Connected);
            let info = self.client.server_info();
            StoreHealth {
                backend: "nats".into(),
                connected,
                detail: if connected {
                    format!(
                        "connected to {}:{} ({}); {}",
                        info.host, info.port, info.server_name, self.security
                    )
                } else {
                    format!("{state:?}; servers {}; {}", self.urls, self.security)
                },
                held: self.held.lock().map(|h| h.len()).unwrap_or(0),
                errors: self.errors.load(Ordering::Relaxed),
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use veil_proto::relay::ClusterEntry;

    fn entry(relay: u8, owner: u8) -> Vec<u8> {
        ClusterEntry {
            relay: [relay; 32],
            handle: 7,
            owner: [owner; 32],
            record: vec![1, 2, 3],
        }
        .encode()
    }

    #[tokio::test]
    async fn the_memory_store_keeps_names_unique_and_releases_only_its_own() {
        let s = MemoryStore::new();
        let (n1, n2) = ([1u8; 16], [2u8; 16]);
        let claim = s.claim(&[n1, n2], [10; 32], &entry(1, 10)).await.unwrap();
        assert_eq!(claim, ClaimOutcome::Claimed);
        // Another node wants n2: conflict at its index; the same node again (moved to relay
        // 2): its own names.
        let other = s
            .claim(&[[3; 16], n2], [11; 32], &entry(1, 11))
            .await
            .unwrap();
        assert_eq!(other, ClaimOutcome::Conflict(1));
        let moved = s.claim(&[n1, n2], [10; 32], &entry(2, 10)).await.unwrap();
        assert_eq!(moved, ClaimOutcome::Claimed);
        // Relay 1 releasing the node that moved removes nothing.
        s.release(&[n1, n2], [10; 32], [1; 32]).await.unwrap();
        let e = s.lookup(n1).await.unwrap().unwrap();
        assert_eq!(ClusterEntry::decode(&e).unwrap().relay, [2; 32]);
        s.release(&[n1, n2], [10; 32], [2; 32]).await.unwrap();
        assert!(s.lookup(n1).await.unwrap().is_none());
        let a: SocketAddr = "198.18.0.1:7000".parse().unwrap();
        s.publish_relay([1; 32], a).await.unwrap();
        assert_eq!(s.relays().await.unwrap(), vec![([1; 32], a)]);
        assert!(s.health().connected);
        let mut inbox = s.inbox([2; 32]).await.unwrap();
        s.send([2; 32], vec![9, 9]).await.unwrap();
        s.send([3; 32], vec![8]).await.unwrap();
        assert_eq!(inbox.recv().await, Some(vec![9, 9]));
        assert!(
            inbox.try_recv().is_err(),
            "nothing for relay 3 arrives at relay 2"
        );
    }
}
