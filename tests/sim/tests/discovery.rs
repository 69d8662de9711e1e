//! Direct paths: candidates exchanged end to end, simultaneous hole punching through NATs,
//! fallback to the relay, consent freshness, roaming — in the simulator, with NATs that map
//! and filter like real ones.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;
use veil_proto::{NodeConfig, PeerStatus};
use veil_sim::{udp4, Impairment, NatKind, Sim};

fn network(seed: u64, nats: [Option<NatKind>; 2], cfg: NodeConfig) -> Sim {
    let mut sim = Sim::new(seed, 0, cfg.clone(), Impairment::default());
    for nat in nats {
        sim.add_node_behind(cfg.clone(), nat);
    }
    sim.run_for(Duration::from_secs(5));
    for i in 0..2 {
        assert!(sim.ipv4(i).is_some(), "node {i} did not join");
    }
    sim
}

fn peer_of(sim: &Sim, i: usize) -> PeerStatus {
    let peers = sim.nodes[i].node.peers(sim.now);
    assert_eq!(peers.len(), 1, "node {i} knows {} peers", peers.len());
    peers.into_iter().next().unwrap()
}

/// Sends one packet 0 → 1 every `gap` for `count` packets, calling `at(k, sim)` before packet
/// k; returns the arrival times (simulated, since the first send) of what node 1 received.
fn stream_timed(
    sim: &mut Sim,
    count: usize,
    gap: Duration,
    mut at: impl FnMut(usize, &mut Sim),
) -> Vec<Duration> {
    let (src, dst) = (sim.ipv4(0).unwrap(), sim.ipv4(1).unwrap());
    let start = sim.now;
    let mut seen = sim.nodes[1].tun.len();
    let mut arrivals = Vec::new();
    for k in 0..count {
        at(k, sim);
        sim.tun_send(0, &udp4(src, dst, format!("packet {k}").as_bytes()));
        sim.run_for(gap);
        let now_len = sim.nodes[1].tun.len();
        for _ in seen..now_len {
            arrivals.push(sim.now - start);
        }
        seen = now_len;
    }
    sim.run_for(Duration::from_secs(2));
    for _ in seen..sim.nodes[1].tun.len() {
        arrivals.push(sim.now - start);
    }
    arrivals
}

fn max_gap(arrivals: &[Duration]) -> Duration {
    arrivals
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default()
}

/// Sends a packet every 10 ms until the path of node 0 to node 1 is direct; returns the
/// time from the first packet.
fn time_to_direct(sim: &mut Sim, limit: Duration) -> Option<Duration> {
    let (src, dst) = (sim.ipv4(0).unwrap(), sim.ipv4(1).unwrap());
    let start = sim.now;
    while sim.now - start < limit {
        sim.tun_send(0, &udp4(src, dst, b"ping"));
        sim.run_for(Duration::from_millis(10));
        let peers = sim.nodes[0].node.peers(sim.now);
        if peers.first().is_some_and(|p| p.path == "direct") {
            return Some(sim.now - start);
        }
    }
    None
}

#[test]
fn open_network_goes_direct_within_a_second_and_stops_using_the_relay() {
    let mut sim = network(21, [None, None], NodeConfig::default());
    let t = time_to_direct(&mut sim, Duration::from_secs(5)).expect("no direct path in 5 s");
    assert!(t <= Duration::from_secs(1), "direct after {t:?}");
    let p = peer_of(&sim, 0);
    assert_eq!(p.endpoint.as_deref(), Some("198.18.1.3:40001"));
    assert_eq!(p.relay_reason, None);
    sim.run_for(Duration::from_millis(500));
    assert_eq!(peer_of(&sim, 1).path, "direct", "both directions go direct");
    sim.run_for(Duration::from_secs(10));
    let sent: u64 = (0..2)
        .map(|i| sim.nodes[i].node.counters().candidates_sent)
        .sum();
    assert!(
        sent <= 4,
        "the candidate exchange ends once both sides hold each other's list ({sent} sent)"
    );
    let forwarded = sim.relay.counters().forwarded;
    let arrivals = stream_timed(&mut sim, 100, Duration::from_millis(10), |_, _| {});
    assert_eq!(arrivals.len(), 100);
    assert_eq!(
        sim.relay.counters().forwarded,
        forwarded,
        "data on a direct path does not touch the relay"
    );
}

