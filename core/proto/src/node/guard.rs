//! The guard relay of a private two-hop node (`private = 2`).
//!
//! The node holds a session with its guard (the relay after its home relay in the token)
//! and asks it (`Extend`) for a circuit to its home relay. Every datagram for the home
//! relay — the home handshake, registration, lookups, forwards — then travels sealed inside
//! a `Circuit` frame of the guard session, and what the home relay sends comes back the same
//! way. The node's socket talks to the guard only. The guard learns the node's address and
//! key, not whom it talks to; the home relay learns whom the circuit's client talks to, but
//! neither its address nor its key (it sees a key made for the purpose, and a header key of
//! its own).

use super::*;

/// Extend is sent again this often until the guard confirms the circuit.
const EXTEND_RETRY: Duration = Duration::from_secs(1);
/// Refusals in a row (the guard cannot reach the home relay: it gives up on a link after
/// about 15 s of unanswered handshakes) after which the home relay is taken for dead and
/// the node fails over to the next one, as every node does.
const EXTEND_REFUSALS: u32 = 2;
/// Bytes a guard circuit adds to a datagram for the home relay: a transport header and tag.
pub(super) const GUARD_OVERHEAD: usize = TRANSPORT_OVERHEAD;

pub(super) struct Guard {
    pub(super) link: RelayLink,
    /// The guard confirmed the circuit to the current home relay.
    pub(super) extended: bool,
    /// When Extend goes out (again).
    extend_next: Instant,
    /// Refusals of the current home relay in a row.
    refusals: u32,
}

impl Guard {
    pub(super) fn new(link: RelayLink, now: Instant) -> Self {
        Guard {
            link,
            extended: false,
            extend_next: now,
            refusals: 0,
        }
    }
}

impl Node {
    /// Where relayed datagrams leave this socket for: the guard in two-hop mode, else the
    /// home relay.
    pub(super) fn relay_endpoint(&self) -> SocketAddr {
        self.guard.as_ref().map_or(self.relay.addr, |g| g.link.addr)
    }

    /// Largest size padding grows a datagram for the home relay to: in two-hop mode the
    /// circuit adds [`GUARD_OVERHEAD`], so what fits a 1500-byte path once wrapped.
    pub(super) fn relay_pad_cap(&self) -> usize {
        if self.guard.is_some() {
            wire::PAD_CAP - GUARD_OVERHEAD
        } else {
            wire::PAD_CAP
        }
    }

    /// Whether a datagram of `size` bytes that failed to `dst` was on the relayed path, and
    /// the size it had at the home relay's layer.
    pub(super) fn via_relay_size(&self, dst: SocketAddr, size: usize) -> (bool, usize) {
        match &self.guard {
            Some(g) if dst == g.link.addr => (true, size.saturating_sub(GUARD_OVERHEAD)),
            Some(_) => (false, size),
            None => (dst == self.relay.addr, size),
        }
    }

    /// Sends a datagram to the home relay: straight, or through the guard's circuit.
    pub(super) fn send_home(&mut self, now: Instant, dg: Vec<u8>) {
        if self.guard.is_none() {
            self.push_tx(self.relay.addr, dg);
            return;
        }
        let mut buf = vec![0u8; BODY_OFFSET + dg.len() + TAG_LEN + wire::PAD_CAP];
        buf[BODY_OFFSET..BODY_OFFSET + dg.len()].copy_from_slice(&dg);
        match self.guard_seal(now, Frame::Circuit, &mut buf, dg.len()) {
            Some((addr, n)) => {
                buf.truncate(n);
                self.push_tx(addr, buf);
            }
            None => self.counters.dropped_no_route += 1,
        }
    }

    /// Wraps the datagram for the home relay in `buf[..len]` into a circuit frame for the
    /// guard, in place.
    pub(super) fn guard_wrap(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        len: usize,
    ) -> Option<Transmit> {
        if buf.len() < BODY_OFFSET + len + TAG_LEN + wire::PAD_CAP {
            return None;
        }
        buf.copy_within(0..len, BODY_OFFSET);
        let (dst, len) = self.guard_seal(now, Frame::Circuit, buf, len)?;
        Some(Transmit {
            dst,
            len,
            previous_socket: false,
        })
    }

    fn guard_seal(
        &mut self,
        now: Instant,
        kind: Frame,
        buf: &mut [u8],
        body_len: usize,
    ) -> Option<(SocketAddr, usize)> {
        // A circuit frame carries a datagram for the home relay that is padded already and
        // sized by path MTU discovery: padding it again could only push it past the path.
        let pad = if kind == Frame::Circuit {
            Padding::from(0)
        } else {
            Padding::from(self.cfg.pad_bucket)
        };
        let g = self.guard.as_mut()?;
        if kind == Frame::Circuit && !g.extended {
            return None;
        }
        let s = g.link.sessions.current.as_mut()?;
        let n = s.seal(now, buf, kind, body_len, pad)?;
        Some((g.link.addr, n))
    }

