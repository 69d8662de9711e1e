//! `veil up`: validates everything it can before touching the system, in this order: token,
//! config, state dir (and node key), privileges; then binds the control socket and the UDP
//! socket and hands over to `veil_io::NodeRunner`, which creates the TUN device. The
//! service (`veil service run`) starts its node with the same [`prepare`] and [`start`].

use crate::addr::resolve;
use crate::args::UpArgs;
use crate::config::{Layer, Settings, Source, Threads};
use crate::error::CliError;
use crate::{logging, runtime, shutdown_signal};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use veil_io::control::{socket_path, NODE_SOCKET};
use veil_io::lockdown::{Lockdown, MarkingFactory};
use veil_io::routes::Forwarding;
use veil_io::state::{self, KEY_FILE};
use veil_io::{ControlServer, NodeOptions, NodeRunner, SocketFactory, TunSource};
use veil_proto::{Identity, JoinToken, NodeConfig, DEFAULT_TUN_MTU};

/// Runs the node in the foreground until `veil down`, SIGINT or SIGTERM.
pub fn up(args: &UpArgs) -> Result<(), CliError> {
    let token = adopted_or(
        load_token(args)?,
        &args.state_dir.join(state::JOIN_TOKEN_FILE),
        JoinToken::decode,
        JoinToken::supersedes,
        "join",
    );
    let settings = load_settings(args)?;
    logging::init(&settings.log);
    let Prepared { node, guards } =
        prepare(token, &settings, &args.state_dir, args.cert.as_deref())?;
    let result = runtime().and_then(|rt| rt.block_on(run(node, &args.state_dir)));
    guards.release();
    result
}

/// Everything a node needs to start, checked: what `NodeRunner::new` takes.
pub(crate) struct NodeParts {
    pub token: JoinToken,
    pub identity: Identity,
    pub cfg: NodeConfig,
    pub opts: NodeOptions,
    pub metrics: Option<std::net::SocketAddr>,
    pub factory: Arc<dyn SocketFactory>,
}

/// What a node changed on the host besides its TUN (the kill switch, forwarding for
/// advertised routes); [`Guards::release`] undoes it on an orderly stop.
#[derive(Default)]
pub(crate) struct Guards {
    lockdown: Option<Lockdown>,
    forwarding: Option<Forwarding>,
}

impl Guards {
    /// Removes the forwarding rules, then the kill switch (a crash leaves the switch on).
    pub fn release(self) {
        if let Some(f) = self.forwarding {
            if let Err(e) = f.disable() {
                eprintln!("veil: removing the forwarding rules: {e}");
            }
        }
        if let Some(l) = self.lockdown {
            let table = l.table().to_owned();
            match l.remove() {
                Ok(()) => tracing::info!(table, "kill switch removed"),
                Err(e) => eprintln!("veil: {e}"),
            }
        }
    }
}

/// A node ready to start and what it set up on the host.
pub(crate) struct Prepared {
    pub node: NodeParts,
    pub guards: Guards,
}

