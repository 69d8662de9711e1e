//! Key schedule of a network: everything derived one-way from the network secret, and
//! the node's static identity. Relays receive [`RelayKeys`] only, never the secret.

use crate::crypto::{derive, keyed_hash, HeaderKey, HsSeal, KEY_LEN};
use std::net::{Ipv4Addr, Ipv6Addr};
use x25519_dalek::{PublicKey, StaticSecret};

/// A static X25519 key pair.
#[derive(Clone)]
pub struct Identity {
    secret: StaticSecret,
    public: [u8; 32],
}

impl Identity {
    /// Builds the identity from its 32-byte private key.
    pub fn from_secret(bytes: [u8; 32]) -> Self {
        let secret = StaticSecret::from(bytes);
        let public = PublicKey::from(&secret).to_bytes();
        Identity { secret, public }
    }

    /// The private key (to persist it, or to hand it to snow).
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.secret.to_bytes()
    }

    /// The public key.
    pub fn public(&self) -> &[u8; 32] {
        &self.public
    }

    /// A short printable id for humans and the CLI (not secret, not used on the wire).
    pub fn id(&self) -> String {
        node_id(&self.public)
    }
}

/// The short id of a public key: 16 hex characters of its hash.
pub fn node_id(public: &[u8; 32]) -> String {
    let h = crate::crypto::sha256(&[b"veil node id", public]);
    h[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// What a relay holds: one key derived from the network secret that lets it check and
/// unmask the handshakes addressed to it, nothing that reads records or blinded names.
#[derive(Clone)]
pub struct RelayKeys {
    base: [u8; KEY_LEN],
}

impl RelayKeys {
    /// Wraps the relay base key as stored in a relay token.
    pub fn from_bytes(base: [u8; KEY_LEN]) -> Self {
        RelayKeys { base }
    }

    /// The raw key, for the relay token.
    pub fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.base
    }

    /// The handshake-layer seal for datagrams sent to `receiver` on a node↔relay link.
    pub fn hs_seal(&self, receiver: &[u8; 32]) -> HsSeal {
        HsSeal::new(&derive(&self.base, "relay handshake seal", receiver))
    }

    /// The Noise prologue of node↔relay handshakes (binds them to this network).
    pub fn prologue(&self) -> [u8; 32] {
        derive(&self.base, "relay prologue", b"")
    }
}

/// Every key a node derives from the network secret.
#[derive(Clone)]
pub struct NetworkKeys {
    relay: RelayKeys,
    node_hs: [u8; KEY_LEN],
    blind: [u8; KEY_LEN],
    record: [u8; KEY_LEN],
    ula: [u8; KEY_LEN],
}

impl NetworkKeys {
    /// Derives the schedule of a network that was never rotated: the names base comes from
    /// the secret itself.
    pub fn derive(secret: &[u8; 32]) -> Self {
        Self::with_names(secret, &names_base(secret))
    }

    /// Derives the schedule from the 32-byte network secret (what admits a node: relay and
    /// node handshake keys) and the names base (what names it: blinded names, records and
    /// the overlay prefix), which a rotation of the secret keeps.
    pub fn with_names(secret: &[u8; 32], names: &[u8; 32]) -> Self {
        NetworkKeys {
            relay: RelayKeys::from_bytes(derive(secret, "relay base", b"")),
            node_hs: derive(secret, "node handshake base", b""),
            blind: derive(names, "blind names", b""),
            record: derive(names, "records", b""),
            ula: derive(names, "ula prefix", b""),
        }
    }

    /// The part a relay gets.
    pub fn relay(&self) -> &RelayKeys {
        &self.relay
    }

    /// The handshake-layer seal for node↔node datagrams sent to `receiver`.
    pub fn node_hs_seal(&self, receiver: &[u8; 32]) -> HsSeal {
        HsSeal::new(&derive(&self.node_hs, "node handshake seal", receiver))
    }

    /// The Noise prologue of node↔node handshakes.
    pub fn node_prologue(&self) -> [u8; 32] {
        derive(&self.node_hs, "node prologue", b"")
    }

    /// The key that encrypts registration records (relays do not have it).
    pub fn record_key(&self) -> [u8; KEY_LEN] {
        self.record
    }

    /// A blinded name: a keyed hash of a kind tag and a value, under a key relays lack.
    pub fn blind(&self, kind: &[u8], value: &[u8]) -> [u8; 32] {
        keyed_hash(&self.blind, &[b"veil blind", kind, b"\0", value])
    }

    /// The network's IPv6 ULA /48 (fd00::/8 plus 40 bits of the secret's hash).
    pub fn ula_prefix(&self) -> [u8; 6] {
        let mut p = [0u8; 6];
        p[0] = 0xfd;
        p[1..6].copy_from_slice(&self.ula[..5]);
        p
    }

    /// The overlay IPv6 address of a node: the network /48, subnet 0, host part from its key.
    pub fn overlay_ipv6(&self, public: &[u8; 32]) -> Ipv6Addr {
        let h = crate::crypto::sha256(&[b"veil ipv6 host", public]);
        let mut a = [0u8; 16];
        a[..6].copy_from_slice(&self.ula_prefix());
        a[8..16].copy_from_slice(&h[..8]);
        Ipv6Addr::from(a)
    }
}

/// The names base of a network created with `secret`: one-way from it, so a rotated token
/// can carry it without carrying the first secret.
pub fn names_base(secret: &[u8; 32]) -> [u8; 32] {
    derive(secret, "names base", b"")
}

/// The `n`-th IPv4 candidate a node tries to claim inside `pool` (a prefix of length
/// `pool_len`). Candidates are spread by the key so that claims rarely collide; host parts
/// ending in .0 and .255 are skipped so no tool mistakes them for network or broadcast, and
/// so is the pool's DNS address (its last address but one).
pub fn ipv4_candidate(public: &[u8; 32], pool: Ipv4Addr, pool_len: u8, n: u32) -> Ipv4Addr {
    let host_bits = 32u32.saturating_sub(u32::from(pool_len)).min(31);
    let size: u32 = 1u32 << host_bits;
    let base = u32::from(pool) & !(size.wrapping_sub(1));
    let h = crate::crypto::sha256(&[b"veil ipv4 candidate", public, &n.to_le_bytes()]);
    let start = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) & (size - 1);
    // Probe forward from the hashed host to the next usable one; among any three
    // consecutive hosts one is usable when the pool has at least four addresses.
    // The last address but one is the pool's DNS address (`node::dns_address`).
    let usable = |host: u32| {
        host != 0
            && host != size - 1
            && host != size.wrapping_sub(2)
            && host & 0xff != 0
            && host & 0xff != 255
    };
    (0..size.min(4))
        .map(|i| start.wrapping_add(i) & (size - 1))
        .find(|h| usable(*h))
        .map_or(Ipv4Addr::from(base), |host| Ipv4Addr::from(base | host))
}

