//! The node's settings: defaults, the TOML config file, `VEIL_<KEY>` environment variables and
//! flags, merged with precedence flags > environment > file > defaults, then validated into
//! [`Settings`] and mapped onto `veil_proto::NodeConfig`. Every error names the key, where the
//! value came from and what is expected. This module reads no other file and opens nothing.

use serde::Deserialize;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;
use veil_io::{Offload, RelayTransport};
use veil_proto::NodeConfig;

/// Every key of the config file, in documentation order.
pub const KEYS: [&str; 26] = [
    "tun_name",
    "port",
    "keepalive_secs",
    "idle_timeout_secs",
    "rekey_after_secs",
    "padding",
    "pad_bucket",
    "direct_paths",
    "private",
    "private_peers",
    "cover_pps",
    "port_rotation_secs",
    "ipv4_pool",
    "relay_transport",
    "offload",
    "crypto_threads",
    "cipher",
    "metrics",
    "name",
    "dns_domain",
    "lockdown",
    "advertise_routes",
    "advertise_exit",
    "exit_node",
    "accept_routes",
    "log",
];

/// Default period of socket rotation: ten minutes.
pub const DEFAULT_PORT_ROTATION_SECS: u64 = 600;

/// Name of the TUN device when nothing else is configured.
pub const DEFAULT_TUN_NAME: &str = "veil0";

/// A settings problem, as one line naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML (or a value has the wrong type).
    #[error("config {}: {message} (line {line})", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// What the parser said.
        message: String,
    },
    /// A key that does not exist.
    #[error("config {}: unknown key `{key}` (known keys: {})", path.display(), KEYS.join(", "))]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
    },
    /// A value outside what the key accepts.
    #[error("{origin}: `{key}` must be {expected}, got {got}")]
    Invalid {
        /// `config FILE`, `environment variable VEIL_X` or `flag --x`.
        origin: String,
        /// The key.
        key: &'static str,
        /// What the key accepts.
        expected: &'static str,
        /// The value given.
        got: String,
    },
    /// A setting this platform has no implementation of yet.
    #[error("{setting} is not supported on Windows yet: {why} (see docs/windows.md)")]
    NotOnWindows {
        /// The flag, variable or config key, as given.
        setting: String,
        /// What it would need.
        why: &'static str,
    },
}

/// What a key accepts, for error messages (and `docs/config.md`).
fn expected(key: &str) -> &'static str {
    match key {
        "tun_name" => "an interface name of 1 to 15 characters without '/' or spaces",
        "port" => "a UDP port from 0 to 65535 (0 = ephemeral)",
        "keepalive_secs" => "a whole number of seconds (0 = off)",
        "idle_timeout_secs" | "rekey_after_secs" => "a whole number of seconds, at least 1",
        "padding" => "`buckets` (to a multiple of pad_bucket), `mtu` (every datagram to the path MTU) or `off`",
        "pad_bucket" => "a whole number of bytes from 0 to 1024 (0 or 1 = no padding)",
        "direct_paths" => "true or false",
        "private" => "0 (off), 1 (relays only) or 2 (two relays: a guard and the home relay)",
        "cover_pps" => "a whole number of datagrams per second from 0 (off) to 1000; needs padding = \"mtu\" (the default when cover_pps is set)",
        "private_peers" => "a list of overlay addresses (IPv4 or IPv6) of peers to reach through relays only",
        "port_rotation_secs" => "a whole number of seconds (0 = never move to a fresh port)",
        "ipv4_pool" => "an IPv4 prefix such as 100.64.0.0/10 (prefix length 1 to 30)",
        "relay_transport" => "`auto` (UDP, then TCP if UDP gets no answer), `udp` or `tcp`",
        "cipher" => "`auto` (AES-256-GCM with peers when both CPUs have AES instructions, else ChaCha20-Poly1305) or `chacha20-poly1305`",
        "crypto_threads" => "`auto` (one helper thread per core beyond two, at most 3) or a whole number from 0 (the node's thread alone) to 16",
        "offload" => "`all` (TUN and UDP segmentation offload where the kernel has them), `udp` (UDP GSO/GRO only) or `off`",
        "name" => "a DNS label: 1 to 63 of a-z, 0-9 and `-`, not starting or ending with `-` (members reach the node as NAME.<dns_domain>)",
        "dns_domain" => "a domain such as `veil` or `corp.example` (labels of a-z, 0-9 and `-`)",
        "lockdown" | "advertise_exit" | "accept_routes" => "true or false",
        "advertise_routes" => "a list of prefixes outside the overlay such as [\"198.18.50.0/24\"] (this node forwards and masquerades for them)",
        "exit_node" => "a member's DNS name or overlay IPv4 (empty = none)",
        "metrics" => "an ADDRESS:PORT to serve Prometheus metrics on, such as 127.0.0.1:9101 (empty = off)",
        "log" => "a log filter such as `info` or `veil=debug,warn`",
        _ => "a known key",
    }
}

/// `crypto_threads` as written: a number, or a word (only `auto` is valid).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Threads {
    /// A number of helper threads.
    Count(u64),
    /// `auto`, or a mistake.
    Word(String),
}

impl std::fmt::Display for Threads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Threads::Count(n) => write!(f, "{n}"),
            Threads::Word(w) => f.write_str(w),
        }
    }
}

