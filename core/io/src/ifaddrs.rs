//! The host's interface addresses, for the node's local candidates.

use std::io;
use std::net::{IpAddr, SocketAddr};

/// Every address configured on an interface that is up, as `getifaddrs(3)` reports them.
#[cfg(unix)]
pub fn interface_addresses() -> io::Result<Vec<IpAddr>> {
    use std::net::{Ipv4Addr, Ipv6Addr};
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: `head` is a valid out-pointer; on success the list is freed below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_flags & (libc::IFF_UP as u32) == 0 {
            continue;
        }
        // SAFETY: `ifa_addr` is non-null and points to a sockaddr whose family says which
        // concrete struct it is; each branch reads only that struct.
        let addr = unsafe {
            match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                        sin.sin_addr.s_addr,
                    ))))
                }
                libc::AF_INET6 => {
                    let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
                }
                _ => None,
            }
        };
        if let Some(a) = addr {
            out.push(a);
        }
    }
    // SAFETY: `head` came from a successful getifaddrs and is freed exactly once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// Every address configured on an interface that is up, as `GetAdaptersAddresses` reports
/// them (Windows).
#[cfg(windows)]
pub fn interface_addresses() -> io::Result<Vec<IpAddr>> {
    use getifaddrs::{Address, InterfaceFlags};
    Ok(getifaddrs::getifaddrs()?
        .filter(|i| i.flags.contains(InterfaceFlags::UP))
        .filter_map(|i| match i.address {
            Address::V4(a) => Some(IpAddr::V4(a.address)),
            Address::V6(a) => Some(IpAddr::V6(a.address)),
            Address::Mac(_) => None,
        })
        .collect())
}

/// The candidates a socket bound to `local` offers: every usable interface address of a
/// family the socket can send from, with its port. Loopback, link-local, unspecified and
/// multicast addresses are skipped, and so is anything `overlay` claims (the overlay's own
/// addresses must never carry the overlay).
pub fn candidates(
    addrs: &[IpAddr],
    local: SocketAddr,
    overlay: impl Fn(IpAddr) -> bool,
) -> Vec<SocketAddr> {
    let dual_stack = local.is_ipv6();
    addrs
        .iter()
        .copied()
        .filter(|a| match a {
            IpAddr::V4(v4) => {
                !v4.is_loopback()
                    && !v4.is_link_local()
                    && !v4.is_unspecified()
                    && !v4.is_multicast()
                    && !v4.is_broadcast()
            }
            IpAddr::V6(v6) => {
                dual_stack
                    && !v6.is_loopback()
                    && !v6.is_unspecified()
                    && !v6.is_multicast()
                    && !v6.is_unicast_link_local()
            }
        })
        .filter(|a| !overlay(*a))
        .map(|a| SocketAddr::new(a, local.port()))
        .collect()
}

/// Wakes the node when the host's addresses or links change, so that a roam is noticed at
/// once and an idle node does not poll. Linux: a `NETLINK_ROUTE` socket in the link and
/// address multicast groups (any message, or a lost one, means "look again"). Elsewhere, or
/// when that socket cannot be had: a timer every [`POLL_EVERY`]. Either way the caller also
/// reads the addresses every [`REREAD_EVERY`], so a missed notification heals.
pub struct AddrWatch {
    #[cfg(target_os = "linux")]
    fd: Option<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>>,
    /// The timer used without notifications. An `Interval` keeps its schedule across the
    /// caller's `select!` rounds, so a busy loop still polls every [`POLL_EVERY`]. None:
    /// the platform reports changes ([`AddrWatch::reported`]).
    poll: Option<tokio::time::Interval>,
}

/// How often addresses are read again without change notifications.
pub const POLL_EVERY: std::time::Duration = std::time::Duration::from_millis(250);
/// How often they are read again even with them.
pub const REREAD_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

impl AddrWatch {
    /// Subscribes (needs a tokio runtime); falls back to polling if that fails.
    pub fn new() -> Self {
        #[cfg_attr(not(target_os = "linux"), allow(unused_mut))]
        let mut w = AddrWatch::polling();
        #[cfg(target_os = "linux")]
        match linux_watch() {
            Ok(fd) => w.fd = Some(fd),
            Err(e) => {
                tracing::warn!(error = %e, "no address change notifications; polling every 250 ms");
            }
        }
        w
    }

    /// Without notifications: the timer only.
    fn polling() -> Self {
        let mut poll = tokio::time::interval(POLL_EVERY);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        poll.reset();
        AddrWatch {
            #[cfg(target_os = "linux")]
            fd: None,
            poll: Some(poll),
        }
    }

    /// Neither notifications nor a timer: the platform tells the node itself
    /// (`NodeHandle::network_changed`), and the caller's 30 s re-read covers a report the
    /// platform missed. `changed` never returns.
    pub fn reported() -> Self {
        AddrWatch {
            #[cfg(target_os = "linux")]
            fd: None,
            poll: None,
        }
    }

