//! The TUN device. It either is created here, by name, with the node's overlay addresses (whose
//! prefix lengths give the kernel its connected routes into the overlay), or is handed over as
//! a file descriptor by a platform that configures it itself (Android, iOS). On Windows the
//! device is a Wintun adapter: tun-rs loads `wintun.dll`, which must lie next to the program
//! ([`wintun_dll`]).

#[cfg(unix)]
use crate::tun_fd::FdDevice;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
#[cfg(unix)]
use std::os::fd::{AsRawFd, OwnedFd};
#[cfg(not(any(target_os = "android", target_os = "ios")))]
use tun_rs::{AsyncDevice, DeviceBuilder};

/// Prefix length of the overlay IPv6 network (the network's ULA /48).
pub const IPV6_PREFIX_LEN: u8 = 48;

/// Where the TUN device comes from.
#[derive(Debug)]
pub enum TunSource {
    /// Create a device (`name` or a kernel-chosen one) and configure its addresses and MTU.
    Create {
        /// Interface name, e.g. `veil0`.
        name: Option<String>,
        /// Interface MTU.
        mtu: u16,
    },
    /// A TUN file descriptor opened and configured by the platform, without packet
    /// information (`IFF_NO_PI`) and without `IFF_VNET_HDR`.
    #[cfg(unix)]
    Fd(OwnedFd),
}

/// The overlay addresses a created device gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TunAddrs {
    /// Overlay IPv4 and the prefix length of the pool.
    pub ipv4: (Ipv4Addr, u8),
    /// Overlay IPv6 (its prefix length is [`IPV6_PREFIX_LEN`]).
    pub ipv6: Ipv6Addr,
}

/// The TUN device could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("could not set up TUN device {name}: {source}: {hint}")]
pub struct TunError {
    /// The device name (or a description of the file descriptor).
    pub name: String,
    /// What to do about it.
    pub hint: &'static str,
    /// The OS error.
    #[source]
    pub source: io::Error,
}

impl TunError {
    #[cfg(unix)]
    fn new(name: String, source: io::Error) -> Self {
        let hint = match source.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => "run veil as root or give it CAP_NET_ADMIN",
            Some(libc::ENOENT) | Some(libc::ENODEV) => {
                "check that /dev/net/tun exists (modprobe tun)"
            }
            Some(libc::EBUSY) | Some(libc::EEXIST) => {
                "the name is in use: stop the other process or choose another name with --tun"
            }
            Some(libc::EINVAL) => {
                "check the name (at most 15 characters, no spaces or '/') and that no other, non-TUN interface has it"
            }
            _ => "check the device name and that /dev/net/tun is usable",
        };
        TunError { name, hint, source }
    }

    #[cfg(windows)]
    fn new(name: String, source: io::Error) -> Self {
        /// ERROR_ACCESS_DENIED.
        const ACCESS_DENIED: i32 = 5;
        let hint = if source.raw_os_error() == Some(ACCESS_DENIED)
            || source.kind() == io::ErrorKind::PermissionDenied
        {
            "run veil from an elevated prompt (Run as administrator)"
        } else if source.kind() == io::ErrorKind::NotFound {
            "put the amd64 wintun.dll (https://www.wintun.net, or the build output of scripts/build-windows.sh) next to veil.exe"
        } else {
            "check that veil runs as administrator and that wintun.dll next to veil.exe is the amd64 build from https://www.wintun.net"
        };
        TunError { name, hint, source }
    }
}

/// Where `wintun.dll` must be: next to the running program (the first place Windows looks
/// too, but an absolute path leaves no room for a DLL planted elsewhere on the search path).
/// `NotFound`, naming the path, when it is not there.
#[cfg(windows)]
pub fn wintun_dll() -> io::Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let dll = exe.with_file_name("wintun.dll");
    if dll.is_file() {
        Ok(dll)
    } else {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} is missing", dll.display()),
        ))
    }
}

/// A GUID for the Wintun adapter `name`, the same on every run (FNV-1a of the name): Windows
/// then sees the same network each time instead of a new "Network N" per start.
#[cfg(windows)]
fn adapter_guid(name: &str) -> u128 {
    let mut h: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    for b in b"veil wintun adapter ".iter().chain(name.as_bytes()) {
        h ^= u128::from(*b);
        h = h.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
    }
    h
}

/// A device made here (tun-rs), or a platform's descriptor.
enum Dev {
    #[cfg(not(any(target_os = "android", target_os = "ios")))]
    Created(AsyncDevice),
    #[cfg(unix)]
    Fd(FdDevice),
}

