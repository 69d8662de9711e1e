//! # veil-io
//!
//! The thin tokio layer around the sans-IO engines of `veil-proto`. This crate owns every
//! file descriptor Veil uses (UDP sockets, the TUN device, the local control socket, the state
//! directory) and the clock; it holds no protocol logic. Each runner is one task that waits on
//! its sources with `tokio::select!`, feeds the engine, and after every input drains all of the
//! engine's `poll_*` outputs.
//!
//! - [`socket`]: the [`SocketFactory`] every UDP socket goes through (Android must `protect()` them).
//! - [`tun`]: where the TUN device comes from (created by name, or a platform file descriptor).
//! - [`tun_fd`]: a platform's TUN descriptor (Android, iOS, tests): one packet per read and write
//!   (Unix).
//! - [`node`]: [`NodeRunner`], the node's event loop, and its [`NodeHandle`].
//! - [`relay`]: [`RelayRunner`], the relay's event loop, and its [`RelayHandle`].
//! - [`relay_tcp`]: the relay's TCP listener for nodes whose network blocks UDP.
//! - [`link`]: a node's TCP stream to its relay, and when to use it ([`RelayTransport`]).
//! - [`lockdown`]: the kill switch (nftables; Veil's own sockets carry a firewall mark; not on
//!   Windows yet).
//! - [`metrics`]: Prometheus text of a node's status and peers (`veil up --metrics`).
//! - [`dns`]: the node's DNS listener on its overlay address, and systemd-resolved.
//! - [`control`]: the local control socket (one JSON request and one JSON response per line).
//! - [`ifaddrs`]: the host's interface addresses, offered to peers as direct-path candidates.
//! - [`state`]: files in the state directory (node key, last overlay IPv4).
//! - [`routes`]: the kernel's routes for subnet routes and exits, and forwarding with NAT.
//! - [`report`]: the JSON shapes of `status` and `peers`, shared by server and client.
//! - [`windows`]: Windows only: the elevation check and owner-only ACLs, where Unix has root
//!   and file modes.

pub mod cluster;
pub mod control;
pub mod dns;
pub mod ifaddrs;
pub mod link;
pub mod lockdown;
pub mod metrics;
pub mod node;
pub mod parallel;
pub mod relay;
pub mod relay_tcp;
pub mod report;
pub mod routes;
pub mod socket;
pub mod state;
pub mod tun;
#[cfg(unix)]
pub mod tun_fd;
pub mod udp;
#[cfg(windows)]
pub mod windows;

pub use control::{ControlCommand, ControlHandler, ControlServer};
pub use link::RelayTransport;
pub use node::{NodeError, NodeHandle, NodeOptions, NodeRunner, IPV4_WAIT};
pub use relay::{RelayError, RelayHandle, RelayRunner};
pub use report::{Counters, NodeStatusReport, PeerReport, RelayStatusReport};
pub use socket::{DefaultSocketFactory, SocketFactory};
pub use tun::{TunError, TunSource};
pub use udp::Offload;

/// Size of every packet buffer a runner allocates (once, at start).
pub const BUF_SIZE: usize = 65_536;

/// Most packets taken from one source before the loop looks at the others again.
pub const MAX_BATCH: usize = 64;

/// Time since the unix epoch, as the engines want it at construction.
pub(crate) fn unix_now() -> std::time::Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// A fresh 32-byte seed from the operating system.
pub(crate) fn os_seed() -> std::io::Result<[u8; 32]> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(seed)
}
