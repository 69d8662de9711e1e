//! Types shared by the node and relay state machines and their callers: configuration,
//! what to transmit, events, status snapshots and counters.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// Largest datagram the engine ever writes; callers' buffers must be at least this big.
pub const MAX_DATAGRAM: usize = 65_535;
/// Default MTU of the TUN device: the largest inner packet a direct path over a 1500-byte
/// underlay carries whole on IPv4 (1437) and IPv6 (1417), rounded down. Paths that carry
/// less are discovered per peer; their senders get a Packet Too Big (and TCP a clamped MSS),
/// and overlay fragmentation carries what does not fit meanwhile. Never below 1280 (IPv6).
pub const DEFAULT_TUN_MTU: u16 = 1400;

/// A datagram to send: the bytes are in the caller's buffer, `buf[..len]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub dst: SocketAddr,
    /// How many bytes of the buffer to send.
    pub len: usize,
    /// Send it from the socket before the last rotation, which the I/O layer keeps open
    /// for [`crate::node::PREVIOUS_SOCKET_GRACE`] (`Node::socket_rotated`); from the current
    /// socket when that one is closed already. Always false from a relay.
    pub previous_socket: bool,
}

/// Settings of a node's protocol engine. Every field is documented in `docs/config.md`.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The relays from the join token, resolved: address and static public key.
    pub relays: Vec<(SocketAddr, [u8; 32])>,
    /// The IPv4 pool overlay addresses are claimed from.
    pub ipv4_pool: (Ipv4Addr, u8),
    /// The address this node held before (from its state directory); tried first.
    pub ipv4_hint: Option<Ipv4Addr>,
    /// Interval of keepalives to the relay while nothing else is sent (0 = off).
    pub keepalive: Duration,
    /// A peer session with no traffic for this long is closed.
    pub idle_timeout: Duration,
    /// A session is re-keyed after this age.
    pub rekey_after_time: Duration,
    /// A session is re-keyed after this many packets sent.
    pub rekey_after_packets: u64,
    /// MTU of the TUN device (inner packets up to this size are carried).
    pub tun_mtu: u16,
    /// Datagram lengths are padded up to a multiple of this (0 or 1 = no padding).
    pub pad_bucket: usize,
    /// Look for direct paths to peers (candidates, hole punching); off = always relay.
    pub direct: bool,
    /// Private mode: which relays carry this node's traffic and what its peers learn.
    pub private: Privacy,
    /// Cover traffic: datagrams per second kept flowing between the node and its relay
    /// whether or not it has anything to send (0 = off). See `node/cover.rs`.
    pub cover_pps: u32,
    /// Peers (by overlay address) this node talks to in private mode even when `private`
    /// is off: relays only, no candidates announced to them, nothing accepted from them
    /// straight from an underlay address.
    pub private_peers: Vec<std::net::IpAddr>,
    /// This node's certificate, required in networks with a CA.
    pub cert: Option<crate::cert::Certificate>,
    /// This node's DNS name: a lowercase label (`dns::valid_name`); members reach it as
    /// `NAME.<dns_domain>`. First come, first served: a name another live member holds is
    /// not registered (`NodeStatus::name_taken`).
    pub name: Option<String>,
    /// The network's DNS domain (default `veil`).
    pub dns_domain: String,
    /// Answer DNS questions sent into the TUN to the pool's DNS address
    /// ([`crate::node::dns_address`]; for platforms where the node cannot listen on port 53
    /// of its address, i.e. phones).
    pub dns_intercept: bool,
    /// Subnets this node routes for the network (it forwards what peers send there).
    pub advertise_routes: Vec<crate::route::Prefix>,
    /// This node is an exit: it forwards anything outside the overlay.
    pub advertise_exit: bool,
    /// Send everything outside the overlay through this exit (its DNS name or overlay IPv4).
    pub exit_node: Option<String>,
    /// Use the subnets other nodes advertise.
    pub accept_routes: bool,
    /// Offer AES-256-GCM to peers, and accept it when they offer it: a session is AES-256-GCM
    /// when both ends set this, ChaCha20-Poly1305 otherwise. Default:
    /// [`crate::crypto::hardware_aes`] (the CPU has AES instructions, where AES-GCM is the
    /// faster of the two). Sessions with relays are always ChaCha20-Poly1305.
    pub aes: bool,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            relays: Vec::new(),
            ipv4_pool: (Ipv4Addr::new(100, 64, 0, 0), 10),
            ipv4_hint: None,
            keepalive: Duration::from_secs(25),
            idle_timeout: Duration::from_secs(60),
            rekey_after_time: Duration::from_secs(120),
            rekey_after_packets: 1 << 60,
            tun_mtu: DEFAULT_TUN_MTU,
            pad_bucket: 64,
            direct: true,
            private: Privacy::Off,
            private_peers: Vec::new(),
            cover_pps: 0,
            cert: None,
            name: None,
            dns_domain: "veil".into(),
            dns_intercept: false,
            advertise_routes: Vec::new(),
            advertise_exit: false,
            exit_node: None,
            accept_routes: true,
            aes: crate::crypto::hardware_aes(),
        }
    }
}

