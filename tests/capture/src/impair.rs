//! The impairment model of `veil-impair`: per packet, in this order, drop it with probability
//! `loss`; otherwise duplicate it with probability `duplicate`, and either hold it back by a
//! random time in `reorder_min..=reorder_max` (probability `reorder`), so that packets which
//! arrived after it leave before it, or delay it by `delay` plus a uniform jitter in
//! `0..=jitter`.
//!
//! Jitter never reorders on its own: a packet that is not held back leaves no earlier than the
//! previous one of its direction that was not held back (a real link's queue keeps order;
//! reordering comes from packets that take another path, which is what `reorder` models).
//! So `reordered` counts only what `reorder` caused, and the test can compare it with the
//! configured fraction.
//!
//! Sans-IO, like the protocol engine: time is a parameter and randomness a seed, so the unit
//! tests replay exactly. The binary (`src/bin/veil-impair.rs`) owns the queue and the sockets.

use serde::Serialize;
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

/// The longest delay or hold-back accepted; more would only pile packets up in the kernel.
pub const MAX_DELAY: Duration = Duration::from_secs(10);

/// What to do to the packets, as probabilities in `0.0..=1.0` and durations.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Config {
    /// Probability that a packet is dropped.
    pub loss: f64,
    /// Probability that a packet that is not dropped is sent twice.
    pub duplicate: f64,
    /// Delay of every packet that is not dropped.
    #[serde(serialize_with = "as_ms")]
    pub delay: Duration,
    /// Upper bound of the uniform extra delay of packets that are not held back.
    #[serde(serialize_with = "as_ms")]
    pub jitter: Duration,
    /// Probability that a packet that is not dropped is held back (and so reordered).
    pub reorder: f64,
    /// Shortest hold-back, on top of `delay`.
    #[serde(serialize_with = "as_ms")]
    pub reorder_min: Duration,
    /// Longest hold-back, on top of `delay`.
    #[serde(serialize_with = "as_ms")]
    pub reorder_max: Duration,
}

fn as_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

impl Config {
    /// Checks the ranges; the message names the offending setting.
    pub fn validate(&self) -> Result<(), String> {
        for (name, p) in [
            ("loss", self.loss),
            ("duplicate", self.duplicate),
            ("reorder", self.reorder),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!(
                    "{name} must be a percentage from 0 to 100, got {}",
                    p * 100.0
                ));
            }
        }
        for (name, d) in [
            ("delay", self.delay),
            ("jitter", self.jitter),
            ("reorder delay", self.reorder_max),
        ] {
            if d > MAX_DELAY {
                return Err(format!(
                    "{name} must be at most {} ms, got {} ms",
                    MAX_DELAY.as_millis(),
                    d.as_secs_f64() * 1000.0
                ));
            }
        }
        if self.reorder_min > self.reorder_max {
            return Err(format!(
                "reorder delay: the minimum ({} ms) is above the maximum ({} ms)",
                self.reorder_min.as_secs_f64() * 1000.0,
                self.reorder_max.as_secs_f64() * 1000.0
            ));
        }
        if self.reorder > 0.0 && self.reorder_max.is_zero() {
            return Err("reorder needs a hold-back time above 0 ms".into());
        }
        Ok(())
    }
}

/// Which way a packet goes through the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// Arriving (netfilter prerouting or input).
    In,
    /// Leaving (output, postrouting, or forwarded).
    Out,
}

impl Dir {
    /// The direction of a packet queued from netfilter hook `hook` (`NF_INET_*`).
    pub fn from_hook(hook: u8) -> Dir {
        // NF_INET_PRE_ROUTING = 0, NF_INET_LOCAL_IN = 1; forward, output and postrouting leave.
        if hook <= 1 {
            Dir::In
        } else {
            Dir::Out
        }
    }

    fn index(self) -> usize {
        match self {
            Dir::In => 0,
            Dir::Out => 1,
        }
    }
}

/// What happened to the packets of one direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Packets handed to the model.
    pub seen: u64,
    /// Dropped.
    pub dropped: u64,
    /// Sent twice (the copy right after the original).
    pub duplicated: u64,
    /// Released later than they arrived (delay, jitter or hold-back).
    pub delayed: u64,
    /// Held back by the reorder rule.
    pub held_back: u64,
    /// Released after a packet of the same direction that arrived later.
    pub reordered: u64,
    /// Released (seen minus dropped, once everything held has left).
    pub released: u64,
}

