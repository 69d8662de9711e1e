//! # veil-proto
//!
//! Veil's sans-IO protocol engine. It owns the handshake, sessions, the obfuscated wire
//! format, and the node and relay state machines. It never touches a socket, a TUN device,
//! a clock or a global RNG: callers pass `now`, unix time and a 32-byte seed, feed it
//! datagrams and TUN packets, and drain what it wants to send.

pub mod cert;
pub mod crypto;
pub mod dns;
pub mod frag;
pub mod handshake;
pub mod inner;
pub mod keys;
pub mod node;
pub mod noise;
pub mod pmtu;
pub mod ratelimit;
pub mod relay;
pub mod replay;
pub mod route;
pub mod session;
pub mod stream;
pub mod token;
pub mod types;
pub mod wire;

pub use cert::{CaKey, CertError, Certificate, Policy};
pub use keys::{Identity, NetworkKeys, RelayKeys};
pub use node::Node;
pub use relay::Relay;
pub use token::{
    create_network, JoinToken, Previous, RelayInfo, RelayToken, TokenError, ROTATION_GRACE_SECS,
};
pub use types::*;
