//! What node and relay share around the Noise handshake: the payloads each message carries
//! inside its encryption, and turning a message into sealed, padded handshake datagrams.

use crate::crypto::{HsSeal, HS_NONCE_LEN, TAG_LEN};
use crate::frag;
use crate::wire::{self, Cursor, HsKind, HS_PIECE_MAX};
use rand_chacha::ChaCha20Rng;
use rand_core::RngCore;
use std::net::Ipv4Addr;
use std::time::Duration;

/// How far in the past a handshake timestamp may lie when the responder has no newer one
/// on record for that initiator (bounds replays after the responder forgot it).
pub const MAX_HANDSHAKE_AGE: Duration = Duration::from_secs(600);

/// Carried in message 1 (after the ML-KEM key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitPayload {
    /// Unix time in nanoseconds: replay protection (strictly increasing per initiator).
    pub timestamp: u64,
    /// The initiator's header-protection key.
    pub hp: [u8; 32],
    /// The connection id the initiator receives this session on.
    pub cid: [u8; 8],
    /// The overlay IPv4 the initiator claims (verified through the rendezvous).
    pub ipv4: Option<Ipv4Addr>,
    /// The initiator's certificate, in networks with a CA (empty otherwise).
    pub cert: Vec<u8>,
    /// Relay to relay only: proof that the initiator is one of the network's relays
    /// ([`link_proof`]). Encoded after the certificate as `[0x72][32]`.
    pub link: Option<[u8; 32]>,
    /// The initiator offers AES-256-GCM for the data path (node to node only; relays never
    /// offer it). Encoded after the certificate as the byte `[0x61]`.
    pub aes: bool,
}

/// Marks the relay-link proof in a message 1 payload.
const LINK_TAG: u8 = 0x72;
/// Marks, in message 1, an offer of AES-256-GCM and, in message 2, the responder's choice of
/// it. No value follows.
const AES_TAG: u8 = 0x61;

/// What a relay proves it is a relay of the network with, when it opens a link to
/// another: `keyed_hash(peering, "veil relay link", initiator, responder)`. The Noise
/// handshake authenticates both static keys; the peering key, which only relays hold, says
/// that the initiator's key is a relay's.
pub fn link_proof(peering: &[u8; 32], initiator: &[u8; 32], responder: &[u8; 32]) -> [u8; 32] {
    crate::crypto::keyed_hash(peering, &[b"veil relay link", initiator, responder])
}

impl InitPayload {
    /// Encodes.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(52);
        v.extend_from_slice(&self.timestamp.to_be_bytes());
        v.extend_from_slice(&self.hp);
        v.extend_from_slice(&self.cid);
        v.extend_from_slice(&self.ipv4.map_or([0; 4], |a| a.octets()));
        put_cert(&mut v, &self.cert);
        if let Some(p) = self.link {
            v.push(LINK_TAG);
            v.extend_from_slice(&p);
        }
        if self.aes {
            v.push(AES_TAG);
        }
        v
    }
    /// Decodes. After the certificate come tagged trailers in any order; decoding stops at
    /// the first unknown tag and ignores what follows, so later versions can extend it.
    pub fn decode(b: &[u8]) -> Option<Self> {
        let mut c = Cursor(b);
        let timestamp = c.u64()?;
        let hp = c.array::<32>()?;
        let cid = c.array::<8>()?;
        let v4 = c.array::<4>()?;
        let ipv4 = (v4 != [0; 4]).then(|| Ipv4Addr::from(v4));
        let cert = take_cert(&mut c)?;
        let (mut link, mut aes) = (None, false);
        loop {
            match c.u8() {
                Some(LINK_TAG) => link = Some(c.array::<32>()?),
                Some(AES_TAG) => aes = true,
                _ => break,
            }
        }
        Some(InitPayload {
            timestamp,
            hp,
            cid,
            ipv4,
            cert,
            link,
            aes,
        })
    }
}