/// How private a node's paths are (`veil up --private[=2]`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Privacy {
    /// Direct paths where they work; the relay otherwise.
    #[default]
    Off,
    /// Relays only: no peer learns this node's addresses (no candidates are announced, no
    /// direct path is accepted), and an observer on its link sees only its relay. That
    /// relay still sees both ends of every conversation.
    Relay,
    /// Two relays: the node reaches its home relay (where it registers, under a key made
    /// for the purpose) only through a circuit across a guard relay, with the home session
    /// inside the guard session. The guard knows the node but not whom it talks to; the
    /// home relay knows the peers but not the node.
    TwoHop,
}

/// Settings of a relay's engine.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// A node that sends nothing for this long is forgotten (its names expire).
    pub client_timeout: Duration,
    /// A session is re-keyed (by the node) after this age; the relay refuses older ones.
    pub reject_after_time: Duration,
    /// Datagram lengths are padded up to a multiple of this.
    pub pad_bucket: usize,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            client_timeout: Duration::from_secs(90),
            reject_after_time: Duration::from_secs(180),
            pad_bucket: 64,
        }
    }
}

/// Something the caller may want to act on or log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeEvent {
    /// The routes in use changed (others' subnets, the exit's default routes): the I/O layer
    /// points the kernel's routes for them at the TUN.
    RoutesChanged {
        /// Every prefix in use now.
        routes: Vec<crate::route::Prefix>,
    },
    /// Another member holds this node's DNS name: it runs without one.
    NameTaken {
        /// The name.
        name: String,
    },
    /// The rendezvous confirmed our IPv4 claim (persist it in the state directory).
    Ipv4Assigned(Ipv4Addr),
    /// A session with the relay is up and the node is registered.
    RelayUp(SocketAddr),
    /// The relay stopped answering; the node keeps retrying.
    RelayDown(SocketAddr),
    /// A session with a peer was established.
    PeerUp { id: String },
    /// A peer session was closed (idle, expired or failed).
    PeerDown { id: String },
    /// A newer CA-signed policy was adopted: persist `bytes` and hand them back with
    /// [`crate::Node::set_policy`] after a restart.
    Policy {
        /// Its serial.
        serial: u64,
        /// Its binary form.
        bytes: Vec<u8>,
    },
    /// A peer's data path changed: a validated direct endpoint, or back to the relay.
    PeerPath {
        /// The peer's short id.
        id: String,
        /// The direct endpoint, or None for the relay.
        direct: Option<SocketAddr>,
    },
}

