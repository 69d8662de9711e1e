//! Prometheus metrics of a node (`veil up --metrics ADDRESS:PORT`): `GET /metrics` answers
//! with the text exposition format (version 0.0.4), made from the same status and peers the
//! control socket reports. One request per connection; anything else gets 404 or 400.
//!
//! Families (all prefixed `veil_`): `up` (id, version), `uptime_seconds`, `relay_connected`,
//! `relay_rtt_seconds`, `peers`, `sessions`, `inner_bytes_total` and `inner_packets_total`
//! by direction and path kind (direct, relayed), `datagrams_total` by direction,
//! `handshakes_total` by kind, `dropped_total` by reason, per peer `peer_pmtu_bytes`,
//! `peer_rtt_seconds` and `peer_bytes_total`, and `counter_total{name}` with every raw
//! counter of `veil status --json`.

use crate::node::NodeHandle;
use crate::report::{NodeStatusReport, PeerReport};
use std::fmt::Write as _;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Longest request head read.
const MAX_REQUEST: usize = 8192;
/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The reasons of `veil_dropped_total`, by counter.
const DROPS: &[(&str, &str)] = &[
    ("dropped_unauthenticated", "unauthenticated"),
    ("dropped_bad_aead", "bad_aead"),
    ("dropped_replay", "replay"),
    ("dropped_handshake_replay", "handshake_replay"),
    ("dropped_malformed", "malformed"),
    ("dropped_no_route", "no_route"),
    ("dropped_spoofed", "spoofed"),
    ("dropped_queue_full", "queue_full"),
    ("dropped_too_big", "too_big"),
    ("dropped_uncertified", "uncertified"),
    ("dropped_policy", "policy"),
    ("dropped_rate_limited", "rate_limit"),
    ("dropped_private", "private"),
    ("dropped_destination", "destination"),
    ("reassembly_timeouts", "reassembly_timeout"),
];

/// Serves metrics on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, handle: NodeHandle) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::debug!(error = %e, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &handle).await {
                tracing::debug!(error = %e, "metrics request failed");
            }
        });
    }
}