#[test]
fn endpoint_independent_nats_on_both_sides_are_punched_through() {
    let nat = Some(NatKind::EndpointIndependent);
    let mut sim = network(22, [nat, nat], NodeConfig::default());
    let t = time_to_direct(&mut sim, Duration::from_secs(10)).expect("no direct path");
    assert!(t <= Duration::from_secs(1), "direct after {t:?}");
    // The endpoint is the peer's public (NAT) address, learned through the relay.
    let p = peer_of(&sim, 0);
    assert!(
        p.endpoint.as_deref().unwrap().starts_with("198.18.2."),
        "{p:?}"
    );
    assert_eq!(
        stream_timed(&mut sim, 50, Duration::from_millis(10), |_, _| {}).len(),
        50
    );
}

#[test]
fn symmetric_nats_on_both_sides_stay_relayed_and_say_why() {
    let nat = Some(NatKind::Symmetric);
    let mut sim = network(23, [nat, nat], NodeConfig::default());
    assert_eq!(time_to_direct(&mut sim, Duration::from_secs(8)), None);
    let p = peer_of(&sim, 0);
    assert_eq!(p.path, "relayed");
    assert!(
        p.relay_reason
            .as_deref()
            .unwrap()
            .contains("hole punching failed"),
        "{p:?}"
    );
    assert_eq!(
        stream_timed(&mut sim, 50, Duration::from_millis(10), |_, _| {}).len(),
        50
    );
    assert!(sim.nodes[0].node.counters().punch_failures >= 1);
}

#[test]
fn symmetric_on_one_side_and_filtering_nat_on_the_other_stays_relayed() {
    // The symmetric side's probes come from a port the other side never sent to, and the
    // other side's NAT filters by address and port: no pair can work, as ICE predicts.
    let mut sim = network(
        24,
        [Some(NatKind::Symmetric), Some(NatKind::EndpointIndependent)],
        NodeConfig::default(),
    );
    assert_eq!(time_to_direct(&mut sim, Duration::from_secs(8)), None);
    assert_eq!(peer_of(&sim, 0).path, "relayed");
    assert_eq!(
        stream_timed(&mut sim, 20, Duration::from_millis(10), |_, _| {}).len(),
        20
    );
}

#[test]
fn symmetric_nat_against_an_open_node_goes_direct_through_a_peer_reflexive_address() {
    // The open side answers a probe from an address it was never told about (the
    // symmetric NAT's new port), learns it, and validates it.
    let mut sim = network(25, [Some(NatKind::Symmetric), None], NodeConfig::default());
    let t = time_to_direct(&mut sim, Duration::from_secs(5)).expect("no direct path");
    assert!(t <= Duration::from_secs(1), "direct after {t:?}");
    sim.run_for(Duration::from_millis(500));
    assert_eq!(peer_of(&sim, 1).path, "direct");
}

#[test]
fn disabled_direct_paths_relay_and_say_so() {
    let cfg = NodeConfig {
        direct: false,
        ..NodeConfig::default()
    };
    let mut sim = network(26, [None, None], cfg);
    assert_eq!(time_to_direct(&mut sim, Duration::from_secs(3)), None);
    let p = peer_of(&sim, 0);
    assert!(p.relay_reason.unwrap().contains("disabled"));
}