/// Snapshot for `veil status`.
#[derive(Clone, Debug)]
pub struct NodeStatus {
    /// Short node id.
    pub id: String,
    /// Claimed overlay IPv4 (None until the rendezvous confirmed it).
    pub overlay_ipv4: Option<Ipv4Addr>,
    /// Overlay IPv6 (derived from the network and the node key).
    pub overlay_ipv6: Ipv6Addr,
    /// The relay the node is homed on.
    pub relay: Option<String>,
    /// Whether the session with the relay is up.
    pub relay_connected: bool,
    /// Private mode: `off`, `relay` (one hop) or `two-hop`.
    pub private: &'static str,
    /// Private two-hop mode: the guard relay the home relay is reached through, and
    /// whether the circuit through it is open.
    pub guard: Option<(String, bool)>,
    /// After `veil network rotate`: until when (Unix seconds) the previous secret is still
    /// used for new handshakes.
    pub previous_key_until: Option<u64>,
    /// Round trip to the relay (its last registration), in milliseconds.
    pub relay_rtt_ms: Option<f64>,
    /// The DNS name configured (a label of the network's domain).
    pub name: Option<String>,
    /// Another member holds that name, so this node is not reachable by it.
    pub name_taken: bool,
    /// Routes in use (`PREFIX via ID`): others' subnets and the chosen exit.
    pub routes: Vec<String>,
    /// Named counters.
    pub counters: Vec<(&'static str, u64)>,
}

/// Snapshot of one peer for `veil peers`.
#[derive(Clone, Debug)]
pub struct PeerStatus {
    /// Short id of the peer.
    pub id: String,
    /// The peer's DNS name (without the domain), once the rendezvous confirmed it is the
    /// peer's.
    pub name: Option<String>,
    /// Its overlay IPv4, once verified through the rendezvous.
    pub overlay_ipv4: Option<Ipv4Addr>,
    /// Its overlay IPv6.
    pub overlay_ipv6: Ipv6Addr,
    /// `direct`, `relayed`, `private` or `none`.
    pub path: &'static str,
    /// Why the path is relayed, if it is.
    pub relay_reason: Option<String>,
    /// The underlay endpoint packets go to (the relay's, when relayed).
    pub endpoint: Option<String>,
    /// Round trip of the path the peer's data takes: from the last handshake, then from
    /// each answer of the direct endpoint (validation, consent checks, path surveys).
    pub rtt_ms: Option<f64>,
    /// Path MTU (largest inner packet carried without overlay fragmentation).
    pub pmtu: Option<u32>,
    /// State of path MTU discovery.
    pub pmtu_state: &'static str,
    /// Inner bytes sent to the peer.
    pub tx_bytes: u64,
    /// Inner bytes received from the peer.
    pub rx_bytes: u64,
    /// Unix time of the last completed handshake.
    pub last_handshake_unix: Option<u64>,
    /// The data AEAD of the current session: `aes-256-gcm` or `chacha20-poly1305` (`none`
    /// without a session).
    pub cipher: &'static str,
}

/// Snapshot for `veil relay status`.
#[derive(Clone, Debug)]
pub struct RelayStatus {
    /// Short id of the relay key.
    pub id: String,
    /// Nodes with a live session.
    pub clients: usize,
    /// Blinded names registered.
    pub names: usize,
    /// Links with other relays that are up.
    pub links: usize,
    /// Circuits this relay carries as a guard (one per private two-hop client of it).
    pub circuits: usize,
    /// Clients that reach this relay through a circuit (it is their home relay and knows
    /// no address of theirs).
    pub circuit_clients: usize,
    /// Named counters.
    pub counters: Vec<(&'static str, u64)>,
}

macro_rules! counters {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $f:ident),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Debug, Default)]
        pub struct $name { $($(#[$fm])* pub $f: u64,)* }
        impl $name {
            /// Every counter with its name, in declaration order.
            pub fn list(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($f), self.$f),)*]
            }
        }
    };
}

