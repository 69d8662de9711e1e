//! Private mode in the simulator: `private = 1` keeps a node's addresses from its peers
//! (relays only), `private = 2` routes it through a guard relay to its home relay so that
//! neither relay holds both ends of a conversation.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;
use veil_proto::{keys::guard_index, Identity, NodeConfig, Privacy};
use veil_sim::{udp4, Sim};

fn ping_both_ways(sim: &mut Sim, a: usize, b: usize, count: usize) -> (usize, usize) {
    sim.ping_both_ways(
        a,
        b,
        count,
        Duration::from_millis(100),
        Duration::from_secs(2),
    )
}

fn addrs_of(sim: &Sim, i: usize) -> SocketAddr {
    sim.nodes[i].addr
}

#[test]
fn private_one_hop_hides_the_node_from_its_peers() {
    let mut sim = Sim::new(61, 0, NodeConfig::default(), Default::default());
    let private = NodeConfig {
        private: Privacy::Relay,
        ..NodeConfig::default()
    };
    let a = sim.add_node(private);
    let b = sim.add_node(NodeConfig::default());
    sim.run_for(Duration::from_secs(5));
    sim.capture = true;
    let (ab, ba) = ping_both_ways(&mut sim, a, b, 50);
    assert_eq!((ab, ba), (50, 50), "every packet arrives both ways");
    // Long enough for hole punching and its retries to have happened were they allowed.
    let (ab, ba) = ping_both_ways(&mut sim, a, b, 100);
    assert_eq!((ab, ba), (100, 100));
    let pa = &sim.nodes[a].node.peers(sim.now)[0];
    assert_eq!(pa.path, "private", "{pa:?}");
    let pb = &sim.nodes[b].node.peers(sim.now)[0];
    assert_eq!(pb.path, "relayed", "{pb:?}");
    assert_eq!(
        pb.relay_reason.as_deref(),
        Some("the peer announced no direct candidates"),
    );
    // On a's link: only the relay.
    let a_addr = addrs_of(&sim, a);
    let relay = sim.relay_addr;
    let mut on_link = 0;
    for d in &sim.captured {
        if d.from == a_addr || d.to == a_addr {
            on_link += 1;
            let other = if d.from == a_addr { d.to } else { d.from };
            assert_eq!(other, relay, "a exchanged a datagram with {other}");
        }
        // b never sends to a's address (it was never told it).
        assert!(!(d.from == addrs_of(&sim, b) && d.to == a_addr));
    }
    assert!(on_link > 400, "{on_link} datagrams on a's link");
    // A datagram straight from b's address to a is dropped unread.
    let before = sim.nodes[a].node.counters().dropped_private;
    sim.inject(addrs_of(&sim, b), a_addr, vec![7u8; 200]);
    sim.run_for(Duration::from_millis(10));
    assert_eq!(sim.nodes[a].node.counters().dropped_private, before + 1);
}

#[test]
fn private_peers_list_makes_one_peer_relay_only() {
    let mut sim = Sim::new(62, 0, NodeConfig::default(), Default::default());
    let a = sim.add_node(NodeConfig::default());
    let b = sim.add_node(NodeConfig::default());
    let c = sim.add_node(NodeConfig::default());
    sim.run_for(Duration::from_secs(5));
    // a keeps c (by its overlay IPv4) on relays only; b may go direct.
    let c4 = sim.ipv4(c).unwrap();
    let cfg = NodeConfig {
        private_peers: vec![c4.into()],
        ..NodeConfig::default()
    };
    sim.remove_node(a);
    let a = sim.add_node(cfg);
    sim.run_for(Duration::from_secs(5));
    assert_eq!(ping_both_ways(&mut sim, a, b, 30), (30, 30));
    assert_eq!(ping_both_ways(&mut sim, a, c, 30), (30, 30));
    let peers = sim.nodes[a].node.peers(sim.now);
    let path_to = |ip| {
        peers
            .iter()
            .find(|p| p.overlay_ipv4 == Some(ip))
            .map(|p| p.path)
            .unwrap()
    };
    assert_eq!(path_to(sim.ipv4(b).unwrap()), "direct");
    assert_eq!(path_to(c4), "private");
}

