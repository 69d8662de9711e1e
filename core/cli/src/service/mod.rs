//! `veil service`: the system service the desktop app talks to, and the commands around it.
//!
//! `veil service run` owns the control socket (`STATE_DIR/veil.sock`, root and group `veil`,
//! 0660) for as long as it runs, connected or not, and starts and stops the node inside its
//! own process on request: `join` keeps a join token in the state directory (root only, next
//! to the node key), `connect` starts the node exactly as `veil up` would (the shared
//! [`crate::up::prepare`] and [`crate::up::start`]), `disconnect` stops it, `leave` forgets
//! the token. Subscribers get the state, the engine's events, a stats tick every second and
//! the log lines (docs/ipc.md). A node left connected is connected again when the service
//! starts (the marker file `autoconnect`).
//!
//! [`install`] writes the systemd unit (launchd plist on macOS, the SCM entry on Windows) and
//! the `veil` group; the other subcommands are clients of the socket.

#[cfg(unix)]
pub mod install;
#[cfg(windows)]
pub mod windows;

#[cfg(unix)]
pub use install::{install, manager_status, uninstall};
#[cfg(windows)]
pub use windows::{install, manager_status, uninstall};

use crate::args::{QueryArgs, ServiceJoinArgs, ServiceRunArgs, TargetArgs};
use crate::config::{Layer, Source};
use crate::error::CliError;
use crate::logging::{self, LogRing};
use crate::up::{self, Prepared};
use crate::{runtime, shutdown_signal};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{broadcast, watch, Notify};
use veil_io::control::{
    ControlCommand, ControlHandler, EventFeed, HandlerFuture, ServiceFuture, SubscribeFuture,
    NODE_SOCKET,
};
use veil_io::{state, ControlServer, NodeHandle};
use veil_ipc::{
    Command, ErrorCode, Event, Hello, RemoteError, ServiceState, StateInfo, Stats, Traffic,
};
use veil_proto::{JoinToken, NodeEvent};

/// The join token given with `join`, in the state directory (mode 0600).
pub const TOKEN_FILE: &str = "service.token";
/// Present while the node should run: the service connects at start when it is there.
pub const AUTOCONNECT_FILE: &str = "autoconnect";
/// How many events a slow subscriber may fall behind (log lines included).
const EVENT_BACKLOG: usize = 1024;
/// How long `disconnect` waits for the node to stop.
const STOP_WAIT: Duration = Duration::from_secs(15);

/// What the service manager says about the system service.
#[derive(Debug)]
pub struct ManagerStatus {
    /// The unit (plist, SCM entry) exists.
    pub installed: bool,
    /// The manager's word for its state (`active`, `inactive`, …), when it has one.
    pub active: Option<String>,
}

impl ManagerStatus {
    /// One line for `veil service status`.
    pub fn describe(&self) -> String {
        match (self.installed, &self.active) {
            (false, _) => "not installed (sudo veil service install)".into(),
            (true, Some(a)) => format!("installed, {a}"),
            (true, None) => "installed".into(),
        }
    }
}

/// `veil service run`: under the Service Control Manager on Windows when it started us,
/// else in the foreground.
pub fn run(args: &ServiceRunArgs) -> Result<(), CliError> {
    #[cfg(windows)]
    {
        windows::run(args)
    }
    #[cfg(not(windows))]
    {
        run_console(args)
    }
}

/// The daemon in the foreground until SIGINT, SIGTERM or `down`.
pub fn run_console(args: &ServiceRunArgs) -> Result<(), CliError> {
    // A broken config file is an error now, not at the first connect.
    let settings = up::settings_from(Source::flags(Layer::default()), args.config.as_deref())?;
    let (events, _) = broadcast::channel(EVENT_BACKLOG);
    let logs = LogRing::new(veil_ipc::MAX_LOG_LINES, events.clone());
    logging::init_with_ring(&settings.log, logs.clone());
    state::ensure_dir(&args.state_dir)?;
    let service = Service::new(args, events, logs);
    runtime()?.block_on(async {
        // The signal handlers need the runtime.
        let stop = shutdown_signal()?;
        serve(service, stop).await
    })
}

