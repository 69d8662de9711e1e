//! `veil status`, `veil peers`, `veil down` and `veil relay status`: clients of the control
//! socket. `--json` prints the socket's result as is (so fields added later pass through);
//! otherwise a table is printed.

use crate::args::{QueryArgs, RelayStatusArgs, TargetArgs};
use crate::error::CliError;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use veil_io::control::{self, ControlCommand, NODE_SOCKET, RELAY_SOCKET};
use veil_io::{NodeStatusReport, PeerReport, RelayStatusReport};

/// How long `down` waits for the process to remove its socket.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// The socket to talk to and the message when nobody answers there.
fn target(state_dir: &Path, socket: Option<&PathBuf>, file: &str, what: &str) -> (PathBuf, String) {
    match socket {
        Some(p) => (
            p.clone(),
            format!("no {what} is running at {} (no socket there)", p.display()),
        ),
        None => {
            let p = control::socket_path(state_dir, file);
            let msg = format!(
                "no {what} is running with state dir {} (no socket at {})",
                state_dir.display(),
                p.display()
            );
            (p, msg)
        }
    }
}

fn ask(path: &Path, missing: String, cmd: ControlCommand) -> Result<serde_json::Value, CliError> {
    control::request(path, cmd).map_err(|e| match e {
        veil_ipc::ClientError::NotRunning { .. } => CliError::NotRunning(missing),
        other => CliError::Ipc(other),
    })
}

fn node(t: &TargetArgs) -> (PathBuf, String) {
    target(&t.state_dir, t.socket.as_ref(), NODE_SOCKET, "veil node")
}

/// Asks the node `t` names and decodes its answer.
pub(crate) fn ask_node<T: serde::de::DeserializeOwned>(
    t: &TargetArgs,
    cmd: ControlCommand,
) -> Result<T, CliError> {
    let (path, missing) = node(t);
    decode(ask(&path, missing, cmd)?)
}

fn decode<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, CliError> {
    serde_json::from_value(v)
        .map_err(|e| CliError::Ipc(veil_ipc::ClientError::Protocol(e.to_string())))
}