/// Settings from one source; `None` means "not set here".
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    /// TUN interface name.
    pub tun_name: Option<String>,
    /// Local UDP port.
    pub port: Option<u16>,
    /// Keepalive interval.
    pub keepalive_secs: Option<u64>,
    /// Idle timeout of peer sessions.
    pub idle_timeout_secs: Option<u64>,
    /// Rekey interval.
    pub rekey_after_secs: Option<u64>,
    /// Padding mode.
    pub padding: Option<String>,
    /// Padding bucket.
    pub pad_bucket: Option<u64>,
    /// Look for direct paths to peers.
    pub direct_paths: Option<bool>,
    /// Private mode: 0, 1 or 2.
    pub private: Option<u8>,
    /// Overlay addresses of peers reached through relays only.
    pub private_peers: Option<Vec<String>>,
    /// Cover traffic rate.
    pub cover_pps: Option<u64>,
    /// Period of moving to a fresh ephemeral socket.
    pub port_rotation_secs: Option<u64>,
    /// IPv4 pool, `a.b.c.d/len`.
    pub ipv4_pool: Option<String>,
    /// How the relay is reached: `auto`, `udp` or `tcp`.
    pub relay_transport: Option<String>,
    /// Offloads of the fast path: `all`, `udp` or `off`.
    pub offload: Option<String>,
    /// Helper threads for the AEAD: `auto` or a number.
    pub crypto_threads: Option<Threads>,
    /// Data cipher with peers: `auto` or `chacha20-poly1305`.
    pub cipher: Option<String>,
    /// Where Prometheus metrics are served (`ADDRESS:PORT`; empty: off).
    pub metrics: Option<String>,
    /// The node's DNS name.
    pub name: Option<String>,
    /// The network's DNS domain.
    pub dns_domain: Option<String>,
    /// Kill switch.
    pub lockdown: Option<bool>,
    /// Subnets this node routes for the network.
    pub advertise_routes: Option<Vec<String>>,
    /// This node is an exit.
    pub advertise_exit: Option<bool>,
    /// The exit this node uses.
    pub exit_node: Option<String>,
    /// Use others' subnets.
    pub accept_routes: Option<bool>,
    /// Log filter.
    pub log: Option<String>,
}

/// A layer and where it came from.
#[derive(Clone, Debug)]
pub struct Source {
    layer: Layer,
    origin: Origin,
}

#[derive(Clone, Debug)]
enum Origin {
    Flags,
    Env,
    File(PathBuf),
}

impl Origin {
    fn describe(&self, key: &str) -> String {
        match self {
            Origin::Flags if key == "tun_name" => "flag --tun (or VEIL_TUN)".into(),
            Origin::Flags => format!("flag for `{key}`"),
            Origin::Env => format!("environment variable {}", env_name(key)),
            Origin::File(p) => format!("config {}", p.display()),
        }
    }
}

/// The environment variable of `key`.
pub fn env_name(key: &str) -> String {
    format!("VEIL_{}", key.to_ascii_uppercase())
}

impl Source {
    /// Values given as flags.
    pub fn flags(layer: Layer) -> Self {
        Source {
            layer,
            origin: Origin::Flags,
        }
    }

    /// Reads and parses the config file.
    pub fn file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::file_text(path, &text)
    }

    /// Parses config text (named `path` in errors).
    pub fn file_text(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let layer = toml::from_str::<Layer>(text).map_err(|e| file_error(path, text, &e))?;
        Ok(Source {
            layer,
            origin: Origin::File(path.to_owned()),
        })
    }

    /// Reads `VEIL_<KEY>` variables through `lookup` (`RUST_LOG` stands in for `VEIL_LOG`).
    pub fn env(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |key: &'static str| lookup(&env_name(key)).filter(|v| !v.is_empty());
        let boolean = |key: &'static str| -> Result<Option<bool>, ConfigError> {
            get(key)
                .map(|v| match v.trim() {
                    "true" | "1" | "yes" => Ok(true),
                    "false" | "0" | "no" => Ok(false),
                    _ => Err(invalid(&Origin::Env, key, &v)),
                })
                .transpose()
        };
        let num = |key: &'static str| -> Result<Option<u64>, ConfigError> {
            get(key)
                .map(|v| {
                    v.trim()
                        .parse::<u64>()
                        .map_err(|_| invalid(&Origin::Env, key, &v))
                })
                .transpose()
        };
        let port = match num("port")? {
            Some(p) => {
                Some(u16::try_from(p).map_err(|_| invalid(&Origin::Env, "port", &p.to_string()))?)
            }
            None => None,
        };
        let layer = Layer {
            tun_name: get("tun_name"),
            port,
            keepalive_secs: num("keepalive_secs")?,
            idle_timeout_secs: num("idle_timeout_secs")?,
            rekey_after_secs: num("rekey_after_secs")?,
            padding: get("padding"),
            pad_bucket: num("pad_bucket")?,
            direct_paths: get("direct_paths")
                .map(|v| match v.trim() {
                    "true" | "1" | "yes" => Ok(true),
                    "false" | "0" | "no" => Ok(false),
                    _ => Err(invalid(&Origin::Env, "direct_paths", &v)),
                })
                .transpose()?,
            private: num("private")?
                .map(|v| {
                    u8::try_from(v).map_err(|_| invalid(&Origin::Env, "private", &v.to_string()))
                })
                .transpose()?,
            private_peers: get("private_peers").map(|v| {
                v.split(',')
                    .map(|a| a.trim().to_owned())
                    .filter(|a| !a.is_empty())
                    .collect()
            }),
            cover_pps: num("cover_pps")?,
            port_rotation_secs: num("port_rotation_secs")?,
            ipv4_pool: get("ipv4_pool"),
            relay_transport: get("relay_transport"),
            offload: get("offload"),
            crypto_threads: get("crypto_threads").map(|v| match v.trim().parse::<u64>() {
                Ok(n) => Threads::Count(n),
                Err(_) => Threads::Word(v),
            }),
            cipher: get("cipher"),
            metrics: get("metrics"),
            name: get("name"),
            dns_domain: get("dns_domain"),
            lockdown: boolean("lockdown")?,
            advertise_routes: get("advertise_routes").map(|v| {
                v.split(',')
                    .map(|a| a.trim().to_owned())
                    .filter(|a| !a.is_empty())
                    .collect()
            }),
            advertise_exit: boolean("advertise_exit")?,
            exit_node: get("exit_node"),
            accept_routes: boolean("accept_routes")?,
            log: get("log").or_else(|| lookup("RUST_LOG").filter(|v| !v.is_empty())),
        };
        Ok(Source {
            layer,
            origin: Origin::Env,
        })
    }
}