/// The relay of the token a private two-hop node takes as its guard: never the first (its
/// home relay); with more than two relays, one picked by a hash of the node's secret key.
/// So the choice is the same at every start (a node that picked anew each time would sooner
/// or later pick a relay that watches), nodes spread over the relays instead of all taking
/// the second, and nobody who sees which guard a node uses learns anything about its public
/// key.
pub fn guard_index(secret: &[u8; 32], relays: usize) -> usize {
    if relays <= 2 {
        return 1 % relays.max(1);
    }
    let h = crate::crypto::sha256(&[b"veil guard", secret]);
    let mut first = [0u8; 8];
    first.copy_from_slice(&h[..8]);
    let others = relays as u64 - 1;
    1 + usize::try_from(u64::from_le_bytes(first) % others).unwrap_or(0)
}

/// A random header-protection key for a new endpoint, drawn from the caller's RNG.
pub fn header_key_from(bytes: [u8; 32]) -> HeaderKey {
    HeaderKey::new(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_are_stable_spread_and_never_the_home() {
        assert_eq!(guard_index(&[7; 32], 1), 0);
        assert_eq!(guard_index(&[7; 32], 2), 1);
        let mut seen = [0u32; 5];
        for k in 0..=255u8 {
            let i = guard_index(&[k; 32], 5);
            assert_eq!(i, guard_index(&[k; 32], 5), "the same key, the same guard");
            seen[i] += 1;
        }
        assert_eq!(seen[0], 0, "the home relay is never the guard");
        // 256 keys over four relays: each gets a share (64 expected).
        assert!(seen[1..].iter().all(|&n| n >= 32), "{seen:?}");
    }

    #[test]
    fn candidates_terminate_for_every_pool_size() {
        for len in 1..=32u8 {
            for n in 0..64 {
                let a = ipv4_candidate(&[n as u8; 32], Ipv4Addr::new(100, 64, 0, 0), len, n);
                if len <= 30 {
                    let host = u32::from(a) & (u32::MAX >> len);
                    assert!(host != 0 && host != u32::MAX >> len, "/{len}: {a}");
                }
            }
        }
    }

    #[test]
    fn candidates_stay_in_pool_and_skip_edges() {
        for n in 0..2000u32 {
            let mut k = [0u8; 32];
            k[..4].copy_from_slice(&n.to_le_bytes());
            let a = ipv4_candidate(&k, Ipv4Addr::new(100, 64, 0, 0), 10, 0);
            let o = a.octets();
            assert_eq!(o[0], 100);
            assert!((64..128).contains(&o[1]), "{a}");
            assert!(o[3] != 0 && o[3] != 255);
        }
    }

    #[test]
    fn ipv6_is_in_ula_prefix() {
        let k = NetworkKeys::derive(&[3u8; 32]);
        let a = k.overlay_ipv6(&[9u8; 32]).octets();
        assert_eq!(a[0], 0xfd);
        assert_eq!(&a[..6], &k.ula_prefix());
    }
}
