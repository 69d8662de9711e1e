//! Subnet routes and exit nodes. A node that routes for others (`advertise_routes`,
//! `advertise_exit`) seals an [`Announcement`] with the network's record key and hands it
//! to its relay (`Announce`); the relay keeps one per client and passes each to every other
//! client (`Announcement`, and an empty one when the advertiser leaves): relays learn that a
//! client routes, not what. Each node then sends packets for an advertised subnet (when
//! `accept_routes`), or for anything outside the overlay through its chosen exit
//! (`exit_node`, by name or overlay IPv4), to the advertiser, and accepts that advertiser's
//! packets from inside those prefixes. An advertiser accepts from peers only packets for its
//! own addresses and the prefixes it advertises; everything else is `dropped_destination`.

use super::*;
use crate::route::{Announcement, Prefix};
use std::collections::BTreeSet;

/// Another node's announcement and the relay handle it came from.
pub(super) struct Announced {
    handle: u64,
    ann: Announcement,
}

/// What a node knows about routes.
#[derive(Default)]
pub(super) struct RouteState {
    announced: HashMap<[u8; 32], Announced>,
    /// The routes in use and their advertiser, longest prefix first.
    active: Vec<(Prefix, [u8; 32])>,
    /// Our own announcement, sealed, and the IPv4 it was sealed with.
    sealed: Option<(Option<Ipv4Addr>, Vec<u8>)>,
}

/// AAD of a sealed announcement.
const ANNOUNCE_AAD: &[u8] = b"veil routes";

impl Node {
    fn advertises(&self) -> bool {
        !self.cfg.advertise_routes.is_empty() || self.cfg.advertise_exit
    }

    /// Sends our announcement to the relay (after each registration; the relay passes it on
    /// only when it changed).
    pub(super) fn announce_routes(&mut self, now: Instant) {
        if !self.advertises() {
            return;
        }
        let blob = match &self.routes.sealed {
            Some((v4, b)) if *v4 == self.ipv4 => b.clone(),
            _ => {
                let a = Announcement {
                    public: *self.identity.public(),
                    ipv4: self.ipv4,
                    name: self.registered_name().map(str::to_owned),
                    exit: self.cfg.advertise_exit,
                    routes: self.cfg.advertise_routes.clone(),
                };
                let b = self.seal_blob(ANNOUNCE_AAD, &a.encode());
                self.routes.sealed = Some((self.ipv4, b.clone()));
                b
            }
        };
        self.send_relay_frame(now, Frame::Announce, &blob);
    }

    /// `Announcement` from the relay: `[handle u64][sealed announcement, or nothing when the
    /// advertiser left]`.
    pub(super) fn on_announcement(&mut self, body: &[u8]) {
        if body.len() < 8 {
            self.counters.dropped_malformed += 1;
            return;
        }
        let handle = read_u64(body);
        let blob = &body[8..];
        self.routes.announced.retain(|_, a| a.handle != handle);
        if !blob.is_empty() {
            match self
                .open_blob(ANNOUNCE_AAD, blob)
                .and_then(|pt| Announcement::decode(&pt))
            {
                Some(a) if a.public == *self.identity.public() => {}
                Some(a) => {
                    self.routes
                        .announced
                        .insert(a.public, Announced { handle, ann: a });
                }
                None => self.counters.dropped_malformed += 1,
            }
        }
        self.recompute_routes();
    }

    fn exit_matches(&self, a: &Announcement) -> bool {
        self.cfg.exit_node.as_deref().is_some_and(|x| {
            a.name.as_deref() == Some(x) || a.ipv4.is_some_and(|v| v.to_string() == x)
        })
    }

    fn recompute_routes(&mut self) {
        let mut active = Vec::new();
        for (pk, a) in &self.routes.announced {
            if self.cfg.accept_routes {
                for r in &a.ann.routes {
                    // Nobody routes the overlay itself, and default routes only come from
                    // the exit this node chose.
                    if !r.is_default() && !self.overlay_prefix(r) {
                        active.push((*r, *pk));
                    }
                }
            }
            if a.ann.exit && self.exit_matches(&a.ann) {
                active.push((Prefix::DEFAULT_V4, *pk));
                active.push((Prefix::DEFAULT_V6, *pk));
            }
        }
        active.sort_by(|x, y| {
            y.0.prefix_len()
                .cmp(&x.0.prefix_len())
                .then(x.0.cmp(&y.0))
                .then(x.1.cmp(&y.1))
        });
        let before: BTreeSet<Prefix> = self.routes.active.iter().map(|x| x.0).collect();
        let after: BTreeSet<Prefix> = active.iter().map(|x| x.0).collect();
        self.routes.active = active;
        if before != after {
            self.events.push_back(NodeEvent::RoutesChanged {
                routes: after.into_iter().collect(),
            });
        }
    }

    fn overlay_prefix(&self, p: &Prefix) -> bool {
        let (pool, len) = self.cfg.ipv4_pool;
        let pool = Prefix::new(IpAddr::V4(pool), len);
        let ula = {
            let mut o = [0u8; 16];
            o[..6].copy_from_slice(&self.keys.ula_prefix());
            Prefix::new(IpAddr::V6(Ipv6Addr::from(o)), 48)
        };
        [pool, ula].iter().flatten().any(|o| o.overlaps(p))
    }

    /// The advertiser that takes `dst` (outside the overlay), and its relay handle.
    pub(super) fn route_for(&self, dst: IpAddr) -> Option<([u8; 32], u64)> {
        let (_, pk) = self.routes.active.iter().find(|(p, _)| p.contains(dst))?;
        Some((*pk, self.routes.announced.get(pk)?.handle))
    }

    /// Whether `pk` routes for `src` (so its packets may come from there).
    pub(super) fn routed_source(&self, pk: &[u8; 32], src: IpAddr) -> bool {
        self.routes
            .active
            .iter()
            .any(|(p, k)| k == pk && p.contains(src))
    }

    /// Whether a peer's packet for `dst` is ours to deliver: our own addresses, or what we
    /// advertise (outside the overlay).
    pub(super) fn local_destination(&self, dst: IpAddr) -> bool {
        match dst {
            IpAddr::V4(a) if Some(a) == self.ipv4 || a == self.ipv4_candidate => true,
            IpAddr::V6(a) if a == self.ipv6 => true,
            d if self.in_overlay(d) => false,
            d => self.cfg.advertise_exit || self.cfg.advertise_routes.iter().any(|p| p.contains(d)),
        }
    }

    /// The routes in use, for the status.
    pub(super) fn active_routes(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .routes
            .active
            .iter()
            .map(|(p, pk)| format!("{p} via {}", node_id(pk)))
            .collect();
        v.dedup();
        v
    }
}
