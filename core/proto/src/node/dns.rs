//! Overlay DNS in the node: its name registered at the rendezvous under a blinded key, and
//! questions for `NAME.<domain>` answered from lookups of other members' blinded names.
//!
//! Queries come in two ways, both answered here:
//! - from the I/O layer, which serves DNS on the node's overlay address (Linux):
//!   [`Node::handle_dns_query`] with a token of the caller's, answers from
//!   [`Node::poll_dns_answer`];
//! - inside the TUN, to the pool's DNS address ([`Node::dns_address`], with
//!   `NodeConfig::dns_intercept`): phones cannot bind port 53, so the packet itself is
//!   answered with a packet into the TUN.
//!
//! A name's record is sealed with the network's record key and carries the name, so a relay
//! can neither read it nor hand one member's record out for another's name.

use super::*;
use crate::dns::{self, Ask, Outcome};

/// Resend a lookup that got no answer after this long.
const DNS_RETRY: Duration = Duration::from_millis(500);
/// Lookups sent for one question before it is answered SERVFAIL.
const DNS_ATTEMPTS: u32 = 3;
/// Names looked up at once; more questions get SERVFAIL.
pub(super) const MAX_DNS_LOOKUPS: usize = 256;
/// Questions waiting for one name.
const MAX_DNS_WAITING: usize = 32;
/// How long an answer is kept (found), and a miss.
const DNS_CACHE_FOUND: Duration = Duration::from_secs(30);
const DNS_CACHE_MISS: Duration = Duration::from_secs(5);
/// Cached names at most.
const MAX_DNS_CACHE: usize = 512;
/// Tokens of intercepted queries (their answers go back into the TUN) have this bit set.
const INTERCEPT: u64 = 1 << 63;
/// Intercepted queries awaiting an answer at most.
const MAX_INTERCEPTED: usize = 256;

/// A name being looked up, and the questions waiting for it.
pub(super) struct DnsLookup {
    name: String,
    waiting: Vec<(u64, Vec<u8>)>,
    sent: Instant,
    attempts: u32,
}

/// The DNS state of a node.
#[derive(Default)]
pub(super) struct DnsState {
    pub lookups: BTreeMap<u32, DnsLookup>,
    by_name: HashMap<String, u32>,
    cache: HashMap<String, (Outcome, Instant)>,
    pub answers: VecDeque<(u64, Vec<u8>)>,
    /// Intercepted queries: token → the asker's address and port.
    intercepted: BTreeMap<u64, (Ipv4Addr, u16)>,
    next_token: u64,
    /// The configured name was taken by another member: it is not registered.
    pub name_taken: bool,
}

/// The pool's DNS address: its last address but one (never a node's, see
/// [`crate::keys::ipv4_candidate`]).
pub fn dns_address(pool: Ipv4Addr, len: u8) -> Option<Ipv4Addr> {
    let host_bits = 32u32.saturating_sub(u32::from(len));
    if !(2..=31).contains(&host_bits) {
        return None;
    }
    let size = 1u32 << host_bits;
    let base = u32::from(pool) & !(size - 1);
    Some(Ipv4Addr::from(base + size - 2))
}

impl Node {
    /// The name this node registers (lowercased), unless another member holds it.
    pub(super) fn registered_name(&self) -> Option<&str> {
        self.cfg.name.as_deref().filter(|_| !self.dns.name_taken)
    }

    /// The network's DNS domain (`veil` unless configured).
    pub fn dns_domain(&self) -> &str {
        &self.cfg.dns_domain
    }

    /// The address DNS questions inside the TUN go to, when `dns_intercept` is on.
    pub fn dns_address(&self) -> Option<Ipv4Addr> {
        let (pool, len) = self.cfg.ipv4_pool;
        dns_address(pool, len).filter(|_| self.cfg.dns_intercept)
    }

    /// A DNS query that reached the node's overlay address (UDP port 53): it is answered
    /// through [`Node::poll_dns_answer`] with the same `token` (tokens with the top bit set
    /// are reserved).
    pub fn handle_dns_query(&mut self, now: Instant, token: u64, query: &[u8]) {
        self.dns_query(now, token & !INTERCEPT, query);
    }

    /// An answer for the I/O layer: its token and the DNS message.
    pub fn poll_dns_answer(&mut self) -> Option<(u64, Vec<u8>)> {
        self.dns.answers.pop_front()
    }

