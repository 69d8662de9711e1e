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
