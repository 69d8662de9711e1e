//! A TUN interface handed over as a file descriptor by the platform that made it (Android's
//! `VpnService.establish()`, the utun of iOS's `NEPacketTunnelProvider`, or a test that opened
//! `/dev/net/tun` itself): one packet per read and per write, no offloads. On Apple systems
//! each packet carries the 4-byte address family of the utun header, added and removed here.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// The platform's TUN descriptor, registered with tokio.
pub struct FdDevice {
    fd: AsyncFd<OwnedFd>,
}

/// Length of the utun header (address family, network byte order) on Apple systems.
#[cfg(any(target_os = "ios", target_os = "macos"))]
const AF_HEADER: usize = 4;

impl FdDevice {
    /// Takes over `fd`, switching it to non-blocking mode. Must be called inside a tokio
    /// runtime.
    pub fn new(fd: OwnedFd) -> io::Result<FdDevice> {
        let raw = fd.as_raw_fd();
        // SAFETY: fcntl on a descriptor we own; an invalid one gives EBADF, nothing else.
        let flags = unsafe { libc::fcntl(raw, libc::F_GETFL) };
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: as above.
        if unsafe { libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is an `OwnedFd`: open, and the `AsyncFd` owns it (and returns that same
        // descriptor from `as_raw_fd`) until it is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(FdDevice { fd })
    }

    /// Waits until a read may succeed.
    pub async fn readable(&self) -> io::Result<()> {
        // The readiness stays set until a read returns `WouldBlock` (`try_io` clears it).
        self.fd.readable().await.map(|mut g| g.retain_ready())
    }

    /// Reads one packet into `buf`; `WouldBlock` when there is none.
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.fd
            .try_io(Interest::READABLE, |fd| read_packet(fd.as_raw_fd(), buf))
    }

    /// Writes one packet. A full device queue drops it (`WouldBlock`), as a NIC would.
    pub fn try_send(&self, packet: &[u8]) -> io::Result<usize> {
        write_packet(self.fd.get_ref().as_raw_fd(), packet)
    }
}

#[cfg(not(any(target_os = "ios", target_os = "macos")))]
fn read_packet(fd: i32, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of its length for the duration of the call.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

#[cfg(not(any(target_os = "ios", target_os = "macos")))]
fn write_packet(fd: i32, packet: &[u8]) -> io::Result<usize> {
    // SAFETY: `packet` is valid for reads of its length for the duration of the call.
    let n = unsafe { libc::write(fd, packet.as_ptr().cast(), packet.len()) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

#[cfg(any(target_os = "ios", target_os = "macos"))]
fn read_packet(fd: i32, buf: &mut [u8]) -> io::Result<usize> {
    let mut header = [0u8; AF_HEADER];
    let iov = [
        libc::iovec {
            iov_base: header.as_mut_ptr().cast(),
            iov_len: AF_HEADER,
        },
        libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        },
    ];
    // SAFETY: both iovecs point to live buffers of the stated lengths.
    let n = unsafe { libc::readv(fd, iov.as_ptr(), 2) };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    Ok(n.saturating_sub(AF_HEADER))
}

#[cfg(any(target_os = "ios", target_os = "macos"))]
fn write_packet(fd: i32, packet: &[u8]) -> io::Result<usize> {
    let family = match packet.first().map(|b| b >> 4) {
        Some(4) => libc::AF_INET,
        Some(6) => libc::AF_INET6,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not an IP packet",
            ))
        }
    };
    let header = u32::try_from(family).unwrap_or(0).to_be_bytes();
    let iov = [
        libc::iovec {
            iov_base: header.as_ptr() as *mut libc::c_void,
            iov_len: AF_HEADER,
        },
        libc::iovec {
            iov_base: packet.as_ptr() as *mut libc::c_void,
            iov_len: packet.len(),
        },
    ];
    // SAFETY: both iovecs point to live buffers of the stated lengths; writev only reads them.
    let n = unsafe { libc::writev(fd, iov.as_ptr(), 2) };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    Ok(n.saturating_sub(AF_HEADER))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::os::fd::FromRawFd;

    /// A socketpair of datagrams behaves like a TUN descriptor: one packet per read.
    fn pair() -> (OwnedFd, OwnedFd) {
        let mut fds = [0i32; 2];
        // SAFETY: `fds` has room for the two descriptors socketpair writes.
        let rc = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_DGRAM, 0, fds.as_mut_ptr()) };
        assert_eq!(rc, 0);
        // SAFETY: both descriptors were just created and are owned by nobody else.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    #[tokio::test]
    async fn packets_cross_one_per_read_and_empty_reads_would_block() {
        let (a, b) = pair();
        let (a, b) = (FdDevice::new(a).expect("a"), FdDevice::new(b).expect("b"));
        let mut buf = [0u8; 2048];
        assert_eq!(
            b.try_recv(&mut buf).map_err(|e| e.kind()),
            Err(io::ErrorKind::WouldBlock)
        );
        a.try_send(&[0x45, 1, 2, 3]).expect("send");
        a.try_send(&[0x60, 9]).expect("send");
        b.readable().await.expect("readable");
        assert_eq!(b.try_recv(&mut buf).expect("first"), 4);
        assert_eq!(&buf[..4], &[0x45, 1, 2, 3]);
        assert_eq!(b.try_recv(&mut buf).expect("second"), 2);
        assert_eq!(
            b.try_recv(&mut buf).map_err(|e| e.kind()),
            Err(io::ErrorKind::WouldBlock)
        );
    }
}