/// An open TUN device.
pub struct Tun {
    dev: Dev,
    name: String,
    /// Whether veil-io configured the addresses (and so may change them).
    managed: bool,
    /// The MTU it was created with (unknown for a platform's device).
    mtu: Option<u16>,
    ipv4: Option<(Ipv4Addr, u8)>,
}

impl Tun {
    /// Opens the device described by `source`; a created device gets `addrs`.
    /// With `offload`, a created device exchanges segmentation-offloaded packets with the
    /// kernel where it can (Linux).
    pub fn open(source: TunSource, addrs: TunAddrs, offload: bool) -> Result<Tun, TunError> {
        match source {
            TunSource::Create { name, mtu } => Self::create(name, mtu, addrs, offload),
            #[cfg(unix)]
            TunSource::Fd(fd) => Self::from_fd(fd),
        }
    }

    /// Phones: only the platform may create the interface (`VpnService`,
    /// `NEPacketTunnelProvider`); the node takes its descriptor.
    #[cfg(any(target_os = "android", target_os = "ios"))]
    fn create(
        name: Option<String>,
        _mtu: u16,
        _addrs: TunAddrs,
        _offload: bool,
    ) -> Result<Tun, TunError> {
        Err(TunError {
            name: name.unwrap_or_else(|| "(kernel-named)".into()),
            hint: "this platform's TUN interface is made by the app (VpnService or NEPacketTunnelProvider); pass its file descriptor",
            source: io::Error::from(io::ErrorKind::Unsupported),
        })
    }