#[test]
fn a_dead_direct_path_falls_back_to_the_relay_and_recovers() {
    let mut sim = network(27, [None, None], NodeConfig::default());
    time_to_direct(&mut sim, Duration::from_secs(5)).expect("no direct path");
    let (a, b) = (sim.nodes[0].addr.ip(), sim.nodes[1].addr.ip());
    let arrivals = stream_timed(&mut sim, 600, Duration::from_millis(20), |k, sim| {
        if k == 100 {
            // The direct path breaks (a firewall change), the relay still works.
            sim.blocked.push((a, b));
        }
    });
    assert!(
        arrivals.len() >= 600 - 250,
        "only {} of 600 arrived",
        arrivals.len()
    );
    let gap = max_gap(&arrivals);
    assert!(
        gap <= Duration::from_secs(5),
        "traffic stopped for {gap:?} after the direct path died"
    );
    let p = peer_of(&sim, 0);
    assert_eq!(p.path, "relayed");
    assert!(sim.nodes[0].node.counters().direct_paths_lost >= 1);
    // The path heals: direct again after the retry backoff, while data flows.
    sim.blocked.clear();
    let t = time_to_direct(&mut sim, Duration::from_secs(40)).expect("direct path not retried");
    assert!(t <= Duration::from_secs(35), "direct again after {t:?}");
}

#[test]
fn roaming_keeps_the_stream_with_under_a_second_of_gap() {
    let nat = Some(NatKind::EndpointIndependent);
    for (seed, nats) in [(28, [None, None]), (29, [nat, nat])] {
        let mut sim = network(seed, nats, NodeConfig::default());
        time_to_direct(&mut sim, Duration::from_secs(5)).expect("no direct path");
        let before = peer_of(&sim, 1).endpoint;
        let new_addr: SocketAddr = if nats[0].is_some() {
            "198.19.9.2:40000".parse().unwrap()
        } else {
            "198.18.9.2:40000".parse().unwrap()
        };
        let arrivals = stream_timed(&mut sim, 500, Duration::from_millis(20), |k, sim| {
            if k == 200 {
                sim.move_node(0, new_addr);
            }
        });
        let gap = max_gap(&arrivals);
        println!("roaming (seed {seed}, NATs {nats:?}): longest gap {gap:?}");
        assert!(
            gap <= Duration::from_secs(1),
            "seed {seed}: the stream stopped for {gap:?} when node 0 moved"
        );
        assert!(
            arrivals.len() >= 490,
            "seed {seed}: {} of 500",
            arrivals.len()
        );
        let after = peer_of(&sim, 1);
        assert_eq!(after.path, "direct", "seed {seed}: {after:?}");
        assert_ne!(
            after.endpoint, before,
            "seed {seed}: node 1 follows the move"
        );
    }
}

#[test]
fn path_checks_stop_when_data_stops() {
    let mut sim = network(30, [None, None], NodeConfig::default());
    time_to_direct(&mut sim, Duration::from_secs(5)).expect("no direct path");
    sim.run_for(Duration::from_secs(12));
    let sent = sim.nodes[0].node.counters().path_challenges_sent;
    sim.run_for(Duration::from_secs(30));
    assert_eq!(
        sim.nodes[0].node.counters().path_challenges_sent,
        sent,
        "no path checks while no data flows"
    );
}

#[test]
fn a_dead_relay_is_noticed_under_one_way_traffic_and_direct_traffic_goes_on() {
    use veil_proto::NodeEvent;
    let mut sim = network(31, [None, None], NodeConfig::default());
    time_to_direct(&mut sim, Duration::from_secs(5)).expect("no direct path");
    let relay = sim.relay_addr.ip();
    let (a, b) = (sim.nodes[0].addr.ip(), sim.nodes[1].addr.ip());
    sim.blocked.push((a, relay));
    sim.blocked.push((b, relay));
    // 40 s of one-way traffic: node 0 always has something to send.
    let arrivals = stream_timed(&mut sim, 400, Duration::from_millis(100), |_, _| {});
    assert_eq!(
        arrivals.len(),
        400,
        "direct traffic does not need the relay"
    );
    assert!(
        sim.nodes[0]
            .events
            .iter()
            .any(|e| matches!(e, NodeEvent::RelayDown(_))),
        "a sending node must notice its relay is gone"
    );
}

