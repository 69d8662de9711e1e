//! A member of the network replays a captured handshake at a relay as fast as it can: every
//! copy opens the handshake seal (the attacker has the secret), so only a rate limit stands
//! between the flood and one X25519 + ML-KEM operation per copy. The relay's work stays
//! bounded and its other clients carry on.
#![allow(clippy::unwrap_used)]

use std::time::Duration;
use veil_proto::NodeConfig;
use veil_sim::{udp4, Impairment, Sim};

#[test]
fn a_replayed_handshake_flood_costs_the_relay_bounded_work() {
    let mut sim = Sim::new(81, 0, NodeConfig::default(), Impairment::default());
    sim.capture = true;
    sim.add_node(NodeConfig::default());
    sim.add_node(NodeConfig::default());
    sim.run_for(Duration::from_secs(3));
    let relay = sim.relay_addr;
    let from = sim.nodes[0].addr;
    // Node 0's first datagrams to the relay: the fragments of its handshake message 1.
    let init: Vec<Vec<u8>> = sim
        .captured
        .iter()
        .filter(|c| c.from == from && c.to == relay)
        .take_while(|c| c.bytes.len() > 600)
        .map(|c| c.bytes.clone())
        .collect();
    assert!(init.len() >= 2, "handshake fragments not found");
    sim.capture = false;
    let answered = sim.relay.counters().handshakes_answered;
    // 10,000 copies within 2 simulated seconds, from the attacker's own address.
    let attacker = std::net::SocketAddr::from(([198, 18, 9, 9], 5555));
    for k in 0..5_000 {
        for f in &init {
            sim.inject(attacker, relay, f.clone());
        }
        if k % 25 == 0 {
            sim.run_for(Duration::from_millis(10));
        }
    }
    sim.run_for(Duration::from_secs(1));
    let c = sim.relay.counters();
    let worked = c.dropped_handshake_replay + c.handshakes_answered - answered;
    println!(
        "flood: {} limited, {} refused as replays after the work, {} answered",
        c.dropped_rate_limited,
        c.dropped_handshake_replay,
        c.handshakes_answered - answered
    );
    assert!(
        c.dropped_rate_limited >= 4_900,
        "{}",
        c.dropped_rate_limited
    );
    assert!(
        worked <= 50 + 20 * 3 + 10,
        "the relay did {worked} handshake operations"
    );
    // Meanwhile the two honest nodes still talk.
    let (a, b) = (sim.ipv4(0).unwrap(), sim.ipv4(1).unwrap());
    let before = sim.nodes[1].tun.len();
    for _ in 0..10 {
        sim.tun_send(0, &udp4(a, b, b"during the flood"));
        sim.run_for(Duration::from_millis(50));
    }
    assert_eq!(sim.nodes[1].tun.len() - before, 10);
}
