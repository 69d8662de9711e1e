//! Relays that share one rendezvous (`veil relay --nats`): the relay half, sans I/O.
//!
//! Every relay still keeps its own clients, names and sessions. With a shared store it also
//! *claims* each registration there (so two nodes on different relays cannot hold the same
//! name), asks the store for names it does not hold, and reaches the nodes of other relays
//! over relay links (`Transfer` frames). What the store holds per name is a [`ClusterEntry`]:
//! the home relay's key, the node's handle there, the node's key and its sealed record — what
//! the home relay holds already, so the store's operators learn no more than a relay does.
//!
//! The relay asks, the I/O layer answers: [`Relay::poll_cluster`] yields [`ClusterOp`]s,
//! [`Relay::cluster_claimed`] and [`Relay::cluster_found`] take the answers, and
//! [`Relay::set_cluster_relays`] the directory of the other relays (key and address).
//!
//! A node of another relay appears to this relay's clients under an *alias*: a handle of
//! this relay that stands for (home relay, handle there). Forward to an alias goes on the
//! link to the home relay as `Transfer [dst][src]`; the home relay delivers it under its
//! own alias for (this relay, src). Links between relays of the directory are kept up
//! eagerly (the relay with the smaller key opens each), carry a keepalive every second, and
//! a link silent for 3 s is dead and opened again. While no link is up, frames between
//! relays go on the store's message bus (NATS subjects), sealed with a key only relays hold.
//! A relay that leaves the directory takes its aliases with it, so the next Forward to one
//! of them is answered `Unreachable` and the node looks its peer up again.

use super::{short, Name, Relay};
use crate::wire::{Cursor, Frame, Padding};
use rand_core::RngCore;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Keepalives on links between relays of the directory.
const HEARTBEAT: Duration = Duration::from_millis(1000);
/// A link silent this long is dead.
const LINK_DEAD: Duration = Duration::from_secs(3);
/// A link silent this long (a keepalive missed) carries nothing until it speaks again:
/// frames for its relay take the bus.
const LINK_FRESH: Duration = Duration::from_secs(2);
/// How often the cluster timers run.
const CLUSTER_TICK: Duration = Duration::from_millis(500);
/// A claim or lookup the store did not answer in this time is given up (the node asks
/// again).
const OP_TIMEOUT: Duration = Duration::from_secs(10);
/// Most aliases a relay keeps (each is about 100 bytes).
const MAX_ALIASES: usize = 1 << 20;
/// Most claims and lookups waiting for the store.
const MAX_PENDING: usize = 65_536;
/// Version byte of an encoded [`ClusterEntry`].
const ENTRY_VERSION: u8 = 1;

/// What a relay asks of the shared store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterOp {
    /// Hold `entry` under each of `names` unless another node (another `owner`) holds one;
    /// answer with [`Relay::cluster_claimed`].
    Claim {
        /// Request id.
        id: u64,
        /// The names (16-byte prefixes of blinded names).
        names: Vec<[u8; 16]>,
        /// The node's key: a name it holds already is its own.
        owner: [u8; 32],
        /// The encoded [`ClusterEntry`].
        entry: Vec<u8>,
    },
    /// The node left this relay: remove `names` where this relay's entry is still the one
    /// stored (the node may have moved to another relay meanwhile).
    Release {
        /// The names.
        names: Vec<[u8; 16]>,
        /// The node's key.
        owner: [u8; 32],
        /// This relay's key: only its own entries go.
        relay: [u8; 32],
    },
    /// Which entry holds `name`? Answer with [`Relay::cluster_found`].
    Lookup {
        /// Request id.
        id: u64,
        /// The name.
        name: [u8; 16],
    },
    /// Deliver `payload` to relay `to` over the store's message bus (NATS: a subject per
    /// relay); it arrives there through [`Relay::cluster_bus`]. Used for Transfer,
    /// Unreachable and Policy frames while no link to that relay is up. The payload is
    /// sealed with a key only the network's relays hold (from the peering key): the bus's
    /// operators see sizes and which relay it goes to, nothing more.
    Send {
        /// The destination relay's key.
        to: [u8; 32],
        /// The sealed frame.
        payload: Vec<u8>,
    },
    /// Client `handle` of this relay (`relay`) announces routes (a sealed blob, opaque
    /// here); empty: it withdrew them or left. The store keeps one per (relay, handle), and
    /// the relays read them all ([`Relay::set_cluster_routes`]).
    Announce {
        /// This relay's key.
        relay: [u8; 32],
        /// The client's handle here.
        handle: u64,
        /// Its sealed announcement, or empty.
        blob: Vec<u8>,
    },
}

