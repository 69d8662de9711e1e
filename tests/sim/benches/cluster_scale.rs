//! The shared rendezvous at scale: N nodes register with relay A (real hybrid handshakes and
//! registrations; every registration claims its four names in the store), then a node of
//! relay B looks up random registered addresses, which B must ask the store for.
//!
//! Run: `cargo bench -p veil-sim --bench cluster_scale -- [--nats URL] [--nats-pid PID]
//! [--nats-tls-ca FILE] [--nats-user NAME --nats-password PW] N…` (`scripts/bench.sh
//! cluster` starts NATS servers, plain and TLS with a user, and runs every store). Reports the
//! process heap per node (relay state plus the store client's bookkeeping; with the memory
//! store also the store itself), the NATS server's resident memory per node (with
//! `--nats-pid`), the registration rate, and the lookup latency at relay B from the node's
//! Lookup to the relay's answer, store round trip included (p50/p99).
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use futures_util::stream::{FuturesUnordered, StreamExt};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use veil_io::cluster::{MemoryStore, RendezvousStore};
use veil_proto::relay::{ClaimOutcome, ClusterOp};
use veil_proto::{create_network, Identity, Node, NodeConfig, Relay, RelayConfig, MAX_DATAGRAM};
use veil_sim::bench::{addr, live, seed, Counting};

#[global_allocator]
static A: Counting = Counting;

/// Moves datagrams between one node and a relay until both are quiet.
fn pump(
    now: Instant,
    node: &mut Node,
    from: SocketAddr,
    relay: &mut Relay,
    relay_addr: SocketAddr,
) {
    veil_sim::bench::pump(now, node, from, relay, relay_addr, None);
}

fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

type Pending = std::pin::Pin<Box<dyn std::future::Future<Output = (u64, [u8; 32], ClaimOutcome)>>>;