fn invalid(origin: &Origin, key: &'static str, got: &str) -> ConfigError {
    ConfigError::Invalid {
        origin: origin.describe(key),
        key,
        expected: expected(key),
        got: format!("`{got}`"),
    }
}

/// Turns a TOML error into one line: an unknown key or a bad value is named.
fn file_error(path: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    let message = e.message().replace('\n', " ");
    if let Some(key) = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next())
    {
        return ConfigError::UnknownKey {
            path: path.to_owned(),
            key: key.to_owned(),
        };
    }
    let offset = e.span().map_or(0, |s| s.start).min(text.len());
    let before = text.get(..offset).unwrap_or_default();
    let line = before.matches('\n').count() + 1;
    let line_text = text.lines().nth(line - 1).unwrap_or_default();
    let key = line_text
        .split('=')
        .next()
        .map(str::trim)
        .unwrap_or_default();
    match KEYS.iter().find(|k| **k == key) {
        Some(k) if line_text.contains('=') => ConfigError::Invalid {
            origin: format!("config {} line {line}", path.display()),
            key: k,
            expected: expected(k),
            got: line_text
                .split_once('=')
                .map_or("", |(_, v)| v.trim())
                .to_owned(),
        },
        _ => ConfigError::Syntax {
            path: path.to_owned(),
            line,
            message,
        },
    }
}

/// How a node pads its datagrams (the `padding` key).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaddingMode {
    /// Up to a multiple of `pad_bucket` (the default, 64 bytes).
    Buckets,
    /// Every datagram to the path MTU: sizes say nothing, at the cost of bandwidth.
    Mtu,
    /// No padding.
    Off,
}

/// The merged, validated settings of a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// TUN interface name.
    pub tun_name: String,
    /// Local UDP port (0 = ephemeral).
    pub port: u16,
    /// Keepalive interval (0 = off).
    pub keepalive_secs: u64,
    /// Idle timeout of peer sessions.
    pub idle_timeout_secs: u64,
    /// Session age that triggers a rekey.
    pub rekey_after_secs: u64,
    /// How datagrams are padded.
    pub padding: PaddingMode,
    /// Padding bucket in bytes (`padding = "buckets"`).
    pub pad_bucket: usize,
    /// Look for direct paths to peers (off: always relay).
    pub direct_paths: bool,
    /// Private mode.
    pub private: veil_proto::Privacy,
    /// Peers reached through relays only (overlay addresses).
    pub private_peers: Vec<IpAddr>,
    /// Cover traffic, datagrams per second each way (0 = off).
    pub cover_pps: u32,
    /// Move to a fresh ephemeral socket this often (0 = never; ignored with a fixed port).
    pub port_rotation_secs: u64,
    /// IPv4 pool: network address and prefix length.
    pub ipv4_pool: (Ipv4Addr, u8),
    /// How the relay is reached.
    pub relay_transport: RelayTransport,
    /// Offloads of the fast path.
    pub offload: Offload,
    /// Helper threads for the AEAD of a batch.
    pub crypto_threads: usize,
    /// Whether AES-256-GCM is offered to peers (when the CPU has AES instructions).
    pub aes: bool,
    /// Where Prometheus metrics are served (None: off).
    pub metrics: Option<std::net::SocketAddr>,
    /// The node's DNS name (lowercase).
    pub name: Option<String>,
    /// The network's DNS domain.
    pub dns_domain: String,
    /// Kill switch: nothing leaves outside the tunnel while the node runs.
    pub lockdown: bool,
    /// Subnets this node routes for the network.
    pub advertise_routes: Vec<veil_proto::route::Prefix>,
    /// This node is an exit.
    pub advertise_exit: bool,
    /// The exit this node uses (name or overlay IPv4).
    pub exit_node: Option<String>,
    /// Use the subnets others advertise.
    pub accept_routes: bool,
    /// Log filter.
    pub log: String,
}

impl Default for Settings {
    fn default() -> Self {
        let proto = NodeConfig::default();
        Settings {
            tun_name: DEFAULT_TUN_NAME.into(),
            port: 0,
            keepalive_secs: proto.keepalive.as_secs(),
            idle_timeout_secs: proto.idle_timeout.as_secs(),
            rekey_after_secs: proto.rekey_after_time.as_secs(),
            padding: PaddingMode::Buckets,
            pad_bucket: proto.pad_bucket,
            direct_paths: proto.direct,
            private: proto.private,
            private_peers: Vec::new(),
            cover_pps: 0,
            port_rotation_secs: DEFAULT_PORT_ROTATION_SECS,
            ipv4_pool: proto.ipv4_pool,
            relay_transport: RelayTransport::Auto,
            offload: Offload::All,
            crypto_threads: veil_io::node::auto_crypto_threads(),
            aes: true,
            metrics: None,
            name: None,
            dns_domain: proto.dns_domain.clone(),
            lockdown: false,
            advertise_routes: Vec::new(),
            advertise_exit: false,
            exit_node: None,
            accept_routes: true,
            log: "info".into(),
        }
    }
}