/// Serves the control socket until `stop` completes or a `down` request, then stops the
/// node. The socket is removed on return.
pub async fn serve(
    service: Service,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), CliError> {
    let sock_path = veil_io::control::socket_path(&service.0.state_dir, NODE_SOCKET);
    let mut control = ControlServer::bind(&sock_path).map_err(|source| CliError::ControlBind {
        path: sock_path.clone(),
        source,
    })?;
    let serving = tokio::spawn(control.serve(service.clone()));
    let ticker = tokio::spawn(tick(service.clone()));
    tracing::info!(
        state = service.hello().state.state.as_str(),
        "veil service ready"
    );
    if service.0.state_dir.join(AUTOCONNECT_FILE).exists() {
        if let Err(e) = service.connect().await {
            tracing::warn!("could not connect again: {e}");
        }
    }
    tokio::select! {
        () = stop => {}
        () = service.0.down.notified() => tracing::info!("stop requested on the control socket"),
    }
    // Stopping the service is not the user's "disconnect": the marker stays.
    if let Err(e) = service.stop_node(false).await {
        tracing::warn!("stopping the node: {e}");
    }
    ticker.abort();
    serving.abort();
    drop(control);
    tracing::info!("veil service stopped");
    Ok(())
}

/// The service: a cheap handle shared by the control socket's connections.
#[derive(Clone)]
pub struct Service(Arc<Shared>);

struct Shared {
    state_dir: PathBuf,
    config: Option<PathBuf>,
    cert: Option<PathBuf>,
    events: broadcast::Sender<Event>,
    logs: Arc<LogRing>,
    /// Serializes join, leave, connect and disconnect.
    ops: tokio::sync::Mutex<()>,
    inner: Mutex<Inner>,
    /// Signalled by `down`.
    down: Notify,
}

struct Inner {
    info: StateInfo,
    node: Option<Slot>,
    generation: u64,
    /// The running node is being stopped on request (its end is no failure).
    stopping: bool,
}

/// The running node.
struct Slot {
    generation: u64,
    handle: NodeHandle,
    done: watch::Receiver<bool>,
}

fn refuse(code: ErrorCode, message: impl Into<String>) -> RemoteError {
    RemoteError::new(code, message.into())
}

