//! `veil network create`: a fresh network from OS randomness. The join token goes to stdout
//! alone (for scripts); files go to `--out`, readable by their owner only; notes go to stderr.

use crate::addr::check_host_port;
use crate::args::{CreateArgs, RotateArgs};
use crate::error::CliError;
use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
#[cfg(unix)]
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Runs the command.
pub fn create(args: &CreateArgs) -> Result<(), CliError> {
    for relay in &args.relays {
        check_host_port("--relay", relay)?;
    }
    if args.relays.len() > 255 {
        return Err(CliError::HostPort {
            what: "--relay",
            value: format!("({} relays)", args.relays.len()),
            reason: "a network has at most 255 relays",
        });
    }
    let tcp_ports: Vec<u16> = match args.relay_tcp_ports.len() {
        0 => vec![veil_proto::stream::DEFAULT_TCP_PORT; args.relays.len()],
        1 => vec![args.relay_tcp_ports[0]; args.relays.len()],
        n if n == args.relays.len() => args.relay_tcp_ports.clone(),
        _ => return Err(CliError::Usage(
            "give --relay-tcp-port once (for every relay) or once per --relay, in the same order",
        )),
    };
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| CliError::Random(e.to_string()))?;
    let (mut join, mut relay_tokens) = veil_proto::create_network(seed, &args.relays);
    join.shared = args.shared_rendezvous;
    for (relay, port) in join.relays.iter_mut().zip(tcp_ports) {
        relay.tcp_port = port;
    }
    let ca = if args.with_ca {
        let mut ca_seed = [0u8; 32];
        getrandom::getrandom(&mut ca_seed).map_err(|e| CliError::Random(e.to_string()))?;
        let ca = veil_proto::CaKey::from_seed(ca_seed);
        join.ca = Some(ca.public());
        for t in &mut relay_tokens {
            t.ca = Some(ca.public());
        }
        Some(ca)
    } else {
        None
    };

    let file_err = |path: &Path| {
        let path = path.to_owned();
        move |source| CliError::File { path, source }
    };
    private_dir(&args.out).map_err(file_err(&args.out))?;
    let join_path = args.out.join("join.token");
    let relay_paths: Vec<PathBuf> = (1..=relay_tokens.len())
        .map(|n| args.out.join(format!("relay-{n}.token")))
        .collect();
    let ca_path = args.out.join("ca.key");
    for path in std::iter::once(&join_path)
        .chain(&relay_paths)
        .chain(ca.as_ref().map(|_| &ca_path))
    {
        if path.exists() {
            return Err(CliError::Exists { path: path.clone() });
        }
    }
    let join_text = join.encode();
    write_private(&join_path, &join_text)?;
    for (path, token) in relay_paths.iter().zip(&relay_tokens) {
        write_private(path, &token.encode())?;
    }
    if let Some(ca) = &ca {
        write_private(&ca_path, &ca.encode())?;
    }

    println!("{join_text}");
    eprintln!(
        "network created; tokens written to {} ({PRIVATE})",
        args.out.display()
    );
    eprintln!(
        "  join token:  {} (give it to every node: veil up --token-file …)",
        join_path.display()
    );
    for (((path, relay), info), n) in relay_paths
        .iter()
        .zip(&args.relays)
        .zip(&join.relays)
        .zip(1..)
    {
        let tcp = match info.tcp_port {
            0 => " --tcp-listen off".to_owned(),
            veil_proto::stream::DEFAULT_TCP_PORT => String::new(),
            p => format!(" --tcp-listen HOST:{p}"),
        };
        eprintln!(
            "  relay {n}:     {} for {relay} (veil relay --listen …{tcp} --token-file {})",
            path.display(),
            path.display()
        );
    }
    if ca.is_some() {
        eprintln!(
            "  CA key:      {} (move it offline; sign each node: veil cert sign --ca {} --node-key …)",
            ca_path.display(),
            ca_path.display()
        );
        eprintln!("access control is on: nodes need a certificate (veil up --cert FILE) to join");
    }
    eprintln!("keep the join token secret: it admits nodes; relay tokens hold no network secret");
    Ok(())
}

