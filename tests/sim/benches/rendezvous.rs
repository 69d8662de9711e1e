//! Rendezvous at scale: heap bytes the relay holds per registered node, join throughput, and
//! the latency of the relay's lookup handling (p50/p99), at 10,000 and 100,000 nodes.
//!
//! Run: `cargo bench -p veil-sim --bench rendezvous` (or `-- 1000` for a quick run with other
//! sizes). Figures go into docs/benchmarks.md. Every node performs the real hybrid handshake
//! and registration; nodes are dropped after joining, so the heap growth measured is the
//! relay's state alone.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use veil_proto::{create_network, Identity, Node, NodeConfig, Relay, RelayConfig, MAX_DATAGRAM};
use veil_sim::bench::{addr, live, pump, seed, Counting};

#[global_allocator]
static A: Counting = Counting;

fn run(n: u64) {
    let relay_addr: SocketAddr = "198.19.255.1:7000".parse().unwrap();
    let (token, relays) = create_network([7; 32], &[relay_addr.to_string()]);
    let start = Instant::now();
    let base_unix = Duration::from_secs(1_800_000_000);
    let cfg = NodeConfig {
        relays: vec![(relay_addr, token.relays[0].public_key)],
        ..NodeConfig::default()
    };
    let mut relay = Relay::new(
        &relays[0],
        RelayConfig::default(),
        [9; 32],
        start,
        base_unix,
    );
    let before = live();
    let t_join = Instant::now();
    let mut v4s = Vec::with_capacity(n as usize);
    for i in 0..n {
        let now = start + Duration::from_micros(i);
        let mut node = Node::new(
            &token,
            Identity::from_secret(seed(i, 1)),
            cfg.clone(),
            seed(i, 2),
            now,
            base_unix,
        );
        pump(now, &mut node, addr(i), &mut relay, relay_addr, None);
        match node.overlay_ipv4() {
            Some(a) => v4s.push(a),
            None => panic!(
                "node {i} did not register: {:?} / relay {:?}",
                node.counters().list(),
                relay.counters().list()
            ),
        }
    }
    let join = t_join.elapsed();
    let held = live() - before;
    assert_eq!(relay.status(start).clients as u64, n);

    // Lookups: a few querying nodes ask for random registered addresses.
    let mut times = Vec::new();
    let now = start + Duration::from_secs(1);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for q in 0..20u64 {
        let i = n + q;
        let mut node = Node::new(
            &token,
            Identity::from_secret(seed(i, 3)),
            cfg.clone(),
            seed(i, 4),
            now,
            base_unix,
        );
        pump(now, &mut node, addr(i), &mut relay, relay_addr, None);
        let src = node.overlay_ipv4().unwrap();
        let mut out = vec![0u8; MAX_DATAGRAM];
        for _ in 0..250 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let dst = v4s[(x % n) as usize];
            let mut p = vec![0u8; 28];
            p[0] = 0x45;
            p[2..4].copy_from_slice(&28u16.to_be_bytes());
            p[9] = 17;
            p[12..16].copy_from_slice(&src.octets());
            p[16..20].copy_from_slice(&dst.octets());
            let _ = node.handle_tun_packet(now, &p, &mut out);
            pump(
                now,
                &mut node,
                addr(i),
                &mut relay,
                relay_addr,
                Some(&mut times),
            );
        }
    }
    times.sort();
    let pct = |p: f64| times[((times.len() as f64 - 1.0) * p) as usize];
    println!(
        "nodes {n:>7}: relay heap {:>8.1} MiB = {:>5.0} B/node; join {:>6.1} s ({:>5.0} nodes/s, real hybrid handshakes); relay time per datagram while serving lookups and the handshakes they trigger ({} samples): p50 {:?} p99 {:?}",
        held as f64 / (1 << 20) as f64,
        held as f64 / n as f64,
        join.as_secs_f64(),
        n as f64 / join.as_secs_f64(),
        times.len(),
        pct(0.5),
        pct(0.99),
    );
}

fn main() {
    let sizes: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![10_000, 100_000]
    } else {
        sizes
    };
    for n in sizes {
        run(n);
    }
}
