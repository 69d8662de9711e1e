//! The protocol in a simulated network with a fake clock: join, lookup, handshake, data,
//! rekey and idle teardown, with and without loss, reordering and duplication.
#![allow(clippy::unwrap_used)]

use std::time::Duration;
use veil_proto::{NodeConfig, NodeEvent};
use veil_sim::{udp4, udp6, Impairment, Sim};

fn joined(n: usize, seed: u64, cfg: NodeConfig, imp: Impairment) -> Sim {
    let mut sim = Sim::new(seed, n, cfg, imp);
    sim.run_for(Duration::from_secs(10));
    for i in 0..n {
        assert!(sim.ipv4(i).is_some(), "node {i} has no IPv4 after 10 s");
    }
    sim
}

/// Sends a packet from a to b every 100 ms until one arrives (the session is up).
fn warm_up(sim: &mut Sim, a: usize, b: usize) {
    let (src, dst) = (sim.ipv4(a).unwrap(), sim.ipv4(b).unwrap());
    let before = sim.nodes[b].tun.len();
    for _ in 0..300 {
        sim.tun_send(a, &udp4(src, dst, b"warm-up"));
        sim.run_for(Duration::from_millis(100));
        if sim.nodes[b].tun.len() > before {
            sim.run_for(Duration::from_secs(1));
            return;
        }
    }
    panic!("no session from {a} to {b} after 30 s");
}

/// Sends `count` packets from a to b, one every `gap`, and returns how many b received.
fn stream(sim: &mut Sim, a: usize, b: usize, count: usize, gap: Duration) -> usize {
    let (src, dst) = (sim.ipv4(a).unwrap(), sim.ipv4(b).unwrap());
    let before = sim.nodes[b].tun.len();
    for k in 0..count {
        let payload = format!("packet {k} from {a} to {b}");
        sim.tun_send(a, &udp4(src, dst, payload.as_bytes()));
        sim.run_for(gap);
    }
    sim.run_for(Duration::from_secs(2));
    sim.nodes[b].tun.len() - before
}

#[test]
fn nodes_join_with_distinct_addresses() {
    let sim = joined(6, 1, NodeConfig::default(), Impairment::default());
    let mut v4: Vec<_> = (0..6).map(|i| sim.ipv4(i).unwrap()).collect();
    v4.sort();
    v4.dedup();
    assert_eq!(v4.len(), 6);
    assert_eq!(sim.relay.status(sim.now).clients, 6);
    for n in &sim.nodes {
        assert!(n.events.iter().any(|e| matches!(e, NodeEvent::RelayUp(_))));
        assert!(n
            .events
            .iter()
            .any(|e| matches!(e, NodeEvent::Ipv4Assigned(_))));
    }
}

#[test]
fn first_packet_opens_a_session_and_data_flows_both_ways() {
    let mut sim = joined(3, 2, NodeConfig::default(), Impairment::default());
    let (a4, b4) = (sim.ipv4(0).unwrap(), sim.ipv4(1).unwrap());
    let first = udp4(a4, b4, b"hello b");
    sim.tun_send(0, &first);
    sim.run_for(Duration::from_secs(1));
    assert_eq!(
        sim.nodes[1].tun,
        vec![first],
        "the first packet is queued and delivered, not lost"
    );
    let back = udp4(b4, a4, b"hello a");
    sim.tun_send(1, &back);
    sim.run_for(Duration::from_millis(100));
    assert_eq!(sim.nodes[0].tun, vec![back]);
    // IPv6 too, addressed by the key-derived overlay address.
    let (a6, c6) = (
        sim.nodes[0].node.overlay_ipv6(),
        sim.nodes[2].node.overlay_ipv6(),
    );
    let p6 = udp6(a6, c6, b"over v6");
    sim.tun_send(0, &p6);
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.nodes[2].tun, vec![p6]);
    let peers = sim.nodes[0].node.peers(sim.now);
    assert_eq!(peers.len(), 2);
    assert!(
        peers.iter().all(|p| p.path == "direct"),
        "an open network gives direct paths"
    );
    assert!(sim.nodes[1]
        .events
        .iter()
        .any(|e| matches!(e, NodeEvent::PeerUp { .. })));
}

#[test]
fn unknown_address_is_dropped_and_counted() {
    let mut sim = joined(2, 3, NodeConfig::default(), Impairment::default());
    let a4 = sim.ipv4(0).unwrap();
    sim.tun_send(0, &udp4(a4, "100.64.0.77".parse().unwrap(), b"nobody"));
    sim.run_for(Duration::from_secs(5));
    let c = sim.nodes[0].node.counters();
    assert_eq!(c.lookup_misses, 1);
    assert_eq!(c.dropped_no_route, 1);
    // Outside the overlay: no lookup at all.
    sim.tun_send(0, &udp4(a4, "198.18.9.9".parse().unwrap(), b"elsewhere"));
    assert_eq!(sim.nodes[0].node.counters().lookups, 1);
}

