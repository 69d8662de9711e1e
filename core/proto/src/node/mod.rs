//! The node state machine: its session with the relay (registration, lookups, keepalives),
//! on-demand sessions with peers, and the data path between the TUN and the wire.
//!
//! Call order: feed [`Node::handle_datagram`], [`Node::handle_tun_packet`] and
//! [`Node::handle_timeout`]; after each, drain [`Node::poll_transmit`],
//! [`Node::poll_tun_packet`] and [`Node::poll_event`]; sleep until [`Node::poll_timeout`].
//! The data path borrows the caller's buffers and does not allocate; packets that must
//! wait (for a lookup or a handshake) are queued, bounded, on the slow path.

use crate::cert::{CertError, Certificate, Policy};
use crate::crypto::{Cipher, HeaderKey, HeaderKeySchedule, HsSeal, TAG_LEN};
use crate::frag::Reassembler;
use crate::handshake::{self, InitPayload, RespPayload, MAX_HANDSHAKE_AGE};
use crate::keys::{guard_index, ipv4_candidate, node_id, Identity, NetworkKeys};
use crate::noise::{Initiator, Responder};
use crate::pmtu::Pmtud;
use crate::session::{OpenError, OpenJob, Opened, SealJob, Session};
use crate::token::{JoinToken, ROTATION_GRACE_SECS};
use crate::types::*;
use crate::wire::{self, Cursor, Frame, HsKind, Padding, BODY_OFFSET, TRANSPORT_OVERHEAD};
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::time::{Duration, Instant};

mod cover;
mod dns;
mod guard;
mod mtu;
mod routes;

pub use dns::dns_address;

/// Handshakes a node answers per path (a peer's address or relay handle) and second, in
/// bursts of up to `HS_BURST`, tracking at most `HS_KEYS` paths.
const HS_PER_SEC: u32 = 5;
const HS_BURST: u32 = 10;
const HS_KEYS: usize = 4096;
/// Packets queued per peer (or per lookup) while its session is being set up.
const QUEUE_MAX: usize = 64;
/// Handshake attempts before a peer is given up on.
const HANDSHAKE_ATTEMPTS: u32 = 8;
/// Lookup attempts before an address is declared unknown.
const LOOKUP_ATTEMPTS: u32 = 3;
/// How long to wait for a lookup reply.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(1);
/// How long an unknown address is remembered as unknown.
const NEGATIVE_TTL: Duration = Duration::from_secs(2);
/// How long the relay may stay silent after a probe before the node reconnects.
const RELAY_PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// An unanswered echo request to the relay is repeated this often until the timeout.
const RELAY_PROBE_RESEND: Duration = Duration::from_secs(1);
/// With more than one relay in the token: a relay that sent nothing for this long while
/// the node kept sending through it is probed at once…
const RELAY_ACTIVE_SILENCE: Duration = Duration::from_millis(750);
/// …with echo requests this often, and given up (failover) when none is answered in this
/// time: a relay that dies under traffic costs about 1.5 s, not the idle 25 + 5 s.
const RELAY_FAST_RESEND: Duration = Duration::from_millis(250);
const RELAY_FAST_TIMEOUT: Duration = Duration::from_millis(750);
/// First wait between relay handshake attempts (it doubles per failure).
const RELAY_BACKOFF_MIN: Duration = Duration::from_millis(500);
/// Longest wait between relay handshake attempts.
const RELAY_BACKOFF_MAX: Duration = Duration::from_secs(16);
/// A session is refused this long after it should have been re-keyed.
const REJECT_AFTER_EXTRA: Duration = Duration::from_secs(60);
/// A peer without traffic is forgotten entirely after this (its status row disappears). It
/// outlives the age a handshake timestamp may have, so the peer's last timestamp is still
/// known whenever a replayed message 1 could still pass the age check.
/// A session on which we kept sending for [`UNANSWERED_SPAN`] and heard nothing for this
/// long is presumed dead (the peer restarted and lost it): a new handshake starts, and the
/// old session serves until it completes. (WireGuard's 15 s, without its passive keepalive,
/// which would break an idle link's silence: a one-way flow costs a handshake every 15 s,
/// and a last packet that needs no answer costs nothing.)
const PEER_UNANSWERED: Duration = Duration::from_secs(15);
/// How long we must have kept sending after the last packet we received.
const UNANSWERED_SPAN: Duration = Duration::from_secs(5);
const PEER_FORGET_AFTER: Duration = MAX_HANDSHAKE_AGE.saturating_add(Duration::from_secs(60));
/// Registration request timeout.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(3);
/// Index of the DNS name among the names a node registers (key, IPv4, IPv6, name).
const NAME_INDEX: usize = 3;
/// Lookups in flight at once (each holds up to `QUEUE_MAX` packets).
const MAX_LOOKUPS: usize = 256;
/// Remembered misses.
const MAX_NEGATIVE: usize = 4096;
/// Relayed peers that carried data this recently are reconnected at once when the node's
/// relay changes (failover or a relay restart).
const RECONNECT_ACTIVE: Duration = Duration::from_secs(10);
/// Failed handshakes with a relay before the next relay of the token is tried.
const RELAY_FAILOVER_ATTEMPTS: u32 = 4;
/// IPv4 candidates tried one after the other before backing off for `REGISTER_TIMEOUT`.
const MAX_IPV4_ATTEMPTS: u32 = 64;
/// Room in front of an inner packet for both transport layers of a relayed datagram.
const RELAYED_BODY_OFFSET: usize = BODY_OFFSET + 8 + BODY_OFFSET;
/// Candidates a node announces or accepts from a peer.
const MAX_CANDIDATES: usize = 8;
/// How long the I/O layer keeps a socket open (and reads it) after moving to a fresh one
/// ([`Node::socket_rotated`]); direct paths not validated from the new socket by then go
/// back to the relay.
pub const PREVIOUS_SOCKET_GRACE: Duration = Duration::from_secs(10);
/// The engine stops sending from the previous socket this long before the I/O layer closes
/// it, and announces its candidates without it: peers still sending there learn to stop
/// while it is read.
const PREVIOUS_SOCKET_HANDOVER: Duration = Duration::from_secs(1);
/// Outstanding path challenges per peer.
const MAX_CHALLENGES: usize = 32;
/// Hole punching: a challenge to every candidate this often…
const PUNCH_INTERVAL: Duration = Duration::from_millis(200);
/// …for this many rounds (3 s) before the attempt counts as failed.
const PUNCH_ROUNDS: u32 = 15;
/// After a failed attempt, direct is retried (while data flows) after this, doubling…
const PUNCH_RETRY_MIN: Duration = Duration::from_secs(15);
/// …up to this.
const PUNCH_RETRY_MAX: Duration = Duration::from_secs(300);
/// Consent freshness (RFC 7675 in spirit): a direct path on which nothing was received for
/// this long while data flows gets a challenge, once per interval…
const CONSENT_INTERVAL: Duration = Duration::from_secs(1);
/// …and is abandoned for the relay when challenges go unanswered this long.
const CONSENT_TIMEOUT: Duration = Duration::from_secs(3);
/// Candidates are re-sent this often until the peer acknowledges them…
const ANNOUNCE_RETRY: Duration = Duration::from_secs(1);
/// …at most this many times per session or address change.
const ANNOUNCE_TRIES: u32 = 5;
/// Path checks run only while data flowed this recently.
const ACTIVE_WINDOW: Duration = Duration::from_secs(10);
/// While data flows on a direct path, the node with the lower key measures the round trip
/// of every candidate path of the peer (the current one included) this often…
const SURVEY_INTERVAL: Duration = Duration::from_secs(30);
/// …in this many rounds of challenges, `PUNCH_INTERVAL` apart, keeping each address's
/// fastest answer…
const SURVEY_ROUNDS: u32 = 3;
/// …and waits this long after the last round for answers.
const SURVEY_WAIT: Duration = Duration::from_millis(500);
/// A survey that found a faster path is repeated this soon; the data moves only when the
/// repetition finds the same path faster again (one slow answer does not move it).
const SURVEY_CONFIRM: Duration = Duration::from_secs(2);
/// A path is faster when its round trip is shorter by at least a fifth of the current
/// one's and by at least this much.
const SURVEY_MARGIN: Duration = Duration::from_millis(1);
/// After moving to a faster path, the peer's datagrams still arriving on the path left
/// (it follows within a round trip or two) do not get that path checked for this long.
const SWITCH_SETTLE: Duration = Duration::from_secs(5);

/// Why a peer's path is relayed, for `veil peers`.
const REASON_SEARCHING: &str = "looking for a direct path (candidates exchanged, hole punching)";
const REASON_PUNCH_FAILED: &str =
    "hole punching failed: no candidate answered (endpoint-dependent NAT or a filtering firewall on a side); retrying with backoff";
const REASON_NO_CANDIDATES: &str = "the peer announced no direct candidates";
const REASON_LOST: &str = "the direct path stopped answering; searching again";
const REASON_DISABLED: &str = "direct paths are disabled in this node's configuration";
const REASON_PRIVATE: &str =
    "private mode: relays only, the peer is told none of this node's addresses";
const REASON_PRIVATE_2: &str =
    "private mode, two hops: through the guard relay to the home relay, which sees the peer but not this node";

/// Where a peer's datagram came from, or goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Path {
    /// Through the relay, from or to this relay handle.
    Relayed(u64),
    /// Straight between the nodes' sockets.
    Direct(SocketAddr),
}

/// An outstanding path challenge.
struct Challenge {
    token: [u8; 8],
    addr: SocketAddr,
    sent: Instant,
    kind: ChallengeKind,
}

/// What a path challenge is for, and so what its answer does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChallengeKind {
    /// Part of the search for a path (a hole-punching round to every candidate, or a
    /// peer-reflexive address challenged while there is no direct path): withdrawn when
    /// any path validates, so the first candidate to answer wins.
    Search,
    /// A check of one address: consent on the direct path, or another address the peer
    /// sends from (it may have moved).
    Check,
    /// A survey's measurement: the answer's round trip is noted, nothing moves.
    Survey,
}

/// A survey of a peer's candidate paths in progress (see `SURVEY_INTERVAL`).
struct Survey {
    next: Instant,
    round: u32,
    /// The fastest answer of each address so far.
    fastest: Vec<(SocketAddr, Duration)>,
}

/// A hole-punching attempt in progress.
struct Punch {
    next: Instant,
    round: u32,
    /// After a socket rotation: only the current direct endpoint is challenged, from the
    /// new socket; a failure leaves the path to the end of the grace (`PrevSocket`).
    revalidate: bool,
}

/// After a socket rotation ([`Node::socket_rotated`]): the previous socket, which the I/O
/// layer keeps open for [`PREVIOUS_SOCKET_GRACE`], still carries the direct paths validated
/// from it until each is validated from the new socket (make before break).
struct PrevSocket {
    until: Instant,
    /// Our candidates on the previous socket: still announced, since peers reach us there.
    candidates: Vec<SocketAddr>,
    /// Direct endpoints still served from the previous socket.
    paths: HashSet<SocketAddr>,
}

/// Who owns a receive connection id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CidOwner {
    Relay,
    /// The guard relay of a private two-hop node.
    Guard,
    Peer([u8; 32]),
}

struct PendingHs {
    init: Initiator,
    msg_id: u32,
    recv_cid: [u8; 8],
    sent: Instant,
    attempts: u32,
    /// Whether message 1 offered AES-256-GCM (to peers when `cfg.aes`; never to relays).
    aes: bool,
}

#[derive(Default)]
struct Sessions {
    current: Option<Session>,
    previous: Option<Session>,
}

impl Sessions {
    fn get(&self, cid: &[u8; 8]) -> Option<&Session> {
        [&self.current, &self.previous]
            .into_iter()
            .flatten()
            .find(|s| &s.recv_cid == cid)
    }
    fn get_mut(&mut self, cid: &[u8; 8]) -> Option<&mut Session> {
        match (&mut self.current, &mut self.previous) {
            (Some(s), _) if &s.recv_cid == cid => Some(s),
            (_, Some(s)) if &s.recv_cid == cid => Some(s),
            _ => None,
        }
    }
    /// Installs a new current session; returns the connection id that is no longer used.
    fn install(&mut self, s: Session) -> Option<[u8; 8]> {
        let dropped = self.previous.take().map(|p| p.recv_cid);
        self.previous = self.current.replace(s);
        dropped
    }
    fn clear(&mut self) -> Vec<[u8; 8]> {
        [self.current.take(), self.previous.take()]
            .into_iter()
            .flatten()
            .map(|s| s.recv_cid)
            .collect()
    }
}

/// The admission keys of one network secret: what seals and binds handshakes. After a
/// rotation a node holds two, the previous one until the overlap ends.
struct Epoch {
    keys: NetworkKeys,
    own_node_seal: HsSeal,
    own_relay_seal: HsSeal,
    node_prologue: [u8; 32],
    relay_prologue: [u8; 32],
}

impl Epoch {
    fn new(keys: NetworkKeys, me: &[u8; 32]) -> Self {
        Epoch {
            own_node_seal: keys.node_hs_seal(me),
            own_relay_seal: keys.relay().hs_seal(me),
            node_prologue: keys.node_prologue(),
            relay_prologue: keys.relay().prologue(),
            keys,
        }
    }
}

/// Whose handshake seal a datagram is opened with.
#[derive(Clone, Copy)]
enum SealFor {
    /// Ours, as a relay seals its answers to this node.
    Relay,
    /// Ours, as a peer seals its handshakes to this node.
    Node,
    /// The key shown to the home relay (two-hop mode), else ours as for `Relay`.
    Home,
}

/// Which epoch a handshake message was sealed in (part of the reassembly key).
const EPOCH_CURRENT: u8 = 0;
const EPOCH_PREVIOUS: u8 = 1;

struct RelayLink {
    addr: SocketAddr,
    public: [u8; 32],
    /// The header-protection key this link's datagrams to us are masked with: one per
    /// link, so that a relay cannot unmask the end-to-end datagrams it forwards (they use
    /// the node's own key, which only peers learn).
    hp: HeaderKeySchedule,
    sessions: Sessions,
    pending: Option<PendingHs>,
    next_attempt: Instant,
    backoff: Duration,
    handle: Option<u64>,
    /// Outstanding registration: request id and when it was sent.
    registering: Option<(u32, Instant)>,
    registered: bool,
    /// Round trip of the last registration (request to answer).
    rtt: Option<Duration>,
    /// When an echo was requested and not yet answered.
    probe_sent: Option<Instant>,
    /// When the outstanding echo request is sent again (one lost datagram must not cost
    /// the relay link).
    probe_next: Instant,
    /// The outstanding probe is the fast one (traffic went unanswered), with its shorter
    /// resend interval and timeout.
    probe_fast: bool,
    up: bool,
}

impl RelayLink {
    fn new(addr: SocketAddr, public: [u8; 32], rng: &mut ChaCha20Rng, now: Instant) -> Self {
        let mut hp = [0u8; 32];
        rng.fill_bytes(&mut hp);
        RelayLink {
            addr,
            public,
            hp: HeaderKeySchedule::new(hp),
            sessions: Sessions::default(),
            pending: None,
            next_attempt: now,
            backoff: RELAY_BACKOFF_MIN,
            handle: None,
            registering: None,
            rtt: None,
            registered: false,
            probe_sent: None,
            probe_next: now,
            probe_fast: false,
            up: false,
        }
    }
}

struct Peer {
    public: [u8; 32],
    id: String,
    ipv4: Option<Ipv4Addr>,
    /// An IPv4 the peer claimed in its handshake, awaiting verification.
    ipv4_claim: Option<Ipv4Addr>,
    ipv6: Ipv6Addr,
    /// The peer's DNS name, once a lookup of that name at the rendezvous returned this
    /// peer's record (a record can claim any name; only the rendezvous knows who holds it).
    name: Option<String>,
    /// A name the peer's record claims, awaiting that lookup.
    name_claim: Option<String>,
    /// The tags of the peer's certificate (networks with a CA).
    tags: Vec<String>,
    /// The peer's handle at our relay (None until a lookup or a relayed packet told us).
    handle: Option<u64>,
    /// The validated direct endpoint data goes to, if any.
    direct: Option<SocketAddr>,
    /// Last authenticated datagram received on the direct path.
    direct_rx: Instant,
    /// First consent challenge of the current silence on the direct path.
    consent_since: Option<Instant>,
    last_consent: Option<Instant>,
    /// The peer's announced candidates.
    candidates: Vec<SocketAddr>,
    challenges: VecDeque<Challenge>,
    punch: Option<Punch>,
    punch_retry: Option<Instant>,
    punch_backoff: Duration,
    /// The peer confirmed it has our current candidates.
    ours_acked: bool,
    /// When our candidates were last sent, and how often this session.
    announced_at: Option<Instant>,
    announce_tries: u32,
    /// Generation of the peer's list we hold (0: none yet).
    their_gen: u8,
    relay_reason: &'static str,
    sessions: Sessions,
    pending: Option<PendingHs>,
    /// Outgoing packets waiting for a session.
    queue: VecDeque<Vec<u8>>,
    /// Incoming packets from the claimed IPv4, waiting for its verification.
    hold: VecDeque<Vec<u8>>,
    last_data: Instant,
    /// The unanswered-session check (`PEER_UNANSWERED`) may start a handshake from then on.
    dead_check_after: Instant,
    last_ts: Option<u64>,
    tx_bytes: u64,
    rx_bytes: u64,
    rtt: Option<Duration>,
    last_handshake_unix: Option<u64>,
    up: bool,
    /// Path MTU discovery on the path data takes (restarted when it changes).
    pmtu: Pmtud,
    /// When we last wrote a Packet Too Big about this peer's path into the TUN.
    last_ptb: Option<Instant>,
    /// The largest end-to-end datagram received from the peer since its last PMTU
    /// companion probe (reported in the companion's acknowledgement).
    rx_max: u16,
    /// The survey of the candidate paths in progress, and when the next one is due.
    survey: Option<Survey>,
    next_survey: Instant,
    /// The address the last survey found faster: the next one (due soon) decides.
    survey_found: Option<SocketAddr>,
    /// The address left for a faster path, and until when its datagrams are not checked.
    left: Option<(SocketAddr, Instant)>,
}