/// The first source, highest precedence first, that sets a key, with its origin.
fn pick<'a, T>(
    sources: &'a [Source],
    field: impl Fn(&'a Layer) -> Option<&'a T>,
) -> Option<(&'a T, &'a Origin)> {
    sources
        .iter()
        .find_map(|s| field(&s.layer).map(|v| (v, &s.origin)))
}

impl Settings {
    /// Merges `sources` (highest precedence first) over the defaults and validates the result.
    pub fn resolve(sources: &[Source]) -> Result<Settings, ConfigError> {
        let mut s = Settings::default();
        if let Some((v, o)) = pick(sources, |l| l.tun_name.as_ref()) {
            s.tun_name = check_tun_name(v).ok_or_else(|| invalid(o, "tun_name", v))?;
        }
        if let Some((v, _)) = pick(sources, |l| l.port.as_ref()) {
            s.port = *v;
        }
        if let Some((v, _)) = pick(sources, |l| l.keepalive_secs.as_ref()) {
            s.keepalive_secs = *v;
        }
        if let Some((v, o)) = pick(sources, |l| l.idle_timeout_secs.as_ref()) {
            s.idle_timeout_secs =
                positive(*v).ok_or_else(|| invalid(o, "idle_timeout_secs", "0"))?;
        }
        if let Some((v, o)) = pick(sources, |l| l.rekey_after_secs.as_ref()) {
            s.rekey_after_secs = positive(*v).ok_or_else(|| invalid(o, "rekey_after_secs", "0"))?;
        }
        if let Some((v, o)) = pick(sources, |l| l.pad_bucket.as_ref()) {
            s.pad_bucket = usize::try_from(*v)
                .ok()
                .filter(|b| *b <= 1024)
                .ok_or_else(|| invalid(o, "pad_bucket", &v.to_string()))?;
        }
        if let Some((v, o)) = pick(sources, |l| l.padding.as_ref()) {
            s.padding = match v.trim() {
                "buckets" => PaddingMode::Buckets,
                "mtu" => PaddingMode::Mtu,
                "off" => PaddingMode::Off,
                _ => return Err(invalid(o, "padding", v)),
            };
        }
        if let Some((v, _)) = pick(sources, |l| l.direct_paths.as_ref()) {
            s.direct_paths = *v;
        }
        if let Some((v, o)) = pick(sources, |l| l.private.as_ref()) {
            s.private = match v {
                0 => veil_proto::Privacy::Off,
                1 => veil_proto::Privacy::Relay,
                2 => veil_proto::Privacy::TwoHop,
                _ => return Err(invalid(o, "private", &v.to_string())),
            };
        }
        if let Some((v, o)) = pick(sources, |l| l.private_peers.as_ref()) {
            s.private_peers = v
                .iter()
                .map(|a| {
                    a.trim()
                        .parse::<IpAddr>()
                        .map_err(|_| invalid(o, "private_peers", a))
                })
                .collect::<Result<_, _>>()?;
        }
        if let Some((v, o)) = pick(sources, |l| l.cover_pps.as_ref()) {
            s.cover_pps = u32::try_from(*v)
                .ok()
                .filter(|p| *p <= 1000)
                .ok_or_else(|| invalid(o, "cover_pps", &v.to_string()))?;
        }
        if s.cover_pps > 0 {
            // Dummies are padded to the path MTU: data must be too, or sizes tell them apart.
            match pick(sources, |l| l.padding.as_ref()) {
                None => s.padding = PaddingMode::Mtu,
                Some((v, o)) if s.padding != PaddingMode::Mtu => {
                    return Err(ConfigError::Invalid {
                        origin: o.describe("padding"),
                        key: "padding",
                        expected: "`mtu` when cover_pps is set (dummies are padded to the path MTU, so data must be too)",
                        got: format!("`{v}`"),
                    });
                }
                Some(_) => {}
            }
        }
        if let Some((v, _)) = pick(sources, |l| l.port_rotation_secs.as_ref()) {
            s.port_rotation_secs = *v;
        }
        if let Some((v, o)) = pick(sources, |l| l.ipv4_pool.as_ref()) {
            s.ipv4_pool = parse_pool(v).ok_or_else(|| invalid(o, "ipv4_pool", v))?;
        }
        if let Some((v, o)) = pick(sources, |l| l.relay_transport.as_ref()) {
            s.relay_transport = match v.trim() {
                "auto" => RelayTransport::Auto,
                "udp" => RelayTransport::Udp,
                "tcp" => RelayTransport::Tcp,
                _ => return Err(invalid(o, "relay_transport", v)),
            };
        }
        if let Some((v, o)) = pick(sources, |l| l.offload.as_ref()) {
            s.offload = match v.trim() {
                "all" => Offload::All,
                "udp" => Offload::Udp,
                "off" => Offload::Off,
                _ => return Err(invalid(o, "offload", v)),
            };
        }
        if let Some((v, o)) = pick(sources, |l| l.crypto_threads.as_ref()) {
            s.crypto_threads = match v {
                Threads::Count(n) if *n <= 16 => *n as usize,
                Threads::Word(w) if w.trim() == "auto" => veil_io::node::auto_crypto_threads(),
                _ => return Err(invalid(o, "crypto_threads", &v.to_string())),
            };
        }
        if let Some((v, _)) = pick(sources, |l| l.lockdown.as_ref()) {
            s.lockdown = *v;
        }
        if let Some((v, _)) = pick(sources, |l| l.advertise_exit.as_ref()) {
            s.advertise_exit = *v;
        }
        if let Some((v, _)) = pick(sources, |l| l.accept_routes.as_ref()) {
            s.accept_routes = *v;
        }
        if let Some((v, _)) = pick(sources, |l| l.exit_node.as_ref()) {
            let v = v.trim().to_ascii_lowercase();
            s.exit_node = (!v.is_empty()).then_some(v);
        }
        if let Some((v, o)) = pick(sources, |l| l.advertise_routes.as_ref()) {
            let mut routes = Vec::new();
            for r in v {
                let p: veil_proto::route::Prefix =
                    r.parse().map_err(|_| invalid(o, "advertise_routes", r))?;
                if p.is_default() {
                    return Err(ConfigError::Invalid {
                        origin: o.describe("advertise_routes"),
                        key: "advertise_routes",
                        expected: "a subnet, not a default route (use advertise_exit = true to be an exit)",
                        got: format!("`{r}`"),
                    });
                }
                routes.push(p);
            }
            s.advertise_routes = routes;
        }
        if let Some((v, o)) = pick(sources, |l| l.name.as_ref()) {
            let n = v.trim().to_ascii_lowercase();
            s.name = match n.as_str() {
                "" => None,
                n if veil_proto::dns::valid_name(n) => Some(n.to_owned()),
                _ => return Err(invalid(o, "name", v)),
            };
        }
        if let Some((v, o)) = pick(sources, |l| l.dns_domain.as_ref()) {
            let d = v.trim().trim_end_matches('.').to_ascii_lowercase();
            if !veil_proto::dns::valid_domain(&d) {
                return Err(invalid(o, "dns_domain", v));
            }
            s.dns_domain = d;
        }
        if let Some((v, o)) = pick(sources, |l| l.metrics.as_ref()) {
            s.metrics = match v.trim() {
                "" => None,
                a => Some(
                    a.parse::<std::net::SocketAddr>()
                        .map_err(|_| invalid(o, "metrics", v))?,
                ),
            };
        }
        if let Some((v, o)) = pick(sources, |l| l.cipher.as_ref()) {
            s.aes = match v.trim() {
                "auto" => true,
                "chacha20-poly1305" => false,
                _ => return Err(invalid(o, "cipher", v)),
            };
        }
        if let Some((v, o)) = pick(sources, |l| l.log.as_ref()) {
            tracing_subscriber::EnvFilter::try_new(v).map_err(|_| invalid(o, "log", v))?;
            s.log = v.clone();
        }
        #[cfg(windows)]
        windows_gaps(&mut s, sources)?;
        Ok(s)
    }

