//! Join tokens and relay tokens: what `veil network create` prints and what `veil up` and
//! `veil relay` read. Text form: a prefix, then base64url (no padding) of a versioned
//! binary body followed by a 4-byte SHA-256 checksum, so a typo is a clear error.

use crate::crypto::sha256;
use crate::keys::{NetworkKeys, RelayKeys};
use crate::stream::DEFAULT_TCP_PORT;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand_core::{RngCore, SeedableRng};

/// Prefix of a join token.
pub const JOIN_PREFIX: &str = "veil1.";
/// Prefix of a relay token.
pub const RELAY_PREFIX: &str = "veilrelay1.";
pub(crate) const VERSION: u8 = 1;
/// Marks the optional CA public key at the end of a token body.
const CA_TAG: u8 = 0xca;
/// Marks the names base of a rotated network (join tokens).
const NAMES_TAG: u8 = 0x4e;
/// Marks the previous secret or relay base and the end of its overlap.
const PREVIOUS_TAG: u8 = 0x70;
/// Marks the relay peering key (relay tokens only).
const PEERING_TAG: u8 = 0x72;
/// Marks the relays' TCP ports (join tokens), when one of them is not the default 443.
const TCP_PORTS_TAG: u8 = 0x74;
/// Marks a join token whose relays share one rendezvous (`veil relay --nats`): a node may
/// start at any of them, so it starts at the nearest. No body.
const SHARED_TAG: u8 = 0x73;

/// Why a token could not be read.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Wrong kind of token or not a token.
    #[error("not a {expected} token: it should start with '{prefix}'")]
    Prefix {
        expected: &'static str,
        prefix: &'static str,
    },
    /// Not base64url.
    #[error("the {0} token contains characters that are not base64url: copy it again in full")]
    Encoding(&'static str),
    /// Checksum mismatch.
    #[error("the {0} token is corrupted (checksum mismatch): copy it again in full")]
    Checksum(&'static str),
    /// Too short or inconsistent.
    #[error("the {0} token is truncated or malformed: copy it again in full")]
    Malformed(&'static str),
    /// A newer format.
    #[error(
        "the {kind} token has version {version}; this veil understands version 1: upgrade veil"
    )]
    Version { kind: &'static str, version: u8 },
}

/// One relay as listed in a join token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayInfo {
    /// `HOST:PORT` as given to `veil network create`.
    pub addr: String,
    /// The relay's static public key.
    pub public_key: [u8; 32],
    /// The TCP port of the relay's stream listener, on the host of `addr` (the fallback
    /// for networks that block UDP); 0 = the relay has none.
    pub tcp_port: u16,
}

/// Everything a node needs to join a network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinToken {
    /// The network secret.
    pub secret: [u8; 32],
    /// The relays, in the order given at creation.
    pub relays: Vec<RelayInfo>,
    /// The public key of the network's certificate authority, when access control is on.
    pub ca: Option<[u8; 32]>,
    /// The names base (blinded names, records, overlay prefix) when it is not derived from
    /// `secret`, i.e. after a rotation.
    pub names: Option<[u8; 32]>,
    /// After a rotation: the secret it replaced, still accepted until the overlap ends.
    pub previous: Option<Previous>,
    /// The relays share one rendezvous (`veil network create --shared-rendezvous`): nodes
    /// start at the nearest relay instead of the first.
    pub shared: bool,
}

/// A key that a rotation replaced and that stays valid during the overlap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Previous {
    /// The previous network secret (join token) or relay base (relay token).
    pub key: [u8; 32],
    /// Unix time (seconds) at which the overlap ends: from then on new handshakes use the
    /// new key only (a grace of [`ROTATION_GRACE_SECS`] covers clocks that run late).
    pub until: u64,
}

/// How long after the end of an overlap a handshake sealed with the previous key is still
/// answered, so that nodes whose clocks run a little late are not cut off.
pub const ROTATION_GRACE_SECS: u64 = 120;

/// What one relay needs: its private key and the relay keys (no network secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayToken {
    /// The relay's static private key.
    pub private_key: [u8; 32],
    /// Key derived one-way from the network secret (see [`RelayKeys`]).
    pub relay_base: [u8; 32],
    /// The network CA's public key, when access control is on.
    pub ca: Option<[u8; 32]>,
    /// After a rotation: the relay base it replaced and the end of the overlap.
    pub previous: Option<Previous>,
    /// The key the network's relays prove to each other that they are relays with, when
    /// one relay carries another's traffic (private two-hop circuits). Random per network,
    /// held by relays only: a node cannot pose as a relay. None in tokens made before it
    /// existed; such a relay neither opens nor accepts relay links.
    pub peering: Option<[u8; 32]>,
}

