//! `veil key` and `veil cert sign`: the two halves of admitting a node to a network with a
//! CA. The node prints its public key; the operator signs it offline with the CA key.

use crate::args::{CertRevokeArgs, CertSignArgs, KeyArgs, PolicySignArgs};
use crate::error::CliError;
use veil_io::state::{self, KEY_FILE};
use veil_proto::{CaKey, Identity};

/// Prints the node's public key as 64 hex digits, creating the key if needed.
pub fn key(args: &KeyArgs) -> Result<(), CliError> {
    state::ensure_dir(&args.state_dir)?;
    let secret = state::load_or_create_key(&args.state_dir.join(KEY_FILE), crate::up::fresh_key)?;
    println!("{}", hex(Identity::from_secret(secret).public()));
    Ok(())
}

/// Signs a certificate for `--node-key`.
pub fn sign(args: &CertSignArgs) -> Result<(), CliError> {
    let text = std::fs::read_to_string(&args.ca).map_err(|source| CliError::File {
        path: args.ca.clone(),
        source,
    })?;
    let ca = CaKey::decode(&text)?;
    let node_key =
        parse_key(&args.node_key).ok_or_else(|| CliError::NodeKey(args.node_key.clone()))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let not_after = now.saturating_add(args.days.saturating_mul(86_400));
    let cert = ca.sign(node_key, args.ipv4, &args.tags, not_after)?;
    match &args.out {
        None => println!("{}", cert.encode()),
        Some(path) => {
            std::fs::write(path, format!("{}\n", cert.encode())).map_err(|source| {
                CliError::File {
                    path: path.clone(),
                    source,
                }
            })?;
            eprintln!(
                "certificate for node {} written to {} (valid {} days)",
                veil_proto::keys::node_id(&node_key),
                path.display(),
                args.days
            );
        }
    }
    Ok(())
}

/// Signs a policy.
pub fn policy_sign(args: &PolicySignArgs) -> Result<(), CliError> {
    let text = std::fs::read_to_string(&args.ca).map_err(|source| CliError::File {
        path: args.ca.clone(),
        source,
    })?;
    let ca = CaKey::decode(&text)?;
    let mut rules = Vec::new();
    for r in &args.allow {
        let (a, b) = r
            .split_once(':')
            .filter(|(a, b)| !a.is_empty() && !b.is_empty())
            .ok_or_else(|| CliError::Rule(r.clone()))?;
        rules.push((a.to_string(), b.to_string()));
    }
    let mut revoked = Vec::new();
    for k in &args.revoke {
        revoked.push(parse_key(k).ok_or_else(|| CliError::NodeKey(k.clone()))?);
    }
    let p = ca.sign_policy(args.serial, &rules, &revoked)?;
    if let Some(path) = print_or_write(&p.encode(), args.out.as_ref())? {
        eprintln!(
            "policy {} ({} rules, {} revoked) written to {}",
            args.serial,
            rules.len(),
            revoked.len(),
            path.display()
        );
    }
    Ok(())
}

/// `veil cert revoke`: the policy in force plus the revoked keys, with the next serial.
pub fn revoke(args: &CertRevokeArgs) -> Result<(), CliError> {
    let read = |path: &std::path::PathBuf| {
        std::fs::read_to_string(path).map_err(|source| CliError::File {
            path: path.clone(),
            source,
        })
    };
    let ca = CaKey::decode(&read(&args.ca)?)?;
    let (serial, rules, mut revoked) = match &args.policy {
        Some(path) => {
            let p = veil_proto::Policy::decode(&read(path)?, &ca.public())?;
            (p.serial, p.rules, p.revoked)
        }
        None => (0, Vec::new(), Vec::new()),
    };
    let mut added = 0;
    for k in &args.node_keys {
        let key = parse_key(k).ok_or_else(|| CliError::NodeKey(k.clone()))?;
        if !revoked.contains(&key) {
            revoked.push(key);
            added += 1;
        }
    }
    let p = ca.sign_policy(serial + 1, &rules, &revoked)?;
    print_or_write(&p.encode(), args.out.as_ref())?;
    eprintln!(
        "policy {} revokes {added} more key(s) ({} in all, {} rules kept); spread it with `veil policy push FILE` on any node",
        serial + 1,
        revoked.len(),
        rules.len()
    );
    Ok(())
}

/// Prints `text`, or writes it (with a newline) to `out`; returns the path written.
fn print_or_write<'a>(
    text: &str,
    out: Option<&'a std::path::PathBuf>,
) -> Result<Option<&'a std::path::PathBuf>, CliError> {
    match out {
        None => {
            println!("{text}");
            Ok(None)
        }
        Some(path) => {
            std::fs::write(path, format!("{text}\n")).map_err(|source| CliError::File {
                path: path.clone(),
                source,
            })?;
            Ok(Some(path))
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn parse_key(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut k = [0u8; 32];
    for (i, b) in k.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(k)
}