async fn run(n: u64, store: Arc<dyn RendezvousStore>, label: &str, nats_pid: Option<u32>) {
    let a_addr: SocketAddr = "198.19.255.1:7000".parse().unwrap();
    let b_addr: SocketAddr = "198.19.255.2:7000".parse().unwrap();
    let (token, relays) = create_network([7; 32], &[a_addr.to_string(), b_addr.to_string()]);
    let start = Instant::now();
    let base_unix = Duration::from_secs(1_800_000_000);
    let mut ra = Relay::new(
        &relays[0],
        RelayConfig::default(),
        [9; 32],
        start,
        base_unix,
    );
    let mut rb = Relay::new(
        &relays[1],
        RelayConfig::default(),
        [8; 32],
        start,
        base_unix,
    );
    ra.enable_cluster();
    rb.enable_cluster();
    let dir = [(ra.public_key(), a_addr), (rb.public_key(), b_addr)];
    ra.set_cluster_relays(start, &dir);
    rb.set_cluster_relays(start, &dir);
    let cfg = |r: SocketAddr, k: [u8; 32]| NodeConfig {
        relays: vec![(r, k)],
        ..NodeConfig::default()
    };
    let cfg_a = cfg(a_addr, token.relays[0].public_key);
    let nats_before = nats_pid.and_then(rss_kib);
    let before = live();
    let t_join = Instant::now();
    let mut v4s = Vec::with_capacity(n as usize);
    // Nodes whose claim is out, by key: they get the answer (a conflict makes them register
    // again with their next candidate address, as nodes do).
    let mut waiting: std::collections::HashMap<[u8; 32], (Node, SocketAddr)> =
        std::collections::HashMap::new();
    let mut inflight: FuturesUnordered<Pending> = FuturesUnordered::new();
    let mut conflicts = 0u64;
    let mut now = start;
    let mut i = 0u64;
    while i < n || !inflight.is_empty() {
        if i < n && inflight.len() < 256 {
            now = start + Duration::from_micros(i);
            let mut node = Node::new(
                &token,
                Identity::from_secret(seed(i, 1)),
                cfg_a.clone(),
                seed(i, 2),
                now,
                base_unix,
            );
            pump(now, &mut node, addr(i), &mut ra, a_addr);
            waiting.insert(*Identity::from_secret(seed(i, 1)).public(), (node, addr(i)));
            i += 1;
        } else if let Some((id, owner, o)) = inflight.next().await {
            conflicts += u64::from(matches!(o, ClaimOutcome::Conflict(_)));
            ra.cluster_claimed(now, id, o);
            if let Some((mut node, from)) = waiting.remove(&owner) {
                pump(now, &mut node, from, &mut ra, a_addr);
                match node.overlay_ipv4() {
                    Some(v4) => v4s.push(v4),
                    // Conflict: it registered again; wait for that claim.
                    None => {
                        waiting.insert(owner, (node, from));
                    }
                }
            }
        }
        while let Some(op) = ra.poll_cluster() {
            if let ClusterOp::Claim {
                id,
                names,
                owner,
                entry,
            } = op
            {
                let s = store.clone();
                inflight.push(Box::pin(async move {
                    let o = s
                        .claim(&names, owner, &entry)
                        .await
                        .unwrap_or(ClaimOutcome::Unavailable);
                    (id, owner, o)
                }));
            }
        }
    }
    let join = t_join.elapsed();
    let mut sink = vec![0u8; MAX_DATAGRAM];
    while ra.poll_transmit(&mut sink).is_some() {}
    let held = live() - before;
    let nats_after = nats_pid.and_then(rss_kib);
    let regs = ra
        .counters()
        .list()
        .into_iter()
        .find(|(k, _)| *k == "registrations")
        .map_or(0, |(_, v)| v);

    // Lookups at relay B for nodes of relay A: each one goes to the store.
    let now = start + Duration::from_secs(1);
    let cfg_b = cfg(b_addr, token.relays[1].public_key);
    let mut node = Node::new(
        &token,
        Identity::from_secret(seed(n, 3)),
        cfg_b,
        seed(n, 4),
        now,
        base_unix,
    );
    let me = addr(n);
    pump(now, &mut node, me, &mut rb, b_addr);
    while let Some(op) = rb.poll_cluster() {
        if let ClusterOp::Claim {
            id,
            names,
            owner,
            entry,
        } = op
        {
            let o = store.claim(&names, owner, &entry).await.unwrap();
            rb.cluster_claimed(now, id, o);
        }
    }
    pump(now, &mut node, me, &mut rb, b_addr);
    let src = node
        .overlay_ipv4()
        .expect("the querying node registered at relay B");
    let mut out = vec![0u8; MAX_DATAGRAM];
    let mut times = Vec::new();
    let mut found = 0u64;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let lookups = 5_000.min(n as usize * 4);
    for _ in 0..lookups {
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
        let t0 = Instant::now();
        // The node's Lookup reaches relay B, which asks the store…
        pump(now, &mut node, me, &mut rb, b_addr);
        let mut asked = false;
        while let Some(op) = rb.poll_cluster() {
            if let ClusterOp::Lookup { id, name } = op {
                asked = true;
                let e = store.lookup(name).await.ok().flatten();
                found += u64::from(e.is_some());
                // …and answers the node.
                rb.cluster_found(now, id, e.as_deref());
            }
        }
        // (A destination drawn again is known to the node already: no lookup, no sample.)
        if asked {
            times.push(t0.elapsed());
        }
        pump(now, &mut node, me, &mut rb, b_addr);
        while rb.poll_transmit(&mut sink).is_some() {}
    }
    times.sort();
    let pct = |p: f64| times[((times.len() as f64 - 1.0) * p) as usize];
    let nats_mem = match (nats_before, nats_after) {
        (Some(b), Some(a)) => format!(
            "; NATS server RSS +{:.1} MiB = {:.0} B/node",
            (a.saturating_sub(b)) as f64 / 1024.0,
            (a.saturating_sub(b)) as f64 * 1024.0 / n as f64
        ),
        _ => String::new(),
    };
    println!(
        "RESULT cluster store={label} nodes={n} registered={regs} conflicts={conflicts} heap_mib={:.1} heap_b_per_node={:.0} join_s={:.1} nodes_per_s={:.0} lookups={} found={found} lookup_p50_us={} lookup_p99_us={}{nats_mem}",
        held as f64 / (1 << 20) as f64,
        held as f64 / n as f64,
        join.as_secs_f64(),
        n as f64 / join.as_secs_f64(),
        times.len(),
        pct(0.5).as_micros(),
        pct(0.99).as_micros(),
    );
    assert_eq!(regs, n, "every node registered");
    assert_eq!(found as usize, times.len(), "every lookup found its node");
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut nats = None;
    let mut pid = None;
    let mut security = veil_io::cluster::NatsSecurity::default();
    let mut user = None;
    let mut sizes = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--nats" => nats = args.next(),
            "--nats-pid" => pid = args.next().and_then(|p| p.parse().ok()),
            "--nats-tls-ca" => security.tls_ca = args.next().map(Into::into),
            "--nats-user" => user = args.next(),
            "--nats-password" => security.user = user.clone().zip(args.next()),
            "--bench" => {}
            other => sizes.extend(other.parse::<u64>().ok()),
        }
    }
    if sizes.is_empty() {
        sizes = vec![100_000];
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for n in sizes {
            match &nats {
                Some(url) => {
                    // A fresh bucket per run: the network hash is random.
                    let net: String = (0..8).map(|_| format!("{:02x}", rand_byte())).collect();
                    let store = veil_io::cluster::NatsStore::connect(
                        url,
                        &security,
                        &net,
                        Duration::from_secs(600),
                    )
                    .await
                    .unwrap();
                    let label = if security.tls() { "nats-tls" } else { "nats" };
                    run(n, Arc::new(store), label, pid).await;
                }
                None => run(n, Arc::new(MemoryStore::new()), "memory", None).await,
            }
        }
    });
}

fn rand_byte() -> u8 {
    let mut b = [0u8; 1];
    getrandom::getrandom(&mut b).unwrap();
    b[0]
}