/// Validates everything before touching the system, in this order: relays for private
/// mode, state dir (and node key), certificate, privileges, relay addresses; then removes a
/// kill switch a crashed node left and installs this one's, and forwarding. `veil up` and the
/// service share it. On an error nothing it set up stays.
pub(crate) fn prepare(
    token: JoinToken,
    settings: &Settings,
    state_dir: &Path,
    cert: Option<&Path>,
) -> Result<Prepared, CliError> {
    if settings.private == veil_proto::Privacy::TwoHop && token.relays.len() < 2 {
        return Err(CliError::TwoHopNeedsTwoRelays(token.relays.len()));
    }
    state::ensure_dir(state_dir)?;
    let key = state::load_or_create_key(&state_dir.join(KEY_FILE), fresh_key)?;
    let hint = state::read_ipv4_hint(state_dir);
    check_privileges()?;
    let relays = token
        .relays
        .iter()
        .map(|r| Ok((resolve("relay address", &r.addr)?, r.public_key)))
        .collect::<Result<Vec<_>, CliError>>()?;
    // Each relay's TCP listener is on the host of its UDP address.
    let relay_tcp: Vec<_> = relays
        .iter()
        .zip(&token.relays)
        .filter(|(_, info)| info.tcp_port != 0)
        .map(|((addr, _), info)| (*addr, std::net::SocketAddr::new(addr.ip(), info.tcp_port)))
        .collect();
    if settings.relay_transport == veil_io::RelayTransport::Tcp && relay_tcp.is_empty() {
        return Err(CliError::Usage(
            "relay_transport = tcp, but the join token gives no relay a TCP port (the network was created with --relay-tcp-port 0)",
        ));
    }
    // Relays that share a rendezvous: the nearest first (failover then goes to the next
    // nearest). Otherwise, and in two-hop private mode (its guard is the home relay's
    // successor), the token's order: relays that do not share one must see every node.
    let relays =
        if token.shared && relays.len() > 1 && settings.private != veil_proto::Privacy::TwoHop {
            veil_io::link::rank_relays(
                relays,
                &relay_tcp,
                std::time::Duration::from_millis(500),
                &MarkingFactory,
            )
            .0
        } else {
            relays
        };
    let mut cfg = settings.node_config(relays, hint);
    cfg.cert = load_cert(cert, &token, &key)?;
    let opts = NodeOptions {
        tun: TunSource::Create {
            name: Some(settings.tun_name.clone()),
            mtu: DEFAULT_TUN_MTU,
        },
        port: settings.port,
        rotate_every: (settings.port_rotation_secs > 0)
            .then(|| std::time::Duration::from_secs(settings.port_rotation_secs)),
        state_dir: Some(state_dir.to_owned()),
        relay_transport: settings.relay_transport,
        relay_tcp,
        offload: settings.offload,
        crypto_threads: settings.crypto_threads,
        address_changes: veil_io::node::AddressChanges::Watch,
    };
    // A kill switch a crashed node left on this TUN goes first; then ours, before anything
    // is sent. A TUN of that name means a node still runs: its switch is not ours to touch.
    if Path::new("/sys/class/net")
        .join(&settings.tun_name)
        .exists()
    {
        return Err(CliError::TunInUse(settings.tun_name.clone()));
    }
    if Lockdown::remove_leftover(&settings.tun_name)? {
        eprintln!(
            "veil: removed the kill switch a stopped node left on {}",
            settings.tun_name
        );
    }
    let mut guards = Guards::default();
    if settings.lockdown {
        guards.lockdown = Some(Lockdown::install(&settings.tun_name)?);
    }
    // A node that routes for others forwards and masquerades for the overlay.
    if settings.advertise_exit || !settings.advertise_routes.is_empty() {
        let mut ula = [0u8; 16];
        ula[..6].copy_from_slice(&token.keys().ula_prefix());
        match Forwarding::enable(
            &settings.tun_name,
            settings.ipv4_pool,
            std::net::Ipv6Addr::from(ula),
        ) {
            Ok(f) => guards.forwarding = Some(f),
            Err(e) => {
                guards.release();
                return Err(CliError::Forwarding(e));
            }
        }
    }
    Ok(Prepared {
        node: NodeParts {
            token,
            identity: Identity::from_secret(key),
            cfg,
            opts,
            metrics: settings.metrics,
            // Veil's own sockets carry the mark that the kill switch lets out and that keeps
            // them out of the routes through the overlay (others' subnets, an exit).
            factory: Arc::new(MarkingFactory),
        },
        guards,
    })
}

/// A node built (its socket bound) and its metrics listener serving, if configured. Must run
/// inside the runtime.
pub(crate) async fn start(
    parts: NodeParts,
) -> Result<(NodeRunner, Option<tokio::task::JoinHandle<()>>), CliError> {
    let NodeParts {
        token,
        identity,
        cfg,
        opts,
        metrics,
        factory,
    } = parts;
    let id = identity.id();
    let runner = NodeRunner::new(&token, identity, cfg, opts, factory)?;
    let metrics = match metrics {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| CliError::MetricsBind { addr, source })?;
            tracing::info!(%addr, "serving Prometheus metrics at /metrics");
            Some(tokio::spawn(veil_io::metrics::serve(
                listener,
                runner.handle(),
            )))
        }
        None => None,
    };
    tracing::info!(%id, "veil node starting");
    Ok((runner, metrics))
}

async fn run(parts: NodeParts, state_dir: &Path) -> Result<(), CliError> {
    let signal = shutdown_signal()?;
    let sock_path = socket_path(state_dir, NODE_SOCKET);
    let mut control = ControlServer::bind(&sock_path).map_err(|source| CliError::ControlBind {
        path: sock_path.clone(),
        source,
    })?;
    let (runner, metrics) = start(parts).await?;
    let handle = runner.handle();
    let serve = tokio::spawn(control.serve(runner.handle()));
    tracing::info!(state_dir = %state_dir.display(), "state dir");
    let run = runner.run();
    tokio::pin!(run);
    let result = tokio::select! {
        r = &mut run => r.map_err(CliError::from),
        () = signal => {
            // Stop through the loop, so that peers and the relay hear the goodbye; the loop
            // must keep running to answer, hence the separate task.
            tokio::spawn(async move { handle.shutdown().await });
            run.await.map_err(CliError::from)
        }
    };
    serve.abort();
    if let Some(m) = metrics {
        m.abort();
    }
    drop(control);
    tracing::info!("veil node stopped");
    result
}

