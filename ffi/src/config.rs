//! The node's configuration as an app passes it: the settings of `veil up`'s config file
//! (`docs/config.md`) that make sense on a phone, checked with errors that name the field.

use crate::error::VeilError;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

/// Private mode (`private` in `docs/config.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum PrivateMode {
    /// Direct paths where they work, the relay otherwise.
    Off,
    /// Relays only: no peer learns this device's addresses.
    Relay,
    /// Two relays: the home relay never learns this device's address (needs two relays in
    /// the token).
    TwoHop,
}

/// How the relay is reached (`relay_transport`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum RelayTransportMode {
    /// UDP, and a TCP stream when UDP gets no answer.
    Auto,
    /// UDP only.
    Udp,
    /// A TCP stream only.
    Tcp,
}

/// Settings of a node; start from [`default_config`].
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct VeilConfig {
    /// A directory the app owns (Android: `filesDir`; iOS: the app group container) where the
    /// node remembers its overlay IPv4 and the newest policy. None: nothing is remembered, and
    /// the address is claimed afresh each start.
    pub state_dir: Option<String>,
    /// MTU of the interface the platform builds: 1280 to 65535. Paths that carry less are
    /// served by overlay fragmentation and the peers' Packet Too Big, never by rebuilding the
    /// interface.
    pub tun_mtu: u16,
    /// DNS servers the interface should use (IPv4 or IPv6 addresses); empty: the system's.
    pub dns_servers: Vec<String>,
    /// Look for direct paths to peers (off: always through the relay).
    pub direct_paths: bool,
    /// Private mode.
    pub private_mode: PrivateMode,
    /// How the relay is reached.
    pub relay_transport: RelayTransportMode,
    /// Move to a fresh UDP socket this often, and after re-keys, in seconds (0: never).
    pub port_rotation_secs: u64,
    /// Keepalives to the relay while idle, in seconds (0: off). Phones may want this longer
    /// than the default 25 to save power, at the cost of NAT mappings expiring.
    pub keepalive_secs: u64,
    /// Offer AES-256-GCM to peers when this CPU has AES instructions.
    pub aes: bool,
    /// The network's IPv4 pool, `ADDRESS/LEN` (all nodes of a network use the same).
    pub ipv4_pool: String,
    /// This device's DNS name: members reach it as `NAME.<dns_domain>` (a lowercase label:
    /// a-z, 0-9 and `-`). None: no name.
    pub name: Option<String>,
    /// The network's DNS domain (default `veil`).
    pub dns_domain: String,
    /// Send everything outside the overlay through this exit node (its DNS name or overlay
    /// IPv4); None: only the overlay goes through the tunnel.
    pub exit_node: Option<String>,
    /// Use the subnets other nodes advertise (their routes join `TunnelSettings::routes`).
    pub accept_routes: bool,
    /// This device's certificate (the text `veil cert issue` printed), in networks whose
    /// token carries a CA; None elsewhere.
    pub certificate: Option<String>,
    /// Which logs reach the [`crate::LogSink`]: a `tracing` filter such as `info` or
    /// `veil_io=debug,info`.
    pub log_filter: String,
}

/// The defaults of `veil up` (`docs/config.md`).
#[uniffi::export]
pub fn default_config() -> VeilConfig {
    let engine = veil_proto::NodeConfig::default();
    VeilConfig {
        state_dir: None,
        tun_mtu: veil_proto::DEFAULT_TUN_MTU,
        dns_servers: Vec::new(),
        direct_paths: true,
        private_mode: PrivateMode::Off,
        relay_transport: RelayTransportMode::Auto,
        port_rotation_secs: 0,
        keepalive_secs: engine.keepalive.as_secs(),
        aes: true,
        ipv4_pool: format!("{}/{}", engine.ipv4_pool.0, engine.ipv4_pool.1),
        name: None,
        dns_domain: engine.dns_domain.clone(),
        exit_node: None,
        accept_routes: true,
        certificate: None,
        log_filter: "info".into(),
    }
}

/// A configuration after its checks.
#[derive(Clone, Debug)]
pub(crate) struct Checked {
    pub raw: VeilConfig,
    pub pool: (Ipv4Addr, u8),
    pub dns: Vec<IpAddr>,
}

fn bad(field: &str, detail: impl Into<String>) -> VeilError {
    VeilError::InvalidConfig {
        field: field.into(),
        detail: detail.into(),
    }
}