enum LookupPurpose {
    /// Route queued packets to whoever holds the address.
    Route(VecDeque<Vec<u8>>),
    /// Verify that this peer holds its claimed IPv4.
    Verify([u8; 32]),
}

struct Lookup {
    target: IpAddr,
    sent: Instant,
    attempts: u32,
    purpose: LookupPurpose,
}

/// A node.
pub struct Node {
    cfg: NodeConfig,
    identity: Identity,
    /// The names schedule (blinded names, records, overlay prefix), which rotation keeps.
    keys: NetworkKeys,
    /// Admission keys of the current secret…
    epoch: Epoch,
    /// …and of the previous one with the end of its overlap (Unix seconds), after a
    /// rotation.
    previous: Option<(Epoch, u64)>,
    /// Identifies the network across rotations.
    names_base: [u8; 32],
    record_cipher: chacha20poly1305::XChaCha20Poly1305,
    hp: HeaderKeySchedule,
    rng: ChaCha20Rng,
    base: (Instant, Duration),
    ipv4: Option<Ipv4Addr>,
    ipv4_candidate: Ipv4Addr,
    ipv4_attempt: u32,
    ipv6: Ipv6Addr,
    relay: RelayLink,
    relay_index: usize,
    /// Private two-hop mode: the guard relay the home relay (`relay`) is reached through…
    guard: Option<guard::Guard>,
    /// …and the key this node shows the home relay instead of its own.
    home_identity: Option<Identity>,
    /// Cover traffic, when `cover_pps` is set.
    cover: Option<cover::Cover>,
    peers: BTreeMap<[u8; 32], Peer>,
    route4: HashMap<Ipv4Addr, [u8; 32]>,
    route6: HashMap<Ipv6Addr, [u8; 32]>,
    by_handle: HashMap<u64, [u8; 32]>,
    cids: HashMap<[u8; 8], CidOwner>,
    pending_msgs: BTreeMap<u32, [u8; 32]>,
    /// Addresses of our socket as the I/O layer sees them (interface addresses + port).
    local_candidates: Vec<SocketAddr>,
    /// Whether the I/O layer told us our addresses yet.
    local_known: bool,
    /// The network CA's public key (access control on), from the join token.
    ca: Option<[u8; 32]>,
    /// Our certificate in binary form (empty without a CA).
    own_cert: Vec<u8>,
    /// The IPv4 our certificate pins, if any: never traded for another candidate.
    pinned_ipv4: Option<Ipv4Addr>,
    /// Our certificate's tags.
    own_tags: Vec<String>,
    /// The newest CA-signed policy we know.
    policy: Option<Policy>,
    /// Generation of our candidate list (1..=255, bumped when it changes).
    cand_gen: u8,
    /// Our address as the relay sees it.
    reflexive: Option<SocketAddr>,
    /// The socket before the last rotation, while it still carries direct paths.
    prev_socket: Option<PrevSocket>,
    lookups: BTreeMap<u32, Lookup>,
    /// Overlay DNS: name lookups, their cache and answers (`node/dns.rs`).
    dns: dns::DnsState,
    /// Subnet routes and exits: others' announcements, the routes in use (`node/routes.rs`).
    routes: routes::RouteState,
    lookup_by_addr: BTreeMap<IpAddr, u32>,
    negative: BTreeMap<IpAddr, Instant>,
    next_req: u32,
    /// Partial handshake messages by (sender path, message kind) and message id.
    reasm: Reassembler<(Path, u8)>,
    /// Inner packets that came in overlay fragments, by peer.
    data_reasm: Reassembler<[u8; 32]>,
    /// Handshakes answered per path (each costs an X25519 and an ML-KEM).
    hs_limit: crate::ratelimit::RateLimiter<Path>,
    /// Datagrams to send: destination, bytes, and whether they leave from the previous
    /// socket (`Transmit::previous_socket`).
    transmits: VecDeque<(SocketAddr, Vec<u8>, bool)>,
    tun_out: VecDeque<Vec<u8>>,
    /// While [`Node::handle_tun_packet_later`] runs: a datagram on a direct path is left
    /// for the caller to seal (`sealed_later` takes its job).
    seal_later: bool,
    sealed_later: Option<SealJob>,
    events: VecDeque<NodeEvent>,
    counters: NodeCounters,
}

impl Node {
    /// Creates a node that joins the network of `token` with `identity`. `seed` feeds every
    /// random choice; `now` and `unix_now` anchor its clock (it never reads one).
    pub fn new(
        token: &JoinToken,
        identity: Identity,
        mut cfg: NodeConfig,
        seed: [u8; 32],
        now: Instant,
        unix_now: Duration,
    ) -> Node {
        let keys = token.keys();
        let mut rng = ChaCha20Rng::from_seed(seed);
        let mut hp = [0u8; 32];
        rng.fill_bytes(&mut hp);
        if cfg.relays.is_empty() {
            // Nothing to connect to; keep a placeholder so the type stays simple. The I/O
            // layer refuses to start without relays.
            cfg.relays
                .push((SocketAddr::from(([127, 0, 0, 1], 9)), [0u8; 32]));
        }
        let (raddr, rpub) = cfg.relays[0];
        let ipv6 = keys.overlay_ipv6(identity.public());
        let (pool, pool_len) = cfg.ipv4_pool;
        let pinned_ipv4 = cfg.cert.as_ref().and_then(|c| c.ipv4);
        let candidate = match (pinned_ipv4, cfg.ipv4_hint) {
            (Some(p), _) => p,
            (None, Some(h)) if in_pool(h, pool, pool_len) => h,
            _ => ipv4_candidate(identity.public(), pool, pool_len, 0),
        };
        let relay = RelayLink::new(raddr, rpub, &mut rng, now);
        // Private two-hop: a relay of the token other than the first is the guard (the
        // second with two; with more, one chosen by the node's secret key), and the home
        // relay gets a key made for it.
        // (With one relay, the guard is the home relay itself, which refuses to extend to
        // itself: the node never connects rather than run on one hop.)
        let (guard, home_identity) = if cfg.private == Privacy::TwoHop {
            let g = guard_index(&identity.secret_bytes(), cfg.relays.len());
            let (gaddr, gpub) = cfg.relays[g];
            let link = RelayLink::new(gaddr, gpub, &mut rng, now);
            let mut k = [0u8; 32];
            rng.fill_bytes(&mut k);
            let guard = guard::Guard::new(link, now);
            (Some(guard), Some(Identity::from_secret(k)))
        } else {
            (None, None)
        };
        Node {
            epoch: Epoch::new(keys.clone(), identity.public()),
            previous: token
                .previous_keys()
                .map(|(k, until)| (Epoch::new(k, identity.public()), until)),
            names_base: token.names_base(),
            record_cipher: chacha20poly1305::XChaCha20Poly1305::new((&keys.record_key()).into()),
            hp: HeaderKeySchedule::new(hp),
            rng,
            base: (now, unix_now),
            ipv4: None,
            ipv4_candidate: candidate,
            ipv4_attempt: 0,
            ipv6,
            relay,
            relay_index: 0,
            guard,
            home_identity,
            cover: cover::Cover::new(cfg.cover_pps, now),
            peers: BTreeMap::new(),
            route4: HashMap::new(),
            route6: HashMap::new(),
            by_handle: HashMap::new(),
            cids: HashMap::new(),
            pending_msgs: BTreeMap::new(),
            local_candidates: Vec::new(),
            local_known: false,
            ca: token.ca,
            own_cert: cfg
                .cert
                .as_ref()
                .map(Certificate::to_bytes)
                .unwrap_or_default(),
            pinned_ipv4,
            own_tags: cfg
                .cert
                .as_ref()
                .map(|c| c.tags.clone())
                .unwrap_or_default(),
            policy: None,
            cand_gen: 1,
            reflexive: None,
            prev_socket: None,
            lookups: BTreeMap::new(),
            dns: dns::DnsState::default(),
            routes: routes::RouteState::default(),
            lookup_by_addr: BTreeMap::new(),
            negative: BTreeMap::new(),
            next_req: 1,
            reasm: Reassembler::default(),
            data_reasm: Reassembler::default(),
            hs_limit: crate::ratelimit::RateLimiter::new(HS_PER_SEC, HS_BURST, HS_KEYS),
            transmits: VecDeque::new(),
            tun_out: VecDeque::new(),
            seal_later: false,
            sealed_later: None,
            events: VecDeque::new(),
            counters: NodeCounters::default(),
            keys,
            identity,
            cfg,
        }
    }

    fn unix(&self, now: Instant) -> Duration {
        self.base.1 + now.saturating_duration_since(self.base.0)
    }

    /// The epoch new handshakes are sealed in: the previous one while its overlap lasts
    /// (every member has it then, whether or not it already holds the new token), else the
    /// current one.
    fn out_epoch(&self, now: Instant) -> &Epoch {
        match &self.previous {
            Some((e, until)) if self.unix(now).as_secs() < *until => e,
            _ => &self.epoch,
        }
    }

    fn epoch_at(&self, which: u8) -> &Epoch {
        match &self.previous {
            Some((e, _)) if which == EPOCH_PREVIOUS => e,
            _ => &self.epoch,
        }
    }

    /// Opens a sealed handshake fragment addressed to us on a relay link (`relay`) or a
    /// node link, with the current secret's keys or, until the overlap and its grace end,
    /// the previous one's. Returns the fragment and the epoch that opened it.
    fn open_handshake(
        &self,
        now: Instant,
        relay: bool,
        dg: &mut [u8],
    ) -> Option<(wire::HsFragment, u8)> {
        self.open_handshake_as(now, if relay { SealFor::Relay } else { SealFor::Node }, dg)
    }

    /// Like [`Node::open_handshake`], for the seal `seal` names.
    fn open_handshake_as(
        &self,
        now: Instant,
        seal: SealFor,
        dg: &mut [u8],
    ) -> Option<(wire::HsFragment, u8)> {
        let open = |e: &Epoch, dg: &mut [u8]| match (seal, &self.home_identity) {
            (SealFor::Relay, _) => wire::open_handshake(&e.own_relay_seal, dg),
            (SealFor::Node, _) => wire::open_handshake(&e.own_node_seal, dg),
            // The home relay of a two-hop node seals its answers for the key it was shown.
            (SealFor::Home, Some(k)) => {
                wire::open_handshake(&e.keys.relay().hs_seal(k.public()), dg)
            }
            (SealFor::Home, None) => wire::open_handshake(&e.own_relay_seal, dg),
        };
        if let Some(f) = open(&self.epoch, dg) {
            return Some((f, EPOCH_CURRENT));
        }
        let (prev, until) = self.previous.as_ref()?;
        if self.unix(now).as_secs() >= until.saturating_add(ROTATION_GRACE_SECS) {
            return None;
        }
        // A failed open leaves the datagram as it was, so it can be tried again.
        let f = open(prev, dg)?;
        Some((f, EPOCH_PREVIOUS))
    }

    /// Adopts the rotated token of this network (see [`JoinToken::rotated`]): its secret
    /// becomes the current one, and the secret it names as previous stays accepted until
    /// the overlap ends. Sessions, addresses and registrations carry on; only handshakes
    /// from now on use the new keys.
    pub fn adopt_token(&mut self, token: &JoinToken) -> Result<(), AdoptError> {
        if token.names_base() != self.names_base {
            return Err(AdoptError::OtherNetwork);
        }
        if token.ca != self.ca {
            return Err(AdoptError::OtherCa);
        }
        let me = *self.identity.public();
        self.epoch = Epoch::new(token.keys(), &me);
        self.previous = token
            .previous_keys()
            .map(|(k, until)| (Epoch::new(k, &me), until));
        self.keys = token.keys();
        self.counters.token_rotations += 1;
        Ok(())
    }

    fn next_req(&mut self) -> u32 {
        self.next_req = self.next_req.wrapping_add(1).max(1);
        self.next_req
    }

    fn fresh_cid(&mut self) -> [u8; 8] {
        loop {
            let mut c = [0u8; 8];
            self.rng.fill_bytes(&mut c);
            if !self.cids.contains_key(&c) {
                return c;
            }
        }
    }

    fn fresh_msg_id(&mut self) -> u32 {
        self.rng.next_u32()
    }

    fn seed(&mut self) -> [u8; 32] {
        let mut s = [0u8; 32];
        self.rng.fill_bytes(&mut s);
        s
    }

    // ----------------------------------------------------------------- inputs