#[test]
fn two_hops_split_what_each_relay_knows() {
    let two = NodeConfig {
        private: Privacy::TwoHop,
        ..NodeConfig::default()
    };
    // Relay 0 (198.18.0.1) is every node's home; a (two-hop) reaches it through relay 1.
    let mut sim = Sim::with_relays(63, 2, 0, NodeConfig::default());
    let a = sim.add_node(two);
    let b = sim.add_node(NodeConfig::default());
    sim.run_for(Duration::from_secs(10));
    assert!(sim.ipv4(a).is_some(), "the two-hop node registered");
    sim.capture = true;
    assert_eq!(ping_both_ways(&mut sim, a, b, 100), (100, 100));
    // Re-keys of every layer (node-relay, relay-relay, end to end) keep it going.
    for _ in 0..6 {
        sim.run_for(Duration::from_secs(50));
        assert_eq!(ping_both_ways(&mut sim, a, b, 5), (5, 5));
    }
    let home = sim.relay_addr;
    let guard = sim.more_relays[0].0;
    let (a_addr, b_addr) = (addrs_of(&sim, a), addrs_of(&sim, b));
    let (a_key, b_key) = (
        sim.nodes[a].node.public_key(),
        sim.nodes[b].node.public_key(),
    );
    // An observer on a's link sees the guard only.
    for d in &sim.captured {
        if d.from == a_addr || d.to == a_addr {
            let other = if d.from == a_addr { d.to } else { d.from };
            assert_eq!(other, guard, "a exchanged a datagram with {other}");
        }
    }
    // The guard holds a (sender) but nothing of b; the home holds b but nothing of a.
    let (g_addrs, g_keys) = sim.more_relays[0].1.held_identities();
    assert!(g_addrs.contains(&a_addr) && g_keys.contains(&a_key));
    assert!(
        !g_addrs.contains(&b_addr) && !g_keys.contains(&b_key),
        "guard knows b"
    );
    let (h_addrs, h_keys) = sim.relay.held_identities();
    assert!(h_addrs.contains(&b_addr) && h_keys.contains(&b_key));
    assert!(!h_addrs.contains(&a_addr), "home relay knows a's address");
    assert!(!h_keys.contains(&a_key), "home relay knows a's key");
    let gs = sim.more_relays[0].1.status(sim.now);
    let hs = sim.relay.status(sim.now);
    assert_eq!((gs.circuits, gs.links), (1, 1), "{gs:?}");
    assert_eq!((hs.circuit_clients, hs.links), (1, 1), "{hs:?}");
    // b sees a through its home relay, and a calls its path private.
    let pb = &sim.nodes[b].node.peers(sim.now)[0];
    assert_eq!(pb.endpoint.as_deref(), Some(home.to_string().as_str()));
    let pa = &sim.nodes[a].node.peers(sim.now)[0];
    assert_eq!(pa.path, "private");
    assert_eq!(pa.endpoint.as_deref(), Some(guard.to_string().as_str()));
}

#[test]
fn with_more_relays_each_node_keeps_the_guard_its_key_picks() {
    // Four relays: relay 0 is every node's home, and each two-hop node's guard is one of the
    // other three, picked by its secret key: the same when the node starts again, and not
    // the same relay for every node.
    let two = NodeConfig {
        private: Privacy::TwoHop,
        ..NodeConfig::default()
    };
    let mut sim = Sim::with_relays(69, 4, 0, NodeConfig::default());
    let relays: Vec<SocketAddr> = std::iter::once(sim.relay_addr)
        .chain(sim.more_relays.iter().map(|r| r.0))
        .collect();
    let secrets: Vec<[u8; 32]> = (1..=8u8).map(|k| [k; 32]).collect();
    let first: Vec<usize> = secrets
        .iter()
        .map(|s| sim.add_node_with_identity(two.clone(), Identity::from_secret(*s)))
        .collect();
    let b = sim.add_node(NodeConfig::default());
    sim.run_for(Duration::from_secs(10));
    let guard_of = |sim: &Sim, i: usize| {
        let st = sim.nodes[i].node.status(sim.now);
        let (addr, up) = st.guard.expect("a two-hop node has a guard");
        assert!(up, "node {i}: the guard's circuit is not up");
        addr
    };
    let mut used = std::collections::BTreeSet::new();
    for (k, &i) in first.iter().enumerate() {
        let want = relays[guard_index(&secrets[k], relays.len())];
        let got = guard_of(&sim, i);
        assert_eq!(got, want.to_string(), "node {i}");
        assert_ne!(want, sim.relay_addr, "node {i}: the home relay as guard");
        used.insert(got);
        assert_eq!(ping_both_ways(&mut sim, i, b, 5), (5, 5), "node {i}");
    }
    assert!(used.len() >= 2, "every node took the same guard: {used:?}");
    // The same keys, started again: the same guards.
    for (k, &i) in first.iter().enumerate() {
        let before = guard_of(&sim, i);
        sim.remove_node(i);
        let again = sim.add_node_with_identity(two.clone(), Identity::from_secret(secrets[k]));
        sim.run_for(Duration::from_secs(3));
        assert_eq!(
            guard_of(&sim, again),
            before,
            "key {k} moved to another guard"
        );
    }
}

