//! The relay and rendezvous state machine. It answers only what authenticates, stores
//! registrations under blinded names as opaque records, and forwards end-to-end encrypted
//! datagrams between its nodes. It holds no network secret: it cannot read records,
//! compute blinded names, or open the node-to-node traffic it forwards.

use crate::crypto::{ChaChaAead, HeaderKey, HeaderKeySchedule, HsSeal};
use crate::frag::Reassembler;
use crate::handshake::{self, InitPayload, RespPayload, MAX_HANDSHAKE_AGE};
use crate::keys::{node_id, Identity, RelayKeys};
use crate::noise::Responder;
use crate::ratelimit::RateLimiter;
use crate::replay::RELAY_WORDS;
use crate::session::{OpenError, Session};
use crate::token::{RelayToken, ROTATION_GRACE_SECS};
use crate::types::*;
use crate::wire::{self, Cursor, Frame, HsFragment, HsKind, HDR_LEN};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

mod cluster;
mod link;
pub use cluster::{
    ClaimOutcome, ClusterEntry, ClusterOp, ClusterPeer, ClusterStatus, MemoryStore,
    RemoteAnnouncement, StoreAnswer,
};
use link::Link;

/// Where a client is: an underlay address, or a circuit another relay carries for it (the
/// client is then a private two-hop node, and this relay never learns its address).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Endpoint {
    Udp(SocketAddr),
    Circuit { link: u64, id: u64 },
}

/// What a relay reports as a circuit client's address (it has none).
const NO_ADDR: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::UNSPECIFIED,
    0,
));

impl Endpoint {
    /// The address to tell the client it is seen from.
    fn seen_as(self) -> SocketAddr {
        match self {
            Endpoint::Udp(a) => a,
            Endpoint::Circuit { .. } => NO_ADDR,
        }
    }
}

/// Most names one node may hold.
const MAX_NAMES_PER_CLIENT: usize = 8;
/// Handshakes a relay answers per source address and second, in bursts of up to
/// `HS_BURST` (many nodes can share an address behind a NAT), tracking at most `HS_KEYS`
/// addresses.
const HS_PER_SEC: u32 = 20;
const HS_BURST: u32 = 50;
const HS_KEYS: usize = 65_536;
/// Largest record a node may store.
const MAX_RECORD: usize = 512;
/// Largest sealed route announcement, and most clients with one.
pub(crate) const MAX_ANNOUNCE: usize = 1024;
pub(crate) const MAX_ANNOUNCERS: usize = 1024;

/// A relay's session with a client: a shallower replay window than end-to-end sessions.
/// Always ChaCha20-Poly1305 ([`ChaChaAead`]): relays never agree to AES-256-GCM, and the
/// session stays at its 32-byte keys.
type ClientSession = Session<RELAY_WORDS, ChaChaAead>;

/// A blinded name as the relay stores it (see [`short`]).
type Name = [u8; 16];

/// One registered node. Kept small: a relay holds one per node of the network.
struct Client {
    public: [u8; 32],
    addr: Endpoint,
    // Boxed: most clients hold one session, so an empty slot costs a pointer.
    current: Option<Box<ClientSession>>,
    previous: Option<Box<ClientSession>>,
    /// The sealed record of the client's registration (one copy for all its names).
    record: Box<[u8]>,
    /// Its names.
    names: Box<[Name]>,
    /// Its last accepted handshake timestamp.
    last_ts: u64,
    /// When that handshake was accepted, and when it last sent anything, in [`Relay::tick`]s.
    ts_tick: u32,
    last_rx: u32,
}

/// A blinded name as the relay stores it: its first 16 bytes. Names are keyed hashes under a
/// key relays do not have; 128 bits keep them unique (a node cannot find a second name that
/// collides with another node's without about 2^64 work for some pair, 2^128 for a given one)
/// and halve the relay's memory for them. (A byte array, not a u128: its 8-byte alignment
/// keeps a map entry with a handle at 24 bytes instead of 32.)
fn short(name: &[u8; 32]) -> Name {
    let mut b = [0u8; 16];
    b.copy_from_slice(&name[..16]);
    b
}

/// The relay keys of one network secret, ready to open and answer handshakes.
struct RelayEpoch {
    own_seal: HsSeal,
    keys: RelayKeys,
    prologue: [u8; 32],
}

impl RelayEpoch {
    fn new(keys: RelayKeys, me: &[u8; 32]) -> Self {
        RelayEpoch {
            own_seal: keys.hs_seal(me),
            prologue: keys.prologue(),
            keys,
        }
    }
}