counters!(
    /// What a node counted. Drops are counted, never answered.
    NodeCounters {
        /// Datagrams received on the underlay.
        rx_datagrams,
        /// Datagrams sent on the underlay.
        tx_datagrams,
        /// Inner packets delivered to the TUN.
        rx_packets,
        /// Inner packets sent into the overlay.
        tx_packets,
        /// Datagrams that matched no session and failed the handshake MAC.
        dropped_unauthenticated,
        /// Transport datagrams whose AEAD failed.
        dropped_bad_aead,
        /// Transport datagrams replayed or too old.
        dropped_replay,
        /// Handshakes whose timestamp was not newer than the last one.
        dropped_handshake_replay,
        /// Well-authenticated datagrams that did not parse.
        dropped_malformed,
        /// Inner packets to an address nobody holds.
        dropped_no_route,
        /// Inner packets whose source address the peer does not own.
        dropped_spoofed,
        /// Inner packets dropped because a queue was full.
        dropped_queue_full,
        /// Inner packets larger than the TUN MTU.
        dropped_too_big,
        /// Handshakes started.
        handshakes_initiated,
        /// Handshakes completed as initiator.
        handshakes_completed,
        /// Handshakes answered as responder.
        handshakes_answered,
        /// Lookups sent to the rendezvous.
        lookups,
        /// Lookups that found nobody.
        lookup_misses,
        /// Sessions closed for idleness.
        sessions_idle_closed,
        /// Session re-keys.
        rekeys,
        /// Handshake fragments dropped unassembled.
        reassembly_timeouts,
        /// Handshakes refused: the peer's certificate was missing, expired or not the CA's.
        dropped_uncertified,
        /// Inner packets dropped because the policy does not let the two nodes' tags talk.
        dropped_policy,
        /// Peers forgotten because a policy revoked their key.
        peers_revoked,
        /// Registrations refused because a name was taken.
        registration_conflicts,
        /// Candidate lists sent to peers.
        candidates_sent,
        /// Path challenges sent (hole punching, consent, roaming checks).
        path_challenges_sent,
        /// Path challenges answered.
        path_challenges_answered,
        /// Path responses (authenticated) to no outstanding challenge: another candidate of
        /// the same punch answered first, the challenge was replaced by newer ones, or it
        /// was sent to the previous socket and answered from the new one.
        path_responses_late,
        /// Another validated address of a peer not taken: this node (the lower key) keeps
        /// the direct path the peer still sends on.
        path_switches_declined,
        /// Surveys of a peer's candidate paths: the round trip of each measured while data
        /// flows on a direct path (by the node with the lower key, every 30 s).
        path_surveys,
        /// Direct paths left for a faster path of the same peer that two surveys in a row
        /// found faster.
        path_switches_faster,
        /// Hole-punching attempts started.
        punch_attempts,
        /// Hole-punching attempts that found no path.
        punch_failures,
        /// Direct paths validated.
        direct_paths,
        /// Direct paths abandoned for the relay (no answer to consent checks).
        direct_paths_lost,
        /// Changes of our own addresses (local or as the relay sees us; a socket rotation
        /// counts).
        network_changes,
        /// Direct paths validated from the new socket after a socket rotation while the
        /// previous socket still carried them (no detour through the relay).
        rotation_paths_moved,
        /// Direct paths not validated from the new socket within the previous socket's
        /// grace: back to the relay, searched for again.
        rotation_paths_lost,
        /// Handshakes not answered: too many from that path (a flood from a member).
        dropped_rate_limited,
        /// Path MTU probes sent.
        pmtu_probes_sent,
        /// Path MTU probes the peer acknowledged.
        pmtu_probes_acked,
        /// Paths whose MTU shrank under a confirmed size (probes lost: searched again).
        pmtu_black_holes,
        /// ICMP Fragmentation Needed / Packet Too Big written into the TUN.
        too_big_sent,
        /// Inner packets sent in overlay fragments (larger than the path carries whole).
        fragmented_packets,
        /// Inner packets reassembled from overlay fragments.
        reassembled_packets,
        /// TCP SYNs whose MSS was lowered to the path.
        mss_clamped,
        /// Rotated join tokens adopted.
        token_rotations,
        /// Handshake messages opened with the previous secret (during a rotation overlap).
        handshakes_previous_key,
        /// Datagrams dropped unread because private mode refuses their path (anything but
        /// the relay at this socket; a private peer's datagrams on a direct path).
        dropped_private,
        /// Private two-hop mode: the guard relay stopped answering.
        guard_losses,
        /// Cover traffic: dummy datagrams sent to the relay.
        cover_sent,
        /// Private two-hop mode: the guard refused the circuit (it could not reach the
        /// home relay, or has no peering key).
        circuits_refused,
        /// Inner packets sent on a direct path.
        tx_packets_direct,
        /// Their bytes (inner packets).
        tx_bytes_direct,
        /// Inner packets sent through a relay (private mode included).
        tx_packets_relayed,
        /// Their bytes (inner packets).
        tx_bytes_relayed,
        /// Inner packets delivered from datagrams that came on a direct path.
        rx_packets_direct,
        /// Their bytes.
        rx_bytes_direct,
        /// Inner packets delivered from datagrams that came through a relay.
        rx_packets_relayed,
        /// Their bytes.
        rx_bytes_relayed,
        /// DNS questions received (on the overlay address, or inside the TUN).
        dns_queries,
        /// DNS answers sent.
        dns_answers,
        /// Registrations that found this node's DNS name taken by another member.
        name_conflicts,
        /// Inner packets from peers for an address this node neither holds nor routes.
        dropped_destination,
    }
);