    fn dns_query(&mut self, now: Instant, token: u64, query: &[u8]) {
        self.counters.dns_queries += 1;
        let Some(ask) = dns::ask(query, &self.cfg.dns_domain) else {
            self.counters.dropped_malformed += 1;
            return;
        };
        let name = match ask {
            Ask::Refused => return self.dns_reply(token, query, Outcome::Refused),
            Ask::NoSuchName => return self.dns_reply(token, query, Outcome::NoSuchName),
            Ask::Member(name) => name,
        };
        if self.registered_name() == Some(name.as_str()) {
            let own = Outcome::Found(self.ipv4, self.ipv6);
            return self.dns_reply(token, query, own);
        }
        if let Some((outcome, until)) = self.dns.cache.get(&name) {
            if *until > now {
                let outcome = *outcome;
                return self.dns_reply(token, query, outcome);
            }
        }
        if let Some(req) = self.dns.by_name.get(&name).copied() {
            if let Some(l) = self.dns.lookups.get_mut(&req) {
                if l.waiting.len() < MAX_DNS_WAITING {
                    l.waiting.push((token, query.to_vec()));
                    return;
                }
            }
            return self.dns_reply(token, query, Outcome::Failed);
        }
        if self.dns.lookups.len() >= MAX_DNS_LOOKUPS {
            return self.dns_reply(token, query, Outcome::Failed);
        }
        let req = self.next_req();
        if !self.send_name_lookup(now, req, &name) {
            // No relay session now: the resolver tries again.
            return self.dns_reply(token, query, Outcome::Failed);
        }
        self.dns.by_name.insert(name.clone(), req);
        self.dns.lookups.insert(
            req,
            DnsLookup {
                name,
                waiting: vec![(token, query.to_vec())],
                sent: now,
                attempts: 1,
            },
        );
    }

    fn send_name_lookup(&mut self, now: Instant, req: u32, name: &str) -> bool {
        let mut body = req.to_be_bytes().to_vec();
        body.extend_from_slice(&self.keys.blind(b"name", name.as_bytes()));
        self.counters.lookups += 1;
        self.send_relay_frame(now, Frame::Lookup, &body)
    }

    /// The answer to a name lookup: true when `req` was one.
    pub(super) fn on_name_lookup_reply(
        &mut self,
        now: Instant,
        req: u32,
        found: bool,
        record: &[u8],
    ) -> bool {
        let Some(l) = self.dns.lookups.remove(&req) else {
            return false;
        };
        self.dns.by_name.remove(&l.name);
        let rec = if found {
            self.open_record(record)
        } else {
            None
        };
        // The record must be the one of the name asked for.
        let outcome = match rec.filter(|r| r.name.as_deref() == Some(l.name.as_str())) {
            Some(r) => Outcome::Found(r.ipv4, self.keys.overlay_ipv6(&r.public)),
            None => {
                self.counters.lookup_misses += 1;
                Outcome::NoSuchName
            }
        };
        let keep = if matches!(outcome, Outcome::Found(..)) {
            DNS_CACHE_FOUND
        } else {
            DNS_CACHE_MISS
        };
        if self.dns.cache.len() >= MAX_DNS_CACHE {
            self.dns.cache.retain(|_, (_, until)| *until > now);
            if self.dns.cache.len() >= MAX_DNS_CACHE {
                self.dns.cache.clear();
            }
        }
        self.name_resolved(&l.name, outcome);
        self.dns.cache.insert(l.name, (outcome, now + keep));
        for (token, query) in l.waiting {
            self.dns_reply(token, &query, outcome);
        }
        true
    }

    /// A peer's record names it `name` (or nothing): the name is shown for the peer once a
    /// lookup of the name returns the peer's own record. Answered from the DNS cache when
    /// it can be, else by a lookup of its own (no question waits for it).
    pub(super) fn peer_name_claimed(&mut self, now: Instant, pk: [u8; 32], name: Option<String>) {
        let Some(p) = self.peers.get_mut(&pk) else {
            return;
        };
        let Some(name) = name.filter(|n| dns::valid_name(n)) else {
            p.name = None;
            p.name_claim = None;
            return;
        };
        if p.name.as_deref() == Some(name.as_str()) {
            return;
        }
        p.name_claim = Some(name.clone());
        if let Some((outcome, until)) = self.dns.cache.get(&name) {
            if *until > now {
                let outcome = *outcome;
                return self.name_resolved(&name, outcome);
            }
        }
        if self.dns.by_name.contains_key(&name) || self.dns.lookups.len() >= MAX_DNS_LOOKUPS {
            // A lookup in flight answers it; with none possible now, the next record does.
            return;
        }
        let req = self.next_req();
        if self.send_name_lookup(now, req, &name) {
            self.dns.by_name.insert(name.clone(), req);
            self.dns.lookups.insert(
                req,
                DnsLookup {
                    name,
                    waiting: Vec::new(),
                    sent: now,
                    attempts: 1,
                },
            );
        }
    }

