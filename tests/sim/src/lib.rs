//! A deterministic in-memory network for Veil's sans-IO engines: one relay, any number of
//! nodes, a fake clock, and impairments (latency, jitter that reorders, loss,
//! duplication), all drawn from one seed. Nothing here sleeps or touches a socket.

pub mod bench;
pub mod fuzz;

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use veil_proto::{
    create_network, relay::MemoryStore, Identity, JoinToken, Node, NodeConfig, NodeEvent, Relay,
    RelayConfig, MAX_DATAGRAM,
};

/// Impairments applied to every datagram.
#[derive(Clone, Copy, Debug)]
pub struct Impairment {
    /// One-way latency.
    pub latency: Duration,
    /// Extra random delay in [0, jitter) (reorders packets).
    pub jitter: Duration,
    /// Probability of dropping a datagram.
    pub loss: f64,
    /// Probability of delivering a datagram twice.
    pub duplicate: f64,
}

impl Default for Impairment {
    fn default() -> Self {
        Impairment {
            latency: Duration::from_millis(5),
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
        }
    }
}

/// How a NAT in front of a node maps and filters (RFC 4787 terms).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatKind {
    /// Endpoint-independent mapping, address-and-port-dependent filtering (a typical home
    /// router, or Linux masquerade that keeps ports).
    EndpointIndependent,
    /// Endpoint-dependent mapping ("symmetric"): a new public port per destination.
    Symmetric,
}

/// A NAT in front of one node.
pub struct Nat {
    /// Mapping and filtering behaviour.
    pub kind: NatKind,
    /// The public address.
    pub public: std::net::IpAddr,
    /// Mapping key (internal socket, and destination for symmetric NATs) → public port.
    map: std::collections::HashMap<(SocketAddr, Option<SocketAddr>), u16>,
    /// Public port → the internal socket it maps to.
    internal: std::collections::HashMap<u16, SocketAddr>,
    /// Public port → remotes that may send to it.
    allowed: std::collections::HashMap<u16, std::collections::HashSet<SocketAddr>>,
    next_port: u16,
    /// Inbound datagrams the NAT dropped.
    pub dropped: u64,
}

impl Nat {
    fn new(kind: NatKind, public: std::net::IpAddr) -> Nat {
        Nat {
            kind,
            public,
            map: Default::default(),
            internal: Default::default(),
            allowed: Default::default(),
            next_port: 20000,
            dropped: 0,
        }
    }

    fn outbound(&mut self, from: SocketAddr, to: SocketAddr) -> SocketAddr {
        let key = match self.kind {
            NatKind::EndpointIndependent => (from, None),
            NatKind::Symmetric => (from, Some(to)),
        };
        let next = &mut self.next_port;
        let port = *self.map.entry(key).or_insert_with(|| {
            *next += 1;
            *next
        });
        self.internal.insert(port, from);
        self.allowed.entry(port).or_default().insert(to);
        SocketAddr::new(self.public, port)
    }

    /// The internal socket a datagram from `from` to the public `port` goes to, if the
    /// filter lets it in.
    fn inbound(&mut self, from: SocketAddr, port: u16) -> Option<SocketAddr> {
        let ok = self.allowed.get(&port).is_some_and(|a| a.contains(&from));
        if !ok {
            self.dropped += 1;
            return None;
        }
        self.internal.get(&port).copied()
    }
}

/// One node in the simulation.
pub struct SimNode {
    /// The engine.
    pub node: Node,
    /// Its underlay address.
    pub addr: SocketAddr,
    /// Inner packets it delivered to its (simulated) TUN.
    pub tun: Vec<Vec<u8>>,
    /// Events it emitted.
    pub events: Vec<NodeEvent>,
    /// The NAT in front of it, if any.
    pub nat: Option<Nat>,
    /// The socket before its last rotation ([`Sim::rotate_socket`]), open until the
    /// instant given, as the I/O layer keeps it.
    pub prev_addr: Option<(SocketAddr, Instant)>,
    /// Its IPv6 address on the same socket, if it is dual-stack ([`Sim::add_ipv6`]):
    /// datagrams to IPv6 addresses leave from it.
    pub addr6: Option<SocketAddr>,
    /// The node left (its process is gone): it sends and receives nothing.
    pub gone: bool,
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    at: Instant,
    seq: u64,
    from: SocketAddr,
    to: SocketAddr,
    bytes: Vec<u8>,
}