/// A relay.
pub struct Relay {
    cfg: RelayConfig,
    identity: Identity,
    /// The current relay keys…
    epoch: RelayEpoch,
    /// …and, after a rotation, the previous ones with the end of their overlap.
    previous: Option<(RelayEpoch, u64)>,
    hp: HeaderKeySchedule,
    rng: ChaCha20Rng,
    base: (Instant, Duration),
    clients: BTreeMap<u64, Client>,
    /// Sealed route announcements by client (only nodes that route have one; opaque here).
    announcements: BTreeMap<u64, Box<[u8]>>,
    /// Clients whose announcement left with them, to tell the others at the next chance.
    withdrawn: Vec<u64>,
    by_public: BTreeMap<[u8; 32], u64>,
    cids: HashMap<[u8; 8], u64>,
    /// Blinded name → owning client handle.
    names: HashMap<Name, u64>,
    /// Handshake timestamps of keys that are no longer clients (kept MAX_HANDSHAKE_AGE).
    last_ts: BTreeMap<[u8; 32], (u64, Instant)>,
    reasm: Reassembler<(Endpoint, bool)>,
    transmits: VecDeque<(SocketAddr, Vec<u8>)>,
    counters: RelayCounters,
    /// The network CA's public key: nodes must present a certificate it signed.
    ca: Option<[u8; 32]>,
    /// The newest CA-signed policy any node pushed.
    policy: Option<crate::cert::Policy>,
    /// Handshakes answered per source address (each costs an X25519 and an ML-KEM).
    hs_limit: RateLimiter<std::net::IpAddr>,
    /// The network's relay peering key, if this relay's token has one: relay links need it.
    peering: Option<[u8; 32]>,
    /// Links with other relays, by handle.
    links: BTreeMap<u64, Link>,
    link_by_public: HashMap<[u8; 32], u64>,
    /// Receive connection ids of link sessions.
    link_cids: HashMap<[u8; 8], u64>,
    /// Guard side: the circuit each client opened, client handle → (link, circuit id)…
    circuits: HashMap<u64, (u64, u64)>,
    /// …and back.
    circuit_clients: HashMap<(u64, u64), u64>,
    /// New links a client may cause (each sends handshakes to an address it chose).
    extend_limit: RateLimiter<u64>,
    /// The shared rendezvous, when relays share one (`relay/cluster.rs`).
    cluster: Option<Box<cluster::Cluster>>,
}

impl Relay {
    /// Creates a relay from its token. `seed` feeds every random choice it makes.
    pub fn new(
        token: &RelayToken,
        cfg: RelayConfig,
        seed: [u8; 32],
        now: Instant,
        unix_now: Duration,
    ) -> Relay {
        let identity = Identity::from_secret(token.private_key);
        let mut rng = ChaCha20Rng::from_seed(seed);
        let mut hp = [0u8; 32];
        rng.fill_bytes(&mut hp);
        Relay {
            cfg,
            epoch: RelayEpoch::new(token.keys(), identity.public()),
            previous: token
                .previous_keys()
                .map(|(k, until)| (RelayEpoch::new(k, identity.public()), until)),
            identity,
            hp: HeaderKeySchedule::new(hp),
            rng,
            base: (now, unix_now),
            clients: BTreeMap::new(),
            by_public: BTreeMap::new(),
            cids: HashMap::new(),
            names: HashMap::new(),
            announcements: BTreeMap::new(),
            withdrawn: Vec::new(),
            last_ts: BTreeMap::new(),
            reasm: Reassembler::default(),
            transmits: VecDeque::new(),
            counters: RelayCounters::default(),
            ca: token.ca,
            policy: None,
            hs_limit: RateLimiter::new(HS_PER_SEC, HS_BURST, HS_KEYS),
            peering: token.peering,
            links: BTreeMap::new(),
            link_by_public: HashMap::new(),
            link_cids: HashMap::new(),
            circuits: HashMap::new(),
            circuit_clients: HashMap::new(),
            extend_limit: RateLimiter::new(1, 2, 4096),
            cluster: None,
        }
    }

    /// The relay's static public key.
    pub fn public_key(&self) -> [u8; 32] {
        *self.identity.public()
    }

    fn unix(&self, now: Instant) -> Duration {
        self.base.1 + now.saturating_duration_since(self.base.0)
    }

    /// `now` in whole seconds since the relay started, rounded up (so that a deadline
    /// computed from a tick is never early).
    fn tick(&self, now: Instant) -> u32 {
        let d = now.saturating_duration_since(self.base.0);
        let up = d.as_secs() + u64::from(d.subsec_nanos() > 0);
        u32::try_from(up).unwrap_or(u32::MAX)
    }

    /// The instant of a tick.
    fn at(&self, tick: u32) -> Instant {
        self.base.0 + Duration::from_secs(u64::from(tick))
    }

