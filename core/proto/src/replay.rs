//! Sliding replay window over 64-bit packet counters (RFC 6479 style bitmap): a counter is
//! accepted once, and only if it is not older than the window.

/// Window size in counters.
pub const WINDOW: u64 = 2048;
// One spare word so the oldest partial word never shares a slot with the newest.
const WORDS: usize = (WINDOW / 64) as usize + 1;

/// Tracks which counters have been seen.
#[derive(Clone)]
pub struct ReplayWindow {
    highest: u64,
    any: bool,
    bits: [u64; WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplayWindow {
    /// An empty window.
    pub fn new() -> Self {
        ReplayWindow {
            highest: 0,
            any: false,
            bits: [0; WORDS],
        }
    }

    /// Whether `counter` would be accepted (no state change). Check before decrypting,
    /// [`ReplayWindow::commit`] after the AEAD verified.
    pub fn check(&self, counter: u64) -> bool {
        if !self.any || counter > self.highest {
            return true;
        }
        if self.highest - counter >= WINDOW {
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
            self.bits = [0; WORDS];
        } else if counter > self.highest {
            let advance = counter - self.highest;
            if advance >= WINDOW {
                self.bits = [0; WORDS];
            } else {
                // Clear the words that the window slides over.
                let old_word = (self.highest / 64) as usize;
                let new_word = (counter / 64) as usize;
                let steps = (new_word - old_word).min(WORDS);
                for i in 1..=steps {
                    self.bits[(old_word + i) % WORDS] = 0;
                }
            }
            self.highest = counter;
        }
        let (w, b) = Self::pos(counter);
        self.bits[w] |= 1 << b;
        true
    }

    fn pos(counter: u64) -> (usize, u64) {
        (((counter / 64) as usize) % WORDS, counter % 64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn basic() {
        let mut w = ReplayWindow::new();
        assert!(w.commit(0));
        assert!(!w.commit(0));
        assert!(w.commit(5));
        assert!(w.commit(3));
        assert!(!w.commit(3));
        assert!(w.commit(5000));
        assert!(!w.commit(5000 - WINDOW));
        assert!(w.commit(5000 - WINDOW + 1));
        assert!(!w.check(1));
    }

    proptest! {
        /// Against a reference model: accepted exactly when new and within the window.
        #[test]
        fn matches_model(seq in proptest::collection::vec(0u64..6000, 1..400)) {
            let mut w = ReplayWindow::new();
            let mut seen = std::collections::BTreeSet::new();
            let mut highest: Option<u64> = None;
            for c in seq {
                let expect = match highest {
                    None => true,
                    Some(h) => !seen.contains(&c) && (c > h || h - c < WINDOW),
                };
                prop_assert_eq!(w.commit(c), expect, "counter {}", c);
                if expect {
                    seen.insert(c);
                    highest = Some(highest.map_or(c, |h| h.max(c)));
                }
            }
        }
    }
}