impl Service {
    /// A disconnected service for `args`' state dir (`NeedsToken` without a kept token).
    pub fn new(
        args: &ServiceRunArgs,
        events: broadcast::Sender<Event>,
        logs: Arc<LogRing>,
    ) -> Self {
        let shared = Shared {
            state_dir: args.state_dir.clone(),
            config: args.config.clone(),
            cert: args.cert.clone(),
            events,
            logs,
            ops: tokio::sync::Mutex::new(()),
            inner: Mutex::new(Inner {
                info: StateInfo {
                    state: ServiceState::NeedsToken,
                    error: None,
                    overlay_ipv4: None,
                    relays: Vec::new(),
                },
                node: None,
                generation: 0,
                stopping: false,
            }),
            down: Notify::new(),
        };
        let service = Service(Arc::new(shared));
        match service.kept_token() {
            Ok(Some(t)) => service.set_state(|i| {
                i.state = ServiceState::Disconnected;
                i.relays = relays_of(&t);
            }),
            Ok(None) => {}
            Err(e) => service.set_state(|i| i.error = Some(e.message)),
        }
        service
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind: keep serving.
        self.0.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the state and tells subscribers when it changed.
    fn set_state(&self, change: impl FnOnce(&mut StateInfo)) {
        let mut inner = self.inner();
        let before = inner.info.clone();
        change(&mut inner.info);
        if inner.info != before {
            let info = inner.info.clone();
            drop(inner);
            tracing::debug!(state = info.state.as_str(), "service state");
            let _ = self.0.events.send(Event::State(info));
        }
    }

    /// The answer to `hello`.
    pub fn hello(&self) -> Hello {
        Hello {
            protocol: veil_ipc::PROTOCOL_VERSION,
            min_protocol: veil_ipc::MIN_PROTOCOL_VERSION,
            version: env!("CARGO_PKG_VERSION").into(),
            mode: "service".into(),
            state: self.inner().info.clone(),
        }
    }

    fn node(&self) -> Option<NodeHandle> {
        self.inner().node.as_ref().map(|s| s.handle.clone())
    }

    fn token_path(&self) -> PathBuf {
        self.0.state_dir.join(TOKEN_FILE)
    }

    /// The token kept by `join`, if any.
    fn kept_token(&self) -> Result<Option<JoinToken>, RemoteError> {
        let path = self.token_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(refuse(
                    ErrorCode::Failed,
                    format!("cannot read {}: {e}", path.display()),
                ))
            }
        };
        JoinToken::decode(text.trim()).map(Some).map_err(|e| {
            refuse(
                ErrorCode::BadToken,
                format!(
                    "the kept join token {} is damaged ({e}): join again",
                    path.display()
                ),
            )
        })
    }

    /// `join`: checks the token and keeps it.
    pub async fn join(&self, text: &str) -> Result<Hello, RemoteError> {
        let text = text.trim();
        let token = JoinToken::decode(text).map_err(|e| {
            refuse(
                ErrorCode::BadToken,
                format!(
                    "this is not a valid join token: {e} (paste the whole token `veil network create` printed, or the contents of its join.token)"
                ),
            )
        })?;
        let _op = self.0.ops.lock().await;
        let encoded = token.encode();
        if self.node().is_some() {
            let same = self
                .kept_token()
                .ok()
                .flatten()
                .is_some_and(|t| t.encode() == encoded);
            if same {
                return Ok(self.hello());
            }
            return Err(refuse(
                ErrorCode::Busy,
                "the service is connected to a network: disconnect first, then join the other one",
            ));
        }
        state::replace_private(&self.0.state_dir, TOKEN_FILE, &encoded).map_err(|e| {
            refuse(
                ErrorCode::Failed,
                format!(
                    "cannot keep the token in {}: {e}",
                    self.0.state_dir.display()
                ),
            )
        })?;
        // A rotated token or address of the previous network must not carry over.
        let _ = std::fs::remove_file(self.0.state_dir.join(state::JOIN_TOKEN_FILE));
        tracing::info!(relays = token.relays.len(), "join token kept");
        self.set_state(|i| {
            i.state = ServiceState::Disconnected;
            i.error = None;
            i.relays = relays_of(&token);
        });
        Ok(self.hello())
    }

    /// `leave`: stops the node and forgets the token, the rotated token and the address.
    pub async fn leave(&self) -> Result<Hello, RemoteError> {
        let _op = self.0.ops.lock().await;
        self.stop_node(true).await?;
        for file in [
            TOKEN_FILE,
            state::JOIN_TOKEN_FILE,
            state::IPV4_FILE,
            AUTOCONNECT_FILE,
        ] {
            let _ = std::fs::remove_file(self.0.state_dir.join(file));
        }
        tracing::info!("left the network; the join token is forgotten");
        self.set_state(|i| {
            i.state = ServiceState::NeedsToken;
            i.error = None;
            i.overlay_ipv4 = None;
            i.relays.clear();
        });
        Ok(self.hello())
    }

    /// `connect`: starts the node with the kept token (nothing when it runs).
    pub async fn connect(&self) -> Result<Hello, RemoteError> {
        let _op = self.0.ops.lock().await;
        if self.node().is_some() {
            return Ok(self.hello());
        }
        let token = self.kept_token()?.ok_or_else(|| {
            refuse(
                ErrorCode::NoToken,
                "no join token yet: join first (the app asks for it; or `veil service join --token-file FILE`)",
            )
        })?;
        self.set_state(|i| {
            i.state = ServiceState::Connecting;
            i.error = None;
        });
        match self.start_node(token).await {
            Ok(()) => {
                if let Err(e) = std::fs::write(self.0.state_dir.join(AUTOCONNECT_FILE), b"") {
                    tracing::warn!("could not remember to connect at start: {e}");
                }
                Ok(self.hello())
            }
            Err(e) => {
                let message = e.to_string();
                tracing::warn!("could not connect: {message}");
                self.set_state(|i| {
                    i.state = ServiceState::Disconnected;
                    i.error = Some(message.clone());
                });
                Err(refuse(ErrorCode::Failed, message))
            }
        }
    }

    async fn start_node(&self, token: JoinToken) -> Result<(), CliError> {
        let token = up::adopted_or(
            token,
            &self.0.state_dir.join(state::JOIN_TOKEN_FILE),
            JoinToken::decode,
            JoinToken::supersedes,
            "join",
        );
        let settings =
            up::settings_from(Source::flags(Layer::default()), self.0.config.as_deref())?;
        let (dir, cert) = (self.0.state_dir.clone(), self.0.cert.clone());
        // Resolving relays and running nft block: off the loop that serves the socket.
        let Prepared { node, guards } = tokio::task::spawn_blocking(move || {
            up::prepare(token, &settings, &dir, cert.as_deref())
        })
        .await
        .map_err(|e| CliError::Runtime(std::io::Error::other(e.to_string())))??;
        let (runner, metrics) = match up::start(node).await {
            Ok(r) => r,
            Err(e) => {
                let _ = tokio::task::spawn_blocking(move || guards.release()).await;
                return Err(e);
            }
        };
        let handle = runner.handle();
        let node_events = handle.subscribe();
        let (done_tx, done) = watch::channel(false);
        let generation = {
            let mut inner = self.inner();
            inner.generation += 1;
            inner.stopping = false;
            inner.node = Some(Slot {
                generation: inner.generation,
                handle: handle.clone(),
                done: done.clone(),
            });
            inner.generation
        };
        let me = self.clone();
        tokio::spawn(async move {
            let result = runner.run().await;
            if let Some(m) = metrics {
                m.abort();
            }
            let _ = tokio::task::spawn_blocking(move || guards.release()).await;
            me.node_ended(generation, result.err().map(|e| e.to_string()));
            let _ = done_tx.send(true);
        });
        tokio::spawn(self.clone().forward(generation, node_events, done));
        Ok(())
    }

    /// The engine's events, as the service's, until the node of `generation` ends.
    async fn forward(
        self,
        generation: u64,
        mut events: broadcast::Receiver<NodeEvent>,
        mut done: watch::Receiver<bool>,
    ) {
        loop {
            let event = tokio::select! {
                e = events.recv() => match e {
                    Ok(e) => e,
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = done.changed() => return,
            };
            let current = || self.inner().generation == generation;
            let out = match event {
                NodeEvent::RelayUp(_) => {
                    if current() {
                        self.set_state(|i| {
                            if i.state == ServiceState::Connecting {
                                i.state = ServiceState::Connected;
                                i.error = None;
                            }
                        });
                    }
                    Event::RelayUp
                }
                NodeEvent::RelayDown(_) => {
                    if current() {
                        self.set_state(|i| {
                            if i.state == ServiceState::Connected {
                                i.state = ServiceState::Connecting;
                            }
                        });
                    }
                    Event::RelayDown
                }
                NodeEvent::Ipv4Assigned(addr) => {
                    if current() {
                        self.set_state(|i| i.overlay_ipv4 = Some(addr));
                    }
                    continue;
                }
                NodeEvent::PeerUp { id } => Event::PeerUp { id: id.to_string() },
                NodeEvent::PeerDown { id } => Event::PeerDown { id: id.to_string() },
                NodeEvent::PeerPath { id, direct } => Event::PeerPath {
                    id: id.to_string(),
                    path: if direct.is_some() {
                        "direct"
                    } else {
                        "relayed"
                    }
                    .into(),
                },
                _ => continue,
            };
            let _ = self.0.events.send(out);
        }
    }

    /// The node of `generation` stopped (on request, or by itself with `error`).
    fn node_ended(&self, generation: u64, error: Option<String>) {
        let mut inner = self.inner();
        if inner.node.as_ref().map(|s| s.generation) != Some(generation) {
            return;
        }
        inner.node = None;
        let requested = std::mem::take(&mut inner.stopping);
        drop(inner);
        let error = match (requested, error) {
            (true, _) => None,
            (false, Some(e)) => Some(e),
            (false, None) => Some("the node stopped".into()),
        };
        if let Some(e) = &error {
            tracing::warn!("the node stopped: {e}");
        }
        let has_token = self.token_path().exists();
        self.set_state(|i| {
            i.state = if has_token {
                ServiceState::Disconnected
            } else {
                ServiceState::NeedsToken
            };
            i.error = error;
            i.overlay_ipv4 = None;
        });
    }

    /// `disconnect`.
    pub async fn disconnect(&self) -> Result<Hello, RemoteError> {
        let _op = self.0.ops.lock().await;
        self.stop_node(true).await?;
        Ok(self.hello())
    }

    /// Stops the node if one runs and waits for it; `forget` removes the autoconnect marker
    /// (a user's disconnect, not the service stopping).
    async fn stop_node(&self, forget: bool) -> Result<(), RemoteError> {
        if forget {
            let _ = std::fs::remove_file(self.0.state_dir.join(AUTOCONNECT_FILE));
        }
        let slot = {
            let mut inner = self.inner();
            let Some(slot) = inner
                .node
                .as_ref()
                .map(|slot| (slot.handle.clone(), slot.done.clone()))
            else {
                return Ok(());
            };
            inner.stopping = true;
            slot
        };
        self.set_state(|i| i.state = ServiceState::Disconnecting);
        let (handle, mut done) = slot;
        handle.shutdown().await;
        let stopped = tokio::time::timeout(STOP_WAIT, done.wait_for(|d| *d)).await;
        if stopped.is_err() {
            return Err(refuse(
                ErrorCode::Failed,
                format!(
                    "the node did not stop within {} s; stop the service (`systemctl restart veil`)",
                    STOP_WAIT.as_secs()
                ),
            ));
        }
        tracing::info!("disconnected");
        Ok(())
    }

    fn not_connected() -> RemoteError {
        refuse(
            ErrorCode::NotConnected,
            "the veil service is not connected: connect it (the app's switch, or `veil service connect`)",
        )
    }

    async fn counters(&self) -> Result<Traffic, RemoteError> {
        let node = self.node().ok_or_else(Self::not_connected)?;
        let status = node.status().await.ok_or_else(Self::not_connected)?;
        Ok(Traffic::from_status(&status, veil_ipc::unix_ms()))
    }

    /// The stats event, while a node runs.
    async fn stats(&self) -> Option<Stats> {
        let node = self.node()?;
        let status = node.status().await?;
        let peers = node.peers().await?;
        if status.overlay_ipv4.is_some() {
            self.set_state(|i| i.overlay_ipv4 = status.overlay_ipv4);
        }
        Some(Stats {
            traffic: Traffic::from_status(&status, veil_ipc::unix_ms()),
            relay_connected: status.relay_connected,
            relay_rtt_ms: status.relay_rtt_ms,
            peers,
        })
    }
}