#[test]
fn candidates_get_through_loss() {
    // A lost candidates frame is re-sent until acknowledged, so heavy loss delays the direct
    // path but does not prevent it.
    let cfg = NodeConfig::default();
    let imp = Impairment {
        loss: 0.15,
        ..Impairment::default()
    };
    let mut sim = Sim::new(32, 0, cfg.clone(), imp);
    sim.add_node(cfg.clone());
    sim.add_node(cfg);
    sim.run_for(Duration::from_secs(20));
    assert!(sim.ipv4(0).is_some() && sim.ipv4(1).is_some());
    let t = time_to_direct(&mut sim, Duration::from_secs(30));
    let t = t.unwrap_or_else(|| {
        panic!(
            "no direct path under 15% loss: {:?} {:?}\n{:?}\n{:?}",
            sim.nodes[0].events,
            sim.nodes[0].node.peers(sim.now),
            sim.nodes[0].node.counters().list(),
            sim.nodes[1].node.counters().list()
        )
    });
    println!("direct under 15% loss after {t:?}");
}

#[test]
fn direct_sessions_rekey_while_the_relay_is_down() {
    let mut sim = network(33, [None, None], NodeConfig::default());
    time_to_direct(&mut sim, Duration::from_secs(5)).expect("no direct path");
    let relay = sim.relay_addr.ip();
    let (a, b) = (sim.nodes[0].addr.ip(), sim.nodes[1].addr.ip());
    sim.blocked.push((a, relay));
    sim.blocked.push((b, relay));
    let rekeys = sim.nodes[0].node.counters().rekeys;
    // 300 s: past the rekey time (120 s) and the reject time (180 s) of the first session.
    let arrivals = stream_timed(&mut sim, 600, Duration::from_millis(500), |_, _| {});
    assert_eq!(
        arrivals.len(),
        600,
        "a direct session survives a relay outage"
    );
    assert!(sim.nodes[0].node.counters().rekeys > rekeys);
}

#[test]
fn a_vanished_peer_is_torn_down_after_the_relay_lease() {
    use veil_proto::NodeEvent;
    let mut sim = network(34, [None, None], NodeConfig::default());
    time_to_direct(&mut sim, Duration::from_secs(5)).expect("no direct path");
    sim.remove_node(1);
    let (src, dst) = (sim.ipv4(0).unwrap(), sim.ipv4(1).unwrap());
    for _ in 0..120 {
        sim.tun_send(0, &udp4(src, dst, b"anyone there?"));
        sim.run_for(Duration::from_secs(1));
    }
    assert!(
        sim.nodes[0]
            .events
            .iter()
            .any(|e| matches!(e, NodeEvent::PeerDown { .. })),
        "the session with a vanished peer is torn down"
    );
    assert!(sim.nodes[0].node.peers(sim.now).is_empty());
    assert_eq!(
        sim.relay.status(sim.now).clients,
        1,
        "the relay's lease expired"
    );
    assert!(sim.nodes[0].node.counters().dropped_no_route > 0);
}

/// Relayed inner packets sent by both nodes.
fn relayed(sim: &Sim) -> (u64, u64) {
    let c = |i: usize| sim.nodes[i].node.counters().tx_packets_relayed;
    (c(0), c(1))
}

/// The socket node 1 sees node 0 at (its public address behind a NAT).
fn endpoint_of_0(sim: &Sim) -> SocketAddr {
    let p = peer_of(sim, 1);
    assert_eq!(p.path, "direct", "{p:?}");
    p.endpoint.unwrap().parse().unwrap()
}

