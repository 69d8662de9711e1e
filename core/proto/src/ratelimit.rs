//! Token buckets per key (a source address, a relay handle), for work done before a peer is
//! authenticated: a completed handshake message costs an X25519 and an ML-KEM operation,
//! and only members of the network can produce one that gets that far, but a member (or a
//! leaked token) must not be able to burn a responder's CPU. Memory is bounded: when the
//! table is full, buckets that are full again (idle keys) are dropped first; if none is,
//! the new key is refused until one frees up.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Per-key token buckets.
#[derive(Debug)]
pub struct RateLimiter<K: Hash + Eq + Clone> {
    per_sec: u32,
    burst: u32,
    max_keys: usize,
    /// Tokens (in thousandths, to stay in integers) and when they were last topped up.
    buckets: HashMap<K, (u64, Instant)>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// `per_sec` operations a second per key, bursts of up to `burst`, at most `max_keys`
    /// keys tracked.
    pub fn new(per_sec: u32, burst: u32, max_keys: usize) -> Self {
        RateLimiter {
            per_sec,
            burst: burst.max(1),
            max_keys: max_keys.max(1),
            buckets: HashMap::new(),
        }
    }

    fn refill(&self, tokens: u64, since: Instant, now: Instant) -> u64 {
        let elapsed = now
            .saturating_duration_since(since)
            .min(Duration::from_secs(3600));
        let add = elapsed.as_millis() as u64 * u64::from(self.per_sec);
        (tokens + add).min(u64::from(self.burst) * 1000)
    }

    /// Takes one token for `key`; false if its bucket is empty (or the table is full of
    /// busy keys).
    pub fn allow(&mut self, now: Instant, key: &K) -> bool {
        if !self.buckets.contains_key(key) && self.buckets.len() >= self.max_keys {
            let full = u64::from(self.burst) * 1000;
            let (per_sec, burst) = (self.per_sec, self.burst);
            self.buckets.retain(|_, (t, at)| {
                let elapsed = now
                    .saturating_duration_since(*at)
                    .min(Duration::from_secs(3600));
                let refilled = (*t + elapsed.as_millis() as u64 * u64::from(per_sec))
                    .min(u64::from(burst) * 1000);
                refilled < full
            });
            if self.buckets.len() >= self.max_keys {
                return false;
            }
        }
        let full = u64::from(self.burst) * 1000;
        let (tokens, at) = self.buckets.get(key).copied().unwrap_or((full, now));
        let tokens = self.refill(tokens, at, now);
        if tokens < 1000 {
            self.buckets.insert(key.clone(), (tokens, now));
            return false;
        }
        self.buckets.insert(key.clone(), (tokens - 1000, now));
        true
    }

    /// Keys tracked.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests need a base Instant; the library never reads the clock
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(10, 5, 16);
        let ok = (0..20).filter(|_| r.allow(t0, &1u8)).count();
        assert_eq!(ok, 5);
        // One second later: ten more.
        let t1 = t0 + Duration::from_secs(1);
        let ok = (0..20).filter(|_| r.allow(t1, &1u8)).count();
        assert_eq!(ok, 5, "refill is capped at the burst");
        let t2 = t1 + Duration::from_millis(300);
        assert_eq!((0..20).filter(|_| r.allow(t2, &1u8)).count(), 3);
        // Another key has its own bucket.
        assert!(r.allow(t2, &2u8));
    }

    #[test]
    fn memory_is_bounded_and_idle_keys_make_room() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(1, 1, 100);
        for k in 0..100u32 {
            assert!(r.allow(t0, &k));
        }
        assert_eq!(r.len(), 100);
        // Full of busy keys: a new key is refused, the table does not grow.
        assert!(!r.allow(t0, &1000));
        assert_eq!(r.len(), 100);
        // Once they are idle (full again) they make room.
        assert!(r.allow(t0 + Duration::from_secs(2), &1000));
        assert!(r.len() <= 100);
    }
}