async fn answer(mut stream: TcpStream, handle: &NodeHandle) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let complete = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
    if !matches!(complete, Ok(Ok(()))) {
        return Ok(());
    }
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (status, body) = match (parts.next(), parts.next()) {
        (Some("GET"), Some(path)) if path == "/metrics" || path.starts_with("/metrics?") => {
            match (handle.status().await, handle.peers().await) {
                (Some(s), Some(p)) => ("200 OK", render(&s, &p)),
                _ => (
                    "503 Service Unavailable",
                    "the node is stopping\n".to_owned(),
                ),
            }
        }
        (Some("GET"), Some(_)) => ("404 Not Found", "metrics are at /metrics\n".to_owned()),
        _ => ("400 Bad Request", "send GET /metrics\n".to_owned()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// A label value with `\`, `"` and newlines escaped.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP veil_{name} {help}");
        let _ = writeln!(self.0, "# TYPE veil_{name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let _ = write!(self.0, "veil_{name}");
        if !labels.is_empty() {
            let inner: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", esc(v)))
                .collect();
            let _ = write!(self.0, "{{{}}}", inner.join(","));
        }
        let _ = writeln!(self.0, " {value}");
    }
}

/// The exposition of one status and peer list.
pub fn render(s: &NodeStatusReport, peers: &[PeerReport]) -> String {
    let c = |name: &str| s.counters.get(name).unwrap_or(0);
    let mut o = Out(String::with_capacity(8192));
    o.family(
        "up",
        "gauge",
        "1 while the node runs; its id and version as labels.",
    );
    o.sample(
        "up",
        &[("id", &s.id), ("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    o.family("uptime_seconds", "gauge", "Seconds since the node started.");
    o.sample("uptime_seconds", &[], s.uptime_s);
    o.family(
        "relay_connected",
        "gauge",
        "1 while the session with the home relay is up.",
    );
    o.sample("relay_connected", &[], u8::from(s.relay_connected));
    if let Some(ms) = s.relay_rtt_ms {
        o.family(
            "relay_rtt_seconds",
            "gauge",
            "Round trip to the relay (its last registration).",
        );
        o.sample("relay_rtt_seconds", &[], ms / 1000.0);
    }
    o.family("peers", "gauge", "Peers the node knows.");
    o.sample("peers", &[], peers.len());
    o.family("sessions", "gauge", "Peers with a session (path not none).");
    o.sample(
        "sessions",
        &[],
        peers.iter().filter(|p| p.path != "none").count(),
    );

    for (unit, what) in [
        ("bytes", "Bytes of inner packets"),
        ("packets", "Inner packets"),
    ] {
        let name = format!("inner_{unit}_total");
        o.family(
            &name,
            "counter",
            &format!("{what} by direction and path kind (relayed includes private)."),
        );
        for dir in ["tx", "rx"] {
            for path in ["direct", "relayed"] {
                let key = format!("{dir}_{unit}_{path}");
                o.sample(&name, &[("direction", dir), ("path", path)], c(&key));
            }
        }
    }
    o.family(
        "datagrams_total",
        "counter",
        "Underlay datagrams by direction.",
    );
    o.sample("datagrams_total", &[("direction", "tx")], c("tx_datagrams"));
    o.sample("datagrams_total", &[("direction", "rx")], c("rx_datagrams"));
    o.family("handshakes_total", "counter", "Peer handshakes by kind.");
    for (kind, key) in [
        ("initiated", "handshakes_initiated"),
        ("completed", "handshakes_completed"),
        ("answered", "handshakes_answered"),
        ("rekey", "rekeys"),
    ] {
        o.sample("handshakes_total", &[("kind", kind)], c(key));
    }
    o.family(
        "dropped_total",
        "counter",
        "Datagrams and packets dropped, by reason (unauthenticated = failed handshake MAC).",
    );
    for (key, reason) in DROPS {
        o.sample("dropped_total", &[("reason", reason)], c(key));
    }

    o.family("peer_pmtu_bytes", "gauge", "Path MTU found per peer.");
    for p in peers {
        if let Some(mtu) = p.pmtu {
            o.sample(
                "peer_pmtu_bytes",
                &[("peer", &p.id), ("path", &p.path)],
                mtu,
            );
        }
    }
    o.family(
        "peer_rtt_seconds",
        "gauge",
        "Round trip per peer on the path its data takes (handshake, then direct path checks).",
    );
    for p in peers {
        if let Some(ms) = p.rtt_ms {
            o.sample("peer_rtt_seconds", &[("peer", &p.id)], ms / 1000.0);
        }
    }
    o.family(
        "peer_bytes_total",
        "counter",
        "Inner bytes per peer and direction (reset when a peer is forgotten).",
    );
    for p in peers {
        o.sample(
            "peer_bytes_total",
            &[("peer", &p.id), ("direction", "tx")],
            p.tx_bytes,
        );
        o.sample(
            "peer_bytes_total",
            &[("peer", &p.id), ("direction", "rx")],
            p.rx_bytes,
        );
    }
    o.family(
        "counter_total",
        "counter",
        "Every raw counter of `veil status --json`, by name.",
    );
    for (name, v) in &s.counters.0 {
        o.sample("counter_total", &[("name", name)], v);
    }
    o.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Counters;
    use std::net::Ipv6Addr;

    fn status() -> NodeStatusReport {
        NodeStatusReport {
            id: "ab\"cd".into(),
            overlay_ipv4: None,
            overlay_ipv6: Ipv6Addr::LOCALHOST,
            relay: None,
            relay_connected: true,
            private: "off".into(),
            guard: None,
            guard_circuit: false,
            previous_key_until: None,
            relay_rtt_ms: Some(2.5),
            name: None,
            name_taken: false,
            dns_domain: "veil".into(),
            routes: Vec::new(),
            relay_transport: None,
            uptime_s: 7,
            tun: None,
            local_port: None,
            counters: Counters(vec![
                ("tx_bytes_direct".into(), 1234),
                ("dropped_replay".into(), 3),
            ]),
        }
    }

    #[test]
    fn every_sample_follows_its_family_and_parses() {
        let peer = PeerReport {
            id: "p1".into(),
            name: Some("web".into()),
            overlay_ipv4: None,
            overlay_ipv6: Ipv6Addr::LOCALHOST,
            path: "direct".into(),
            relay_reason: None,
            endpoint: None,
            rtt_ms: Some(1.0),
            pmtu: Some(1424),
            pmtu_state: "done".into(),
            tx_bytes: 10,
            rx_bytes: 20,
            last_handshake_unix: None,
            cipher: "aes-256-gcm".into(),
        };
        let text = render(&status(), &[peer]);
        let mut declared = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.push(rest.split(' ').next().unwrap_or_default().to_owned());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (name_labels, value) = line.rsplit_once(' ').expect("name and value");
            let name = name_labels.split('{').next().unwrap_or_default();
            assert_eq!(declared.last().map(String::as_str), Some(name), "{line}");
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
        assert!(text.contains("veil_up{id=\"ab\\\"cd\","), "{text}");
        assert!(text.contains("veil_inner_bytes_total{direction=\"tx\",path=\"direct\"} 1234"));
        assert!(text.contains("veil_dropped_total{reason=\"replay\"} 3"));
        assert!(text.contains("veil_peer_pmtu_bytes{peer=\"p1\",path=\"direct\"} 1424"));
        assert!(text.contains("veil_relay_rtt_seconds 0.0025"));
        assert!(text.contains("veil_counter_total{name=\"dropped_replay\"} 3"));
    }
}
