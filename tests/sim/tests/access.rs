//! Access control: in a network with a CA, only nodes with a valid certificate register and
//! talk; a certificate's IPv4 is the node's address; expired, foreign or misattributed
//! certificates are refused by the relay and by peers.
#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::time::Duration;
use veil_proto::{CaKey, Identity, NodeConfig};
use veil_sim::{udp4, Impairment, Sim};

const DAY: u64 = 86_400;

fn certified(ca: &CaKey, id: &Identity, ipv4: Option<Ipv4Addr>, not_after: u64) -> NodeConfig {
    NodeConfig {
        cert: Some(
            ca.sign(*id.public(), ipv4, &["web".into()], not_after)
                .unwrap(),
        ),
        ..NodeConfig::default()
    }
}

#[test]
fn certified_nodes_join_and_talk_and_others_cannot_register() {
    let ca = CaKey::from_seed([7; 32]);
    let mut sim = Sim::with_ca(
        51,
        0,
        NodeConfig::default(),
        Impairment::default(),
        Some(ca.public()),
    );
    let valid = Sim::BASE_UNIX + DAY;
    let ids: Vec<Identity> = (0..6u8)
        .map(|i| Identity::from_secret([i + 1; 32]))
        .collect();
    let pinned = Ipv4Addr::new(100, 64, 9, 9);
    // 0, 1: valid (1 with a pinned address); 2: no certificate; 3: expired; 4: signed by
    // another CA; 5: a valid certificate for someone else's key.
    let other = CaKey::from_seed([8; 32]);
    let cfgs = [
        certified(&ca, &ids[0], None, valid),
        certified(&ca, &ids[1], Some(pinned), valid),
        NodeConfig::default(),
        certified(&ca, &ids[3], None, Sim::BASE_UNIX - 1),
        certified(&other, &ids[4], None, valid),
        certified(&ca, &ids[0], None, valid),
    ];
    for (cfg, id) in cfgs.into_iter().zip(ids) {
        sim.add_node_with_identity(cfg, id);
    }
    sim.run_for(Duration::from_secs(20));
    assert!(sim.ipv4(0).is_some());
    assert_eq!(
        sim.ipv4(1),
        Some(pinned),
        "the certificate's address is the node's"
    );
    for i in 2..6 {
        assert_eq!(
            sim.ipv4(i),
            None,
            "node {i} registered without a valid certificate"
        );
    }
    assert_eq!(sim.relay.status(sim.now).clients, 2);
    assert!(sim.relay.counters().dropped_uncertified >= 4);
    // The certified pair talks, both ways.
    let (a, b) = (sim.ipv4(0).unwrap(), pinned);
    sim.tun_send(0, &udp4(a, b, b"hello"));
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.nodes[1].tun.len(), 1);
    sim.tun_send(1, &udp4(b, a, b"hi"));
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.nodes[0].tun.len(), 1);
}

#[test]
fn an_expired_certificate_ends_the_sessions_at_the_next_rekey() {
    let ca = CaKey::from_seed([9; 32]);
    let mut sim = Sim::with_ca(
        52,
        0,
        NodeConfig::default(),
        Impairment::default(),
        Some(ca.public()),
    );
    let a = Identity::from_secret([11; 32]);
    let b = Identity::from_secret([12; 32]);
    // b's certificate runs out 60 s into the run.
    sim.add_node_with_identity(certified(&ca, &a, None, Sim::BASE_UNIX + DAY), a);
    sim.add_node_with_identity(certified(&ca, &b, None, Sim::BASE_UNIX + 60), b);
    sim.run_for(Duration::from_secs(5));
    let (ia, ib) = (sim.ipv4(0).unwrap(), sim.ipv4(1).unwrap());
    let mut got_late = 0;
    for k in 0..400 {
        sim.tun_send(1, &udp4(ib, ia, b"from b"));
        sim.run_for(Duration::from_secs(1));
        if k == 390 {
            got_late = sim.nodes[0].tun.len();
        }
    }
    let delivered = sim.nodes[0].tun.len();
    assert!(
        delivered >= 50,
        "b talked while its certificate was valid ({delivered})"
    );
    assert_eq!(
        got_late, delivered,
        "nothing from b arrives in the last 10 s: its certificate expired and the sessions re-keyed"
    );
    assert!(
        sim.nodes[0].node.counters().dropped_uncertified + sim.relay.counters().dropped_uncertified
            > 0
    );
}

fn tagged(ca: &CaKey, id: &Identity, tag: &str) -> NodeConfig {
    NodeConfig {
        cert: Some(
            ca.sign(*id.public(), None, &[tag.to_string()], Sim::BASE_UNIX + DAY)
                .unwrap(),
        ),
        ..NodeConfig::default()
    }
}

/// Sends one packet from `a` to `b` and reports whether it arrived.
fn reaches(sim: &mut Sim, a: usize, b: usize) -> bool {
    let before = sim.nodes[b].tun.len();
    let (sa, sb) = (sim.ipv4(a).unwrap(), sim.ipv4(b).unwrap());
    sim.tun_send(a, &udp4(sa, sb, b"policy?"));
    sim.run_for(Duration::from_secs(2));
    sim.nodes[b].tun.len() > before
}