#[test]
fn spoofed_source_is_dropped() {
    let mut sim = joined(3, 4, NodeConfig::default(), Impairment::default());
    let (b4, c4) = (sim.ipv4(1).unwrap(), sim.ipv4(2).unwrap());
    // Node 0 pretends to be node 2 when talking to node 1.
    sim.tun_send(0, &udp4(c4, b4, b"i am c"));
    sim.run_for(Duration::from_secs(2));
    assert!(sim.nodes[1].tun.is_empty());
    assert!(sim.nodes[1].node.counters().dropped_spoofed >= 1);
}

#[test]
fn survives_loss_reordering_and_duplication() {
    loss_reordering_and_duplication(false);
}

/// The same with the AEAD split out of the engine into jobs (what the I/O layer does with
/// crypto helper threads): nothing may change, replays included.
#[test]
fn survives_loss_reordering_and_duplication_with_split_aead() {
    loss_reordering_and_duplication(true);
}

fn loss_reordering_and_duplication(split_aead: bool) {
    let imp = Impairment {
        latency: Duration::from_millis(10),
        jitter: Duration::from_millis(15),
        loss: 0.05,
        duplicate: 0.05,
    };
    let mut sim = joined(4, 5, NodeConfig::default(), imp);
    sim.split_aead = split_aead;
    warm_up(&mut sim, 0, 1);
    warm_up(&mut sim, 3, 2);
    let got = stream(&mut sim, 0, 1, 400, Duration::from_millis(5));
    // Two lossy legs (node→relay→node) at 5% each: about 90% arrive, none twice.
    assert!(got >= 320, "only {got} of 400 arrived");
    assert!(got <= 400, "duplicates leaked through: {got}");
    let got = stream(&mut sim, 3, 2, 200, Duration::from_millis(5));
    assert!(
        got >= 160,
        "only {got} of 200 arrived: {:?} {:?} {:?}",
        sim.nodes[3].node.counters(),
        sim.nodes[2].node.counters(),
        sim.nodes[3].node.peers(sim.now)
    );
    assert!(
        sim.nodes[1].node.counters().dropped_replay > 0,
        "duplicates are caught by the replay window"
    );
    if split_aead {
        assert!(
            sim.split_sealed >= 300 && sim.split_opened >= 300,
            "the data went through jobs: {} sealed, {} opened",
            sim.split_sealed,
            sim.split_opened
        );
    }
}

#[test]
fn sessions_rekey_without_losing_traffic() {
    rekey_without_loss(false);
}

#[test]
fn sessions_rekey_without_losing_traffic_with_split_aead() {
    rekey_without_loss(true);
}

fn rekey_without_loss(split_aead: bool) {
    let cfg = NodeConfig {
        rekey_after_time: Duration::from_secs(20),
        ..NodeConfig::default()
    };
    let mut sim = joined(2, 6, cfg, Impairment::default());
    sim.split_aead = split_aead;
    let got = stream(&mut sim, 0, 1, 1000, Duration::from_millis(100));
    assert_eq!(
        got, 1000,
        "traffic across re-keys must not lose packets on a clean network"
    );
    let rekeys = sim.nodes[0].node.counters().rekeys + sim.nodes[1].node.counters().rekeys;
    assert!(
        rekeys >= 4,
        "expected several re-keys in 100 s, got {rekeys}"
    );
    if split_aead {
        assert!(
            sim.split_sealed >= 900 && sim.split_opened >= 900,
            "the data went through jobs: {} sealed, {} opened",
            sim.split_sealed,
            sim.split_opened
        );
    }
}

#[test]
fn idle_sessions_are_torn_down_and_reopened_on_demand() {
    let cfg = NodeConfig {
        idle_timeout: Duration::from_secs(30),
        ..NodeConfig::default()
    };
    let mut sim = joined(2, 7, cfg, Impairment::default());
    assert_eq!(stream(&mut sim, 0, 1, 10, Duration::from_millis(50)), 10);
    assert_ne!(sim.nodes[0].node.peers(sim.now)[0].path, "none");
    sim.run_for(Duration::from_secs(40));
    assert_eq!(sim.nodes[0].node.peers(sim.now)[0].path, "none");
    assert!(sim.nodes[0].node.counters().sessions_idle_closed >= 1);
    assert!(sim.nodes[0]
        .events
        .iter()
        .any(|e| matches!(e, NodeEvent::PeerDown { .. })));
    // The next packet opens a new session.
    assert_eq!(stream(&mut sim, 0, 1, 10, Duration::from_millis(50)), 10);
}

#[test]
fn idle_node_sends_only_keepalives() {
    let mut sim = joined(2, 8, NodeConfig::default(), Impairment::default());
    assert_eq!(stream(&mut sim, 0, 1, 5, Duration::from_millis(50)), 5);
    sim.run_for(Duration::from_secs(120));
    sim.capture = true;
    sim.run_for(Duration::from_secs(60));
    let from0 = sim
        .captured
        .iter()
        .filter(|c| c.from == sim.nodes[0].addr)
        .count();
    assert!(
        from0 <= 3,
        "an idle node sent {from0} datagrams in a minute"
    );
}

