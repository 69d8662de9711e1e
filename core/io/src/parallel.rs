//! Spreads the AEAD work of a batch over more than one core (config key `crypto_threads`).
//!
//! The engine stays on the node's thread: it makes a [`veil_proto::session::SealJob`] or
//! [`veil_proto::session::OpenJob`] per datagram, in order, and takes the results back in
//! order. Only the jobs run here, fork-join, on the node's thread and on helper threads
//! that claim them a few at a time:
//!
//! - The node's thread never waits for a helper to start: it works through the batch
//!   itself, and a helper takes what is left when it gets a core. On a machine whose cores
//!   are all busy the helpers find little to do, and the batch costs what it did without
//!   them; the node's thread waits only for the few jobs a helper holds at the end.
//! - A helper that found nothing for 20 µs parks (a futex), so an idle node costs
//!   nothing; the node's thread wakes it when a batch is big enough to share.
//! - Jobs claimed by index from one counter: each runs exactly once, on one thread.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

/// Jobs a thread claims at a time: about 1 µs of AEAD at 1,400 bytes, so the node's
/// thread waits at most that long for a helper at the end of a batch.
const CHUNK: u64 = 4;
/// Batches smaller than this run on the node's thread alone: waking a helper costs more.
pub const MIN_SHARED: usize = 8;
/// How long a helper looks for the next batch (yielding its core meanwhile) before it
/// parks. Measured on two shared cores (docs/performance.md, step 7): 50 µs of spinning
/// took 20 % off TCP, parking at once cost a wake-up per batch; yielding for 20 µs was
/// the least bad.
const SPIN: Duration = Duration::from_micros(20);

/// The helper threads.
pub struct Helpers {
    shared: Arc<Shared>,
    threads: Vec<(Thread, JoinHandle<()>)>,
    /// Batches shared with helpers, and jobs they ran.
    pub batches: u64,
    /// See `batches`.
    pub jobs_by_helpers: u64,
}

/// The batch in progress, type-erased: `call(base, f, i)` runs job `i`.
#[derive(Clone, Copy)]
struct Task {
    base: *mut (),
    f: *const (),
    call: unsafe fn(*mut (), *const (), usize),
}

// SAFETY: a Task is only dereferenced while its batch is in progress, and its batch's
// items are `Send` and its closure `Sync` (see `Helpers::for_each`).
unsafe impl Send for Task {}

#[derive(Default)]
struct Shared {
    /// Generation (32 bits) | batch length (16) | next unclaimed index (16).
    state: AtomicU64,
    /// Jobs finished in the current generation.
    done: AtomicUsize,
    task: Mutex<Option<Task>>,
    /// Jobs the helpers ran (all generations).
    by_helpers: AtomicU64,
    parked: AtomicUsize,
    stop: AtomicBool,
    /// A helper's job panicked in the current batch.
    panicked: AtomicBool,
}

fn unpack(v: u64) -> (u64, u64, u64) {
    (v >> 32, (v >> 16) & 0xffff, v & 0xffff)
}

impl Shared {
    /// Claims up to CHUNK jobs of the current batch: their index range.
    fn claim(&self) -> Option<(u64, u64)> {
        let mut v = self.state.load(Ordering::Acquire);
        loop {
            let (_, len, next) = unpack(v);
            if next >= len {
                return None;
            }
            let end = (next + CHUNK).min(len);
            let new = (v & !0xffff) | end;
            match self
                .state
                .compare_exchange_weak(v, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some((next, end)),
                Err(cur) => v = cur,
            }
        }
    }

    /// Runs claimed jobs `[from, to)` of the batch in progress (on a helper thread).
    fn run(&self, from: u64, to: u64) {
        // The batch cannot end while these jobs are claimed and not done, so the task is
        // the one they were claimed from. (Nothing panics while holding the lock, so a
        // poisoned lock still holds a whole task.)
        let task = *self
            .task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(t) = task {
            // A job that panicked must still count as done, or the node's thread would wait
            // for it forever; `for_each` then says the batch failed, and the caller drops
            // it (nothing panics there today: the jobs check their lengths).
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                for i in from..to {
                    // SAFETY: see `Task`; index `i` was claimed by this thread only.
                    unsafe { (t.call)(t.base, t.f, i as usize) };
                }
            }));
            if ran.is_err() {
                self.panicked.store(true, Ordering::Relaxed);
                tracing::error!("a crypto helper's job panicked");
            }
        }
        self.by_helpers.fetch_add(to - from, Ordering::Relaxed);
        self.done.fetch_add((to - from) as usize, Ordering::Release);
    }
}