    /// What the rendezvous says `name` is: the peer whose record it returned gets the name
    /// (a peer that claimed it and is not that one does not).
    fn name_resolved(&mut self, name: &str, outcome: Outcome) {
        let holder = match outcome {
            Outcome::Found(_, v6) => Some(v6),
            Outcome::NoSuchName => None,
            // Not an answer (no relay, no reply): what is shown stays.
            Outcome::Refused | Outcome::Failed => return,
        };
        for p in self.peers.values_mut() {
            if Some(p.ipv6) == holder {
                p.name = Some(name.to_owned());
                p.name_claim = None;
            } else if p.name.as_deref() == Some(name) || p.name_claim.as_deref() == Some(name) {
                p.name = None;
                p.name_claim = None;
            }
        }
    }

    /// Resends unanswered lookups; answers SERVFAIL after the last attempt.
    pub(super) fn dns_timers(&mut self, now: Instant) {
        let due: Vec<u32> = self
            .dns
            .lookups
            .iter()
            .filter(|(_, l)| now.saturating_duration_since(l.sent) >= DNS_RETRY)
            .map(|(r, _)| *r)
            .collect();
        for req in due {
            let Some(l) = self.dns.lookups.get_mut(&req) else {
                continue;
            };
            if l.attempts < DNS_ATTEMPTS {
                l.attempts += 1;
                l.sent = now;
                let name = l.name.clone();
                self.send_name_lookup(now, req, &name);
                continue;
            }
            if let Some(l) = self.dns.lookups.remove(&req) {
                self.dns.by_name.remove(&l.name);
                for (token, query) in l.waiting {
                    self.dns_reply(token, &query, Outcome::Failed);
                }
            }
        }
        self.dns.cache.retain(|_, (_, until)| *until > now);
    }

    pub(super) fn dns_deadlines(&self, t: &mut Vec<Instant>) {
        t.extend(self.dns.lookups.values().map(|l| l.sent + DNS_RETRY));
        t.extend(self.dns.cache.values().map(|(_, until)| *until).min());
    }

    fn dns_reply(&mut self, token: u64, query: &[u8], outcome: Outcome) {
        let Some(answer) = dns::answer(query, outcome) else {
            self.counters.dropped_malformed += 1;
            return;
        };
        self.counters.dns_answers += 1;
        if token & INTERCEPT == 0 {
            self.dns.answers.push_back((token, answer));
            return;
        }
        let (Some((to, port)), Some(from)) =
            (self.dns.intercepted.remove(&token), self.dns_address())
        else {
            return;
        };
        let builder = etherparse::PacketBuilder::ipv4(from.octets(), to.octets(), 64).udp(53, port);
        let mut pkt = Vec::with_capacity(builder.size(answer.len()));
        if builder.write(&mut pkt, &answer).is_ok() {
            self.tun_out.push_back(pkt);
        }
    }

    /// A packet from the TUN to the DNS address: a UDP query to port 53 is answered; anything
    /// else is dropped.
    pub(super) fn intercept_dns(&mut self, now: Instant, packet: &[u8]) {
        let Ok(p) = etherparse::SlicedPacket::from_ip(packet) else {
            self.counters.dropped_malformed += 1;
            return;
        };
        let (Some(etherparse::NetSlice::Ipv4(ip)), Some(etherparse::TransportSlice::Udp(udp))) =
            (p.net, p.transport)
        else {
            self.counters.dropped_no_route += 1;
            return;
        };
        if udp.destination_port() != 53 {
            self.counters.dropped_no_route += 1;
            return;
        }
        if self.dns.intercepted.len() >= MAX_INTERCEPTED {
            // The oldest asker has long given up.
            self.dns.intercepted.pop_first();
        }
        self.dns.next_token = self.dns.next_token.wrapping_add(1) & !INTERCEPT;
        let token = INTERCEPT | self.dns.next_token;
        self.dns
            .intercepted
            .insert(token, (ip.header().source_addr(), udp.source_port()));
        let query = udp.payload().to_vec();
        self.dns_query(now, token, &query);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dns_address_is_the_pools_last_but_one() {
        assert_eq!(
            dns_address(Ipv4Addr::new(100, 64, 0, 0), 10),
            Some(Ipv4Addr::new(100, 127, 255, 254))
        );
        assert_eq!(
            dns_address(Ipv4Addr::new(10, 1, 2, 0), 24),
            Some(Ipv4Addr::new(10, 1, 2, 254))
        );
        assert_eq!(dns_address(Ipv4Addr::new(10, 0, 0, 0), 31), None);
    }
}
