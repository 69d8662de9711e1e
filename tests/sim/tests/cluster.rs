//! Relays sharing one rendezvous (the in-memory store of `relay/cluster.rs`): nodes homed
//! on different relays find each other and talk through relay links; names are unique across
//! relays; a node whose relay dies moves to another and its relayed peers come back.
#![allow(clippy::unwrap_used)]

use std::time::Duration;
use veil_proto::{NodeConfig, NodeEvent};
use veil_sim::{udp4, Sim};

fn relayed_only() -> NodeConfig {
    NodeConfig {
        direct: false,
        ..NodeConfig::default()
    }
}

fn counter(sim: &Sim, relay: usize, name: &str) -> u64 {
    let r = if relay == 0 {
        &sim.relay
    } else {
        &sim.more_relays[relay - 1].1
    };
    r.counters()
        .list()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
        .unwrap()
}

fn clients(sim: &Sim, relay: usize) -> usize {
    let r = if relay == 0 {
        &sim.relay
    } else {
        &sim.more_relays[relay - 1].1
    };
    r.status(sim.now).clients
}

#[test]
fn nodes_homed_on_different_relays_reach_each_other() {
    let mut sim = Sim::with_cluster(91, 3, 0, relayed_only());
    let a = sim.add_node(relayed_only());
    sim.home_next_at(2);
    let b = sim.add_node(relayed_only());
    sim.run_for(Duration::from_secs(3));
    assert_eq!(clients(&sim, 0), 1, "a is homed on relay 0");
    assert_eq!(clients(&sim, 2), 1, "b is homed on relay 2");
    let (ab, ba) = sim.ping_both_ways(a, b, 50, Duration::from_millis(20), Duration::from_secs(1));
    assert_eq!((ab, ba), (50, 50), "every packet arrives both ways");
    // The store found the other relay's node, and the datagrams went relay to relay.
    assert!(counter(&sim, 0, "cluster_hits") >= 1);
    assert!(counter(&sim, 0, "transferred") >= 50);
    assert!(counter(&sim, 2, "transferred") >= 50);
    assert_eq!(
        counter(&sim, 1, "transferred"),
        0,
        "relay 1 carries nothing"
    );
    let st = sim.relay.cluster_status(sim.now).unwrap();
    assert_eq!(st.peers.len(), 2, "{st:?}");
    assert!(st.peers.iter().all(|p| p.link_up), "{st:?}");
    assert_eq!(sim.nodes[a].node.peers(sim.now)[0].path, "relayed");
}

#[test]
fn names_are_unique_across_relays() {
    let named = |n: &str| NodeConfig {
        name: Some(n.into()),
        ipv4_hint: Some("100.64.7.7".parse().unwrap()),
        ..relayed_only()
    };
    let mut sim = Sim::with_cluster(92, 2, 0, relayed_only());
    let a = sim.add_node(named("web"));
    sim.run_for(Duration::from_secs(2));
    sim.home_next_at(1);
    let b = sim.add_node(named("web"));
    sim.run_for(Duration::from_secs(5));
    assert_eq!(sim.ipv4(a), Some("100.64.7.7".parse().unwrap()));
    let ib = sim.ipv4(b).unwrap();
    assert_ne!(ib, "100.64.7.7".parse::<std::net::Ipv4Addr>().unwrap());
    assert!(
        sim.nodes[b]
            .events
            .iter()
            .any(|e| matches!(e, NodeEvent::NameTaken { .. })),
        "b is told its name is taken: {:?}",
        sim.nodes[b].events
    );
    assert!(
        counter(&sim, 1, "cluster_conflicts") >= 2,
        "the IPv4 and the name"
    );
    // A node that leaves releases its names: a third node may take them.
    sim.with_node(a, |n, now| n.shutdown(now));
    sim.remove_node(a);
    sim.run_for(Duration::from_secs(1));
    assert_eq!(clients(&sim, 0), 0, "a left relay 0");
    assert_eq!(
        sim.store.as_ref().unwrap().len(),
        3,
        "a's names were released"
    );
    let c = sim.add_node(named("web"));
    sim.run_for(Duration::from_secs(5));
    assert_eq!(
        sim.ipv4(c),
        Some("100.64.7.7".parse().unwrap()),
        "{:?} {:?} {:?}",
        sim.nodes[c].events,
        sim.relay.counters().list(),
        sim.store.as_ref().map(|s| s.len())
    );
    assert!(!sim.nodes[c]
        .events
        .iter()
        .any(|e| matches!(e, NodeEvent::NameTaken { .. })));
}