    /// A datagram arrived from `from`. Returns the range of `buf` that holds an inner
    /// packet to write to the TUN, if any. Anything else it causes is queued.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        buf: &mut [u8],
    ) -> Option<Range<usize>> {
        self.counters.rx_datagrams += 1;
        if let Some(g) = &self.guard {
            if from != g.link.addr {
                // Private two-hop mode: only the guard relay speaks to this socket.
                self.counters.dropped_private += 1;
                return None;
            }
            return self.guard_datagram(now, buf);
        }
        if self.cfg.private != Privacy::Off && from != self.relay.addr {
            // Private mode: only the relay speaks to this socket.
            self.counters.dropped_private += 1;
            return None;
        }
        self.datagram(now, from, buf)
    }

    /// The AEAD work of a datagram from `from`, if it is an end-to-end datagram of a
    /// session on a direct path that [`Node::handle_datagram`] would open: the I/O layer
    /// runs a batch's jobs on several cores, then hands each datagram with its [`Opened`]
    /// to [`Node::handle_opened`], in the order they came. Anything else (relayed,
    /// handshakes, private modes, replays) gets no job and goes to `handle_datagram`.
    pub fn open_job(&self, now: Instant, from: SocketAddr, dg: &[u8]) -> Option<OpenJob> {
        if self.guard.is_some() || self.cfg.private != Privacy::Off || from == self.relay.addr {
            return None;
        }
        let (cid, counter) = wire::unmask_header(&self.hp, dg)?;
        let Some(CidOwner::Peer(pk)) = self.cids.get(&cid) else {
            return None;
        };
        let rejected = self.cfg.rekey_after_time + REJECT_AFTER_EXTRA;
        self.peers
            .get(pk)?
            .sessions
            .get(&cid)?
            .open_job(now, counter, rejected)
    }

    /// A datagram from `from` whose [`OpenJob`] ran (`buf` is decrypted in place when
    /// `opened` says so): [`Node::handle_datagram`] from the AEAD on. A session that went
    /// away since the job was made (the batch closed or re-keyed it) drops the datagram.
    pub fn handle_opened(
        &mut self,
        now: Instant,
        from: SocketAddr,
        buf: &mut [u8],
        opened: Opened,
    ) -> Option<Range<usize>> {
        self.counters.rx_datagrams += 1;
        if self.guard.is_some() || self.cfg.private != Privacy::Off {
            self.counters.dropped_private += 1;
            return None;
        }
        let Some(CidOwner::Peer(pk)) = self.cids.get(&opened.cid()).copied() else {
            self.counters.dropped_bad_aead += 1;
            return None;
        };
        let (cid, counter) = (opened.cid(), opened.counter());
        self.peer_transport(now, pk, Path::Direct(from), cid, counter, buf, Some(opened))
    }

    /// A datagram from `from` (the home relay's address when it came through the guard).
    fn datagram(&mut self, now: Instant, from: SocketAddr, buf: &mut [u8]) -> Option<Range<usize>> {
        let hp = if from == self.relay.addr {
            &self.relay.hp
        } else {
            &self.hp
        };
        if let Some((cid, counter)) = wire::unmask_header(hp, buf) {
            match self.cids.get(&cid).copied() {
                Some(CidOwner::Relay) if from == self.relay.addr => {
                    return self.relay_transport(now, cid, counter, buf);
                }
                Some(CidOwner::Peer(pk)) => {
                    return self.peer_transport(
                        now,
                        pk,
                        Path::Direct(from),
                        cid,
                        counter,
                        buf,
                        None,
                    );
                }
                _ => {}
            }
        }
        if from == self.relay.addr {
            self.relay_handshake(now, buf);
        } else {
            // A handshake straight from a peer (a rekey on a direct path); anything that
            // fails the handshake seal is dropped unanswered.
            self.peer_handshake(now, Path::Direct(from), buf);
        }
        None
    }

    fn relay_transport(
        &mut self,
        now: Instant,
        cid: [u8; 8],
        counter: u64,
        buf: &mut [u8],
    ) -> Option<Range<usize>> {
        let rejected = self.cfg.rekey_after_time + REJECT_AFTER_EXTRA;
        let session = self.relay.sessions.get_mut(&cid)?;
        let (kind, body) = match session.open(now, counter, buf, rejected) {
            Ok(x) => x,
            Err(e) => {
                self.count_open_error(e);
                return None;
            }
        };
        self.relay.probe_sent = None;
        let dummy = kind == Frame::Keepalive
            && buf[body.clone()]
                .first()
                .is_some_and(|f| f & cover::KEEPALIVE_COVER != 0);
        if !dummy {
            self.note_relay_rx();
        }
        match kind {
            Frame::Keepalive => {
                let mut c = Cursor(&buf[body]);
                let _flags = c.u8();
                if let Some(a) = c.addr() {
                    self.set_reflexive(now, a);
                }
                None
            }
            Frame::Deliver => {
                if body.len() < 8 {
                    self.counters.dropped_malformed += 1;
                    return None;
                }
                let src = read_u64(&buf[body.start..]);
                let inner = body.start + 8..body.end;
                let r = self.peer_datagram(now, Path::Relayed(src), &mut buf[inner.clone()])?;
                Some(inner.start + r.start..inner.start + r.end)
            }
            Frame::RegisterReply => {
                let b = buf[body].to_vec();
                self.on_register_reply(now, &b);
                None
            }
            Frame::Policy => {
                let b = buf[body].to_vec();
                if let Err(e) = self.set_policy(now, &b) {
                    tracing::debug!(error = %e, "policy from the relay refused");
                    self.counters.dropped_uncertified += 1;
                }
                None
            }
            Frame::LookupReply => {
                let b = buf[body].to_vec();
                self.on_lookup_reply(now, &b);
                None
            }
            Frame::Announcement => {
                let b = buf[body].to_vec();
                self.on_announcement(&b);
                None
            }
            Frame::Unreachable => {
                if body.len() >= 8 {
                    let h = read_u64(&buf[body.start..]);
                    // The peer left the relay (or the relay restarted): forget it so the
                    // next packet looks it up afresh.
                    if let Some(pk) = self.by_handle.remove(&h) {
                        let direct = self.peers.get(&pk).is_some_and(|p| p.direct.is_some());
                        if direct {
                            // The direct path carries on; a new handle comes with the next
                            // relayed packet or lookup.
                            if let Some(p) = self.peers.get_mut(&pk) {
                                p.handle = None;
                            }
                        } else {
                            self.forget_peer(pk);
                        }
                    }
                }
                None
            }
            _ => {
                self.counters.dropped_malformed += 1;
                None
            }
        }
    }

    fn count_open_error(&mut self, e: OpenError) {
        match e {
            OpenError::Replay => self.counters.dropped_replay += 1,
            OpenError::Aead | OpenError::Expired => self.counters.dropped_bad_aead += 1,
            OpenError::Malformed => self.counters.dropped_malformed += 1,
        }
    }

    /// An end-to-end datagram from a peer (relayed or, later, direct), in place.
    fn peer_datagram(&mut self, now: Instant, path: Path, dg: &mut [u8]) -> Option<Range<usize>> {
        if let Some((cid, counter)) = wire::unmask_header(&self.hp, dg) {
            if let Some(CidOwner::Peer(pk)) = self.cids.get(&cid).copied() {
                return self.peer_transport(now, pk, path, cid, counter, dg, None);
            }
        }
        self.peer_handshake(now, path, dg);
        None
    }

    /// A transport datagram of a session with `pk`; with `opened`, its AEAD already ran (an
    /// [`OpenJob`]).
    #[allow(clippy::too_many_arguments)]
    fn peer_transport(
        &mut self,
        now: Instant,
        pk: [u8; 32],
        path: Path,
        cid: [u8; 8],
        counter: u64,
        dg: &mut [u8],
        opened: Option<Opened>,
    ) -> Option<Range<usize>> {
        if matches!(path, Path::Direct(_)) && self.private_with(&pk) {
            // In private mode a peer may not learn that this address is ours.
            self.counters.dropped_private += 1;
            return None;
        }
        let rejected = self.cfg.rekey_after_time + REJECT_AFTER_EXTRA;
        let peer = self.peers.get_mut(&pk)?;
        let session = peer.sessions.get_mut(&cid)?;
        let result = match opened {
            Some(o) => session.open_opened(now, dg, rejected, o),
            None => session.open(now, counter, dg, rejected),
        };
        let (kind, body) = match result {
            Ok(x) => x,
            Err(e) => {
                self.count_open_error(e);
                return None;
            }
        };
        peer.rx_max = peer.rx_max.max(u16::try_from(dg.len()).unwrap_or(u16::MAX));
        // The authenticated path wins: the relay handle may change after a reconnect, and a
        // direct datagram from a new address (the peer roamed) gets that address checked.
        let mut check = None;
        match path {
            Path::Relayed(h) => {
                if peer.handle != Some(h) {
                    self.by_handle.retain(|_, v| v != &pk);
                    self.by_handle.insert(h, pk);
                    peer.handle = Some(h);
                }
            }
            Path::Direct(a) => {
                if peer.direct == Some(a) {
                    peer.direct_rx = now;
                    peer.consent_since = None;
                } else if kind != Frame::PathResponse
                    && (kind != Frame::PathChallenge || peer.direct.is_none())
                {
                    // (A challenge from another address of a peer we already have a path
                    // to is its punching, which reaches every address: not a move.)
                    check = Some(a);
                }
            }
        }
        if let Some(a) = check {
            let recent = peer
                .challenges
                .iter()
                .any(|c| c.addr == a && now.saturating_duration_since(c.sent) < PUNCH_INTERVAL);
            // The path we left for a faster one: the peer follows within a round trip or
            // two, and its datagrams on the old path until then are no move of its.
            let left = peer.left.is_some_and(|(l, until)| l == a && now < until);
            if !recent && !left && self.direct_with(&pk) {
                self.challenge(now, pk, a);
            }
        }
        match kind {
            Frame::Data => {
                let ok = self.accept_inner(now, pk, &mut dg[body.clone()]);
                if ok {
                    self.count_rx(&path, body.len());
                }
                ok.then_some(body)
            }
            Frame::Keepalive => None,
            Frame::PmtuProbe => {
                let b = dg[body].to_vec();
                self.on_probe(now, pk, &b);
                None
            }
            Frame::PmtuAck => {
                let b = dg[body].to_vec();
                self.on_probe_ack(now, pk, &b);
                None
            }
            Frame::Fragment => {
                let b = dg[body].to_vec();
                let mut pkt = self.on_fragment(now, pk, &b)?;
                if self.accept_inner(now, pk, &mut pkt) {
                    self.count_rx(&path, pkt.len());
                    self.tun_out.push_back(pkt);
                }
                None
            }
            Frame::Close => {
                self.close_peer(pk, true);
                None
            }
            Frame::PathChallenge => {
                let token = dg[body].to_vec();
                self.counters.path_challenges_answered += 1;
                self.send_peer_frame(now, pk, Frame::PathResponse, &token, Some(path));
                None
            }
            Frame::PathResponse => {
                let mut c = Cursor(&dg[body]);
                if let (Some(token), Path::Direct(a)) = (c.array::<8>(), path) {
                    self.on_path_response(now, pk, a, token);
                }
                None
            }
            Frame::Candidates => {
                let b = dg[body].to_vec();
                self.on_candidates(now, pk, &b);
                None
            }
            _ => {
                self.counters.dropped_malformed += 1;
                None
            }
        }
    }

    /// Counts an inner packet delivered from a datagram that came on `path`.
    fn count_rx(&mut self, path: &Path, len: usize) {
        if matches!(path, Path::Direct(_)) {
            self.counters.rx_packets_direct += 1;
            self.counters.rx_bytes_direct += len as u64;
        } else {
            self.counters.rx_packets_relayed += 1;
            self.counters.rx_bytes_relayed += len as u64;
        }
    }

    /// Checks an inner packet from `pk` before it goes to the TUN (policy, source address;
    /// a packet from an IPv4 not yet verified is held) and clamps a SYN's MSS. True when
    /// the caller delivers it.
    fn accept_inner(&mut self, now: Instant, pk: [u8; 32], pkt: &mut [u8]) -> bool {
        // Only packets for us, or for what we route: a member must not reach past this
        // node into networks it does not advertise.
        if !ip_destination(pkt).is_some_and(|d| self.local_destination(d)) {
            self.counters.dropped_destination += 1;
            return false;
        }
        let routed = ip_source(pkt).is_some_and(|s| self.routed_source(&pk, s));
        let Some(peer) = self.peers.get_mut(&pk) else {
            return false;
        };
        if !policy_allows(self.policy.as_ref(), &self.own_tags, &peer.tags) {
            self.counters.dropped_policy += 1;
            return false;
        }
        peer.last_data = now;
        let check = if routed {
            SourceCheck::Ok
        } else {
            source_check(pkt, peer)
        };
        match check {
            SourceCheck::Ok => {
                peer.rx_bytes += pkt.len() as u64;
                self.counters.rx_packets += 1;
                self.clamp_incoming(&pk, pkt);
                true
            }
            SourceCheck::Hold => {
                if peer.hold.len() < QUEUE_MAX {
                    peer.hold.push_back(pkt.to_vec());
                } else {
                    self.counters.dropped_queue_full += 1;
                }
                false
            }
            SourceCheck::Spoofed => {
                self.counters.dropped_spoofed += 1;
                false
            }
        }
    }

    // ------------------------------------------------------------ direct paths

    /// Whether this peer is served in private mode: relays only, no candidates announced
    /// to it, nothing accepted from it on a direct path.
    fn private_with(&self, pk: &[u8; 32]) -> bool {
        if self.cfg.private != Privacy::Off {
            return true;
        }
        if self.cfg.private_peers.is_empty() {
            return false;
        }
        self.peers.get(pk).is_some_and(|p| {
            self.cfg.private_peers.iter().any(|a| match a {
                // The claim counts too: nothing is announced to it while it is checked.
                IpAddr::V4(v4) => p.ipv4 == Some(*v4) || p.ipv4_claim == Some(*v4),
                IpAddr::V6(v6) => p.ipv6 == *v6,
            })
        })
    }

    /// Whether direct paths to this peer are looked for and used.
    fn direct_with(&self, pk: &[u8; 32]) -> bool {
        self.cfg.direct && !self.private_with(pk)
    }

    /// Our candidates: the address the relay sees, then the socket's local addresses.
    fn own_candidates(&self) -> Vec<SocketAddr> {
        let previous = self.prev_socket.iter().flat_map(|s| s.candidates.iter());
        let mut v: Vec<SocketAddr> = Vec::new();
        for a in self.current_candidates().iter().chain(previous) {
            if !v.contains(a) && v.len() < MAX_CANDIDATES {
                v.push(*a);
            }
        }
        v
    }

    /// Our candidates on the current socket: as the relay sees us, then the local ones.
    fn current_candidates(&self) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = Vec::new();
        for a in self.reflexive.iter().chain(self.local_candidates.iter()) {
            if !v.contains(a) && v.len() < MAX_CANDIDATES {
                v.push(*a);
            }
        }
        v
    }

    /// Tells a peer our candidates, end to end, over the best path: `[our generation u8]
    /// [generation of yours we hold u8, 0 = none][count u8][address]×count`. Sent at session
    /// start and whenever our addresses change (new generation), repeated (`ANNOUNCE_RETRY`,
    /// at most `ANNOUNCE_TRIES` times) until the peer's frame says it holds our current
    /// generation. With direct paths off the list is empty, so the peer knows.
    fn announce(&mut self, now: Instant, pk: [u8; 32]) {
        let cands = if self.direct_with(&pk) {
            self.own_candidates()
        } else {
            Vec::new()
        };
        let Some(p) = self.peers.get_mut(&pk) else {
            return;
        };
        let mut body = vec![self.cand_gen, p.their_gen, cands.len() as u8];
        for a in cands {
            wire::put_addr(&mut body, a);
        }
        p.announced_at = Some(now);
        p.announce_tries += 1;
        if self.send_peer_frame(now, pk, Frame::Candidates, &body, None) {
            self.counters.candidates_sent += 1;
        }
    }

    /// Announces our candidates to every peer with a session (they changed).
    fn announce_all(&mut self, now: Instant) {
        self.cand_gen = self.cand_gen.wrapping_add(1).max(1);
        let up: Vec<[u8; 32]> = self
            .peers
            .values()
            .filter(|p| p.sessions.current.is_some())
            .map(|p| p.public)
            .collect();
        for pk in up {
            if let Some(p) = self.peers.get_mut(&pk) {
                p.ours_acked = false;
                p.announce_tries = 0;
            }
            self.announce(now, pk);
        }
    }

    fn on_candidates(&mut self, now: Instant, pk: [u8; 32], body: &[u8]) {
        let mut c = Cursor(body);
        let (Some(gen), Some(holds), Some(n)) = (c.u8(), c.u8(), c.u8()) else {
            self.counters.dropped_malformed += 1;
            return;
        };
        let mut cands = Vec::new();
        for _ in 0..n {
            match c.addr() {
                Some(a) if cands.len() < MAX_CANDIDATES && a.port() != 0 => cands.push(a),
                Some(_) => {}
                None => {
                    self.counters.dropped_malformed += 1;
                    return;
                }
            }
        }
        let direct = self.direct_with(&pk);
        let Some(p) = self.peers.get_mut(&pk) else {
            return;
        };
        // A peer announces again when its addresses changed: a direct endpoint it no longer
        // lists is gone, so search from the new candidates (the relay carries data meanwhile).
        let moved = p.direct.is_some_and(|d| !cands.contains(&d));
        p.candidates = cands;
        let new_list = gen != p.their_gen;
        p.their_gen = gen;
        let current = holds == self.cand_gen;
        if current {
            p.ours_acked = true;
        }
        // Answer when the peer lacks our current list, or to acknowledge a new list of its
        // own; a frame that brings neither ends the exchange.
        let answer = !current || new_list;
        if moved {
            self.leave_direct(now, pk, REASON_SEARCHING);
        }
        let Some(p) = self.peers.get_mut(&pk) else {
            return;
        };
        let punch = direct && p.direct.is_none() && !p.candidates.is_empty();
        if p.candidates.is_empty() && p.direct.is_none() {
            p.relay_reason = REASON_NO_CANDIDATES;
        }
        // A new port at the address of our direct endpoint: the peer moved to a fresh
        // socket. Challenge it, so our NAT lets the peer's challenges from there in and
        // the path moves there before the peer closes the old socket.
        let fresh: Vec<SocketAddr> = match p.direct {
            Some(d) if direct && new_list => p
                .candidates
                .iter()
                .filter(|c| c.ip() == d.ip() && c.port() != d.port())
                .copied()
                .collect(),
            _ => Vec::new(),
        };
        if answer {
            self.announce(now, pk);
        }
        if punch {
            self.start_punch(now, pk, REASON_SEARCHING);
        }
        for a in fresh {
            self.challenge(now, pk, a);
        }
    }

    fn start_punch(&mut self, now: Instant, pk: [u8; 32], reason: &'static str) {
        if let Some(p) = self.peers.get_mut(&pk) {
            p.punch = Some(Punch {
                next: now,
                round: 0,
                revalidate: false,
            });
            p.punch_retry = None;
            p.relay_reason = reason;
            self.counters.punch_attempts += 1;
        }
        self.punch_tick(now, pk);
    }

    /// One round of hole punching: a challenge to every candidate of the peer.
    fn punch_tick(&mut self, now: Instant, pk: [u8; 32]) {
        let Some(p) = self.peers.get_mut(&pk) else {
            return;
        };
        let Some(punch) = p.punch.as_mut() else {
            return;
        };
        if now < punch.next {
            return;
        }
        if punch.round >= PUNCH_ROUNDS && punch.revalidate {
            // The end of the previous socket's grace decides (`prev_socket_timers`).
            p.punch = None;
            return;
        }
        if punch.round >= PUNCH_ROUNDS {
            p.punch = None;
            p.relay_reason = REASON_PUNCH_FAILED;
            p.punch_retry = Some(now + p.punch_backoff);
            p.punch_backoff = (p.punch_backoff * 2).min(PUNCH_RETRY_MAX);
            self.counters.punch_failures += 1;
            return;
        }
        punch.round += 1;
        punch.next = now + PUNCH_INTERVAL;
        let targets = match (punch.revalidate, p.direct) {
            (true, Some(d)) => vec![d],
            _ => p.candidates.clone(),
        };
        for a in targets {
            self.send_challenge(now, pk, a, ChallengeKind::Search);
        }
    }

    /// Sends a path challenge to `addr`, straight from our socket. Without a direct path it
    /// is part of the search, as a punch's are.
    fn challenge(&mut self, now: Instant, pk: [u8; 32], addr: SocketAddr) {
        let kind = match self.peers.get(&pk).is_some_and(|p| p.direct.is_none()) {
            true => ChallengeKind::Search,
            false => ChallengeKind::Check,
        };
        self.send_challenge(now, pk, addr, kind);
    }

    fn send_challenge(
        &mut self,
        now: Instant,
        pk: [u8; 32],
        addr: SocketAddr,
        kind: ChallengeKind,
    ) {
        let mut token = [0u8; 8];
        self.rng.fill_bytes(&mut token);
        let Some(p) = self.peers.get_mut(&pk) else {
            return;
        };
        if p.challenges.len() >= MAX_CHALLENGES {
            p.challenges.pop_front();
        }
        p.challenges.push_back(Challenge {
            token,
            addr,
            sent: now,
            kind,
        });
        if self.send_peer_frame(
            now,
            pk,
            Frame::PathChallenge,
            &token,
            Some(Path::Direct(addr)),
        ) {
            self.counters.path_challenges_sent += 1;
        }
    }

    /// A response came back from `addr`: the path works both ways (the response must come
    /// from the address challenged, as ICE requires). Data moves to it. A validation ends
    /// the search: its challenges to the other candidates are withdrawn, so the first to
    /// answer (the shortest round trip) wins and a slower path (a NAT's hairpin, the long
    /// way round through a cloud's public address) answering later does not take the data
    /// over. Any other answer (a roamed peer's new address, a new port after a rotation)
    /// moves the data to its address.
    fn on_path_response(&mut self, now: Instant, pk: [u8; 32], addr: SocketAddr, token: [u8; 8]) {
        let direct = self.direct_with(&pk);
        let Some(p) = self.peers.get_mut(&pk) else {
            return;
        };
        let Some(i) = p
            .challenges
            .iter()
            .position(|c| c.token == token && c.addr == addr)
        else {
            self.counters.path_responses_late += 1;
            return;
        };
        let (sent, kind) = (p.challenges[i].sent, p.challenges[i].kind);
        let rtt = now.saturating_duration_since(sent);
        if p.direct == Some(addr) {
            // Any answer from the direct endpoint (consent, a survey) measures its path.
            p.rtt = Some(rtt);
            p.direct_rx = now;
            p.consent_since = None;
        }
        if kind == ChallengeKind::Survey {
            // A measurement: noted for the survey's decision, nothing moves now.
            p.challenges.remove(i);
            if let Some(s) = p.survey.as_mut() {
                match s.fastest.iter_mut().find(|(a, _)| *a == addr) {
                    Some((_, d)) => *d = (*d).min(rtt),
                    None => s.fastest.push((addr, rtt)),
                }
            }
            return;
        }
        // The first answer ends a search: its challenges to the other candidates are
        // withdrawn, so that a slower path answering later does not take over.
        p.challenges.retain(|c| {
            c.kind == ChallengeKind::Survey || (c.addr != addr && c.kind != ChallengeKind::Search)
        });
        // Another address of a peer we have a direct path to answered (its datagrams came
        // from there, or a new port of its showed up). The side with the lower key keeps
        // its path while the peer still sends on it, and the other side follows the
        // addresses the peer sends from: two working paths (dual stack, a LAN and a
        // public address) do not swap back and forth, and a peer that moved is followed.
        let keep = p.direct.is_some_and(|d| d != addr)
            && kind != ChallengeKind::Search
            && self.identity.public() < &pk
            && p.direct_rx > sent;
        if keep {
            self.counters.path_switches_declined += 1;
            return;
        }
        p.direct_rx = now;
        p.consent_since = None;
        // Every challenge since a socket rotation left from the new socket: a path still
        // served from the previous one moves to the new socket now.
        let moved = match (p.direct, self.prev_socket.as_mut()) {
            (Some(d), Some(prev)) => prev.paths.remove(&d),
            _ => false,
        };
        if moved {
            self.counters.rotation_paths_moved += 1;
            if p.punch.as_ref().is_some_and(|x| x.revalidate) {
                p.punch = None;
            }
        }
        if p.direct == Some(addr) || !direct {
            return;
        }
        self.counters.direct_paths += 1;
        self.move_direct(now, pk, addr, rtt);
    }

    /// Data to `pk` goes to the validated direct endpoint `addr` (round trip `rtt`) from
    /// now on: a validation, a move the peer made, or a faster path a survey found.
    fn move_direct(&mut self, now: Instant, pk: [u8; 32], addr: SocketAddr, rtt: Duration) {
        let Some(p) = self.peers.get_mut(&pk) else {
            return;
        };
        let old = p.direct.replace(addr);
        // Datagrams the peer sent on the old path before it moved are still on their way.
        p.left = old.map(|o| (o, now + SWITCH_SETTLE));
        p.direct_rx = now;
        p.consent_since = None;
        p.last_consent = None;
        p.rtt = Some(rtt);
        p.survey = None;
        p.survey_found = None;
        p.next_survey = now + SURVEY_INTERVAL;
        p.punch = None;
        p.punch_retry = None;
        p.punch_backoff = PUNCH_RETRY_MIN;
        p.relay_reason = "";
        self.events.push_back(NodeEvent::PeerPath {
            id: p.id.clone(),
            direct: Some(addr),
        });
        // Only the port changed (the peer moved to a fresh socket, or its NAT mapped it
        // anew): the same hosts, so the same path and its MTU.
        if old.map(|o| o.ip()) != Some(addr.ip()) {
            self.reset_pmtu(now, pk);
        }
    }

    /// Whether this node measures the peer's candidate paths (`SURVEY_INTERVAL`): the peer
    /// is on a direct path with nothing else running on it, it announced another candidate,
    /// and this node has the lower key (the peer follows the path it sends on, so one side
    /// choosing is enough, and two sides never choose differently).
    fn survey_wanted(&self, p: &Peer) -> bool {
        p.direct.is_some()
            && p.punch.is_none()
            && self.prev_socket.is_none()
            && self.identity.public() < &p.public
            && self.direct_with(&p.public)
            && p.candidates.iter().any(|c| Some(*c) != p.direct)
    }

    /// A round of a survey: a challenge to the direct endpoint and to every candidate of
    /// the peer; after the last round and `SURVEY_WAIT`, [`Node::survey_end`] decides.
    fn survey_tick(&mut self, now: Instant, pk: [u8; 32]) {
        let wanted = self.peers.get(&pk).is_some_and(|p| self.survey_wanted(p));
        let Some(p) = self.peers.get_mut(&pk) else {
            return;
        };
        if !wanted {
            p.survey = None;
            p.next_survey = now + SURVEY_INTERVAL;
            return;
        }
        if p.survey.is_none() {
            self.counters.path_surveys += 1;
        }
        let s = p.survey.get_or_insert_with(|| Survey {
            next: now,
            round: 0,
            fastest: Vec::new(),
        });
        if s.round >= SURVEY_ROUNDS {
            self.survey_end(now, pk);
            return;
        }
        s.round += 1;
        s.next = now
            + match s.round < SURVEY_ROUNDS {
                true => PUNCH_INTERVAL,
                false => SURVEY_WAIT,
            };
        let mut targets: Vec<SocketAddr> = p.direct.into_iter().collect();
        for c in &p.candidates {
            if !targets.contains(c) {
                targets.push(*c);
            }
        }
        for a in targets {
            self.send_challenge(now, pk, a, ChallengeKind::Survey);
        }
    }

    /// The end of a survey. A candidate whose fastest answer beat the direct endpoint's by
    /// a fifth of its round trip (and at least `SURVEY_MARGIN`) is surveyed again in
    /// `SURVEY_CONFIRM`; when that survey finds the same candidate faster again, the data
    /// moves to it (`path_switches_faster`) and the peer follows. A direct endpoint that
    /// did not answer is consent freshness's to judge, not the survey's.
    fn survey_end(&mut self, now: Instant, pk: [u8; 32]) {
        let Some(p) = self.peers.get_mut(&pk) else {
            return;
        };
        let Some(s) = p.survey.take() else {
            return;
        };
        p.challenges.retain(|c| c.kind != ChallengeKind::Survey);
        p.next_survey = now + SURVEY_INTERVAL;
        let found = p.survey_found.take();
        let Some(d) = p.direct else {
            return;
        };
        let Some(current) = s.fastest.iter().find(|(a, _)| *a == d).map(|x| x.1) else {
            return;
        };
        let Some((best, rtt)) = s
            .fastest
            .iter()
            .filter(|(a, _)| *a != d)
            .min_by_key(|(_, r)| *r)
            .copied()
        else {
            return;
        };
        if rtt + (current / 5).max(SURVEY_MARGIN) > current {
            return;
        }
        if found != Some(best) {
            p.survey_found = Some(best);
            p.next_survey = now + SURVEY_CONFIRM;
            return;
        }
        self.counters.path_switches_faster += 1;
        self.move_direct(now, pk, best, rtt);
    }

    /// The direct path went silent: back to the relay, and look for a path again.
    fn direct_lost(&mut self, now: Instant, pk: [u8; 32]) {
        self.counters.direct_paths_lost += 1;
        self.leave_direct(now, pk, REASON_LOST);
        if self.direct_with(&pk)
            && self
                .peers
                .get(&pk)
                .is_some_and(|p| !p.candidates.is_empty())
        {
            self.start_punch(now, pk, REASON_LOST);
        }
    }

    /// Data to `pk` goes through the relay from now on.
    fn leave_direct(&mut self, now: Instant, pk: [u8; 32], reason: &'static str) {
        let Some(p) = self.peers.get_mut(&pk) else {
            return;
        };
        p.consent_since = None;
        p.last_consent = None;
        p.relay_reason = reason;
        p.survey = None;
        p.survey_found = None;
        if let (Some(d), Some(prev)) = (p.direct, self.prev_socket.as_mut()) {
            prev.paths.remove(&d);
        }
        if p.direct.take().is_some() {
            self.events.push_back(NodeEvent::PeerPath {
                id: p.id.clone(),
                direct: None,
            });
            self.reset_pmtu(now, pk);
        }
    }

    /// The local candidates last handed in ([`Node::set_local_candidates`],
    /// [`Node::socket_rotated`]).
    pub fn local_candidates(&self) -> &[SocketAddr] {
        &self.local_candidates
    }

    /// The I/O layer's view of our socket's addresses (interface addresses with the bound
    /// port). Call it at start and whenever the addresses or the socket change: peers learn
    /// the new candidates, the relay sees us from the new address, and direct paths are
    /// re-checked from it at once.
    pub fn set_local_candidates(&mut self, now: Instant, addrs: &[SocketAddr]) {
        self.local_changed(now, addrs, false);
    }

    /// The I/O layer moved to a fresh socket (a new ephemeral port) and keeps the previous
    /// one open, reading it, for [`PREVIOUS_SOCKET_GRACE`]; `addrs` are the new socket's
    /// addresses. Unlike a roam, direct paths stay: their datagrams keep leaving from the
    /// previous socket (`Transmit::previous_socket`) while each is validated again from the
    /// new one, so nothing detours through the relay. Paths not validated from the new
    /// socket when the grace ends go back to the relay, as after a roam; so do those still
    /// on the socket before (a rotation within the grace closes it).
    pub fn socket_rotated(&mut self, now: Instant, addrs: &[SocketAddr]) {
        let closing = self.prev_socket.take().map(|s| s.paths).unwrap_or_default();
        let mut paths = HashSet::new();
        let mut revalidate = Vec::new();
        let mut stale = Vec::new();
        for p in self.peers.values() {
            let Some(d) = p.direct else { continue };
            if closing.contains(&d) {
                stale.push(p.public);
            } else {
                paths.insert(d);
                revalidate.push(p.public);
            }
        }
        self.prev_socket = Some(PrevSocket {
            until: now + PREVIOUS_SOCKET_GRACE - PREVIOUS_SOCKET_HANDOVER,
            candidates: self.current_candidates(),
            paths,
        });
        for pk in stale {
            self.leave_direct(now, pk, REASON_SEARCHING);
            self.start_punch(now, pk, REASON_SEARCHING);
        }
        self.local_changed(now, addrs, true);
        for pk in revalidate {
            let Some(p) = self.peers.get_mut(&pk) else {
                continue;
            };
            // Challenges sent before now went from the previous socket: only an answer to
            // one sent from the new socket validates the path from it.
            p.challenges.clear();
            p.consent_since = None;
            p.punch = Some(Punch {
                next: now,
                round: 0,
                revalidate: true,
            });
            self.punch_tick(now, pk);
        }
    }

    /// Ends the previous socket's grace: the paths it still carries go back to the relay
    /// and are searched for from the current socket, and its candidates are no longer
    /// announced.
    fn prev_socket_timers(&mut self, now: Instant) {
        let Some(prev) = self.prev_socket.take_if(|s| s.until <= now) else {
            return;
        };
        let lost: Vec<[u8; 32]> = self
            .peers
            .values()
            .filter(|p| p.direct.is_some_and(|d| prev.paths.contains(&d)))
            .map(|p| p.public)
            .collect();
        for pk in lost {
            self.counters.rotation_paths_lost += 1;
            self.leave_direct(now, pk, REASON_SEARCHING);
            self.start_punch(now, pk, REASON_SEARCHING);
        }
        self.announce_all(now);
    }

    /// Whether a datagram to `dst` leaves from the previous socket.
    pub(super) fn via_previous(&self, dst: SocketAddr) -> bool {
        self.prev_socket
            .as_ref()
            .is_some_and(|s| !s.paths.is_empty() && s.paths.contains(&dst))
    }

    fn local_changed(&mut self, now: Instant, addrs: &[SocketAddr], rotated: bool) {
        let mut v: Vec<SocketAddr> = Vec::new();
        for a in addrs {
            if !v.contains(a) && v.len() < MAX_CANDIDATES && !a.ip().is_unspecified() {
                v.push(*a);
            }
        }
        if v == self.local_candidates && self.local_known {
            return;
        }
        let first = !self.local_known;
        self.local_known = true;
        self.local_candidates = v;
        if first {
            return;
        }
        self.counters.network_changes += 1;
        if !rotated {
            // A roam: the previous socket's addresses are gone with the network.
            self.prev_socket = None;
        }
        // The relay learns our new address from any authenticated datagram, and its echo
        // tells us our new reflexive address.
        if self.relay.probe_sent.is_none() && self.send_relay_frame(now, Frame::Keepalive, &[1]) {
            self.relay.probe_sent = Some(now);
            self.relay.probe_fast = false;
            self.relay.probe_next = now + RELAY_PROBE_RESEND;
        }
        // Direct paths from the old address are suspect (a NAT in front of the peer filters
        // our new address until it sends to it): data goes through the relay, which learns
        // the new address from the echo above, until a path from here is validated. (After
        // a rotation the previous socket carries them instead: `socket_rotated`.)
        if rotated {
            self.announce_all(now);
            return;
        }
        let direct: Vec<[u8; 32]> = self
            .peers
            .values()
            .filter(|p| p.direct.is_some())
            .map(|p| p.public)
            .collect();
        for pk in direct {
            self.leave_direct(now, pk, REASON_SEARCHING);
            self.start_punch(now, pk, REASON_SEARCHING);
        }
        self.announce_all(now);
    }

    /// Our address as the relay reported it.
    fn set_reflexive(&mut self, now: Instant, a: SocketAddr) {
        // A home relay reached through a circuit knows no address of ours: it says 0.0.0.0:0.
        if self.reflexive == Some(a) || a.port() == 0 {
            return;
        }
        let first = self.reflexive.is_none();
        self.reflexive = Some(a);
        if !first {
            self.counters.network_changes += 1;
        }
        self.announce_all(now);
    }

    /// Where datagrams for `pk` go now: the validated direct path, else the relay.
    fn best_path(&self, pk: &[u8; 32]) -> Option<Path> {
        let p = self.peers.get(pk)?;
        p.direct.map(Path::Direct).or(p.handle.map(Path::Relayed))
    }

    /// Sends an end-to-end datagram on `path`.
    fn send_on_path(&mut self, now: Instant, path: Path, dg: Vec<u8>) -> bool {
        match path {
            Path::Relayed(h) => self.send_via_relay(now, h, &dg),
            Path::Direct(a) => {
                self.counters.tx_datagrams += 1;
                self.push_tx(a, dg);
                true
            }
        }
    }

    /// Seals a control frame on the peer's current session and sends it on `path`, or on
    /// the best path.
    fn send_peer_frame(
        &mut self,
        now: Instant,
        pk: [u8; 32],
        kind: Frame,
        body: &[u8],
        path: Option<Path>,
    ) -> bool {
        let bucket = self.cfg.pad_bucket;
        // On the peer's own path, padding stays within its MTU; elsewhere (a challenge to
        // a candidate) frames are small.
        let pad = match (path, self.peers.get(&pk)) {
            (None, Some(p)) => mtu::e2e_padding(p, bucket),
            _ => Padding::from(bucket),
        };
        self.send_peer_frame_padded(now, pk, kind, body, path, pad)
    }

    fn send_peer_frame_padded(
        &mut self,
        now: Instant,
        pk: [u8; 32],
        kind: Frame,
        body: &[u8],
        path: Option<Path>,
        pad: Padding,
    ) -> bool {
        let explicit = path.is_some();
        let Some(path) = path.or_else(|| self.best_path(&pk)) else {
            return false;
        };
        let Some(s) = self
            .peers
            .get_mut(&pk)
            .and_then(|p| p.sessions.current.as_mut())
        else {
            return false;
        };
        let mut dg = vec![0u8; BODY_OFFSET + body.len() + TAG_LEN + wire::PAD_CAP];
        dg[BODY_OFFSET..BODY_OFFSET + body.len()].copy_from_slice(body);
        let Some(n) = s.seal(now, &mut dg, kind, body.len(), pad) else {
            return false;
        };
        dg.truncate(n);
        if explicit {
            if let Path::Direct(a) = path {
                // A challenge or its response: from the current socket, since that is
                // the path it checks (or the one the challenger checks).
                self.counters.tx_datagrams += 1;
                self.push_tx_current(a, dg);
                return true;
            }
        }
        self.send_on_path(now, path, dg)
    }

    /// A packet read from the TUN. If a session is ready, the datagram is written into
    /// `out` and returned; otherwise the packet is queued and the session set up.
    pub fn handle_tun_packet(
        &mut self,
        now: Instant,
        packet: &[u8],
        out: &mut [u8],
    ) -> Option<Transmit> {
        let t = self.tun_packet(now, packet, out)?;
        self.note_tx(t.dst);
        Some(t)
    }

    /// [`Node::handle_tun_packet`], but a datagram for a peer on a direct path comes back
    /// with its encryption still to do: `out` holds the frame's plaintext, and the
    /// [`SealJob`] seals it there, on whichever thread the caller likes, before it is sent
    /// (the I/O layer spreads a batch's jobs over the cores). Other transmits (relayed,
    /// fragments, control frames) are sealed as usual.
    pub fn handle_tun_packet_later(
        &mut self,
        now: Instant,
        packet: &[u8],
        out: &mut [u8],
    ) -> Option<(Transmit, Option<SealJob>)> {
        self.seal_later = true;
        let t = self.handle_tun_packet(now, packet, out);
        self.seal_later = false;
        let job = self.sealed_later.take();
        t.map(|t| (t, job))
    }

    fn tun_packet(&mut self, now: Instant, packet: &[u8], out: &mut [u8]) -> Option<Transmit> {
        let Some(dst) = ip_destination(packet) else {
            self.counters.dropped_malformed += 1;
            return None;
        };
        if packet.len() > usize::from(self.cfg.tun_mtu) {
            self.counters.dropped_too_big += 1;
            return None;
        }
        if Some(dst) == self.ipv4.map(IpAddr::V4) || dst == IpAddr::V6(self.ipv6) {
            return None;
        }
        if self.dns_address().map(IpAddr::V4) == Some(dst) {
            self.intercept_dns(now, packet);
            return None;
        }
        let pk = match dst {
            IpAddr::V4(a) => self.route4.get(&a).copied(),
            IpAddr::V6(a) => self.route6.get(&a).copied(),
        };
        let pk = match pk {
            Some(pk) => pk,
            // Outside the overlay: a subnet route or the exit, if one takes it.
            None => match self.route_for(dst).filter(|_| !self.in_overlay(dst)) {
                Some((pk, handle)) => {
                    // The announcement's relay handle is the advertiser's current one.
                    if self.peers.get(&pk).is_none_or(|p| p.handle != Some(handle)) {
                        self.ensure_peer(now, pk, Path::Relayed(handle));
                    }
                    pk
                }
                None => {
                    self.route_unknown(now, dst, packet);
                    return None;
                }
            },
        };
        let refused = self.peers.get(&pk).is_some_and(|p| {
            p.sessions.current.is_some()
                && !policy_allows(self.policy.as_ref(), &self.own_tags, &p.tags)
        });
        if refused {
            self.counters.dropped_policy += 1;
            return None;
        }
        let has_session = self
            .peers
            .get(&pk)
            .is_some_and(|p| p.sessions.current.is_some());
        if has_session {
            return self.send_inner(now, pk, packet, out);
        }
        if self.best_path(&pk).is_none() {
            // Neither a direct path nor a relay handle (the relay forgot the peer while a
            // direct path carried the traffic, and that path is gone): look it up afresh.
            self.forget_peer(pk);
            self.route_unknown(now, dst, packet);
            return None;
        }
        // No session yet: queue and make sure one is being set up.
        if let Some(peer) = self.peers.get_mut(&pk) {
            peer.last_data = now;
            if peer.queue.len() < QUEUE_MAX {
                peer.queue.push_back(packet.to_vec());
            } else {
                self.counters.dropped_queue_full += 1;
            }
            if peer.pending.is_none() {
                self.start_peer_handshake(now, pk);
            }
        }
        None
    }

    /// Sends one inner packet to `pk`, which has a session: TCP SYNs get their MSS
    /// clamped to the path; a packet too large for the path goes in overlay fragments
    /// (queued); anything else is sealed into `out`.
    fn send_inner(
        &mut self,
        now: Instant,
        pk: [u8; 32],
        packet: &[u8],
        out: &mut [u8],
    ) -> Option<Transmit> {
        let clamped = self.clamp_outgoing(&pk, packet);
        let packet = clamped.as_deref().unwrap_or(packet);
        let fits = self
            .peers
            .get(&pk)
            .is_some_and(|p| packet.len() <= mtu::inner_mtu(p));
        if !fits {
            self.send_oversized(now, pk, packet);
            return None;
        }
        self.send_data(now, pk, packet, out)
    }

    /// Encrypts one inner packet for `pk` into `out` (both layers when relayed).
    fn send_data(
        &mut self,
        now: Instant,
        pk: [u8; 32],
        packet: &[u8],
        out: &mut [u8],
    ) -> Option<Transmit> {
        let bucket = self.cfg.pad_bucket;
        let relay_addr = self.relay.addr;
        let peer = self.peers.get_mut(&pk)?;
        let pad = mtu::e2e_padding(peer, bucket);
        let outer_pad = Padding::new(bucket, usize::from(peer.pmtu.size()));
        let session = peer.sessions.current.as_mut()?;
        if let Some(addr) = peer.direct {
            if out.len() < BODY_OFFSET + packet.len() + TAG_LEN + wire::PAD_CAP {
                return None;
            }
            out[BODY_OFFSET..BODY_OFFSET + packet.len()].copy_from_slice(packet);
            let len = if self.seal_later {
                let job = session.seal_later(now, out, Frame::Data, packet.len(), pad)?;
                let len = job.len();
                self.sealed_later = Some(job);
                len
            } else {
                session.seal(now, out, Frame::Data, packet.len(), pad)?
            };
            peer.tx_bytes += packet.len() as u64;
            peer.last_data = now;
            self.counters.tx_packets += 1;
            self.counters.tx_packets_direct += 1;
            self.counters.tx_bytes_direct += packet.len() as u64;
            self.counters.tx_datagrams += 1;
            return Some(Transmit {
                dst: addr,
                len,
                previous_socket: self.via_previous(addr),
            });
        }
        let handle = peer.handle?;
        let relay_session = self.relay.sessions.current.as_mut()?;
        let inner_at = BODY_OFFSET + 8;
        let body_at = RELAYED_BODY_OFFSET;
        if out.len() < body_at + packet.len() + 2 * (TAG_LEN + wire::PAD_CAP) {
            return None;
        }
        out[body_at..body_at + packet.len()].copy_from_slice(packet);
        let inner_len = session.seal(now, &mut out[inner_at..], Frame::Data, packet.len(), pad)?;
        out[BODY_OFFSET..BODY_OFFSET + 8].copy_from_slice(&handle.to_be_bytes());
        let len = relay_session.seal(now, out, Frame::Forward, 8 + inner_len, outer_pad)?;
        peer.tx_bytes += packet.len() as u64;
        peer.last_data = now;
        self.counters.tx_packets += 1;
        self.counters.tx_packets_relayed += 1;
        self.counters.tx_bytes_relayed += packet.len() as u64;
        self.counters.tx_datagrams += 1;
        if self.guard.is_some() {
            return self.guard_wrap(now, out, len);
        }
        Some(Transmit {
            dst: relay_addr,
            len,
            previous_socket: false,
        })
    }

    /// A packet to an address we know nobody for: ask the rendezvous.
    fn route_unknown(&mut self, now: Instant, dst: IpAddr, packet: &[u8]) {
        if !self.in_overlay(dst) {
            self.counters.dropped_no_route += 1;
            return;
        }
        if self.negative.get(&dst).is_some_and(|until| *until > now) {
            self.counters.dropped_no_route += 1;
            return;
        }
        if self.lookups.len() >= MAX_LOOKUPS && !self.lookup_by_addr.contains_key(&dst) {
            // A scan of the overlay must not grow memory: new destinations wait their turn.
            self.counters.dropped_queue_full += 1;
            return;
        }
        if let Some(req) = self.lookup_by_addr.get(&dst).copied() {
            if let Some(Lookup {
                purpose: LookupPurpose::Route(q),
                ..
            }) = self.lookups.get_mut(&req)
            {
                if q.len() < QUEUE_MAX {
                    q.push_back(packet.to_vec());
                } else {
                    self.counters.dropped_queue_full += 1;
                }
                return;
            }
        }
        let mut q = VecDeque::new();
        q.push_back(packet.to_vec());
        self.start_lookup(now, dst, LookupPurpose::Route(q));
    }

    fn in_overlay(&self, a: IpAddr) -> bool {
        match a {
            IpAddr::V4(a) => in_pool(a, self.cfg.ipv4_pool.0, self.cfg.ipv4_pool.1),
            IpAddr::V6(a) => a.octets()[..6] == self.keys.ula_prefix(),
        }
    }

    fn blind_addr(&self, a: IpAddr) -> [u8; 32] {
        match a {
            IpAddr::V4(a) => self.keys.blind(b"ipv4", &a.octets()),
            IpAddr::V6(a) => self.keys.blind(b"ipv6", &a.octets()),
        }
    }

    fn start_lookup(&mut self, now: Instant, target: IpAddr, purpose: LookupPurpose) {
        let req = self.next_req();
        self.lookup_by_addr.insert(target, req);
        self.lookups.insert(
            req,
            Lookup {
                target,
                sent: now,
                attempts: 1,
                purpose,
            },
        );
        self.send_lookup(now, req, target);
    }

    fn send_lookup(&mut self, now: Instant, req: u32, target: IpAddr) {
        let mut body = req.to_be_bytes().to_vec();
        body.extend_from_slice(&self.blind_addr(target));
        self.counters.lookups += 1;
        self.send_relay_frame(now, Frame::Lookup, &body);
    }

    /// Seals a control frame on the relay session and queues it.
    fn send_relay_frame(&mut self, now: Instant, kind: Frame, body: &[u8]) -> bool {
        let pad = Padding::new(self.cfg.pad_bucket, self.relay_pad_cap());
        self.send_relay_frame_padded(now, kind, body, pad)
    }

    fn send_relay_frame_padded(
        &mut self,
        now: Instant,
        kind: Frame,
        body: &[u8],
        pad: Padding,
    ) -> bool {
        let Some(s) = self.relay.sessions.current.as_mut() else {
            return false;
        };
        match s.seal_frame(now, kind, body, pad) {
            Some(dg) => {
                self.counters.tx_datagrams += 1;
                self.send_home(now, dg);
                true
            }
            None => false,
        }
    }

    /// Wraps an end-to-end datagram for a peer into a Forward on the relay session.
    fn send_via_relay(&mut self, now: Instant, handle: u64, inner: &[u8]) -> bool {
        let mut body = Vec::with_capacity(8 + inner.len());
        body.extend_from_slice(&handle.to_be_bytes());
        body.extend_from_slice(inner);
        // The relayed path's MTU bounds the whole datagram (a probe is exactly its size).
        let cap = self
            .by_handle
            .get(&handle)
            .and_then(|pk| self.peers.get(pk))
            .filter(|p| p.direct.is_none())
            .map_or(self.relay_pad_cap(), |p| usize::from(p.pmtu.size()));
        let pad = Padding::new(self.cfg.pad_bucket, cap);
        self.send_relay_frame_padded(now, Frame::Forward, &body, pad)
    }

    fn on_lookup_reply(&mut self, now: Instant, body: &[u8]) {
        let mut c = Cursor(body);
        let (Some(req), Some(found), Some(handle)) = (c.u32(), c.u8(), c.u64()) else {
            self.counters.dropped_malformed += 1;
            return;
        };
        let record = c.rest();
        if self.on_name_lookup_reply(now, req, found == 1, record) {
            return;
        }
        let Some(lookup) = self.lookups.remove(&req) else {
            return;
        };
        self.lookup_by_addr.remove(&lookup.target);
        let rec = if found == 1 {
            self.open_record(record)
        } else {
            None
        };
        // The record must actually hold the address we asked for.
        let rec = rec.filter(|r| match lookup.target {
            IpAddr::V4(a) => r.ipv4 == Some(a),
            IpAddr::V6(a) => self.keys.overlay_ipv6(&r.public) == a,
        });
        match lookup.purpose {
            LookupPurpose::Verify(pk) => {
                let ok = rec.as_ref().is_some_and(|r| r.public == pk);
                if let Some(r) = rec.filter(|_| ok) {
                    self.peer_name_claimed(now, pk, r.name);
                }
                self.finish_verify(now, pk, lookup.target, ok);
            }
            LookupPurpose::Route(queue) => {
                let Some(rec) = rec else {
                    self.counters.lookup_misses += 1;
                    self.counters.dropped_no_route += queue.len() as u64;
                    if self.negative.len() >= MAX_NEGATIVE {
                        self.negative.retain(|_, until| *until > now);
                        let soonest = self
                            .negative
                            .iter()
                            .min_by_key(|(_, until)| **until)
                            .map(|(a, _)| *a);
                        if let Some(a) = soonest.filter(|_| self.negative.len() >= MAX_NEGATIVE) {
                            self.negative.remove(&a);
                        }
                    }
                    self.negative.insert(lookup.target, now + NEGATIVE_TTL);
                    return;
                };
                if rec.public == *self.identity.public() {
                    return;
                }
                let pk = rec.public;
                self.ensure_peer(now, pk, Path::Relayed(handle));
                if let IpAddr::V4(a) = lookup.target {
                    self.set_peer_ipv4(pk, a);
                }
                self.peer_name_claimed(now, pk, rec.name);
                let mut out = vec![0u8; wire::PAD_CAP * 4];
                for pkt in queue {
                    if let Some(t) = self.send_data(now, pk, &pkt, &mut out) {
                        self.push_tx(t.dst, out[..t.len].to_vec());
                    } else if let Some(p) = self.peers.get_mut(&pk) {
                        if p.queue.len() < QUEUE_MAX {
                            p.queue.push_back(pkt);
                        }
                    }
                }
                let needs_hs = self
                    .peers
                    .get(&pk)
                    .is_some_and(|p| p.sessions.current.is_none() && p.pending.is_none());
                if needs_hs {
                    self.start_peer_handshake(now, pk);
                }
            }
        }
    }

    fn finish_verify(&mut self, _now: Instant, pk: [u8; 32], target: IpAddr, ok: bool) {
        let IpAddr::V4(a) = target else { return };
        let Some(peer) = self.peers.get_mut(&pk) else {
            return;
        };
        if peer.ipv4_claim != Some(a) {
            return;
        }
        peer.ipv4_claim = None;
        let held = std::mem::take(&mut peer.hold);
        if ok {
            peer.rx_bytes += held.iter().map(|p| p.len() as u64).sum::<u64>();
            self.counters.rx_packets += held.len() as u64;
            for mut pkt in held {
                self.clamp_incoming(&pk, &mut pkt);
                self.tun_out.push_back(pkt);
            }
            self.set_peer_ipv4(pk, a);
        } else {
            self.counters.dropped_spoofed += held.len() as u64;
        }
    }

    /// Records that `pk` holds `a` (confirmed by the rendezvous): the route follows, the
    /// peer's old address stops routing to it, and a peer that held `a` before loses it.
    fn set_peer_ipv4(&mut self, pk: [u8; 32], a: Ipv4Addr) {
        if let Some(prev) = self.route4.insert(a, pk).filter(|prev| *prev != pk) {
            if let Some(p) = self.peers.get_mut(&prev) {
                if p.ipv4 == Some(a) {
                    p.ipv4 = None;
                }
            }
        }
        let Some(p) = self.peers.get_mut(&pk) else {
            return;
        };
        p.ipv4_claim = None;
        if let Some(old) = p.ipv4.replace(a).filter(|old| *old != a) {
            if self.route4.get(&old) == Some(&pk) {
                self.route4.remove(&old);
            }
        }
    }

    fn ensure_peer(&mut self, now: Instant, pk: [u8; 32], path: Path) {
        let ipv6 = self.keys.overlay_ipv6(&pk);
        if let std::collections::btree_map::Entry::Vacant(e) = self.peers.entry(pk) {
            e.insert(Peer {
                public: pk,
                id: node_id(&pk),
                ipv4: None,
                ipv4_claim: None,
                ipv6,
                name: None,
                name_claim: None,
                tags: Vec::new(),
                handle: None,
                direct: None,
                direct_rx: now,
                consent_since: None,
                last_consent: None,
                candidates: Vec::new(),
                challenges: VecDeque::new(),
                punch: None,
                punch_retry: None,
                punch_backoff: PUNCH_RETRY_MIN,
                ours_acked: false,
                announced_at: None,
                announce_tries: 0,
                their_gen: 0,
                relay_reason: REASON_SEARCHING,
                sessions: Sessions::default(),
                pending: None,
                queue: VecDeque::new(),
                hold: VecDeque::new(),
                last_data: now,
                dead_check_after: now,
                last_ts: None,
                tx_bytes: 0,
                rx_bytes: 0,
                rtt: None,
                last_handshake_unix: None,
                up: false,
                pmtu: mtu::initial_pmtud(now),
                last_ptb: None,
                rx_max: 0,
                survey: None,
                next_survey: now,
                survey_found: None,
                left: None,
            });
            self.route6.insert(ipv6, pk);
            self.reset_pmtu(now, pk);
        }
        if let Path::Relayed(h) = path {
            if let Some(p) = self.peers.get_mut(&pk) {
                p.handle = Some(h);
            }
            self.by_handle.retain(|_, v| v != &pk);
            self.by_handle.insert(h, pk);
        }
    }

    fn start_peer_handshake(&mut self, now: Instant, pk: [u8; 32]) {
        let reachable = match self.best_path(&pk) {
            Some(Path::Direct(_)) => true,
            Some(Path::Relayed(_)) => self.relay.sessions.current.is_some(),
            None => false,
        };
        if !reachable {
            // Started again once the relay is back (see `on_register_reply`).
            if let Some(p) = self.peers.get_mut(&pk).and_then(|p| p.pending.take()) {
                self.pending_msgs.remove(&p.msg_id);
            }
            return;
        }
        let recv_cid = self.fresh_cid();
        let payload = InitPayload {
            timestamp: self.unix(now).as_nanos() as u64,
            hp: *self.hp.bytes(),
            cid: recv_cid,
            ipv4: self.ipv4,
            cert: self.own_cert.clone(),
            link: None,
            aes: self.cfg.aes,
        };
        let seed = self.seed();
        let epoch = self.out_epoch(now);
        let Ok((init, msg1)) = Initiator::start(
            &self.identity,
            &pk,
            &epoch.node_prologue,
            &payload.encode(),
            seed,
        ) else {
            return;
        };
        let seal = epoch.keys.node_hs_seal(&pk);
        let msg_id = self.fresh_msg_id();
        let dgs = handshake::datagrams(&seal, &mut self.rng, HsKind::Init, msg_id, &msg1);
        let Some(peer) = self.peers.get_mut(&pk) else {
            return;
        };
        let attempts = peer.pending.as_ref().map_or(0, |p| p.attempts) + 1;
        if let Some(old) = peer.pending.take() {
            self.pending_msgs.remove(&old.msg_id);
        }
        peer.pending = Some(PendingHs {
            init,
            msg_id,
            recv_cid,
            sent: now,
            attempts,
            aes: payload.aes,
        });
        self.pending_msgs.insert(msg_id, pk);
        self.counters.handshakes_initiated += 1;
        if let Some(path) = self.best_path(&pk) {
            for dg in dgs {
                self.send_on_path(now, path, dg);
            }
        }
    }

    fn peer_handshake(&mut self, now: Instant, path: Path, dg: &mut [u8]) {
        let Some((frag, epoch)) = self.open_handshake(now, false, dg) else {
            self.counters.dropped_unauthenticated += 1;
            return;
        };
        self.counters.handshakes_previous_key += u64::from(epoch == EPOCH_PREVIOUS);
        let (whole, evicted) = self.reasm.add(
            now,
            (path, frag.kind as u8 | epoch << 4),
            frag.msg_id,
            frag.index,
            frag.count,
            &dg[frag.piece.clone()],
        );
        self.counters.reassembly_timeouts += evicted;
        let Some(msg) = whole else { return };
        match frag.kind {
            HsKind::Init => self.answer_peer(now, path, frag.msg_id, &msg, epoch),
            HsKind::Response => self.complete_peer(now, path, frag.msg_id, &msg),
        }
    }

    fn answer_peer(&mut self, now: Instant, path: Path, msg_id: u32, msg: &[u8], epoch: u8) {
        if !self.hs_limit.allow(now, &path) {
            self.counters.dropped_rate_limited += 1;
            return;
        }
        let seed = self.seed();
        let prologue = self.epoch_at(epoch).node_prologue;
        let Ok((responder, payload)) = Responder::read(&self.identity, &prologue, msg, seed) else {
            self.counters.dropped_unauthenticated += 1;
            return;
        };
        let Some(init) = InitPayload::decode(&payload) else {
            self.counters.dropped_malformed += 1;
            return;
        };
        let pk = responder.remote_static;
        if pk == *self.identity.public() {
            return;
        }
        let last = self.peers.get(&pk).and_then(|p| p.last_ts);
        if !handshake::timestamp_ok(init.timestamp, last, self.unix(now)) {
            self.counters.dropped_handshake_replay += 1;
            return;
        }
        let cid = self.fresh_cid();
        let unix_secs = self.unix(now).as_secs();
        let (pinned, tags) =
            match verify_peer_cert(self.ca, self.policy.as_ref(), &pk, &init.cert, unix_secs) {
                Ok(x) => x,
                Err(()) => {
                    self.counters.dropped_uncertified += 1;
                    return;
                }
            };
        // AES-256-GCM iff the initiator offered it and we want it too (`cfg.aes`).
        let aes = init.aes && self.cfg.aes;
        let resp = RespPayload {
            hp: *self.hp.bytes(),
            cid,
            ipv4: self.ipv4,
            cert: self.own_cert.clone(),
            aes,
        };
        let Ok((mut keys, msg2)) = responder.reply(&resp.encode()) else {
            return;
        };
        keys.cipher = if aes {
            Cipher::Aes256Gcm
        } else {
            Cipher::ChaCha20Poly1305
        };
        self.ensure_peer(now, pk, path);
        let session = Session::new(&keys, cid, init.cid, HeaderKey::new(init.hp), false, now);
        let check_direct = match path {
            Path::Direct(a) => self
                .peers
                .get(&pk)
                .is_some_and(|p| p.direct != Some(a))
                .then_some(a),
            Path::Relayed(_) => None,
        };
        self.cids.insert(cid, CidOwner::Peer(pk));
        let unix = self.unix(now).as_secs();
        let mut verify = None;
        if let Some(peer) = self.peers.get_mut(&pk) {
            peer.tags = tags;
            peer.last_ts = Some(init.timestamp);
            peer.last_data = now;
            if let Some(old) = peer.sessions.install(session) {
                self.cids.remove(&old);
            }
            peer.last_handshake_unix = Some(unix);
            if let Some(a) = init.ipv4.filter(|_| pinned.is_none()) {
                if peer.ipv4 != Some(a) && peer.ipv4_claim != Some(a) {
                    peer.ipv4_claim = Some(a);
                    verify = Some(a);
                }
            }
        }
        if let Some(a) = pinned {
            // The CA fixed the peer's address: no rendezvous check needed.
            self.set_peer_ipv4(pk, a);
        }
        self.counters.handshakes_answered += 1;
        let seal = self.epoch_at(epoch).keys.node_hs_seal(&pk);
        for dg in handshake::datagrams(&seal, &mut self.rng, HsKind::Response, msg_id, &msg2) {
            self.send_on_path(now, path, dg);
        }
        if let Some(a) = verify {
            self.start_lookup(now, IpAddr::V4(a), LookupPurpose::Verify(pk));
        }
        if let Some(a) = check_direct.filter(|_| self.direct_with(&pk)) {
            // A handshake straight from an address: check it, and use it once it answers.
            self.challenge(now, pk, a);
        }
        self.peer_up(now, pk);
    }

    fn complete_peer(&mut self, now: Instant, path: Path, msg_id: u32, msg: &[u8]) {
        let Some(pk) = self.pending_msgs.remove(&msg_id) else {
            self.counters.dropped_unauthenticated += 1;
            return;
        };
        let unix = self.unix(now).as_secs();
        let ca = self.ca;
        let revoked = self.policy.as_ref().filter(|p| p.is_revoked(&pk)).cloned();
        let Some(peer) = self.peers.get_mut(&pk) else {
            return;
        };
        let Some(pending) = peer.pending.take() else {
            return;
        };
        if pending.msg_id != msg_id {
            peer.pending = Some(pending);
            return;
        }
        let (mut keys, payload) = match pending.init.finish(msg) {
            Ok(x) => x,
            Err(_) => {
                self.counters.dropped_unauthenticated += 1;
                return;
            }
        };
        let Some(resp) = RespPayload::decode(&payload) else {
            self.counters.dropped_malformed += 1;
            return;
        };
        // The responder's choice, which it may make only if we offered it.
        keys.cipher = if pending.aes && resp.aes {
            Cipher::Aes256Gcm
        } else {
            Cipher::ChaCha20Poly1305
        };
        let Ok((pinned, tags)) = verify_peer_cert(ca, revoked.as_ref(), &pk, &resp.cert, unix)
        else {
            self.counters.dropped_uncertified += 1;
            return;
        };
        peer.tags = tags;
        let session = Session::new(
            &keys,
            pending.recv_cid,
            resp.cid,
            HeaderKey::new(resp.hp),
            true,
            now,
        );
        peer.rtt = Some(now.saturating_duration_since(pending.sent));
        peer.last_handshake_unix = Some(unix);
        // The responder's IPv4 is believed only once the rendezvous confirms it.
        let verify = resp
            .ipv4
            .filter(|_| pinned.is_none())
            .filter(|a| peer.ipv4 != Some(*a) && peer.ipv4_claim != Some(*a));
        if let Some(a) = verify {
            peer.ipv4_claim = Some(a);
        }
        let dropped = peer.sessions.install(session);
        self.cids.insert(pending.recv_cid, CidOwner::Peer(pk));
        if let Some(old) = dropped {
            self.cids.remove(&old);
        }
        self.counters.handshakes_completed += 1;
        if let Path::Relayed(h) = path {
            self.ensure_peer(now, pk, Path::Relayed(h));
        }
        if let Some(a) = verify {
            self.start_lookup(now, IpAddr::V4(a), LookupPurpose::Verify(pk));
        }
        if let Some(a) = pinned {
            self.set_peer_ipv4(pk, a);
        }
        self.peer_up(now, pk);
    }

    /// A session with `pk` is ready: flush what waited for it.
    fn peer_up(&mut self, now: Instant, pk: [u8; 32]) {
        let Some(peer) = self.peers.get_mut(&pk) else {
            return;
        };
        let mut queued: Vec<Vec<u8>> = peer.queue.drain(..).collect();
        if !policy_allows(self.policy.as_ref(), &self.own_tags, &peer.tags) {
            self.counters.dropped_policy += queued.len() as u64;
            queued.clear();
        }
        let announce = peer.announced_at.is_none();
        if !peer.up {
            peer.up = true;
            self.events.push_back(NodeEvent::PeerUp {
                id: peer.id.clone(),
            });
        }
        let mut out = vec![0u8; wire::PAD_CAP * 4];
        for pkt in queued {
            if let Some(t) = self.send_inner(now, pk, &pkt, &mut out) {
                self.push_tx(t.dst, out[..t.len].to_vec());
            }
        }
        if announce {
            self.announce(now, pk);
        }
    }

    fn close_peer(&mut self, pk: [u8; 32], notify: bool) {
        let Some(peer) = self.peers.get_mut(&pk) else {
            return;
        };
        for cid in peer.sessions.clear() {
            self.cids.remove(&cid);
        }
        if let Some(p) = peer.pending.take() {
            self.pending_msgs.remove(&p.msg_id);
        }
        peer.queue.clear();
        // A new session finds its path afresh.
        peer.direct = None;
        peer.consent_since = None;
        peer.last_consent = None;
        peer.candidates.clear();
        peer.challenges.clear();
        peer.punch = None;
        peer.punch_retry = None;
        peer.survey = None;
        peer.survey_found = None;
        peer.left = None;
        peer.ours_acked = false;
        peer.announced_at = None;
        peer.announce_tries = 0;
        peer.their_gen = 0;
        peer.punch_backoff = PUNCH_RETRY_MIN;
        peer.relay_reason = REASON_SEARCHING;
        if peer.up && notify {
            peer.up = false;
            self.events.push_back(NodeEvent::PeerDown {
                id: peer.id.clone(),
            });
        }
        peer.up = false;
    }

    fn forget_peer(&mut self, pk: [u8; 32]) {
        self.close_peer(pk, true);
        if let Some(p) = self.peers.remove(&pk) {
            if let Some(a) = p.ipv4 {
                if self.route4.get(&a) == Some(&pk) {
                    self.route4.remove(&a);
                }
            }
            self.route6.remove(&p.ipv6);
            self.by_handle.retain(|_, v| v != &pk);
        }
    }

    // ------------------------------------------------------------ the relay link

    fn link_mut(&mut self, which: CidOwner) -> Option<&mut RelayLink> {
        match which {
            CidOwner::Guard => self.guard.as_mut().map(|g| &mut g.link),
            _ => Some(&mut self.relay),
        }
    }

    fn relay_handshake(&mut self, now: Instant, buf: &mut [u8]) {
        if self.relay_welcome(now, CidOwner::Relay, buf) {
            self.register(now);
        }
    }

    /// Reads a relay's handshake answer on the link `which`; true when it completed the
    /// handshake and the new session is installed.
    fn relay_welcome(&mut self, now: Instant, which: CidOwner, buf: &mut [u8]) -> bool {
        let seal = if which == CidOwner::Relay {
            SealFor::Home
        } else {
            SealFor::Relay
        };
        let Some((frag, epoch)) = self.open_handshake_as(now, seal, buf) else {
            self.counters.dropped_unauthenticated += 1;
            return false;
        };
        self.counters.handshakes_previous_key += u64::from(epoch == EPOCH_PREVIOUS);
        if frag.kind != HsKind::Response {
            self.counters.dropped_malformed += 1;
            return false;
        }
        let Some(addr) = self.link_mut(which).map(|l| l.addr) else {
            return false;
        };
        let (whole, evicted) = self.reasm.add(
            now,
            (Path::Direct(addr), frag.kind as u8 | epoch << 4),
            frag.msg_id,
            frag.index,
            frag.count,
            &buf[frag.piece.clone()],
        );
        self.counters.reassembly_timeouts += evicted;
        let Some(msg) = whole else { return false };
        let Some(link) = self.link_mut(which) else {
            return false;
        };
        let Some(pending) = link.pending.take() else {
            return false;
        };
        if pending.msg_id != frag.msg_id {
            link.pending = Some(pending);
            return false;
        }
        let recv_cid = pending.recv_cid;
        let Ok((keys, payload)) = pending.init.finish(&msg) else {
            self.counters.dropped_unauthenticated += 1;
            return false;
        };
        let Some(resp) = RespPayload::decode(&payload) else {
            self.counters.dropped_malformed += 1;
            return false;
        };
        // Sessions with relays are ChaCha20-Poly1305 (`keys.cipher` as the handshake left
        // it), whatever the reply says: we never offer AES-256-GCM to a relay.
        let session = Session::new(
            &keys,
            recv_cid,
            resp.cid,
            HeaderKey::new(resp.hp),
            true,
            now,
        );
        let Some(link) = self.link_mut(which) else {
            return false;
        };
        let old = link.sessions.install(session);
        link.backoff = RELAY_BACKOFF_MIN;
        link.probe_sent = None;
        self.cids.insert(recv_cid, which);
        if let Some(old) = old {
            self.cids.remove(&old);
        }
        self.counters.handshakes_completed += 1;
        true
    }

    /// Sends message 1 to the relay of link `which`, with the key this node shows it.
    fn relay_hello(&mut self, now: Instant, which: CidOwner) {
        let recv_cid = self.fresh_cid();
        let home_key = self.home_identity.is_some() && which == CidOwner::Relay;
        let Some(link) = self.link_mut(which) else {
            return;
        };
        let (public, hp) = (link.public, *link.hp.bytes());
        let payload = InitPayload {
            timestamp: self.unix(now).as_nanos() as u64,
            hp,
            cid: recv_cid,
            ipv4: None,
            // The home relay of a two-hop node sees a key made for it, so no certificate.
            cert: if home_key {
                Vec::new()
            } else {
                self.own_cert.clone()
            },
            link: None,
            // Relays keep ChaCha20-Poly1305: they hold one session per node, and the AES key
            // schedules would multiply what each costs them.
            aes: false,
        };
        let seed = self.seed();
        let epoch = self.out_epoch(now);
        let seal = epoch.keys.relay().hs_seal(&public);
        let identity = match &self.home_identity {
            Some(k) if home_key => k,
            _ => &self.identity,
        };
        let Ok((init, msg1)) = Initiator::start(
            identity,
            &public,
            &epoch.relay_prologue,
            &payload.encode(),
            seed,
        ) else {
            return;
        };
        let msg_id = self.fresh_msg_id();
        let dgs = handshake::datagrams(&seal, &mut self.rng, HsKind::Init, msg_id, &msg1);
        let Some(link) = self.link_mut(which) else {
            return;
        };
        let attempts = link.pending.as_ref().map_or(0, |p| p.attempts) + 1;
        link.pending = Some(PendingHs {
            init,
            msg_id,
            recv_cid,
            sent: now,
            attempts,
            aes: payload.aes,
        });
        link.next_attempt = now + link.backoff;
        link.backoff = (link.backoff * 2).min(RELAY_BACKOFF_MAX);
        let addr = link.addr;
        self.counters.handshakes_initiated += 1;
        for dg in dgs {
            self.counters.tx_datagrams += 1;
            if which == CidOwner::Guard {
                self.push_tx(addr, dg);
            } else {
                self.send_home(now, dg);
            }
        }
    }

    fn start_relay_handshake(&mut self, now: Instant) {
        if self.relay.sessions.current.is_none()
            && self.cfg.relays.len() > 1
            && self
                .relay
                .pending
                .as_ref()
                .is_some_and(|p| p.attempts >= RELAY_FAILOVER_ATTEMPTS)
        {
            // This relay does not answer at all: try the next one of the token.
            self.relay_lost(now);
            self.relay.backoff = RELAY_BACKOFF_MIN;
        }
        self.relay_hello(now, CidOwner::Relay);
    }

    fn register(&mut self, now: Instant) {
        let req = self.next_req();
        let pk = *self.identity.public();
        let mut names = vec![
            self.keys.blind(b"key", &pk),
            self.keys.blind(b"ipv4", &self.ipv4_candidate.octets()),
            self.keys.blind(b"ipv6", &self.ipv6.octets()),
        ];
        let name = self.registered_name().map(str::to_owned);
        if let Some(n) = &name {
            names.push(self.keys.blind(b"name", n.as_bytes()));
        }
        let record = self.seal_record(&Record {
            public: pk,
            ipv4: Some(self.ipv4_candidate),
            name,
        });
        let mut body = req.to_be_bytes().to_vec();
        body.push(names.len() as u8);
        for n in &names {
            body.extend_from_slice(n);
        }
        body.extend_from_slice(&record);
        if self.send_relay_frame(now, Frame::Register, &body) {
            self.relay.registering = Some((req, now));
        }
    }

    fn on_register_reply(&mut self, now: Instant, body: &[u8]) {
        let mut c = Cursor(body);
        let (Some(req), Some(status), Some(handle)) = (c.u32(), c.u8(), c.u64()) else {
            self.counters.dropped_malformed += 1;
            return;
        };
        if self.relay.registering.map(|r| r.0) != Some(req) {
            return;
        }
        if let Some((_, sent)) = self.relay.registering {
            // A registration is one request and its answer: the relay's round trip.
            self.relay.rtt = Some(now.saturating_duration_since(sent));
        }
        self.relay.registering = None;
        if status != 0 {
            self.counters.registration_conflicts += 1;
            let index = c.u8().unwrap_or(1);
            if usize::from(index) == NAME_INDEX && self.registered_name().is_some() {
                // Another member has our name: register without it (the status says so).
                self.dns.name_taken = true;
                self.counters.name_conflicts += 1;
                if let Some(name) = self.cfg.name.clone() {
                    self.events.push_back(NodeEvent::NameTaken { name });
                }
                self.register(now);
                return;
            }
            let (pool, len) = self.cfg.ipv4_pool;
            if index == 1 && self.pinned_ipv4.is_none() && self.ipv4_attempt < MAX_IPV4_ATTEMPTS {
                // Our IPv4 candidate belongs to someone else: try the next one.
                self.ipv4_attempt += 1;
                self.ipv4_candidate =
                    ipv4_candidate(self.identity.public(), pool, len, self.ipv4_attempt);
                self.register(now);
                return;
            }
            // Our key or IPv6 is held by another live client (this identity runs twice, or
            // an old session of ours has not expired yet), or the pool looks full: try again
            // after the registration timeout instead of spinning.
            if index == 1 && self.pinned_ipv4.is_none() {
                self.ipv4_attempt = 0;
                self.ipv4_candidate = ipv4_candidate(self.identity.public(), pool, len, 0);
            }
            self.relay.registering = Some((req, now));
            return;
        }
        let mut reconnect = Vec::new();
        if self.relay.handle.is_some_and(|h| h != handle) {
            // The relay lost its state (restart or failover): every relay handle we know
            // is stale, so peers are looked up again on their next packet — at once for
            // relayed peers that carried data in the last seconds, so that a peer that only
            // sends (and only knows our old handle) hears from us on the new one.
            let all: Vec<[u8; 32]> = self.peers.keys().copied().collect();
            for pk in all {
                if self.peers.get(&pk).is_some_and(|p| p.direct.is_some()) {
                    if let Some(p) = self.peers.get_mut(&pk) {
                        p.handle = None;
                    }
                } else {
                    if let Some(p) = self
                        .peers
                        .get(&pk)
                        .filter(|p| now.saturating_duration_since(p.last_data) < RECONNECT_ACTIVE)
                    {
                        reconnect.push(IpAddr::V6(p.ipv6));
                    }
                    self.forget_peer(pk);
                }
            }
            self.by_handle.clear();
        }
        // Our address as the relay sees it follows the conflict index.
        let _conflict = c.u8();
        if let Some(a) = c.addr() {
            self.set_reflexive(now, a);
        }
        // The relay's policy serial: if ours is newer (the relay restarted, or nobody told
        // it yet), push ours.
        let relay_serial = c.u64().unwrap_or(0);
        if let Some(p) = self.policy.as_ref().filter(|p| p.serial > relay_serial) {
            let bytes = p.to_bytes();
            self.send_relay_frame(now, Frame::Policy, &bytes);
        }
        self.relay.handle = Some(handle);
        self.relay.registered = true;
        if self.ipv4 != Some(self.ipv4_candidate) {
            self.ipv4 = Some(self.ipv4_candidate);
            self.events
                .push_back(NodeEvent::Ipv4Assigned(self.ipv4_candidate));
        }
        if !self.relay.up {
            self.relay.up = true;
            self.events.push_back(NodeEvent::RelayUp(self.relay.addr));
        }
        self.announce_routes(now);
        for target in reconnect {
            if !self.lookup_by_addr.contains_key(&target) && self.lookups.len() < MAX_LOOKUPS {
                self.start_lookup(now, target, LookupPurpose::Route(VecDeque::new()));
            }
        }
        // Peers that waited for the relay get their handshakes now, and packets queued for
        // peers whose session outlived the outage go out at once, in order.
        let waiting: Vec<([u8; 32], bool)> = self
            .peers
            .values()
            .filter(|p| !p.queue.is_empty())
            .map(|p| (p.public, p.sessions.current.is_some()))
            .collect();
        for (pk, has_session) in waiting {
            if has_session {
                self.peer_up(now, pk);
            } else {
                self.start_peer_handshake(now, pk);
            }
        }
    }

    /// Timeout and resend interval of the outstanding relay probe.
    fn relay_probe_times(&self) -> (Duration, Duration) {
        if self.relay.probe_fast {
            (RELAY_FAST_TIMEOUT, RELAY_FAST_RESEND)
        } else {
            (RELAY_PROBE_TIMEOUT, RELAY_PROBE_RESEND)
        }
    }

    /// When the relay's silence under our traffic calls for a fast probe: only with another
    /// relay to move to, a registered session, no probe out, and something sent to the relay
    /// since it last spoke.
    fn relay_fast_probe_due(&self) -> Option<Instant> {
        // (Two hops: the guard link has its own loss detection, and the home relay's
        // successor in the token is the guard.)
        if self.cfg.relays.len() < 2
            || self.guard.is_some()
            || !self.relay.registered
            || self.relay.probe_sent.is_some()
        {
            return None;
        }
        let s = self.relay.sessions.current.as_ref()?;
        (s.last_tx > s.last_rx).then_some(s.last_rx + RELAY_ACTIVE_SILENCE)
    }

    fn relay_lost(&mut self, now: Instant) {
        for cid in self.relay.sessions.clear() {
            self.cids.remove(&cid);
        }
        self.relay.pending = None;
        self.relay.registered = false;
        self.relay.registering = None;
        self.relay.probe_sent = None;
        if self.relay.up {
            self.relay.up = false;
            self.events.push_back(NodeEvent::RelayDown(self.relay.addr));
        }
        // Move to the next relay in the token, if there is more than one.
        if self.cfg.relays.len() > 1 {
            self.relay_index = (self.relay_index + 1) % self.cfg.relays.len();
            let (addr, public) = self.cfg.relays[self.relay_index];
            self.relay.addr = addr;
            self.relay.public = public;
        }
        self.relay.next_attempt = now;
        if self.guard.is_some() {
            self.home_moved(now);
        }
    }

    /// The caller now carries the relay's datagrams another way (UDP, or a TCP stream to
    /// the relay): whatever was in flight on the old way is taken as lost. Without a relay
    /// session the handshake starts over at the next timer with the shortest backoff (the
    /// attempts made the old way do not count towards failover); a registration or a
    /// keepalive probe in flight is sent again at once. Call `handle_timeout` after it.
    pub fn relay_transport_changed(&mut self, now: Instant) {
        if let Some(g) = self.guard.as_mut() {
            // Two hops: the transport carries the guard session, inside which the home
            // session travels unchanged.
            if g.link.sessions.current.is_none() {
                g.link.pending = None;
                g.link.backoff = RELAY_BACKOFF_MIN;
                g.link.next_attempt = now;
            }
            if g.link.probe_sent.is_some() {
                g.link.probe_next = now;
            }
            return;
        }
        if self.relay.sessions.current.is_none() {
            self.relay.pending = None;
            self.relay.backoff = RELAY_BACKOFF_MIN;
            self.relay.next_attempt = now;
        } else if self.relay.registering.is_some() {
            // The relay timers register again when a session has no registration.
            self.relay.registering = None;
        }
        if self.relay.probe_sent.is_some() {
            self.relay.probe_next = now;
        }
    }

    /// The underlay address of the relay the node talks to now (it changes on failover).
    pub fn relay_addr(&self) -> SocketAddr {
        self.relay_endpoint()
    }

    fn open_record(&self, sealed: &[u8]) -> Option<Record> {
        Record::decode(&self.open_blob(b"veil record", sealed)?)
    }

    /// Opens what [`Node::seal_blob`] sealed with the same `aad`.
    fn open_blob(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < 24 + 16 {
            return None;
        }
        let (nonce, rest) = sealed.split_at(24);
        let mut pt = rest.to_vec();
        let tag_at = pt.len() - 16;
        let tag = chacha20poly1305::Tag::clone_from_slice(&pt[tag_at..]);
        pt.truncate(tag_at);
        self.record_cipher
            .decrypt_in_place_detached(nonce.into(), aad, &mut pt, &tag)
            .ok()?;
        Some(pt)
    }

    fn seal_record(&mut self, r: &Record) -> Vec<u8> {
        let pt = r.encode();
        self.seal_blob(b"veil record", &pt)
    }

    /// Seals `pt` with the network's record key (members can open it, relays cannot).
    fn seal_blob(&mut self, aad: &[u8], pt: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 24];
        self.rng.fill_bytes(&mut nonce);
        let mut pt = pt.to_vec();
        let tag = self
            .record_cipher
            .encrypt_in_place_detached((&nonce).into(), aad, &mut pt)
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&pt);
        out.extend_from_slice(&tag);
        out
    }

    // ------------------------------------------------------------------ timers

    /// Runs every timer that is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.prev_socket_timers(now);
        self.relay_timers(now);
        self.cover_timers(now);
        self.peer_timers(now);
        self.lookup_timers(now);
        self.dns_timers(now);
        self.negative.retain(|_, until| *until > now);
        self.counters.reassembly_timeouts += self.reasm.expire(now);
        self.counters.reassembly_timeouts += self.data_reasm.expire(now);
    }

    fn relay_timers(&mut self, now: Instant) {
        self.guard_timers(now);
        if self.guard.as_ref().is_some_and(|g| !g.extended) {
            // Two-hop: the home relay is out of reach until the guard opened the circuit.
            return;
        }
        let rekey = self.cfg.rekey_after_time;
        let current_age = self
            .relay
            .sessions
            .current
            .as_ref()
            .map(|s| now.saturating_duration_since(s.created));
        if let Some(sent) = self.relay.probe_sent {
            let (timeout, resend) = self.relay_probe_times();
            if now.saturating_duration_since(sent) >= timeout {
                self.relay_lost(now);
            } else if now >= self.relay.probe_next {
                self.relay.probe_next = now + resend;
                self.send_relay_frame(now, Frame::Keepalive, &[1]);
            }
        } else if let Some(due) = self.relay_fast_probe_due() {
            if now >= due && self.send_relay_frame(now, Frame::Keepalive, &[1]) {
                self.relay.probe_sent = Some(now);
                self.relay.probe_fast = true;
                self.relay.probe_next = now + RELAY_FAST_RESEND;
            }
        }
        let needs_handshake = match current_age {
            None => true,
            Some(age) => age >= rekey,
        };
        if needs_handshake {
            let due = match &self.relay.pending {
                None => now >= self.relay.next_attempt,
                Some(p) => {
                    now >= self.relay.next_attempt
                        || now.saturating_duration_since(p.sent) >= RELAY_BACKOFF_MAX
                }
            };
            if due {
                if current_age.is_some() {
                    self.counters.rekeys += 1;
                }
                self.start_relay_handshake(now);
            }
        }
        if let Some((_, at)) = self.relay.registering {
            if now.saturating_duration_since(at) >= REGISTER_TIMEOUT {
                self.relay.registering = None;
                self.register(now);
            }
        } else if self.relay.sessions.current.is_some() && !self.relay.registered {
            self.register(now);
        }
        let keepalive = self.cfg.keepalive;
        if keepalive > Duration::ZERO && self.relay.probe_sent.is_none() {
            if let Some(s) = &self.relay.sessions.current {
                // Silence from the relay (not our own silence) triggers the echo, so a dead
                // relay is noticed under one-way traffic too.
                if now.saturating_duration_since(s.last_rx) >= keepalive
                    && self.send_relay_frame(now, Frame::Keepalive, &[1])
                {
                    self.relay.probe_sent = Some(now);
                    self.relay.probe_fast = false;
                    self.relay.probe_next = now + RELAY_PROBE_RESEND;
                }
            }
        }
        let reject = rekey + REJECT_AFTER_EXTRA;
        if self
            .relay
            .sessions
            .previous
            .as_ref()
            .is_some_and(|s| now.saturating_duration_since(s.created) >= reject)
        {
            if let Some(s) = self.relay.sessions.previous.take() {
                self.cids.remove(&s.recv_cid);
            }
        }
    }

    fn peer_timers(&mut self, now: Instant) {
        let idle = self.cfg.idle_timeout;
        let rekey = self.cfg.rekey_after_time;
        let reject = rekey + REJECT_AFTER_EXTRA;
        let mut to_close = Vec::new();
        let mut to_forget = Vec::new();
        let mut to_handshake = Vec::new();
        let mut to_give_up = Vec::new();
        for (pk, p) in self.peers.iter_mut() {
            let quiet = now.saturating_duration_since(p.last_data);
            if quiet >= PEER_FORGET_AFTER {
                to_forget.push(*pk);
                continue;
            }
            if (p.sessions.current.is_some() || p.pending.is_some()) && quiet >= idle {
                to_close.push(*pk);
                continue;
            }
            for slot in [&mut p.sessions.previous, &mut p.sessions.current] {
                if slot
                    .as_ref()
                    .is_some_and(|s| now.saturating_duration_since(s.created) >= reject)
                {
                    if let Some(s) = slot.take() {
                        self.cids.remove(&s.recv_cid);
                    }
                }
            }
            if let Some(pending) = &p.pending {
                let wait = handshake_wait(pending.attempts);
                if now.saturating_duration_since(pending.sent) >= wait {
                    if pending.attempts >= HANDSHAKE_ATTEMPTS {
                        to_give_up.push(*pk);
                    } else {
                        to_handshake.push(*pk);
                    }
                }
                continue;
            }
            match &p.sessions.current {
                Some(s) => {
                    let age = now.saturating_duration_since(s.created);
                    // The initiator re-keys; the responder steps in if it did not.
                    let due = if s.initiator {
                        rekey
                    } else {
                        rekey + Duration::from_secs(30)
                    };
                    let packets = self
                        .cfg
                        .rekey_after_packets
                        .min(s.cipher().rekey_after_packets());
                    let dead = unanswered(s, last_rx(p), now) && now >= p.dead_check_after;
                    if dead {
                        // Once per PEER_UNANSWERED while it lasts.
                        p.dead_check_after = now + PEER_UNANSWERED;
                    }
                    if age >= due || s.send_counter >= packets || dead {
                        to_handshake.push(*pk);
                    }
                }
                None => {
                    if !p.queue.is_empty() {
                        to_handshake.push(*pk);
                    }
                }
            }
        }
        for pk in to_close {
            self.counters.sessions_idle_closed += 1;
            self.close_peer(pk, true);
        }
        for pk in to_forget {
            self.forget_peer(pk);
        }
        for pk in to_give_up {
            if let Some(p) = self.peers.get_mut(&pk) {
                self.counters.dropped_no_route += p.queue.len() as u64;
                p.queue.clear();
                if let Some(pending) = p.pending.take() {
                    self.pending_msgs.remove(&pending.msg_id);
                }
            }
        }
        self.path_timers(now);
        if self.relay.sessions.current.is_none() {
            // Without the relay, only peers on a direct path can (re)key.
            to_handshake.retain(|pk| self.peers.get(pk).is_some_and(|p| p.direct.is_some()));
        }
        for pk in to_handshake {
            if self
                .peers
                .get(&pk)
                .is_some_and(|p| p.sessions.current.is_some())
            {
                self.counters.rekeys += 1;
            }
            self.start_peer_handshake(now, pk);
        }
    }

    /// When the direct-path machinery of a peer wants to run next, and why. The same
    /// function drives [`Node::path_timers`] and [`Node::poll_timeout`], so a deadline that
    /// is reported is always acted on.
    fn path_deadline(&self, p: &Peer) -> Option<(Instant, PathWork)> {
        p.sessions.current.as_ref()?;
        let active_until = p.last_data + ACTIVE_WINDOW;
        let mut best: Option<(Instant, PathWork)> = None;
        let mut consider = |t: Instant, w: PathWork| {
            if best.as_ref().is_none_or(|(b, _)| t < *b) {
                best = Some((t, w));
            }
        };
        if let Some(punch) = &p.punch {
            consider(punch.next, PathWork::Punch);
        }
        if !p.ours_acked && p.announce_tries < ANNOUNCE_TRIES {
            if let Some(at) = p.announced_at {
                consider(at + ANNOUNCE_RETRY, PathWork::Announce);
            }
        }
        if p.direct.is_some() {
            if let Some(since) = p.consent_since {
                consider(since + CONSENT_TIMEOUT, PathWork::ConsentTimeout);
            }
            let base = p.last_consent.map_or(p.direct_rx, |c| c.max(p.direct_rx));
            let due = base + CONSENT_INTERVAL;
            if due < active_until {
                consider(due, PathWork::Consent);
            }
        } else if p.punch.is_none() && !p.candidates.is_empty() && self.direct_with(&p.public) {
            if let Some(retry) = p.punch_retry {
                if retry < active_until {
                    consider(retry, PathWork::Retry);
                }
            }
        }
        if let Some(t) = p.pmtu.deadline().filter(|t| *t < active_until) {
            consider(t, PathWork::Pmtu);
        }
        match &p.survey {
            Some(s) => consider(s.next, PathWork::Survey),
            None if p.next_survey < active_until && self.survey_wanted(p) => {
                consider(p.next_survey, PathWork::Survey)
            }
            None => {}
        }
        best
    }

    fn path_timers(&mut self, now: Instant) {
        let due: Vec<([u8; 32], PathWork)> = self
            .peers
            .values()
            .filter_map(|p| {
                self.path_deadline(p)
                    .filter(|(t, _)| *t <= now)
                    .map(|(_, w)| (p.public, w))
            })
            .collect();
        for (pk, work) in due {
            match work {
                PathWork::Punch => self.punch_tick(now, pk),
                PathWork::Retry => self.start_punch(now, pk, REASON_PUNCH_FAILED),
                PathWork::Announce => self.announce(now, pk),
                PathWork::ConsentTimeout => self.direct_lost(now, pk),
                PathWork::Pmtu => self.pmtu_tick(now, pk),
                PathWork::Survey => self.survey_tick(now, pk),
                PathWork::Consent => {
                    let Some(p) = self.peers.get_mut(&pk) else {
                        continue;
                    };
                    let Some(a) = p.direct else { continue };
                    p.last_consent = Some(now);
                    p.consent_since.get_or_insert(now);
                    self.challenge(now, pk, a);
                }
            }
        }
    }

    fn lookup_timers(&mut self, now: Instant) {
        let due: Vec<u32> = self
            .lookups
            .iter()
            .filter(|(_, l)| now.saturating_duration_since(l.sent) >= LOOKUP_TIMEOUT)
            .map(|(r, _)| *r)
            .collect();
        for req in due {
            let Some(l) = self.lookups.get_mut(&req) else {
                continue;
            };
            if l.attempts >= LOOKUP_ATTEMPTS {
                if let Some(l) = self.lookups.remove(&req) {
                    self.lookup_by_addr.remove(&l.target);
                    self.counters.lookup_misses += 1;
                    match l.purpose {
                        LookupPurpose::Route(q) => self.counters.dropped_no_route += q.len() as u64,
                        LookupPurpose::Verify(pk) => self.finish_verify(now, pk, l.target, false),
                    }
                }
                continue;
            }
            l.attempts += 1;
            l.sent = now;
            let target = l.target;
            self.send_lookup(now, req, target);
        }
    }

    // ----------------------------------------------------------------- outputs

    /// Whether datagrams wait in the queue of [`Node::poll_transmit`].
    pub fn has_transmits(&self) -> bool {
        !self.transmits.is_empty()
    }

    /// The next queued datagram, copied into `buf`.
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        let (dst, dg, previous_socket) = self.transmits.pop_front()?;
        let len = dg.len().min(buf.len());
        buf[..len].copy_from_slice(&dg[..len]);
        Some(Transmit {
            dst,
            len,
            previous_socket,
        })
    }

    /// The next queued inner packet for the TUN, copied into `buf`; returns its length.
    pub fn poll_tun_packet(&mut self, buf: &mut [u8]) -> Option<usize> {
        let p = self.tun_out.pop_front()?;
        let len = p.len().min(buf.len());
        buf[..len].copy_from_slice(&p[..len]);
        Some(len)
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<NodeEvent> {
        self.events.pop_front()
    }

    /// When [`Node::handle_timeout`] should run next (None: nothing scheduled).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t: Vec<Instant> = Vec::new();
        let rekey = self.cfg.rekey_after_time;
        let reject = rekey + REJECT_AFTER_EXTRA;
        self.guard_deadlines(&mut t);
        t.extend(self.cover_deadline());
        let home_reachable = self.guard.as_ref().is_none_or(|g| g.extended);
        match &self.relay.sessions.current {
            _ if !home_reachable => {}
            None => t.push(self.relay.next_attempt),
            Some(s) => {
                let r = s.created + rekey;
                t.push(if self.relay.pending.is_some() {
                    r.max(self.relay.next_attempt)
                } else {
                    r
                });
                if self.cfg.keepalive > Duration::ZERO && self.relay.probe_sent.is_none() {
                    t.push(s.last_rx + self.cfg.keepalive);
                }
            }
        }
        // (Every home-relay timer waits while a two-hop node has no circuit: the relay
        // timers do nothing then, so a deadline here would be a busy loop.)
        if let Some(p) = self.relay.probe_sent.filter(|_| home_reachable) {
            t.push(p + self.relay_probe_times().0);
            t.push(self.relay.probe_next);
        } else if let Some(due) = self.relay_fast_probe_due().filter(|_| home_reachable) {
            t.push(due);
        }
        if let Some((_, at)) = self.relay.registering.filter(|_| home_reachable) {
            t.push(at + REGISTER_TIMEOUT);
        }
        if let Some(s) = self
            .relay
            .sessions
            .previous
            .as_ref()
            .filter(|_| home_reachable)
        {
            t.push(s.created + reject + Duration::from_millis(1));
        }
        for p in self.peers.values() {
            t.push(p.last_data + PEER_FORGET_AFTER);
            if p.sessions.current.is_some() || p.pending.is_some() {
                t.push(p.last_data + self.cfg.idle_timeout);
            }
            if self.relay.sessions.current.is_none() && p.direct.is_none() {
                // Handshakes wait for the relay; nothing to schedule for them.
            } else if let Some(pending) = &p.pending {
                t.push(pending.sent + handshake_wait(pending.attempts));
            } else if let Some(s) = &p.sessions.current {
                let due = if s.initiator {
                    rekey
                } else {
                    rekey + Duration::from_secs(30)
                };
                t.push(s.created + due);
                if s.last_tx.saturating_duration_since(last_rx(p)) >= UNANSWERED_SPAN {
                    t.push(
                        (last_rx(p) + PEER_UNANSWERED)
                            .max(s.created + PEER_UNANSWERED)
                            .max(p.dead_check_after),
                    );
                }
            }
            if let Some(s) = &p.sessions.previous {
                t.push(s.created + reject + Duration::from_millis(1));
            }
            if let Some((at, _)) = self.path_deadline(p) {
                t.push(at);
            }
        }
        for l in self.lookups.values() {
            t.push(l.sent + LOOKUP_TIMEOUT);
        }
        t.extend(self.prev_socket.as_ref().map(|s| s.until));
        self.dns_deadlines(&mut t);
        if let Some(n) = self.negative.values().min() {
            t.push(*n);
        }
        if let Some(r) = self.reasm.next_expiry() {
            t.push(r);
        }
        t.into_iter().min()
    }

    // ------------------------------------------------------------------ status

    /// Snapshot for `veil status`.
    pub fn status(&self, _now: Instant) -> NodeStatus {
        NodeStatus {
            id: self.identity.id(),
            overlay_ipv4: self.ipv4,
            overlay_ipv6: self.ipv6,
            relay: Some(self.relay.addr.to_string()),
            relay_connected: self.relay.up,
            private: match self.cfg.private {
                Privacy::Off => "off",
                Privacy::Relay => "relay",
                Privacy::TwoHop => "two-hop",
            },
            guard: self
                .guard
                .as_ref()
                .map(|g| (g.link.addr.to_string(), g.extended)),
            previous_key_until: self.previous.as_ref().map(|(_, until)| *until),
            name: self.cfg.name.clone(),
            name_taken: self.dns.name_taken,
            routes: self.active_routes(),
            relay_rtt_ms: self
                .relay
                .rtt
                .filter(|_| self.relay.up)
                .map(|d| d.as_secs_f64() * 1000.0),
            counters: self.counters.list(),
        }
    }

    /// Snapshot for `veil peers`, in a stable order.
    pub fn peers(&self, _now: Instant) -> Vec<PeerStatus> {
        self.peers
            .values()
            .map(|p| {
                let connected = p.sessions.current.is_some();
                let private = self.private_with(&p.public);
                let (path, reason, endpoint) = match (connected, p.direct) {
                    (false, _) => ("none", None, None),
                    (true, Some(a)) => ("direct", None, Some(a.to_string())),
                    (true, None) if private => (
                        "private",
                        Some(match self.cfg.private {
                            Privacy::TwoHop => REASON_PRIVATE_2.to_string(),
                            _ => REASON_PRIVATE.to_string(),
                        }),
                        Some(self.relay_endpoint().to_string()),
                    ),
                    (true, None) => (
                        "relayed",
                        Some(if self.cfg.direct {
                            p.relay_reason.to_string()
                        } else {
                            REASON_DISABLED.to_string()
                        }),
                        Some(self.relay.addr.to_string()),
                    ),
                };
                PeerStatus {
                    id: p.id.clone(),
                    name: p.name.clone(),
                    overlay_ipv4: p.ipv4,
                    overlay_ipv6: p.ipv6,
                    path,
                    relay_reason: reason,
                    endpoint,
                    rtt_ms: p.rtt.map(|d| d.as_secs_f64() * 1000.0),
                    pmtu: connected.then(|| Self::pmtu_status(p).0),
                    pmtu_state: if connected {
                        Self::pmtu_status(p).1
                    } else {
                        "none"
                    },
                    tx_bytes: p.tx_bytes,
                    rx_bytes: p.rx_bytes,
                    last_handshake_unix: p.last_handshake_unix,
                    cipher: p
                        .sessions
                        .current
                        .as_ref()
                        .map_or("none", |s| s.cipher().name()),
                }
            })
            .collect()
    }

    /// The data AEAD of every session this node holds with a relay (its home relay, then
    /// its guard in two-hop mode; current and previous sessions): always ChaCha20-Poly1305.
    pub fn relay_ciphers(&self) -> Vec<Cipher> {
        let links = std::iter::once(&self.relay).chain(self.guard.as_ref().map(|g| &g.link));
        links
            .flat_map(|l| [&l.sessions.current, &l.sessions.previous])
            .flatten()
            .map(Session::cipher)
            .collect()
    }

    /// The overlay IPv4, once the rendezvous confirmed it.
    pub fn overlay_ipv4(&self) -> Option<Ipv4Addr> {
        self.ipv4
    }

    /// The overlay IPv6.
    pub fn overlay_ipv6(&self) -> Ipv6Addr {
        self.ipv6
    }

    /// The counters.
    pub fn counters(&self) -> &NodeCounters {
        &self.counters
    }

    /// How many entries the node's state holds (peers, routes, connection ids, lookups,
    /// cached misses, queued packets, reassembly). It grows with the peers the node talks
    /// to, never with the size of the network; the scale tests check exactly that.
    pub fn state_entries(&self) -> usize {
        let queued: usize = self
            .peers
            .values()
            .map(|p| p.queue.len() + p.hold.len() + p.challenges.len() + p.candidates.len())
            .sum();
        self.peers.len()
            + self.route4.len()
            + self.route6.len()
            + self.by_handle.len()
            + self.cids.len()
            + self.pending_msgs.len()
            + self.lookups.len()
            + self.lookup_by_addr.len()
            + self.negative.len()
            + self.transmits.len()
            + self.tun_out.len()
            + self.events.len()
            + self.reasm.len()
            + queued
    }

    /// Offers a CA-signed policy (binary form): from the I/O layer (a file the operator
    /// pushed, or the copy persisted after a [`NodeEvent::Policy`]) or from the relay. A newer
    /// one is adopted: sessions with revoked peers end at once, the relay gets it if it came
    /// from elsewhere, and [`NodeEvent::Policy`] asks the caller to persist it. Returns
    /// whether it was adopted (false: not newer).
    pub fn set_policy(&mut self, now: Instant, bytes: &[u8]) -> Result<bool, CertError> {
        let Some(ca) = self.ca else {
            return Err(CertError::NoCa);
        };
        let p = Policy::from_bytes(bytes, &ca).ok_or(CertError::Signature)?;
        if self
            .policy
            .as_ref()
            .is_some_and(|cur| cur.serial >= p.serial)
        {
            return Ok(false);
        }
        let revoked: Vec<[u8; 32]> = self
            .peers
            .keys()
            .filter(|pk| p.is_revoked(pk))
            .copied()
            .collect();
        for pk in revoked {
            self.counters.peers_revoked += 1;
            self.forget_peer(pk);
        }
        self.events.push_back(NodeEvent::Policy {
            serial: p.serial,
            bytes: bytes.to_vec(),
        });
        self.policy = Some(p);
        // The relay passes it on to everyone (it ignores what it has already).
        self.send_relay_frame(now, Frame::Policy, bytes);
        Ok(true)
    }

    /// The node is going away: every peer with a session and the relay get a Close (peers
    /// tear the session down at once instead of after their idle timeout; the relay frees
    /// the registration instead of waiting for the lease). Drain `poll_transmit` afterwards.
    pub fn shutdown(&mut self, now: Instant) {
        let up: Vec<[u8; 32]> = self
            .peers
            .values()
            .filter(|p| p.sessions.current.is_some())
            .map(|p| p.public)
            .collect();
        for pk in up {
            self.send_peer_frame(now, pk, Frame::Close, &[], None);
            self.close_peer(pk, true);
        }
        self.send_relay_frame(now, Frame::Close, &[]);
    }

    /// The serial of the policy in force (0: none).
    pub fn policy_serial(&self) -> u64 {
        self.policy.as_ref().map_or(0, |p| p.serial)
    }

    /// This node's public key.
    pub fn public_key(&self) -> [u8; 32] {
        *self.identity.public()
    }
}

