//! The node state machine (stub signatures; implementation in progress).
use crate::keys::Identity;
use crate::token::JoinToken;
use crate::types::*;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::time::{Duration, Instant};

/// A node.
pub struct Node {
    _p: (),
}

impl Node {
    /// Creates a node.
    pub fn new(token: &JoinToken, identity: Identity, cfg: NodeConfig, seed: [u8; 32], now: Instant, unix_now: Duration) -> Node {
        let _ = (token, identity, cfg, seed, now, unix_now);
        Node { _p: () }
    }
    /// A datagram from the underlay; returns the range of `buf` holding an inner packet for the TUN.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, buf: &mut [u8]) -> Option<Range<usize>> { let _ = (now, from, buf); None }
    /// A packet read from the TUN; may write a datagram into `out` right away.
    pub fn handle_tun_packet(&mut self, now: Instant, packet: &[u8], out: &mut [u8]) -> Option<Transmit> { let _ = (now, packet, out); None }
    /// Timers.
    pub fn handle_timeout(&mut self, now: Instant) { let _ = now; }
    /// Next queued datagram.
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> { let _ = buf; None }
    /// Next queued inner packet for the TUN.
    pub fn poll_tun_packet(&mut self, buf: &mut [u8]) -> Option<usize> { let _ = buf; None }
    /// Next event.
    pub fn poll_event(&mut self) -> Option<NodeEvent> { None }
    /// When to call handle_timeout next.
    pub fn poll_timeout(&self) -> Option<Instant> { None }
    /// Status.
    pub fn status(&self, now: Instant) -> NodeStatus { let _ = now; NodeStatus { id: String::new(), overlay_ipv4: None, overlay_ipv6: Ipv6Addr::UNSPECIFIED, relay: None, relay_connected: false, counters: vec![] } }
    /// Peers.
    pub fn peers(&self, now: Instant) -> Vec<PeerStatus> { let _ = now; vec![] }
    /// Overlay IPv4.
    pub fn overlay_ipv4(&self) -> Option<Ipv4Addr> { None }
    /// Overlay IPv6.
    pub fn overlay_ipv6(&self) -> Ipv6Addr { Ipv6Addr::UNSPECIFIED }
}