/// A route announcement of another relay's client, as the store lists it.
pub type RemoteAnnouncement = ([u8; 32], u64, Vec<u8>);

/// The store's answer to a [`ClusterOp::Claim`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// Every name is held for the node now.
    Claimed,
    /// Name `index` (of the claim's list) belongs to another node.
    Conflict(usize),
    /// The store could not be asked: the relay serves the registration on its own.
    Unavailable,
}

/// What the shared store holds per name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterEntry {
    /// The home relay's static key.
    pub relay: [u8; 32],
    /// The node's handle at its home relay.
    pub handle: u64,
    /// The node's key (the one it shows its home relay).
    pub owner: [u8; 32],
    /// The node's sealed record.
    pub record: Vec<u8>,
}

impl ClusterEntry {
    /// `[version 1][relay 32][handle 8][owner 32][record]`.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(73 + self.record.len());
        b.push(ENTRY_VERSION);
        b.extend_from_slice(&self.relay);
        b.extend_from_slice(&self.handle.to_be_bytes());
        b.extend_from_slice(&self.owner);
        b.extend_from_slice(&self.record);
        b
    }

    /// Parses [`ClusterEntry::encode`]'s output.
    pub fn decode(b: &[u8]) -> Option<ClusterEntry> {
        let mut c = Cursor(b);
        if c.u8()? != ENTRY_VERSION {
            return None;
        }
        let relay = c.array::<32>()?;
        let handle = c.u64()?;
        let owner = c.array::<32>()?;
        Some(ClusterEntry {
            relay,
            handle,
            owner,
            record: c.rest().to_vec(),
        })
    }
}

/// A node of another relay, as this relay's clients see it.
struct Alias {
    relay: [u8; 32],
    handle: u64,
    last_used: Instant,
}

struct PendingClaim {
    handle: u64,
    req: u32,
    names: Box<[Name]>,
    record: Box<[u8]>,
    at: Instant,
}

/// Status of one other relay of the shared rendezvous.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterPeer {
    /// Short id of its key.
    pub id: String,
    /// Its address (from the directory).
    pub addr: SocketAddr,
    /// Whether the link with it is up.
    pub link_up: bool,
    /// Milliseconds since the link last carried anything (None: no link).
    pub last_rx_ms: Option<u64>,
    /// Aliases this relay holds for its nodes.
    pub aliases: usize,
}

/// Status of the shared rendezvous.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterStatus {
    /// The other relays of the directory.
    pub peers: Vec<ClusterPeer>,
    /// Aliases held (nodes of other relays that this relay's clients talk to).
    pub aliases: usize,
    /// Claims and lookups waiting for the store.
    pub pending: usize,
}

/// The cluster state of a relay.
#[derive(Default)]
pub(super) struct Cluster {
    ops: VecDeque<ClusterOp>,
    next_id: u64,
    claims: HashMap<u64, PendingClaim>,
    lookups: HashMap<u64, (u64, u32, Instant)>,
    /// The other relays: key → address.
    relays: HashMap<[u8; 32], SocketAddr>,
    aliases: HashMap<u64, Alias>,
    alias_by: HashMap<([u8; 32], u64), u64>,
    next_tick: Option<Instant>,
    next_heartbeat: Option<Instant>,
    /// Announcements of other relays' clients, by the alias this relay gives them.
    routes: HashMap<u64, Box<[u8]>>,
}