counters!(
    /// What a relay counted.
    RelayCounters {
        /// Datagrams received.
        rx_datagrams,
        /// Datagrams sent.
        tx_datagrams,
        /// Datagrams forwarded between nodes.
        forwarded,
        /// Forwards to a node that is not connected.
        forward_unreachable,
        /// Datagrams that matched no session and failed the handshake MAC.
        dropped_unauthenticated,
        /// Handshakes refused: no valid certificate from the network's CA.
        dropped_uncertified,
        /// Transport datagrams whose AEAD failed.
        dropped_bad_aead,
        /// Replays.
        dropped_replay,
        /// Handshake replays.
        dropped_handshake_replay,
        /// Authenticated but unparsable.
        dropped_malformed,
        /// Handshakes answered.
        handshakes_answered,
        /// Registrations accepted.
        registrations,
        /// Newer policies adopted.
        policies,
        /// Policies passed on to other relays of the shared rendezvous (one per relay for
        /// each policy adopted, and the one held to a relay whose link comes up).
        policies_relayed,
        /// Clients dropped because a policy revoked their key.
        clients_revoked,
        /// Registrations refused because a name was taken.
        registration_conflicts,
        /// Lookups answered.
        lookups,
        /// Clients expired.
        clients_expired,
        /// Handshake fragments dropped unassembled.
        reassembly_timeouts,
        /// Handshakes not answered: too many from that address (a flood from a member).
        dropped_rate_limited,
        /// Rotated relay tokens adopted.
        token_rotations,
        /// Handshake messages opened with the previous relay base (rotation overlap).
        handshakes_previous_key,
        /// Links with other relays established (either side).
        links_established,
        /// Link handshakes refused: no peering key here, or a wrong proof.
        dropped_link_unauthorized,
        /// Circuits opened for clients (as their guard).
        circuits_opened,
        /// Circuits refused (no peering key, too many links, unreachable relay).
        circuits_refused,
        /// Route announcements stored (new or changed) and passed on.
        announcements,
        /// Route announcements refused: too many clients route already.
        announcements_refused,
        /// Datagrams carried on circuits, both ways.
        circuit_datagrams,
        /// Circuit datagrams dropped: no such circuit, or its link is down.
        dropped_circuit,
        /// Cover traffic: dummies sent back to nodes that asked for one.
        cover_echoes,
        /// Shared rendezvous: registrations claimed in the shared store.
        cluster_claims,
        /// Shared rendezvous: registrations refused because another relay's node holds a name.
        cluster_conflicts,
        /// Shared rendezvous: the store could not be reached; served from this relay alone.
        cluster_unavailable,
        /// Shared rendezvous: lookups this relay could not answer, asked of the store…
        cluster_lookups,
        /// …and found there (a node homed on another relay).
        cluster_hits,
        /// Datagrams carried to or from another relay's nodes on links.
        transferred,
        /// Transfers dropped: the link is down, or the destination left.
        dropped_transfer,
        /// Links to relays of the shared rendezvous declared dead (silent for 3 s).
        links_lost,
        /// Frames sent to other relays over the store's bus (no link up).
        bus_frames_sent,
        /// Frames received from other relays over the store's bus.
        bus_frames_received,
        /// Bus frames dropped: not sealed with the network's relay key, or from a relay
        /// outside the directory.
        dropped_bus,
    }
);

/// Why a rotated token was not adopted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdoptError {
    /// The token is of another network.
    #[error("this token is for another network (its names and overlay prefix differ): adopt only the output of `veil network rotate` for this network")]
    OtherNetwork,
    /// The CA differs.
    #[error("this token names another certificate authority than the running one: a CA cannot change by rotation; restart with the new token")]
    OtherCa,
    /// A relay token of another relay.
    #[error("this relay token holds another relay key: give each relay its own relay-N.token")]
    OtherRelay,
}