#[test]
fn two_hop_node_survives_a_guard_restart() {
    let two = NodeConfig {
        private: Privacy::TwoHop,
        ..NodeConfig::default()
    };
    let mut sim = Sim::with_relays(64, 2, 0, NodeConfig::default());
    let a = sim.add_node(two);
    let b = sim.add_node(NodeConfig::default());
    sim.run_for(Duration::from_secs(10));
    assert_eq!(ping_both_ways(&mut sim, a, b, 10), (10, 10));
    sim.restart_more_relay(0);
    // Keepalive (25 s) + probe timeout (5 s) + a new guard session and circuit.
    sim.run_for(Duration::from_secs(40));
    assert!(sim.nodes[a].node.counters().guard_losses >= 1);
    assert_eq!(ping_both_ways(&mut sim, a, b, 10), (10, 10));
}

/// Datagrams per whole second sent by and to `addr` in `[from, to)`, and their sizes.
fn per_second(
    sim: &Sim,
    addr: SocketAddr,
    from: Duration,
    to: Duration,
) -> (
    Vec<usize>,
    Vec<usize>,
    std::collections::BTreeMap<usize, usize>,
) {
    let secs = (to - from).as_secs() as usize;
    let (mut up, mut down) = (vec![0; secs], vec![0; secs]);
    let mut sizes = std::collections::BTreeMap::new();
    for d in sim.captured.iter().filter(|d| d.at >= from && d.at < to) {
        let k = ((d.at - from).as_secs() as usize).min(secs - 1);
        if d.from == addr {
            up[k] += 1;
        } else if d.to == addr {
            down[k] += 1;
        } else {
            continue;
        }
        *sizes.entry(d.bytes.len()).or_insert(0) += 1;
    }
    (up, down, sizes)
}

#[test]
fn cover_traffic_hides_when_a_node_is_active() {
    let mtu_padded = NodeConfig {
        pad_bucket: veil_proto::wire::PAD_TO_MTU,
        rekey_after_time: Duration::from_secs(600),
        ..NodeConfig::default()
    };
    let covered = NodeConfig {
        private: Privacy::Relay,
        cover_pps: 10,
        ..mtu_padded.clone()
    };
    let mut sim = Sim::new(65, 0, NodeConfig::default(), Default::default());
    let a = sim.add_node(covered);
    let b = sim.add_node(mtu_padded);
    // A 1500-byte IPv4 link, as on most networks: datagrams up to 1472 bytes.
    sim.mtu_limits.push((addrs_of(&sim, a).ip(), 1472));
    sim.run_for(Duration::from_secs(5));
    // A session, and path MTU discovery on it, before the observation starts.
    assert_eq!(ping_both_ways(&mut sim, a, b, 30), (30, 30));
    // Path checks (MTU confirmations) stop 10 s after the last data: idle from then on.
    sim.run_for(Duration::from_secs(12));
    sim.capture = true;
    let t0 = sim.elapsed_now();
    sim.run_for(Duration::from_secs(10));
    let t1 = sim.elapsed_now();
    let (ia, ib) = (sim.ipv4(a).unwrap(), sim.ipv4(b).unwrap());
    for k in 0..20 {
        sim.tun_send(b, &udp4(ib, ia, format!("b to a {k}").as_bytes()));
        sim.tun_send(a, &udp4(ia, ib, format!("a to b {k}").as_bytes()));
        sim.run_for(Duration::from_millis(500));
    }
    let t2 = sim.elapsed_now();
    let addr = addrs_of(&sim, a);
    let (idle_up, idle_down, idle_sizes) = per_second(&sim, addr, t0, t1);
    let (busy_up, busy_down, busy_sizes) = per_second(&sim, addr, t1, t2);
    println!("idle up {idle_up:?} down {idle_down:?} sizes {idle_sizes:?}");
    println!("busy up {busy_up:?} down {busy_down:?} sizes {busy_sizes:?}");
    // Idle, the link carries the cover rate each way; busy (two pings a second each way,
    // plus path MTU confirmations and their acknowledgements), real datagrams take the
    // place of dummies and only slots holding two real datagrams add to the count.
    for n in idle_up.iter().chain(&idle_down) {
        assert!((9..=11).contains(n), "idle: {n} datagrams in a second");
    }
    for n in busy_up.iter().chain(&busy_down) {
        assert!((9..=15).contains(n), "busy: {n} datagrams in a second");
    }
    assert_eq!(idle_sizes.len(), 1, "one size: {idle_sizes:?}");
    assert_eq!(
        idle_sizes.keys().collect::<Vec<_>>(),
        busy_sizes.keys().collect::<Vec<_>>()
    );
    let bytes: usize = idle_sizes.iter().map(|(s, n)| s * n).sum();
    println!("cover overhead idle: {} bytes/s", bytes / 10);
    assert!(sim.nodes[a].node.counters().cover_sent > 100);
}