#[test]
fn a_node_whose_relay_dies_moves_and_its_relayed_peers_come_back_within_2_s() {
    let mut sim = Sim::with_cluster(93, 3, 0, relayed_only());
    let a = sim.add_node(relayed_only());
    sim.home_next_at(1);
    let b = sim.add_node(relayed_only());
    sim.run_for(Duration::from_secs(3));
    let (ab, ba) = sim.ping_both_ways(a, b, 20, Duration::from_millis(20), Duration::from_secs(1));
    assert_eq!((ab, ba), (20, 20));
    // Relay 0 (a's home) dies: nothing reaches it or leaves it any more.
    let dead = sim.relay_addr.ip();
    for i in [a, b] {
        sim.blocked.push((dead, sim.nodes[i].addr.ip()));
    }
    let others: Vec<_> = sim.more_relays.iter().map(|(addr, _)| addr.ip()).collect();
    for ip in others {
        sim.blocked.push((dead, ip));
    }
    let (ia, ib) = (sim.ipv4(a).unwrap(), sim.ipv4(b).unwrap());
    // a keeps sending (a transfer in progress); b answers what arrives.
    let killed = sim.now;
    let mut back_at = None;
    for k in 0..400 {
        let seen = sim.nodes[b].tun.len();
        sim.tun_send(a, &udp4(ia, ib, format!("data {k}").as_bytes()));
        sim.run_for(Duration::from_millis(10));
        if sim.nodes[b].tun.len() > seen && back_at.is_none() && k > 0 {
            let gap = sim.now - killed;
            if gap > Duration::from_millis(50) {
                back_at = Some(gap);
                break;
            }
        }
    }
    let back = back_at.expect("a's packets reach b again");
    assert!(back <= Duration::from_secs(2), "back after {back:?}");
    assert_eq!(
        clients(&sim, 0),
        1,
        "(the dead relay still thinks it has a)"
    );
    // And b's packets reach a on its new relay.
    let (ab, ba) = sim.ping_both_ways(a, b, 20, Duration::from_millis(20), Duration::from_secs(1));
    assert_eq!((ab, ba), (20, 20));
}

#[test]
fn a_failover_keeps_direct_sessions() {
    let mut sim = Sim::with_cluster(94, 2, 0, NodeConfig::default());
    let a = sim.add_node(NodeConfig::default());
    sim.home_next_at(1);
    let b = sim.add_node(NodeConfig::default());
    sim.run_for(Duration::from_secs(3));
    let (ab, ba) = sim.ping_both_ways(a, b, 50, Duration::from_millis(20), Duration::from_secs(1));
    assert_eq!((ab, ba), (50, 50));
    assert_eq!(sim.nodes[a].node.peers(sim.now)[0].path, "direct");
    let handshakes = sim.nodes[a].node.counters().handshakes_completed;
    // a's relay dies while a and b talk directly.
    let dead = sim.relay_addr.ip();
    for ip in [
        sim.nodes[a].addr.ip(),
        sim.nodes[b].addr.ip(),
        sim.more_relays[0].0.ip(),
    ] {
        sim.blocked.push((dead, ip));
    }
    let (ab, ba) = sim.ping_both_ways(a, b, 200, Duration::from_millis(20), Duration::from_secs(1));
    assert_eq!((ab, ba), (200, 200), "no packet lost on the direct path");
    // Keepalive (25 s) + probe timeout: a notices and moves to relay 1.
    sim.run_for(Duration::from_secs(35));
    assert_eq!(clients(&sim, 1), 2, "a moved to relay 1");
    assert_eq!(sim.nodes[a].node.peers(sim.now)[0].path, "direct");
    let (ab, ba) = sim.ping_both_ways(a, b, 20, Duration::from_millis(20), Duration::from_secs(1));
    assert_eq!((ab, ba), (20, 20));
    // The direct session was kept: only the relay handshake is new.
    assert!(
        sim.nodes[a].node.counters().handshakes_completed <= handshakes + 2,
        "{} -> {}",
        handshakes,
        sim.nodes[a].node.counters().handshakes_completed
    );
}