    /// Returns when something may have changed: the kernel sent notifications (all of
    /// them are consumed), or, without them, the poll timer ticked. A socket that fails
    /// falls back to the timer. Cancel-safe.
    pub async fn changed(&mut self) {
        #[cfg(target_os = "linux")]
        if let Some(fd) = self.fd.as_ref() {
            match drain_when_readable(fd).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "address change notifications failed; polling");
                    self.fd = None;
                }
            }
        }
        match self.poll.as_mut() {
            Some(poll) => {
                poll.tick().await;
            }
            None => std::future::pending().await,
        }
    }
}

impl Default for AddrWatch {
    fn default() -> Self {
        AddrWatch::new()
    }
}

#[cfg(target_os = "linux")]
fn linux_watch() -> io::Result<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>> {
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: plain socket(2); the result is checked before use.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh, open descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: an all-zero sockaddr_nl is valid; the fields set below are plain integers.
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    sa.nl_groups = (libc::RTMGRP_LINK | libc::RTMGRP_IPV4_IFADDR | libc::RTMGRP_IPV6_IFADDR) as u32;
    // SAFETY: `sa` is a valid sockaddr_nl of the length given; `fd` is open.
    let r = unsafe {
        libc::bind(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            std::ptr::from_ref(&sa).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is an `OwnedFd`: open, and the `AsyncFd` owns it (and returns that same
    // descriptor from `as_raw_fd`) until it is dropped.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(io::Error::from)
}

/// Waits until the socket is readable, then reads every queued notification. An overflow
/// (`ENOBUFS`: notifications were dropped) is a change too.
#[cfg(target_os = "linux")]
async fn drain_when_readable(
    fd: &tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut buf = [0u8; 8192];
    loop {
        let mut guard = fd.readable().await?;
        let mut got = false;
        loop {
            // SAFETY: `buf` is writable for its length; the descriptor is open.
            let n = unsafe {
                libc::recv(
                    fd.get_ref().as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                )
            };
            if n >= 0 {
                got = true;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) => break,
                Some(libc::ENOBUFS) => got = true,
                Some(libc::EINTR) => {}
                _ => return Err(e),
            }
        }
        guard.clear_ready();
        if got {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn polling_keeps_its_schedule_in_a_busy_loop() {
        // Without notifications the watch polls every 250 ms, also when the caller's
        // select! is woken far more often by something else (each round drops the
        // `changed` future).
        let mut w = super::AddrWatch::polling();
        let start = tokio::time::Instant::now();
        let mut busy = tokio::time::interval(std::time::Duration::from_millis(10));
        let mut polls = Vec::new();
        while polls.len() < 3 {
            tokio::select! {
                () = w.changed() => polls.push(start.elapsed().as_millis()),
                _ = busy.tick() => {
                    assert!(start.elapsed().as_secs() < 2, "no poll in a busy loop: {polls:?}");
                }
            }
        }
        // 250, 500 and 750 ms, give or take a scheduling delay.
        for (k, ms) in polls.iter().enumerate() {
            let want = 250 * (k as u128 + 1);
            assert!(*ms >= want && *ms < want + 100, "{polls:?}");
        }
    }

    #[tokio::test]
    async fn a_reported_watch_never_wakes_on_its_own() {
        // Three polling periods pass without a wake-up (the platform reports changes).
        let mut w = super::AddrWatch::reported();
        let woke = tokio::time::timeout(super::POLL_EVERY * 3, w.changed()).await;
        assert!(woke.is_err(), "woke up by itself");
    }

    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn lists_loopback_and_filters_it_out() -> io::Result<()> {
        let all = interface_addresses()?;
        assert!(all.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)), "{all:?}");
        let local = SocketAddr::from(([0, 0, 0, 0], 4242));
        let c = candidates(&all, local, |_| false);
        assert!(c.iter().all(|a| !a.ip().is_loopback() && a.port() == 4242));
        Ok(())
    }

    #[test]
    fn families_and_overlay_are_respected() {
        let addrs: Vec<IpAddr> = vec![
            "198.18.0.5".parse().expect("v4"),
            "100.64.1.1".parse().expect("v4"),
            "fd00:198:18::5".parse().expect("v6"),
            "fe80::1".parse().expect("v6"),
        ];
        let overlay = |a: IpAddr| matches!(a, IpAddr::V4(v4) if v4.octets()[0] == 100);
        let v4 = candidates(&addrs, SocketAddr::from(([0, 0, 0, 0], 9)), overlay);
        assert_eq!(v4, vec![SocketAddr::from(([198, 18, 0, 5], 9))]);
        let dual = candidates(&addrs, "[::]:9".parse().expect("v6"), overlay);
        assert_eq!(dual.len(), 2);
    }
}
