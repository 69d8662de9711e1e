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
    /// A policy for a network without a CA.
    #[error("this network has no CA, so it has no policy (create it with --with-ca)")]
    NoCa,
    /// The policy does not fit one frame.
    #[error("the policy is larger than 1200 bytes (about 30 revocations with a few rules): split rules or retire revoked keys by rotating the network")]
    PolicyTooLarge,
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

/// Prefix of a policy.
pub const POLICY_PREFIX: &str = "veilpolicy1.";
/// Largest policy in binary form: it travels in one frame.
pub const MAX_POLICY: usize = 1200;
const POLICY_CONTEXT: &[u8] = b"veil policy v1";

/// A CA-signed network policy: which tags may talk to which, and which node keys are
/// revoked. A higher serial replaces a lower one. Without any policy, or with a policy
/// without rules, every certified node may talk to every other.
///
/// Binary form: `[version][serial u64][rule count u16]([len][tag a][len][tag b])*
/// [revoked count u16]([node public 32])*[Ed25519 signature 64]`, the signature over
/// `"veil policy v1" || everything before it`. A rule `a:b` lets nodes tagged `a` and nodes
/// tagged `b` talk (both ways); `*` matches any tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Newer policies have higher serials.
    pub serial: u64,
    /// Allowed tag pairs.
    pub rules: Vec<(String, String)>,
    /// Revoked node keys: refused by relays and peers.
    pub revoked: Vec<[u8; 32]>,
    /// The CA's signature.
    pub signature: [u8; 64],
}

impl CaKey {
    /// Signs a policy.
    pub fn sign_policy(
        &self,
        serial: u64,
        rules: &[(String, String)],
        revoked: &[[u8; 32]],
    ) -> Result<Policy, CertError> {
        for (a, b) in rules {
            for t in [a, b] {
                if t != "*" {
                    check_tags(std::slice::from_ref(t))?;
                }
            }
        }
        let mut p = Policy {
            serial,
            rules: rules.to_vec(),
            revoked: revoked.to_vec(),
            signature: [0; 64],
        };
        let body = p.body();
        if body.len() + 64 > MAX_POLICY {
            return Err(CertError::PolicyTooLarge);
        }
        let mut m = POLICY_CONTEXT.to_vec();
        m.extend_from_slice(&body);
        p.signature = self.0.sign(&m).to_bytes();
        Ok(p)
    }
}

impl Policy {
    fn body(&self) -> Vec<u8> {
        let mut b = vec![crate::token::VERSION];
        b.extend_from_slice(&self.serial.to_be_bytes());
        b.extend_from_slice(&(self.rules.len() as u16).to_be_bytes());
        for (x, y) in &self.rules {
            for t in [x, y] {
                b.push(t.len() as u8);
                b.extend_from_slice(t.as_bytes());
            }
        }
        b.extend_from_slice(&(self.revoked.len() as u16).to_be_bytes());
        for k in &self.revoked {
            b.extend_from_slice(k);
        }
        b
    }

    /// The binary form (what the Policy frame carries).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = self.body();
        b.extend_from_slice(&self.signature);
        b
    }

    /// Parses the binary form and checks the CA's signature.
    pub fn from_bytes(b: &[u8], ca: &[u8; 32]) -> Option<Policy> {
        if b.len() > MAX_POLICY {
            return None;
        }
        let mut c = crate::wire::Cursor(b);
        if c.u8()? != crate::token::VERSION {
            return None;
        }
        let serial = c.u64()?;
        let n = u16::from_be_bytes(c.array::<2>()?);
        let mut rules = Vec::new();
        for _ in 0..n {
            let mut pair = [String::new(), String::new()];
            for t in &mut pair {
                let len = usize::from(c.u8()?);
                *t = std::str::from_utf8(c.take(len)?).ok()?.to_string();
            }
            let [a, b] = pair;
            rules.push((a, b));
        }
        let n = u16::from_be_bytes(c.array::<2>()?);
        let mut revoked = Vec::new();
        for _ in 0..n {
            revoked.push(c.array::<32>()?);
        }
        let signature = c.array::<64>()?;
        if !c.rest().is_empty() {
            return None;
        }
        let p = Policy {
            serial,
            rules,
            revoked,
            signature,
        };
        let key = VerifyingKey::from_bytes(ca).ok()?;
        let mut m = POLICY_CONTEXT.to_vec();
        m.extend_from_slice(&p.body());
        key.verify(&m, &Signature::from_bytes(&p.signature)).ok()?;
        Some(p)
    }

    /// The text form.
    pub fn encode(&self) -> String {
        wrap(POLICY_PREFIX, self.to_bytes())
    }

    /// Parses the text form and checks the signature.
    pub fn decode(text: &str, ca: &[u8; 32]) -> Result<Policy, CertError> {
        let raw = unwrap(text, POLICY_PREFIX, "policy")?;
        Policy::from_bytes(&raw, ca).ok_or(CertError::Signature)
    }

    /// The binary form inside a policy's text form (the signature is checked later, by
    /// whoever holds the CA key: [`crate::Node::set_policy`]).
    pub fn text_to_bytes(text: &str) -> Result<Vec<u8>, CertError> {
        Ok(unwrap(text, POLICY_PREFIX, "policy")?)
    }

    /// The text form of a binary policy.
    pub fn bytes_to_text(bytes: &[u8]) -> String {
        wrap(POLICY_PREFIX, bytes.to_vec())
    }

    /// Whether `pk` is revoked.
    pub fn is_revoked(&self, pk: &[u8; 32]) -> bool {
        self.revoked.contains(pk)
    }

    /// Whether nodes with tags `a` and `b` may talk.
    pub fn allows(&self, a: &[String], b: &[String]) -> bool {
        if self.rules.is_empty() {
            return true;
        }
        let has = |tags: &[String], t: &str| t == "*" || tags.iter().any(|x| x == t);
        self.rules
            .iter()
            .any(|(x, y)| (has(a, x) && has(b, y)) || (has(a, y) && has(b, x)))
    }
}

#[cfg(test)]
mod policy_tests {
    use super::*;

    #[test]
    fn policy_signs_parses_and_decides() {
        let ca = CaKey::from_seed([3; 32]);
        let rules = vec![("web".to_string(), "db".to_string())];
        let p = ca.sign_policy(7, &rules, &[[9; 32]]).expect("signs");
        let back = Policy::decode(&p.encode(), &ca.public()).expect("decodes");
        assert_eq!(back, p);
        assert!(Policy::decode(&p.encode(), &CaKey::from_seed([4; 32]).public()).is_err());
        let web = vec!["web".to_string()];
        let db = vec!["db".to_string(), "eu".to_string()];
        let other = vec!["other".to_string()];
        assert!(p.allows(&web, &db) && p.allows(&db, &web));
        assert!(!p.allows(&web, &other) && !p.allows(&web, &web));
        assert!(p.is_revoked(&[9; 32]) && !p.is_revoked(&[8; 32]));
        let open = ca.sign_policy(8, &[], &[]).expect("signs");
        assert!(open.allows(&web, &other));
        let star = ca
            .sign_policy(9, &[("admin".into(), "*".into())], &[])
            .expect("signs");
        assert!(star.allows(&["admin".into()], &other) && !star.allows(&web, &other));
        let many: Vec<[u8; 32]> = (0..40u8).map(|i| [i; 32]).collect();
        assert_eq!(
            ca.sign_policy(10, &[], &many),
            Err(CertError::PolicyTooLarge)
        );
    }
}
