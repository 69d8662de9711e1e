//! Sockets. Every socket Veil opens (UDP, and the TCP streams of the relay fallback) is made
//! by a [`SocketFactory`], so that a platform can adjust it before use (Android's
//! `VpnService.protect()` keeps it out of the tunnel). This module also owns the
//! address-family plumbing of a dual-stack socket.

use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};

/// Socket buffer size asked for on every UDP socket; the kernel may grant less.
pub const SOCKET_BUFFER: usize = 4 << 20;

/// Makes the sockets of a runner.
pub trait SocketFactory: Send + Sync {
    /// Returns a bound, non-blocking UDP socket. `addr` is `0.0.0.0:port` or `[::]:port`;
    /// port 0 asks for an ephemeral port.
    fn bind_udp(&self, addr: SocketAddr) -> io::Result<UdpSocket>;

    /// Returns a new TCP socket, not connected yet and non-blocking, for a stream to `peer`
    /// (a node's stream to its relay, where UDP is blocked); the caller connects it. A
    /// platform that must `protect()` sockets overrides this and calls [`tcp_socket`].
    fn tcp_socket(&self, peer: SocketAddr) -> io::Result<TcpStream> {
        tcp_socket(peer)
    }

    /// Returns a bound, listening, non-blocking TCP socket (a relay's stream listener).
    fn listen_tcp(&self, addr: SocketAddr) -> io::Result<TcpListener> {
        listen_tcp(addr)
    }
}

/// A non-blocking TCP socket of `peer`'s family, not connected, with Nagle off (each write is
/// a datagram someone waits for). Wrapped as a `TcpStream` so that it can travel as a std
/// type; `tokio::net::TcpSocket::from_std_stream` connects it.
pub fn tcp_socket(peer: SocketAddr) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(peer), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_tcp_nodelay(true)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// A non-blocking TCP listener on `addr` (an IPv6 wildcard is dual-stack).
pub fn listen_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// The factory used on desktop and server platforms: [`bind_udp`] as is.
#[derive(Clone, Copy, Debug, Default)]
pub struct DefaultSocketFactory;

impl SocketFactory for DefaultSocketFactory {
    fn bind_udp(&self, addr: SocketAddr) -> io::Result<UdpSocket> {
        bind_udp(addr)
    }
}

/// Binds a non-blocking UDP socket with large buffers. An IPv6 wildcard socket is dual-stack,
/// so one socket reaches both IPv4 and IPv6 relays (see [`normalize`] and [`to_family`]).
/// Platform factories call this and then adjust the socket.
pub fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    set_buffers(&socket);
    set_dont_fragment(&socket, addr.is_ipv6())?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Asks for [`SOCKET_BUFFER`] each way. With CAP_NET_ADMIN (a node runs as root) the
/// `*BUFFORCE` options get it past `net.core.{r,w}mem_max`, whose default (208 KiB) drops
/// datagrams at a few hundred Mbit/s; otherwise the kernel's cap applies, which is not an
/// error.
fn set_buffers(socket: &Socket) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use std::os::fd::AsRawFd;
        let force = |name: libc::c_int| -> bool {
            let value = SOCKET_BUFFER as libc::c_int;
            // SAFETY: the fd is a live socket owned by `socket`; the option value is a
            // c_int whose size is passed alongside.
            let rc = unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::SOL_SOCKET,
                    name,
                    std::ptr::from_ref(&value).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            rc == 0
        };
        if force(libc::SO_RCVBUFFORCE) && force(libc::SO_SNDBUFFORCE) {
            return;
        }
    }
    if let Err(e) = socket.set_recv_buffer_size(SOCKET_BUFFER) {
        tracing::debug!(error = %e, "could not set SO_RCVBUF");
    }
    if let Err(e) = socket.set_send_buffer_size(SOCKET_BUFFER) {
        tracing::debug!(error = %e, "could not set SO_SNDBUF");
    }
}

/// Veil's datagrams are never fragmented by IP: they leave with DF set and the kernel's own
/// path MTU cache is ignored (`IP_PMTUDISC_PROBE`, and its IPv6 twin), so that the overlay's
/// discovery sees what the path really carries; a datagram larger than the interface fails
/// with `EMSGSIZE` instead of being fragmented.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn set_dont_fragment(socket: &Socket, v6: bool) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let set = |level: libc::c_int, name: libc::c_int, value: libc::c_int| -> io::Result<()> {
        // SAFETY: the fd is a live socket owned by `socket`; the option value is a c_int
        // whose size is passed alongside.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                level,
                name,
                std::ptr::from_ref(&value).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    if v6 {
        set(
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_PROBE,
        )?;
        set(libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG, 1)?;
    }
    // On a dual-stack socket this covers its IPv4 (mapped) traffic.
    set(
        libc::IPPROTO_IP,
        libc::IP_MTU_DISCOVER,
        libc::IP_PMTUDISC_PROBE,
    )
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn set_dont_fragment(_socket: &Socket, _v6: bool) -> io::Result<()> {
    Ok(())
}

