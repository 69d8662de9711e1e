//! # veil-ffi
//!
//! Veil's node for apps, through [UniFFI](https://mozilla.github.io/uniffi-rs): Kotlin for
//! Android's `VpnService`, Swift for iOS's `NEPacketTunnelProvider`, and Python for the tests.
//!
//! One object, [`VeilNode`], made from a join token and a [`VeilConfig`]. It owns its tokio
//! runtime (no global state: two nodes in one process are two runtimes), and runs the same
//! node loop as `veil up` (`veil_io::NodeRunner`) on the TUN descriptor the platform hands it.
//!
//! The order of calls on a phone:
//! 1. [`VeilNode::new`] with the token, the configuration and the platform's
//!    [`SecretStore`] (the node key lives there), [`SocketProtector`] (Android's
//!    `VpnService.protect`) and [`LogSink`];
//! 2. [`VeilNode::tunnel_settings`]: the addresses, routes, MTU and DNS servers to build the
//!    interface with;
//! 3. [`VeilNode::start`] with the interface's file descriptor;
//! 4. [`VeilNode::next_event`] in a loop: connected, peers, paths with their MTU, and
//!    `SettingsChanged` when the interface must be rebuilt (then [`VeilNode::set_tun`] with
//!    the new descriptor); [`VeilNode::status`] and [`VeilNode::peers`] for the screens;
//!    [`VeilNode::network_changed`] when the platform sees Wi-Fi give way to cellular;
//! 5. [`VeilNode::stop`].

mod config;
mod error;
mod events;
mod logging;
mod node;
mod platform;
mod records;

pub use config::{default_config, PrivateMode, RelayTransportMode, VeilConfig};
pub use error::VeilError;
pub use events::VeilEvent;
pub use logging::{LogLevel, LogSink};
pub use node::VeilNode;
pub use platform::{SecretStore, SocketProtector};
pub use records::{Counter, IpRoute, NodeStatus, PeerInfo, TunnelSettings};

uniffi::setup_scaffolding!();

/// The version of the library, for an app's about screen and bug reports.
#[uniffi::export]
pub fn veil_version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}
