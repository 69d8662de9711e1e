//! `veil network create`: a fresh network from OS randomness. The join token goes to stdout
//! alone (for scripts); files go to `--out`, readable by their owner only; notes go to stderr.

use crate::addr::check_host_port;
use crate::args::CreateArgs;
use crate::error::CliError;
use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
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
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| CliError::Random(e.to_string()))?;
    let (mut join, mut relay_tokens) = veil_proto::create_network(seed, &args.relays);
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
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&args.out)
        .map_err(file_err(&args.out))?;
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
        "network created; tokens written to {} (mode 0600)",
        args.out.display()
    );
    eprintln!(
        "  join token:  {} (give it to every node: veil up --token-file …)",
        join_path.display()
    );
    for ((path, relay), n) in relay_paths.iter().zip(&args.relays).zip(1..) {
        eprintln!(
            "  relay {n}:     {} for {relay} (veil relay --listen … --token-file {})",
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

pub(crate) fn write_private(path: &Path, text: &str) -> Result<(), CliError> {
    let err = |source| CliError::File {
        path: path.to_owned(),
        source,
    };
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    f.write_all(format!("{text}\n").as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)
}