fn print_json(v: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

/// `veil status`.
pub fn status(args: &QueryArgs) -> Result<(), CliError> {
    let (path, missing) = node(&args.target);
    let v = ask(&path, missing, ControlCommand::Status)?;
    if args.json {
        print_json(&v);
        return Ok(());
    }
    let s: NodeStatusReport = decode(v)?;
    let over = s
        .relay_transport
        .as_deref()
        .map_or_else(String::new, |t| format!(", over {}", t.to_uppercase()));
    let rtt = s
        .relay_rtt_ms
        .map_or_else(String::new, |ms| format!(", rtt {ms:.1} ms"));
    let relay = match (&s.relay, s.relay_connected) {
        (Some(r), true) => format!("{r} (connected{over}{rtt})"),
        (Some(r), false) => format!("{r} (not connected{over})"),
        (None, _) => "-".into(),
    };
    let rows = [
        ("id", s.id.clone()),
        (
            "name",
            match (&s.name, s.name_taken) {
                (Some(n), false) => n.clone(),
                (Some(n), true) => format!("{n} (held by another member: not registered)"),
                (None, _) => "-".into(),
            },
        ),
        (
            "overlay ipv4",
            s.overlay_ipv4
                .map_or_else(|| "- (not assigned yet)".into(), |a| a.to_string()),
        ),
        ("overlay ipv6", s.overlay_ipv6.to_string()),
        ("relay", relay),
        (
            "private",
            match (&s.guard, s.guard_circuit) {
                (Some(g), true) => format!("two hops, through guard {g} (circuit open)"),
                (Some(g), false) => format!("two hops, through guard {g} (no circuit yet)"),
                (None, _) if s.private == "relay" => "relays only".into(),
                _ => "off".into(),
            },
        ),
        ("tun", s.tun.clone().unwrap_or_else(|| "-".into())),
        (
            "local port",
            s.local_port.map_or_else(|| "-".into(), |p| p.to_string()),
        ),
        ("uptime", human_duration(s.uptime_s)),
        (
            "network key",
            s.previous_key_until.map_or_else(
                || "current".into(),
                |t| format!("rotated; the previous key is used until Unix time {t}"),
            ),
        ),
    ];
    print_pairs(rows.iter().map(|(k, v)| (*k, v.clone())));
    println!("counters:");
    print_counters(&s.counters);
    Ok(())
}

/// `veil peers`.
pub fn peers(args: &QueryArgs) -> Result<(), CliError> {
    let (path, missing) = node(&args.target);
    let v = ask(&path, missing, ControlCommand::Peers)?;
    if args.json {
        print_json(&v);
        return Ok(());
    }
    let peers: Vec<PeerReport> = decode(v)?;
    if peers.is_empty() {
        println!("no peers (sessions open on the first packet to a peer's overlay address)");
        return Ok(());
    }
    let header = [
        "ID",
        "NAME",
        "IPV4",
        "IPV6",
        "PATH",
        "ENDPOINT",
        "RTT",
        "PMTU",
        "CIPHER",
        "TX",
        "RX",
        "HANDSHAKE",
    ];
    let rows: Vec<Vec<String>> = peers.iter().map(peer_row).collect();
    print_table(&header, &rows);
    Ok(())
}

fn peer_row(p: &PeerReport) -> Vec<String> {
    let dash = || "-".to_string();
    let path = match &p.relay_reason {
        Some(r) => format!("{} ({r})", p.path),
        None => p.path.clone(),
    };
    vec![
        p.id.clone(),
        p.name.clone().unwrap_or_else(dash),
        p.overlay_ipv4.map_or_else(dash, |a| a.to_string()),
        p.overlay_ipv6.to_string(),
        path,
        p.endpoint.clone().unwrap_or_else(dash),
        p.rtt_ms.map_or_else(dash, |r| format!("{r:.1} ms")),
        p.pmtu.map_or_else(
            || p.pmtu_state.clone(),
            |m| format!("{m} ({})", p.pmtu_state),
        ),
        match p.cipher.as_str() {
            "" | "none" => dash(),
            c => c.to_owned(),
        },
        human_bytes(p.tx_bytes),
        human_bytes(p.rx_bytes),
        p.last_handshake_unix.map_or_else(dash, ago),
    ]
}

/// `veil policy push FILE`: the node checks the policy against its CA and spreads it.
pub fn policy_push(args: &crate::args::PolicyPushArgs) -> Result<(), CliError> {
    let text = std::fs::read_to_string(&args.file).map_err(|source| CliError::File {
        path: args.file.clone(),
        source,
    })?;
    let (path, missing) = node(&args.target);
    let v = ask(
        &path,
        missing,
        ControlCommand::Policy(text.trim().to_string()),
    )?;
    let serial = v
        .get("serial")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    if v.get("adopted").and_then(serde_json::Value::as_bool) == Some(true) {
        eprintln!("policy {serial} adopted; the node passes it to the relay and every node");
    } else {
        eprintln!("the node already has policy {serial}, which is not older: nothing changed");
    }
    Ok(())
}

/// `veil network adopt`: hands the running node its rotated join token.
pub fn adopt(args: &crate::args::AdoptArgs) -> Result<(), CliError> {
    let text = crate::up::read_token_file(&args.token_file)?;
    veil_proto::JoinToken::decode(&text)?;
    let (path, missing) = node(&args.target);
    let v = ask(&path, missing, ControlCommand::Adopt(text))?;
    report_adopted("node", &v);
    Ok(())
}

/// `veil relay adopt`: hands the running relay its rotated relay token.
pub fn relay_adopt(args: &crate::args::RelayAdoptArgs) -> Result<(), CliError> {
    let text = crate::up::read_token_file(&args.token_file)?;
    veil_proto::RelayToken::decode(&text)?;
    let (path, missing) = target(
        &args.state_dir,
        args.socket.as_ref(),
        RELAY_SOCKET,
        "veil relay",
    );
    let v = ask(&path, missing, ControlCommand::Adopt(text))?;
    report_adopted("relay", &v);
    Ok(())
}

fn report_adopted(what: &str, v: &serde_json::Value) {
    match v.get("previous_key_until").and_then(serde_json::Value::as_u64) {
        Some(t) => eprintln!(
            "the {what} adopted the new token; it uses the previous secret for new handshakes until Unix time {t} ({}), the new one after",
            until_text(t)
        ),
        None => eprintln!("the {what} adopted the new token"),
    }
}

fn until_text(unix: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if unix > now {
        format!("in {}", human_duration(unix - now))
    } else {
        "already over".into()
    }
}

/// `veil down`: asks the node to stop and waits until its socket is gone.
pub fn down(args: &TargetArgs) -> Result<(), CliError> {
    let (path, missing) = node(args);
    ask(&path, missing, ControlCommand::Down)?;
    let start = Instant::now();
    while path.exists() {
        if start.elapsed() > STOP_WAIT {
            return Err(CliError::StopTimeout {
                path,
                secs: STOP_WAIT.as_secs(),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("veil node stopped");
    Ok(())
}

/// `veil relay status`.
pub fn relay_status(args: &RelayStatusArgs) -> Result<(), CliError> {
    let (path, missing) = target(
        &args.state_dir,
        args.socket.as_ref(),
        RELAY_SOCKET,
        "veil relay",
    );
    let v = ask(&path, missing, ControlCommand::Status)?;
    if args.json {
        print_json(&v);
        return Ok(());
    }
    let s: RelayStatusReport = decode(v)?;
    let rows = [
        ("id", s.id.clone()),
        ("listen", s.listen.clone()),
        (
            "tcp listen",
            s.tcp_listen.clone().unwrap_or_else(|| "off".into()),
        ),
        ("uptime", human_duration(s.uptime_s)),
        ("clients", s.clients.to_string()),
        ("names", s.names.to_string()),
        ("relay links", s.links.to_string()),
        ("circuits (as guard)", s.circuits.to_string()),
        ("circuit clients", s.circuit_clients.to_string()),
    ];
    print_pairs(rows.iter().map(|(k, v)| (*k, v.clone())));
    match &s.cluster {
        None => {
            println!("shared rendezvous: none (this relay serves its own nodes only; see --nats)")
        }
        Some(c) => {
            let health = if c.store.connected { "ok" } else { "DOWN" };
            println!(
                "shared rendezvous: {} {health}, {}; {} names held, {} errors; listed as {}",
                c.store.backend, c.store.detail, c.store.held, c.store.errors, c.advertise
            );
            println!(
                "  {} nodes of other relays in use, {} store requests waiting",
                c.aliases, c.pending
            );
            let rows: Vec<Vec<String>> = c
                .peers
                .iter()
                .map(|p| {
                    vec![
                        p.id.clone(),
                        p.addr.clone(),
                        if p.link_up { "up" } else { "down" }.to_string(),
                        p.last_rx_ms
                            .map_or_else(|| "-".into(), |ms| format!("{ms} ms ago")),
                        p.aliases.to_string(),
                    ]
                })
                .collect();
            if rows.is_empty() {
                println!("  no other relay listed yet");
            } else {
                print_table(
                    &["relay", "address", "link", "last heard", "nodes in use"],
                    &rows,
                );
            }
        }
    }
    println!("counters:");
    print_counters(&s.counters);
    Ok(())
}

fn print_pairs<'a>(rows: impl Iterator<Item = (&'a str, String)> + Clone) {
    let width = rows.clone().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in rows {
        println!("{k:<width$}  {v}");
    }
}

fn print_counters(c: &veil_io::Counters) {
    let width = c.0.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in &c.0 {
        println!("  {k:<width$}  {v}");
    }
}

fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

fn human_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m {s}s"),
        _ => format!("{d}d {h}h {m}m"),
    }
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn ago(unix: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("{} ago", human_duration(now.saturating_sub(unix)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn humans() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(3725), "1h 2m 5s");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }
}