impl Counters {
    fn add(&mut self, o: &Counters) {
        self.seen += o.seen;
        self.dropped += o.dropped;
        self.duplicated += o.duplicated;
        self.delayed += o.delayed;
        self.held_back += o.held_back;
        self.reordered += o.reordered;
        self.released += o.released;
    }
}

/// The fate of one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Drop it now.
    Drop,
    /// Let it go at `release` (which may be `now`), followed by a copy if `duplicate`.
    Pass(Ticket),
}

/// A packet that will be released: when, and what the model needs back at release.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    /// When to release it.
    pub release: Instant,
    /// Send a copy after it.
    pub duplicate: bool,
    /// Its direction.
    pub dir: Dir,
    /// Its arrival number within its direction.
    pub seq: u64,
}

/// SplitMix64: small, fast and good enough for coin flips; any seed works.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }

    /// Uniform in `[lo, hi]` (to the nanosecond).
    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = hi.saturating_sub(lo).as_nanos() as u64;
        if span == 0 {
            return lo;
        }
        lo + Duration::from_nanos(self.next_u64() % (span + 1))
    }
}

/// The model: decides each packet's fate and counts what it did.
#[derive(Debug)]
pub struct Impairer {
    cfg: Config,
    rng: Rng,
    /// Per direction: when the last packet that was not held back leaves (jitter keeps order).
    last_in_order: [Option<Instant>; 2],
    /// Per direction: the next arrival number.
    next_seq: [u64; 2],
    /// Per direction: the highest arrival number released so far.
    max_released: [Option<u64>; 2],
    counters: [Counters; 2],
}