pub(crate) fn wrap(prefix: &str, mut body: Vec<u8>) -> String {
    let sum = sha256(&[prefix.as_bytes(), &body]);
    body.extend_from_slice(&sum[..4]);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(body))
}

pub(crate) fn unwrap(
    text: &str,
    prefix: &'static str,
    kind: &'static str,
) -> Result<Vec<u8>, TokenError> {
    let text = text.trim();
    let rest = text.strip_prefix(prefix).ok_or(TokenError::Prefix {
        expected: kind,
        prefix,
    })?;
    let mut raw = URL_SAFE_NO_PAD
        .decode(rest)
        .map_err(|_| TokenError::Encoding(kind))?;
    if raw.len() < 5 {
        return Err(TokenError::Malformed(kind));
    }
    let sum_at = raw.len() - 4;
    let sum = sha256(&[prefix.as_bytes(), &raw[..sum_at]]);
    if sum[..4] != raw[sum_at..] {
        return Err(TokenError::Checksum(kind));
    }
    raw.truncate(sum_at);
    if raw[0] != VERSION {
        return Err(TokenError::Version {
            kind,
            version: raw[0],
        });
    }
    Ok(raw)
}

impl JoinToken {
    /// The text form.
    pub fn encode(&self) -> String {
        let mut b = vec![VERSION];
        b.extend_from_slice(&self.secret);
        b.push(self.relays.len() as u8);
        for r in &self.relays {
            b.extend_from_slice(&r.public_key);
            let a = r.addr.as_bytes();
            b.push(a.len().min(255) as u8);
            b.extend_from_slice(&a[..a.len().min(255)]);
        }
        put_trailers(&mut b, self.ca, self.names, self.previous.as_ref());
        // Only when needed: a token without it means 443 for every relay, and older builds
        // read it.
        if self.relays.iter().any(|r| r.tcp_port != DEFAULT_TCP_PORT) {
            b.push(TCP_PORTS_TAG);
            for r in &self.relays {
                b.extend_from_slice(&r.tcp_port.to_be_bytes());
            }
        }
        if self.shared {
            b.push(SHARED_TAG);
        }
        wrap(JOIN_PREFIX, b)
    }

    /// Parses the text form.
    pub fn decode(text: &str) -> Result<Self, TokenError> {
        const K: &str = "join";
        let raw = unwrap(text, JOIN_PREFIX, K)?;
        let mut r = Reader(&raw[1..]);
        let secret = r.array::<32>().ok_or(TokenError::Malformed(K))?;
        let n = r.u8().ok_or(TokenError::Malformed(K))?;
        let mut relays = Vec::with_capacity(usize::from(n));
        for _ in 0..n {
            let public_key = r.array::<32>().ok_or(TokenError::Malformed(K))?;
            let len = r.u8().ok_or(TokenError::Malformed(K))?;
            let addr = r.bytes(usize::from(len)).ok_or(TokenError::Malformed(K))?;
            let addr = String::from_utf8(addr.to_vec()).map_err(|_| TokenError::Malformed(K))?;
            relays.push(RelayInfo {
                addr,
                public_key,
                tcp_port: DEFAULT_TCP_PORT,
            });
        }
        let t = take_trailers(&mut r, relays.len()).ok_or(TokenError::Malformed(K))?;
        if relays.is_empty() || t.peering.is_some() {
            return Err(TokenError::Malformed(K));
        }
        if let Some(ports) = t.tcp_ports {
            for (relay, port) in relays.iter_mut().zip(ports) {
                relay.tcp_port = port;
            }
        }
        Ok(JoinToken {
            secret,
            relays,
            ca: t.ca,
            names: t.names,
            previous: t.previous,
            shared: t.shared,
        })
    }

    /// The names base: carried by a rotated token, else derived from the secret.
    pub fn names_base(&self) -> [u8; 32] {
        self.names
            .unwrap_or_else(|| crate::keys::names_base(&self.secret))
    }

    /// The derived key schedule.
    pub fn keys(&self) -> NetworkKeys {
        NetworkKeys::with_names(&self.secret, &self.names_base())
    }