impl Helpers {
    /// No helpers: every batch runs on the caller's thread.
    pub fn none() -> Helpers {
        Helpers {
            shared: Arc::new(Shared::default()),
            threads: Vec::new(),
            batches: 0,
            jobs_by_helpers: 0,
        }
    }

    /// Starts `n` helper threads (none for 0).
    pub fn new(n: usize) -> std::io::Result<Helpers> {
        let shared = Arc::new(Shared {
            state: AtomicU64::new(0),
            done: AtomicUsize::new(0),
            task: Mutex::new(None),
            by_helpers: AtomicU64::new(0),
            parked: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
        });
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let s = Arc::clone(&shared);
            let h = thread::Builder::new()
                .name(format!("veil-crypto-{i}"))
                .spawn(move || helper(&s))?;
            threads.push((h.thread().clone(), h));
        }
        Ok(Helpers {
            shared,
            threads,
            batches: 0,
            jobs_by_helpers: 0,
        })
    }

    /// How many helper threads run.
    pub fn threads(&self) -> usize {
        self.threads.len()
    }

    /// Runs `f` on every item, on this thread and the helpers; returns when all ran:
    /// false if one panicked on a helper (the items are then not to be used: drop the
    /// batch). A panic on this thread is this thread's.
    #[must_use]
    pub fn for_each<T: Send, F: Fn(&mut T) + Sync>(&mut self, items: &mut [T], f: F) -> bool {
        let n = items.len();
        if n < MIN_SHARED || self.threads.is_empty() || n > 0xffff {
            items.iter_mut().for_each(f);
            return true;
        }
        unsafe fn call<T, F: Fn(&mut T)>(base: *mut (), f: *const (), i: usize) {
            // SAFETY: the caller's promise: `base` points at the live batch of `T`s, `i` is
            // in bounds and claimed by one thread only, `f` points at a live `F`.
            unsafe { (*f.cast::<F>())(&mut *base.cast::<T>().add(i)) }
        }
        let task = Task {
            base: items.as_mut_ptr().cast(),
            f: std::ptr::from_ref(&f).cast(),
            call: call::<T, F>,
        };
        let s = &*self.shared;
        *s.task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(task);
        let generation = (s.state.load(Ordering::Relaxed) >> 32).wrapping_add(1) & 0xffff_ffff;
        s.done.store(0, Ordering::Relaxed);
        s.panicked.store(false, Ordering::Relaxed);
        s.state
            .store((generation << 32) | ((n as u64) << 16), Ordering::Release);
        if s.parked.load(Ordering::SeqCst) > 0 {
            for (t, _) in &self.threads {
                t.unpark();
            }
        }
        let before = s.by_helpers.load(Ordering::Relaxed);
        while let Some((from, to)) = s.claim() {
            for i in from..to {
                // SAFETY: as in `call`; this thread claimed `i`.
                unsafe { call::<T, F>(task.base, task.f, i as usize) };
            }
            s.done.fetch_add((to - from) as usize, Ordering::Release);
        }
        // Only jobs a helper claimed are left: a few microseconds, unless its thread lost
        // its core meanwhile.
        let mut spins = 0u32;
        while s.done.load(Ordering::Acquire) < n {
            spins += 1;
            if spins < 1 << 12 {
                std::hint::spin_loop();
            } else {
                thread::yield_now();
            }
        }
        *s.task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        self.batches += 1;
        self.jobs_by_helpers += s.by_helpers.load(Ordering::Relaxed) - before;
        !s.panicked.load(Ordering::Relaxed)
    }
}

impl Drop for Helpers {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for (t, h) in self.threads.drain(..) {
            t.unpark();
            let _ = h.join();
        }
    }
}

