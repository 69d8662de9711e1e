//! Access control: a network may have a certificate authority. Its Ed25519 key is kept
//! offline by the operator; the join token and every relay token carry only its public key.
//! A node presents a certificate that binds its X25519 key to an optional overlay IPv4, tags
//! and an expiry. Relays refuse to answer the handshake of a node without a valid
//! certificate (so it cannot register), and nodes refuse peers without one.
//!
//! Text forms (base64url with a 4-byte checksum, like the tokens):
//! * CA key: `veilca1.` + `[version][seed 32]`
//! * certificate: `veilcert1.` + `[version][node public 32][ipv4 4, 0.0.0.0 = none]
//!   [not_after unix seconds u64][tag count u8]([tag length u8][tag])*[Ed25519 signature 64]`;
//!   the signature covers `"veil cert v1" || everything before it`.

use crate::token::{unwrap, wrap, TokenError};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use std::net::Ipv4Addr;

/// Prefix of a CA key.
pub const CA_PREFIX: &str = "veilca1.";
/// Prefix of a certificate.
pub const CERT_PREFIX: &str = "veilcert1.";
/// Most tags on one certificate.
pub const MAX_TAGS: usize = 16;
/// Longest tag, in bytes.
pub const MAX_TAG_LEN: usize = 32;
const SIGNED_CONTEXT: &[u8] = b"veil cert v1";

/// Why a certificate is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// The text does not decode.
    #[error("{0}")]
    Text(#[from] TokenError),
    /// The CA's signature does not verify.
    #[error("the certificate is not signed by this network's CA (was it signed with another network's ca.key?)")]
    Signature,
    /// The certificate names another node key.
    #[error("the certificate is for node key {cert}, not this node's key {node}")]
    WrongKey {
        /// Short id in the certificate.
        cert: String,
        /// Short id of the key presenting it.
        node: String,
    },
    /// The certificate expired.
    #[error(
        "the certificate expired at unix time {not_after} (sign a new one with: veil cert sign)"
    )]
    Expired {
        /// Its expiry.
        not_after: u64,
    },
    /// A tag is empty, too long or not printable.
    #[error("bad tag `{0}`: tags are 1 to 32 characters of a-z, 0-9, '-' and '_'")]
    Tag(String),
    /// Too many tags.
    #[error("at most 16 tags per certificate")]
    TooManyTags,
}

/// The CA: an Ed25519 signing key.
pub struct CaKey(SigningKey);

impl CaKey {
    /// From a 32-byte seed (fresh OS randomness when the network is created).
    pub fn from_seed(seed: [u8; 32]) -> CaKey {
        CaKey(SigningKey::from_bytes(&seed))
    }

    /// The public key that goes into the tokens.
    pub fn public(&self) -> [u8; 32] {
        self.0.verifying_key().to_bytes()
    }

    /// The text form (secret: keep it offline).
    pub fn encode(&self) -> String {
        let mut b = vec![crate::token::VERSION];
        b.extend_from_slice(&self.0.to_bytes());
        wrap(CA_PREFIX, b)
    }

    /// Parses the text form.
    pub fn decode(text: &str) -> Result<CaKey, TokenError> {
        let raw = unwrap(text, CA_PREFIX, "CA key")?;
        let seed: [u8; 32] = raw
            .get(1..)
            .and_then(|b| b.try_into().ok())
            .ok_or(TokenError::Malformed("CA key"))?;
        Ok(CaKey::from_seed(seed))
    }

    /// Signs a certificate.
    pub fn sign(
        &self,
        node_public: [u8; 32],
        ipv4: Option<Ipv4Addr>,
        tags: &[String],
        not_after: u64,
    ) -> Result<Certificate, CertError> {
        check_tags(tags)?;
        let mut cert = Certificate {
            node_public,
            ipv4,
            tags: tags.to_vec(),
            not_after,
            signature: [0; 64],
        };
        let body = cert.body();
        cert.signature = self.0.sign(&signed(&body)).to_bytes();
        Ok(cert)
    }
}

fn signed(body: &[u8]) -> Vec<u8> {
    let mut m = SIGNED_CONTEXT.to_vec();
    m.extend_from_slice(body);
    m
}

fn check_tags(tags: &[String]) -> Result<(), CertError> {
    if tags.len() > MAX_TAGS {
        return Err(CertError::TooManyTags);
    }
    for t in tags {
        let ok = !t.is_empty()
            && t.len() <= MAX_TAG_LEN
            && t.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_');
        if !ok {
            return Err(CertError::Tag(t.clone()));
        }
    }
    Ok(())
}