    /// The schedule of the previous secret and the end of its overlap, after a rotation.
    pub fn previous_keys(&self) -> Option<(NetworkKeys, u64)> {
        self.previous
            .as_ref()
            .map(|p| (NetworkKeys::with_names(&p.key, &self.names_base()), p.until))
    }

    /// Whether `other` is this network (same names, so the same overlay addresses) under
    /// the same or the next secret.
    pub fn same_network(&self, other: &JoinToken) -> bool {
        self.names_base() == other.names_base()
    }

    /// Whether this token is the rotated successor of `other` (or `other` itself): the
    /// same network, and `other`'s secret is this one's current or previous secret.
    pub fn supersedes(&self, other: &JoinToken) -> bool {
        self.same_network(other)
            && (self.secret == other.secret
                || self
                    .previous
                    .as_ref()
                    .is_some_and(|p| p.key == other.secret))
    }

    /// The token of the next secret: `secret` replaces this one; this one stays valid
    /// until `until` (Unix seconds). Names, overlay addresses, relays and CA are kept.
    pub fn rotated(&self, secret: [u8; 32], until: u64) -> JoinToken {
        JoinToken {
            secret,
            relays: self.relays.clone(),
            ca: self.ca,
            names: Some(self.names_base()),
            previous: Some(Previous {
                key: self.secret,
                until,
            }),
            shared: self.shared,
        }
    }
}

impl RelayToken {
    /// The text form.
    pub fn encode(&self) -> String {
        let mut b = vec![VERSION];
        b.extend_from_slice(&self.private_key);
        b.extend_from_slice(&self.relay_base);
        put_trailers(&mut b, self.ca, None, self.previous.as_ref());
        if let Some(k) = self.peering {
            b.push(PEERING_TAG);
            b.extend_from_slice(&k);
        }
        wrap(RELAY_PREFIX, b)
    }

    /// Parses the text form.
    pub fn decode(text: &str) -> Result<Self, TokenError> {
        const K: &str = "relay";
        let raw = unwrap(text, RELAY_PREFIX, K)?;
        let mut r = Reader(&raw[1..]);
        let private_key = r.array::<32>().ok_or(TokenError::Malformed(K))?;
        let relay_base = r.array::<32>().ok_or(TokenError::Malformed(K))?;
        let t = take_trailers(&mut r, 0).ok_or(TokenError::Malformed(K))?;
        if t.names.is_some() || t.tcp_ports.is_some() || t.shared {
            return Err(TokenError::Malformed(K));
        }
        Ok(RelayToken {
            private_key,
            relay_base,
            ca: t.ca,
            previous: t.previous,
            peering: t.peering,
        })
    }

    /// The relay keys.
    pub fn keys(&self) -> RelayKeys {
        RelayKeys::from_bytes(self.relay_base)
    }

    /// The relay keys of the previous secret and the end of their overlap.
    pub fn previous_keys(&self) -> Option<(RelayKeys, u64)> {
        self.previous
            .as_ref()
            .map(|p| (RelayKeys::from_bytes(p.key), p.until))
    }

    /// Whether this token is the rotated successor of `other` (or `other` itself): the
    /// same relay key, and `other`'s relay base is this one's current or previous one.
    pub fn supersedes(&self, other: &RelayToken) -> bool {
        self.private_key == other.private_key
            && (self.relay_base == other.relay_base
                || self
                    .previous
                    .as_ref()
                    .is_some_and(|p| p.key == other.relay_base))
    }

    /// This relay's token for the rotated network `join` (from [`JoinToken::rotated`]):
    /// same relay key, the new relay base, the current one kept until `join`'s overlap
    /// ends.
    pub fn rotated(&self, join: &JoinToken) -> RelayToken {
        RelayToken {
            private_key: self.private_key,
            relay_base: *join.keys().relay().bytes(),
            ca: join.ca,
            previous: join.previous.as_ref().map(|p| Previous {
                key: self.relay_base,
                until: p.until,
            }),
            peering: self.peering,
        }
    }
}