/// Whether the policy lets our tags and the peer's talk (no policy: yes).
fn policy_allows(policy: Option<&Policy>, ours: &[String], theirs: &[String]) -> bool {
    policy.is_none_or(|p| p.allows(ours, theirs))
}

/// Checks a peer's certificate where the network has a CA: Ok((pinned IPv4, tags)) if it is
/// valid for `pk` now and the policy does not revoke `pk`, Err otherwise. Without a CA every
/// peer passes.
fn verify_peer_cert(
    ca: Option<[u8; 32]>,
    policy: Option<&Policy>,
    pk: &[u8; 32],
    cert: &[u8],
    unix_secs: u64,
) -> Result<(Option<Ipv4Addr>, Vec<String>), ()> {
    let Some(ca) = ca else {
        return Ok((None, Vec::new()));
    };
    if policy.is_some_and(|p| p.is_revoked(pk)) {
        return Err(());
    }
    let cert = Certificate::from_bytes(cert).ok_or(())?;
    cert.verify(&ca, pk, unix_secs).map_err(|_| ())?;
    Ok((cert.ipv4, cert.tags))
}

/// What a peer's path machinery has to do.
#[derive(Clone, Copy, Debug)]
enum PathWork {
    Pmtu,
    Announce,
    Punch,
    Retry,
    Consent,
    ConsentTimeout,
    Survey,
}