    fn send_guard_frame(&mut self, now: Instant, kind: Frame, body: &[u8]) -> bool {
        let mut buf = vec![0u8; BODY_OFFSET + body.len() + TAG_LEN + wire::PAD_CAP];
        buf[BODY_OFFSET..BODY_OFFSET + body.len()].copy_from_slice(body);
        match self.guard_seal(now, kind, &mut buf, body.len()) {
            Some((addr, n)) => {
                buf.truncate(n);
                self.counters.tx_datagrams += 1;
                self.push_tx(addr, buf);
                true
            }
            None => false,
        }
    }

    /// Fuzzing and tests only: sends `body` as a frame of kind `kind` on the session with the
    /// home relay (`guard` false; through the circuit in two-hop mode) or the guard (`guard`
    /// true), as any member could. False if there is no such session or kind.
    #[doc(hidden)]
    pub fn send_raw_relay_frame(
        &mut self,
        now: Instant,
        guard: bool,
        kind: u8,
        body: &[u8],
    ) -> bool {
        let Some(kind) = Frame::from_kind(kind) else {
            return false;
        };
        if guard {
            self.send_guard_frame(now, kind, body)
        } else {
            self.send_relay_frame(now, kind, body)
        }
    }

    /// A datagram from the guard.
    pub(super) fn guard_datagram(&mut self, now: Instant, buf: &mut [u8]) -> Option<Range<usize>> {
        let g = self.guard.as_ref()?;
        if let Some((cid, counter)) = wire::unmask_header(&g.link.hp, buf) {
            if self.cids.get(&cid) == Some(&CidOwner::Guard) {
                return self.guard_transport(now, cid, counter, buf);
            }
        }
        if self.relay_welcome(now, CidOwner::Guard, buf) {
            // A new guard session: the circuit is asked for (again) at once.
            if let Some(g) = self.guard.as_mut() {
                g.extend_next = now;
            }
            self.guard_timers(now);
        }
        None
    }

    fn guard_transport(
        &mut self,
        now: Instant,
        cid: [u8; 8],
        counter: u64,
        buf: &mut [u8],
    ) -> Option<Range<usize>> {
        let rejected = self.cfg.rekey_after_time + REJECT_AFTER_EXTRA;
        let g = self.guard.as_mut()?;
        let session = g.link.sessions.get_mut(&cid)?;
        let (kind, body) = match session.open(now, counter, buf, rejected) {
            Ok(x) => x,
            Err(e) => {
                self.count_open_error(e);
                return None;
            }
        };
        g.link.probe_sent = None;
        match kind {
            Frame::Keepalive => None,
            Frame::Extended => {
                let ok = buf[body].first() == Some(&0);
                if ok && !g.extended {
                    g.extended = true;
                    g.refusals = 0;
                    // The home relay is reachable now: handshake with it at once.
                    self.relay.pending = None;
                    self.relay.next_attempt = now;
                    self.relay.backoff = RELAY_BACKOFF_MIN;
                    self.relay_timers(now);
                } else if !ok {
                    g.extended = false;
                    g.extend_next = now + EXTEND_RETRY;
                    g.refusals += 1;
                    self.counters.circuits_refused += 1;
                    if g.refusals >= EXTEND_REFUSALS {
                        g.refusals = 0;
                        self.relay_lost(now);
                    }
                }
                None
            }
            Frame::Circuit => {
                let home = self.relay.addr;
                let r = self.datagram(now, home, &mut buf[body.clone()])?;
                Some(body.start + r.start..body.start + r.end)
            }
            _ => {
                self.counters.dropped_malformed += 1;
                None
            }
        }
    }

