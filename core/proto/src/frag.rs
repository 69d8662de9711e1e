//! Reassembly of handshake messages that were split into several datagrams. Memory is
//! bounded: at most [`MAX_PENDING`] partial messages, each at most [`MAX_PIECES`] pieces,
//! dropped after [`TIMEOUT`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Partial messages kept at once.
pub const MAX_PENDING: usize = 64;
/// Pieces a message may have.
pub const MAX_PIECES: u8 = 8;
/// How long a partial message waits for its other pieces.
pub const TIMEOUT: Duration = Duration::from_secs(5);

struct Partial {
    pieces: Vec<Option<Vec<u8>>>,
    first_seen: Instant,
}

/// Reassembles messages keyed by `K` (who sent it) and a message id.
pub struct Reassembler<K: Ord + Clone> {
    partial: BTreeMap<(K, u32), Partial>,
}

impl<K: Ord + Clone> Default for Reassembler<K> {
    fn default() -> Self {
        Reassembler {
            partial: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Clone> Reassembler<K> {
    /// Adds a piece; returns the whole message once every piece arrived. The second value
    /// counts partial messages evicted to make room.
    pub fn add(
        &mut self,
        now: Instant,
        key: K,
        msg_id: u32,
        index: u8,
        count: u8,
        piece: &[u8],
    ) -> (Option<Vec<u8>>, u64) {
        if count == 1 {
            return (Some(piece.to_vec()), 0);
        }
        if count > MAX_PIECES || index >= count {
            return (None, 0);
        }
        let mut evicted = 0;
        let k = (key, msg_id);
        if !self.partial.contains_key(&k) && self.partial.len() >= MAX_PENDING {
            // Evict the oldest.
            if let Some(old) = self
                .partial
                .iter()
                .min_by_key(|(_, p)| p.first_seen)
                .map(|(k, _)| k.clone())
            {
                self.partial.remove(&old);
                evicted += 1;
            }
        }
        let p = self.partial.entry(k.clone()).or_insert_with(|| Partial {
            pieces: vec![None; usize::from(count)],
            first_seen: now,
        });
        if p.pieces.len() != usize::from(count) {
            return (None, evicted);
        }
        p.pieces[usize::from(index)] = Some(piece.to_vec());
        if p.pieces.iter().all(Option::is_some) {
            let p = self.partial.remove(&k);
            let whole = p.map(|p| p.pieces.into_iter().flatten().flatten().collect());
            return (whole, evicted);
        }
        (None, evicted)
    }

    /// Drops expired partial messages; returns how many.
    pub fn expire(&mut self, now: Instant) -> u64 {
        let before = self.partial.len();
        self.partial
            .retain(|_, p| now.saturating_duration_since(p.first_seen) < TIMEOUT);
        (before - self.partial.len()) as u64
    }

    /// Partial messages held.
    pub fn len(&self) -> usize {
        self.partial.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.partial.is_empty()
    }

    /// When the oldest partial message expires.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.partial.values().map(|p| p.first_seen + TIMEOUT).min()
    }
}

/// Splits a message into pieces of at most `max` bytes, as evenly as possible.
pub fn split(msg: &[u8], max: usize) -> Vec<&[u8]> {
    let n = msg.len().div_ceil(max).max(1);
    let size = msg.len().div_ceil(n).max(1);
    msg.chunks(size).collect()
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests need a base Instant; the library never reads the clock
mod tests {
    use super::*;

    #[test]
    fn reassembles_out_of_order_and_expires() {
        let now = Instant::now();
        let mut r = Reassembler::<u8>::default();
        let msg: Vec<u8> = (0..2500u32).map(|i| i as u8).collect();
        let parts = split(&msg, 1000);
        assert_eq!(parts.len(), 3);
        let c = parts.len() as u8;
        assert_eq!(r.add(now, 1, 9, 2, c, parts[2]).0, None);
        assert_eq!(r.add(now, 1, 9, 0, c, parts[0]).0, None);
        assert_eq!(r.add(now, 1, 9, 1, c, parts[1]).0, Some(msg.clone()));
        assert_eq!(r.add(now, 1, 10, 0, c, parts[0]).0, None);
        assert_eq!(r.expire(now + TIMEOUT), 1);
    }

    #[test]
    fn bounded() {
        let now = Instant::now();
        let mut r = Reassembler::<u32>::default();
        let mut evicted = 0;
        for i in 0..1000u32 {
            evicted += r.add(now, i, i, 0, 2, b"x").1;
        }
        assert_eq!(r.partial.len(), MAX_PENDING);
        assert_eq!(evicted, 1000 - MAX_PENDING as u64);
    }
}