/// Every datagram that went over the simulated wire, for analysis.
pub struct Captured {
    /// When it was sent, since the simulation started.
    pub at: Duration,
    /// Sender.
    pub from: SocketAddr,
    /// Receiver.
    pub to: SocketAddr,
    /// Bytes.
    pub bytes: Vec<u8>,
}

/// The simulated network.
pub struct Sim {
    /// Current simulated time.
    pub now: Instant,
    /// The relay engine.
    pub relay: Relay,
    /// The relay's address.
    pub relay_addr: SocketAddr,
    /// Nodes.
    pub nodes: Vec<SimNode>,
    /// The join token.
    pub token: JoinToken,
    relay_token: veil_proto::RelayToken,
    /// Impairments.
    pub impair: Impairment,
    /// Record every datagram here when `capture` is set.
    pub captured: Vec<Captured>,
    /// Whether to capture.
    pub capture: bool,
    /// Nodes seal and open their direct-path datagrams through jobs, as the I/O layer does
    /// with crypto helper threads (`Node::handle_tun_packet_later`, `Node::open_job`,
    /// `Node::handle_opened`), instead of inside the engine.
    pub split_aead: bool,
    /// With `split_aead`: datagrams sealed and opened by jobs.
    pub split_sealed: u64,
    /// See `split_sealed`.
    pub split_opened: u64,
    heap: BinaryHeap<Reverse<InFlight>>,
    seq: u64,
    rng: ChaCha20Rng,
    buf: Vec<u8>,
    out: Vec<u8>,
    base_unix: Duration,
    start: Instant,
    /// Pairs of underlay addresses (either direction) between which datagrams are dropped.
    pub blocked: Vec<(std::net::IpAddr, std::net::IpAddr)>,
    /// Extra one-way latency of datagrams between IPv6 addresses (a longer route).
    pub ipv6_delay: Duration,
    /// Extra one-way latency between two underlay addresses (either direction; public
    /// addresses for a node behind a NAT): a route that got longer. Changed at will.
    pub route_delays: Vec<(std::net::IpAddr, std::net::IpAddr, Duration)>,
    /// Pairs of sockets (either direction; public addresses for a node behind a NAT)
    /// between which datagrams are dropped.
    pub blocked_sockets: Vec<(SocketAddr, SocketAddr)>,
    /// Underlay addresses behind a hop that silently drops datagrams (UDP payloads) larger
    /// than the given size, in either direction: a path MTU black hole (no ICMP).
    pub mtu_limits: Vec<(std::net::IpAddr, usize)>,
    /// Datagrams dropped by `mtu_limits`.
    pub dropped_too_big: u64,
    /// Further relays of the network ([`Sim::with_relays`]), with their addresses: the
    /// token lists the first relay, then these in order.
    pub more_relays: Vec<(SocketAddr, Relay)>,
    more_tokens: Vec<veil_proto::RelayToken>,
    /// The relays' shared rendezvous ([`Sim::with_cluster`]): answered at once.
    pub store: Option<MemoryStore>,
    /// The relay new nodes try first (index in token order; see [`Sim::home_next_at`]).
    first_relay: usize,
    /// Drop what relays send on the store's bus.
    pub bus_down: bool,
}

impl Sim {
    /// A network with a relay and `n` nodes, all derived from `seed`.
    pub fn new(seed: u64, n: usize, cfg: NodeConfig, impair: Impairment) -> Sim {
        Sim::with_ca(seed, n, cfg, impair, None)
    }

    /// Unix time (seconds) at the start of every simulation.
    pub const BASE_UNIX: u64 = 1_800_000_000;

    /// Like [`Sim::new`], in a network whose tokens carry the CA public key `ca` (access
    /// control on: nodes need certificates in their `NodeConfig`).
    pub fn with_ca(
        seed: u64,
        n: usize,
        cfg: NodeConfig,
        impair: Impairment,
        ca: Option<[u8; 32]>,
    ) -> Sim {
        Sim::build(seed, n, cfg, impair, ca, 1)
    }

    /// A network with `relays` relays (198.18.0.1, .2, … port 7000; every node is given
    /// all of them in token order) and `n` nodes.
    pub fn with_relays(seed: u64, relays: usize, n: usize, cfg: NodeConfig) -> Sim {
        Sim::build(seed, n, cfg, Impairment::default(), None, relays)
    }

