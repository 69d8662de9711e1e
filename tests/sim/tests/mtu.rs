//! Path MTU in a simulated network whose hops silently drop datagrams above a size (no ICMP
//! at all): discovery finds the size per path (direct and relayed, both legs), inner packets
//! larger than it still arrive (overlay fragments) and their senders are told (ICMP Packet
//! Too Big / Fragmentation Needed into the TUN), TCP SYNs get a clamped MSS, a path that
//! shrinks mid-transfer is noticed within a second, and the hybrid handshake crosses an
//! IPv6-minimum path.
#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::time::Duration;
use veil_proto::{NodeConfig, PeerStatus};
use veil_sim::{udp4, Impairment, Sim};

/// A 1280-byte IPv4 hop: 1252 bytes of UDP payload.
const HOP_1280: usize = 1280 - 28;

fn two_nodes(seed: u64, cfg: NodeConfig) -> Sim {
    let mut sim = Sim::new(seed, 2, cfg, Impairment::default());
    sim.run_for(Duration::from_secs(5));
    assert!(sim.ipv4(0).is_some() && sim.ipv4(1).is_some());
    sim
}

fn peer_of(sim: &Sim, i: usize) -> PeerStatus {
    sim.nodes[i].node.peers(sim.now).remove(0)
}

/// A full-size (TUN MTU) IPv4 UDP packet numbered `k`, DF set if `df`.
fn big(src: Ipv4Addr, dst: Ipv4Addr, k: u32, df: bool) -> Vec<u8> {
    let mut payload = vec![0xa5u8; 1400 - 28];
    payload[..4].copy_from_slice(&k.to_be_bytes());
    let mut p = udp4(src, dst, &payload);
    if df {
        p[6] |= 0x40;
    }
    p
}

/// Sends `count` full-size packets from 0 to 1, one per `gap`; returns the arrival time
/// (ms since the first send) of each packet that arrived, by number.
fn stream(
    sim: &mut Sim,
    count: u32,
    gap: Duration,
    df: bool,
    mut at: impl FnMut(u32, &mut Sim),
) -> Vec<(u32, u64)> {
    let (a, b) = (sim.ipv4(0).unwrap(), sim.ipv4(1).unwrap());
    let start = sim.now;
    let mut seen = std::collections::BTreeMap::new();
    let mut read = sim.nodes[1].tun.len();
    for k in 0..count {
        at(k, sim);
        sim.tun_send(0, &big(a, b, k, df));
        sim.run_for(gap);
        for p in &sim.nodes[1].tun[read..] {
            if p.len() == 1400 && p[28..].iter().skip(4).all(|x| *x == 0xa5) {
                let n = u32::from_be_bytes([p[28], p[29], p[30], p[31]]);
                seen.entry(n)
                    .or_insert((sim.now - start).as_millis() as u64);
            }
        }
        read = sim.nodes[1].tun.len();
    }
    sim.run_for(Duration::from_secs(1));
    for p in &sim.nodes[1].tun[read..] {
        if p.len() == 1400 {
            let n = u32::from_be_bytes([p[28], p[29], p[30], p[31]]);
            seen.entry(n)
                .or_insert((sim.now - start).as_millis() as u64);
        }
    }
    seen.into_iter().collect()
}

/// Two nodes whose direct path carried 50 full-size packets and settled on 1400.
fn warmed(seed: u64) -> Sim {
    let mut sim = two_nodes(seed, NodeConfig::default());
    let warm = stream(&mut sim, 50, Duration::from_millis(10), false, |_, _| {});
    assert_eq!(warm.len(), 50);
    assert_eq!(peer_of(&sim, 0).pmtu, Some(1400));
    sim
}