#[test]
fn a_subnet_behind_a_node_of_another_relay_is_reachable() {
    let mut sim = Sim::with_cluster(95, 2, 0, relayed_only());
    let gw = sim.add_node(NodeConfig {
        advertise_routes: vec!["198.18.50.0/24".parse().unwrap()],
        ..relayed_only()
    });
    sim.home_next_at(1);
    let client = sim.add_node(relayed_only());
    sim.run_for(Duration::from_secs(3));
    assert_eq!(clients(&sim, 0), 1);
    assert_eq!(clients(&sim, 1), 1);
    let status = sim.nodes[client].node.status(sim.now);
    assert_eq!(
        status.routes.len(),
        1,
        "the route crossed relays: {:?}",
        status.routes
    );
    let c4 = sim.ipv4(client).unwrap();
    let host = std::net::Ipv4Addr::new(198, 18, 50, 7);
    let before = sim.nodes[gw].tun.len();
    for k in 0..5u8 {
        sim.tun_send(client, &udp4(c4, host, &[k; 20]));
        sim.run_for(Duration::from_millis(100));
    }
    let got = sim.nodes[gw].tun[before..]
        .iter()
        .filter(|p| veil_sim::dst_of(p) == Some(std::net::IpAddr::V4(host)))
        .count();
    assert_eq!(got, 5, "the gateway on relay 0 got the subnet's packets");
    // The gateway leaves: the route is withdrawn at the other relay too.
    sim.with_node(gw, |n, now| n.shutdown(now));
    sim.remove_node(gw);
    sim.run_for(Duration::from_secs(3));
    assert!(sim.nodes[client].node.status(sim.now).routes.is_empty());
}

#[test]
fn relays_that_cannot_reach_each_other_carry_traffic_on_the_bus() {
    let mut sim = Sim::with_cluster(96, 2, 0, relayed_only());
    // No UDP between the two relays: no link can come up.
    let (r0, r1) = (sim.relay_addr.ip(), sim.more_relays[0].0.ip());
    sim.blocked.push((r0, r1));
    // (The link the relays opened at start is declared dead after 3 s of silence.)
    sim.run_for(Duration::from_secs(5));
    let a = sim.add_node(relayed_only());
    sim.home_next_at(1);
    let b = sim.add_node(relayed_only());
    sim.run_for(Duration::from_secs(3));
    let (ab, ba) = sim.ping_both_ways(a, b, 50, Duration::from_millis(20), Duration::from_secs(1));
    assert_eq!(
        (ab, ba),
        (50, 50),
        "every packet arrives both ways: r0 {:?} r1 {:?} a {:?} b {:?}",
        sim.relay.counters().list(),
        sim.more_relays[0].1.counters().list(),
        sim.nodes[a].node.counters().list(),
        sim.nodes[b].node.counters().list()
    );
    assert!(counter(&sim, 0, "bus_frames_sent") >= 50);
    assert!(counter(&sim, 1, "bus_frames_received") >= 50);
    let st = sim.relay.cluster_status(sim.now).unwrap();
    assert!(!st.peers[0].link_up, "{st:?}");
    // With the bus cut too, nothing gets through.
    sim.bus_down = true;
    let (ab, ba) = sim.ping_both_ways(a, b, 10, Duration::from_millis(20), Duration::from_secs(1));
    assert_eq!((ab, ba), (0, 0));
}

fn policies(sim: &Sim, relay: usize) -> u64 {
    counter(sim, relay, "policies")
}