/// Carried in message 2.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RespPayload {
    /// The responder's header-protection key.
    pub hp: [u8; 32],
    /// The connection id the responder receives this session on.
    pub cid: [u8; 8],
    /// The responder's overlay IPv4, if it has one (the initiator verifies it through the
    /// rendezvous before accepting packets from it).
    pub ipv4: Option<Ipv4Addr>,
    /// The responder's certificate, in networks with a CA (empty otherwise).
    pub cert: Vec<u8>,
    /// The responder chose AES-256-GCM for the data path (only if the initiator offered
    /// it). Encoded after the certificate as the byte `[0x61]`.
    pub aes: bool,
}

impl RespPayload {
    /// Encodes.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(46 + self.cert.len());
        v.extend_from_slice(&self.hp);
        v.extend_from_slice(&self.cid);
        v.extend_from_slice(&self.ipv4.map_or([0; 4], |a| a.octets()));
        put_cert(&mut v, &self.cert);
        if self.aes {
            v.push(AES_TAG);
        }
        v
    }
    /// Decodes. Trailers after the certificate as in [`InitPayload::decode`].
    pub fn decode(b: &[u8]) -> Option<Self> {
        let mut c = Cursor(b);
        let hp = c.array::<32>()?;
        let cid = c.array::<8>()?;
        let v4 = c.array::<4>()?;
        let cert = take_cert(&mut c)?;
        let mut aes = false;
        while c.u8() == Some(AES_TAG) {
            aes = true;
        }
        Some(RespPayload {
            hp,
            cid,
            ipv4: (v4 != [0; 4]).then(|| Ipv4Addr::from(v4)),
            cert,
            aes,
        })
    }
}

/// Appends `[length u16][certificate]` (length 0: none).
fn put_cert(v: &mut Vec<u8>, cert: &[u8]) {
    let len = cert.len().min(usize::from(u16::MAX));
    v.extend_from_slice(&(len as u16).to_be_bytes());
    v.extend_from_slice(&cert[..len]);
}

fn take_cert(c: &mut Cursor<'_>) -> Option<Vec<u8>> {
    let len = u16::from_be_bytes(c.array::<2>()?);
    c.take(usize::from(len)).map(<[u8]>::to_vec)
}

/// Size granularity of handshake datagrams.
pub const HS_BUCKET: usize = 64;

/// Splits a handshake message into sealed datagrams, each with a fresh nonce and a random
/// amount of padding so that handshake sizes vary.
pub fn datagrams(
    seal: &HsSeal,
    rng: &mut ChaCha20Rng,
    kind: HsKind,
    msg_id: u32,
    msg: &[u8],
) -> Vec<Vec<u8>> {
    let pieces = frag::split(msg, HS_PIECE_MAX);
    let count = pieces.len() as u8;
    pieces
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut nonce = [0u8; 24];
            rng.fill_bytes(&mut nonce);
            // Sizes in 64-byte buckets like transport datagrams, one bucket more half of the
            // time: handshakes have no fixed size and no size outside the buckets.
            let bare = HS_NONCE_LEN + wire::HS_FRAG_HDR + p.len() + TAG_LEN;
            let target =
                bare.div_ceil(HS_BUCKET) * HS_BUCKET + HS_BUCKET * (rng.next_u32() % 2) as usize;
            let pad = target - bare;
            wire::seal_handshake(seal, &nonce, kind, msg_id, i as u8, count, p, pad)
        })
        .collect()
}

/// Whether a message-1 timestamp is acceptable given the last one seen from that initiator.
/// A timestamp more than `MAX_HANDSHAKE_AGE` ahead of our clock is refused too: accepted, it
/// would lock that initiator out once its clock is corrected.
pub fn timestamp_ok(ts: u64, last: Option<u64>, unix_now: Duration) -> bool {
    let ceiling = unix_now.saturating_add(MAX_HANDSHAKE_AGE).as_nanos();
    if u128::from(ts) > ceiling {
        return false;
    }
    match last {
        Some(l) => ts > l,
        None => {
            let floor = unix_now.saturating_sub(MAX_HANDSHAKE_AGE).as_nanos();
            u128::from(ts) >= floor
        }
    }
}

#[cfg(test)]
mod payload_tests {
    use super::*;