/// The ICMP Fragmentation Needed messages node `i`'s TUN received: their next-hop MTUs.
fn frag_needed(sim: &Sim, i: usize) -> Vec<u16> {
    sim.nodes[i]
        .tun
        .iter()
        .filter(|p| p.len() >= 28 && p[0] >> 4 == 4 && p[9] == 1 && p[20] == 3 && p[21] == 4)
        .map(|p| u16::from_be_bytes([p[26], p[27]]))
        .collect()
}

#[test]
fn a_black_hole_hop_is_found_and_nothing_is_lost() {
    let mut sim = two_nodes(71, NodeConfig::default());
    // Node 1 sits behind a 1280-byte hop that drops larger datagrams and sends no ICMP.
    sim.mtu_limits.push((sim.nodes[1].addr.ip(), HOP_1280));
    let got = stream(&mut sim, 200, Duration::from_millis(10), false, |_, _| {});
    assert_eq!(got.len(), 200, "full-size packets were lost");
    let p = peer_of(&sim, 0);
    assert_eq!(p.path, "direct");
    assert_eq!(p.pmtu_state, "confirmed");
    let pmtu = p.pmtu.unwrap() as usize;
    // The largest inner packet that crosses whole: the hop's payload minus Veil's 35 bytes.
    assert!(
        pmtu <= HOP_1280 - 35 && pmtu + 64 > HOP_1280 - 35,
        "pmtu {pmtu}"
    );
    let c = sim.nodes[0].node.counters();
    assert!(c.fragmented_packets >= 190, "{}", c.fragmented_packets);
    assert!(c.pmtu_probes_acked > 0);
    assert_eq!(
        sim.nodes[1].node.counters().reassembled_packets,
        c.fragmented_packets
    );
    // Without DF nobody is told: the overlay fragments silently.
    assert!(frag_needed(&sim, 0).is_empty());
}

#[test]
fn senders_that_forbid_fragmentation_get_fragmentation_needed() {
    let mut sim = two_nodes(72, NodeConfig::default());
    sim.mtu_limits.push((sim.nodes[1].addr.ip(), HOP_1280));
    // Four seconds: a path is told to the sender once it is 3 s old.
    let got = stream(&mut sim, 400, Duration::from_millis(10), true, |_, _| {});
    // The packets still arrive (fragmented) while the sender learns.
    assert_eq!(got.len(), 400);
    let mtus = frag_needed(&sim, 0);
    let pmtu = peer_of(&sim, 0).pmtu.unwrap() as u16;
    assert!(!mtus.is_empty(), "no Fragmentation Needed");
    assert!(mtus.iter().all(|m| *m == pmtu), "{mtus:?} vs {pmtu}");
    // Rate-limited: one per 100 ms at most over the ~5 s stream.
    assert!(mtus.len() <= 50, "{} messages", mtus.len());
}

#[test]
fn a_path_in_passing_is_not_told_to_the_inner_stack() {
    let cfg = NodeConfig {
        direct: false,
        ..NodeConfig::default()
    };
    let mut sim = Sim::new(76, 2, cfg, Impairment::default());
    sim.run_for(Duration::from_secs(3));
    sim.mtu_limits.push((sim.nodes[1].addr.ip(), HOP_1280));
    // The peer (and its relayed path) is new: for its first 3 s, packets too big for it go
    // in overlay fragments and the sender is not told, since a path that may be gone a
    // moment later must not lower the sender's size for the 10 minutes a kernel keeps it.
    let got = stream(&mut sim, 200, Duration::from_millis(10), true, |_, _| {});
    assert_eq!(got.len(), 200, "packets lost");
    assert!(
        frag_needed(&sim, 0).is_empty(),
        "told within the path's first 3 s"
    );
    assert!(sim.nodes[0].node.counters().fragmented_packets >= 150);
    // Once the path is older, a sender that forbids fragmentation is told.
    let got = stream(&mut sim, 150, Duration::from_millis(10), true, |_, _| {});
    assert_eq!(got.len(), 150);
    let pmtu = peer_of(&sim, 0).pmtu.unwrap() as u16;
    let mtus = frag_needed(&sim, 0);
    assert!(
        !mtus.is_empty() && mtus.iter().all(|m| *m == pmtu),
        "{mtus:?}"
    );
}