    #[cfg(not(any(target_os = "android", target_os = "ios")))]
    fn create(
        name: Option<String>,
        mtu: u16,
        addrs: TunAddrs,
        offload: bool,
    ) -> Result<Tun, TunError> {
        let label = name.clone().unwrap_or_else(|| "(kernel-named)".into());
        let mut builder = DeviceBuilder::new()
            .mtu(mtu)
            .ipv4(addrs.ipv4.0, addrs.ipv4.1, None)
            .ipv6(addrs.ipv6, IPV6_PREFIX_LEN);
        #[cfg(unix)]
        {
            builder = builder.packet_information(false);
        }
        #[cfg(windows)]
        {
            let dll = wintun_dll().map_err(|e| TunError::new(label.clone(), e))?;
            let dll = dll.to_str().map(str::to_owned).ok_or_else(|| {
                let e = io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("the path {} is not Unicode", dll.display()),
                );
                TunError::new(label.clone(), e)
            })?;
            builder = builder.wintun_file(dll);
            if let Some(name) = &name {
                builder = builder.device_guid(adapter_guid(name));
            }
        }
        #[cfg(target_os = "linux")]
        {
            // The kernel hands over (and takes) TCP segments of up to 64 KiB with a
            // virtio-net header, instead of one MTU-sized packet per read and write.
            builder = builder.offload(offload);
        }
        #[cfg(not(target_os = "linux"))]
        let _ = offload;
        if let Some(name) = name {
            builder = builder.name(name);
        }
        let dev = builder
            .build_async()
            .map_err(|e| TunError::new(label.clone(), e))?;
        let name = dev.name().unwrap_or(label);
        Ok(Tun {
            dev: Dev::Created(dev),
            name,
            managed: true,
            mtu: Some(mtu),
            ipv4: Some(addrs.ipv4),
        })
    }

    #[cfg(unix)]
    fn from_fd(fd: OwnedFd) -> Result<Tun, TunError> {
        let name = format!("fd {}", fd.as_raw_fd());
        let dev = FdDevice::new(fd).map_err(|e| TunError::new(name.clone(), e))?;
        Ok(Tun {
            dev: Dev::Fd(dev),
            name,
            managed: false,
            mtu: None,
            ipv4: None,
        })
    }

    /// Whether veil-io made the device (and configured its addresses).
    pub fn managed(&self) -> bool {
        self.managed
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Moves the device to a new overlay IPv4 (when the rendezvous assigned another address
    /// than the one remembered). A platform-configured device is left alone.
    pub fn set_ipv4(&mut self, addr: Ipv4Addr, prefix: u8) -> Result<(), TunError> {
        if !self.managed || self.ipv4 == Some((addr, prefix)) {
            return Ok(());
        }
        match &self.dev {
            #[cfg(not(any(target_os = "android", target_os = "ios")))]
            Dev::Created(dev) => dev
                .set_network_address(addr, prefix, None)
                .map_err(|e| TunError::new(self.name.clone(), e))?,
            #[cfg(unix)]
            Dev::Fd(_) => {}
        }
        self.ipv4 = Some((addr, prefix));
        Ok(())
    }

    /// Waits until a read may succeed.
    pub async fn readable(&self) -> io::Result<()> {
        match &self.dev {
            #[cfg(not(any(target_os = "android", target_os = "ios")))]
            Dev::Created(d) => d.readable().await,
            #[cfg(unix)]
            Dev::Fd(d) => d.readable().await,
        }
    }

    fn try_recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        match &self.dev {
            #[cfg(not(any(target_os = "android", target_os = "ios")))]
            Dev::Created(d) => d.try_recv(buf),
            #[cfg(unix)]
            Dev::Fd(d) => d.try_recv(buf),
        }
    }

    fn try_send(&self, packet: &[u8]) -> io::Result<usize> {
        match &self.dev {
            #[cfg(not(any(target_os = "android", target_os = "ios")))]
            Dev::Created(d) => d.try_send(packet),
            #[cfg(unix)]
            Dev::Fd(d) => d.try_send(packet),
        }
    }

    /// The tun-rs device, when it was created with offload (Linux).
    #[cfg(target_os = "linux")]
    fn offloaded(&self) -> Option<&AsyncDevice> {
        match &self.dev {
            Dev::Created(d) if d.tcp_gso() => Some(d),
            _ => None,
        }
    }

    /// Whether the device exchanges segmentation-offloaded packets with the kernel.
    pub fn offload(&self) -> bool {
        #[cfg(target_os = "linux")]
        {
            self.offloaded().is_some()
        }
        #[cfg(not(target_os = "linux"))]
        {
            false
        }
    }

    /// Reads what the device has into `rx` (one read: one packet, or the segments of one
    /// offloaded packet). Returns the number of packets (`WouldBlock` when there is none).
    pub fn recv(&self, rx: &mut TunReader) -> io::Result<usize> {
        #[cfg(target_os = "linux")]
        if let Some(dev) = self.offloaded() {
            return dev.try_recv_multiple(&mut rx.raw, &mut rx.bufs, &mut rx.sizes, 0);
        }
        let buf = rx
            .bufs
            .first_mut()
            .ok_or_else(|| io::Error::other("no buffer"))?;
        let n = self.try_recv(buf)?;
        if let Some(size) = rx.sizes.first_mut() {
            *size = n;
        }
        Ok(1)
    }

    /// Writes the packets queued in `tx` (merging the segments of one TCP flow into one
    /// write where the device takes offloaded packets) and empties it. Returns the number
    /// of writes that failed.
    pub fn send(&self, tx: &mut TunWriter) -> usize {
        let n = std::mem::take(&mut tx.len);
        if n == 0 {
            return 0;
        }
        #[cfg(target_os = "linux")]
        if let Some(dev) = self.offloaded().filter(|_| tx.offset > 0) {
            let dev: &tun_rs::DeviceImpl = dev;
            return match dev.send_multiple(&mut tx.gro, &mut tx.bufs[..n], tx.offset) {
                Ok(_) => 0,
                Err(e) => {
                    tracing::debug!(error = %e, "TUN write failed");
                    1
                }
            };
        }
        let mut failed = 0;
        for buf in &tx.bufs[..n] {
            if let Err(e) = self.try_send(buf) {
                tracing::debug!(error = %e, "TUN write failed");
                failed += 1;
            }
        }
        failed
    }

    /// A writer sized for this device.
    pub fn writer(&self) -> TunWriter {
        TunWriter::new(self.offload())
    }

    /// A reader sized for this device.
    pub fn reader(&self) -> TunReader {
        TunReader::new(self.offload(), self.mtu)
    }
}

/// Packets queued for the TUN, each after the room the virtio-net header needs.
pub struct TunWriter {
    bufs: Vec<Vec<u8>>,
    len: usize,
    /// Room before each packet: the virtio-net header's length with offload, else 0.
    offset: usize,
    #[cfg(target_os = "linux")]
    gro: tun_rs::GROTable,
}

/// Packets per TUN write batch.
pub const TUN_BATCH: usize = 64;