    /// Like [`Sim::with_relays`], with the relays sharing one rendezvous (the in-memory
    /// store): nodes homed on different relays find each other, and reach each other through
    /// relay links.
    pub fn with_cluster(seed: u64, relays: usize, n: usize, cfg: NodeConfig) -> Sim {
        Sim::with_cluster_ca(seed, relays, n, cfg, None)
    }

    /// Like [`Sim::with_cluster`], in a network whose tokens carry the CA public key `ca`.
    pub fn with_cluster_ca(
        seed: u64,
        relays: usize,
        n: usize,
        cfg: NodeConfig,
        ca: Option<[u8; 32]>,
    ) -> Sim {
        let mut sim = Sim::build(seed, 0, cfg.clone(), Impairment::default(), ca, relays);
        sim.store = Some(MemoryStore::new());
        sim.relay.enable_cluster();
        for (_, r) in &mut sim.more_relays {
            r.enable_cluster();
        }
        sim.publish_directory();
        for _ in 0..n {
            sim.add_node(cfg.clone());
        }
        sim
    }

    /// Gives every clustered relay the directory of all relays (key, address).
    pub fn publish_directory(&mut self) {
        let mut dir = vec![(self.relay.public_key(), self.relay_addr)];
        dir.extend(self.more_relays.iter().map(|(a, r)| (r.public_key(), *a)));
        let now = self.now;
        if self.relay.is_clustered() {
            self.relay.set_cluster_relays(now, &dir);
        }
        for (_, r) in &mut self.more_relays {
            if r.is_clustered() {
                r.set_cluster_relays(now, &dir);
            }
        }
        self.drain_relay();
        for k in 0..self.more_relays.len() {
            self.drain_more(k);
        }
    }

    /// Hands a frame of the relays' bus to the relay of key `to` (unless the sim cut the
    /// bus).
    fn deliver_bus(&mut self, to: [u8; 32], payload: Vec<u8>) {
        if self.bus_down {
            return;
        }
        let now = self.now;
        if self.relay.public_key() == to {
            self.relay.cluster_bus(now, &payload);
            self.drain_relay();
            return;
        }
        if let Some(k) = self
            .more_relays
            .iter()
            .position(|(_, r)| r.public_key() == to)
        {
            self.more_relays[k].1.cluster_bus(now, &payload);
            self.drain_more(k);
        }
    }

    /// Gives every clustered relay the route announcements the store holds (the I/O layer
    /// lists them every second; here after every change).
    fn publish_routes(&mut self) {
        let Some(routes) = self.store.as_ref().map(MemoryStore::routes) else {
            return;
        };
        let now = self.now;
        self.relay.set_cluster_routes(now, &routes);
        for (_, r) in &mut self.more_relays {
            r.set_cluster_routes(now, &routes);
        }
    }

    /// Nodes added from now on try relay `k` (token order) first, then the others in order.
    pub fn home_next_at(&mut self, k: usize) {
        self.first_relay = k;
    }

    fn build(
        seed: u64,
        n: usize,
        cfg: NodeConfig,
        impair: Impairment,
        ca: Option<[u8; 32]>,
        relays: usize,
    ) -> Sim {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let now = Instant::now();
        let base_unix = Duration::from_secs(Sim::BASE_UNIX);
        let relay_addr = SocketAddr::from(([198, 18, 0, 1], 7000));
        let addrs: Vec<SocketAddr> = (0..relays.max(1))
            .map(|i| SocketAddr::from(([198, 18, 0, 1 + i as u8], 7000)))
            .collect();
        let names: Vec<String> = addrs.iter().map(ToString::to_string).collect();
        let (mut token, mut relay_tokens) = create_network(seed32(&mut rng), &names);
        token.ca = ca;
        for t in &mut relay_tokens {
            t.ca = ca;
        }
        let relay = Relay::new(
            &relay_tokens[0],
            RelayConfig::default(),
            seed32(&mut rng),
            now,
            base_unix,
        );
        let more_relays = addrs
            .iter()
            .zip(&relay_tokens)
            .skip(1)
            .map(|(a, t)| {
                let r = Relay::new(t, RelayConfig::default(), seed32(&mut rng), now, base_unix);
                (*a, r)
            })
            .collect();
        let mut sim = Sim {
            more_relays,
            more_tokens: relay_tokens.iter().skip(1).cloned().collect(),
            now,
            relay,
            relay_addr,
            nodes: Vec::new(),
            token,
            relay_token: relay_tokens[0].clone(),
            impair,
            captured: Vec::new(),
            capture: false,
            split_aead: false,
            split_sealed: 0,
            split_opened: 0,
            heap: BinaryHeap::new(),
            seq: 0,
            rng,
            buf: vec![0u8; MAX_DATAGRAM],
            out: vec![0u8; MAX_DATAGRAM],
            base_unix,
            start: now,
            blocked: Vec::new(),
            blocked_sockets: Vec::new(),
            ipv6_delay: Duration::ZERO,
            route_delays: Vec::new(),
            mtu_limits: Vec::new(),
            dropped_too_big: 0,
            store: None,
            first_relay: 0,
            bus_down: false,
        };
        for _ in 0..n {
            sim.add_node(cfg.clone());
        }
        sim
    }

