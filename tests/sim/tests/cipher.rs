//! The data AEAD each session agrees on: AES-256-GCM between two nodes that both offer it
//! (`NodeConfig::aes`), ChaCha20-Poly1305 when either does not, and always
//! ChaCha20-Poly1305 with relays, even when a node offers AES-256-GCM to one.
#![allow(clippy::unwrap_used)]

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use veil_proto::crypto::Cipher;
use veil_proto::handshake::{self, InitPayload, RespPayload};
use veil_proto::noise::Initiator;
use veil_proto::wire::{self, HsKind};
use veil_proto::{create_network, Identity, NodeConfig, Privacy, Relay, RelayConfig, MAX_DATAGRAM};
use veil_sim::{udp4, Sim};

const AES: &str = "aes-256-gcm";
const CHACHA: &str = "chacha20-poly1305";

fn cfg(aes: bool) -> NodeConfig {
    NodeConfig {
        aes,
        ..NodeConfig::default()
    }
}

fn ping_both_ways(sim: &mut Sim, a: usize, b: usize, count: usize) -> (usize, usize) {
    sim.ping_both_ways(
        a,
        b,
        count,
        Duration::from_millis(20),
        Duration::from_secs(1),
    )
}

/// The cipher node `i` shows for its only peer.
fn cipher_of_peer(sim: &Sim, i: usize) -> &'static str {
    let peers = sim.nodes[i].node.peers(sim.now);
    assert_eq!(peers.len(), 1, "{peers:?}");
    peers[0].cipher
}

fn relay_sessions_are_chacha(sim: &Sim, i: usize) {
    let ciphers = sim.nodes[i].node.relay_ciphers();
    assert!(!ciphers.is_empty(), "node {i} has no relay session");
    assert!(
        ciphers.iter().all(|c| *c == Cipher::ChaCha20Poly1305),
        "node {i}: {ciphers:?}"
    );
}

#[test]
fn two_nodes_that_offer_aes_use_it_direct_and_through_the_relay() {
    for direct in [true, false] {
        let node = NodeConfig {
            direct,
            ..cfg(true)
        };
        let mut sim = Sim::new(81, 2, node, Default::default());
        sim.run_for(Duration::from_secs(5));
        assert_eq!(ping_both_ways(&mut sim, 0, 1, 100), (100, 100));
        for i in [0, 1] {
            assert_eq!(cipher_of_peer(&sim, i), AES, "node {i}, direct {direct}");
            let path = &sim.nodes[i].node.peers(sim.now)[0].path;
            assert_eq!(*path, if direct { "direct" } else { "relayed" });
            relay_sessions_are_chacha(&sim, i);
        }
        // Re-keys agree on it again, and data keeps flowing across them.
        for _ in 0..3 {
            sim.run_for(Duration::from_secs(50));
            assert_eq!(ping_both_ways(&mut sim, 0, 1, 20), (20, 20));
            assert_eq!(cipher_of_peer(&sim, 0), AES);
            assert_eq!(cipher_of_peer(&sim, 1), AES);
        }
    }
}

#[test]
fn one_node_without_aes_gets_chacha_whichever_side_starts() {
    // Node 0 offers AES-256-GCM, node 1 does not. Each opens the session once.
    for first in [0, 1] {
        let mut sim = Sim::new(82, 0, NodeConfig::default(), Default::default());
        let a = sim.add_node(cfg(true));
        let b = sim.add_node(cfg(false));
        sim.run_for(Duration::from_secs(5));
        let (from, to) = if first == 0 { (a, b) } else { (b, a) };
        let (i_from, i_to) = (sim.ipv4(from).unwrap(), sim.ipv4(to).unwrap());
        sim.tun_send(from, &udp4(i_from, i_to, b"first"));
        sim.run_for(Duration::from_secs(1));
        assert_eq!(sim.nodes[to].tun.len(), 1, "the first packet arrives");
        assert_eq!(sim.nodes[to].node.counters().handshakes_answered, 1);
        assert_eq!(sim.nodes[from].node.counters().handshakes_answered, 0);
        assert_eq!(ping_both_ways(&mut sim, a, b, 100), (100, 100));
        assert_eq!(cipher_of_peer(&sim, a), CHACHA, "{first} started");
        assert_eq!(cipher_of_peer(&sim, b), CHACHA, "{first} started");
        relay_sessions_are_chacha(&sim, a);
    }
}