impl TunWriter {
    fn new(offload: bool) -> TunWriter {
        #[cfg(target_os = "linux")]
        let offset = if offload {
            tun_rs::VIRTIO_NET_HDR_LEN
        } else {
            0
        };
        #[cfg(not(target_os = "linux"))]
        let offset = {
            let _ = offload;
            0
        };
        // Segments of one flow are merged into the first one's buffer, which tun-rs does
        // only when that buffer can hold 64 KiB plus twice the header room: smaller buffers
        // silently turn merging off. Untouched capacity costs no memory.
        let capacity = if offset > 0 {
            65_536 + 2 * offset + 64
        } else {
            0
        };
        TunWriter {
            bufs: (0..TUN_BATCH)
                .map(|_| Vec::with_capacity(capacity))
                .collect(),
            len: 0,
            offset,
            #[cfg(target_os = "linux")]
            gro: tun_rs::GROTable::new(),
        }
    }

    /// Queues a copy of `packet`; returns false when the batch is full (write it first).
    pub fn push(&mut self, packet: &[u8]) -> bool {
        let Some(buf) = self.bufs.get_mut(self.len) else {
            return false;
        };
        buf.clear();
        buf.resize(self.offset, 0);
        buf.extend_from_slice(packet);
        self.len += 1;
        true
    }

    /// Whether the batch is full.
    pub fn is_full(&self) -> bool {
        self.len >= self.bufs.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl std::fmt::Debug for TunWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunWriter").field("len", &self.len).finish()
    }
}

/// Buffers for one TUN read: with offload, the raw read and the segments it is split into.
pub struct TunReader {
    /// Only Linux reads offloaded segments (elsewhere it stays empty).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    raw: Vec<u8>,
    bufs: Vec<Vec<u8>>,
    sizes: Vec<usize>,
}

impl TunReader {
    fn new(offload: bool, mtu: Option<u16>) -> TunReader {
        let (raw, count) = if offload {
            #[cfg(target_os = "linux")]
            let raw = tun_rs::VIRTIO_NET_HDR_LEN + 65_535;
            #[cfg(not(target_os = "linux"))]
            let raw = 0;
            (raw, TUN_READ_SEGMENTS)
        } else {
            (0, 1)
        };
        TunReader {
            raw: vec![0u8; raw],
            // A segment is at most the device's MTU; without offload (or knowing it) a packet
            // may be as large as a TUN packet can be.
            bufs: (0..count)
                .map(|_| vec![0u8; mtu.filter(|_| offload).map_or(65_535, usize::from)])
                .collect(),
            sizes: vec![0; count],
        }
    }

    /// Packet `i` of the last read.
    pub fn packet(&self, i: usize) -> Option<&[u8]> {
        self.bufs.get(i)?.get(..*self.sizes.get(i)?)
    }
}

/// Most segments one offloaded read may be split into (a 64 KiB segment of 576-byte
/// packets is about 120).
const TUN_READ_SEGMENTS: usize = 128;

impl std::fmt::Debug for TunReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunReader")
            .field("bufs", &self.bufs.len())
            .finish()
    }
}

impl std::fmt::Debug for Tun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tun")
            .field("name", &self.name)
            .field("managed", &self.managed)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs root and /dev/net/tun; run in a scratch network namespace:
    /// `ip netns add t && ip netns exec t cargo test -p veil-io -- --ignored; ip netns del t`.
    #[tokio::test]
    #[ignore]
    async fn creates_device_with_connected_routes() -> Result<(), Box<dyn std::error::Error>> {
        let addrs = TunAddrs {
            ipv4: (Ipv4Addr::new(100, 64, 1, 2), 10),
            ipv6: "fd12:3456:789a::1".parse()?,
        };
        let source = TunSource::Create {
            name: Some("veiltest0".into()),
            mtu: 1280,
        };
        let mut tun = Tun::open(source, addrs, true)?;
        assert_eq!(tun.name(), "veiltest0");
        let routes = std::process::Command::new("ip").args(["route"]).output()?;
        let routes = String::from_utf8_lossy(&routes.stdout).to_string();
        assert!(routes.contains("100.64.0.0/10 dev veiltest0"), "{routes}");
        let routes = std::process::Command::new("ip")
            .args(["-6", "route"])
            .output()?;
        let routes = String::from_utf8_lossy(&routes.stdout).to_string();
        assert!(
            routes.contains("fd12:3456:789a::/48 dev veiltest0"),
            "{routes}"
        );
        tun.set_ipv4(Ipv4Addr::new(100, 64, 9, 9), 10)?;
        let a = std::process::Command::new("ip")
            .args(["addr", "show", "veiltest0"])
            .output()?;
        assert!(String::from_utf8_lossy(&a.stdout).contains("100.64.9.9/10"));
        Ok(())
    }
}