/// Flags first (`--token`, then `--token-file`), then `VEIL_TOKEN`, then `VEIL_TOKEN_FILE`.
fn load_token(args: &UpArgs) -> Result<JoinToken, CliError> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let text = match (&args.token, &args.token_file) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => read_token_file(f)?,
        (None, None) => match (env("VEIL_TOKEN"), env("VEIL_TOKEN_FILE")) {
            (Some(t), _) => t,
            (None, Some(f)) => read_token_file(&PathBuf::from(f))?,
            (None, None) => return Err(CliError::NoToken),
        },
    };
    Ok(JoinToken::decode(&text)?)
}

/// The token kept in the state directory at `path` by `veil network adopt` or `veil relay
/// adopt`, when it is the rotated successor of the configured one (so a process restarted
/// with its old token file comes up with the new secret); else the configured token.
pub(crate) fn adopted_or<T>(
    configured: T,
    path: &Path,
    decode: impl Fn(&str) -> Result<T, veil_proto::TokenError>,
    supersedes: impl Fn(&T, &T) -> bool,
    what: &str,
) -> T {
    let Ok(text) = std::fs::read_to_string(path) else {
        return configured;
    };
    match decode(&text) {
        Ok(kept) if supersedes(&kept, &configured) => {
            eprintln!(
                "veil: using the rotated {what} token adopted earlier ({})",
                path.display()
            );
            kept
        }
        Ok(_) => configured,
        Err(e) => {
            eprintln!("veil: ignoring {}: {e}", path.display());
            configured
        }
    }
}

/// Reads a token file (either kind), trimmed.
pub fn read_token_file(path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path)
        .map(|t| t.trim().to_owned())
        .map_err(|source| CliError::TokenFile {
            path: path.to_owned(),
            source,
        })
}

/// The node's certificate: required (and checked now, with a clear error) when the token
/// carries a CA, refused when it does not.
fn load_cert(
    cert: Option<&Path>,
    token: &JoinToken,
    key: &[u8; 32],
) -> Result<Option<veil_proto::Certificate>, CliError> {
    match (&token.ca, cert) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(CliError::CertNotNeeded),
        (Some(_), None) => Err(CliError::NeedCert),
        (Some(ca), Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|source| CliError::File {
                path: path.to_owned(),
                source,
            })?;
            let cert = veil_proto::Certificate::decode(&text)?;
            let public = *Identity::from_secret(*key).public();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            cert.verify(ca, &public, now)?;
            Ok(Some(cert))
        }
    }
}

fn load_settings(args: &UpArgs) -> Result<Settings, CliError> {
    let flags = Source::flags(Layer {
        tun_name: args.tun.clone(),
        port: args.port,
        direct_paths: args.no_direct.then_some(false),
        lockdown: args.lockdown.then_some(true),
        advertise_routes: (!args.advertise_routes.is_empty())
            .then(|| args.advertise_routes.clone()),
        advertise_exit: args.advertise_exit.then_some(true),
        exit_node: args.exit_node.clone(),
        private: args.private,
        cover_pps: args.cover,
        private_peers: (!args.private_peer.is_empty()).then(|| args.private_peer.clone()),
        relay_transport: args.relay_transport.clone(),
        offload: args.offload.clone(),
        crypto_threads: args
            .crypto_threads
            .as_ref()
            .map(|v| match v.trim().parse() {
                Ok(n) => Threads::Count(n),
                Err(_) => Threads::Word(v.clone()),
            }),
        cipher: args.cipher.clone(),
        metrics: args.metrics.clone(),
        name: args.name.clone(),
        ..Layer::default()
    });
    settings_from(flags, args.config.as_deref())
}

/// Settings from `flags`, then the `VEIL_*` environment, then the config file.
pub(crate) fn settings_from(flags: Source, config: Option<&Path>) -> Result<Settings, CliError> {
    let mut sources = vec![flags, Source::env(|k| std::env::var(k).ok())?];
    if let Some(path) = config {
        sources.push(Source::file(path)?);
    }
    Ok(Settings::resolve(&sources)?)
}

pub(crate) fn fresh_key() -> std::io::Result<[u8; 32]> {
    let mut key = [0u8; 32];
    getrandom::getrandom(&mut key).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(key)
}

/// Root, or CAP_NET_ADMIN in the effective set.
#[cfg(unix)]
fn check_privileges() -> Result<(), CliError> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if root || has_cap_net_admin() {
        Ok(())
    } else {
        Err(CliError::NotPrivileged)
    }
}

#[cfg(unix)]
fn has_cap_net_admin() -> bool {
    const CAP_NET_ADMIN: u32 = 12;
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_NET_ADMIN) != 0)
}

/// An elevated administrator: creating the Wintun adapter needs one.
#[cfg(windows)]
fn check_privileges() -> Result<(), CliError> {
    if veil_io::windows::is_elevated() {
        Ok(())
    } else {
        Err(CliError::NotPrivileged)
    }
}