/// A node certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certificate {
    /// The node's X25519 public key.
    pub node_public: [u8; 32],
    /// The overlay IPv4 the node must use, if the CA fixes one.
    pub ipv4: Option<Ipv4Addr>,
    /// Tags (groups) for policy.
    pub tags: Vec<String>,
    /// Expiry, unix seconds.
    pub not_after: u64,
    /// The CA's Ed25519 signature.
    pub signature: [u8; 64],
}

impl Certificate {
    fn body(&self) -> Vec<u8> {
        let mut b = vec![crate::token::VERSION];
        b.extend_from_slice(&self.node_public);
        b.extend_from_slice(&self.ipv4.map_or([0; 4], |a| a.octets()));
        b.extend_from_slice(&self.not_after.to_be_bytes());
        b.push(self.tags.len() as u8);
        for t in &self.tags {
            b.push(t.len() as u8);
            b.extend_from_slice(t.as_bytes());
        }
        b
    }

    /// The binary form (what handshakes carry).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = self.body();
        b.extend_from_slice(&self.signature);
        b
    }

    /// Parses the binary form (no signature check).
    pub fn from_bytes(b: &[u8]) -> Option<Certificate> {
        let mut c = crate::wire::Cursor(b);
        if c.u8()? != crate::token::VERSION {
            return None;
        }
        let node_public = c.array::<32>()?;
        let v4 = c.array::<4>()?;
        let not_after = c.u64()?;
        let n = usize::from(c.u8()?);
        if n > MAX_TAGS {
            return None;
        }
        let mut tags = Vec::with_capacity(n);
        for _ in 0..n {
            let len = usize::from(c.u8()?);
            let t = std::str::from_utf8(c.take(len)?).ok()?;
            tags.push(t.to_string());
        }
        let signature = c.array::<64>()?;
        if !c.rest().is_empty() {
            return None;
        }
        Some(Certificate {
            node_public,
            ipv4: (v4 != [0; 4]).then(|| Ipv4Addr::from(v4)),
            tags,
            not_after,
            signature,
        })
    }

    /// The text form.
    pub fn encode(&self) -> String {
        wrap(CERT_PREFIX, self.to_bytes())
    }

    /// Parses the text form (no signature check).
    pub fn decode(text: &str) -> Result<Certificate, CertError> {
        let mut raw = unwrap(text, CERT_PREFIX, "certificate")?;
        // `unwrap` checked the version byte; the binary form carries it too.
        let b = std::mem::take(&mut raw);
        Certificate::from_bytes(&b).ok_or(CertError::Text(TokenError::Malformed("certificate")))
    }

    /// Checks that `ca` signed this certificate for `node_public` and that it is valid at
    /// `now_unix` (seconds).
    pub fn verify(
        &self,
        ca: &[u8; 32],
        node_public: &[u8; 32],
        now_unix: u64,
    ) -> Result<(), CertError> {
        let key = VerifyingKey::from_bytes(ca).map_err(|_| CertError::Signature)?;
        key.verify(
            &signed(&self.body()),
            &Signature::from_bytes(&self.signature),
        )
        .map_err(|_| CertError::Signature)?;
        if &self.node_public != node_public {
            return Err(CertError::WrongKey {
                cert: crate::keys::node_id(&self.node_public),
                node: crate::keys::node_id(node_public),
            });
        }
        if now_unix > self.not_after {
            return Err(CertError::Expired {
                not_after: self.not_after,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_refuse() {
        let ca = CaKey::from_seed([1; 32]);
        let other = CaKey::from_seed([2; 32]);
        let tags = vec!["web".to_string(), "eu-west_1".to_string()];
        let c = ca
            .sign([5; 32], Some(Ipv4Addr::new(100, 64, 0, 7)), &tags, 1000)
            .expect("signs");
        assert_eq!(Certificate::decode(&c.encode()).expect("decodes"), c);
        assert_eq!(c.verify(&ca.public(), &[5; 32], 999), Ok(()));
        assert_eq!(
            c.verify(&ca.public(), &[5; 32], 1001),
            Err(CertError::Expired { not_after: 1000 })
        );
        assert!(matches!(
            c.verify(&ca.public(), &[6; 32], 10),
            Err(CertError::WrongKey { .. })
        ));
        assert_eq!(
            c.verify(&other.public(), &[5; 32], 10),
            Err(CertError::Signature)
        );
        let mut forged = c.clone();
        forged.ipv4 = Some(Ipv4Addr::new(100, 64, 0, 8));
        assert_eq!(
            forged.verify(&ca.public(), &[5; 32], 10),
            Err(CertError::Signature)
        );
        assert!(ca.sign([5; 32], None, &["Bad Tag".into()], 1).is_err());
        assert_eq!(
            CaKey::decode(&ca.encode()).expect("ca").public(),
            ca.public()
        );
    }
}