#[test]
fn a_socket_rotation_keeps_direct_paths_off_the_relay() {
    // Node 0 moves to a fresh port twice, 3 s apart (the second within the first one's
    // grace), while packets flow both ways every 20 ms: every packet arrives, none goes
    // through the relay, and node 1 follows node 0 to each new port. Without the previous
    // socket carrying the paths, each rotation sends both directions through the relay
    // until the new port is validated.
    let nat = Some(NatKind::EndpointIndependent);
    for (seed, nats) in [(60, [None, None]), (61, [nat, nat]), (62, [nat, None])] {
        let mut sim = network(seed, nats, NodeConfig::default());
        time_to_direct(&mut sim, Duration::from_secs(5)).expect("no direct path");
        let (to_1, to_0) = sim.ping_both_ways(0, 1, 50, Duration::from_millis(20), Duration::ZERO);
        assert!(to_1 >= 49 && to_0 >= 49, "seed {seed}: {to_1} {to_0}");
        let mut seen = vec![endpoint_of_0(&sim)];
        let before = relayed(&sim);
        // Let both sides confirm the path's MTU first: a new port on the same hosts keeps it.
        sim.ping_both_ways(0, 1, 200, Duration::from_millis(20), Duration::ZERO);
        let pmtu = |sim: &Sim| (peer_of(sim, 1).pmtu, peer_of(sim, 1).pmtu_state);
        let confirmed = pmtu(&sim);
        assert_eq!(confirmed.1, "confirmed", "seed {seed}");
        sim.capture = true;
        let mut rotated_at = Vec::new();
        for port in [40100, 40200] {
            sim.rotate_socket(0, port);
            rotated_at.push(sim.elapsed_now());
            let (to_1, to_0) =
                sim.ping_both_ways(0, 1, 150, Duration::from_millis(20), Duration::ZERO);
            assert_eq!(
                (to_1, to_0),
                (150, 150),
                "seed {seed}: packets lost after a rotation"
            );
            let now_at = endpoint_of_0(&sim);
            assert!(
                !seen.contains(&now_at),
                "seed {seed}: node 1 still sends to {now_at}"
            );
            assert_eq!(
                pmtu(&sim),
                confirmed,
                "seed {seed}: path MTU searched again"
            );
            seen.push(now_at);
        }
        let (to_1, to_0) = sim.ping_both_ways(0, 1, 600, Duration::from_millis(20), Duration::ZERO);
        assert_eq!((to_1, to_0), (600, 600), "seed {seed}: packets lost");
        assert_eq!(
            relayed(&sim),
            before,
            "seed {seed}: data went through the relay during a rotation"
        );
        let c = sim.nodes[0].node.counters();
        assert_eq!(
            (c.rotation_paths_moved, c.rotation_paths_lost),
            (2, 0),
            "seed {seed}"
        );
        // Each old socket stops carrying the path once the new one is validated: nothing
        // leaves it half a second after its rotation.
        for (k, at) in rotated_at.iter().enumerate() {
            let old = seen[k];
            let last = sim
                .captured
                .iter()
                .filter(|d| d.from == old || d.to == old)
                .map(|d| d.at)
                .max();
            let late = last.is_some_and(|t| t > *at + Duration::from_millis(500));
            assert!(
                !late,
                "seed {seed}: {old} still used at {last:?}, rotated at {at:?}"
            );
        }
        println!("rotation (seed {seed}, NATs {nats:?}): node 0 seen at {seen:?}");
    }
}

#[test]
fn a_rotated_socket_that_cannot_reach_the_peer_falls_back_after_the_grace() {
    // The new socket cannot reach node 1 (a firewall between those two sockets only): the
    // previous socket keeps carrying the path through its grace, then data goes through
    // the relay. No packet is lost either way.
    let mut sim = network(63, [None, None], NodeConfig::default());
    time_to_direct(&mut sim, Duration::from_secs(5)).expect("no direct path");
    sim.ping_both_ways(0, 1, 50, Duration::from_millis(20), Duration::ZERO);
    let old = endpoint_of_0(&sim);
    let fresh: SocketAddr = SocketAddr::new(old.ip(), 40300);
    let b = sim.nodes[1].addr;
    sim.blocked_sockets.push((fresh, b));
    let before = relayed(&sim);
    sim.rotate_socket(0, fresh.port());
    // Within the grace: still direct, from the old socket, nothing relayed.
    let (to_1, to_0) = sim.ping_both_ways(0, 1, 400, Duration::from_millis(20), Duration::ZERO);
    assert_eq!((to_1, to_0), (400, 400));
    assert_eq!(relayed(&sim), before, "relayed within the grace");
    assert_eq!(endpoint_of_0(&sim), old);
    // Past it: through the relay, nothing lost.
    let (to_1, to_0) = sim.ping_both_ways(0, 1, 250, Duration::from_millis(20), Duration::ZERO);
    assert_eq!((to_1, to_0), (250, 250));
    let c = sim.nodes[0].node.counters();
    assert_eq!((c.rotation_paths_moved, c.rotation_paths_lost), (0, 1));
    assert_eq!(peer_of(&sim, 0).path, "relayed");
    assert!(relayed(&sim).0 > before.0);
}

