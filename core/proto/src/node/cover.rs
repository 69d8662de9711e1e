//! Cover traffic (`cover_pps`): a constant rate of datagrams between the node and its relay
//! (its guard in two-hop mode), so that an observer of its link cannot tell when it is
//! active. Time is cut into slots of `1 / cover_pps`; a slot in which the node sent
//! nothing to the relay ends with a dummy (a Keepalive frame padded like data), and the
//! dummy asks the relay to answer with a dummy of the same size when nothing came from the
//! relay during the slot. Real datagrams take the place of dummies, so up to that rate the
//! link carries the same number of datagrams per second, of the same size, idle or busy;
//! above it, the volume shows. Handshakes (one per re-key) still stand out by size.

use super::*;

/// Keepalive flags: bit 0 asks for the address echo, bit 1 marks a dummy, bit 2 asks the
/// relay for a dummy back.
pub(super) const KEEPALIVE_COVER: u8 = 2;
pub(super) const KEEPALIVE_COVER_ECHO: u8 = 4;

/// Slot state of cover traffic.
pub(super) struct Cover {
    interval: Duration,
    next: Instant,
    sent: bool,
    received: bool,
}

impl Cover {
    pub(super) fn new(pps: u32, now: Instant) -> Option<Cover> {
        (pps > 0).then(|| {
            let interval = Duration::from_nanos(1_000_000_000 / u64::from(pps));
            Cover {
                interval,
                next: now + interval,
                sent: false,
                received: false,
            }
        })
    }
}

impl Node {
    /// Queues a datagram for the I/O layer.
    /// Queues a datagram for `dst`, from the previous socket if a direct path to `dst` is
    /// still served from it after a rotation.
    pub(super) fn push_tx(&mut self, dst: SocketAddr, dg: Vec<u8>) {
        self.note_tx(dst);
        let previous = self.via_previous(dst);
        self.transmits.push_back((dst, dg, previous));
    }

    /// Queues a datagram for `dst` from the current socket.
    pub(super) fn push_tx_current(&mut self, dst: SocketAddr, dg: Vec<u8>) {
        self.note_tx(dst);
        self.transmits.push_back((dst, dg, false));
    }

    /// A datagram leaves for `dst`: it fills the current slot if `dst` is the relay.
    pub(super) fn note_tx(&mut self, dst: SocketAddr) {
        if self.cover.is_some() && dst == self.relay_endpoint() {
            if let Some(c) = self.cover.as_mut() {
                c.sent = true;
            }
        }
    }

    /// Something other than a dummy came from the relay.
    pub(super) fn note_relay_rx(&mut self) {
        if let Some(c) = self.cover.as_mut() {
            c.received = true;
        }
    }

    /// The size a dummy takes: what a relayed data datagram is padded to (the largest
    /// relayed path MTU known, else the size every path carries).
    fn cover_size(&self) -> usize {
        self.peers
            .values()
            .filter(|p| p.direct.is_none() && p.sessions.current.is_some())
            .map(|p| usize::from(p.pmtu.size()))
            .max()
            .unwrap_or(usize::from(crate::pmtu::BASE))
    }

    pub(super) fn cover_timers(&mut self, now: Instant) {
        let Some(c) = self.cover.as_mut() else {
            return;
        };
        if now < c.next {
            return;
        }
        let (sent, received) = (c.sent, c.received);
        c.sent = false;
        c.received = false;
        c.next += c.interval;
        if c.next <= now {
            // Far behind (the process was stopped): start afresh rather than catch up.
            c.next = now + c.interval;
        }
        let circuit_down = self.guard.as_ref().is_some_and(|g| !g.extended);
        if sent || !self.relay.registered || circuit_down {
            return;
        }
        let flags = KEEPALIVE_COVER | if received { 0 } else { KEEPALIVE_COVER_ECHO };
        let size = self.cover_size();
        if self.send_relay_frame_padded(
            now,
            Frame::Keepalive,
            &[flags],
            Padding::new(wire::PAD_TO_MTU, size),
        ) {
            self.counters.cover_sent += 1;
        }
        // The dummy belongs to the slot that just ended.
        if let Some(c) = self.cover.as_mut() {
            c.sent = false;
        }
    }

    pub(super) fn cover_deadline(&self) -> Option<Instant> {
        self.cover.as_ref().map(|c| c.next)
    }
}