#[test]
fn a_relayed_path_accounts_for_both_legs() {
    let cfg = NodeConfig {
        direct: false,
        ..NodeConfig::default()
    };
    let mut sim = two_nodes(73, cfg);
    // The relay's leg to node 1 is the small one: node 0's probes cross both.
    sim.mtu_limits.push((sim.nodes[1].addr.ip(), HOP_1280));
    let got = stream(&mut sim, 100, Duration::from_millis(10), false, |_, _| {});
    assert_eq!(got.len(), 100);
    let p = peer_of(&sim, 0);
    assert_eq!(p.path, "relayed");
    let pmtu = p.pmtu.unwrap() as usize;
    // Two layers and the relay handle: 78 bytes.
    assert!(
        pmtu <= HOP_1280 - 78 && pmtu + 64 > HOP_1280 - 78,
        "pmtu {pmtu}"
    );
}

#[test]
fn a_path_that_shrinks_mid_transfer_recovers_within_a_second() {
    let mut sim = warmed(74);
    let ip = sim.nodes[1].addr.ip();
    let got = stream(&mut sim, 400, Duration::from_millis(10), false, |k, sim| {
        if k == 100 {
            sim.mtu_limits.push((ip, HOP_1280));
        }
    });
    // Packets sent until the shrink is noticed are lost (the hop drops them and says
    // nothing); after that everything arrives again.
    let first_after: Vec<u32> = got.iter().map(|(n, _)| *n).filter(|n| *n >= 100).collect();
    let resumed = *first_after.first().unwrap();
    let lost = 400 - got.len() as u32;
    let gap_ms = got.windows(2).map(|w| w[1].1 - w[0].1).max().unwrap_or(0);
    println!(
        "shrink at packet 100: {lost} lost, resumed at packet {resumed}, longest gap {gap_ms} ms"
    );
    assert!(gap_ms <= 1000, "longest gap {gap_ms} ms");
    assert!(got.iter().all(|(n, _)| *n < 100 || *n >= resumed));
    assert_eq!(
        got.iter().filter(|(n, _)| *n >= resumed).count() as u32,
        400 - resumed
    );
    assert_eq!(sim.nodes[0].node.counters().pmtu_black_holes, 1);
    assert!(peer_of(&sim, 0).pmtu.unwrap() as usize <= HOP_1280 - 35);
}

#[test]
fn a_congested_path_keeps_its_size() {
    let mut sim = warmed(75);
    // Ten seconds of a path that loses 40 % of all datagrams, large and small alike (a
    // saturated queue): probes are lost, but so are their companions, and the full-size
    // data that does arrive shows the size still passes.
    sim.impair.loss = 0.4;
    let got = stream(&mut sim, 1000, Duration::from_millis(10), false, |_, _| {});
    sim.impair.loss = 0.0;
    assert!(got.len() > 300 && got.len() < 900, "{} arrived", got.len());
    let p = peer_of(&sim, 0);
    let c = sim.nodes[0].node.counters();
    assert_eq!(
        (p.pmtu, p.pmtu_state, c.pmtu_black_holes),
        (Some(1400), "confirmed", 0),
        "loss was taken for a smaller path"
    );
    assert!(frag_needed(&sim, 0).is_empty());
}