#[test]
fn of_two_working_paths_the_faster_one_carries_the_data() {
    // Both nodes are dual-stack; their IPv6 route is 20 ms longer each way. A punch
    // challenges both candidates and both answer: the first answer (IPv4) wins on both
    // sides and the later IPv6 answer does not take the data over, so each side validates
    // one path, once.
    for (seed, delay) in [
        (64, Duration::from_millis(20)),
        (65, Duration::from_millis(3)),
    ] {
        let mut sim = dual_stack(seed, Impairment::default(), delay);
        sim.ping_both_ways(0, 1, 50, Duration::from_millis(20), Duration::ZERO);
        for (i, other) in [(0, 1), (1, 0)] {
            let p = peer_of(&sim, i);
            let ipv4 = sim.nodes[other].addr.to_string();
            assert_eq!(
                p.endpoint.as_deref(),
                Some(ipv4.as_str()),
                "seed {seed}: node {i} took the slower path: {p:?}"
            );
            let c = sim.nodes[i].node.counters();
            assert_eq!(c.direct_paths, 1, "seed {seed}: node {i} switched paths");
            assert!(c.path_responses_late >= 1, "seed {seed}: node {i}");
            let rtt = p.rtt_ms.unwrap();
            assert!(rtt < 15.0, "seed {seed}: node {i}: rtt {rtt} ms");
        }
    }
}

/// Two dual-stack nodes; returns the simulator with both on a direct path.
fn dual_stack(seed: u64, impair: Impairment, ipv6_delay: Duration) -> Sim {
    let mut sim = Sim::new(seed, 0, NodeConfig::default(), impair);
    sim.ipv6_delay = ipv6_delay;
    for k in 0..2u16 {
        let i = sim.add_node(NodeConfig::default());
        let a6: SocketAddr = format!("[fd00:198:18::{}]:{}", k + 2, 40001 + k)
            .parse()
            .unwrap();
        sim.add_ipv6(i, a6);
    }
    sim.run_for(Duration::from_secs(5));
    time_to_direct(&mut sim, Duration::from_secs(5)).expect("no direct path");
    // Each side took the first path to answer its punch; the higher key then follows the
    // path the lower key sends on, if that is another one.
    sim.ping_both_ways(0, 1, 50, Duration::from_millis(20), Duration::ZERO);
    sim
}

