//! Rotation of the network secret (`veil network rotate`): nodes and relays move to the new
//! secret during an overlap without losing a packet, members that did not get the new
//! token keep working until the overlap ends and are cut off after it, and the overlay
//! addresses stay the same.
#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::time::Duration;
use veil_proto::{AdoptError, NodeConfig, ROTATION_GRACE_SECS};
use veil_sim::{udp4, Impairment, Sim};

/// Traffic between pairs, one packet per pair every 100 ms; counts what arrived.
struct Flows {
    pairs: Vec<(usize, usize)>,
    sent: Vec<usize>,
    got: Vec<usize>,
}

impl Flows {
    fn new(pairs: &[(usize, usize)]) -> Flows {
        Flows {
            pairs: pairs.to_vec(),
            sent: vec![0; pairs.len()],
            got: vec![0; pairs.len()],
        }
    }

    /// Runs `secs` seconds of traffic; returns what each pair delivered in that time.
    fn run(&mut self, sim: &mut Sim, secs: u64) -> Vec<(usize, usize)> {
        let mut window = vec![(0, 0); self.pairs.len()];
        for _ in 0..secs * 10 {
            for (k, &(a, b)) in self.pairs.iter().enumerate() {
                let (src, dst) = (sim.ipv4(a).unwrap(), sim.ipv4(b).unwrap());
                let tag = format!("{a}->{b}");
                sim.tun_send(a, &udp4(src, dst, tag.as_bytes()));
                self.sent[k] += 1;
                window[k].0 += 1;
            }
            let before: Vec<usize> = self
                .pairs
                .iter()
                .map(|&(_, b)| sim.nodes[b].tun.len())
                .collect();
            sim.run_for(Duration::from_millis(100));
            for (k, &(a, b)) in self.pairs.iter().enumerate() {
                let tag = format!("{a}->{b}");
                let n = sim.nodes[b].tun[before[k]..]
                    .iter()
                    .filter(|p| p.ends_with(tag.as_bytes()))
                    .count();
                self.got[k] += n;
                window[k].1 += n;
            }
        }
        window
    }
}

#[test]
fn rotation_moves_the_network_without_a_gap_and_cuts_off_stale_members() {
    let mut sim = Sim::new(61, 3, NodeConfig::default(), Impairment::default());
    sim.run_for(Duration::from_secs(10));
    let addrs: Vec<Ipv4Addr> = (0..3).map(|i| sim.ipv4(i).unwrap()).collect();
    let v6_before: Vec<_> = sim.nodes.iter().map(|n| n.node.overlay_ipv6()).collect();
    let old = sim.token.clone();
    // Warm up: 0↔1 and 0↔2 have sessions.
    let mut flows = Flows::new(&[(0, 1), (1, 0), (0, 2)]);
    flows.run(&mut sim, 5);

    // Rotate with a 5-minute overlap; the relay and nodes 0 and 1 adopt the new tokens,
    // node 2 does not (say it was offline when the operator rolled them out).
    let overlap = 300;
    let (join, relay) = sim.rotate(Duration::from_secs(overlap));
    sim.relay.adopt_token(&relay).unwrap();
    sim.with_node(0, |n, _| n.adopt_token(&join)).unwrap();
    flows.run(&mut sim, 2);
    sim.with_node(1, |n, _| n.adopt_token(&join)).unwrap();
    assert_eq!(sim.nodes[1].node.overlay_ipv6(), v6_before[1]);

    // A node that joins during the overlap with the new token reaches the stale node 2.
    let late = sim.add_node(NodeConfig::default());
    sim.run_for(Duration::from_secs(5));
    let late_addr = sim.ipv4(late).unwrap();
    flows.pairs.push((late, 2));
    flows.sent.push(0);
    flows.got.push(0);

    // Through the overlap (sessions re-key twice meanwhile) nothing is lost.
    let during = flows.run(&mut sim, overlap - 20);
    for (k, &(a, b)) in flows.pairs.iter().enumerate() {
        assert_eq!(
            during[k].0, during[k].1,
            "{a}->{b} lost packets during the overlap"
        );
    }
    assert!(sim.relay.counters().handshakes_previous_key > 0);

    // The overlap ends; then the grace; then every session admitted by the old secret has
    // reached its re-key. 0↔1 never stops; 0→2 and late→2 do.
    let after = flows.run(&mut sim, 20 + ROTATION_GRACE_SECS + 240);
    assert_eq!(
        after[0].0, after[0].1,
        "0->1 lost packets after the overlap"
    );
    assert_eq!(
        after[1].0, after[1].1,
        "1->0 lost packets after the overlap"
    );
    let tail = flows.run(&mut sim, 30);
    assert_eq!(tail[0], (300, 300));
    assert_eq!(tail[1], (300, 300));
    assert_eq!(
        tail[2].1, 0,
        "the stale node is still reachable after the overlap"
    );
    assert_eq!(
        tail[3].1, 0,
        "the stale node is still reachable after the overlap"
    );
    assert!(
        !sim.nodes[2].node.status(sim.now).relay_connected,
        "the relay still serves a node with the old secret"
    );

    // Addresses did not change; a node joining now with the new token reaches the others,
    // one with the old token cannot even register.
    for i in 0..2 {
        assert_eq!(sim.ipv4(i), Some(addrs[i]));
        assert_eq!(sim.nodes[i].node.overlay_ipv6(), v6_before[i]);
    }
    assert_eq!(sim.ipv4(late), Some(late_addr));
    let fresh = sim.add_node(NodeConfig::default());
    let stale = sim.add_node_with_token(NodeConfig::default(), &old);
    sim.run_for(Duration::from_secs(10));
    assert!(sim.ipv4(fresh).is_some());
    assert!(
        sim.ipv4(stale).is_none(),
        "a node with the old token registered"
    );
    let mut last = Flows::new(&[(fresh, 1)]);
    let w = last.run(&mut sim, 5);
    assert!(w[0].1 >= 45, "new node -> 1: {:?}", w[0]);
}

#[test]
fn a_token_of_another_network_is_refused() {
    let mut sim = Sim::new(62, 1, NodeConfig::default(), Impairment::default());
    sim.run_for(Duration::from_secs(5));
    let other = Sim::new(63, 0, NodeConfig::default(), Impairment::default());
    let (foreign, _) = {
        let mut o = other;
        o.rotate(Duration::from_secs(60))
    };
    assert_eq!(
        sim.with_node(0, |n, _| n.adopt_token(&foreign)),
        Err(AdoptError::OtherNetwork)
    );
    // A relay token of another relay is refused too.
    let (_, relay) = {
        let mut o = Sim::new(64, 0, NodeConfig::default(), Impairment::default());
        o.rotate(Duration::from_secs(60))
    };
    assert_eq!(sim.relay.adopt_token(&relay), Err(AdoptError::OtherRelay));
}
