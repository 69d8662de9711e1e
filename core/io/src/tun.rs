//! The TUN device. It either is created here, by name, with the node's overlay addresses (whose
//! prefix lengths give the kernel its connected routes into the overlay), or is handed over as
//! a file descriptor by a platform that configures it itself (Android, iOS).

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{IntoRawFd, OwnedFd};
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
}

/// An open TUN device.
pub struct Tun {
    dev: AsyncDevice,
    name: String,
    /// Whether veil-io configured the addresses (and so may change them).
    managed: bool,
    ipv4: Option<(Ipv4Addr, u8)>,
}

impl Tun {
    /// Opens the device described by `source`; a created device gets `addrs`.
    pub fn open(source: TunSource, addrs: TunAddrs) -> Result<Tun, TunError> {
        match source {
            TunSource::Create { name, mtu } => Self::create(name, mtu, addrs),
            TunSource::Fd(fd) => Self::from_fd(fd),
        }
    }

    fn create(name: Option<String>, mtu: u16, addrs: TunAddrs) -> Result<Tun, TunError> {
        let label = name.clone().unwrap_or_else(|| "(kernel-named)".into());
        let mut builder = DeviceBuilder::new()
            .mtu(mtu)
            .ipv4(addrs.ipv4.0, addrs.ipv4.1, None)
            .ipv6(addrs.ipv6, IPV6_PREFIX_LEN)
            .packet_information(false);
        if let Some(name) = name {
            builder = builder.name(name);
        }
        let dev = builder
            .build_async()
            .map_err(|e| TunError::new(label.clone(), e))?;
        let name = dev.name().unwrap_or(label);
        Ok(Tun {
            dev,
            name,
            managed: true,
            ipv4: Some(addrs.ipv4),
        })
    }

    fn from_fd(fd: OwnedFd) -> Result<Tun, TunError> {
        let raw = fd.into_raw_fd();
        // SAFETY: `raw` comes from an `OwnedFd`, so it is open and owned by nobody else; the
        // device takes that ownership over and closes it on drop. If the descriptor is not a
        // TUN device, reads and writes fail with an error rather than touching foreign memory.
        let dev = unsafe { AsyncDevice::from_fd(raw) }
            .map_err(|e| TunError::new(format!("fd {raw}"), e))?;
        let name = dev.name().unwrap_or_else(|_| format!("fd {raw}"));
        Ok(Tun {
            dev,
            name,
            managed: false,
            ipv4: None,
        })
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
        self.dev
            .set_network_address(addr, prefix, None)
            .map_err(|e| TunError::new(self.name.clone(), e))?;
        self.ipv4 = Some((addr, prefix));
        Ok(())
    }

    /// The device itself, for reading and writing packets.
    pub fn device(&self) -> &AsyncDevice {
        &self.dev
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
        let mut tun = Tun::open(source, addrs)?;
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