    /// Handshakes, re-keys, keepalives and the circuit request of the guard link.
    pub(super) fn guard_timers(&mut self, now: Instant) {
        let rekey = self.cfg.rekey_after_time;
        let keepalive = self.cfg.keepalive;
        let reject = rekey + REJECT_AFTER_EXTRA;
        let Some(g) = self.guard.as_mut() else {
            return;
        };
        if let Some(sent) = g.link.probe_sent {
            if now.saturating_duration_since(sent) >= RELAY_PROBE_TIMEOUT {
                self.guard_lost(now);
                return;
            }
            if now >= g.link.probe_next {
                g.link.probe_next = now + RELAY_PROBE_RESEND;
                self.send_guard_frame(now, Frame::Keepalive, &[1]);
            }
        }
        let Some(g) = self.guard.as_mut() else {
            return;
        };
        let age = g
            .link
            .sessions
            .current
            .as_ref()
            .map(|s| now.saturating_duration_since(s.created));
        if age.is_none()
            && self.cfg.relays.len() > 2
            && g.link
                .pending
                .as_ref()
                .is_some_and(|p| p.attempts >= RELAY_FAILOVER_ATTEMPTS)
        {
            // This guard does not answer at all: the next relay that is not the home.
            self.guard_lost(now);
            return;
        }
        let Some(g) = self.guard.as_mut() else {
            return;
        };
        let due = match &g.link.pending {
            None => now >= g.link.next_attempt,
            Some(p) => {
                now >= g.link.next_attempt
                    || now.saturating_duration_since(p.sent) >= RELAY_BACKOFF_MAX
            }
        };
        if age.is_none_or(|a| a >= rekey) && due {
            if age.is_some() {
                self.counters.rekeys += 1;
            }
            self.relay_hello(now, CidOwner::Guard);
        }
        let Some(g) = self.guard.as_mut() else {
            return;
        };
        if g.link
            .sessions
            .previous
            .as_ref()
            .is_some_and(|s| now.saturating_duration_since(s.created) >= reject)
        {
            if let Some(s) = g.link.sessions.previous.take() {
                self.cids.remove(&s.recv_cid);
            }
        }
        let Some(g) = self.guard.as_mut() else {
            return;
        };
        let Some(last_rx) = g.link.sessions.current.as_ref().map(|s| s.last_rx) else {
            return;
        };
        if !g.extended && now >= g.extend_next {
            g.extend_next = now + EXTEND_RETRY;
            let mut body = self.relay.public.to_vec();
            wire::put_addr(&mut body, self.relay.addr);
            self.send_guard_frame(now, Frame::Extend, &body);
        }
        let Some(g) = self.guard.as_mut() else {
            return;
        };
        if keepalive > Duration::ZERO
            && g.link.probe_sent.is_none()
            && now.saturating_duration_since(last_rx) >= keepalive
        {
            g.link.probe_sent = Some(now);
            g.link.probe_next = now + RELAY_PROBE_RESEND;
            self.send_guard_frame(now, Frame::Keepalive, &[1]);
        }
    }

    /// When [`Node::guard_timers`] has something to do.
    pub(super) fn guard_deadlines(&self, t: &mut Vec<Instant>) {
        let Some(g) = &self.guard else {
            return;
        };
        let l = &g.link;
        match &l.sessions.current {
            None => t.push(match &l.pending {
                Some(p) => l.next_attempt.min(p.sent + RELAY_BACKOFF_MAX),
                None => l.next_attempt,
            }),
            Some(s) => {
                let r = s.created + self.cfg.rekey_after_time;
                t.push(if l.pending.is_some() {
                    r.max(l.next_attempt)
                } else {
                    r
                });
                if !g.extended {
                    t.push(g.extend_next);
                }
                if self.cfg.keepalive > Duration::ZERO && l.probe_sent.is_none() {
                    t.push(s.last_rx + self.cfg.keepalive);
                }
            }
        }
        if let Some(p) = l.probe_sent {
            t.push(p + RELAY_PROBE_TIMEOUT);
            t.push(l.probe_next);
        }
        if let Some(s) = &l.sessions.previous {
            t.push(s.created + self.cfg.rekey_after_time + REJECT_AFTER_EXTRA);
        }
    }

    /// The guard stopped answering: its sessions are gone, and so is the circuit. The home
    /// session survives (the home relay takes the next circuit as the client's new
    /// endpoint); with more than two relays the next one that is not the home becomes the
    /// guard.
    fn guard_lost(&mut self, now: Instant) {
        let n = self.cfg.relays.len();
        let home = self.relay_index;
        let Some(g) = self.guard.as_mut() else {
            return;
        };
        let dead = g.link.sessions.clear();
        g.link.pending = None;
        g.link.probe_sent = None;
        g.link.next_attempt = now;
        g.extended = false;
        g.extend_next = now;
        if n > 2 {
            let at = self
                .cfg
                .relays
                .iter()
                .position(|(a, _)| *a == g.link.addr)
                .unwrap_or(home);
            let mut next = (at + 1) % n;
            if next == home {
                next = (next + 1) % n;
            }
            let (addr, public) = self.cfg.relays[next];
            g.link.addr = addr;
            g.link.public = public;
        }
        for cid in dead {
            self.cids.remove(&cid);
        }
        self.relay.probe_sent = None;
        self.counters.guard_losses += 1;
    }

    /// The home relay changed (failover): the circuit must go to the new one, through a
    /// guard that is not it.
    pub(super) fn home_moved(&mut self, now: Instant) {
        let n = self.cfg.relays.len();
        let home = self.relay_index;
        let Some(g) = self.guard.as_mut() else {
            return;
        };
        g.extended = false;
        g.extend_next = now;
        if g.link.addr == self.relay.addr && n >= 2 {
            let (addr, public) = self.cfg.relays[(home + 1) % n];
            let dead = g.link.sessions.clear();
            g.link.pending = None;
            g.link.probe_sent = None;
            g.link.next_attempt = now;
            g.link.addr = addr;
            g.link.public = public;
            for cid in dead {
                self.cids.remove(&cid);
            }
        }
    }
}