#[test]
fn a_pushed_policy_limits_tags_and_revokes_within_seconds_and_survives_a_relay_restart() {
    let ca = CaKey::from_seed([21; 32]);
    let mut sim = Sim::with_ca(
        53,
        0,
        NodeConfig::default(),
        Impairment::default(),
        Some(ca.public()),
    );
    let ids: Vec<Identity> = (0..4u8)
        .map(|i| Identity::from_secret([30 + i; 32]))
        .collect();
    for (id, tag) in ids.iter().zip(["web", "db", "web", "other"]) {
        sim.add_node_with_identity(tagged(&ca, id, tag), id.clone());
    }
    sim.run_for(Duration::from_secs(5));
    // Before any policy, everyone talks.
    assert!(reaches(&mut sim, 0, 3));
    // The operator pushes a policy through node 1: web may talk to db, nothing else.
    let p = ca
        .sign_policy(1, &[("web".into(), "db".into())], &[])
        .unwrap();
    let bytes = p.to_bytes();
    assert_eq!(
        sim.with_node(1, |n, now| n.set_policy(now, &bytes)),
        Ok(true)
    );
    sim.run_for(Duration::from_secs(1));
    for i in 0..4 {
        assert_eq!(
            sim.nodes[i].node.policy_serial(),
            1,
            "node {i} got the policy"
        );
    }
    assert!(reaches(&mut sim, 0, 1), "web -> db");
    assert!(reaches(&mut sim, 1, 2), "db -> web");
    assert!(!reaches(&mut sim, 0, 3), "web -> other is refused");
    assert!(!reaches(&mut sim, 3, 0), "other -> web is refused");
    assert!(sim.nodes[0].node.counters().dropped_policy >= 1);
    assert!(sim.nodes[3].node.counters().dropped_policy >= 1);
    // Revoke node 2 (a web node that was talking to db).
    assert!(reaches(&mut sim, 2, 1));
    let p2 = ca
        .sign_policy(2, &[("web".into(), "db".into())], &[*ids[2].public()])
        .unwrap();
    let bytes2 = p2.to_bytes();
    assert_eq!(
        sim.with_node(0, |n, now| n.set_policy(now, &bytes2)),
        Ok(true)
    );
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sim.relay.counters().clients_revoked, 1);
    assert_eq!(
        sim.relay.status(sim.now).clients,
        3,
        "the relay dropped the revoked node"
    );
    assert!(!reaches(&mut sim, 2, 1), "a revoked node reaches nobody");
    assert!(!reaches(&mut sim, 1, 2), "nobody reaches a revoked node");
    // An old policy does not roll the network back.
    assert_eq!(
        sim.with_node(1, |n, now| n.set_policy(now, &bytes)),
        Ok(false)
    );
    // The relay restarts and forgets; the nodes give it the policy back on registering.
    sim.restart_relay();
    sim.run_for(Duration::from_secs(60));
    // Nodes re-push what they hold (the revoked node its older one, the others the newest,
    // which wins and revokes it again).
    assert!(
        sim.relay.counters().policies >= 1,
        "a node re-pushed the policy"
    );
    assert_eq!(
        sim.relay.status(sim.now).clients,
        3,
        "the revoked node is out again"
    );
    assert!(reaches(&mut sim, 0, 1));
    assert!(!reaches(&mut sim, 0, 3));
}

/// Subnet routes and exits are no way around the policy: a member whose tag may not talk to
/// the gateway's does not reach the subnet behind it either.
#[test]
fn the_policy_applies_to_routed_subnets() {
    let ca = CaKey::from_seed([23; 32]);
    let mut sim = Sim::with_ca(
        57,
        0,
        NodeConfig::default(),
        Impairment::default(),
        Some(ca.public()),
    );
    let ids: Vec<Identity> = (0..3u8)
        .map(|i| Identity::from_secret([60 + i; 32]))
        .collect();
    let gw = sim.add_node_with_identity(
        NodeConfig {
            advertise_routes: vec!["198.18.50.0/24".parse().unwrap()],
            ..tagged(&ca, &ids[0], "gw")
        },
        ids[0].clone(),
    );
    let web = sim.add_node_with_identity(tagged(&ca, &ids[1], "web"), ids[1].clone());
    let other = sim.add_node_with_identity(tagged(&ca, &ids[2], "other"), ids[2].clone());
    sim.run_for(Duration::from_secs(5));
    let p = ca
        .sign_policy(1, &[("web".into(), "gw".into())], &[])
        .unwrap();
    let bytes = p.to_bytes();
    assert_eq!(
        sim.with_node(gw, |n, now| n.set_policy(now, &bytes)),
        Ok(true)
    );
    sim.run_for(Duration::from_secs(1));
    let host = Ipv4Addr::new(198, 18, 50, 7);
    let to_subnet = |sim: &mut Sim, i: usize| {
        let before = sim.nodes[gw].tun.len();
        let src = sim.ipv4(i).unwrap();
        for _ in 0..3 {
            sim.tun_send(i, &udp4(src, host, b"to the subnet"));
            sim.run_for(Duration::from_secs(1));
        }
        sim.nodes[gw].tun.len() > before
    };
    assert!(
        to_subnet(&mut sim, web),
        "web may talk to gw, and so to its subnet"
    );
    assert!(!to_subnet(&mut sim, other), "other may not");
    assert!(
        sim.nodes[other].node.counters().dropped_policy
            + sim.nodes[gw].node.counters().dropped_policy
            >= 1
    );
}