/// Once a second: the stats event, while a node runs and someone listens.
async fn tick(service: Service) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if service.0.events.receiver_count() == 0 {
            continue;
        }
        if let Some(stats) = service.stats().await {
            let _ = service.0.events.send(Event::Stats(stats));
        }
    }
}

fn relays_of(token: &JoinToken) -> Vec<String> {
    token.relays.iter().map(|r| r.addr.clone()).collect()
}

fn to_value<T: serde::Serialize>(v: &T) -> Result<serde_json::Value, RemoteError> {
    serde_json::to_value(v).map_err(|e| refuse(ErrorCode::Failed, format!("internal error: {e}")))
}

impl ControlHandler for Service {
    fn handle(&self, cmd: ControlCommand) -> HandlerFuture<'_> {
        Box::pin(async move {
            if cmd == ControlCommand::Down {
                // The answer is sent already; `serve` stops the node and removes the socket.
                self.0.down.notify_one();
                return Ok(serde_json::Value::String("stopping".into()));
            }
            match self.node() {
                Some(node) => node.handle(cmd).await,
                None => Err(Self::not_connected().message),
            }
        })
    }

    fn handle_v2(&self, cmd: Command) -> ServiceFuture<'_> {
        Box::pin(async move {
            match cmd {
                Command::Hello => to_value(&self.hello()),
                Command::Join { token } => to_value(&self.join(&token).await?),
                Command::Leave => to_value(&self.leave().await?),
                Command::Connect => to_value(&self.connect().await?),
                Command::Disconnect => to_value(&self.disconnect().await?),
                Command::Counters => to_value(&self.counters().await?),
                Command::Logs { lines } => {
                    if !(1..=veil_ipc::MAX_LOG_LINES).contains(&lines) {
                        return Err(refuse(
                            ErrorCode::BadRequest,
                            format!(
                                "logs: `lines` must be 1 to {}, got {lines}",
                                veil_ipc::MAX_LOG_LINES
                            ),
                        ));
                    }
                    to_value(&self.0.logs.tail(lines))
                }
                other => Err(veil_io::control::not_service(&other)),
            }
        })
    }

    fn subscribe(&self) -> SubscribeFuture<'_> {
        Box::pin(async move {
            // Subscribe before reading the state, so that no change falls in between.
            let events = self.0.events.subscribe();
            let hello = self.hello();
            Ok(EventFeed {
                hello: to_value(&hello)?,
                first: vec![Event::State(hello.state)],
                events,
            })
        })
    }
}