/// A policy pushed through a node of one relay holds on every relay of the shared
/// rendezvous: each adopts it (from the first over their links, or over the store's bus)
/// and hands it to its own nodes, so a revoked node reaches nobody and cannot register
/// anywhere; a relay that restarts with no node to push it back learns it again from the
/// other relays as soon as its links are up.
#[test]
fn a_policy_crosses_relays_and_comes_back_to_a_restarted_one() {
    use veil_proto::{CaKey, Identity};
    let ca = CaKey::from_seed([23; 32]);
    let tagged = |id: &Identity, tag: &str| NodeConfig {
        cert: Some(
            ca.sign(
                *id.public(),
                None,
                &[tag.to_string()],
                Sim::BASE_UNIX + 86_400,
            )
            .unwrap(),
        ),
        ..relayed_only()
    };
    let mut sim = Sim::with_cluster_ca(96, 3, 0, relayed_only(), Some(ca.public()));
    let ids: Vec<Identity> = (0..3u8)
        .map(|i| Identity::from_secret([60 + i; 32]))
        .collect();
    let a = sim.add_node_with_identity(tagged(&ids[0], "web"), ids[0].clone());
    sim.home_next_at(1);
    let b = sim.add_node_with_identity(tagged(&ids[1], "db"), ids[1].clone());
    let c = sim.add_node_with_identity(tagged(&ids[2], "web"), ids[2].clone());
    sim.run_for(Duration::from_secs(5));
    assert_eq!(
        (clients(&sim, 0), clients(&sim, 1), clients(&sim, 2)),
        (1, 2, 0),
        "a on relay 0; b and c on relay 1; none on relay 2"
    );
    let (bc, cb) = sim.ping_both_ways(b, c, 3, Duration::from_millis(50), Duration::from_secs(1));
    assert_eq!((bc, cb), (3, 3), "before any policy, b and c talk");

    // The operator revokes c, through a, whose relay is not c's.
    let p = ca
        .sign_policy(1, &[("web".into(), "db".into())], &[*ids[2].public()])
        .unwrap()
        .to_bytes();
    assert_eq!(sim.with_node(a, |n, now| n.set_policy(now, &p)), Ok(true));
    sim.run_for(Duration::from_secs(2));
    for r in 0..3 {
        assert_eq!(policies(&sim, r), 1, "relay {r} adopted the policy");
    }
    assert!(counter(&sim, 0, "policies_relayed") >= 2);
    assert_eq!(
        sim.nodes[b].node.policy_serial(),
        1,
        "b got it from relay 1"
    );
    assert_eq!(counter(&sim, 1, "clients_revoked"), 1, "relay 1 dropped c");
    let (bc, cb) = sim.ping_both_ways(b, c, 3, Duration::from_millis(50), Duration::from_secs(2));
    assert_eq!(
        (bc, cb),
        (0, 0),
        "the revoked node reaches nobody, nobody reaches it"
    );

    // Relay 2 restarts with no node of its own: its links bring the policy back, and c,
    // failing over to it, is refused there too.
    sim.restart_more_relay(1);
    sim.run_for(Duration::from_secs(10));
    assert_eq!(
        policies(&sim, 2),
        1,
        "the restarted relay learnt it over a link"
    );
    sim.run_for(Duration::from_secs(30));
    assert_eq!(clients(&sim, 2), 0, "c registered nowhere");
    assert_eq!(clients(&sim, 0), 1);
    assert_eq!(clients(&sim, 1), 1, "only b on relay 1");
}

/// With no UDP between the relays, a policy crosses on the store's bus.
#[test]
fn a_policy_crosses_on_the_bus_when_relays_cannot_reach_each_other() {
    use veil_proto::{CaKey, Identity};
    let ca = CaKey::from_seed([24; 32]);
    let cert = |id: &Identity| NodeConfig {
        cert: Some(
            ca.sign(*id.public(), None, &["web".into()], Sim::BASE_UNIX + 86_400)
                .unwrap(),
        ),
        ..relayed_only()
    };
    let mut sim = Sim::with_cluster_ca(97, 2, 0, relayed_only(), Some(ca.public()));
    let (r0, r1) = (sim.relay_addr.ip(), sim.more_relays[0].0.ip());
    sim.blocked.push((r0, r1));
    sim.run_for(Duration::from_secs(5));
    let ids = [
        Identity::from_secret([70; 32]),
        Identity::from_secret([71; 32]),
    ];
    let a = sim.add_node_with_identity(cert(&ids[0]), ids[0].clone());
    sim.home_next_at(1);
    let b = sim.add_node_with_identity(cert(&ids[1]), ids[1].clone());
    sim.run_for(Duration::from_secs(3));
    let p = ca.sign_policy(5, &[], &[]).unwrap().to_bytes();
    assert_eq!(sim.with_node(a, |n, now| n.set_policy(now, &p)), Ok(true));
    sim.run_for(Duration::from_secs(2));
    assert_eq!(policies(&sim, 1), 1, "relay 1 adopted it");
    assert!(counter(&sim, 1, "bus_frames_received") >= 1);
    assert_eq!(sim.nodes[b].node.policy_serial(), 5, "and gave it to b");
}
