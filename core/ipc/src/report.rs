//! The JSON shapes of a node's `status` and `peers`: what the control socket returns and what
//! the CLI and the desktop app read. This is a public contract (`docs/cli.md`): later
//! versions add fields, never rename or retype one. Readers accept missing fields.

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Named counters, kept in the engine's order and serialized as a JSON object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters(pub Vec<(String, u64)>);

impl Counters {
    /// Builds counters from an engine's list, followed by `extra` ones.
    pub fn from_lists(engine: &[(&'static str, u64)], extra: &[(&'static str, u64)]) -> Self {
        Counters(
            engine
                .iter()
                .chain(extra)
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
        )
    }

    /// The value of one counter.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
    }
}

impl Serialize for Counters {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Counters {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Counters;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of counter name to integer")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Counters, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, u64>()? {
                    out.push((k, v));
                }
                Ok(Counters(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// `veil status --json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NodeStatusReport {
    /// Short node id.
    pub id: String,
    /// Overlay IPv4 without prefix length; null until the rendezvous confirmed it.
    pub overlay_ipv4: Option<Ipv4Addr>,
    /// Overlay IPv6 without prefix length.
    pub overlay_ipv6: Ipv6Addr,
    /// The relay the node is homed on.
    pub relay: Option<String>,
    /// Whether the session with that relay is up.
    #[serde(default)]
    pub relay_connected: bool,
    /// Private mode: `off`, `relay` (one hop) or `two-hop`.
    #[serde(default)]
    pub private: String,
    /// Two-hop private mode: the guard relay (its address) the home relay is reached
    /// through.
    #[serde(default)]
    pub guard: Option<String>,
    /// Two-hop private mode: whether the guard opened the circuit to the home relay.
    #[serde(default)]
    pub guard_circuit: bool,
    /// During a secret rotation: Unix time until which the previous secret is used.
    #[serde(default)]
    pub previous_key_until: Option<u64>,
    /// Round trip to the relay (its last registration), in milliseconds; null while it is
    /// down.
    #[serde(default)]
    pub relay_rtt_ms: Option<f64>,
    /// The DNS name configured (`NAME.<domain>` reaches this node unless `name_taken`).
    #[serde(default)]
    pub name: Option<String>,
    /// Another member holds that name: this node runs without one.
    #[serde(default)]
    pub name_taken: bool,
    /// The network's DNS domain (`veil` unless configured); empty from older nodes.
    #[serde(default)]
    pub dns_domain: String,
    /// Routes in use through other nodes (`PREFIX via ID`): their subnets and the exit.
    #[serde(default)]
    pub routes: Vec<String>,
    /// How the relay's datagrams travel now: `udp`, or `tcp` (the fallback where UDP is
    /// blocked).
    #[serde(default)]
    pub relay_transport: Option<String>,
    /// Seconds since the node started.
    pub uptime_s: u64,
    /// The TUN interface, once it exists.
    #[serde(default)]
    pub tun: Option<String>,
    /// Local UDP port of the node's socket.
    #[serde(default)]
    pub local_port: Option<u16>,
    /// Engine counters, then `io_*` counters of this layer.
    #[serde(default)]
    pub counters: Counters,
}

/// One element of `veil peers --json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PeerReport {
    /// Short id of the peer.
    pub id: String,
    /// The peer's DNS name (without the domain), once the rendezvous confirmed it is the
    /// peer's; null for a peer without one, and from a node older than the field.
    #[serde(default)]
    pub name: Option<String>,
    /// Its overlay IPv4, once verified.
    pub overlay_ipv4: Option<Ipv4Addr>,
    /// Its overlay IPv6.
    pub overlay_ipv6: Ipv6Addr,
    /// `direct`, `relayed`, `private` or `none`.
    pub path: String,
    /// Why the path is relayed.
    #[serde(default)]
    pub relay_reason: Option<String>,
    /// Underlay endpoint packets go to.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Round-trip time of the last handshake, in milliseconds.
    #[serde(default)]
    pub rtt_ms: Option<f64>,
    /// Path MTU.
    #[serde(default)]
    pub pmtu: Option<u32>,
    /// State of path MTU discovery.
    pub pmtu_state: String,
    /// Inner bytes sent.
    pub tx_bytes: u64,
    /// Inner bytes received.
    pub rx_bytes: u64,
    /// Unix time of the last completed handshake.
    #[serde(default)]
    pub last_handshake_unix: Option<u64>,
    /// The session's data AEAD: `aes-256-gcm`, `chacha20-poly1305`, or `none` (no
    /// session); empty from a node older than the field.
    #[serde(default)]
    pub cipher: String,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A status report to build tests on.
    pub(crate) fn status() -> NodeStatusReport {
        NodeStatusReport {
            id: "abcd".into(),
            overlay_ipv4: None,
            overlay_ipv6: Ipv6Addr::LOCALHOST,
            relay: None,
            relay_connected: false,
            private: "off".into(),
            guard: None,
            guard_circuit: false,
            previous_key_until: None,
            relay_rtt_ms: Some(1.5),
            name: Some("web".into()),
            name_taken: false,
            dns_domain: "veil".into(),
            routes: vec!["198.18.50.0/24 via abcd".into()],
            relay_transport: Some("tcp".into()),
            uptime_s: 3,
            tun: None,
            local_port: Some(4000),
            counters: Counters(vec![("b".into(), 2), ("a".into(), 1)]),
        }
    }

    #[test]
    fn status_json_has_the_contract_fields() -> Result<(), serde_json::Error> {
        let r = status();
        let v = serde_json::to_value(&r)?;
        assert_eq!(v["overlay_ipv4"], serde_json::Value::Null);
        assert_eq!(v["overlay_ipv6"], "::1");
        assert_eq!(v["counters"]["b"], 2);
        let text = serde_json::to_string(&r)?;
        assert!(
            text.find("\"b\"") < text.find("\"a\""),
            "counters keep their order"
        );
        let back: NodeStatusReport = serde_json::from_str(&text)?;
        assert_eq!(back, r);
        Ok(())
    }
}