// ---- the CLI's side ------------------------------------------------------------------------

fn socket_of(t: &TargetArgs) -> PathBuf {
    t.socket
        .clone()
        .unwrap_or_else(|| veil_io::control::socket_path(&t.state_dir, NODE_SOCKET))
}

/// A client of the service at `t`, with the CLI's message when none runs.
fn client(t: &TargetArgs) -> Result<veil_ipc::Client, CliError> {
    let path = socket_of(t);
    veil_ipc::Client::connect(&path).map_err(|e| match e {
        veil_ipc::ClientError::NotRunning { .. } => CliError::NotRunning(format!(
            "the veil service is not running (no socket at {}): install it with `sudo veil service install`, or run `veil service run`",
            path.display()
        )),
        other => CliError::Ipc(other),
    })
}

fn describe(h: &Hello) -> String {
    let mut text = match h.state.state {
        ServiceState::NeedsToken => "no network joined yet".to_owned(),
        ServiceState::Connected => match h.state.overlay_ipv4 {
            Some(a) => format!("connected as {a}"),
            None => "connected".into(),
        },
        s => s.as_str().replace('_', " "),
    };
    if !h.state.relays.is_empty() {
        text.push_str(&format!(" (relay {})", h.state.relays.join(", ")));
    }
    if let Some(e) = &h.state.error {
        text.push_str(&format!("; last error: {e}"));
    }
    text
}

