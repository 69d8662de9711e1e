//! Join tokens and relay tokens: what `veil network create` prints and what `veil up` and
//! `veil relay` read. Text form: a prefix, then base64url (no padding) of a versioned
//! binary body followed by a 4-byte SHA-256 checksum, so a typo is a clear error.

use crate::crypto::sha256;
use crate::keys::{NetworkKeys, RelayKeys};
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
}

/// What one relay needs: its private key and the relay keys (no network secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayToken {
    /// The relay's static private key.
    pub private_key: [u8; 32],
    /// Key derived one-way from the network secret (see [`RelayKeys`]).
    pub relay_base: [u8; 32],
    /// The network CA's public key, when access control is on.
    pub ca: Option<[u8; 32]>,
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
        put_ca(&mut b, self.ca);
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
            relays.push(RelayInfo { addr, public_key });
        }
        let ca = take_ca(&mut r).ok_or(TokenError::Malformed(K))?;
        if !r.0.is_empty() || relays.is_empty() {
            return Err(TokenError::Malformed(K));
        }
        Ok(JoinToken { secret, relays, ca })
    }

    /// The derived key schedule.
    pub fn keys(&self) -> NetworkKeys {
        NetworkKeys::derive(&self.secret)
    }
}

impl RelayToken {
    /// The text form.
    pub fn encode(&self) -> String {
        let mut b = vec![VERSION];
        b.extend_from_slice(&self.private_key);
        b.extend_from_slice(&self.relay_base);
        put_ca(&mut b, self.ca);
        wrap(RELAY_PREFIX, b)
    }

    /// Parses the text form.
    pub fn decode(text: &str) -> Result<Self, TokenError> {
        const K: &str = "relay";
        let raw = unwrap(text, RELAY_PREFIX, K)?;
        let mut r = Reader(&raw[1..]);
        let private_key = r.array::<32>().ok_or(TokenError::Malformed(K))?;
        let relay_base = r.array::<32>().ok_or(TokenError::Malformed(K))?;
        let ca = take_ca(&mut r).ok_or(TokenError::Malformed(K))?;
        if !r.0.is_empty() {
            return Err(TokenError::Malformed(K));
        }
        Ok(RelayToken {
            private_key,
            relay_base,
            ca,
        })
    }

    /// The relay keys.
    pub fn keys(&self) -> RelayKeys {
        RelayKeys::from_bytes(self.relay_base)
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
    for addr in relay_addrs {
        let mut sk = [0u8; 32];
        rng.fill_bytes(&mut sk);
        let id = crate::keys::Identity::from_secret(sk);
        relays.push(RelayInfo {
            addr: addr.clone(),
            public_key: *id.public(),
        });
        relay_tokens.push(RelayToken {
            private_key: id.secret_bytes(),
            relay_base: *keys.relay().bytes(),
            ca: None,
        });
    }
    (
        JoinToken {
            secret,
            relays,
            ca: None,
        },
        relay_tokens,
    )
}

/// Appends the optional CA public key: `[0xca][key 32]`.
fn put_ca(b: &mut Vec<u8>, ca: Option<[u8; 32]>) {
    if let Some(k) = ca {
        b.push(CA_TAG);
        b.extend_from_slice(&k);
    }
}

/// Reads the optional CA public key; None if it is there but malformed.
fn take_ca(r: &mut Reader<'_>) -> Option<Option<[u8; 32]>> {
    if r.0.is_empty() {
        return Some(None);
    }
    if r.u8()? != CA_TAG {
        return None;
    }
    r.array::<32>().map(Some)
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