/// The wildcard addresses to try binding, best first: a dual-stack IPv6 socket, which
/// reaches the relays (IPv4 ones through mapped addresses) and gives the node direct paths
/// over both families (where both nodes have IPv6, no NAT stands between them); then, unless
/// one of `peers` is IPv6, IPv4 alone, for a host without IPv6 (disabled in its kernel).
pub fn wildcards_for(peers: &[SocketAddr], port: u16) -> Vec<SocketAddr> {
    let mut v = vec![SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))];
    if !peers.iter().any(SocketAddr::is_ipv6) {
        v.push(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)));
    }
    v
}

/// Binds the first of `addrs` that can be bound; the error is the first address's.
pub fn bind_first(
    factory: &dyn SocketFactory,
    addrs: &[SocketAddr],
) -> Result<(UdpSocket, SocketAddr), (SocketAddr, io::Error)> {
    let mut first: Option<(SocketAddr, io::Error)> = None;
    for &a in addrs {
        match factory.bind_udp(a) {
            Ok(s) => {
                if let Some((failed, e)) = &first {
                    tracing::info!(%failed, error = %e, bound = %a, "no dual-stack socket: IPv4 only");
                }
                return Ok((s, a));
            }
            Err(e) => {
                first.get_or_insert((a, e));
            }
        }
    }
    Err(first.unwrap_or_else(|| {
        let any = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
        (
            any,
            io::Error::new(io::ErrorKind::InvalidInput, "no address to bind"),
        )
    }))
}

/// The address a packet came from, as the engine knows it: a dual-stack socket reports IPv4
/// senders as `::ffff:a.b.c.d`, the engine was given `a.b.c.d`.
pub fn normalize(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, v6.port())),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

/// The destination as the socket wants it: an IPv4 address becomes IPv4-mapped on an IPv6
/// socket.
pub fn to_family(dst: SocketAddr, local: SocketAddr) -> SocketAddr {
    match (dst, local) {
        (SocketAddr::V4(v4), SocketAddr::V6(_)) => {
            SocketAddr::from((v4.ip().to_ipv6_mapped(), v4.port()))
        }
        _ => dst,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_addresses_round_trip() {
        let v4: SocketAddr = SocketAddr::from((Ipv4Addr::new(198, 18, 0, 1), 7000));
        let local = SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0));
        let mapped = to_family(v4, local);
        assert!(mapped.is_ipv6());
        assert_eq!(normalize(mapped), v4);
        assert_eq!(
            to_family(v4, SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))),
            v4
        );
    }

    #[cfg(target_os = "linux")]
    fn get(s: &UdpSocket, level: libc::c_int, name: libc::c_int) -> libc::c_int {
        use std::os::fd::AsRawFd;
        let mut v: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: live fd; `v` and `len` are valid for writes of the sizes given.
        let rc = unsafe {
            libc::getsockopt(
                s.as_raw_fd(),
                level,
                name,
                std::ptr::from_mut(&mut v).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0);
        v
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn datagrams_leave_with_df_and_ignore_the_kernel_pmtu_cache() -> io::Result<()> {
        let s4 = DefaultSocketFactory.bind_udp(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))?;
        assert_eq!(
            get(&s4, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER),
            libc::IP_PMTUDISC_PROBE
        );
        let s6 = DefaultSocketFactory.bind_udp(SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)))?;
        assert_eq!(
            get(&s6, libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER),
            libc::IPV6_PMTUDISC_PROBE
        );
        assert_eq!(get(&s6, libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG), 1);
        assert_eq!(
            get(&s6, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER),
            libc::IP_PMTUDISC_PROBE
        );
        Ok(())
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn buffers_get_past_the_sysctl_cap_as_root() -> io::Result<()> {
        let s = DefaultSocketFactory.bind_udp(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))?;
        let rcv = get(&s, libc::SOL_SOCKET, libc::SO_RCVBUF) as usize;
        let snd = get(&s, libc::SOL_SOCKET, libc::SO_SNDBUF) as usize;
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            // The kernel doubles what it is given (bookkeeping overhead).
            assert!(rcv >= SOCKET_BUFFER && snd >= SOCKET_BUFFER, "{rcv} {snd}");
        } else {
            assert!(rcv > 0 && snd > 0);
        }
        Ok(())
    }

    #[test]
    fn tcp_sockets_from_the_default_factory() -> io::Result<()> {
        let l = DefaultSocketFactory.listen_tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        let addr = l.local_addr()?;
        assert_ne!(addr.port(), 0);
        let s = DefaultSocketFactory.tcp_socket(addr)?;
        assert!(s.nodelay()?);
        assert!(s.peer_addr().is_err(), "not connected yet");
        Ok(())
    }

    #[test]
    fn binds_ephemeral_ports() -> io::Result<()> {
        let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, 1));
        let (s, bound) =
            bind_first(&DefaultSocketFactory, &wildcards_for(&[v4], 0)).map_err(|(_, e)| e)?;
        assert_ne!(s.local_addr()?.port(), 0);
        // Dual stack wherever the host has IPv6: IPv4 relays are reached through it too.
        assert!(bound.is_ipv6() || std::fs::metadata("/proc/net/if_inet6").is_err());
        let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, 1));
        assert_eq!(
            wildcards_for(&[v4, v6], 0).len(),
            1,
            "an IPv6 relay needs IPv6"
        );
        Ok(())
    }
}