fn helper(s: &Shared) {
    let mut idle_since = Instant::now();
    loop {
        if s.stop.load(Ordering::Relaxed) {
            return;
        }
        if let Some((from, to)) = s.claim() {
            s.run(from, to);
            idle_since = Instant::now();
            continue;
        }
        if idle_since.elapsed() < SPIN {
            // Yield rather than spin: on a machine whose cores are all busy, the wait
            // gives the core to whoever else is runnable.
            thread::yield_now();
            continue;
        }
        s.parked.fetch_add(1, Ordering::SeqCst);
        // A batch published after this check unparks us (park keeps the token).
        let (_, len, next) = unpack(s.state.load(Ordering::SeqCst));
        if next >= len && !s.stop.load(Ordering::SeqCst) {
            thread::park();
        }
        s.parked.fetch_sub(1, Ordering::SeqCst);
        idle_since = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_runs_once() {
        let mut h = Helpers::new(1).expect("threads");
        for round in 0..2_000u64 {
            let mut items: Vec<(u64, u32)> = (0..64).map(|i| (round * 64 + i, 0)).collect();
            let ok = h.for_each(&mut items, |(v, runs)| {
                // Some work, so that the helper has time to claim a part.
                let mut x = *v;
                for _ in 0..200 {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                }
                std::hint::black_box(x);
                *runs += 1;
            });
            assert!(ok);
            assert!(items.iter().all(|(_, r)| *r == 1), "round {round}");
        }
        assert_eq!(h.batches, 2_000);
    }

    #[test]
    fn a_helper_takes_jobs_while_the_callers_thread_is_busy() {
        // Jobs on the caller's thread take 200 µs each, so a helper that wakes within a
        // few milliseconds finds some of the 64 left; each job records its thread.
        let mut h = Helpers::new(1).expect("threads");
        let caller = thread::current().id();
        let mut items = vec![None; 64];
        let ok = h.for_each(&mut items, |who| {
            let me = thread::current().id();
            if me == caller {
                thread::sleep(Duration::from_micros(200));
            }
            *who = Some(me);
        });
        assert!(ok);
        let by_helper = items.iter().filter(|w| **w != Some(caller)).count();
        assert!(items.iter().all(Option::is_some));
        assert!(by_helper > 0, "the helper ran nothing");
        assert_eq!(h.jobs_by_helpers, by_helper as u64);
    }

    #[test]
    fn small_batches_and_no_helpers_run_inline() {
        let mut h = Helpers::none();
        let mut items = vec![1u32; 100];
        assert!(h.for_each(&mut items, |x| *x += 1));
        assert!(items.iter().all(|x| *x == 2));
        assert_eq!(h.batches, 0);
        let mut h = Helpers::new(1).expect("threads");
        let mut items = vec![1u32; MIN_SHARED - 1];
        assert!(h.for_each(&mut items, |x| *x += 1));
        assert!(items.iter().all(|x| *x == 2));
        assert_eq!(h.batches, 0);
    }

    #[test]
    fn a_job_that_panics_on_a_helper_fails_the_batch_and_nothing_hangs() {
        let mut h = Helpers::new(1).expect("threads");
        let caller = thread::current().id();
        let mut items = vec![0u32; 64];
        // Only jobs on the helper panic; the caller's are slow, so the helper gets some.
        let ok = h.for_each(&mut items, |x| {
            if thread::current().id() == caller {
                thread::sleep(Duration::from_micros(200));
                *x = 1;
            } else {
                panic!("a job that panics");
            }
        });
        assert!(!ok, "the batch is reported failed");
        // The next batch runs normally.
        let mut items = vec![0u32; 64];
        assert!(h.for_each(&mut items, |x| *x = 2));
        assert!(items.iter().all(|x| *x == 2));
    }

    #[test]
    fn a_helper_parks_when_idle_and_wakes_for_the_next_batch() {
        let mut h = Helpers::new(2).expect("threads");
        let mut items = vec![0u32; 256];
        assert!(h.for_each(&mut items, |x| *x += 1));
        let deadline = Instant::now() + Duration::from_secs(5);
        while h.shared.parked.load(Ordering::SeqCst) < 2 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(h.shared.parked.load(Ordering::SeqCst), 2, "both parked");
        assert!(h.for_each(&mut items, |x| *x += 1));
        assert!(items.iter().all(|x| *x == 2));
        drop(h); // joins the threads: a parked helper sees `stop`
    }
}