/// Creates a new network: a fresh secret and one key pair per relay address, from `seed`.
pub fn create_network(seed: [u8; 32], relay_addrs: &[String]) -> (JoinToken, Vec<RelayToken>) {
    let mut rng = rand_chacha::ChaCha20Rng::from_seed(seed);
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    let keys = NetworkKeys::derive(&secret);
    let mut relays = Vec::new();
    let mut relay_tokens = Vec::new();
    let mut secret_keys = Vec::new();
    for _ in relay_addrs {
        let mut sk = [0u8; 32];
        rng.fill_bytes(&mut sk);
        secret_keys.push(sk);
    }
    // Drawn after the relay keys, so that a seed makes the same secret and relay keys as
    // before the peering key existed.
    let mut peering = [0u8; 32];
    rng.fill_bytes(&mut peering);
    for (addr, sk) in relay_addrs.iter().zip(secret_keys) {
        let id = crate::keys::Identity::from_secret(sk);
        relays.push(RelayInfo {
            addr: addr.clone(),
            public_key: *id.public(),
            tcp_port: DEFAULT_TCP_PORT,
        });
        relay_tokens.push(RelayToken {
            private_key: id.secret_bytes(),
            relay_base: *keys.relay().bytes(),
            ca: None,
            previous: None,
            peering: Some(peering),
        });
    }
    (
        JoinToken {
            secret,
            relays,
            ca: None,
            names: None,
            previous: None,
            shared: false,
        },
        relay_tokens,
    )
}

/// Appends the optional trailers, each `[tag][value]`, in this order: CA public key
/// `[0xca][32]`, names base `[0x4e][32]`, previous key `[0x70][32][until u64 LE]` (the
/// join token's TCP ports, `[0x74][n x u16 BE]`, follow them, written by the caller).
fn put_trailers(
    b: &mut Vec<u8>,
    ca: Option<[u8; 32]>,
    names: Option<[u8; 32]>,
    previous: Option<&Previous>,
) {
    if let Some(k) = ca {
        b.push(CA_TAG);
        b.extend_from_slice(&k);
    }
    if let Some(n) = names {
        b.push(NAMES_TAG);
        b.extend_from_slice(&n);
    }
    if let Some(p) = previous {
        b.push(PREVIOUS_TAG);
        b.extend_from_slice(&p.key);
        b.extend_from_slice(&p.until.to_le_bytes());
    }
}

#[derive(Default)]
struct Trailers {
    ca: Option<[u8; 32]>,
    names: Option<[u8; 32]>,
    previous: Option<Previous>,
    peering: Option<[u8; 32]>,
    tcp_ports: Option<Vec<u16>>,
    shared: bool,
}

