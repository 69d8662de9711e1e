//! The bodies of the fuzz targets (`fuzz/fuzz_targets/*`), kept here so that the committed
//! corpora replay on stable through `cargo test` (`tests/fuzz_corpus.rs`) and the fuzzers
//! need nothing but a call. Each takes arbitrary bytes and must not panic, hang or grow
//! without bound; the simulator's busy-loop detector runs under all of them.

use crate::{udp4, Impairment, Sim};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;
use veil_proto::frag::Reassembler;
use veil_proto::NodeConfig;

/// A network of a relay and two joined nodes with a session between them, made once per
/// process: building one costs several hybrid handshakes, far more than an input.
fn network() -> &'static Mutex<Sim> {
    static NET: std::sync::OnceLock<Mutex<Sim>> = std::sync::OnceLock::new();
    NET.get_or_init(|| Mutex::new(prepared(false)))
}

/// The network the datagram targets run against, built the same way every time (so that
/// seeds captured from it, `capture` set, authenticate at the fuzzers' copy).
pub fn prepared(capture: bool) -> Sim {
    let mut sim = Sim::new(99, 0, NodeConfig::default(), Impairment::default());
    sim.capture = capture;
    sim.add_node(NodeConfig::default());
    sim.add_node(NodeConfig::default());
    sim.run_for(Duration::from_secs(3));
    if let (Some(a), Some(b)) = (sim.ipv4(0), sim.ipv4(1)) {
        sim.tun_send(0, &udp4(a, b, b"hello"));
        sim.run_for(Duration::from_secs(1));
    }
    sim
}

fn with_network(f: impl FnOnce(&mut Sim)) {
    let mut guard = match network().lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    f(&mut guard);
}

/// The sender of a fuzzed datagram, from its first byte: the relay, the peer, or a
/// stranger.
fn source(sim: &Sim, b: u8) -> SocketAddr {
    match b % 3 {
        0 => sim.relay_addr,
        1 => sim.nodes[1].addr,
        _ => SocketAddr::from(([198, 18, 200, b], 40_000 + u16::from(b))),
    }
}

/// A network of two relays, a private two-hop node (0: guard relay 1, home relay 0, so both
/// relays hold a link and a circuit) and a plain node (1), with a session between them.
pub fn prepared_relays() -> Sim {
    let two = NodeConfig {
        private: veil_proto::Privacy::TwoHop,
        ..NodeConfig::default()
    };
    let mut sim = Sim::with_relays(98, 2, 0, NodeConfig::default());
    sim.add_node(two);
    sim.add_node(NodeConfig::default());
    sim.run_for(Duration::from_secs(5));
    if let (Some(a), Some(b)) = (sim.ipv4(0), sim.ipv4(1)) {
        sim.tun_send(0, &udp4(a, b, b"hello"));
        sim.run_for(Duration::from_secs(1));
    }
    sim
}

fn relays_network() -> &'static Mutex<Sim> {
    static NET: std::sync::OnceLock<Mutex<Sim>> = std::sync::OnceLock::new();
    NET.get_or_init(|| Mutex::new(prepared_relays()))
}

/// Authenticated frames of any kind and body, sealed in real sessions, into the relays (what
/// a member can send, past the AEAD the datagram targets cannot forge): a script of
/// `[who u8][kind u8][len u8][body…]`; `who` picks node 1 to its relay, node 0 to its home
/// relay through the circuit, or node 0 to its guard. Reaches registration, lookups,
/// policies, keepalive flags, Extend and Circuit handling, links and circuits at both ends.
pub fn relay_frames(data: &[u8]) {
    let mut guard = match relays_network().lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    let sim: &mut Sim = &mut guard;
    let mut c = data;
    while c.len() >= 3 {
        let (who, kind, len) = (c[0], c[1], usize::from(c[2]));
        c = &c[3..];
        let body = &c[..len.min(c.len())];
        c = &c[body.len()..];
        let (node, to_guard) = match who % 3 {
            0 => (1, false),
            1 => (0, false),
            _ => (0, true),
        };
        sim.with_node(node, |n, now| {
            n.send_raw_relay_frame(now, to_guard, kind & 0x1f, body)
        });
        sim.run_for(Duration::from_millis(5));
    }
    sim.run_for(Duration::from_millis(50));
}

/// One datagram from the wire into node 0: `[source selector][datagram…]`.
pub fn node_datagram(data: &[u8]) {
    let Some((&sel, dg)) = data.split_first() else {
        return;
    };
    with_network(|sim| {
        let from = source(sim, sel);
        let to = sim.nodes[0].addr;
        sim.inject(from, to, dg.to_vec());
        sim.run_for(Duration::from_millis(1));
    });
}

/// One datagram from the wire into the relay: `[source selector][datagram…]`.
pub fn relay_datagram(data: &[u8]) {
    let Some((&sel, dg)) = data.split_first() else {
        return;
    };
    with_network(|sim| {
        let from = match sel % 3 {
            0 => sim.nodes[0].addr,
            1 => sim.nodes[1].addr,
            _ => SocketAddr::from(([198, 18, 201, sel], 50_000)),
        };
        let to = sim.relay_addr;
        sim.inject(from, to, dg.to_vec());
        sim.run_for(Duration::from_millis(1));
    });
}

