//! Sliding replay window over 64-bit packet counters (RFC 6479 style bitmap): a counter is
//! accepted once, and only if it is not older than the window.

/// Window size in counters of end-to-end sessions (deep reordering on fast paths).
pub const WINDOW: u64 = 2048;
/// Words of the default window: one spare word so the oldest partial word never shares a
/// slot with the newest.
pub const WORDS: usize = words(WINDOW);
/// Window size of a relay's sessions with its clients: a relay holds one per node, so its
/// window is half as deep (1024 counters, 144 bytes instead of 272).
pub const RELAY_WINDOW: u64 = 1024;
/// Words of the relay window.
pub const RELAY_WORDS: usize = words(RELAY_WINDOW);

const fn words(window: u64) -> usize {
    (window / 64) as usize + 1
}

/// Tracks which counters have been seen, over a window of `(W - 1) * 64` counters.
#[derive(Clone)]
pub struct ReplayWindow<const W: usize = WORDS> {
    highest: u64,
    any: bool,
    bits: [u64; W],
}

impl<const W: usize> Default for ReplayWindow<W> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const W: usize> ReplayWindow<W> {
    /// The window size in counters.
    pub const SIZE: u64 = (W as u64 - 1) * 64;

    /// An empty window.
    pub fn new() -> Self {
        ReplayWindow {
            highest: 0,
            any: false,
            bits: [0; W],
        }
    }

    /// Whether `counter` would be accepted (no state change). Check before decrypting,
    /// [`ReplayWindow::commit`] after the AEAD verified.
    pub fn check(&self, counter: u64) -> bool {
        if !self.any || counter > self.highest {
            return true;
        }
        if self.highest - counter >= Self::SIZE {
            return false;
        }
        let (w, b) = Self::pos(counter);
        self.bits[w] & (1 << b) == 0
    }

    /// Marks `counter` as seen; returns false if it was a replay.
    pub fn commit(&mut self, counter: u64) -> bool {
        if !self.check(counter) {
            return false;
        }
        if !self.any {
            self.any = true;
            self.highest = counter;
            self.bits = [0; W];
        } else if counter > self.highest {
            let advance = counter - self.highest;
            if advance >= Self::SIZE {
                self.bits = [0; W];
            } else {
                // Clear the words that the window slides over.
                let old_word = (self.highest / 64) as usize;
                let new_word = (counter / 64) as usize;
                let steps = (new_word - old_word).min(W);
                for i in 1..=steps {
                    self.bits[(old_word + i) % W] = 0;
                }
            }
            self.highest = counter;
        }
        let (w, b) = Self::pos(counter);
        self.bits[w] |= 1 << b;
        true
    }

    fn pos(counter: u64) -> (usize, u64) {
        (((counter / 64) as usize) % W, counter % 64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn basic() {
        let mut w: ReplayWindow = ReplayWindow::new();
        assert!(w.commit(0));
        assert!(!w.commit(0));
        assert!(w.commit(5));
        assert!(w.commit(3));
        assert!(!w.commit(3));
        assert!(w.commit(5000));
        assert!(!w.commit(5000 - WINDOW));
        assert_eq!(ReplayWindow::<WORDS>::SIZE, WINDOW);
        assert_eq!(ReplayWindow::<RELAY_WORDS>::SIZE, RELAY_WINDOW);
        assert!(w.commit(5000 - WINDOW + 1));
        assert!(!w.check(1));
    }

    fn model<const W: usize>(seq: Vec<u64>) -> Result<(), TestCaseError> {
        let window = ReplayWindow::<W>::SIZE;
        let mut w = ReplayWindow::<W>::new();
        let mut seen = std::collections::BTreeSet::new();
        let mut highest: Option<u64> = None;
        for c in seq {
            let expect = match highest {
                None => true,
                Some(h) => !seen.contains(&c) && (c > h || h - c < window),
            };
            prop_assert_eq!(w.commit(c), expect, "counter {}", c);
            if expect {
                seen.insert(c);
                highest = Some(highest.map_or(c, |h| h.max(c)));
            }
        }
        Ok(())
    }

    proptest! {
        /// The relay's smaller window against the same model.
        #[test]
        fn relay_window_matches_model(seq in proptest::collection::vec(0u64..3000, 1..400)) {
            model::<RELAY_WORDS>(seq)?;
        }

        /// Against a reference model: accepted exactly when new and within the window.
        #[test]
        fn matches_model(seq in proptest::collection::vec(0u64..6000, 1..400)) {
            model::<WORDS>(seq)?;
        }

    }
}
