//! Links between relays, and the circuits they carry: the relay half of private two-hop
//! mode.
//!
//! A private two-hop node opens a session with its *guard* relay and asks it (`Extend`) for
//! a circuit to its *home* relay. The guard opens (or reuses) a *link*, a session between
//! the two relays whose initiator proves with the network's peering key that it is a relay,
//! and carries the node's datagrams to and from the home relay on it as
//! `Circuit [id][datagram]`. The home relay treats the circuit as the client's endpoint.
//! So the guard knows the node's address and key and that it talks to the home relay, not
//! to whom; the home relay knows whom the circuit's client talks to, but neither its address
//! nor its key (the node uses a key made for the circuit).

use super::{ClientSession, Endpoint, Relay};
use crate::crypto::HeaderKey;
use crate::handshake::{self, link_proof, InitPayload, RespPayload};
use crate::noise::{Initiator, Responder};
use crate::session::Session;
use crate::wire::{Cursor, Frame, HsFragment, HsKind, Padding};
use rand_core::RngCore;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Links a relay keeps at most.
const MAX_LINKS: usize = 64;
/// Circuit datagrams held per link while its handshake runs.
const LINK_QUEUE: usize = 64;
/// Handshake attempts before a link is given up (its circuits are refused).
const LINK_ATTEMPTS: u32 = 5;
/// Wait for an answer after attempt `n`: `n` times this.
const LINK_RETRY: Duration = Duration::from_secs(1);
/// The initiator re-keys a link after this age.
const LINK_REKEY: Duration = Duration::from_secs(120);
/// A link the guard heard nothing on for this long is handshaken again when a client
/// (re-)extends over it: the other relay may have restarted.
const LINK_QUIET: Duration = Duration::from_secs(5);

struct LinkPending {
    init: Initiator,
    msg_id: u32,
    recv_cid: [u8; 8],
    attempts: u32,
}

/// A session with another relay.
pub(super) struct Link {
    pub(super) public: [u8; 32],
    pub(super) addr: SocketAddr,
    /// We opened it (and re-key it).
    initiator: bool,
    current: Option<ClientSession>,
    previous: Option<ClientSession>,
    pending: Option<LinkPending>,
    next_attempt: Instant,
    pub(super) last_rx: Instant,
    /// The other relay's last accepted handshake timestamp (responder side).
    last_ts: u64,
    /// Frames (circuit datagrams, transfers) waiting for the session.
    waiting: VecDeque<(Frame, Vec<u8>)>,
    /// Clients whose Extend waits for this link to come up.
    awaiting: Vec<u64>,
    /// Our policy goes to the other relay with the first datagram it sends on the new
    /// session (we answered its handshake: before that it cannot open ours).
    policy_due: bool,
}

impl Link {
    pub(super) fn is_up(&self) -> bool {
        self.current.is_some()
    }

    /// Holds a frame until the session is up; false when the queue is full.
    pub(super) fn queue(&mut self, kind: Frame, body: Vec<u8>) -> bool {
        if self.waiting.len() >= LINK_QUEUE {
            return false;
        }
        self.waiting.push_back((kind, body));
        true
    }
}

fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Relay {
    pub(super) fn new_link(
        &mut self,
        now: Instant,
        public: [u8; 32],
        addr: SocketAddr,
        initiator: bool,
    ) -> u64 {
        let mut h = self.rng.next_u64();
        while h == 0 || self.links.contains_key(&h) {
            h = self.rng.next_u64();
        }
        self.links.insert(
            h,
            Link {
                public,
                addr,
                initiator,
                current: None,
                previous: None,
                pending: None,
                next_attempt: now,
                last_rx: now,
                last_ts: 0,
                waiting: VecDeque::new(),
                awaiting: Vec::new(),
                policy_due: false,
            },
        );
        self.link_by_public.insert(public, h);
        h
    }

    pub(super) fn remove_link(&mut self, now: Instant, link: u64) {
        let Some(l) = self.links.remove(&link) else {
            return;
        };
        self.link_by_public.remove(&l.public);
        // Replay protection outlives the link, as it does a client.
        if l.last_ts > 0 {
            self.last_ts.insert(l.public, (l.last_ts, now));
        }
        for s in [l.current, l.previous].into_iter().flatten() {
            self.link_cids.remove(&s.recv_cid);
        }
        // Guard side: the circuits over it are gone; their clients extend again.
        let dead: Vec<(u64, u64)> = self
            .circuits
            .iter()
            .filter(|(_, (lk, _))| *lk == link)
            .map(|(c, k)| (*c, k.1))
            .collect();
        for (client, id) in dead {
            self.circuits.remove(&client);
            self.circuit_clients.remove(&(link, id));
            self.counters.circuits_refused += 1;
            self.send_frame(now, client, Frame::Extended, &[1]);
        }
        // Home side: clients behind its circuits are unreachable now.
        let behind: Vec<u64> = self
            .clients
            .iter()
            .filter(|(_, c)| matches!(c.addr, Endpoint::Circuit { link: lk, .. } if lk == link))
            .map(|(h, _)| *h)
            .collect();
        for h in behind {
            self.remove_client(h);
        }
    }

    /// Client `handle` asks for a circuit to the relay `[public key 32][address]`.
    pub(super) fn on_extend(&mut self, now: Instant, handle: u64, body: &[u8]) {
        let mut c = Cursor(body);
        let (Some(public), Some(addr)) = (c.array::<32>(), c.addr()) else {
            self.counters.dropped_malformed += 1;
            return;
        };
        let known = self.link_by_public.get(&public).copied();
        // A new link sends handshakes to an address the client chose: at most one new link
        // a second per client (bursts of two), so a member cannot aim a relay at third
        // parties.
        if self.peering.is_none()
            || public == self.public_key()
            || addr.port() == 0
            || (known.is_none()
                && (self.links.len() >= MAX_LINKS || !self.extend_limit.allow(now, &handle)))
        {
            self.counters.circuits_refused += 1;
            self.send_frame(now, handle, Frame::Extended, &[1]);
            return;
        }
        let link = match known {
            Some(l) => l,
            None => self.new_link(now, public, addr, true),
        };
        // One circuit per client: a new Extend replaces the old circuit.
        if let Some(old) = self.circuits.remove(&handle) {
            self.circuit_clients.remove(&old);
        }
        let mut id = self.rng.next_u64();
        while self.circuit_clients.contains_key(&(link, id)) {
            id = self.rng.next_u64();
        }
        self.circuits.insert(handle, (link, id));
        self.circuit_clients.insert((link, id), handle);
        self.counters.circuits_opened += 1;
        let Some(l) = self.links.get_mut(&link) else {
            return;
        };
        let fresh = l.is_up() && now.saturating_duration_since(l.last_rx) < LINK_QUIET;
        if fresh {
            self.send_frame(now, handle, Frame::Extended, &[0]);
            return;
        }
        if !l.awaiting.contains(&handle) {
            l.awaiting.push(handle);
        }
        if l.pending.is_none() {
            l.initiator = true;
            self.start_link_handshake(now, link);
        }
    }

    /// A client's datagram for its home relay.
    pub(super) fn on_client_circuit(&mut self, now: Instant, handle: u64, dg: &[u8]) {
        let Some(&(link, id)) = self.circuits.get(&handle) else {
            self.counters.dropped_circuit += 1;
            return;
        };
        self.send_on_circuit(now, link, id, dg);
    }

    /// Sends `dg` on circuit `id` of `link` (held while the link's handshake runs).
    pub(super) fn send_on_circuit(&mut self, now: Instant, link: u64, id: u64, dg: &[u8]) {
        let mut body = Vec::with_capacity(8 + dg.len());
        body.extend_from_slice(&id.to_be_bytes());
        body.extend_from_slice(dg);
        let Some(l) = self.links.get_mut(&link) else {
            self.counters.dropped_circuit += 1;
            return;
        };
        if !l.is_up() {
            if !l.queue(Frame::Circuit, body) {
                self.counters.dropped_circuit += 1;
            }
            return;
        }
        self.counters.circuit_datagrams += 1;
        self.send_link_frame(now, link, Frame::Circuit, &body);
    }

    pub(super) fn send_link_frame(&mut self, now: Instant, link: u64, kind: Frame, body: &[u8]) {
        // Circuit datagrams are padded by the node already (their size is what its path
        // MTU discovery measured); other link frames in buckets.
        let pad = if kind == Frame::Circuit {
            Padding::from(0)
        } else {
            Padding::from(self.cfg.pad_bucket)
        };
        let Some(l) = self.links.get_mut(&link) else {
            return;
        };
        let Some(session) = l.current.as_mut() else {
            return;
        };
        if let Some(dg) = session.seal_frame(now, kind, body, pad) {
            self.counters.tx_datagrams += 1;
            self.transmits.push_back((l.addr, dg));
        }
    }

    /// An authenticated-looking datagram on a link session.
    pub(super) fn link_transport(
        &mut self,
        now: Instant,
        from: SocketAddr,
        link: u64,
        cid: [u8; 8],
        counter: u64,
        buf: &mut [u8],
    ) {
        let reject = self.cfg.reject_after_time;
        let Some(l) = self.links.get_mut(&link) else {
            return;
        };
        let session = match (&mut l.current, &mut l.previous) {
            (Some(s), _) if s.recv_cid == cid => s,
            (_, Some(s)) if s.recv_cid == cid => s,
            _ => return,
        };
        let (kind, body) = match session.open(now, counter, buf, reject) {
            Ok(x) => x,
            Err(e) => {
                self.count_open_error(e);
                return;
            }
        };
        l.last_rx = now;
        l.addr = from;
        if std::mem::take(&mut l.policy_due) {
            // The session's body stays in `buf`, which the policy's sealing does not touch.
            self.send_policy_on_link(now, link);
        }
        let Some(l) = self.links.get(&link) else {
            return;
        };
        match kind {
            Frame::Circuit if body.len() >= 8 => {
                let mut id = [0u8; 8];
                id.copy_from_slice(&buf[body.start..body.start + 8]);
                let id = u64::from_be_bytes(id);
                let inner = body.start + 8..body.end;
                self.counters.circuit_datagrams += 1;
                if let Some(&client) = self.circuit_clients.get(&(link, id)) {
                    // We are this circuit's guard: back to the node (padded by the home
                    // relay already).
                    let dg = buf[inner].to_vec();
                    self.send_frame_padded(now, client, Frame::Circuit, &dg, Padding::from(0));
                } else {
                    // We are the home relay of the client behind it.
                    self.circuit_datagram(now, link, id, &mut buf[inner]);
                }
            }
            Frame::Keepalive => {}
            Frame::Transfer | Frame::Unreachable => {
                let b = buf[body].to_vec();
                let relay = l.public;
                if kind == Frame::Transfer {
                    self.on_transfer(now, relay, &b);
                } else {
                    self.on_link_unreachable(now, relay, &b);
                }
            }
            Frame::Policy => {
                let b = buf[body].to_vec();
                self.on_policy(now, &b);
            }
            Frame::Close => self.remove_link(now, link),
            _ => self.counters.dropped_malformed += 1,
        }
    }

    pub(super) fn start_link_handshake(&mut self, now: Instant, link: u64) {
        let Some(peering) = self.peering else {
            return;
        };
        let me = self.public_key();
        let recv_cid = self.fresh_cid();
        let unix = self.unix(now);
        let mut seed = [0u8; 32];
        self.rng.fill_bytes(&mut seed);
        let msg_id = self.rng.next_u32();
        let Some(l) = self.links.get(&link) else {
            return;
        };
        let (public, addr) = (l.public, l.addr);
        let payload = InitPayload {
            timestamp: unix.as_nanos() as u64,
            hp: *self.hp.bytes(),
            cid: recv_cid,
            ipv4: None,
            cert: Vec::new(),
            link: Some(link_proof(&peering, &me, &public)),
            // Relay links stay ChaCha20-Poly1305, like every relay session.
            aes: false,
        };
        let epoch = self.out_epoch(now);
        let seal = epoch.keys.hs_seal(&public);
        let Ok((init, msg1)) = Initiator::start(
            &self.identity,
            &public,
            &epoch.prologue,
            &payload.encode(),
            seed,
        ) else {
            return;
        };
        let dgs = handshake::datagrams(&seal, &mut self.rng, HsKind::Init, msg_id, &msg1);
        let Some(l) = self.links.get_mut(&link) else {
            return;
        };
        let attempts = l.pending.as_ref().map_or(0, |p| p.attempts) + 1;
        l.pending = Some(LinkPending {
            init,
            msg_id,
            recv_cid,
            attempts,
        });
        l.next_attempt = now + LINK_RETRY * attempts;
        for dg in dgs {
            self.counters.tx_datagrams += 1;
            self.transmits.push_back((addr, dg));
        }
    }

    /// Another relay opens a link to us (message 1 with a link proof).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn link_request(
        &mut self,
        now: Instant,
        from: SocketAddr,
        responder: Responder,
        init: &InitPayload,
        proof: [u8; 32],
        previous: bool,
        msg_id: u32,
    ) {
        let remote = responder.remote_static;
        let me = self.public_key();
        let Some(peering) = self.peering else {
            self.counters.dropped_link_unauthorized += 1;
            return;
        };
        if !ct_eq(&proof, &link_proof(&peering, &remote, &me)) || remote == me {
            self.counters.dropped_link_unauthorized += 1;
            return;
        }
        let known = self.link_by_public.get(&remote).copied();
        let last = known
            .and_then(|l| self.links.get(&l))
            .map(|l| l.last_ts)
            .or_else(|| self.last_ts.get(&remote).map(|x| x.0));
        if !handshake::timestamp_ok(init.timestamp, last, self.unix(now)) {
            self.counters.dropped_handshake_replay += 1;
            return;
        }
        if known.is_none() && self.links.len() >= MAX_LINKS {
            self.counters.dropped_link_unauthorized += 1;
            return;
        }
        let Some((session, msg2)) = self.answer(now, responder, init) else {
            return;
        };
        let link = match known {
            Some(l) => l,
            None => self.new_link(now, remote, from, false),
        };
        self.install_link_session(now, link, session);
        if let Some(l) = self.links.get_mut(&link) {
            l.addr = from;
            l.last_ts = init.timestamp;
        }
        let seal = self.epoch_at(previous).keys.hs_seal(&remote);
        for dg in handshake::datagrams(&seal, &mut self.rng, HsKind::Response, msg_id, &msg2) {
            self.counters.tx_datagrams += 1;
            self.transmits.push_back((from, dg));
        }
    }

    /// The answer to a link we opened.
    pub(super) fn link_response(
        &mut self,
        now: Instant,
        from: SocketAddr,
        frag: HsFragment,
        previous: bool,
        buf: &[u8],
    ) {
        let (whole, evicted) = self.reasm.add(
            now,
            (Endpoint::Udp(from), previous),
            frag.msg_id,
            frag.index,
            frag.count,
            &buf[frag.piece.clone()],
        );
        self.counters.reassembly_timeouts += evicted;
        let Some(msg) = whole else { return };
        let Some(link) = self.links.iter().find_map(|(h, l)| {
            l.pending
                .as_ref()
                .is_some_and(|p| p.msg_id == frag.msg_id)
                .then_some(*h)
        }) else {
            self.counters.dropped_unauthenticated += 1;
            return;
        };
        let Some(pending) = self.links.get_mut(&link).and_then(|l| l.pending.take()) else {
            return;
        };
        let recv_cid = pending.recv_cid;
        let Ok((keys, payload)) = pending.init.finish(&msg) else {
            self.counters.dropped_unauthenticated += 1;
            return;
        };
        let Some(resp) = RespPayload::decode(&payload) else {
            self.counters.dropped_malformed += 1;
            return;
        };
        let session: ClientSession = Session::new(
            &keys,
            recv_cid,
            resp.cid,
            HeaderKey::new(resp.hp),
            true,
            now,
        );
        self.install_link_session(now, link, session);
        if let Some(l) = self.links.get_mut(&link) {
            l.addr = from;
        }
    }

    fn install_link_session(&mut self, now: Instant, link: u64, session: ClientSession) {
        let Some(l) = self.links.get_mut(&link) else {
            return;
        };
        self.link_cids.insert(session.recv_cid, link);
        if let Some(old) = l.previous.take() {
            self.link_cids.remove(&old.recv_cid);
        }
        if l.current.is_none() {
            self.counters.links_established += 1;
        }
        l.previous = l.current.replace(session);
        l.last_rx = now;
        let waiting: Vec<(Frame, Vec<u8>)> = l.waiting.drain(..).collect();
        let awaiting = std::mem::take(&mut l.awaiting);
        for (kind, body) in waiting {
            match kind {
                Frame::Circuit => self.counters.circuit_datagrams += 1,
                Frame::Transfer => self.counters.transferred += 1,
                _ => {}
            }
            self.send_link_frame(now, link, kind, &body);
        }
        for client in awaiting {
            if self.circuits.get(&client).is_some_and(|(l, _)| *l == link) {
                self.send_frame(now, client, Frame::Extended, &[0]);
            }
        }
        // A relay that (re)started learns the network's policy from its links, also when
        // none of its own nodes holds it. Sent with every link session (a restarted peer
        // is only a new handshake on a link this side kept; a re-key every 120 s costs one
        // datagram of at most 1200 bytes); the peer ignores one it holds already. The
        // initiator sends at once; the responder once the initiator's first datagram on
        // the session shows it can open it.
        match self.links.get_mut(&link) {
            Some(l) if l.initiator => self.send_policy_on_link(now, link),
            Some(l) => l.policy_due = true,
            None => {}
        }
    }

    fn send_policy_on_link(&mut self, now: Instant, link: u64) {
        if let Some(bytes) = self.policy.as_ref().map(crate::cert::Policy::to_bytes) {
            self.counters.policies_relayed += 1;
            self.send_link_frame(now, link, Frame::Policy, &bytes);
        }
    }

    /// Link handshakes, re-keys and expiry.
    pub(super) fn link_timers(&mut self, now: Instant) {
        let reject = self.cfg.reject_after_time;
        let timeout = self.cfg.client_timeout;
        let mut retry = Vec::new();
        let mut give_up = Vec::new();
        for (h, l) in &mut self.links {
            if l.previous
                .as_ref()
                .is_some_and(|s| now.saturating_duration_since(s.created) >= reject)
            {
                if let Some(s) = l.previous.take() {
                    self.link_cids.remove(&s.recv_cid);
                }
            }
            let used = self.circuits.values().any(|(lk, _)| lk == h)
                || self
                    .cluster
                    .as_ref()
                    .is_some_and(|c| c.has_relay(&l.public));
            if now.saturating_duration_since(l.last_rx) >= timeout && !(used && l.initiator) {
                give_up.push(*h);
                continue;
            }
            if !l.initiator {
                continue;
            }
            match &l.pending {
                Some(p) if now >= l.next_attempt => {
                    if p.attempts >= LINK_ATTEMPTS {
                        if l.is_up() {
                            l.pending = None;
                        } else {
                            give_up.push(*h);
                        }
                    } else {
                        retry.push(*h);
                    }
                }
                None => {
                    let age = l
                        .current
                        .as_ref()
                        .map(|s| now.saturating_duration_since(s.created));
                    if age.is_some_and(|a| a >= LINK_REKEY) && used {
                        retry.push(*h);
                    }
                }
                _ => {}
            }
        }
        for h in give_up {
            self.remove_link(now, h);
        }
        for h in retry {
            self.start_link_handshake(now, h);
        }
    }

    /// When [`Relay::link_timers`] has something to do next.
    pub(super) fn link_deadline(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut consider = |x: Instant| t = Some(t.map_or(x, |y| y.min(x)));
        for (h, l) in &self.links {
            if let Some(s) = &l.previous {
                consider(s.created + self.cfg.reject_after_time);
            }
            let used =
                self.circuits.values().any(|(lk, _)| lk == h) || self.is_cluster_link(&l.public);
            if !(used && l.initiator) {
                consider(l.last_rx + self.cfg.client_timeout);
            }
            if !l.initiator {
                continue;
            }
            if l.pending.is_some() {
                consider(l.next_attempt);
            } else if let Some(s) = l.current.as_ref().filter(|_| used) {
                consider(s.created + LINK_REKEY);
            }
        }
        t
    }
}