impl Impairer {
    /// A model with `cfg` (validated by the caller) and a seed.
    pub fn new(cfg: Config, seed: u64) -> Impairer {
        Impairer {
            cfg,
            rng: Rng::new(seed),
            last_in_order: [None; 2],
            next_seq: [0; 2],
            max_released: [None; 2],
            counters: [Counters::default(); 2],
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Decides the fate of a packet that arrived at `now` going `dir`.
    pub fn on_packet(&mut self, now: Instant, dir: Dir) -> Decision {
        let d = dir.index();
        let seq = self.next_seq[d];
        self.next_seq[d] += 1;
        let c = &mut self.counters[d];
        c.seen += 1;
        if self.rng.chance(self.cfg.loss) {
            c.dropped += 1;
            return Decision::Drop;
        }
        let duplicate = self.rng.chance(self.cfg.duplicate);
        if duplicate {
            c.duplicated += 1;
        }
        let release = if self.rng.chance(self.cfg.reorder) {
            c.held_back += 1;
            now + self.cfg.delay + self.rng.between(self.cfg.reorder_min, self.cfg.reorder_max)
        } else {
            let t = now + self.cfg.delay + self.rng.between(Duration::ZERO, self.cfg.jitter);
            let t = self.last_in_order[d].map_or(t, |last| t.max(last));
            self.last_in_order[d] = Some(t);
            t
        };
        if release > now {
            c.delayed += 1;
        }
        Decision::Pass(Ticket {
            release,
            duplicate,
            dir,
            seq,
        })
    }

    /// Records that the packet of `ticket` was released; call in release order.
    pub fn on_release(&mut self, ticket: &Ticket) {
        let d = ticket.dir.index();
        let c = &mut self.counters[d];
        c.released += 1;
        match self.max_released[d] {
            Some(max) if ticket.seq < max => c.reordered += 1,
            _ => self.max_released[d] = Some(ticket.seq),
        }
    }

    /// The counters of one direction.
    pub fn counters(&self, dir: Dir) -> Counters {
        self.counters[dir.index()]
    }

    /// The counters of both directions together.
    pub fn total(&self) -> Counters {
        let mut t = self.counters[0];
        t.add(&self.counters[1]);
        t
    }
}

struct Held<T> {
    ticket: Ticket,
    /// Insertion order: equal release times leave in arrival order.
    order: u64,
    item: T,
}

impl<T> Held<T> {
    fn key(&self) -> (Instant, u64) {
        (self.ticket.release, self.order)
    }
}

impl<T> PartialEq for Held<T> {
    fn eq(&self, o: &Self) -> bool {
        self.key() == o.key()
    }
}
impl<T> Eq for Held<T> {}
impl<T> PartialOrd for Held<T> {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl<T> Ord for Held<T> {
    // Reversed: BinaryHeap is a max-heap and the earliest release must come out first.
    fn cmp(&self, o: &Self) -> Ordering {
        o.key().cmp(&self.key())
    }
}

/// Packets waiting for their release time, earliest first.
pub struct Scheduler<T> {
    heap: BinaryHeap<Held<T>>,
    order: u64,
}

impl<T> Default for Scheduler<T> {
    fn default() -> Self {
        Scheduler {
            heap: BinaryHeap::new(),
            order: 0,
        }
    }
}

impl<T> Scheduler<T> {
    /// Holds `item` until `ticket.release`.
    pub fn push(&mut self, ticket: Ticket, item: T) {
        self.order += 1;
        self.heap.push(Held {
            ticket,
            order: self.order,
            item,
        });
    }

    /// The earliest release time, if anything is held.
    pub fn next_release(&self) -> Option<Instant> {
        self.heap.peek().map(|h| h.ticket.release)
    }

    /// The next packet due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Ticket, T)> {
        if self.heap.peek()?.ticket.release <= now {
            self.heap.pop().map(|h| (h.ticket, h.item))
        } else {
            None
        }
    }

    /// The next packet regardless of its time (to flush at exit).
    pub fn pop(&mut self) -> Option<(Ticket, T)> {
        self.heap.pop().map(|h| (h.ticket, h.item))
    }

    /// How many packets are held.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

/// The destination address of a raw IPv4 or IPv6 packet, or None if it is too short to be one.
pub fn ip_destination(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 => {
            let ihl = usize::from(packet.first()? & 0x0f) * 4;
            if ihl < 20 || packet.len() < ihl {
                return None;
            }
            let b: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(b)))
        }
        6 => {
            if packet.len() < 40 {
                return None;
            }
            let b: [u8; 16] = packet.get(24..40)?.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config {
            loss: 0.05,
            duplicate: 0.02,
            delay: Duration::from_millis(1),
            jitter: Duration::from_millis(1),
            reorder: 0.05,
            reorder_min: Duration::from_millis(5),
            reorder_max: Duration::from_millis(20),
        }
    }

    /// Drives `n` packets per direction, one every `gap`, through a model and a scheduler;
    /// returns the model and the release order per direction.
    fn run(cfg: Config, seed: u64, n: u64, gap: Duration) -> (Impairer, Vec<(Dir, u64)>) {
        let mut m = Impairer::new(cfg, seed);
        let mut s = Scheduler::default();
        let mut out = Vec::new();
        let t0 = Instant::now();
        fn release(
            m: &mut Impairer,
            s: &mut Scheduler<u64>,
            now: Instant,
            out: &mut Vec<(Dir, u64)>,
        ) {
            while let Some((t, _)) = s.pop_due(now) {
                m.on_release(&t);
                out.push((t.dir, t.seq));
            }
        }
        for i in 0..n {
            let now = t0 + gap * (i as u32);
            release(&mut m, &mut s, now, &mut out);
            for dir in [Dir::In, Dir::Out] {
                if let Decision::Pass(t) = m.on_packet(now, dir) {
                    assert!(t.release >= now);
                    s.push(t, i);
                }
            }
        }
        while let Some((t, _)) = s.pop() {
            m.on_release(&t);
            out.push((t.dir, t.seq));
        }
        (m, out)
    }

    fn near(count: u64, of: u64, p: f64) -> bool {
        // Within five standard deviations of the binomial mean.
        let mean = of as f64 * p;
        let sd = (of as f64 * p * (1.0 - p)).sqrt();
        (count as f64 - mean).abs() <= 5.0 * sd.max(1.0)
    }

    #[test]
    fn fractions_match_the_configuration() {
        let n = 100_000;
        let (m, out) = run(cfg(), 7, n, Duration::from_micros(50));
        for dir in [Dir::In, Dir::Out] {
            let c = m.counters(dir);
            assert_eq!(c.seen, n);
            assert!(near(c.dropped, n, 0.05), "{c:?}");
            let passed = n - c.dropped;
            assert!(near(c.duplicated, passed, 0.02), "{c:?}");
            assert!(near(c.held_back, passed, 0.05), "{c:?}");
            assert_eq!(c.released, passed);
            assert_eq!(c.delayed, passed, "a 1 ms delay delays every packet");
            // At 20,000 packets/s a packet held 5-20 ms is overtaken by about 100.
            assert!(c.reordered >= c.held_back * 9 / 10, "{c:?}");
            assert!(c.reordered <= c.held_back * 11 / 10, "{c:?}");
        }
        assert_eq!(out.len() as u64, m.total().released);
    }

    #[test]
    fn jitter_alone_keeps_order() {
        let c = Config {
            jitter: Duration::from_millis(5),
            ..Config::default()
        };
        let (m, out) = run(c, 3, 10_000, Duration::from_micros(10));
        assert_eq!(m.total().reordered, 0);
        assert_eq!(m.total().dropped, 0);
        let ins: Vec<u64> = out
            .iter()
            .filter(|(d, _)| *d == Dir::In)
            .map(|x| x.1)
            .collect();
        assert!(ins.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn nothing_configured_changes_nothing() {
        let (m, out) = run(Config::default(), 1, 1000, Duration::from_micros(1));
        let t = m.total();
        assert_eq!(
            (t.seen, t.released, t.dropped, t.duplicated, t.delayed),
            (2000, 2000, 0, 0, 0)
        );
        assert_eq!(t.reordered, 0);
        assert_eq!(out.len(), 2000);
    }

    #[test]
    fn the_seed_decides_everything() {
        let a = run(cfg(), 42, 5000, Duration::from_micros(30));
        let b = run(cfg(), 42, 5000, Duration::from_micros(30));
        let c = run(cfg(), 43, 5000, Duration::from_micros(30));
        assert_eq!(a.1, b.1);
        assert_eq!(a.0.total(), b.0.total());
        assert_ne!(a.1, c.1);
    }

    #[test]
    fn hold_back_stays_in_its_window() {
        let c = Config {
            reorder: 1.0,
            reorder_min: Duration::from_millis(5),
            reorder_max: Duration::from_millis(20),
            ..Config::default()
        };
        let mut m = Impairer::new(c, 9);
        let now = Instant::now();
        for _ in 0..10_000 {
            let Decision::Pass(t) = m.on_packet(now, Dir::Out) else {
                panic!("nothing is dropped");
            };
            let d = t.release - now;
            assert!(d >= Duration::from_millis(5) && d <= Duration::from_millis(20));
        }
    }

    #[test]
    fn validation_names_the_setting() {
        let bad = |f: fn(&mut Config)| {
            let mut c = cfg();
            f(&mut c);
            c.validate().err().unwrap_or_default()
        };
        assert!(cfg().validate().is_ok());
        assert!(bad(|c| c.loss = 1.5).contains("loss"));
        assert!(bad(|c| c.duplicate = -0.1).contains("duplicate"));
        assert!(bad(|c| c.reorder_min = Duration::from_millis(30)).contains("minimum"));
        assert!(bad(|c| c.delay = Duration::from_secs(11)).contains("delay"));
        assert!(bad(|c| c.reorder_max = Duration::ZERO).contains("reorder"));
    }

    #[test]
    fn destinations_of_odd_packets() {
        let mut v4 = vec![0x45u8; 28];
        v4[16..20].copy_from_slice(&[198, 18, 0, 11]);
        assert_eq!(
            ip_destination(&v4),
            Some("198.18.0.11".parse().unwrap_or_else(|_| unreachable!()))
        );
        let mut v6 = vec![0x60u8; 48];
        v6[24..40].copy_from_slice(&[0xfd; 16]);
        assert!(matches!(ip_destination(&v6), Some(IpAddr::V6(_))));
        // Everything short, empty, of another version or with a bad header length is None,
        // never a panic.
        let mut rng = Rng::new(5);
        for len in 0..64 {
            for _ in 0..200 {
                let p: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
                let _ = ip_destination(&p);
            }
        }
        assert_eq!(ip_destination(&[]), None);
        assert_eq!(ip_destination(&v4[..19]), None);
        assert_eq!(ip_destination(&[0x44; 40]), None);
        assert_eq!(ip_destination(&[0x4f; 40]), None);
        assert_eq!(ip_destination(&v6[..39]), None);
        assert_eq!(ip_destination(&[0x70; 60]), None);
    }
}