#[test]
fn relay_restart_is_survived() {
    let mut sim = joined(2, 9, NodeConfig::default(), Impairment::default());
    assert_eq!(stream(&mut sim, 0, 1, 5, Duration::from_millis(50)), 5);
    sim.restart_relay();
    sim.run_for(Duration::from_secs(60));
    assert_eq!(
        sim.relay.status(sim.now).clients,
        2,
        "nodes reconnect to a restarted relay"
    );
    assert_eq!(stream(&mut sim, 0, 1, 20, Duration::from_millis(50)), 20);
}

#[test]
fn deterministic_from_seed() {
    fn transcript(seed: u64) -> Vec<Vec<u8>> {
        let imp = Impairment {
            jitter: Duration::from_millis(3),
            loss: 0.02,
            ..Impairment::default()
        };
        let mut sim = Sim::new(seed, 3, NodeConfig::default(), imp);
        sim.capture = true;
        sim.run_for(Duration::from_secs(5));
        let _ = stream(&mut sim, 0, 2, 20, Duration::from_millis(10));
        sim.captured.into_iter().map(|c| c.bytes).collect()
    }
    let a = transcript(42);
    assert!(a.len() > 50);
    assert_eq!(a, transcript(42));
    assert_ne!(a, transcript(43));
}

#[test]
fn a_session_opened_over_ipv6_carries_the_responders_ipv4_too() {
    let mut sim = joined(2, 11, NodeConfig::default(), Impairment::default());
    let (a6, b6) = (
        sim.nodes[0].node.overlay_ipv6(),
        sim.nodes[1].node.overlay_ipv6(),
    );
    sim.tun_send(0, &udp6(a6, b6, b"first contact over v6"));
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.nodes[1].tun.len(), 1);
    // b answers over IPv4: a learned b's IPv4 from the handshake and verified it.
    let (a4, b4) = (sim.ipv4(0).unwrap(), sim.ipv4(1).unwrap());
    let back = udp4(b4, a4, b"reply over v4");
    sim.tun_send(1, &back);
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.nodes[0].tun, vec![back]);
    assert_eq!(sim.nodes[0].node.counters().dropped_spoofed, 0);
}

#[test]
fn unpadded_datagrams_keep_the_relay_link_up() {
    let cfg = NodeConfig {
        pad_bucket: 0,
        ..NodeConfig::default()
    };
    let mut sim = joined(2, 12, cfg, Impairment::default());
    sim.run_for(Duration::from_secs(180));
    for n in &sim.nodes {
        assert!(
            !n.events
                .iter()
                .any(|e| matches!(e, NodeEvent::RelayDown(_))),
            "the relay link dropped with unpadded keepalives"
        );
    }
    assert_eq!(stream(&mut sim, 0, 1, 5, Duration::from_millis(50)), 5);
}

#[test]
fn scanning_the_overlay_does_not_grow_lookups_without_bound() {
    let mut sim = joined(1, 13, NodeConfig::default(), Impairment::default());
    let a4 = sim.ipv4(0).unwrap();
    let base = u32::from(std::net::Ipv4Addr::new(100, 64, 0, 0));
    for i in 0..2000u32 {
        let dst = std::net::Ipv4Addr::from(base + 0x1_0000 + i * 3);
        sim.tun_send(0, &udp4(a4, dst, b"scan"));
    }
    let c = sim.nodes[0].node.counters();
    assert!(c.lookups <= 300, "{} lookups in flight at once", c.lookups);
    assert!(c.dropped_queue_full >= 1500);
    sim.run_for(Duration::from_secs(10));
    // Once the misses are answered, new destinations are looked up again.
    let before = sim.nodes[0].node.counters().lookups;
    sim.tun_send(
        0,
        &udp4(a4, std::net::Ipv4Addr::new(100, 127, 1, 1), b"later"),
    );
    assert_eq!(sim.nodes[0].node.counters().lookups, before + 1);
}

#[test]
fn a_node_that_shuts_down_says_goodbye() {
    let mut sim = joined(3, 14, NodeConfig::default(), Impairment::default());
    assert_eq!(stream(&mut sim, 0, 1, 3, Duration::from_millis(50)), 3);
    assert_eq!(stream(&mut sim, 2, 1, 3, Duration::from_millis(50)), 3);
    sim.with_node(1, |n, now| n.shutdown(now));
    sim.remove_node(1);
    sim.run_for(Duration::from_millis(100));
    for i in [0, 2] {
        assert!(
            sim.nodes[i]
                .events
                .iter()
                .any(|e| matches!(e, NodeEvent::PeerDown { .. })),
            "node {i} learns at once that its peer left"
        );
        assert_eq!(sim.nodes[i].node.peers(sim.now)[0].path, "none");
    }
    assert_eq!(
        sim.relay.status(sim.now).clients,
        2,
        "the relay frees the registration at once, not after the lease"
    );
}