/// `veil service join`.
pub fn join(args: &ServiceJoinArgs) -> Result<(), CliError> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let text = match (&args.token, &args.token_file) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => up::read_token_file(f)?,
        (None, None) => match (env("VEIL_TOKEN"), env("VEIL_TOKEN_FILE")) {
            (Some(t), _) => t,
            (None, Some(f)) => up::read_token_file(Path::new(&f))?,
            (None, None) => return Err(CliError::NoToken),
        },
    };
    // Checked here too, so that a typo is named before the service is asked.
    JoinToken::decode(text.trim())?;
    let mut c = client(&args.target)?;
    let mut h = c.join(&text).map_err(CliError::Ipc)?;
    if args.connect {
        h = c.change(Command::Connect).map_err(CliError::Ipc)?;
    }
    eprintln!("veil service: {}", describe(&h));
    Ok(())
}

/// `veil service connect`, `disconnect` and `leave`.
pub fn change(t: &TargetArgs, cmd: Command) -> Result<(), CliError> {
    let mut c = client(t)?;
    c.set_timeout(Some(Duration::from_secs(60)))
        .map_err(CliError::Ipc)?;
    let h = c.change(cmd).map_err(CliError::Ipc)?;
    eprintln!("veil service: {}", describe(&h));
    Ok(())
}