    /// Adds a node that joins with the network's token.
    pub fn add_node(&mut self, cfg: NodeConfig) -> usize {
        self.add_node_behind(cfg, None)
    }

    /// Adds a node, behind a NAT of `nat` kind if given (its own address is then private).
    pub fn add_node_behind(&mut self, cfg: NodeConfig, nat: Option<NatKind>) -> usize {
        let i = self.nodes.len();
        let addr = match nat {
            None => SocketAddr::from(([198, 18, 1, (i % 250) as u8 + 2], 40000 + i as u16)),
            Some(_) => SocketAddr::from(([198, 19, 1, (i % 250) as u8 + 2], 40000 + i as u16)),
        };
        let id = Identity::from_secret(seed32(&mut self.rng));
        self.add_node_with(cfg, nat, addr, id)
    }

    /// Adds a node that joins with `token` (say, the token from before a rotation).
    pub fn add_node_with_token(&mut self, cfg: NodeConfig, token: &JoinToken) -> usize {
        let keep = std::mem::replace(&mut self.token, token.clone());
        let i = self.add_node(cfg);
        self.token = keep;
        i
    }

    /// Unix time now, as the engines see it.
    pub fn unix_now(&self) -> Duration {
        self.base_unix + self.elapsed()
    }

    /// Rotates the network secret as `veil network rotate` does, with an overlap of
    /// `overlap` from now: returns the new join token and relay token. Nodes added from
    /// now on join with the new token, a restarted relay runs the new relay token; the
    /// running relay and nodes are left alone (the test hands them the tokens).
    pub fn rotate(&mut self, overlap: Duration) -> (JoinToken, veil_proto::RelayToken) {
        let until = (self.unix_now() + overlap).as_secs();
        let join = self.token.rotated(seed32(&mut self.rng), until);
        let relay = self.relay_token.rotated(&join);
        self.token = join.clone();
        self.relay_token = relay.clone();
        (join, relay)
    }

    /// Adds a node with a given identity (whose certificate the test signed).
    pub fn add_node_with_identity(&mut self, cfg: NodeConfig, id: Identity) -> usize {
        let i = self.nodes.len();
        let addr = SocketAddr::from(([198, 18, 1, (i % 250) as u8 + 2], 40000 + i as u16));
        self.add_node_with(cfg, None, addr, id)
    }

    fn add_node_with(
        &mut self,
        mut cfg: NodeConfig,
        nat: Option<NatKind>,
        addr: SocketAddr,
        id: Identity,
    ) -> usize {
        let i = self.nodes.len();
        let nat = nat.map(|k| Nat::new(k, [198, 18, 2, (i % 250) as u8 + 2].into()));
        cfg.relays = std::iter::once(self.relay_addr)
            .chain(self.more_relays.iter().map(|(a, _)| *a))
            .zip(&self.token.relays)
            .map(|(a, r)| (a, r.public_key))
            .collect();
        let first = self.first_relay % cfg.relays.len().max(1);
        cfg.relays.rotate_left(first);
        let unix = self.base_unix + self.elapsed();
        let mut node = Node::new(&self.token, id, cfg, seed32(&mut self.rng), self.now, unix);
        node.set_local_candidates(self.now, &[addr]);
        self.nodes.push(SimNode {
            node,
            addr,
            tun: Vec::new(),
            events: Vec::new(),
            nat,
            prev_addr: None,
            addr6: None,
            gone: false,
        });
        self.drain_node(i);
        i
    }