#[test]
fn two_hop_node_keeps_chacha_with_guard_and_home_relay_and_aes_end_to_end() {
    let two = NodeConfig {
        private: Privacy::TwoHop,
        ..cfg(true)
    };
    let mut sim = Sim::with_relays(83, 2, 0, cfg(true));
    let a = sim.add_node(two);
    let b = sim.add_node(cfg(true));
    sim.run_for(Duration::from_secs(10));
    assert_eq!(ping_both_ways(&mut sim, a, b, 50), (50, 50));
    // The guard's session and the home relay's (inside it).
    assert!(sim.nodes[a].node.relay_ciphers().len() >= 2);
    relay_sessions_are_chacha(&sim, a);
    relay_sessions_are_chacha(&sim, b);
    assert_eq!(cipher_of_peer(&sim, a), AES);
    assert_eq!(cipher_of_peer(&sim, b), AES);
}

/// A node never offers AES-256-GCM to a relay; this one does, by hand, and the relay
/// answers without it, so both ends use ChaCha20-Poly1305.
#[test]
fn relay_answers_an_aes_offer_without_aes() {
    let now = Instant::now();
    let unix = Duration::from_secs(Sim::BASE_UNIX);
    let relay_addr: SocketAddr = "198.18.0.1:7000".parse().unwrap();
    let (_, tokens) = create_network([3; 32], &[relay_addr.to_string()]);
    let mut relay = Relay::new(&tokens[0], RelayConfig::default(), [4; 32], now, unix);
    let keys = tokens[0].keys();
    let node = Identity::from_secret([5; 32]);
    let offer = InitPayload {
        timestamp: unix.as_nanos() as u64,
        hp: [6; 32],
        cid: [7; 8],
        ipv4: None,
        cert: Vec::new(),
        link: None,
        aes: true,
    };
    let (init, msg1) = Initiator::start(
        &node,
        &relay.public_key(),
        &keys.prologue(),
        &offer.encode(),
        [8; 32],
    )
    .unwrap();
    let mut rng = ChaCha20Rng::from_seed([9; 32]);
    let seal = keys.hs_seal(&relay.public_key());
    let from: SocketAddr = "198.18.1.2:40000".parse().unwrap();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    for dg in handshake::datagrams(&seal, &mut rng, HsKind::Init, 42, &msg1) {
        buf[..dg.len()].copy_from_slice(&dg);
        assert!(relay
            .handle_datagram(now, from, &mut buf[..dg.len()])
            .is_none());
    }
    // Message 2, sealed for the node, in pieces.
    let ours = keys.hs_seal(node.public());
    let mut pieces = Vec::new();
    while let Some(t) = relay.poll_transmit(&mut buf) {
        assert_eq!(t.dst, from);
        let mut dg = buf[..t.len].to_vec();
        let f = wire::open_handshake(&ours, &mut dg).unwrap();
        assert_eq!((f.kind, f.msg_id), (HsKind::Response, 42));
        pieces.push((f.index, dg[f.piece].to_vec()));
    }
    assert!(!pieces.is_empty(), "the relay answered");
    pieces.sort();
    let msg2: Vec<u8> = pieces.into_iter().flat_map(|(_, p)| p).collect();
    let (session_keys, payload) = init.finish(&msg2).unwrap();
    let resp = RespPayload::decode(&payload).unwrap();
    assert!(!resp.aes, "a relay never chooses AES-256-GCM");
    assert_eq!(session_keys.cipher, Cipher::ChaCha20Poly1305);
    assert_eq!(relay.status(now).clients, 1);
}