/// A registration record: who holds which addresses. Sealed under the network's record
/// key, which relays do not have. The overlay IPv6 is not in it: it follows from the key.
struct Record {
    public: [u8; 32],
    ipv4: Option<Ipv4Addr>,
    /// The node's DNS name (lowercase), when it has one.
    name: Option<String>,
}

impl Record {
    fn encode(&self) -> Vec<u8> {
        let mut v = vec![1u8];
        v.extend_from_slice(&self.public);
        v.extend_from_slice(&self.ipv4.map_or([0; 4], |a| a.octets()));
        // Older nodes read up to here and ignore the rest.
        if let Some(n) = self
            .name
            .as_ref()
            .filter(|n| n.len() <= crate::dns::MAX_LABEL)
        {
            v.push(n.len() as u8);
            v.extend_from_slice(n.as_bytes());
        }
        v
    }
    fn decode(b: &[u8]) -> Option<Record> {
        let mut c = Cursor(b);
        if c.u8()? != 1 {
            return None;
        }
        let public = c.array::<32>()?;
        let v4 = c.array::<4>()?;
        let name = c
            .u8()
            .and_then(|n| c.take(usize::from(n)))
            .and_then(|b| std::str::from_utf8(b).ok())
            .map(str::to_owned);
        Some(Record {
            public,
            ipv4: (v4 != [0; 4]).then(|| Ipv4Addr::from(v4)),
            name,
        })
    }
}

