//! What the rendezvous benchmarks share (`benches/rendezvous.rs`, `benches/cluster_scale.rs`):
//! a heap counter, deterministic keys and addresses, and a loop that moves datagrams between
//! one node and a relay. Each benchmark installs the counter itself:
//! `#[global_allocator] static A: veil_sim::bench::Counting = veil_sim::bench::Counting;`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};
use veil_proto::{Node, Relay, MAX_DATAGRAM};

/// Counts live heap bytes.
pub struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; the counter is only
// arithmetic on the sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(p, l, new) }
    }
}

/// Live heap bytes (with [`Counting`] installed).
pub fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// A 32-byte seed for node `i`.
pub fn seed(i: u64, salt: u8) -> [u8; 32] {
    // Bytes 8..16: X25519 clamping changes bits of bytes 0 and 31 only.
    let mut s = [salt; 32];
    s[8..16].copy_from_slice(&i.to_le_bytes());
    s
}

/// An underlay address for node `i`.
pub fn addr(i: u64) -> SocketAddr {
    let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + (i as u32 % 130_000));
    SocketAddr::new(ip.into(), 1024 + (i % 60_000) as u16)
}

/// Moves datagrams between one node and the relay until both are quiet. Returns the time
/// spent inside the relay per datagram into `timing`, if given.
pub fn pump(
    now: Instant,
    node: &mut Node,
    from: SocketAddr,
    relay: &mut Relay,
    relay_addr: SocketAddr,
    mut timing: Option<&mut Vec<Duration>>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let mut moved = false;
        if node.poll_timeout().is_some_and(|t| t <= now) {
            node.handle_timeout(now);
        }
        while let Some(t) = node.poll_transmit(&mut buf) {
            moved = true;
            if t.dst != relay_addr {
                continue;
            }
            let t0 = Instant::now();
            let fwd = relay.handle_datagram(now, from, &mut buf[..t.len]);
            if let Some(times) = timing.as_deref_mut() {
                times.push(t0.elapsed());
            }
            let _ = fwd;
        }
        while let Some(t) = relay.poll_transmit(&mut buf) {
            moved = true;
            if t.dst == from {
                let _ = node.handle_datagram(now, relay_addr, &mut buf[..t.len]);
            }
        }
        while node.poll_event().is_some() {}
        if !moved {
            return;
        }
    }
}
