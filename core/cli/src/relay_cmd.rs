//! `veil relay`: runs a relay in the foreground (`veil_io::RelayRunner`) with its control
//! socket `relay.sock` in the state directory.

use crate::addr::{check_host_port, resolve};
use crate::args::RelayRunArgs;
use crate::error::CliError;
use crate::up::read_token_file;
use crate::{logging, runtime, shutdown_signal};
use veil_io::control::{socket_path, RELAY_SOCKET};
use veil_io::{state, ControlServer, DefaultSocketFactory, RelayRunner};
use veil_proto::{RelayConfig, RelayToken};

/// Runs the relay until `SIGINT`/`SIGTERM` or a `down` request on its socket.
pub fn run(args: &RelayRunArgs) -> Result<(), CliError> {
    let (Some(listen), Some(token_file)) = (&args.listen, &args.token_file) else {
        return Err(CliError::Usage(
            "veil relay needs --listen HOST:PORT and --token-file FILE",
        ));
    };
    check_host_port("--listen", listen)?;
    let tcp_listen = match args.tcp_listen.as_deref().map(str::trim) {
        Some("off") => None,
        Some(v) => {
            check_host_port("--tcp-listen", v)?;
            Some(v.to_owned())
        }
        None => None,
    };
    let tcp_default = args.tcp_listen.is_none();
    if !(30..=86_400).contains(&args.lease_secs) {
        return Err(CliError::Usage(
            "--lease-secs must be from 30 to 86400: nodes send a keepalive every 25 s by default, so a shorter lease would expire live nodes",
        ));
    }
    let token = RelayToken::decode(&read_token_file(token_file)?)?;
    let token = crate::up::adopted_or(
        token,
        &args.state_dir.join(state::RELAY_TOKEN_FILE),
        RelayToken::decode,
        RelayToken::supersedes,
        "relay",
    );
    logging::init(&logging::env_filter().unwrap_or_else(|| "info".into()));
    state::ensure_dir(&args.state_dir)?;
    let listen = resolve("listen address", listen)?;
    let tcp_listen = match (tcp_listen, tcp_default) {
        (Some(v), _) => Some(resolve("TCP listen address", &v)?),
        (None, true) => Some(std::net::SocketAddr::new(
            listen.ip(),
            veil_proto::stream::DEFAULT_TCP_PORT,
        )),
        (None, false) => None,
    };
    let cluster = match &args.nats {
        None => {
            if args.advertise.is_some() {
                return Err(CliError::Usage(
                    "--advertise is only used with --nats (the address other relays reach this one at)",
                ));
            }
            None
        }
        Some(urls) => {
            let advertise = match &args.advertise {
                Some(a) => {
                    check_host_port("--advertise", a)?;
                    resolve("advertise address", a)?
                }
                None if !listen.ip().is_unspecified() => listen,
                None => {
                    return Err(CliError::Usage(
                        "with --nats and a wildcard --listen, give --advertise HOST:PORT: the address the other relays reach this one at",
                    ))
                }
            };
            if advertise.port() == 0 {
                return Err(CliError::Usage(
                    "--advertise needs the port this relay listens on (not 0)",
                ));
            }
            Some((urls.clone(), advertise))
        }
    };
    runtime()?.block_on(async {
        let signal = shutdown_signal()?;
        let sock_path = socket_path(&args.state_dir, RELAY_SOCKET);
        let mut control =
            ControlServer::bind(&sock_path).map_err(|source| CliError::ControlBind {
                path: sock_path.clone(),
                source,
            })?;
        let cfg = RelayConfig {
            client_timeout: std::time::Duration::from_secs(args.lease_secs),
            ..RelayConfig::default()
        };
        let mut runner = RelayRunner::new(&token, cfg, listen, &DefaultSocketFactory)?;
        runner.set_state_dir(args.state_dir.clone());
        if let Some((urls, advertise)) = &cluster {
            let network = nats_network(&token)?;
            let store = veil_io::cluster::NatsStore::connect(
                urls,
                &network,
                std::time::Duration::from_secs(args.lease_secs),
            )
            .await
            .map_err(|e| CliError::Cluster(format!("--nats: {e}")))?;
            tracing::info!(nats = %urls, %advertise, "sharing the rendezvous through NATS");
            runner.enable_cluster(std::sync::Arc::new(store), *advertise);
        }
        if let Some(addr) = tcp_listen {
            match runner.listen_tcp(addr, &DefaultSocketFactory) {
                Ok(_) => {}
                // The default port needs privileges a relay may not have: without an explicit
                // --tcp-listen, run on UDP alone and say how to get the fallback.
                Err(e) if tcp_default => tracing::warn!(
                    error = %e,
                    "no TCP fallback: could not listen on {addr} (the default); nodes behind networks that block UDP cannot reach this relay. Run as root or with CAP_NET_BIND_SERVICE, pick a port with --tcp-listen HOST:PORT (and `veil network create --relay-tcp-port`), or pass --tcp-listen off to silence this"
                ),
                Err(e) => return Err(e.into()),
            }
        }
        let tcp = runner
            .tcp_local_addr()
            .map_or_else(|| "off".to_owned(), |a| a.to_string());
        tracing::info!(id = %runner.id(), listen = %runner.local_addr(), %tcp, "veil relay running");
        let serve = tokio::spawn(control.serve(runner.handle()));
        let result = tokio::select! {
            r = runner.run() => r.map_err(CliError::from),
            () = signal => Ok(()),
        };
        serve.abort();
        drop(control);
        tracing::info!("veil relay stopped");
        result
    })
}

/// The name of the network's NATS buckets: a hash of the relays' peering key, which only
/// relays hold (so the name tells nobody else which network it is, and every relay of the
/// network derives the same one).
fn nats_network(token: &RelayToken) -> Result<String, CliError> {
    let Some(peering) = token.peering else {
        return Err(CliError::Cluster(
            "--nats: this relay token has no peering key (it predates relay links); create the network again with `veil network create` to share a rendezvous".into(),
        ));
    };
    let h = veil_proto::crypto::keyed_hash(&peering, &[b"veil nats buckets"]);
    Ok(h[..8].iter().map(|b| format!("{b:02x}")).collect())
}