    /// When a client that last sent at `last_rx` expires.
    fn expiry(&self, last_rx: u32) -> Instant {
        self.at(last_rx) + self.cfg.client_timeout
    }

    /// Adopts this relay's token after `veil network rotate`: the new relay base becomes
    /// current, the one the token names as previous is answered until the overlap (and its
    /// grace) ends. Clients and their sessions carry on.
    pub fn adopt_token(&mut self, token: &RelayToken) -> Result<(), AdoptError> {
        if token.private_key != self.identity.secret_bytes() {
            return Err(AdoptError::OtherRelay);
        }
        if token.ca != self.ca {
            return Err(AdoptError::OtherCa);
        }
        let me = *self.identity.public();
        self.epoch = RelayEpoch::new(token.keys(), &me);
        self.previous = token
            .previous_keys()
            .map(|(k, until)| (RelayEpoch::new(k, &me), until));
        self.counters.token_rotations += 1;
        Ok(())
    }

    /// Opens a handshake fragment with the current keys or, until the overlap and its
    /// grace end, the previous ones; says whether it was the previous ones.
    fn open_handshake(&self, now: Instant, buf: &mut [u8]) -> Option<(HsFragment, bool)> {
        if let Some(f) = wire::open_handshake(&self.epoch.own_seal, buf) {
            return Some((f, false));
        }
        let (prev, until) = self.previous.as_ref()?;
        if self.unix(now).as_secs() >= until.saturating_add(ROTATION_GRACE_SECS) {
            return None;
        }
        let f = wire::open_handshake(&prev.own_seal, buf)?;
        Some((f, true))
    }

    /// The epoch links are opened in: the previous one while its overlap lasts (every
    /// relay has it then), else the current one.
    fn out_epoch(&self, now: Instant) -> &RelayEpoch {
        match &self.previous {
            Some((e, until)) if self.unix(now).as_secs() < *until => e,
            _ => &self.epoch,
        }
    }

    fn epoch_at(&self, previous: bool) -> &RelayEpoch {
        match &self.previous {
            Some((e, _)) if previous => e,
            _ => &self.epoch,
        }
    }

