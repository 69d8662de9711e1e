//! `veil relay`: runs a relay in the foreground (`veil_io::RelayRunner`) with its control
//! socket `relay.sock` in the state directory.

use crate::addr::{check_host_port, resolve};
use crate::args::RelayRunArgs;
use crate::error::CliError;
use crate::up::read_token_file;
use crate::{logging, runtime, shutdown_signal};
use std::path::PathBuf;
use veil_io::cluster::NatsSecurity;
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
    let security = nats_security(args, |k| std::env::var(k).ok())?;
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
                &security,
                &network,
                std::time::Duration::from_secs(args.lease_secs),
            )
            .await
            .map_err(|e| CliError::Cluster(format!("--nats: {e}")))?;
            tracing::info!(nats = %urls, %advertise, security = ?security, "sharing the rendezvous through NATS");
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

/// The `--nats-*` options as the NATS client's settings, secrets read from their files or
/// from `env` (VEIL_RELAY_NATS_PASSWORD, VEIL_RELAY_NATS_TOKEN). Each mistake names the
/// option and the fix.
fn nats_security(
    args: &RelayRunArgs,
    env: impl Fn(&str) -> Option<String>,
) -> Result<NatsSecurity, CliError> {
    let given = [
        ("--nats-user", args.nats_user.is_some()),
        ("--nats-password-file", args.nats_password_file.is_some()),
        ("--nats-token-file", args.nats_token_file.is_some()),
        ("--nats-nkey", args.nats_nkey.is_some()),
        ("--nats-creds", args.nats_creds.is_some()),
        ("--nats-tls-ca", args.nats_tls_ca.is_some()),
        ("--nats-tls-cert", args.nats_tls_cert.is_some()),
        ("--nats-tls-key", args.nats_tls_key.is_some()),
        ("--nats-tls", args.nats_tls),
    ];
    if args.nats.is_none() {
        if let Some((name, _)) = given.iter().find(|(_, set)| *set) {
            return Err(CliError::Cluster(format!(
                "{name} is only used with --nats (how this relay connects to the NATS cluster)"
            )));
        }
        return Ok(NatsSecurity::default());
    }
    let secret =
        |flag: &str, file: &Option<PathBuf>, var: &str| -> Result<Option<String>, CliError> {
            let from_env = env(var).filter(|v| !v.is_empty());
            match (file, from_env) {
                (Some(_), Some(_)) => Err(CliError::Cluster(format!(
                    "{flag} and {var} both given: keep one"
                ))),
                (Some(path), None) => {
                    let text = std::fs::read_to_string(path).map_err(|e| {
                        CliError::Cluster(format!("{flag} {}: {e}", path.display()))
                    })?;
                    let text = text.trim();
                    if text.is_empty() || text.contains('\n') {
                        return Err(CliError::Cluster(format!(
                            "{flag} {}: the file must hold the secret alone, on one line",
                            path.display()
                        )));
                    }
                    Ok(Some(text.to_owned()))
                }
                (None, v) => Ok(v),
            }
        };
    let password = secret(
        "--nats-password-file",
        &args.nats_password_file,
        "VEIL_RELAY_NATS_PASSWORD",
    )?;
    let user = match (&args.nats_user, password) {
        (Some(u), Some(p)) => Some((u.clone(), p)),
        (Some(_), None) => {
            return Err(CliError::Cluster(
                "--nats-user needs its password: --nats-password-file FILE or the environment variable VEIL_RELAY_NATS_PASSWORD".into(),
            ))
        }
        (None, Some(_)) => {
            return Err(CliError::Cluster(
                "a NATS password (--nats-password-file or VEIL_RELAY_NATS_PASSWORD) needs --nats-user NAME".into(),
            ))
        }
        (None, None) => None,
    };
    let token = secret(
        "--nats-token-file",
        &args.nats_token_file,
        "VEIL_RELAY_NATS_TOKEN",
    )?;
    let nkey_seed = secret("--nats-nkey", &args.nats_nkey, "VEIL_RELAY_NATS_NKEY_SEED")?;
    if let Some(seed) = &nkey_seed {
        if !(seed.starts_with("SU") && seed.len() == 58) {
            return Err(CliError::Cluster(
                "--nats-nkey (or VEIL_RELAY_NATS_NKEY_SEED): give a user NKey's seed (58 characters starting with SU, as `nk -gen user` writes it), not its public key".into(),
            ));
        }
    }
    let methods = [
        user.is_some(),
        token.is_some(),
        nkey_seed.is_some(),
        args.nats_creds.is_some(),
    ];
    if methods.iter().filter(|m| **m).count() > 1 {
        return Err(CliError::Cluster(
            "NATS takes one way of authenticating: give one of --nats-user (with its password), --nats-token-file (or VEIL_RELAY_NATS_TOKEN), --nats-nkey and --nats-creds".into(),
        ));
    }
    let tls_client = match (&args.nats_tls_cert, &args.nats_tls_key) {
        (Some(c), Some(k)) => Some((c.clone(), k.clone())),
        (None, None) => None,
        _ => {
            return Err(CliError::Cluster(
                "--nats-tls-cert and --nats-tls-key go together: the client certificate and its private key".into(),
            ))
        }
    };
    for (flag, file) in [
        ("--nats-creds", &args.nats_creds),
        ("--nats-tls-ca", &args.nats_tls_ca),
        ("--nats-tls-cert", &args.nats_tls_cert),
        ("--nats-tls-key", &args.nats_tls_key),
    ] {
        if let Some(path) = file {
            std::fs::File::open(path)
                .map_err(|e| CliError::Cluster(format!("{flag} {}: {e}", path.display())))?;
        }
    }
    let tls_url = args
        .nats
        .as_deref()
        .is_some_and(|u| u.split(',').any(|u| u.trim().starts_with("tls://")));
    Ok(NatsSecurity {
        user,
        token,
        nkey_seed,
        creds: args.nats_creds.clone(),
        tls_ca: args.nats_tls_ca.clone(),
        tls_client,
        tls_required: args.nats_tls || tls_url,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::args::{Cli, Cmd};
    use clap::Parser;

    fn run_args(extra: &[&str]) -> RelayRunArgs {
        let mut argv = vec![
            "veil",
            "relay",
            "--listen",
            "198.18.0.1:7000",
            "--token-file",
            "relay-1.token",
        ];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).unwrap().cmd {
            Cmd::Relay(r) => r.run,
            _ => unreachable!(),
        }
    }

    fn security(extra: &[&str], env: &[(&str, &str)]) -> Result<NatsSecurity, String> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        nats_security(&run_args(extra), |k| {
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
        .map_err(|e| e.to_string())
    }

    fn file(name: &str, text: &str) -> String {
        let dir = std::env::temp_dir().join(format!("veil-nats-sec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    }

    const NATS: [&str; 2] = ["--nats", "nats://127.0.0.1:4222"];
    const SEED: &str = "SUAGMJH5XLGZKQQWAWKRZJIGMOU4HPFUYLXJMXOO5NLFEO2OOQJ5LPRDPM";

    #[test]
    fn nats_options_need_nats_and_name_themselves() {
        let e = security(&["--nats-user", "r1"], &[]).unwrap_err();
        assert!(e.contains("--nats-user is only used with --nats"), "{e}");
        let e = security(&["--nats-tls"], &[]).unwrap_err();
        assert!(e.contains("--nats-tls is only used with --nats"), "{e}");
        let none = security(&[], &[("VEIL_RELAY_NATS_PASSWORD", "x")]).unwrap();
        assert!(none.user.is_none() && !none.tls());
    }

    #[test]
    fn a_user_needs_its_password_from_one_place() {
        let user = [NATS[0], NATS[1], "--nats-user", "r1"];
        let e = security(&user, &[]).unwrap_err();
        assert!(e.contains("--nats-user needs its password"), "{e}");
        let s = security(&user, &[("VEIL_RELAY_NATS_PASSWORD", "pw")]).unwrap();
        assert_eq!(s.user, Some(("r1".into(), "pw".into())));
        let pw = file("pw", "from-file\n");
        let mut with_file = user.to_vec();
        with_file.extend(["--nats-password-file", &pw]);
        let s = security(&with_file, &[]).unwrap();
        assert_eq!(s.user, Some(("r1".into(), "from-file".into())));
        let e = security(&with_file, &[("VEIL_RELAY_NATS_PASSWORD", "pw")]).unwrap_err();
        assert!(e.contains("both given"), "{e}");
        let two = file("two", "a\nb\n");
        let e = security(
            &[
                NATS[0],
                NATS[1],
                "--nats-user",
                "r1",
                "--nats-password-file",
                &two,
            ],
            &[],
        )
        .unwrap_err();
        assert!(e.contains("on one line"), "{e}");
        let e = security(&NATS, &[("VEIL_RELAY_NATS_PASSWORD", "pw")]).unwrap_err();
        assert!(e.contains("needs --nats-user"), "{e}");
        // No secret in what is logged or shown.
        let s = security(&user, &[("VEIL_RELAY_NATS_PASSWORD", "hunter2")]).unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(s.describe(), "user r1, TLS if the server asks");
    }

    #[test]
    fn one_way_of_authenticating_and_a_seed_not_a_public_key() {
        let seed = file("seed", &format!("{SEED}\n"));
        let s = security(&[NATS[0], NATS[1], "--nats-nkey", &seed], &[]).unwrap();
        assert_eq!(s.nkey_seed.as_deref(), Some(SEED));
        let public = file(
            "public",
            "UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4\n",
        );
        let e = security(&[NATS[0], NATS[1], "--nats-nkey", &public], &[]).unwrap_err();
        assert!(e.contains("NKey's seed"), "{e}");
        let e = security(
            &[NATS[0], NATS[1], "--nats-nkey", &seed],
            &[("VEIL_RELAY_NATS_TOKEN", "t")],
        )
        .unwrap_err();
        assert!(e.contains("one way of authenticating"), "{e}");
        let t = security(&NATS, &[("VEIL_RELAY_NATS_TOKEN", "t")]).unwrap();
        assert_eq!(t.token.as_deref(), Some("t"));
        let creds = file("relay.creds", "-----BEGIN NATS USER JWT-----\n");
        let e = security(
            &[NATS[0], NATS[1], "--nats-creds", &creds],
            &[("VEIL_RELAY_NATS_TOKEN", "t")],
        )
        .unwrap_err();
        assert!(e.contains("--nats-creds"), "{e}");
        let c = security(&[NATS[0], NATS[1], "--nats-creds", &creds], &[]).unwrap();
        assert_eq!(c.describe(), "credentials file, TLS if the server asks");
    }

    #[test]
    fn tls_files_go_together_and_imply_tls() {
        let pem = file("c.pem", "-----BEGIN CERTIFICATE-----\n");
        let e = security(&[NATS[0], NATS[1], "--nats-tls-cert", &pem], &[]).unwrap_err();
        assert!(e.contains("go together"), "{e}");
        let e = security(
            &[NATS[0], NATS[1], "--nats-tls-ca", "/nonexistent/ca.pem"],
            &[],
        )
        .unwrap_err();
        assert!(e.starts_with("--nats-tls-ca /nonexistent/ca.pem:"), "{e}");
        let s = security(&[NATS[0], NATS[1], "--nats-tls-ca", &pem], &[]).unwrap();
        assert!(s.tls());
        let s = security(
            &["--nats", "nats://10.0.0.1:4222, tls://10.0.0.2:4222"],
            &[],
        )
        .unwrap();
        assert!(s.tls_required, "a tls:// URL requires TLS");
        assert!(!security(&NATS, &[]).unwrap().tls());
    }
}