    /// The engine's configuration: these settings, the resolved relays and the remembered
    /// IPv4 (dropped if it is outside the pool).
    pub fn node_config(
        &self,
        relays: Vec<(SocketAddr, [u8; 32])>,
        hint: Option<Ipv4Addr>,
    ) -> NodeConfig {
        NodeConfig {
            relays,
            ipv4_pool: self.ipv4_pool,
            ipv4_hint: hint.filter(|h| in_pool(*h, self.ipv4_pool)),
            keepalive: Duration::from_secs(self.keepalive_secs),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            rekey_after_time: Duration::from_secs(self.rekey_after_secs),
            pad_bucket: match self.padding {
                PaddingMode::Buckets => self.pad_bucket,
                PaddingMode::Mtu => veil_proto::wire::PAD_TO_MTU,
                PaddingMode::Off => 0,
            },
            direct: self.direct_paths,
            private: self.private,
            private_peers: self.private_peers.clone(),
            cover_pps: self.cover_pps,
            aes: self.aes && veil_proto::crypto::hardware_aes(),
            name: self.name.clone(),
            dns_domain: self.dns_domain.clone(),
            advertise_routes: self.advertise_routes.clone(),
            advertise_exit: self.advertise_exit,
            exit_node: self.exit_node.clone(),
            accept_routes: self.accept_routes,
            ..NodeConfig::default()
        }
    }
}