#[test]
fn tcp_syns_get_an_mss_that_fits_the_path() {
    let mut sim = two_nodes(75, NodeConfig::default());
    sim.mtu_limits.push((sim.nodes[1].addr.ip(), HOP_1280));
    stream(&mut sim, 30, Duration::from_millis(10), false, |_, _| {});
    let pmtu = peer_of(&sim, 0).pmtu.unwrap() as u16;
    let (a, b) = (sim.ipv4(0).unwrap(), sim.ipv4(1).unwrap());
    // A SYN with MSS 1460 (option at its usual place), checksum as a stack writes it.
    let mut syn = vec![0u8; 44];
    syn[0] = 0x45;
    syn[2..4].copy_from_slice(&44u16.to_be_bytes());
    syn[6] = 0x40;
    syn[8] = 64;
    syn[9] = 6;
    syn[12..16].copy_from_slice(&a.octets());
    syn[16..20].copy_from_slice(&b.octets());
    syn[20..22].copy_from_slice(&40000u16.to_be_bytes());
    syn[22..24].copy_from_slice(&80u16.to_be_bytes());
    syn[32] = 6 << 4;
    syn[33] = 0x02;
    syn[34..36].copy_from_slice(&65535u16.to_be_bytes());
    syn[40..44].copy_from_slice(&[2, 4, 0x05, 0xb4]);
    let before = sim.nodes[1].tun.len();
    sim.tun_send(0, &syn);
    sim.run_for(Duration::from_millis(100));
    let got = sim.nodes[1].tun[before..]
        .iter()
        .find(|p| p.len() == 44 && p[9] == 6)
        .cloned()
        .expect("SYN not delivered");
    let mss = u16::from_be_bytes([got[42], got[43]]);
    assert_eq!(mss, pmtu - 40);
    assert!(sim.nodes[0].node.counters().mss_clamped >= 1);
}

#[test]
fn the_hybrid_handshake_crosses_an_ipv6_minimum_path() {
    // Every datagram of the network limited to what a 1280-byte IPv6 link carries.
    let mut sim = Sim::new(76, 0, NodeConfig::default(), Impairment::default());
    sim.mtu_limits.push((sim.relay_addr.ip(), 1280 - 48));
    sim.add_node(NodeConfig::default());
    sim.add_node(NodeConfig::default());
    for i in 0..2 {
        let ip = sim.nodes[i].addr.ip();
        sim.mtu_limits.push((ip, 1280 - 48));
    }
    sim.run_for(Duration::from_secs(5));
    assert!(
        sim.ipv4(0).is_some() && sim.ipv4(1).is_some(),
        "registration failed"
    );
    let got = stream(&mut sim, 50, Duration::from_millis(10), false, |_, _| {});
    assert_eq!(got.len(), 50);
    assert!(sim.dropped_too_big > 0, "the limit was never exercised");
    assert!(
        sim.nodes[0].node.counters().handshakes_completed
            + sim.nodes[0].node.counters().handshakes_answered
            >= 1
    );
}

#[test]
fn ipv6_below_1280_is_fragmented_and_never_told() {
    // An IPv6 stack cannot go below 1280, so on a path whose inner MTU is smaller the overlay
    // carries its packets in fragments and sends no Packet Too Big.
    let mut sim = two_nodes(77, NodeConfig::default());
    sim.mtu_limits.push((sim.nodes[1].addr.ip(), 1200));
    let (a, b) = (
        sim.nodes[0].node.overlay_ipv6(),
        sim.nodes[1].node.overlay_ipv6(),
    );
    let before = sim.nodes[1].tun.len();
    for k in 0..50u8 {
        sim.tun_send(0, &veil_sim::udp6(a, b, &[k; 1300]));
        sim.run_for(Duration::from_millis(10));
    }
    sim.run_for(Duration::from_secs(1));
    let got = sim.nodes[1].tun[before..]
        .iter()
        .filter(|p| p.len() == 1348)
        .count();
    assert_eq!(got, 50);
    let p = peer_of(&sim, 0);
    assert!(p.pmtu.unwrap() < 1280 - 48, "{:?}", p.pmtu);
    assert_eq!(sim.nodes[0].node.counters().too_big_sent, 0);
    assert!(sim.nodes[0]
        .tun
        .iter()
        .all(|p| !(p[0] >> 4 == 6 && p[6] == 58 && p.get(40) == Some(&2))));
}
