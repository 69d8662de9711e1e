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

#[cfg(test)]
mod tests {
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