impl VeilConfig {
    /// Checks every field; the error names the first bad one.
    pub(crate) fn check(self) -> Result<Checked, VeilError> {
        if self.tun_mtu < 1280 {
            return Err(bad(
                "tun_mtu",
                format!(
                    "{} is below 1280, the least IPv6 allows; use 1280 to 65535 (default {})",
                    self.tun_mtu,
                    veil_proto::DEFAULT_TUN_MTU
                ),
            ));
        }
        let dns = self
            .dns_servers
            .iter()
            .map(|s| {
                s.trim().parse::<IpAddr>().map_err(|_| {
                    bad(
                        "dns_servers",
                        format!("{s:?} is not an IP address (e.g. 100.64.0.1 or fd00::1)"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let pool = parse_pool(&self.ipv4_pool)?;
        if self.log_filter.trim().is_empty()
            || tracing_subscriber::EnvFilter::try_new(&self.log_filter).is_err()
        {
            return Err(bad(
                "log_filter",
                format!(
                    "{:?} is not a log filter; use a level (error, warn, info, debug, trace) or target=level pairs",
                    self.log_filter
                ),
            ));
        }
        if let Some(name) = &self.name {
            if !veil_proto::dns::valid_name(name) {
                return Err(bad(
                    "name",
                    format!("{name:?} is not a DNS label: use 1 to 63 of a-z, 0-9 and `-`, not starting or ending with `-`"),
                ));
            }
        }
        if !veil_proto::dns::valid_domain(&self.dns_domain) {
            return Err(bad(
                "dns_domain",
                format!(
                    "{:?} is not a domain such as `veil` or `corp.example`",
                    self.dns_domain
                ),
            ));
        }
        if let Some(dir) = &self.state_dir {
            if dir.is_empty() {
                return Err(bad(
                    "state_dir",
                    "is empty; give the app's files directory, or none",
                ));
            }
        }
        Ok(Checked {
            raw: self,
            pool,
            dns,
        })
    }
}

fn parse_pool(text: &str) -> Result<(Ipv4Addr, u8), VeilError> {
    let err = || {
        bad(
            "ipv4_pool",
            format!("{text:?} is not ADDRESS/LEN with LEN 8 to 30 (default 100.64.0.0/10)"),
        )
    };
    let (addr, len) = text.trim().split_once('/').ok_or_else(err)?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| err())?;
    let len: u8 = len.parse().map_err(|_| err())?;
    if !(8..=30).contains(&len) {
        return Err(err());
    }
    let mask = u32::MAX << (32 - u32::from(len));
    Ok((Ipv4Addr::from(u32::from(addr) & mask), len))
}

impl Checked {
    /// The engine's configuration with the token's relays and a remembered address.
    pub(crate) fn engine(
        &self,
        relays: Vec<(std::net::SocketAddr, [u8; 32])>,
        ipv4_hint: Option<Ipv4Addr>,
    ) -> veil_proto::NodeConfig {
        let c = &self.raw;
        veil_proto::NodeConfig {
            relays,
            ipv4_pool: self.pool,
            ipv4_hint,
            keepalive: Duration::from_secs(c.keepalive_secs),
            tun_mtu: c.tun_mtu,
            direct: c.direct_paths,
            private: match c.private_mode {
                PrivateMode::Off => veil_proto::Privacy::Off,
                PrivateMode::Relay => veil_proto::Privacy::Relay,
                PrivateMode::TwoHop => veil_proto::Privacy::TwoHop,
            },
            aes: c.aes && veil_proto::crypto::hardware_aes(),
            name: c.name.clone(),
            dns_domain: c.dns_domain.clone(),
            exit_node: c.exit_node.clone(),
            accept_routes: c.accept_routes,
            // Phones cannot listen on port 53: DNS to the pool's DNS address is answered
            // inside the TUN.
            dns_intercept: true,
            ..veil_proto::NodeConfig::default()
        }
    }

    pub(crate) fn relay_transport(&self) -> veil_io::RelayTransport {
        match self.raw.relay_transport {
            RelayTransportMode::Auto => veil_io::RelayTransport::Auto,
            RelayTransportMode::Udp => veil_io::RelayTransport::Udp,
            RelayTransportMode::Tcp => veil_io::RelayTransport::Tcp,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_their_own_checks() {
        let c = default_config().check();
        assert!(c.is_ok(), "{c:?}");
    }

    type Change = Box<dyn Fn(&mut VeilConfig)>;

    #[test]
    fn each_bad_field_is_named() {
        let cases: Vec<(&str, Change)> = vec![
            ("tun_mtu", Box::new(|c| c.tun_mtu = 1000)),
            (
                "dns_servers",
                Box::new(|c| c.dns_servers = vec!["dns.example".into()]),
            ),
            ("ipv4_pool", Box::new(|c| c.ipv4_pool = "100.64.0.0".into())),
            (
                "ipv4_pool",
                Box::new(|c| c.ipv4_pool = "100.64.0.0/31".into()),
            ),
            ("log_filter", Box::new(|c| c.log_filter = "info,=[".into())),
            ("state_dir", Box::new(|c| c.state_dir = Some(String::new()))),
            ("name", Box::new(|c| c.name = Some("Bad Name".into()))),
            ("dns_domain", Box::new(|c| c.dns_domain = "a..b".into())),
        ];
        for (field, change) in cases {
            let mut c = default_config();
            change(&mut c);
            match c.check() {
                Err(VeilError::InvalidConfig { field: f, detail }) => {
                    assert_eq!(f, field, "{detail}");
                    assert!(!detail.is_empty());
                }
                other => panic!("{field}: expected an error, got {other:?}"),
            }
        }
    }

    #[test]
    fn pool_is_normalized_and_mapped() {
        let mut c = default_config();
        c.ipv4_pool = "10.77.3.9/16".into();
        c.private_mode = PrivateMode::Relay;
        let checked = c.check().expect("valid");
        assert_eq!(checked.pool, (Ipv4Addr::new(10, 77, 0, 0), 16));
        let e = checked.engine(Vec::new(), None);
        assert_eq!(e.private, veil_proto::Privacy::Relay);
        assert_eq!(e.ipv4_pool, (Ipv4Addr::new(10, 77, 0, 0), 16));
    }
}