/// Reads the trailers up to the end of the body; None if one is malformed, unknown,
/// repeated or out of order. `relays` is the number of relays (the TCP-port trailer holds
/// one port per relay; 0 refuses that trailer's contents unless empty).
fn take_trailers(r: &mut Reader<'_>, relays: usize) -> Option<Trailers> {
    let mut t = Trailers::default();
    let mut last = 0u8;
    while !r.0.is_empty() {
        let tag = r.u8()?;
        let rank = match tag {
            CA_TAG => 1,
            NAMES_TAG => 2,
            PREVIOUS_TAG => 3,
            PEERING_TAG => 5,
            TCP_PORTS_TAG => 4,
            SHARED_TAG => 6,
            _ => return None,
        };
        if rank <= last {
            return None;
        }
        last = rank;
        match tag {
            CA_TAG => t.ca = Some(r.array::<32>()?),
            NAMES_TAG => t.names = Some(r.array::<32>()?),
            PEERING_TAG => t.peering = Some(r.array::<32>()?),
            SHARED_TAG => t.shared = true,
            TCP_PORTS_TAG => {
                let mut ports = Vec::with_capacity(relays);
                for _ in 0..relays {
                    ports.push(u16::from_be_bytes(r.array::<2>()?));
                }
                t.tcp_ports = Some(ports);
            }
            _ => {
                let key = r.array::<32>()?;
                let until = u64::from_le_bytes(r.array::<8>()?);
                t.previous = Some(Previous { key, until });
            }
        }
    }
    Some(t)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.bytes(1).map(|b| b[0])
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(N)?);
        Some(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let (j, r) = create_network(
            [1u8; 32],
            &["198.18.0.1:7000".into(), "relay.example:443".into()],
        );
        assert_eq!(JoinToken::decode(&j.encode()), Ok(j.clone()));
        assert_eq!(RelayToken::decode(&r[1].encode()), Ok(r[1].clone()));
        // With a CA public key (access control on).
        let (mut jc, mut rc) = (j.clone(), r[0].clone());
        jc.ca = Some([0xab; 32]);
        rc.ca = Some([0xab; 32]);
        assert_eq!(JoinToken::decode(&jc.encode()), Ok(jc.clone()));
        assert_eq!(RelayToken::decode(&rc.encode()), Ok(rc.clone()));
        // Rotated: names base and previous key.
        let jn = jc.rotated([7u8; 32], 1_900_000_000);
        let rn = rc.rotated(&jn);
        assert_eq!(JoinToken::decode(&jn.encode()), Ok(jn.clone()));
        assert_eq!(RelayToken::decode(&rn.encode()), Ok(rn.clone()));
        // Relays that share a rendezvous, with TCP ports: the flag survives, also a rotation.
        let mut js = jn.clone();
        js.shared = true;
        js.relays[1].tcp_port = 8443;
        assert_eq!(JoinToken::decode(&js.encode()), Ok(js.clone()));
        assert!(js.rotated([8u8; 32], 1_900_000_001).shared);
        assert!(!JoinToken::decode(&jn.encode()).is_ok_and(|t| t.shared));
        assert_eq!(r.len(), 2);
        // A relay token does not contain the network secret.
        let rt = r[0].encode();
        assert!(!URL_SAFE_NO_PAD
            .decode(&rt[RELAY_PREFIX.len()..])
            .unwrap_or_default()
            .windows(32)
            .any(|w| w == j.secret));
    }

    #[test]
    fn rotation_keeps_names_and_replaces_admission() {
        let (j, r) = create_network([3u8; 32], &["198.18.0.1:7000".into()]);
        let n = j.rotated([9u8; 32], 1_900_000_000);
        let (k0, k1) = (j.keys(), n.keys());
        // Same overlay prefix and names: addresses and registrations survive.
        assert_eq!(k0.ula_prefix(), k1.ula_prefix());
        assert_eq!(k0.blind(b"ipv4", b"x"), k1.blind(b"ipv4", b"x"));
        assert_eq!(k0.record_key(), k1.record_key());
        // New admission keys; the old ones are the previous epoch until the overlap ends.
        assert_ne!(k0.relay().bytes(), k1.relay().bytes());
        assert_ne!(k0.node_prologue(), k1.node_prologue());
        let (prev, until) = n.previous_keys().unwrap_or_else(|| panic!("no previous"));
        assert_eq!(prev.relay().bytes(), k0.relay().bytes());
        assert_eq!(until, 1_900_000_000);
        let rn = r[0].rotated(&n);
        assert_eq!(&rn.relay_base, k1.relay().bytes());
        assert_eq!(rn.previous.as_ref().map(|p| p.key), Some(r[0].relay_base));
        assert_eq!(rn.private_key, r[0].private_key);
        assert!(j.same_network(&n));
        assert!(n.supersedes(&j) && n.supersedes(&n) && !j.supersedes(&n));
        assert!(rn.supersedes(&r[0]) && !r[0].supersedes(&rn));
        // A rotated token carries the secret it replaced (for the overlap) exactly once.
        let raw = unwrap(&n.encode(), JOIN_PREFIX, "join").unwrap_or_default();
        assert!(raw.windows(32).filter(|w| *w == j.secret).count() == 1);
        // A second rotation keeps the names base and drops the first secret.
        let m = n.rotated([4u8; 32], 1_900_100_000);
        assert_eq!(m.keys().ula_prefix(), k0.ula_prefix());
        let raw = unwrap(&m.encode(), JOIN_PREFIX, "join").unwrap_or_default();
        assert!(!raw.windows(32).any(|w| w == j.secret));
    }

    #[test]
    fn relay_tokens_carry_the_peering_key_through_rotation() {
        let (j, r) = create_network(
            [3; 32],
            &["198.18.0.1:7000".into(), "198.18.0.2:7000".into()],
        );
        let k = r[0].peering.unwrap_or_else(|| panic!("no peering key"));
        assert_eq!(
            r[1].peering,
            Some(k),
            "one key for all the network's relays"
        );
        assert_eq!(RelayToken::decode(&r[0].encode()), Ok(r[0].clone()));
        let rotated = r[0].rotated(&j.rotated([9; 32], 1_000));
        assert_eq!(rotated.peering, Some(k));
        assert_eq!(RelayToken::decode(&rotated.encode()), Ok(rotated.clone()));
        // Not a join-token trailer.
        let mut b = vec![VERSION];
        b.extend_from_slice(&j.secret);
        b.push(1);
        b.extend_from_slice(&j.relays[0].public_key);
        b.push(j.relays[0].addr.len() as u8);
        b.extend_from_slice(j.relays[0].addr.as_bytes());
        b.push(PEERING_TAG);
        b.extend_from_slice(&k);
        assert!(JoinToken::decode(&wrap(JOIN_PREFIX, b)).is_err());
    }

    #[test]
    fn trailers_out_of_order_are_refused() {
        let (j, _) = create_network([5u8; 32], &["198.18.0.1:7000".into()]);
        let mut b = unwrap(&j.encode(), JOIN_PREFIX, "join").unwrap_or_default();
        b.push(NAMES_TAG);
        b.extend_from_slice(&[1u8; 32]);
        b.push(CA_TAG);
        b.extend_from_slice(&[2u8; 32]);
        let t = wrap(JOIN_PREFIX, b);
        assert_eq!(JoinToken::decode(&t), Err(TokenError::Malformed("join")));
    }

    #[test]
    fn tcp_ports_trailer() {
        let (mut j, r) = create_network(
            [6u8; 32],
            &["198.18.0.1:7000".into(), "relay.example:7000".into()],
        );
        // Absent: 443 for every relay, and the token is byte-for-byte what older builds read.
        assert!(j.relays.iter().all(|r| r.tcp_port == 443));
        let plain = unwrap(&j.encode(), JOIN_PREFIX, "join").unwrap_or_default();
        assert_eq!(plain.len(), 1 + 32 + 1 + (32 + 1 + 15) + (32 + 1 + 18));
        assert_eq!(JoinToken::decode(&j.encode()), Ok(j.clone()));
        // One relay on 8443, the other without TCP.
        j.relays[0].tcp_port = 8443;
        j.relays[1].tcp_port = 0;
        let raw = unwrap(&j.encode(), JOIN_PREFIX, "join").unwrap_or_default();
        assert_eq!(raw[raw.len() - 5..], [TCP_PORTS_TAG, 0x20, 0xfb, 0, 0]);
        assert_eq!(raw.len(), plain.len() + 5);
        assert_eq!(JoinToken::decode(&j.encode()), Ok(j.clone()));
        // After the other trailers, and carried by a rotation.
        j.ca = Some([0xab; 32]);
        let n = j.rotated([7u8; 32], 1_900_000_000);
        assert_eq!(n.relays, j.relays);
        let back = JoinToken::decode(&n.encode());
        assert_eq!(back.as_ref().map(|t| t.relays[0].tcp_port), Ok(8443));
        assert_eq!(back, Ok(n.clone()));
        // Wrong length, before another trailer, twice, or in a relay token: malformed.
        let body = unwrap(&j.encode(), JOIN_PREFIX, "join").unwrap_or_default();
        for bad in [
            [&body[..body.len() - 2]].concat(),
            [&body[..], &[1, 2]].concat(),
            [&body[..], &[TCP_PORTS_TAG, 0, 1, 0, 2]].concat(),
            [&body[..], &[NAMES_TAG], &[0u8; 32]].concat(),
        ] {
            let t = wrap(JOIN_PREFIX, bad);
            assert_eq!(JoinToken::decode(&t), Err(TokenError::Malformed("join")));
        }
        let mut rb = unwrap(&r[0].encode(), RELAY_PREFIX, "relay").unwrap_or_default();
        rb.push(TCP_PORTS_TAG);
        let t = wrap(RELAY_PREFIX, rb);
        assert_eq!(RelayToken::decode(&t), Err(TokenError::Malformed("relay")));
    }

    #[test]
    fn corruption_is_named() {
        let (j, _) = create_network([2u8; 32], &["198.18.0.1:7000".into()]);
        let mut t = j.encode().into_bytes();
        let i = t.len() - 10;
        t[i] = if t[i] == b'A' { b'B' } else { b'A' };
        let t = String::from_utf8(t).unwrap_or_default();
        assert_eq!(JoinToken::decode(&t), Err(TokenError::Checksum("join")));
        assert!(matches!(
            JoinToken::decode("hello"),
            Err(TokenError::Prefix { .. })
        ));
        assert!(matches!(
            JoinToken::decode("veil1.***"),
            Err(TokenError::Encoding(_))
        ));
        assert!(matches!(
            RelayToken::decode(&j.encode()),
            Err(TokenError::Prefix { .. })
        ));
    }
}