/// `veil service status`: the system service, then what the socket says.
pub fn status(args: &QueryArgs) -> Result<(), CliError> {
    let manager = manager_status();
    let hello = client(&args.target).and_then(|mut c| c.hello().map_err(CliError::Ipc));
    if args.json {
        let v = serde_json::json!({
            "installed": manager.installed,
            "active": manager.active,
            "hello": hello.as_ref().ok(),
            "error": hello.as_ref().err().map(ToString::to_string),
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string())
        );
        return Ok(());
    }
    println!("system service  {}", manager.describe());
    match hello {
        Ok(h) => {
            println!("state           {}", describe(&h));
            println!("version         {} (protocol {})", h.version, h.protocol);
            Ok(())
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn service(dir: &Path) -> Service {
        let (tx, _) = broadcast::channel(64);
        let logs = LogRing::new(16, tx.clone());
        Service::new(
            &ServiceRunArgs {
                state_dir: dir.to_owned(),
                config: None,
                cert: None,
            },
            tx,
            logs,
        )
    }

    fn token() -> String {
        JoinToken {
            secret: [7; 32],
            relays: vec![veil_proto::token::RelayInfo {
                addr: "198.18.0.1:7000".into(),
                public_key: [9; 32],
                tcp_port: 443,
            }],
            ca: None,
            shared: false,
            names: None,
            previous: None,
        }
        .encode()
    }

    #[tokio::test]
    async fn join_validates_and_keeps_the_token_and_leave_forgets_it() {
        let dir = std::env::temp_dir().join(format!("veil-svc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let s = service(&dir);
        let mut events = s.0.events.subscribe();
        assert_eq!(s.hello().state.state, ServiceState::NeedsToken);
        let e = s.connect().await.unwrap_err();
        assert_eq!(e.code, ErrorCode::NoToken);
        let e = s.join("veil1garbage").await.unwrap_err();
        assert_eq!(e.code, ErrorCode::BadToken);
        assert!(
            e.message.contains("not a valid join token"),
            "{}",
            e.message
        );
        let h = s.join(&format!("  {}\n", token())).await.unwrap();
        assert_eq!(h.state.state, ServiceState::Disconnected);
        assert_eq!(h.state.relays, ["198.18.0.1:7000"]);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join(TOKEN_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(
            matches!(events.try_recv().unwrap(), Event::State(i) if i.state == ServiceState::Disconnected)
        );
        // A new service on the same dir finds the token.
        assert_eq!(
            service(&dir).hello().state.state,
            ServiceState::Disconnected
        );
        let e = s.counters().await.unwrap_err();
        assert_eq!(e.code, ErrorCode::NotConnected);
        assert!(s.handle(ControlCommand::Status).await.is_err());
        let h = s.leave().await.unwrap();
        assert_eq!(h.state.state, ServiceState::NeedsToken);
        assert!(!dir.join(TOKEN_FILE).exists());
        let logs = s.handle_v2(Command::Logs { lines: 0 }).await.unwrap_err();
        assert!(logs.message.contains("`lines` must be 1 to"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