#[test]
fn a_path_that_slows_down_is_left_for_a_faster_one() {
    // The nodes first meet on IPv4 (their IPv6 route is 20 ms longer each way). Then the
    // IPv4 route gets 30 ms longer each way and IPv6 is as short as IPv4 was: the node with
    // the lower key finds this in its surveys of the candidate paths (every 30 s while
    // data flows), moves the data to IPv6 once a second survey agrees, and the other node
    // follows. Nothing is lost on the way, and nothing moves again afterwards.
    for (seed, slower) in [(70, 30), (71, 30), (75, 3), (76, 4), (77, 5)] {
        let mut sim = dual_stack(seed, Impairment::default(), Duration::from_millis(20));
        for (i, other) in [(0, 1), (1, 0)] {
            let ipv4 = sim.nodes[other].addr.to_string();
            assert_eq!(peer_of(&sim, i).endpoint, Some(ipv4), "seed {seed}");
        }
        let validated: Vec<u64> = (0..2)
            .map(|i| sim.nodes[i].node.counters().direct_paths)
            .collect();
        let (v4a, v4b) = (sim.nodes[0].addr.ip(), sim.nodes[1].addr.ip());
        sim.route_delays
            .push((v4a, v4b, Duration::from_millis(slower)));
        sim.ipv6_delay = Duration::ZERO;
        // 40 s of pings each way, 20 a second: a survey is due within 30 s.
        let got = sim.ping_both_ways(
            0,
            1,
            20000,
            Duration::from_millis(2),
            Duration::from_secs(1),
        );
        assert_eq!(got, (20000, 20000), "seed {seed}: lost on the way");
        let lower = usize::from(sim.nodes[1].node.public_key() < sim.nodes[0].node.public_key());
        for (i, other) in [(0, 1), (1, 0)] {
            let p = peer_of(&sim, i);
            let ipv6 = sim.nodes[other].addr6.unwrap().to_string();
            assert_eq!(
                p.endpoint,
                Some(ipv6),
                "seed {seed}: node {i} still on IPv4"
            );
            let rtt = p.rtt_ms.unwrap();
            assert!(rtt < 15.0, "seed {seed}: node {i}: rtt {rtt} ms");
            let c = sim.nodes[i].node.counters();
            let (surveys, faster) = (c.path_surveys, c.path_switches_faster);
            // The move is the survey's on one side, and one validation (following) on the
            // other: neither went back to the old path in between.
            let followed = c.direct_paths - validated[i];
            if i == lower {
                assert!(surveys >= 2, "seed {seed}: node {i}: {surveys} surveys");
                assert_eq!((faster, followed), (1, 0), "seed {seed}: node {i}");
            } else {
                assert_eq!(followed, 1, "seed {seed}: node {i}");
                assert_eq!((surveys, faster), (0, 0), "seed {seed}: node {i} surveyed");
            }
        }
        // And it stays there.
        let before: Vec<u64> = (0..2)
            .map(|i| sim.nodes[i].node.counters().direct_paths)
            .collect();
        sim.ping_both_ways(0, 1, 1200, Duration::from_millis(50), Duration::ZERO);
        for (i, before) in before.into_iter().enumerate() {
            let c = sim.nodes[i].node.counters();
            assert_eq!(c.direct_paths, before, "seed {seed}: node {i} moved again");
            assert_eq!(
                c.path_switches_faster,
                u64::from(i == lower),
                "seed {seed}: node {i}"
            );
        }
    }
}

#[test]
fn paths_of_the_same_speed_are_not_swapped() {
    // Dual-stack nodes whose IPv4 and IPv6 routes are equally long, 5 ms each way plus up
    // to 4 ms of jitter per datagram: five minutes of traffic, ten surveys, no move.
    let impair = Impairment {
        jitter: Duration::from_millis(4),
        ..Impairment::default()
    };
    for seed in [72, 73, 74] {
        let mut sim = dual_stack(seed, impair, Duration::ZERO);
        let before: Vec<u64> = (0..2)
            .map(|i| sim.nodes[i].node.counters().direct_paths)
            .collect();
        sim.ping_both_ways(0, 1, 3000, Duration::from_millis(100), Duration::ZERO);
        let surveys: u64 = (0..2)
            .map(|i| sim.nodes[i].node.counters().path_surveys)
            .sum();
        println!("seed {seed}: {surveys} surveys in five minutes");
        assert!(surveys >= 9, "seed {seed}: {surveys} surveys");
        for (i, before) in before.into_iter().enumerate() {
            let c = sim.nodes[i].node.counters();
            assert_eq!(c.path_switches_faster, 0, "seed {seed}: node {i}");
            assert_eq!(c.direct_paths, before, "seed {seed}: node {i} moved");
        }
    }
}
