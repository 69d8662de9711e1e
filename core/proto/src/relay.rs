//! The relay state machine (stub signatures; implementation in progress).
use crate::token::RelayToken;
use crate::types::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A relay.
pub struct Relay {
    _p: (),
}

impl Relay {
    /// Creates a relay.
    pub fn new(token: &RelayToken, cfg: RelayConfig, seed: [u8; 32], now: Instant, unix_now: Duration) -> Relay { let _ = (token, cfg, seed, now, unix_now); Relay { _p: () } }
    /// A datagram; a forwarded datagram is rewritten in place and returned as buf[..len].
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, buf: &mut [u8]) -> Option<Transmit> { let _ = (now, from, buf); None }
    /// Timers.
    pub fn handle_timeout(&mut self, now: Instant) { let _ = now; }
    /// Next queued datagram.
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> { let _ = buf; None }
    /// When to call handle_timeout next.
    pub fn poll_timeout(&self) -> Option<Instant> { None }
    /// Status.
    pub fn status(&self, now: Instant) -> RelayStatus { let _ = now; RelayStatus { id: String::new(), clients: 0, names: 0, counters: vec![] } }
    /// The relay's public key.
    pub fn public_key(&self) -> [u8; 32] { [0; 32] }
}