    /// Calls into node `i`'s engine (as its I/O layer would) and sends what that caused.
    pub fn with_node<R>(&mut self, i: usize, f: impl FnOnce(&mut Node, Instant) -> R) -> R {
        let now = self.now;
        let r = f(&mut self.nodes[i].node, now);
        self.drain_node(i);
        r
    }

    /// Node `i` leaves without a word (its process dies): it sends and receives nothing more.
    pub fn remove_node(&mut self, i: usize) {
        self.nodes[i].gone = true;
    }

    /// Moves node `i` to a new underlay address (and, behind a NAT, a new public address
    /// with fresh mappings), as when a laptop changes networks. The node is told, as the
    /// I/O layer tells it when its interface addresses change.
    pub fn move_node(&mut self, i: usize, new_addr: SocketAddr) {
        self.nodes[i].addr = new_addr;
        if let Some(nat) = &self.nodes[i].nat {
            let kind = nat.kind;
            let ip = match nat.public {
                std::net::IpAddr::V4(v4) => {
                    let o = v4.octets();
                    std::net::IpAddr::from([o[0], o[1], o[2].wrapping_add(1), o[3]])
                }
                v6 => v6,
            };
            self.nodes[i].nat = Some(Nat::new(kind, ip));
        }
        self.nodes[i].prev_addr = None;
        let now = self.now;
        self.nodes[i].node.set_local_candidates(now, &[new_addr]);
        self.drain_node(i);
    }

    /// Moves node `i` to a fresh socket on `port` at the same address, keeping the old
    /// one open for the grace, as `veil-io` does at a port rotation; returns the new
    /// socket's address.
    pub fn rotate_socket(&mut self, i: usize, port: u16) -> SocketAddr {
        let old = self.nodes[i].addr;
        let new = SocketAddr::new(old.ip(), port);
        let now = self.now;
        self.nodes[i].prev_addr = Some((old, now + veil_proto::node::PREVIOUS_SOCKET_GRACE));
        self.nodes[i].addr = new;
        self.nodes[i].node.socket_rotated(now, &[new]);
        self.drain_node(i);
        new
    }

    /// Gives node `i` an IPv6 address on its socket too (dual-stack, no NAT for IPv6) and
    /// tells it, as the I/O layer would; the relay stays IPv4.
    pub fn add_ipv6(&mut self, i: usize, addr6: SocketAddr) {
        self.nodes[i].addr6 = Some(addr6);
        let now = self.now;
        let own = self.nodes[i].addr;
        self.nodes[i].node.set_local_candidates(now, &[own, addr6]);
        self.drain_node(i);
    }

    /// The socket node `i` sends a transmit for `dst` from.
    fn source(&self, i: usize, previous: bool, dst: SocketAddr) -> SocketAddr {
        let n = &self.nodes[i];
        if let (Some(a6), true) = (n.addr6, dst.is_ipv6()) {
            return a6;
        }
        match n.prev_addr {
            Some((a, until)) if previous && self.now < until => a,
            _ => n.addr,
        }
    }

    /// Whether `a` is a socket of node `n` (its current one, or the previous one during
    /// the grace).
    fn holds(&self, n: &SimNode, a: SocketAddr) -> bool {
        n.addr == a
            || n.addr6 == Some(a)
            || n.prev_addr
                .is_some_and(|(p, until)| p == a && self.now < until)
    }

    /// Simulated time since the start.
    pub fn elapsed_now(&self) -> Duration {
        self.elapsed()
    }

    fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    fn send(&mut self, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        // Source NAT on the way out of a node's network.
        let i = self.nodes.iter().position(|n| self.holds(n, from));
        let from = match i.and_then(|i| self.nodes[i].nat.as_mut()) {
            Some(nat) => nat.outbound(from, to),
            None => from,
        };
        if self
            .blocked
            .iter()
            .any(|&(a, b)| (a, b) == (from.ip(), to.ip()) || (b, a) == (from.ip(), to.ip()))
            || self
                .blocked_sockets
                .iter()
                .any(|&(a, b)| (a, b) == (from, to) || (b, a) == (from, to))
        {
            return;
        }
        // Captured on the sender's link: before a hop further on drops it as too big.
        if self.capture {
            self.captured.push(Captured {
                at: self.now - self.start,
                from,
                to,
                bytes: bytes.clone(),
            });
        }
        if self
            .mtu_limits
            .iter()
            .any(|&(ip, mtu)| (ip == from.ip() || ip == to.ip()) && bytes.len() > mtu)
        {
            self.dropped_too_big += 1;
            return;
        }
        if self.chance(self.impair.loss) {
            return;
        }
        let copies = if self.chance(self.impair.duplicate) {
            2
        } else {
            1
        };
        let route: Duration = self
            .route_delays
            .iter()
            .filter(|&&(a, b, _)| (a, b) == (from.ip(), to.ip()) || (b, a) == (from.ip(), to.ip()))
            .map(|x| x.2)
            .sum();
        let extra = route
            + if to.is_ipv6() {
                self.ipv6_delay
            } else {
                Duration::ZERO
            };
        for _ in 0..copies {
            let jitter = if self.impair.jitter.is_zero() {
                Duration::ZERO
            } else {
                Duration::from_nanos(
                    self.rng.next_u64() % self.impair.jitter.as_nanos().max(1) as u64,
                )
            };
            self.seq += 1;
            self.heap.push(Reverse(InFlight {
                at: self.now + self.impair.latency + jitter + extra,
                seq: self.seq,
                from,
                to,
                bytes: bytes.clone(),
            }));
        }
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.rng.next_u64() as f64 / u64::MAX as f64) < p
    }

    fn drain_node(&mut self, i: usize) {
        while let Some(t) = self.nodes[i].node.poll_transmit(&mut self.out) {
            let bytes = self.out[..t.len].to_vec();
            let from = self.source(i, t.previous_socket, t.dst);
            self.send(from, t.dst, bytes);
        }
        while let Some(n) = self.nodes[i].node.poll_tun_packet(&mut self.buf) {
            let p = self.buf[..n].to_vec();
            self.nodes[i].tun.push(p);
        }
        while let Some(e) = self.nodes[i].node.poll_event() {
            self.nodes[i].events.push(e);
        }
    }

    fn drain_more(&mut self, k: usize) {
        let mut announced = false;
        let mut bus = Vec::new();
        if let Some(store) = self.store.as_mut() {
            let now = self.now;
            let r = &mut self.more_relays[k].1;
            while let Some(op) = r.poll_cluster() {
                announced |= matches!(op, veil_proto::relay::ClusterOp::Announce { .. });
                if let veil_proto::relay::ClusterOp::Send { to, payload } = op {
                    bus.push((to, payload));
                    continue;
                }
                if let Some((id, a)) = store.apply(&op) {
                    MemoryStore::answer(r, now, id, a);
                }
            }
        }
        for (to, payload) in bus {
            self.deliver_bus(to, payload);
        }
        if announced {
            self.publish_routes();
            self.drain_relay();
            for j in 0..self.more_relays.len() {
                if j != k {
                    self.drain_more(j);
                }
            }
        }
        while let Some(t) = self.more_relays[k].1.poll_transmit(&mut self.out) {
            let bytes = self.out[..t.len].to_vec();
            let from = self.more_relays[k].0;
            self.send(from, t.dst, bytes);
        }
    }

    fn drain_relay(&mut self) {
        let mut announced = false;
        let mut bus = Vec::new();
        if let Some(store) = self.store.as_mut() {
            while let Some(op) = self.relay.poll_cluster() {
                announced |= matches!(op, veil_proto::relay::ClusterOp::Announce { .. });
                if let veil_proto::relay::ClusterOp::Send { to, payload } = op {
                    bus.push((to, payload));
                    continue;
                }
                if let Some((id, a)) = store.apply(&op) {
                    MemoryStore::answer(&mut self.relay, self.now, id, a);
                }
            }
        }
        for (to, payload) in bus {
            self.deliver_bus(to, payload);
        }
        if announced {
            self.publish_routes();
            for j in 0..self.more_relays.len() {
                self.drain_more(j);
            }
        }
        while let Some(t) = self.relay.poll_transmit(&mut self.out) {
            let bytes = self.out[..t.len].to_vec();
            let from = self.relay_addr;
            self.send(from, t.dst, bytes);
        }
    }

    /// Sends `count` UDP packets each way between nodes `a` and `b`, `gap` apart, then
    /// runs `settle` longer; returns how many arrived at `b` and at `a`.
    pub fn ping_both_ways(
        &mut self,
        a: usize,
        b: usize,
        count: usize,
        gap: Duration,
        settle: Duration,
    ) -> (usize, usize) {
        let (Some(ia), Some(ib)) = (self.ipv4(a), self.ipv4(b)) else {
            return (0, 0);
        };
        let (ra, rb) = (self.nodes[a].tun.len(), self.nodes[b].tun.len());
        for k in 0..count {
            self.tun_send(a, &udp4(ia, ib, format!("a to b {k}").as_bytes()));
            self.tun_send(b, &udp4(ib, ia, format!("b to a {k}").as_bytes()));
            self.run_for(gap);
        }
        self.run_for(settle);
        (self.nodes[b].tun.len() - rb, self.nodes[a].tun.len() - ra)
    }

    /// Injects an inner packet as if node `i`'s TUN produced it.
    pub fn tun_send(&mut self, i: usize, packet: &[u8]) {
        let now = self.now;
        let made = if self.split_aead {
            self.nodes[i]
                .node
                .handle_tun_packet_later(now, packet, &mut self.out)
        } else {
            self.nodes[i]
                .node
                .handle_tun_packet(now, packet, &mut self.out)
                .map(|t| (t, None))
        };
        if let Some((t, job)) = made {
            if let Some(job) = job {
                job.run(&mut self.out);
                self.split_sealed += 1;
            }
            let bytes = self.out[..t.len].to_vec();
            let from = self.source(i, t.previous_socket, t.dst);
            self.send(from, t.dst, bytes);
        }
        self.drain_node(i);
    }

    /// Injects raw bytes at the relay or a node, as an attacker on the path would.
    pub fn inject(&mut self, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        self.seq += 1;
        self.heap.push(Reverse(InFlight {
            at: self.now,
            seq: self.seq,
            from,
            to,
            bytes,
        }));
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut t = self.heap.peek().map(|r| r.0.at);
        let mut consider = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t: Instant| t.min(x)));
            }
        };
        consider(self.relay.poll_timeout());
        for (_, r) in &self.more_relays {
            consider(r.poll_timeout());
        }
        for n in self.nodes.iter().filter(|n| !n.gone) {
            consider(n.node.poll_timeout());
        }
        t
    }

    /// Runs the network until `until` (simulated).
    pub fn run_until(&mut self, until: Instant) {
        let mut last = self.now;
        let mut spins = 0u32;
        while let Some(next) = self.next_deadline() {
            if next > until {
                break;
            }
            self.now = self.now.max(next);
            if self.now == last {
                spins += 1;
                // A timer that stays due after it has been handled is a busy loop in
                // the real runtime too: fail loudly and say whose timer it is.
                assert!(
                    spins < 10_000,
                    "no progress at {:?}: {}",
                    self.now - self.start,
                    self.stuck_report()
                );
            } else {
                last = self.now;
                spins = 0;
            }
            self.step();
        }
        self.now = self.now.max(until);
    }

    fn stuck_report(&self) -> String {
        let now = self.now;
        let mut out = Vec::new();
        if self.relay.poll_timeout().is_some_and(|t| t <= now) {
            out.push("relay timer".to_string());
        }
        for (i, n) in self.nodes.iter().enumerate() {
            if n.node.poll_timeout().is_some_and(|t| t <= now) {
                out.push(format!("node {i} timer"));
            }
        }
        if self.heap.peek().is_some_and(|r| r.0.at <= now) {
            out.push("datagrams in flight at the same instant".to_string());
        }
        out.join(", ")
    }

    /// Runs for a simulated duration.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    fn step(&mut self) {
        let now = self.now;
        while self.heap.peek().is_some_and(|r| r.0.at <= now) {
            let Some(Reverse(f)) = self.heap.pop() else {
                break;
            };
            self.deliver(f);
        }
        if self.relay.poll_timeout().is_some_and(|t| t <= now) {
            self.relay.handle_timeout(now);
            self.drain_relay();
        }
        for k in 0..self.more_relays.len() {
            if self.more_relays[k]
                .1
                .poll_timeout()
                .is_some_and(|t| t <= now)
            {
                self.more_relays[k].1.handle_timeout(now);
                self.drain_more(k);
            }
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].gone {
                continue;
            }
            if self.nodes[i].node.poll_timeout().is_some_and(|t| t <= now) {
                self.nodes[i].node.handle_timeout(now);
                self.drain_node(i);
            }
        }
    }

    fn deliver(&mut self, f: InFlight) {
        let now = self.now;
        let mut buf = f.bytes;
        if f.to == self.relay_addr {
            if let Some(t) = self.relay.handle_datagram(now, f.from, &mut buf) {
                let bytes = buf[..t.len].to_vec();
                let from = self.relay_addr;
                self.send(from, t.dst, bytes);
            }
            self.drain_relay();
            return;
        }
        if let Some(k) = self.more_relays.iter().position(|(a, _)| *a == f.to) {
            if let Some(t) = self.more_relays[k].1.handle_datagram(now, f.from, &mut buf) {
                let bytes = buf[..t.len].to_vec();
                self.send(f.to, t.dst, bytes);
            }
            self.drain_more(k);
            return;
        }
        let mut to = f.to;
        if let Some(n) = self
            .nodes
            .iter_mut()
            .find(|n| n.nat.as_ref().is_some_and(|nat| nat.public == f.to.ip()))
        {
            let Some(nat) = n.nat.as_mut() else { return };
            let Some(internal) = nat.inbound(f.from, f.to.port()) else {
                return;
            };
            to = internal;
        } else if self
            .nodes
            .iter()
            .any(|n| self.holds(n, f.to) && n.nat.is_some())
        {
            // A private address is not reachable from outside its NAT.
            return;
        }
        let Some(i) = self.nodes.iter().position(|n| self.holds(n, to) && !n.gone) else {
            return;
        };
        let node = &mut self.nodes[i].node;
        let job = self
            .split_aead
            .then(|| node.open_job(now, f.from, &buf))
            .flatten();
        let r = match job {
            Some(job) => {
                self.split_opened += 1;
                let opened = job.run(&mut buf);
                node.handle_opened(now, f.from, &mut buf, opened)
            }
            None => node.handle_datagram(now, f.from, &mut buf),
        };
        if let Some(r) = r {
            let p = buf[r].to_vec();
            self.nodes[i].tun.push(p);
        }
        self.drain_node(i);
    }

    /// Replaces the relay with a fresh process of the same token: all its state is lost.
    pub fn restart_relay(&mut self) {
        let seed = seed32(&mut self.rng);
        self.relay = Relay::new(
            &self.relay_token,
            RelayConfig::default(),
            seed,
            self.now,
            self.unix_now(),
        );
        if self.store.is_some() {
            self.relay.enable_cluster();
            self.publish_directory();
        }
    }

    /// Replaces further relay `k` (see [`Sim::with_relays`]) with a fresh process of the
    /// same token.
    pub fn restart_more_relay(&mut self, k: usize) {
        let seed = seed32(&mut self.rng);
        let token = self.more_tokens[k].clone();
        self.more_relays[k].1 = Relay::new(
            &token,
            RelayConfig::default(),
            seed,
            self.now,
            self.unix_now(),
        );
        if self.store.is_some() {
            self.more_relays[k].1.enable_cluster();
            self.publish_directory();
        }
    }

    /// Restarts further relay `k` with a token that has no peering key (one made before
    /// peering keys existed): it neither opens nor accepts relay links.
    pub fn restart_more_relay_without_peering(&mut self, k: usize) {
        self.more_tokens[k].peering = None;
        self.restart_more_relay(k);
    }

    /// Overlay IPv4 of node `i`.
    pub fn ipv4(&self, i: usize) -> Option<Ipv4Addr> {
        self.nodes[i].node.overlay_ipv4()
    }
}

fn seed32(rng: &mut ChaCha20Rng) -> [u8; 32] {
    let mut s = [0u8; 32];
    rng.fill_bytes(&mut s);
    s
}

/// Builds a minimal IPv4/UDP packet (checksums are not the engine's business).
pub fn udp4(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let total = 28 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p[20..22].copy_from_slice(&1234u16.to_be_bytes());
    p[22..24].copy_from_slice(&5678u16.to_be_bytes());
    p[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p[28..].copy_from_slice(payload);
    p
}

/// Builds a minimal IPv6/UDP packet.
pub fn udp6(src: std::net::Ipv6Addr, dst: std::net::Ipv6Addr, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 48 + payload.len()];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p[6] = 17;
    p[7] = 64;
    p[8..24].copy_from_slice(&src.octets());
    p[24..40].copy_from_slice(&dst.octets());
    p[48..].copy_from_slice(payload);
    p
}

/// The destination of an inner packet (re-exported helper for tests).
pub fn dst_of(p: &[u8]) -> Option<IpAddr> {
    veil_proto::node::ip_destination(p)
}
