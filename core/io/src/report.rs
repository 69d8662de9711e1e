//! The JSON shapes of `status`, `peers` and `relay status`: what the control socket returns
//! and what the CLI and the desktop app read. This is a public contract (`docs/cli.md`):
//! later versions add fields, never rename or retype one. Readers accept missing fields.
//! A node's shapes live in `veil-ipc` (the desktop app reads them without this crate); the
//! relay's here.

use serde::{Deserialize, Serialize};
pub use veil_ipc::report::{Counters, NodeStatusReport, PeerReport};

/// A peer of the engine as the control socket reports it.
pub fn peer_report(p: &veil_proto::PeerStatus) -> PeerReport {
    PeerReport {
        id: p.id.clone(),
        name: p.name.clone(),
        overlay_ipv4: p.overlay_ipv4,
        overlay_ipv6: p.overlay_ipv6,
        path: p.path.to_owned(),
        relay_reason: p.relay_reason.clone(),
        endpoint: p.endpoint.clone(),
        rtt_ms: p.rtt_ms,
        pmtu: p.pmtu,
        pmtu_state: p.pmtu_state.to_owned(),
        tx_bytes: p.tx_bytes,
        rx_bytes: p.rx_bytes,
        last_handshake_unix: p.last_handshake_unix,
        cipher: p.cipher.to_owned(),
    }
}

/// `veil relay status --json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RelayStatusReport {
    /// Short id of the relay key.
    pub id: String,
    /// The address the relay listens on.
    pub listen: String,
    /// The address of its TCP listener (the fallback where UDP is blocked), if any.
    #[serde(default)]
    pub tcp_listen: Option<String>,
    /// Seconds since the relay started.
    pub uptime_s: u64,
    /// Nodes with a live session.
    pub clients: usize,
    /// Blinded names registered.
    pub names: usize,
    /// Links with other relays that are up.
    #[serde(default)]
    pub links: usize,
    /// Circuits this relay carries as a guard of private two-hop nodes.
    #[serde(default)]
    pub circuits: usize,
    /// Clients reaching this relay through a circuit (it knows no address of theirs).
    #[serde(default)]
    pub circuit_clients: usize,
    /// Engine counters, then `io_*` counters of this layer.
    #[serde(default)]
    pub counters: Counters,
    /// The shared rendezvous (`--nats`), if this relay has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterReport>,
}

/// The shared rendezvous of a relay, for `veil relay status`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ClusterReport {
    /// The address this relay lists itself at.
    pub advertise: String,
    /// The store and its health.
    pub store: crate::cluster::StoreHealth,
    /// The other relays of the directory.
    pub peers: Vec<ClusterPeerReport>,
    /// Nodes of other relays this relay's clients talk to.
    pub aliases: usize,
    /// Claims and lookups waiting for the store.
    pub pending: usize,
}

/// Another relay of the shared rendezvous.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ClusterPeerReport {
    /// Short id of its key.
    pub id: String,
    /// Its address.
    pub addr: String,
    /// Whether the link with it is up.
    pub link_up: bool,
    /// Milliseconds since the link last carried anything.
    pub last_rx_ms: Option<u64>,
    /// Aliases held for its nodes.
    pub aliases: usize,
}