#[test]
fn two_hop_never_falls_back_to_one_hop() {
    let two = NodeConfig {
        private: Privacy::TwoHop,
        ..NodeConfig::default()
    };
    let mut sim = Sim::with_relays(66, 2, 0, NodeConfig::default());
    // The guard's token predates peering keys: it refuses every circuit.
    sim.restart_more_relay_without_peering(0);
    sim.capture = true;
    let a = sim.add_node(two);
    sim.run_for(Duration::from_secs(60));
    let c = sim.nodes[a].node.counters();
    assert!(c.circuits_refused >= 2, "refusals: {}", c.circuits_refused);
    assert!(sim.ipv4(a).is_none(), "a registered without two hops");
    let st = sim.nodes[a].node.status(sim.now);
    assert!(
        !st.relay_connected && st.guard.as_ref().is_some_and(|g| !g.1),
        "{st:?}"
    );
    // It tried each relay as its guard in turn, and registered at neither: no relay holds
    // a name of it, nor a circuit client.
    for st in [
        sim.relay.status(sim.now),
        sim.more_relays[0].1.status(sim.now),
    ] {
        assert_eq!((st.names, st.circuit_clients), (0, 0), "{st:?}");
    }
}

/// A refused circuit: the node asks again and carries traffic. While it has no circuit its
/// home-relay timers wait; the `relay_frames` fuzzer found that a home deadline left
/// scheduled meanwhile (a previous session's expiry, a registration or probe timeout) was a
/// busy loop, which the simulator's detector would report here too if the window lasted.
#[test]
fn a_refused_circuit_is_asked_for_again() {
    let two = NodeConfig {
        private: Privacy::TwoHop,
        ..NodeConfig::default()
    };
    let mut sim = Sim::with_relays(67, 2, 0, NodeConfig::default());
    let a = sim.add_node(two);
    let b = sim.add_node(NodeConfig::default());
    // Past a re-key of the home session (120 s), so that a previous session exists.
    sim.run_for(Duration::from_secs(130));
    assert_eq!(ping_both_ways(&mut sim, a, b, 3), (3, 3));
    // The node asks its guard for a circuit to a relay that does not exist: the guard gives
    // up on that link after 15 s and refuses, and the node is without a circuit until it
    // extends to its home again.
    let mut body = vec![0x42u8; 32];
    body.extend_from_slice(&[4, 198, 18, 0, 99, 0x1b, 0x58]);
    sim.with_node(a, |n, now| n.send_raw_relay_frame(now, true, 18, &body));
    sim.run_for(Duration::from_secs(120));
    assert!(sim.nodes[a].node.counters().circuits_refused >= 1);
    assert_eq!(ping_both_ways(&mut sim, a, b, 3), (3, 3));
}

#[test]
fn cover_traffic_through_a_guard() {
    let covered = NodeConfig {
        private: Privacy::TwoHop,
        cover_pps: 10,
        pad_bucket: veil_proto::wire::PAD_TO_MTU,
        rekey_after_time: Duration::from_secs(600),
        ..NodeConfig::default()
    };
    let mut sim = Sim::with_relays(68, 2, 0, NodeConfig::default());
    let a = sim.add_node(covered);
    let b = sim.add_node(NodeConfig {
        pad_bucket: veil_proto::wire::PAD_TO_MTU,
        ..NodeConfig::default()
    });
    sim.mtu_limits.push((addrs_of(&sim, a).ip(), 1472));
    sim.run_for(Duration::from_secs(10));
    assert_eq!(ping_both_ways(&mut sim, a, b, 20), (20, 20));
    sim.run_for(Duration::from_secs(12));
    sim.capture = true;
    let t0 = sim.elapsed_now();
    sim.run_for(Duration::from_secs(10));
    let t1 = sim.elapsed_now();
    let (up, down, sizes) = per_second(&sim, addrs_of(&sim, a), t0, t1);
    println!("two-hop idle up {up:?} down {down:?} sizes {sizes:?}");
    for n in up.iter().chain(&down) {
        assert!((9..=11).contains(n), "{n} datagrams in a second");
    }
    assert_eq!(sizes.len(), 1, "one size on the guard link: {sizes:?}");
    // All of it with the guard.
    let guard = sim.more_relays[0].0;
    let a_addr = addrs_of(&sim, a);
    assert!(sim
        .captured
        .iter()
        .filter(|d| d.from == a_addr || d.to == a_addr)
        .all(|d| d.from == guard || d.to == guard));
}