/// Windows has no kill switch, no forwarding with NAT and no policy routing yet (docs/windows.md):
/// each setting that needs one is refused, naming where it was given, rather than ignored.
/// Others' subnet routes are not used there unless asked for, and asking is refused too.
#[cfg_attr(not(windows), allow(dead_code))]
fn windows_gaps(s: &mut Settings, sources: &[Source]) -> Result<(), ConfigError> {
    let refuse = |origin: &Origin, key: &str, why: &'static str| ConfigError::NotOnWindows {
        setting: match origin {
            Origin::Flags => format!("--{}", key.replace('_', "-")),
            Origin::Env => format!("environment variable {}", env_name(key)),
            Origin::File(p) => format!("`{key}` in config {}", p.display()),
        },
        why,
    };
    if let Some((true, o)) = pick(sources, |l| l.lockdown.as_ref()) {
        return Err(refuse(
            o,
            "lockdown",
            "the kill switch is built on nftables and firewall marks",
        ));
    }
    if let Some((routes, o)) = pick(sources, |l| l.advertise_routes.as_ref()) {
        if !routes.is_empty() {
            return Err(refuse(
                o,
                "advertise_routes",
                "routing for the network needs IP forwarding and NAT, set up with nftables",
            ));
        }
    }
    if let Some((true, o)) = pick(sources, |l| l.advertise_exit.as_ref()) {
        return Err(refuse(
            o,
            "advertise_exit",
            "an exit forwards and masquerades with nftables",
        ));
    }
    if let (Some(_), Some((_, o))) = (&s.exit_node, pick(sources, |l| l.exit_node.as_ref())) {
        return Err(refuse(o, "exit_node", "the default route through the overlay needs policy routing that keeps Veil's own datagrams outside"));
    }
    match pick(sources, |l| l.accept_routes.as_ref()) {
        Some((true, o)) => {
            return Err(refuse(o, "accept_routes", "routes into the overlay need policy routing that keeps Veil's own datagrams outside"));
        }
        _ => s.accept_routes = false,
    }
    Ok(())
}

fn positive(v: u64) -> Option<u64> {
    (v > 0).then_some(v)
}

fn check_tun_name(name: &str) -> Option<String> {
    let ok = (1..=15).contains(&name.len())
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
    ok.then(|| name.to_owned())
}

/// Parses `a.b.c.d/len`; the address must be the network address of the prefix.
fn parse_pool(text: &str) -> Option<(Ipv4Addr, u8)> {
    let (addr, len) = text.trim().split_once('/')?;
    let addr: Ipv4Addr = addr.parse().ok()?;
    let len: u8 = len.parse().ok().filter(|l| (1..=30).contains(l))?;
    (u32::from(addr) & mask(len) == 0).then_some((addr, len))
}

/// The host bits of a prefix of length `len`.
fn mask(len: u8) -> u32 {
    u32::MAX.checked_shr(u32::from(len)).unwrap_or(0)
}