    fn init(link: Option<[u8; 32]>, aes: bool) -> InitPayload {
        InitPayload {
            timestamp: 0x0102_0304_0506_0708,
            hp: [3; 32],
            cid: [4; 8],
            ipv4: Some(Ipv4Addr::new(100, 64, 0, 9)),
            cert: vec![5; 40],
            link,
            aes,
        }
    }

    #[test]
    fn init_payload_round_trips_with_every_trailer() {
        for link in [None, Some([7u8; 32])] {
            for aes in [false, true] {
                let p = init(link, aes);
                assert_eq!(InitPayload::decode(&p.encode()), Some(p.clone()));
            }
        }
        // The offer is one byte.
        assert_eq!(
            init(None, true).encode().len(),
            init(None, false).encode().len() + 1
        );
    }

    #[test]
    fn init_payload_trailers_in_any_order_and_unknown_tags_end_them() {
        let bare = init(None, false).encode();
        let mut v = bare.clone();
        v.push(AES_TAG);
        v.push(LINK_TAG);
        v.extend_from_slice(&[7u8; 32]);
        assert_eq!(InitPayload::decode(&v), Some(init(Some([7; 32]), true)));
        // An unknown tag stops decoding: what follows it is not read.
        let mut v = bare.clone();
        v.extend_from_slice(&[0x99, AES_TAG]);
        assert_eq!(InitPayload::decode(&v), Some(init(None, false)));
        let mut v = bare.clone();
        v.extend_from_slice(&[AES_TAG, 0x99, LINK_TAG, 1, 2]);
        assert_eq!(InitPayload::decode(&v), Some(init(None, true)));
        // A truncated link proof is malformed, as before.
        let mut v = bare;
        v.extend_from_slice(&[AES_TAG, LINK_TAG, 1, 2]);
        assert_eq!(InitPayload::decode(&v), None);
    }

    #[test]
    fn resp_payload_round_trips_and_ignores_unknown_trailers() {
        for aes in [false, true] {
            for cert in [Vec::new(), vec![9u8; 100]] {
                let p = RespPayload {
                    hp: [1; 32],
                    cid: [2; 8],
                    ipv4: None,
                    cert,
                    aes,
                };
                let v = p.encode();
                assert_eq!(RespPayload::decode(&v), Some(p.clone()));
                let mut longer = v;
                longer.extend_from_slice(&[0x99, AES_TAG]);
                assert_eq!(RespPayload::decode(&longer), Some(p));
            }
        }
        // A payload from before the trailer existed: no AES.
        let old = RespPayload {
            hp: [1; 32],
            cid: [2; 8],
            ipv4: Some(Ipv4Addr::new(100, 64, 0, 1)),
            cert: Vec::new(),
            aes: false,
        };
        let mut v = old.encode();
        v.push(AES_TAG);
        assert_eq!(RespPayload::decode(&v).map(|p| p.aes), Some(true));
        assert!(RespPayload::decode(&v[..v.len() - 2]).is_none());
    }
}

#[cfg(test)]
mod timestamp_tests {
    use super::*;

    #[test]
    fn timestamps_must_be_newer_recent_and_not_far_ahead() {
        let now = Duration::from_secs(1_800_000_000);
        let ns = |d: Duration| d.as_nanos() as u64;
        assert!(timestamp_ok(ns(now), None, now));
        assert!(!timestamp_ok(
            ns(now - MAX_HANDSHAKE_AGE - Duration::from_secs(1)),
            None,
            now
        ));
        assert!(timestamp_ok(ns(now + Duration::from_secs(60)), None, now));
        assert!(!timestamp_ok(
            ns(now + MAX_HANDSHAKE_AGE + Duration::from_secs(1)),
            None,
            now
        ));
        assert!(!timestamp_ok(ns(now), Some(ns(now)), now));
        assert!(timestamp_ok(ns(now) + 1, Some(ns(now)), now));
        assert!(!timestamp_ok(
            ns(now + MAX_HANDSHAKE_AGE * 2),
            Some(ns(now)),
            now
        ));
    }
}