impl Cluster {
    pub(super) fn has_relay(&self, public: &[u8; 32]) -> bool {
        self.relays.contains_key(public)
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

impl Relay {
    /// Shares this relay's rendezvous with other relays through a store the caller runs
    /// (see [`ClusterOp`]). Call once, before the first datagram.
    pub fn enable_cluster(&mut self) {
        if self.cluster.is_none() {
            self.cluster = Some(Box::default());
        }
    }

    /// Whether [`Relay::enable_cluster`] was called.
    pub fn is_clustered(&self) -> bool {
        self.cluster.is_some()
    }

    /// The next request for the shared store.
    pub fn poll_cluster(&mut self) -> Option<ClusterOp> {
        self.cluster.as_mut()?.ops.pop_front()
    }

    /// The directory of the other relays (key, address), as the store lists it now. Links
    /// are opened to new ones; relays that left are forgotten with their links and aliases.
    pub fn set_cluster_relays(&mut self, now: Instant, relays: &[([u8; 32], SocketAddr)]) {
        let me = self.public_key();
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        let new: HashMap<[u8; 32], SocketAddr> =
            relays.iter().filter(|(k, _)| *k != me).copied().collect();
        let gone: Vec<[u8; 32]> = c
            .relays
            .keys()
            .filter(|k| !new.contains_key(*k))
            .copied()
            .collect();
        c.relays = new;
        for k in gone {
            self.drop_aliases_of(&k);
            if let Some(l) = self.link_by_public.get(&k).copied() {
                self.remove_link(now, l);
            }
        }
        // Addresses may have changed (a relay restarted elsewhere).
        let moved: Vec<(u64, SocketAddr)> = self
            .cluster
            .as_ref()
            .map(|c| {
                c.relays
                    .iter()
                    .filter_map(|(k, a)| {
                        let l = *self.link_by_public.get(k)?;
                        let link = self.links.get(&l)?;
                        (!link.is_up() && link.addr != *a).then_some((l, *a))
                    })
                    .collect()
            })
            .unwrap_or_default();
        for (l, a) in moved {
            if let Some(link) = self.links.get_mut(&l) {
                link.addr = a;
            }
        }
        self.cluster_links(now);
    }

    /// The store's answer to claim `id`.
    pub fn cluster_claimed(&mut self, now: Instant, id: u64, outcome: ClaimOutcome) {
        let Some(p) = self.cluster.as_mut().and_then(|c| c.claims.remove(&id)) else {
            return;
        };
        match outcome {
            ClaimOutcome::Conflict(i) => {
                self.counters.registration_conflicts += 1;
                self.counters.cluster_conflicts += 1;
                self.refuse_registration(now, p.handle, p.req, i);
            }
            ClaimOutcome::Claimed | ClaimOutcome::Unavailable => {
                if outcome == ClaimOutcome::Unavailable {
                    self.counters.cluster_unavailable += 1;
                }
                self.commit_registration(now, p.handle, p.req, p.names.into(), &p.record);
            }
        }
    }

    /// The store's answer to lookup `id`: the encoded [`ClusterEntry`], or None.
    pub fn cluster_found(&mut self, now: Instant, id: u64, entry: Option<&[u8]>) {
        let me = self.public_key();
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        let Some((client, req, _)) = c.lookups.remove(&id) else {
            return;
        };
        let entry = entry
            .and_then(ClusterEntry::decode)
            // Our own entry without the client: stale (this relay restarted, or the node
            // left). A relay not in the directory cannot be reached.
            .filter(|e| e.relay != me && c.relays.contains_key(&e.relay));
        let mut reply = req.to_be_bytes().to_vec();
        match entry {
            Some(e) => {
                self.counters.cluster_hits += 1;
                let alias = self.alias_for(now, e.relay, e.handle);
                reply.push(1);
                reply.extend_from_slice(&alias.to_be_bytes());
                reply.extend_from_slice(&e.record);
            }
            None => {
                reply.push(0);
                reply.extend_from_slice(&0u64.to_be_bytes());
            }
        }
        self.send_frame(now, client, Frame::LookupReply, &reply);
    }

    /// The route announcements of every relay's clients, as the store lists them now. Those
    /// of other relays of the directory are passed to this relay's clients under aliases
    /// when new or changed, and withdrawn when gone.
    pub fn set_cluster_routes(&mut self, now: Instant, all: &[RemoteAnnouncement]) {
        let me = self.public_key();
        let Some(c) = self.cluster.as_ref() else {
            return;
        };
        let wanted: Vec<&RemoteAnnouncement> = all
            .iter()
            .filter(|(r, _, b)| *r != me && c.relays.contains_key(r) && !b.is_empty())
            .collect();
        let mut next: HashMap<u64, Box<[u8]>> = HashMap::new();
        for (relay, handle, blob) in wanted {
            if blob.len() > super::MAX_ANNOUNCE || next.len() >= super::MAX_ANNOUNCERS {
                continue;
            }
            let alias = self.alias_for(now, *relay, *handle);
            next.insert(alias, blob.as_slice().into());
        }
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        let old = std::mem::take(&mut c.routes);
        let changed: Vec<(u64, Box<[u8]>)> = next
            .iter()
            .filter(|(a, b)| old.get(*a) != Some(*b))
            .map(|(a, b)| (*a, b.clone()))
            .collect();
        let gone: Vec<u64> = old
            .keys()
            .filter(|a| !next.contains_key(*a))
            .copied()
            .collect();
        c.routes = next;
        for (alias, blob) in changed {
            self.broadcast_announcement(now, alias, &blob);
        }
        for alias in gone {
            self.broadcast_announcement(now, alias, &[]);
        }
    }

    /// The announcements of other relays' clients (alias, blob), for a client that just
    /// registered.
    pub(super) fn cluster_announcements(&self) -> Vec<(u64, Box<[u8]>)> {
        self.cluster.as_ref().map_or_else(Vec::new, |c| {
            c.routes.iter().map(|(a, b)| (*a, b.clone())).collect()
        })
    }

    /// A client of ours announced (or withdrew, `blob` empty) routes: tell the store.
    pub(super) fn cluster_announce(&mut self, handle: u64, blob: &[u8]) {
        let relay = self.public_key();
        if let Some(c) = self.cluster.as_mut() {
            c.ops.push_back(ClusterOp::Announce {
                relay,
                handle,
                blob: blob.to_vec(),
            });
        }
    }

    /// Status of the shared rendezvous (None when this relay has none).
    pub fn cluster_status(&self, now: Instant) -> Option<ClusterStatus> {
        let c = self.cluster.as_ref()?;
        let mut peers: Vec<ClusterPeer> = c
            .relays
            .iter()
            .map(|(k, a)| {
                let link = self.link_by_public.get(k).and_then(|l| self.links.get(l));
                ClusterPeer {
                    id: crate::keys::node_id(k),
                    addr: *a,
                    link_up: link.is_some_and(|l| l.is_up()),
                    last_rx_ms: link
                        .map(|l| now.saturating_duration_since(l.last_rx).as_millis() as u64),
                    aliases: c.aliases.values().filter(|x| x.relay == *k).count(),
                }
            })
            .collect();
        peers.sort_by(|a, b| a.id.cmp(&b.id));
        Some(ClusterStatus {
            peers,
            aliases: c.aliases.len(),
            pending: c.claims.len() + c.lookups.len(),
        })
    }

    /// Registration, cluster side: claims the names in the store; the reply waits for the
    /// answer. False when the relay has no shared store (the caller commits at once).
    pub(super) fn cluster_claim(
        &mut self,
        now: Instant,
        handle: u64,
        req: u32,
        names: &[Name],
        full: &[[u8; 32]],
        record: &[u8],
    ) -> bool {
        let me = self.public_key();
        let Some(owner) = self.clients.get(&handle).map(|c| c.public) else {
            return self.cluster.is_some();
        };
        let Some(c) = self.cluster.as_mut() else {
            return false;
        };
        if c.claims.len() >= MAX_PENDING {
            // The store is far behind: serve it here (counted as unavailable).
            self.counters.cluster_unavailable += 1;
            return false;
        }
        let id = c.id();
        let entry = ClusterEntry {
            relay: me,
            handle,
            owner,
            record: record.to_vec(),
        };
        c.claims.insert(
            id,
            PendingClaim {
                handle,
                req,
                names: names.into(),
                record: record.into(),
                at: now,
            },
        );
        c.ops.push_back(ClusterOp::Claim {
            id,
            names: full.iter().map(short).collect(),
            owner,
            entry: entry.encode(),
        });
        self.counters.cluster_claims += 1;
        true
    }

    /// A client left with these names: release them in the store.
    pub(super) fn cluster_release(&mut self, owner: [u8; 32], names: &[Name]) {
        let relay = self.public_key();
        if let Some(c) = self.cluster.as_mut() {
            if !names.is_empty() {
                c.ops.push_back(ClusterOp::Release {
                    names: names.to_vec(),
                    owner,
                    relay,
                });
            }
        }
    }

    /// A lookup this relay cannot answer from its own clients: ask the store. False when
    /// there is no store.
    pub(super) fn cluster_lookup(
        &mut self,
        now: Instant,
        client: u64,
        req: u32,
        name: &[u8; 32],
    ) -> bool {
        let Some(c) = self.cluster.as_mut() else {
            return false;
        };
        if c.lookups.len() >= MAX_PENDING {
            return false;
        }
        let id = c.id();
        c.lookups.insert(id, (client, req, now));
        c.ops.push_back(ClusterOp::Lookup {
            id,
            name: short(name),
        });
        self.counters.cluster_lookups += 1;
        true
    }

    /// The local handle that stands for node `handle` of relay `relay`.
    fn alias_for(&mut self, now: Instant, relay: [u8; 32], handle: u64) -> u64 {
        let Some(c) = self.cluster.as_mut() else {
            return 0;
        };
        if let Some(&a) = c.alias_by.get(&(relay, handle)) {
            if let Some(x) = c.aliases.get_mut(&a) {
                x.last_used = now;
            }
            return a;
        }
        if c.aliases.len() >= MAX_ALIASES {
            // Drop the least recently used one.
            if let Some((&old, _)) = c.aliases.iter().min_by_key(|(_, x)| x.last_used) {
                if let Some(x) = c.aliases.remove(&old) {
                    c.alias_by.remove(&(x.relay, x.handle));
                }
            }
        }
        let mut a = self.rng.next_u64();
        while a == 0 || self.clients.contains_key(&a) || c.aliases.contains_key(&a) {
            a = self.rng.next_u64();
        }
        c.aliases.insert(
            a,
            Alias {
                relay,
                handle,
                last_used: now,
            },
        );
        c.alias_by.insert((relay, handle), a);
        a
    }

    fn drop_aliases_of(&mut self, relay: &[u8; 32]) {
        if let Some(c) = self.cluster.as_mut() {
            c.aliases.retain(|_, x| x.relay != *relay);
            c.alias_by.retain(|(r, _), _| r != relay);
        }
    }

    /// A Forward from client `src` to a handle that is not a client: an alias goes to its
    /// home relay. False when `dst` is no alias either.
    pub(super) fn cluster_forward(
        &mut self,
        now: Instant,
        src: u64,
        dst: u64,
        inner: &[u8],
    ) -> bool {
        let Some(c) = self.cluster.as_mut() else {
            return false;
        };
        let Some(alias) = c.aliases.get_mut(&dst) else {
            return false;
        };
        alias.last_used = now;
        let (relay, handle) = (alias.relay, alias.handle);
        if !c.relays.contains_key(&relay) {
            // That relay left the directory: the node looks its peer up again.
            self.counters.dropped_transfer += 1;
            self.send_frame(now, src, Frame::Unreachable, &dst.to_be_bytes());
            return true;
        }
        let mut body = Vec::with_capacity(16 + inner.len());
        body.extend_from_slice(&handle.to_be_bytes());
        body.extend_from_slice(&src.to_be_bytes());
        body.extend_from_slice(inner);
        self.send_to_relay(now, relay, Frame::Transfer, body);
        true
    }

    /// A `Transfer` arrived from relay `relay` (on a link or the bus): deliver it to our
    /// client under an alias of its sender.
    pub(super) fn on_transfer(&mut self, now: Instant, relay: [u8; 32], body: &[u8]) {
        let mut c = Cursor(body);
        let (Some(dst), Some(src)) = (c.u64(), c.u64()) else {
            self.counters.dropped_malformed += 1;
            return;
        };
        let inner = c.rest();
        let known = self
            .cluster
            .as_ref()
            .is_some_and(|c| c.relays.contains_key(&relay));
        if !known || self.clients.get(&dst).is_none_or(|c| c.current.is_none()) {
            self.counters.dropped_transfer += 1;
            let mut back = dst.to_be_bytes().to_vec();
            back.extend_from_slice(&src.to_be_bytes());
            if known {
                self.send_to_relay(now, relay, Frame::Unreachable, back);
            }
            return;
        }
        let alias = self.alias_for(now, relay, src);
        let mut frame = Vec::with_capacity(8 + inner.len());
        frame.extend_from_slice(&alias.to_be_bytes());
        frame.extend_from_slice(inner);
        self.counters.transferred += 1;
        self.counters.forwarded += 1;
        // The node padded its datagram already.
        self.send_frame_padded(now, dst, Frame::Deliver, &frame, Padding::from(0));
    }

    /// The home relay says our transfer's destination is gone: tell the sender.
    pub(super) fn on_link_unreachable(&mut self, now: Instant, relay: [u8; 32], body: &[u8]) {
        let mut c = Cursor(body);
        let (Some(dst), Some(src)) = (c.u64(), c.u64()) else {
            self.counters.dropped_malformed += 1;
            return;
        };
        let Some(cl) = self.cluster.as_mut() else {
            return;
        };
        let Some(alias) = cl.alias_by.remove(&(relay, dst)) else {
            return;
        };
        cl.aliases.remove(&alias);
        self.counters.forward_unreachable += 1;
        self.send_frame(now, src, Frame::Unreachable, &alias.to_be_bytes());
    }

    /// Sends a frame to another relay of the directory: on the link when it is up, else on
    /// the store's bus (and the link is opened, if this relay is its opener).
    fn send_to_relay(&mut self, now: Instant, relay: [u8; 32], kind: Frame, body: Vec<u8>) {
        use chacha20poly1305::aead::Aead;
        if let Some(link) = self.link_by_public.get(&relay).copied() {
            // A link that missed a keepalive is suspect: the bus until it speaks again.
            if self
                .links
                .get(&link)
                .is_some_and(|l| l.is_up() && now.saturating_duration_since(l.last_rx) < LINK_FRESH)
            {
                if kind == Frame::Transfer {
                    self.counters.transferred += 1;
                }
                self.send_link_frame(now, link, kind, &body);
                return;
            }
        }
        self.cluster_links(now);
        let Some(key) = self.bus_key() else {
            self.counters.dropped_transfer += 1;
            return;
        };
        let me = self.public_key();
        let mut pt = Vec::with_capacity(33 + body.len());
        pt.extend_from_slice(&me);
        pt.push(kind as u8);
        pt.extend_from_slice(&body);
        let mut nonce = [0u8; 24];
        self.rng.fill_bytes(&mut nonce);
        let Ok(ct) = key.encrypt(
            (&nonce).into(),
            chacha20poly1305::aead::Payload {
                msg: &pt,
                aad: &relay,
            },
        ) else {
            return;
        };
        let mut payload = nonce.to_vec();
        payload.extend_from_slice(&ct);
        if kind == Frame::Transfer {
            self.counters.transferred += 1;
        }
        self.counters.bus_frames_sent += 1;
        if let Some(c) = self.cluster.as_mut() {
            c.ops.push_back(ClusterOp::Send { to: relay, payload });
        }
    }

    /// The key frames on the store's bus are sealed with: the network's relays only.
    fn bus_key(&self) -> Option<chacha20poly1305::XChaCha20Poly1305> {
        use chacha20poly1305::KeyInit;
        let peering = self.peering?;
        let k = crate::crypto::keyed_hash(&peering, &[b"veil relay bus"]);
        Some(chacha20poly1305::XChaCha20Poly1305::new((&k).into()))
    }

    /// A frame from the store's bus (see [`ClusterOp::Send`]): opened, and handled like
    /// the same frame on a link with that relay. Anything that does not open, or comes from
    /// a relay outside the directory, is dropped and counted.
    pub fn cluster_bus(&mut self, now: Instant, payload: &[u8]) {
        use chacha20poly1305::aead::Aead;
        let me = self.public_key();
        let opened = self.bus_key().and_then(|key| {
            let (nonce, ct) = (payload.get(..24)?, payload.get(24..)?);
            key.decrypt(
                chacha20poly1305::XNonce::from_slice(nonce),
                chacha20poly1305::aead::Payload { msg: ct, aad: &me },
            )
            .ok()
        });
        let Some(pt) = opened.filter(|p| p.len() >= 33) else {
            self.counters.dropped_bus += 1;
            return;
        };
        let mut from = [0u8; 32];
        from.copy_from_slice(&pt[..32]);
        if !self.is_cluster_link(&from) {
            self.counters.dropped_bus += 1;
            return;
        }
        self.counters.bus_frames_received += 1;
        let body = &pt[33..];
        match crate::wire::Frame::from_kind(pt[32]) {
            Some(Frame::Transfer) => self.on_transfer(now, from, body),
            Some(Frame::Unreachable) => self.on_link_unreachable(now, from, body),
            Some(Frame::Policy) => self.on_policy(now, body),
            _ => self.counters.dropped_bus += 1,
        }
    }

    /// Passes an adopted policy on to every other relay of the directory.
    pub(super) fn policy_to_relays(&mut self, now: Instant, bytes: &[u8]) {
        let me = self.public_key();
        let relays: Vec<[u8; 32]> = self
            .cluster
            .as_ref()
            .map(|c| c.relays.keys().filter(|k| **k != me).copied().collect())
            .unwrap_or_default();
        for r in relays {
            self.counters.policies_relayed += 1;
            self.send_to_relay(now, r, Frame::Policy, bytes.to_vec());
        }
    }

    /// Whether a link goes to a relay of the directory (kept up, with keepalives).
    pub(super) fn is_cluster_link(&self, public: &[u8; 32]) -> bool {
        self.cluster
            .as_ref()
            .is_some_and(|c| c.relays.contains_key(public))
    }

    /// Opens the links this relay is the opener of (the smaller key of each pair).
    pub(super) fn cluster_links(&mut self, now: Instant) {
        let me = self.public_key();
        let Some(c) = self.cluster.as_ref() else {
            return;
        };
        let missing: Vec<([u8; 32], SocketAddr)> = c
            .relays
            .iter()
            .filter(|(k, _)| me < **k && !self.link_by_public.contains_key(*k))
            .map(|(k, a)| (*k, *a))
            .collect();
        if self.peering.is_none() {
            return;
        }
        for (k, a) in missing {
            let l = self.new_link(now, k, a, true);
            self.start_link_handshake(now, l);
        }
    }

    /// Keepalives, dead links, stale aliases and unanswered store requests.
    pub(super) fn cluster_timers(&mut self, now: Instant) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        if c.next_tick.is_some_and(|t| now < t) {
            return;
        }
        c.next_tick = Some(now + CLUSTER_TICK);
        let heartbeat = c.next_heartbeat.is_none_or(|t| now >= t);
        if heartbeat {
            c.next_heartbeat = Some(now + HEARTBEAT);
        }
        let idle = self.cfg.client_timeout;
        c.aliases
            .retain(|_, x| now.saturating_duration_since(x.last_used) < idle);
        let aliases = &c.aliases;
        c.alias_by.retain(|_, a| aliases.contains_key(a));
        c.claims
            .retain(|_, p| now.saturating_duration_since(p.at) < OP_TIMEOUT);
        c.lookups
            .retain(|_, (_, _, at)| now.saturating_duration_since(*at) < OP_TIMEOUT);
        let relays: Vec<[u8; 32]> = c.relays.keys().copied().collect();
        let mut dead = Vec::new();
        let mut beat = Vec::new();
        for k in relays {
            let Some(&h) = self.link_by_public.get(&k) else {
                continue;
            };
            let Some(l) = self.links.get(&h) else {
                continue;
            };
            if l.is_up() && now.saturating_duration_since(l.last_rx) >= LINK_DEAD {
                dead.push((h, k));
            } else if l.is_up() && heartbeat {
                beat.push(h);
            }
        }
        // (Aliases stay: the relay may be alive behind a broken UDP path, and frames go on
        // the bus meanwhile; a relay that died leaves the directory, and its aliases go then.)
        for (h, _) in dead {
            self.counters.links_lost += 1;
            self.remove_link(now, h);
        }
        for h in beat {
            self.send_link_frame(now, h, Frame::Keepalive, &[0]);
        }
        self.cluster_links(now);
    }

    /// When [`Relay::cluster_timers`] runs next.
    pub(super) fn cluster_deadline(&self) -> Option<Instant> {
        let c = self.cluster.as_ref()?;
        Some(c.next_tick.unwrap_or(self.base.0))
    }
}

/// The in-memory shared store: what relays in one process (a simulation, a benchmark, the
/// in-memory backend of the I/O layer) share. The NATS store of the I/O layer keeps the
/// same rules in a JetStream key-value bucket.
#[derive(Default)]
pub struct MemoryStore {
    names: HashMap<[u8; 16], Box<[u8]>>,
    routes: HashMap<([u8; 32], u64), Vec<u8>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Names held.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether no name is held.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Answers an operation; `Some((id, answer))` for claims and lookups.
    pub fn apply(&mut self, op: &ClusterOp) -> Option<(u64, StoreAnswer)> {
        match op {
            ClusterOp::Claim {
                id,
                names,
                owner,
                entry,
            } => {
                if let Some(i) = names.iter().position(|n| {
                    self.names
                        .get(n)
                        .and_then(|e| ClusterEntry::decode(e))
                        .is_some_and(|e| e.owner != *owner)
                }) {
                    return Some((*id, StoreAnswer::Claim(ClaimOutcome::Conflict(i))));
                }
                let entry: Box<[u8]> = entry.as_slice().into();
                for n in names {
                    self.names.insert(*n, entry.clone());
                }
                Some((*id, StoreAnswer::Claim(ClaimOutcome::Claimed)))
            }
            ClusterOp::Release {
                names,
                owner,
                relay,
            } => {
                for n in names {
                    if self
                        .names
                        .get(n)
                        .and_then(|e| ClusterEntry::decode(e))
                        .is_some_and(|e| e.owner == *owner && e.relay == *relay)
                    {
                        self.names.remove(n);
                    }
                }
                None
            }
            ClusterOp::Lookup { id, name } => Some((
                *id,
                StoreAnswer::Found(self.names.get(name).map(|e| e.to_vec())),
            )),
            // The bus is the caller's: it hands the payload to the relay of that key.
            ClusterOp::Send { .. } => None,
            ClusterOp::Announce {
                relay,
                handle,
                blob,
            } => {
                if blob.is_empty() {
                    self.routes.remove(&(*relay, *handle));
                } else {
                    self.routes.insert((*relay, *handle), blob.clone());
                }
                None
            }
        }
    }

    /// Every relay's clients' announcements.
    pub fn routes(&self) -> Vec<RemoteAnnouncement> {
        self.routes
            .iter()
            .map(|((r, h), b)| (*r, *h, b.clone()))
            .collect()
    }

    /// Hands an answer of [`MemoryStore::apply`] to the relay that asked.
    pub fn answer(relay: &mut Relay, now: Instant, id: u64, answer: StoreAnswer) {
        match answer {
            StoreAnswer::Claim(o) => relay.cluster_claimed(now, id, o),
            StoreAnswer::Found(e) => relay.cluster_found(now, id, e.as_deref()),
        }
    }
}

/// An answer of the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreAnswer {
    /// To a claim.
    Claim(ClaimOutcome),
    /// To a lookup: the encoded entry.
    Found(Option<Vec<u8>>),
}
