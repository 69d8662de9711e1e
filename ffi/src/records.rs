//! The records calls return: the interface to build, and the same fields as `veil status
//! --json` and `veil peers --json` (`docs/cli.md`).

use veil_io::{NodeStatusReport, PeerReport};

/// One route: an address and a prefix length.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct IpRoute {
    /// Network address (IPv4 or IPv6).
    pub address: String,
    /// Prefix length.
    pub prefix_len: u8,
}

/// What the platform builds its interface with (`VpnService.Builder`,
/// `NEPacketTunnelNetworkSettings`).
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct TunnelSettings {
    /// This device's overlay IPv4.
    pub ipv4_address: String,
    /// Its prefix length (the network's pool).
    pub ipv4_prefix_len: u8,
    /// This device's overlay IPv6.
    pub ipv6_address: String,
    /// Its prefix length (the network's /48).
    pub ipv6_prefix_len: u8,
    /// Routes into the tunnel: the overlay's IPv4 pool and IPv6 /48 first, then the
    /// subnets other nodes route and, with an exit node, `0.0.0.0/0` and `::/0` (a
    /// `SettingsChanged` event brings them as they come and go).
    pub routes: Vec<IpRoute>,
    /// The interface MTU (at least 1280).
    pub mtu: u16,
    /// DNS servers for the interface (empty: keep the system's).
    pub dns_servers: Vec<String>,
    /// The overlay's DNS server: questions for `*.<overlay_dns_domain>` sent here (inside the
    /// tunnel) are answered by the node. Route only that domain to it (iOS: `matchDomains`):
    /// it refuses every other name.
    pub overlay_dns_server: Option<String>,
    /// The overlay's DNS domain (`veil` unless configured).
    pub overlay_dns_domain: String,
    /// Addresses that must never be routed into the tunnel (the relays), for platforms
    /// whose routes could cover them.
    pub excluded_routes: Vec<IpRoute>,
}

/// A named counter.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct Counter {
    /// Its name, as in `veil status --json`.
    pub name: String,
    /// Its value.
    pub value: u64,
}

/// `veil status --json`.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct NodeStatus {
    /// Short node id.
    pub id: String,
    /// Overlay IPv4, once the rendezvous confirmed it.
    pub overlay_ipv4: Option<String>,
    /// Overlay IPv6.
    pub overlay_ipv6: String,
    /// The relay the node is homed on.
    pub relay: Option<String>,
    /// Whether the session with that relay is up.
    pub relay_connected: bool,
    /// `off`, `relay` or `two-hop`.
    pub private: String,
    /// Two-hop: the guard relay.
    pub guard: Option<String>,
    /// Two-hop: whether the guard's circuit is open.
    pub guard_circuit: bool,
    /// During a secret rotation: Unix time until which the previous secret is used.
    pub previous_key_until: Option<u64>,
    /// Round trip to the relay, in milliseconds (None while it is down).
    pub relay_rtt_ms: Option<f64>,
    /// The DNS name configured.
    pub name: Option<String>,
    /// Another member holds that name: this device runs without one.
    pub name_taken: bool,
    /// Routes in use through other nodes (`PREFIX via ID`).
    pub routes: Vec<String>,
    /// `udp`, or `tcp` where UDP is blocked.
    pub relay_transport: Option<String>,
    /// Seconds since the node started.
    pub uptime_s: u64,
    /// The TUN device (`fd N` for a platform's descriptor).
    pub tun: Option<String>,
    /// Local UDP port.
    pub local_port: Option<u16>,
    /// Engine counters, then `io_*` counters.
    pub counters: Vec<Counter>,
}

/// One element of `veil peers --json`.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct PeerInfo {
    /// Short id of the peer.
    pub id: String,
    /// The peer's DNS name (without the domain), once the rendezvous confirmed it.
    pub name: Option<String>,
    /// Its overlay IPv4, once verified.
    pub overlay_ipv4: Option<String>,
    /// Its overlay IPv6.
    pub overlay_ipv6: String,
    /// `direct`, `relayed`, `private` or `none`.
    pub path: String,
    /// Why the path is relayed.
    pub relay_reason: Option<String>,
    /// Underlay endpoint packets go to.
    pub endpoint: Option<String>,
    /// Round trip of the path the peer's data takes, in milliseconds (the last handshake,
    /// then each answer of the direct endpoint).
    pub rtt_ms: Option<f64>,
    /// Path MTU.
    pub pmtu: Option<u32>,
    /// State of path MTU discovery.
    pub pmtu_state: String,
    /// Inner bytes sent.
    pub tx_bytes: u64,
    /// Inner bytes received.
    pub rx_bytes: u64,
    /// Unix time of the last completed handshake.
    pub last_handshake_unix: Option<u64>,
    /// `aes-256-gcm`, `chacha20-poly1305` or `none`.
    pub cipher: String,
}

impl From<NodeStatusReport> for NodeStatus {
    fn from(r: NodeStatusReport) -> Self {
        NodeStatus {
            id: r.id,
            overlay_ipv4: r.overlay_ipv4.map(|a| a.to_string()),
            overlay_ipv6: r.overlay_ipv6.to_string(),
            relay: r.relay,
            relay_connected: r.relay_connected,
            private: r.private,
            guard: r.guard,
            guard_circuit: r.guard_circuit,
            previous_key_until: r.previous_key_until,
            relay_rtt_ms: r.relay_rtt_ms,
            name: r.name,
            name_taken: r.name_taken,
            routes: r.routes,
            relay_transport: r.relay_transport,
            uptime_s: r.uptime_s,
            tun: r.tun,
            local_port: r.local_port,
            counters: r
                .counters
                .0
                .into_iter()
                .map(|(name, value)| Counter { name, value })
                .collect(),
        }
    }
}

impl From<PeerReport> for PeerInfo {
    fn from(p: PeerReport) -> Self {
        PeerInfo {
            id: p.id,
            name: p.name,
            overlay_ipv4: p.overlay_ipv4.map(|a| a.to_string()),
            overlay_ipv6: p.overlay_ipv6.to_string(),
            path: p.path,
            relay_reason: p.relay_reason,
            endpoint: p.endpoint,
            rtt_ms: p.rtt_ms,
            pmtu: p.pmtu,
            pmtu_state: p.pmtu_state,
            tx_bytes: p.tx_bytes,
            rx_bytes: p.rx_bytes,
            last_handshake_unix: p.last_handshake_unix,
            cipher: p.cipher,
        }
    }
}
