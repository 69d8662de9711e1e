//! Thousands of nodes in the simulator (no sockets): joins, lookups and departures. A node's
//! state grows with the peers it talks to, not with the size of the network; the relay's
//! grows with the nodes present and shrinks when they leave.
#![allow(clippy::unwrap_used)]

use std::time::Duration;
use veil_proto::NodeConfig;
use veil_sim::{udp4, Impairment, Sim};

struct Measure {
    /// Node 0's state entries once it talks to three peers.
    node0: usize,
    /// The relay's clients before and after 10% of the nodes left.
    clients: (usize, usize),
}

fn measure(n: usize, seed: u64) -> Measure {
    let mut sim = Sim::new(seed, n, NodeConfig::default(), Impairment::default());
    sim.run_for(Duration::from_secs(15));
    for i in 0..n {
        assert!(sim.ipv4(i).is_some(), "node {i} of {n} did not join");
    }
    // Lookups all over the network by other nodes, then node 0 talks to three peers.
    for k in 0..50 {
        let (a, b) = (4 + (k * 7) % (n - 4), 4 + (k * 13 + 5) % (n - 4));
        if a != b {
            let (sa, sb) = (sim.ipv4(a).unwrap(), sim.ipv4(b).unwrap());
            sim.tun_send(a, &udp4(sa, sb, b"elsewhere"));
        }
    }
    let s0 = sim.ipv4(0).unwrap();
    for p in 1..=3 {
        let d = sim.ipv4(p).unwrap();
        sim.tun_send(0, &udp4(s0, d, b"hello"));
    }
    sim.run_for(Duration::from_secs(2));
    for p in 1..=3 {
        assert_eq!(sim.nodes[p].tun.len(), 1, "peer {p} got nothing");
    }
    let node0 = sim.nodes[0].node.state_entries();
    let before = sim.relay.status(sim.now).clients;
    // A tenth of the network leaves without a word; the relay's lease expires them.
    let leaving: Vec<usize> = (4..n).step_by(10).collect();
    for &i in &leaving {
        sim.remove_node(i);
    }
    sim.run_for(Duration::from_secs(100));
    let after = sim.relay.status(sim.now).clients;
    assert_eq!(
        after,
        n - leaving.len(),
        "departed nodes expire from the relay"
    );
    Measure {
        node0,
        clients: (before, after),
    }
}

#[test]
fn a_nodes_state_grows_with_its_sessions_not_with_the_network() {
    let small = measure(40, 41);
    let big = measure(2000, 42);
    assert_eq!(small.clients.0, 40);
    assert_eq!(big.clients.0, 2000);
    assert_eq!(
        small.node0, big.node0,
        "node 0 talks to 3 peers in both networks; its state must not depend on the network size"
    );
}