enum SourceCheck {
    Ok,
    Hold,
    Spoofed,
}

/// Only addresses a peer provably holds may appear as the source of its packets.
fn source_check(pkt: &[u8], peer: &Peer) -> SourceCheck {
    match ip_source(pkt) {
        Some(IpAddr::V6(a)) if a == peer.ipv6 => SourceCheck::Ok,
        Some(IpAddr::V4(a)) if Some(a) == peer.ipv4 => SourceCheck::Ok,
        Some(IpAddr::V4(a)) if Some(a) == peer.ipv4_claim => SourceCheck::Hold,
        _ => SourceCheck::Spoofed,
    }
}

/// How long a peer handshake attempt waits for its answer: 1 s for the first three
/// attempts, then 2 s, then 4 s (a lost fragment is common on lossy paths; the relay hop
/// doubles the exposure, so retries come quickly before they back off).
fn handshake_wait(attempts: u32) -> Duration {
    match attempts {
        0..=3 => Duration::from_secs(1),
        4..=5 => Duration::from_secs(2),
        _ => Duration::from_secs(4),
    }
}

/// We kept sending on `s` for [`UNANSWERED_SPAN`] after the last packet that came back from
/// the peer (`rx`, on any of its sessions: after a re-key it may answer on the previous one
/// for a while), and nothing has come back for [`PEER_UNANSWERED`].
fn unanswered<const W: usize, A: crate::crypto::SessionCrypto>(
    s: &Session<W, A>,
    rx: Instant,
    now: Instant,
) -> bool {
    s.last_tx.saturating_duration_since(rx) >= UNANSWERED_SPAN
        && now.saturating_duration_since(rx) >= PEER_UNANSWERED
        && now.saturating_duration_since(s.created) >= PEER_UNANSWERED
}