/// Handshake and overlay-fragment reassembly from a script of pieces:
/// `[key u8][msg id u8][index u8][count u8][len u8][piece…]`, repeated; time advances by the
/// key's low bits in seconds. Memory must stay within the reassembler's bounds.
pub fn reassembly(data: &[u8]) {
    let mut r: Reassembler<u8> = Reassembler::default();
    let base = std::time::Instant::now();
    let mut now = base;
    let mut c = data;
    while c.len() >= 5 {
        let (key, id, index, count, len) = (c[0], c[1], c[2], c[3], usize::from(c[4]));
        c = &c[5..];
        let piece = &c[..len.min(c.len())];
        c = &c[piece.len()..];
        now += Duration::from_secs(u64::from(key & 3));
        let (whole, _) = r.add(now, key, u32::from(id), index, count, piece);
        if let Some(w) = whole {
            assert!(w.len() <= 255 * usize::from(veil_proto::frag::MAX_PIECES));
        }
        r.expire(now);
        assert!(r.len() <= veil_proto::frag::MAX_PENDING);
    }
}

/// A control-socket request line.
pub fn control_request(data: &[u8]) {
    let line = String::from_utf8_lossy(data);
    let _ = veil_io::control::parse_request(&line);
}

/// Every text decoder a user or the wire feeds: tokens, CA keys, certificates, policies;
/// and the TCP stream framing, as a relay reads a stranger's stream and a node its relay's.
pub fn decoders(data: &[u8]) {
    let mut relay_side = veil_proto::stream::Decoder::relay(&[7u8; 32]);
    let (_, mut node_side) = veil_proto::stream::client(&[7u8; 32], [0u8; 16]);
    for dec in [&mut relay_side, &mut node_side] {
        let mut rest = data;
        while !rest.is_empty() {
            let n = dec.feed(rest);
            if n == 0 {
                break;
            }
            rest = &rest[n..];
            while let Ok(Some(_)) = dec.next() {}
        }
    }
    let text = String::from_utf8_lossy(data);
    let _ = veil_proto::JoinToken::decode(&text);
    let _ = veil_proto::RelayToken::decode(&text);
    let _ = veil_proto::CaKey::decode(&text);
    let _ = veil_proto::Certificate::decode(&text);
    let _ = veil_proto::Policy::decode(&text, &[7u8; 32]);
    let _ = veil_proto::Certificate::from_bytes(data);
    let _ = veil_proto::Policy::from_bytes(data, &[7u8; 32]);
}

/// The whole node state machine driven by a script (Firezone's approach): each op is
/// `[op][arg][len][bytes…]`: send an inner packet from node 0 or 1 (to the other, or to
/// the bytes' address), deliver raw bytes to a node or the relay, let time pass, move a node
/// or rotate its socket, give it an IPv6 address too, limit a path's MTU, drop the relay's
/// state. Runs on its own small network, fresh per
/// input, so that a failing input reproduces.
pub fn node_script(data: &[u8]) {
    let mut sim = Sim::new(7, 2, NodeConfig::default(), Impairment::default());
    sim.run_for(Duration::from_millis(500));
    let mut c = data;
    let mut steps = 0;
    while c.len() >= 3 && steps < 64 {
        steps += 1;
        let (op, arg, len) = (c[0], c[1], usize::from(c[2]));
        c = &c[3..];
        let bytes = &c[..len.min(c.len())];
        c = &c[bytes.len()..];
        let i = usize::from(arg & 1);
        match op % 8 {
            0 | 1 => {
                let (src, dst) = match (sim.ipv4(i), sim.ipv4(1 - i)) {
                    (Some(s), Some(d)) if op % 2 == 0 => (s, d),
                    (Some(s), _) => (s, Ipv4Addr::new(100, 64, arg, 1)),
                    _ => continue,
                };
                let mut payload = bytes.to_vec();
                payload.resize(usize::from(arg) * 6, 0xab);
                sim.tun_send(i, &udp4(src, dst, &payload));
            }
            2 => sim.tun_send(i, bytes),
            3 => {
                let from = source(&sim, arg);
                let to = sim.nodes[i].addr;
                sim.inject(from, to, bytes.to_vec());
            }
            4 => {
                let from = sim.nodes[i].addr;
                let to = sim.relay_addr;
                sim.inject(from, to, bytes.to_vec());
            }
            5 => sim.run_for(Duration::from_millis(u64::from(arg) * 40)),
            6 if arg & 2 == 0 => {
                let new = SocketAddr::from(([198, 18, 3, arg], 41_000 + u16::from(arg)));
                sim.move_node(i, new);
            }
            6 => {
                sim.rotate_socket(i, 42_000 + u16::from(arg));
            }
            _ => {
                if arg % 4 == 0 {
                    sim.restart_relay();
                } else if arg % 8 == 1 {
                    // (arg is odd here: bit 3 picks the node.)
                    let a6 = format!("[fd00:198:18::{arg:x}]:{}", 43_000 + u16::from(arg));
                    if let Ok(a6) = a6.parse() {
                        sim.add_ipv6(usize::from((arg >> 3) & 1), a6);
                    }
                } else {
                    let ip = sim.nodes[i].addr.ip();
                    sim.mtu_limits.push((ip, 1000 + usize::from(arg) * 2));
                }
            }
        }
        sim.run_for(Duration::from_millis(5));
    }
    sim.run_for(Duration::from_secs(2));
    for n in &sim.nodes {
        assert!(n.node.state_entries() < 10_000, "node state grew");
    }
}