    /// A datagram arrived. If it is a forward, the datagram for the destination is written
    /// over `buf` and returned as `buf[..len]`; anything else it causes is queued.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        buf: &mut [u8],
    ) -> Option<Transmit> {
        self.counters.rx_datagrams += 1;
        if let Some((cid, counter)) = wire::unmask_header(&self.hp, buf) {
            if let Some(&handle) = self.cids.get(&cid) {
                return self.handle_transport(now, Endpoint::Udp(from), handle, cid, counter, buf);
            }
            if let Some(&link) = self.link_cids.get(&cid) {
                self.link_transport(now, from, link, cid, counter, buf);
                return None;
            }
        }
        self.handle_handshake(now, Endpoint::Udp(from), buf);
        None
    }

    /// A datagram a link delivered on circuit `id`, for this relay: the client behind the
    /// circuit is one of ours (we are its home relay).
    fn circuit_datagram(&mut self, now: Instant, link: u64, id: u64, dg: &mut [u8]) {
        let from = Endpoint::Circuit { link, id };
        if let Some((cid, counter)) = wire::unmask_header(&self.hp, dg) {
            if let Some(&handle) = self.cids.get(&cid) {
                if let Some(t) = self.handle_transport(now, from, handle, cid, counter, dg) {
                    self.transmits.push_back((t.dst, dg[..t.len].to_vec()));
                }
                return;
            }
        }
        self.handle_handshake(now, from, dg);
    }

    /// Sends a datagram to a client wherever it is.
    fn emit(&mut self, now: Instant, to: Endpoint, dg: Vec<u8>) {
        match to {
            Endpoint::Udp(a) => {
                self.counters.tx_datagrams += 1;
                self.transmits.push_back((a, dg));
            }
            Endpoint::Circuit { link, id } => self.send_on_circuit(now, link, id, &dg),
        }
    }

    fn handle_transport(
        &mut self,
        now: Instant,
        from: Endpoint,
        handle: u64,
        cid: [u8; 8],
        counter: u64,
        buf: &mut [u8],
    ) -> Option<Transmit> {
        let tick = self.tick(now);
        let client = self.clients.get_mut(&handle)?;
        let session = match (&mut client.current, &mut client.previous) {
            (Some(s), _) if s.recv_cid == cid => s,
            (_, Some(s)) if s.recv_cid == cid => s,
            _ => return None,
        };
        let (kind, body) = match session.open(now, counter, buf, self.cfg.reject_after_time) {
            Ok(x) => x,
            Err(e) => {
                self.count_open_error(e);
                return None;
            }
        };
        client.last_rx = tick;
        // Roaming: the latest authenticated address wins.
        client.addr = from;
        match kind {
            Frame::Forward => {
                let pt_len = buf.len() - HDR_LEN - crate::crypto::TAG_LEN;
                self.forward(now, handle, body, pt_len, buf)
            }
            Frame::Keepalive => {
                let flags = buf[body].first().copied().unwrap_or(0);
                if flags & 4 != 0 {
                    // Cover traffic: a dummy of the same size goes back.
                    let size = buf.len();
                    self.counters.cover_echoes += 1;
                    self.send_frame_padded(
                        now,
                        handle,
                        Frame::Keepalive,
                        &[2],
                        wire::Padding::new(wire::PAD_TO_MTU, size),
                    );
                }
                if flags & 1 == 1 {
                    // The echo carries the address the node is seen from, so a node
                    // notices a NAT rebinding or a new underlay address.
                    let mut echo = vec![0u8];
                    wire::put_addr(&mut echo, from.seen_as());
                    self.send_frame(now, handle, Frame::Keepalive, &echo);
                }
                None
            }
            Frame::Register => {
                let b = buf[body].to_vec();
                self.register(now, handle, &b);
                None
            }
            Frame::Lookup => {
                let b = buf[body].to_vec();
                self.lookup(now, handle, &b);
                None
            }
            Frame::Close => {
                self.remove_client(handle);
                self.flush_withdrawn(now);
                None
            }
            Frame::Announce => {
                let b = buf[body].to_vec();
                self.on_announce(now, handle, &b);
                None
            }
            Frame::Policy => {
                let b = buf[body].to_vec();
                self.on_policy(now, &b);
                None
            }
            Frame::Extend => {
                let b = buf[body].to_vec();
                self.on_extend(now, handle, &b);
                None
            }
            Frame::Circuit => {
                let b = buf[body].to_vec();
                self.on_client_circuit(now, handle, &b);
                None
            }
            _ => {
                self.counters.dropped_malformed += 1;
                None
            }
        }
    }

    /// Rewrites `Forward{dst, inner}` into `Deliver{src, inner}` for the destination and
    /// seals it in place: no copy, no allocation.
    fn forward(
        &mut self,
        now: Instant,
        src: u64,
        body: std::ops::Range<usize>,
        pt_len: usize,
        buf: &mut [u8],
    ) -> Option<Transmit> {
        if body.len() < 8 {
            self.counters.dropped_malformed += 1;
            return None;
        }
        let mut h = [0u8; 8];
        h.copy_from_slice(&buf[body.start..body.start + 8]);
        let dst = u64::from_be_bytes(h);
        let Some(target) = self.clients.get_mut(&dst) else {
            // A node of another relay (an alias) goes on the link to its home relay.
            let inner = buf[body.start + 8..body.end].to_vec();
            if self.cluster_forward(now, src, dst, &inner) {
                return None;
            }
            self.counters.forward_unreachable += 1;
            self.send_frame(now, src, Frame::Unreachable, &dst.to_be_bytes());
            return None;
        };
        let Some(session) = target.current.as_mut() else {
            self.counters.forward_unreachable += 1;
            return None;
        };
        buf[HDR_LEN] = wire::frame_byte(Frame::Deliver);
        buf[body.start..body.start + 8].copy_from_slice(&src.to_be_bytes());
        let len = session.reseal(now, buf, pt_len);
        self.counters.forwarded += 1;
        match target.addr {
            Endpoint::Udp(dst) => {
                self.counters.tx_datagrams += 1;
                Some(Transmit {
                    dst,
                    len,
                    previous_socket: false,
                })
            }
            Endpoint::Circuit { link, id } => {
                let dg = buf[..len].to_vec();
                self.send_on_circuit(now, link, id, &dg);
                None
            }
        }
    }

    fn register(&mut self, now: Instant, handle: u64, body: &[u8]) {
        let mut c = Cursor(body);
        let (Some(req), Some(n)) = (c.u32(), c.u8()) else {
            self.counters.dropped_malformed += 1;
            return;
        };
        let n = usize::from(n);
        let mut names = Vec::with_capacity(n);
        for _ in 0..n {
            match c.array::<32>() {
                Some(name) => names.push(short(&name)),
                None => {
                    self.counters.dropped_malformed += 1;
                    return;
                }
            }
        }
        let record = c.rest();
        if n == 0 || n > MAX_NAMES_PER_CLIENT || record.len() > MAX_RECORD {
            self.counters.dropped_malformed += 1;
            return;
        }
        // First come, first served: a name held by another live node is a conflict.
        if let Some(i) = self.local_conflict(handle, &names) {
            self.counters.registration_conflicts += 1;
            self.refuse_registration(now, handle, req, i);
            return;
        }
        // With a shared rendezvous the names are claimed there first; the reply waits.
        let mut full = Vec::with_capacity(n);
        let mut c = Cursor(&body[5..]);
        for _ in 0..n {
            full.extend(c.array::<32>());
        }
        if self.cluster_claim(now, handle, req, &names, &full, record) {
            return;
        }
        self.commit_registration(now, handle, req, names, record);
    }

    /// The index of the first of `names` another live client of this relay holds.
    fn local_conflict(&self, handle: u64, names: &[Name]) -> Option<usize> {
        names
            .iter()
            .position(|name| self.names.get(name).is_some_and(|owner| *owner != handle))
    }

    /// Answers a registration with a conflict on name `index`.
    fn refuse_registration(&mut self, now: Instant, handle: u64, req: u32, index: usize) {
        let mut reply = req.to_be_bytes().to_vec();
        reply.push(1);
        reply.extend_from_slice(&handle.to_be_bytes());
        reply.push(index as u8);
        self.send_frame(now, handle, Frame::RegisterReply, &reply);
    }

    /// Stores a registration and answers it.
    fn commit_registration(
        &mut self,
        now: Instant,
        handle: u64,
        req: u32,
        names: Vec<Name>,
        record: &[u8],
    ) {
        // (Checked again: with a shared rendezvous a local client may have come first
        // while the claim was out.)
        if let Some(i) = self.local_conflict(handle, &names) {
            self.counters.registration_conflicts += 1;
            self.refuse_registration(now, handle, req, i);
            return;
        }
        let Some(client) = self.clients.get_mut(&handle) else {
            return;
        };
        for old in std::mem::take(&mut client.names) {
            self.names.remove(&old);
        }
        for name in &names {
            self.names.insert(*name, handle);
        }
        client.record = record.into();
        client.names = names.into();
        self.counters.registrations += 1;
        let observed = client.addr.seen_as();
        let mut reply = req.to_be_bytes().to_vec();
        reply.push(0);
        reply.extend_from_slice(&handle.to_be_bytes());
        reply.push(0);
        // The address the node is seen from: its server-reflexive candidate.
        wire::put_addr(&mut reply, observed);
        // The serial of the policy we hold (0: none), so a node with a newer one pushes it.
        let serial = self.policy.as_ref().map_or(0, |p| p.serial);
        reply.extend_from_slice(&serial.to_be_bytes());
        self.send_frame(now, handle, Frame::RegisterReply, &reply);
        if let Some(p) = self.policy.as_ref().map(crate::cert::Policy::to_bytes) {
            self.send_frame(now, handle, Frame::Policy, &p);
        }
        // The routes others announced (here and, under aliases, at other relays), so a node
        // that just joined can use them.
        let routes: Vec<Vec<u8>> = self
            .announcements
            .iter()
            .filter(|(h, _)| **h != handle)
            .map(|(h, b)| (*h, b.clone()))
            .chain(self.cluster_announcements())
            .map(|(h, b)| {
                let mut f = h.to_be_bytes().to_vec();
                f.extend_from_slice(&b);
                f
            })
            .collect();
        for f in routes {
            self.send_frame(now, handle, Frame::Announcement, &f);
        }
    }

    fn lookup(&mut self, now: Instant, handle: u64, body: &[u8]) {
        let mut c = Cursor(body);
        let (Some(req), Some(name)) = (c.u32(), c.array::<32>()) else {
            self.counters.dropped_malformed += 1;
            return;
        };
        self.counters.lookups += 1;
        let local = self
            .names
            .get(&short(&name))
            .is_some_and(|owner| self.clients.contains_key(owner));
        if !local && self.cluster_lookup(now, handle, req, &name) {
            return;
        }
        let mut reply = req.to_be_bytes().to_vec();
        match self
            .names
            .get(&short(&name))
            .and_then(|owner| self.clients.get(owner).map(|c| (*owner, c)))
        {
            Some((owner, c)) => {
                reply.push(1);
                reply.extend_from_slice(&owner.to_be_bytes());
                reply.extend_from_slice(&c.record);
            }
            None => {
                reply.push(0);
                reply.extend_from_slice(&0u64.to_be_bytes());
            }
        }
        self.send_frame(now, handle, Frame::LookupReply, &reply);
    }

    fn send_frame(&mut self, now: Instant, handle: u64, kind: Frame, body: &[u8]) {
        let pad = wire::Padding::from(self.cfg.pad_bucket);
        self.send_frame_padded(now, handle, kind, body, pad);
    }

    fn send_frame_padded(
        &mut self,
        now: Instant,
        handle: u64,
        kind: Frame,
        body: &[u8],
        pad: wire::Padding,
    ) {
        let Some(client) = self.clients.get_mut(&handle) else {
            return;
        };
        let Some(session) = client.current.as_mut() else {
            return;
        };
        if let Some(dg) = session.seal_frame(now, kind, body, pad) {
            let to = client.addr;
            self.emit(now, to, dg);
        }
    }

    fn count_open_error(&mut self, e: OpenError) {
        match e {
            OpenError::Replay => self.counters.dropped_replay += 1,
            OpenError::Aead | OpenError::Expired => self.counters.dropped_bad_aead += 1,
            OpenError::Malformed => self.counters.dropped_malformed += 1,
        }
    }

    fn handle_handshake(&mut self, now: Instant, from: Endpoint, buf: &mut [u8]) {
        let Some((frag, previous)) = self.open_handshake(now, buf) else {
            self.counters.dropped_unauthenticated += 1;
            return;
        };
        self.counters.handshakes_previous_key += u64::from(previous);
        if frag.kind != HsKind::Init {
            // The answer of a relay we open a link to.
            if let Endpoint::Udp(a) = from {
                self.link_response(now, a, frag, previous, buf);
            } else {
                self.counters.dropped_malformed += 1;
            }
            return;
        }
        let (whole, evicted) = self.reasm.add(
            now,
            (from, previous),
            frag.msg_id,
            frag.index,
            frag.count,
            &buf[frag.piece.clone()],
        );
        self.counters.reassembly_timeouts += evicted;
        let Some(msg) = whole else { return };
        let source_ip = match from {
            Endpoint::Udp(a) => a.ip(),
            // Circuits share the allowance of the relay that carries them.
            Endpoint::Circuit { link, .. } => match self.links.get(&link) {
                Some(l) => l.addr.ip(),
                None => return,
            },
        };
        if !self.hs_limit.allow(now, &source_ip) {
            self.counters.dropped_rate_limited += 1;
            return;
        }
        let mut seed = [0u8; 32];
        self.rng.fill_bytes(&mut seed);
        let prologue = self.epoch_at(previous).prologue;
        let Ok((responder, payload)) = Responder::read(&self.identity, &prologue, &msg, seed)
        else {
            self.counters.dropped_unauthenticated += 1;
            return;
        };
        let Some(init) = InitPayload::decode(&payload) else {
            self.counters.dropped_malformed += 1;
            return;
        };
        let remote = responder.remote_static;
        if let Some(proof) = init.link {
            if let Endpoint::Udp(a) = from {
                self.link_request(now, a, responder, &init, proof, previous, frag.msg_id);
            } else {
                self.counters.dropped_malformed += 1;
            }
            return;
        }
        let via_circuit = matches!(from, Endpoint::Circuit { .. });
        if let Some(ca) = self.ca.filter(|_| !via_circuit) {
            // (A circuit client was admitted by its guard relay, which checked its
            // certificate; here it presents a key made for this circuit.)
            // Access control: a node without a valid certificate gets no answer at all, so
            // it cannot register.
            let unix = self.unix(now).as_secs();
            let ok = crate::cert::Certificate::from_bytes(&init.cert)
                .is_some_and(|c| c.verify(&ca, &remote, unix).is_ok());
            let revoked = self.policy.as_ref().is_some_and(|p| p.is_revoked(&remote));
            if !ok || revoked {
                self.counters.dropped_uncertified += 1;
                return;
            }
        }
        let last = match self
            .by_public
            .get(&remote)
            .and_then(|h| self.clients.get(h))
        {
            Some(c) => Some(c.last_ts),
            None => self.last_ts.get(&remote).map(|x| x.0),
        };
        if !handshake::timestamp_ok(init.timestamp, last, self.unix(now)) {
            self.counters.dropped_handshake_replay += 1;
            return;
        }
        self.last_ts.remove(&remote);
        let Some((session, msg2)) = self.answer(now, responder, &init) else {
            return;
        };
        let cid = session.recv_cid;
        let tick = self.tick(now);
        let handle = match self.by_public.get(&remote) {
            Some(&h) => h,
            None => {
                let mut h = self.rng.next_u64();
                while h == 0 || self.clients.contains_key(&h) {
                    h = self.rng.next_u64();
                }
                self.by_public.insert(remote, h);
                self.clients.insert(
                    h,
                    Client {
                        public: remote,
                        addr: from,
                        current: None,
                        previous: None,
                        record: Box::default(),
                        names: Box::default(),
                        last_ts: init.timestamp,
                        ts_tick: tick,
                        last_rx: tick,
                    },
                );
                h
            }
        };
        self.cids.insert(cid, handle);
        if let Some(client) = self.clients.get_mut(&handle) {
            client.addr = from;
            client.last_rx = tick;
            client.last_ts = init.timestamp;
            client.ts_tick = tick;
            if let Some(old) = client.previous.take() {
                self.cids.remove(&old.recv_cid);
            }
            client.previous = client.current.replace(Box::new(session));
        }
        let seal = self.epoch_at(previous).keys.hs_seal(&remote);
        for dg in handshake::datagrams(&seal, &mut self.rng, HsKind::Response, frag.msg_id, &msg2) {
            self.emit(now, from, dg);
        }
        self.counters.handshakes_answered += 1;
    }

    /// A receive connection id no client or link session uses.
    /// Replies to an accepted message 1 (of a node or of a relay opening a link): a fresh
    /// connection id, our header key, and the session that results. A relay never chooses
    /// AES-256-GCM, even when offered: it holds one session per node, and ChaCha20-Poly1305
    /// keeps each to its 32-byte keys.
    fn answer(
        &mut self,
        now: Instant,
        responder: Responder,
        init: &InitPayload,
    ) -> Option<(ClientSession, Vec<u8>)> {
        let cid = self.fresh_cid();
        let resp = RespPayload {
            hp: *self.hp.bytes(),
            cid,
            ipv4: None,
            cert: Vec::new(),
            aes: false,
        };
        let (keys, msg2) = responder.reply(&resp.encode()).ok()?;
        let session = Session::new(&keys, cid, init.cid, HeaderKey::new(init.hp), false, now);
        Some((session, msg2))
    }

    fn fresh_cid(&mut self) -> [u8; 8] {
        loop {
            let mut c = [0u8; 8];
            self.rng.fill_bytes(&mut c);
            if !self.cids.contains_key(&c) && !self.link_cids.contains_key(&c) {
                return c;
            }
        }
    }

    /// A node or another relay of the network passed a policy on: adopt it if the CA signed
    /// it and it is newer, drop the clients it revokes, and pass it on to every client and
    /// every relay of the shared rendezvous (on the link, or the store's bus while the
    /// link is down). Each relay passes a serial on once, the one it adopts, so nothing
    /// loops.
    pub(super) fn on_policy(&mut self, now: Instant, body: &[u8]) {
        let Some(ca) = self.ca else {
            self.counters.dropped_malformed += 1;
            return;
        };
        let Some(p) = crate::cert::Policy::from_bytes(body, &ca) else {
            self.counters.dropped_uncertified += 1;
            return;
        };
        if self
            .policy
            .as_ref()
            .is_some_and(|cur| cur.serial >= p.serial)
        {
            return;
        }
        let revoked: Vec<u64> = self
            .clients
            .iter()
            .filter(|(_, c)| p.is_revoked(&c.public))
            .map(|(h, _)| *h)
            .collect();
        for h in revoked {
            self.counters.clients_revoked += 1;
            self.remove_client(h);
        }
        self.flush_withdrawn(now);
        let bytes = p.to_bytes();
        self.policy = Some(p);
        self.counters.policies += 1;
        let all: Vec<u64> = self.clients.keys().copied().collect();
        for h in all {
            self.send_frame(now, h, Frame::Policy, &bytes);
        }
        self.policy_to_relays(now, &bytes);
    }

    fn remove_client(&mut self, handle: u64) {
        if let Some(key) = self.circuits.remove(&handle) {
            self.circuit_clients.remove(&key);
        }
        if let Some(c) = self.clients.remove(&handle) {
            self.by_public.remove(&c.public);
            // Replay protection outlives the client.
            let at = self.at(c.ts_tick);
            self.last_ts.insert(c.public, (c.last_ts, at));
            for s in [c.current, c.previous].into_iter().flatten() {
                self.cids.remove(&s.recv_cid);
            }
            for n in c.names.iter() {
                self.names.remove(n);
            }
            self.cluster_release(c.public, &c.names);
        }
        if self.announcements.remove(&handle).is_some() {
            self.withdrawn.push(handle);
            self.cluster_announce(handle, &[]);
        }
    }

    /// A client's route announcement: kept, and passed to every other client when it changed
    /// (empty: withdrawn).
    fn on_announce(&mut self, now: Instant, handle: u64, body: &[u8]) {
        if body.len() > MAX_ANNOUNCE {
            self.counters.dropped_malformed += 1;
            return;
        }
        if body.is_empty() {
            if self.announcements.remove(&handle).is_some() {
                self.broadcast_announcement(now, handle, &[]);
                self.cluster_announce(handle, &[]);
            }
            return;
        }
        if self
            .announcements
            .get(&handle)
            .is_some_and(|b| **b == *body)
        {
            return;
        }
        if !self.announcements.contains_key(&handle) && self.announcements.len() >= MAX_ANNOUNCERS {
            self.counters.announcements_refused += 1;
            return;
        }
        self.announcements.insert(handle, body.into());
        self.counters.announcements += 1;
        self.broadcast_announcement(now, handle, body);
        self.cluster_announce(handle, body);
    }

    fn broadcast_announcement(&mut self, now: Instant, from: u64, blob: &[u8]) {
        let mut frame = from.to_be_bytes().to_vec();
        frame.extend_from_slice(blob);
        let others: Vec<u64> = self
            .clients
            .keys()
            .copied()
            .filter(|h| *h != from)
            .collect();
        for h in others {
            self.send_frame(now, h, Frame::Announcement, &frame);
        }
    }

    /// Tells the clients about announcements that left with their clients.
    fn flush_withdrawn(&mut self, now: Instant) {
        for h in std::mem::take(&mut self.withdrawn) {
            self.broadcast_announcement(now, h, &[]);
        }
    }

    /// Expires silent nodes, old sessions and partial handshakes.
    pub fn handle_timeout(&mut self, now: Instant) {
        let expired: Vec<u64> = self
            .clients
            .iter()
            .filter(|(_, c)| now >= self.expiry(c.last_rx))
            .map(|(h, _)| *h)
            .collect();
        for h in expired {
            self.counters.clients_expired += 1;
            self.remove_client(h);
        }
        self.flush_withdrawn(now);
        let reject = self.cfg.reject_after_time;
        for c in self.clients.values_mut() {
            if c.previous
                .as_ref()
                .is_some_and(|s| now.saturating_duration_since(s.created) >= reject)
            {
                if let Some(s) = c.previous.take() {
                    self.cids.remove(&s.recv_cid);
                }
            }
        }
        self.last_ts
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < MAX_HANDSHAKE_AGE);
        self.counters.reassembly_timeouts += self.reasm.expire(now);
        self.link_timers(now);
        self.cluster_timers(now);
    }

    /// Next queued datagram, copied into `buf`.
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        let (dst, dg) = self.transmits.pop_front()?;
        let len = dg.len().min(buf.len());
        buf[..len].copy_from_slice(&dg[..len]);
        Some(Transmit {
            dst,
            len,
            previous_socket: false,
        })
    }

    /// When [`Relay::handle_timeout`] should run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let clients = self.clients.values().map(|c| self.expiry(c.last_rx)).min();
        let reasm = self.reasm.next_expiry();
        let prev = self
            .clients
            .values()
            .filter_map(|c| {
                c.previous
                    .as_ref()
                    .map(|s| s.created + self.cfg.reject_after_time)
            })
            .min();
        [
            clients,
            reasm,
            prev,
            self.link_deadline(),
            self.cluster_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Snapshot for `veil relay status`.
    pub fn status(&self, _now: Instant) -> RelayStatus {
        RelayStatus {
            id: node_id(self.identity.public()),
            clients: self.clients.len(),
            names: self.names.len(),
            links: self.links.values().filter(|l| l.is_up()).count(),
            circuits: self.circuits.len(),
            circuit_clients: self
                .clients
                .values()
                .filter(|c| matches!(c.addr, Endpoint::Circuit { .. }))
                .count(),
            counters: self.counters.list(),
        }
    }

    /// Every underlay address and static key this relay holds (of clients and of other
    /// relays): what its state could tell about who talks to whom. Circuit clients have no
    /// address here, and show the key they chose for the circuit.
    pub fn held_identities(&self) -> (Vec<SocketAddr>, Vec<[u8; 32]>) {
        let mut addrs = Vec::new();
        let mut keys = Vec::new();
        for c in self.clients.values() {
            if let Endpoint::Udp(a) = c.addr {
                addrs.push(a);
            }
            keys.push(c.public);
        }
        for l in self.links.values() {
            addrs.push(l.addr);
            keys.push(l.public);
        }
        keys.extend(self.last_ts.keys().copied());
        (addrs, keys)
    }

    /// The counters.
    pub fn counters(&self) -> &RelayCounters {
        &self.counters
    }
}
#[cfg(test)]
mod size_guard {
    /// A relay holds one client per node of the network: these sizes are what the
    /// rendezvous memory figure in docs/benchmarks.md is made of; growing them is a choice.
    #[test]
    fn per_node_state_stays_small() {
        assert!(std::mem::size_of::<super::Client>() <= 128);
        let s = std::mem::size_of::<super::ClientSession>();
        assert!(s <= 328, "{s}");
    }
}