/// The last time anything came from the peer, on any of its sessions.
fn last_rx(p: &Peer) -> Instant {
    [&p.sessions.current, &p.sessions.previous]
        .into_iter()
        .flatten()
        .map(|s| s.last_rx)
        .max()
        .unwrap_or(p.direct_rx)
}

fn read_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

fn in_pool(a: Ipv4Addr, pool: Ipv4Addr, len: u8) -> bool {
    let len = u32::from(len.min(32));
    if len == 0 {
        return true;
    }
    let mask = u32::MAX << (32 - len);
    u32::from(a) & mask == u32::from(pool) & mask
}

/// Destination address of an IPv4 or IPv6 packet.
pub fn ip_destination(p: &[u8]) -> Option<IpAddr> {
    match p.first()? >> 4 {
        4 if p.len() >= 20 => Some(IpAddr::V4(Ipv4Addr::new(p[16], p[17], p[18], p[19]))),
        6 if p.len() >= 40 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&p[24..40]);
            Some(IpAddr::V6(Ipv6Addr::from(a)))
        }
        _ => None,
    }
}

/// Source address of an IPv4 or IPv6 packet.
pub fn ip_source(p: &[u8]) -> Option<IpAddr> {
    match p.first()? >> 4 {
        4 if p.len() >= 20 => Some(IpAddr::V4(Ipv4Addr::new(p[12], p[13], p[14], p[15]))),
        6 if p.len() >= 40 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&p[8..24]);
            Some(IpAddr::V6(Ipv6Addr::from(a)))
        }
        _ => None,
    }
}