fn in_pool(addr: Ipv4Addr, (net, len): (Ipv4Addr, u8)) -> bool {
    u32::from(addr) & !mask(len) == u32::from(net)
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> Source {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Source::env(|k| map.get(k).cloned()).expect("env layer")
    }

    fn file(text: &str) -> Result<Source, ConfigError> {
        Source::file_text(Path::new("/etc/veil.toml"), text)
    }

    #[test]
    fn defaults_match_the_engine() {
        let s = Settings::resolve(&[]).unwrap();
        assert_eq!(s.keepalive_secs, 25);
        assert_eq!(s.idle_timeout_secs, 60);
        assert_eq!(s.rekey_after_secs, 120);
        assert_eq!(s.pad_bucket, 64);
        assert_eq!(s.ipv4_pool, (Ipv4Addr::new(100, 64, 0, 0), 10));
        assert_eq!(s.port, 0);
        assert_eq!(s.log, "info");
        assert_eq!(s.tun_name, "veil0");
        assert_eq!(s.relay_transport, RelayTransport::Auto);
    }

    #[test]
    fn windows_refuses_what_it_lacks_by_name() {
        let gaps = |sources: &[Source]| {
            let mut s = Settings::resolve(sources)?;
            windows_gaps(&mut s, sources).map(|()| s)
        };
        let flags = Source::flags;
        let cases = [
            (
                flags(Layer {
                    lockdown: Some(true),
                    ..Layer::default()
                }),
                "--lockdown is not supported on Windows yet",
            ),
            (
                flags(Layer {
                    advertise_routes: Some(vec!["192.168.10.0/24".into()]),
                    ..Layer::default()
                }),
                "--advertise-routes is not supported on Windows yet",
            ),
            (
                flags(Layer {
                    exit_node: Some("out".into()),
                    ..Layer::default()
                }),
                "--exit-node is not supported on Windows yet",
            ),
            (
                env(&[("VEIL_ADVERTISE_EXIT", "yes")]),
                "environment variable VEIL_ADVERTISE_EXIT is not supported on Windows yet",
            ),
            (
                file("accept_routes = true\n").unwrap(),
                "`accept_routes` in config /etc/veil.toml is not supported on Windows yet",
            ),
        ];
        for (source, want) in cases {
            let e = gaps(std::slice::from_ref(&source)).unwrap_err().to_string();
            assert!(e.starts_with(want), "{e}");
            assert!(e.contains("docs/windows.md"), "{e}");
        }
        // Off, or empty, is fine; others' routes are not used there unless asked for.
        let off = file("lockdown = false\nexit_node = \"\"\nadvertise_routes = []\n").unwrap();
        let s = gaps(&[off]).unwrap();
        assert!(!s.accept_routes && !s.lockdown && s.exit_node.is_none());
        // Elsewhere the default stays.
        assert_eq!(
            Settings::resolve(&[]).unwrap().accept_routes,
            !cfg!(windows)
        );
    }

    #[test]
    fn relay_transport_from_every_source() {
        let f = file("relay_transport = \"udp\"\n").unwrap();
        assert_eq!(
            Settings::resolve(std::slice::from_ref(&f))
                .unwrap()
                .relay_transport,
            RelayTransport::Udp
        );
        let e = env(&[("VEIL_RELAY_TRANSPORT", "tcp")]);
        assert_eq!(
            Settings::resolve(&[e, f]).unwrap().relay_transport,
            RelayTransport::Tcp
        );
        let flags = Source::flags(Layer {
            relay_transport: Some("quic".into()),
            ..Layer::default()
        });
        let e = Settings::resolve(&[flags]).unwrap_err().to_string();
        assert!(e.contains("`relay_transport` must be `auto`"), "{e}");
    }

    #[test]
    fn name_and_domain_are_checked_and_lowercased() {
        let f = file("name = \"Web-1\"\ndns_domain = \"Corp.Example.\"\n").unwrap();
        let s = Settings::resolve(std::slice::from_ref(&f)).unwrap();
        assert_eq!(s.name.as_deref(), Some("web-1"));
        assert_eq!(s.dns_domain, "corp.example");
        assert_eq!(Settings::default().dns_domain, "veil");
        for (key, bad) in [
            ("name", "no_underscores"),
            ("name", "-x"),
            ("dns_domain", "a..b"),
        ] {
            let f = file(&format!("{key} = \"{bad}\"\n")).unwrap();
            let e = Settings::resolve(&[f]).unwrap_err().to_string();
            assert!(e.contains(&format!("`{key}` must be")), "{e}");
        }
    }

    #[test]
    fn routes_and_exit_are_read_and_checked() {
        let f = file("advertise_routes = [\"198.18.50.9/24\"]\nadvertise_exit = true\nexit_node = \"GW\"\naccept_routes = false\n").unwrap();
        let s = Settings::resolve(std::slice::from_ref(&f)).unwrap();
        assert_eq!(s.advertise_routes[0].to_string(), "198.18.50.0/24");
        assert!(s.advertise_exit && !s.accept_routes);
        assert_eq!(s.exit_node.as_deref(), Some("gw"));
        let e =
            Source::env(|k| (k == "VEIL_ADVERTISE_ROUTES").then(|| "10.0.0.0/8,bad".to_owned()))
                .unwrap();
        let err = Settings::resolve(&[e]).unwrap_err().to_string();
        assert!(err.contains("`advertise_routes` must be"), "{err}");
        let f = file("advertise_routes = [\"0.0.0.0/0\"]\n").unwrap();
        let err = Settings::resolve(&[f]).unwrap_err().to_string();
        assert!(err.contains("advertise_exit"), "{err}");
    }

    #[test]
    fn metrics_address_is_checked() {
        assert_eq!(Settings::default().metrics, None);
        let f = file("metrics = \"127.0.0.1:9101\"\n").unwrap();
        assert_eq!(
            Settings::resolve(std::slice::from_ref(&f)).unwrap().metrics,
            Some(std::net::SocketAddr::from(([127, 0, 0, 1], 9101)))
        );
        let off = Source::flags(Layer {
            metrics: Some(String::new()),
            ..Layer::default()
        });
        assert_eq!(Settings::resolve(&[off, f]).unwrap().metrics, None);
        let bad = Source::flags(Layer {
            metrics: Some("localhost".into()),
            ..Layer::default()
        });
        let e = Settings::resolve(&[bad]).unwrap_err().to_string();
        assert!(e.contains("`metrics` must be an ADDRESS:PORT"), "{e}");
    }

    #[test]
    fn crypto_threads_from_file_and_env() {
        assert_eq!(
            Settings::default().crypto_threads,
            veil_io::node::auto_crypto_threads()
        );
        let f = file("crypto_threads = 2\n").unwrap();
        assert_eq!(
            Settings::resolve(std::slice::from_ref(&f))
                .unwrap()
                .crypto_threads,
            2
        );
        let f = file("crypto_threads = \"auto\"\n").unwrap();
        assert_eq!(
            Settings::resolve(std::slice::from_ref(&f))
                .unwrap()
                .crypto_threads,
            veil_io::node::auto_crypto_threads()
        );
        let e = env(&[("VEIL_CRYPTO_THREADS", "0")]);
        assert_eq!(Settings::resolve(&[e, f]).unwrap().crypto_threads, 0);
        for bad in ["crypto_threads = 17\n", "crypto_threads = \"many\"\n"] {
            let f = file(bad).unwrap();
            let e = Settings::resolve(&[f]).unwrap_err().to_string();
            assert!(e.contains("`crypto_threads` must be `auto`"), "{e}");
        }
    }

    #[test]
    fn offload_from_every_source() {
        assert_eq!(Settings::default().offload, Offload::All);
        let f = file("offload = \"udp\"\n").unwrap();
        assert_eq!(
            Settings::resolve(std::slice::from_ref(&f)).unwrap().offload,
            Offload::Udp
        );
        let e = env(&[("VEIL_OFFLOAD", "off")]);
        assert_eq!(Settings::resolve(&[e, f]).unwrap().offload, Offload::Off);
        let flags = Source::flags(Layer {
            offload: Some("fast".into()),
            ..Layer::default()
        });
        let e = Settings::resolve(&[flags]).unwrap_err().to_string();
        assert!(e.contains("`offload` must be `all`"), "{e}");
    }

    #[test]
    fn cipher_from_every_source() {
        assert!(Settings::default().aes);
        let f = file("cipher = \"chacha20-poly1305\"\n").unwrap();
        assert!(!Settings::resolve(std::slice::from_ref(&f)).unwrap().aes);
        let e = env(&[("VEIL_CIPHER", "auto")]);
        assert!(Settings::resolve(&[e, f]).unwrap().aes);
        let flags = Source::flags(Layer {
            cipher: Some("aes-128".into()),
            ..Layer::default()
        });
        let e = Settings::resolve(&[flags]).unwrap_err().to_string();
        assert!(e.contains("`cipher` must be `auto`"), "{e}");
    }

    #[test]
    fn flags_beat_env_beat_file_beat_defaults() {
        let f = file("tun_name = \"file0\"\nport = 1111\nkeepalive_secs = 5\npad_bucket = 32\n")
            .unwrap();
        let e = env(&[("VEIL_PORT", "2222"), ("VEIL_KEEPALIVE_SECS", "7")]);
        let flags = Source::flags(Layer {
            tun_name: Some("flag0".into()),
            ..Layer::default()
        });
        let s = Settings::resolve(&[flags, e, f]).unwrap();
        assert_eq!(s.tun_name, "flag0");
        assert_eq!(s.port, 2222);
        assert_eq!(s.keepalive_secs, 7);
        assert_eq!(s.pad_bucket, 32);
        let f = file("padding = \"mtu\"\n").unwrap_or_else(|e| panic!("{e}"));
        let s = Settings::resolve(&[f]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.padding, PaddingMode::Mtu);
        assert_eq!(
            s.node_config(Vec::new(), None).pad_bucket,
            veil_proto::wire::PAD_TO_MTU
        );
        let bad = file("padding = \"constant\"\n").unwrap_or_else(|e| panic!("{e}"));
        let e = Settings::resolve(&[bad])
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(e.contains("`padding` must be"), "{e}");
        assert_eq!(s.idle_timeout_secs, 60);
    }

    #[test]
    fn veil_log_beats_rust_log_beats_file() {
        let f = file("log = \"warn\"").unwrap();
        let s = Settings::resolve(&[env(&[("RUST_LOG", "debug")]), f.clone()]).unwrap();
        assert_eq!(s.log, "debug");
        let both = env(&[("RUST_LOG", "debug"), ("VEIL_LOG", "trace")]);
        assert_eq!(Settings::resolve(&[both, f.clone()]).unwrap().log, "trace");
        assert_eq!(Settings::resolve(&[env(&[]), f]).unwrap().log, "warn");
    }

    #[test]
    fn unknown_key_is_named() {
        let e = file("port = 1\nfoo = 2\n").unwrap_err().to_string();
        assert!(e.contains("unknown key `foo`"), "{e}");
        assert!(e.contains("known keys: tun_name, port"), "{e}");
        assert!(!e.contains('\n'));
    }

    #[test]
    fn bad_values_name_key_and_expectation() {
        let e = file("keepalive_secs = \"soon\"\n").unwrap_err().to_string();
        assert!(
            e.contains("`keepalive_secs` must be a whole number of seconds"),
            "{e}"
        );
        let e = file("port = 70000\n").unwrap_err().to_string();
        assert!(e.contains("`port` must be a UDP port"), "{e}");
        let e = Settings::resolve(&[file("ipv4_pool = \"100.64.0.1/10\"").unwrap()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("`ipv4_pool` must be an IPv4 prefix"), "{e}");
        let e = Source::env(|k| (k == "VEIL_KEEPALIVE_SECS").then(|| "x".into()))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("environment variable VEIL_KEEPALIVE_SECS"),
            "{e}"
        );
        let e = Settings::resolve(&[env(&[("VEIL_IDLE_TIMEOUT_SECS", "0")])]).unwrap_err();
        assert!(e.to_string().contains("`idle_timeout_secs` must be"), "{e}");
        let e = Settings::resolve(&[env(&[("VEIL_TUN_NAME", "a/b")])]).unwrap_err();
        assert!(e.to_string().contains("`tun_name`"), "{e}");
        let e = file("port = ").unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn maps_onto_node_config() {
        let s =
            Settings::resolve(&[file("ipv4_pool = \"10.8.0.0/16\"\nkeepalive_secs = 0").unwrap()])
                .unwrap();
        let c = s.node_config(vec![], Some(Ipv4Addr::new(100, 64, 0, 9)));
        assert_eq!(c.ipv4_hint, None, "a hint outside the pool is dropped");
        assert_eq!(c.keepalive, Duration::ZERO);
        let c = s.node_config(vec![], Some(Ipv4Addr::new(10, 8, 3, 4)));
        assert_eq!(c.ipv4_hint, Some(Ipv4Addr::new(10, 8, 3, 4)));
        assert_eq!(c.ipv4_pool, (Ipv4Addr::new(10, 8, 0, 0), 16));
    }

    #[test]
    fn private_mode_and_cover_traffic() {
        let s = Settings::resolve(&[file(
            "private = 2\nprivate_peers = [\"100.64.0.7\", \"fd00::1\"]\ncover_pps = 20\n",
        )
        .unwrap()])
        .unwrap();
        let c = s.node_config(vec![], None);
        assert_eq!(c.private, veil_proto::Privacy::TwoHop);
        assert_eq!(c.private_peers.len(), 2);
        assert_eq!(c.cover_pps, 20);
        assert_eq!(
            c.pad_bucket,
            veil_proto::wire::PAD_TO_MTU,
            "cover implies mtu padding"
        );
        for (text, key) in [
            ("private = 3\n", "private"),
            ("private_peers = [\"node-b\"]\n", "private_peers"),
            ("cover_pps = 5000\n", "cover_pps"),
            ("cover_pps = 10\npadding = \"buckets\"\n", "padding"),
        ] {
            let e = Settings::resolve(&[file(text).unwrap()])
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("`{key}`")), "{text}: {e}");
        }
        let e = env(&[("VEIL_PRIVATE_PEERS", "100.64.0.1, fd00::2")]);
        let s = Settings::resolve(&[e]).unwrap();
        assert_eq!(s.private_peers.len(), 2);
    }
}
