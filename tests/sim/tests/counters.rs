//! The traffic-by-path counters behind `veil_inner_bytes_total{path}`: what crosses a direct
//! path counts as direct on both ends, what crosses the relay as relayed, and the relay's
//! round trip is reported once it registered.
#![allow(clippy::unwrap_used)]

use std::time::Duration;
use veil_proto::NodeConfig;
use veil_sim::Sim;

fn counter(sim: &Sim, i: usize, name: &str) -> u64 {
    sim.nodes[i]
        .node
        .counters()
        .list()
        .into_iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .unwrap()
}

#[test]
fn bytes_are_counted_by_the_path_they_take() {
    for direct in [true, false] {
        let cfg = NodeConfig {
            direct,
            ..NodeConfig::default()
        };
        let mut sim = Sim::new(91, 2, cfg, Default::default());
        sim.run_for(Duration::from_secs(5));
        // Let a direct path form first, then measure what crosses it.
        sim.ping_both_ways(0, 1, 20, Duration::from_millis(20), Duration::from_secs(2));
        let (kind, other) = if direct {
            ("direct", "relayed")
        } else {
            ("relayed", "direct")
        };
        let before: Vec<u64> = (0..2)
            .map(|i| counter(&sim, i, &format!("tx_bytes_{kind}")))
            .collect();
        let other_before = counter(&sim, 0, &format!("tx_bytes_{other}"));
        assert_eq!(
            sim.ping_both_ways(0, 1, 50, Duration::from_millis(20), Duration::from_secs(1)),
            (50, 50)
        );
        for i in [0, 1] {
            let tx = counter(&sim, i, &format!("tx_bytes_{kind}")) - before[i];
            assert!(tx >= 50 * 28, "node {i}: {kind} tx grew by {tx}");
            assert!(
                counter(&sim, i, &format!("rx_packets_{kind}")) >= 50,
                "node {i}"
            );
        }
        assert_eq!(
            counter(&sim, 0, &format!("tx_bytes_{other}")),
            other_before,
            "nothing more went {other}"
        );
        let rtt = sim.nodes[0].node.status(sim.now).relay_rtt_ms;
        assert!(rtt.is_some_and(|ms| ms > 0.0), "relay rtt {rtt:?}");
    }
}
