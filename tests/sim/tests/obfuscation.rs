//! Nothing on the wire is a fixed or readable field.
//!
//! A network of a relay and five nodes runs through joins, lookups, peer handshakes, rekeys,
//! idle teardowns and reopenings, keepalives and data of many sizes over IPv4 and IPv6. Every
//! datagram is captured, and the capture must show (a) no byte offset among the first 32
//! whose most common value occurs in more than 2% of the datagrams long enough to have it,
//! and (b) none of the static public keys, the network secret, the relay's derived key or any
//! overlay address, anywhere in any datagram.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;
use veil_proto::NodeConfig;
use veil_sim::{udp4, udp6, Impairment, Sim};

const NODES: usize = 5;
const MIN_DATAGRAMS: usize = 10_000;

fn busy_network() -> Sim {
    let cfg = NodeConfig {
        // Short timers so that one capture holds many handshakes of every kind.
        rekey_after_time: Duration::from_secs(8),
        idle_timeout: Duration::from_secs(3),
        keepalive: Duration::from_secs(2),
        ..NodeConfig::default()
    };
    let imp = Impairment {
        jitter: Duration::from_millis(2),
        loss: 0.01,
        ..Impairment::default()
    };
    let mut sim = Sim::new(0x0b5c, 0, cfg.clone(), imp);
    sim.capture = true;
    for _ in 0..NODES {
        sim.add_node(cfg.clone());
        // Joins spread over time so that joins and traffic interleave.
        sim.run_for(Duration::from_millis(700));
    }
    sim.run_for(Duration::from_secs(5));
    for i in 0..NODES {
        assert!(sim.ipv4(i).is_some(), "node {i} did not join");
    }
    let mut round = 0usize;
    while sim.captured.len() < MIN_DATAGRAMS {
        round += 1;
        assert!(round < 2_000, "the capture grows too slowly");
        // A burst between two nodes that changes every round, of varied sizes and families;
        // every fourth round the network idles past the idle timeout so sessions close and
        // reopen with new handshakes.
        let a = round % NODES;
        let b = (round * 3 + 1) % NODES;
        if a == b {
            continue;
        }
        for k in 0..40 {
            let size = (round * 37 + k * 101) % 1200;
            let payload = vec![(k as u8) ^ (round as u8); size];
            let (from, to) = if k % 2 == 0 { (a, b) } else { (b, a) };
            let pkt = if k % 3 == 0 {
                udp6(
                    sim.nodes[from].node.overlay_ipv6(),
                    sim.nodes[to].node.overlay_ipv6(),
                    &payload,
                )
            } else {
                udp4(sim.ipv4(from).unwrap(), sim.ipv4(to).unwrap(), &payload)
            };
            sim.tun_send(from, &pkt);
            sim.run_for(Duration::from_millis(20));
        }
        let pause = if round % 4 == 0 { 5 } else { 1 };
        sim.run_for(Duration::from_secs(pause));
    }
    sim
}

#[test]
fn no_byte_offset_is_predictable_and_no_secret_or_address_is_visible() {
    let sim = busy_network();
    let caps = &sim.captured;
    assert!(caps.len() >= MIN_DATAGRAMS);

    // The capture really holds every kind: handshakes and rekeys with the relay and between
    // peers, data, keepalives and idle closes.
    let mut handshakes = 0u64;
    let mut closes = 0u64;
    for n in &sim.nodes {
        let c = n.node.counters();
        handshakes += c.handshakes_completed;
        closes += c.sessions_idle_closed;
    }
    assert!(
        handshakes >= 50,
        "only {handshakes} handshakes in the capture"
    );
    assert!(closes >= 10, "only {closes} idle closes in the capture");
    let mut sizes: BTreeMap<usize, usize> = BTreeMap::new();
    for c in caps {
        *sizes.entry(c.bytes.len()).or_default() += 1;
    }
    assert!(sizes.len() >= 10, "datagram sizes: {sizes:?}");

    // (a) No offset among the first 32 bytes has a common value.
    for off in 0..32 {
        let mut hist = [0usize; 256];
        let mut n = 0usize;
        for c in caps {
            if let Some(&b) = c.bytes.get(off) {
                hist[b as usize] += 1;
                n += 1;
            }
        }
        let (value, max) = hist
            .iter()
            .enumerate()
            .max_by_key(|(_, c)| **c)
            .map(|(v, c)| (v, *c))
            .unwrap();
        assert!(
            max * 50 <= n,
            "byte offset {off} is 0x{value:02x} in {max} of {n} datagrams (over 2%)"
        );
    }

    // (b) No static key, secret or overlay address anywhere.
    let mut needles: Vec<(String, Vec<u8>)> = vec![
        ("network secret".into(), sim.token.secret.to_vec()),
        (
            "relay public key".into(),
            sim.token.relays[0].public_key.to_vec(),
        ),
    ];
    for (i, n) in sim.nodes.iter().enumerate() {
        let pk = n.node.public_key();
        needles.push((format!("node {i} public key"), pk.to_vec()));
        // Any 8-byte window of a key would already identify it.
        for w in 0..=24 {
            needles.push((
                format!("node {i} public key [{w}..]"),
                pk[w..w + 8].to_vec(),
            ));
        }
        needles.push((
            format!("node {i} overlay IPv6"),
            n.node.overlay_ipv6().octets().to_vec(),
        ));
        needles.push((
            format!("node {i} overlay IPv4"),
            sim.ipv4(i).unwrap().octets().to_vec(),
        ));
    }
    for (what, needle) in &needles {
        for (k, c) in caps.iter().enumerate() {
            assert!(
                !c.bytes
                    .windows(needle.len())
                    .any(|w| w == needle.as_slice()),
                "datagram {k} ({} bytes) contains the {what}",
                c.bytes.len()
            );
        }
    }
}

#[test]
fn mtu_padding_makes_every_datagram_one_size_per_path() {
    let cfg = NodeConfig {
        pad_bucket: veil_proto::wire::PAD_TO_MTU,
        ..NodeConfig::default()
    };
    let mut sim = Sim::new(44, 2, cfg, Impairment::default());
    sim.run_for(std::time::Duration::from_secs(3));
    let (a, b) = (sim.ipv4(0).unwrap(), sim.ipv4(1).unwrap());
    // Sessions, a direct path and its discovery first; then watch.
    for _ in 0..20 {
        sim.tun_send(0, &udp4(a, b, b"warm"));
        sim.run_for(std::time::Duration::from_millis(50));
    }
    sim.capture = true;
    for k in 0..200u32 {
        let len = (k as usize * 37) % 1300 + 1;
        sim.tun_send(0, &udp4(a, b, &vec![7u8; len]));
        sim.tun_send(1, &udp4(b, a, &vec![9u8; len / 2 + 1]));
        sim.run_for(std::time::Duration::from_millis(20));
    }
    let peer = sim.nodes[0].node.peers(sim.now).remove(0);
    assert_eq!(peer.path, "direct");
    let path_size = peer.pmtu.unwrap() as usize + 35;
    let from0 = sim.nodes[0].addr;
    let mut sizes = std::collections::BTreeSet::new();
    for c in sim.captured.iter().filter(|c| c.from == from0) {
        sizes.insert(c.bytes.len());
    }
    assert!(
        sizes
            .iter()
            .all(|s| *s == path_size || *s == veil_proto::wire::PAD_CAP),
        "sizes {sizes:?}, path {path_size}"
    );
    assert!(sizes.contains(&path_size));
}