/// `veil network rotate`: the next secret. Reads DIR/join.token and DIR/relay-N.token,
/// writes the rotated ones to --out; relay keys, relays, CA, names and overlay addresses
/// stay. Nodes and relays are handed the new tokens (`veil network adopt`, `veil relay
/// adopt`, or a restart) during the overlap.
pub fn rotate(args: &RotateArgs) -> Result<(), CliError> {
    if !(60..=2_592_000).contains(&args.overlap_secs) {
        return Err(CliError::Usage(
            "--overlap-secs must be from 60 to 2592000 (30 days): long enough to hand every node and relay the new token",
        ));
    }
    let join_path = args.from.join("join.token");
    let join = veil_proto::JoinToken::decode(&crate::up::read_token_file(&join_path)?)?;
    let mut relay_tokens = Vec::new();
    for (n, info) in (1..).zip(&join.relays) {
        let path = args.from.join(format!("relay-{n}.token"));
        let t = veil_proto::RelayToken::decode(&crate::up::read_token_file(&path)?)?;
        if veil_proto::Identity::from_secret(t.private_key).public() != &info.public_key {
            return Err(CliError::Mismatch(format!(
                "{} is not the token of relay {n} ({}) of {}: keep the files of one network together",
                path.display(),
                info.addr,
                join_path.display()
            )));
        }
        relay_tokens.push(t);
    }
    let mut secret = [0u8; 32];
    getrandom::getrandom(&mut secret).map_err(|e| CliError::Random(e.to_string()))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let until = now + args.overlap_secs;
    let next = join.rotated(secret, until);
    let relays: Vec<_> = relay_tokens.iter().map(|t| t.rotated(&next)).collect();

    private_dir(&args.out).map_err(|source| CliError::File {
        path: args.out.clone(),
        source,
    })?;
    let out_join = args.out.join("join.token");
    let out_relays: Vec<PathBuf> = (1..=relays.len())
        .map(|n| args.out.join(format!("relay-{n}.token")))
        .collect();
    for path in std::iter::once(&out_join).chain(&out_relays) {
        if path.exists() {
            return Err(CliError::Exists { path: path.clone() });
        }
    }
    let text = next.encode();
    write_private(&out_join, &text)?;
    for (path, t) in out_relays.iter().zip(&relays) {
        write_private(path, &t.encode())?;
    }
    println!("{text}");
    eprintln!(
        "network secret rotated; new tokens in {} ({PRIVATE}); the old secret works for {} s more (until Unix time {until})",
        args.out.display(),
        args.overlap_secs
    );
    for (n, path) in (1..).zip(&out_relays) {
        eprintln!(
            "  relay {n}: veil relay adopt --token-file {} --state-dir RELAY_DIR",
            path.display()
        );
    }
    eprintln!(
        "  nodes:   veil network adopt --token-file {} --state-dir NODE_DIR (or restart with it)",
        out_join.display()
    );
    eprintln!("overlay addresses do not change; nodes still on the old token are cut off when the overlap ends");
    Ok(())
}

/// Who may read the token files, as the notes say it.
const PRIVATE: &str = if cfg!(windows) {
    "readable by their owner, SYSTEM and Administrators only"
} else {
    "mode 0600"
};

/// Creates `dir` (and parents) if it is missing, private to its owner: mode 0700, or on
/// Windows an access control list of the owner, SYSTEM and Administrators.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(windows)]
    let existed = dir.exists();
    let mut builder = DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    builder.mode(0o700);
    builder.create(dir)?;
    #[cfg(windows)]
    if !existed {
        veil_io::windows::restrict_dir(dir)?;
    }
    Ok(())
}

pub(crate) fn write_private(path: &Path, text: &str) -> Result<(), CliError> {
    let err = |source| CliError::File {
        path: path.to_owned(),
        source,
    };
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut f = options.open(path).map_err(err)?;
    // Still empty: the token is written only once nobody else may read it.
    #[cfg(windows)]
    veil_io::windows::restrict_file(path).map_err(err)?;
    f.write_all(format!("{text}\n").as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)
}
