//! Cryptographic primitives used by the protocol, each behind a small interface so the
//! implementation can be chosen per target (`ring` where a C toolchain exists, pure Rust
//! elsewhere). This module owns no state beyond keys and never allocates per packet.

use chacha20::cipher::{KeyIvInit, StreamCipherCore, StreamCipherSeekCore};
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Length of every symmetric key.
pub const KEY_LEN: usize = 32;
/// Length of a Poly1305 tag.
pub const TAG_LEN: usize = 16;
/// Length of the random nonce in front of every handshake-layer datagram.
pub const HS_NONCE_LEN: usize = 24;

/// Derives a 32-byte key from `ikm` for one labelled purpose (HKDF-SHA256; the label is
/// namespaced with the protocol version so that v2 keys never collide with v1 keys).
pub fn derive(ikm: &[u8], label: &str, context: &[u8]) -> [u8; KEY_LEN] {
    let hk = Hkdf::<Sha256>::new(Some(b"veil/v1"), ikm);
    let mut out = [0u8; KEY_LEN];
    // Expanding 32 bytes out of SHA-256 cannot fail.
    let _ = hk.expand_multi_info(&[label.as_bytes(), b"\0", context], &mut out);
    out
}

/// A keyed hash (HMAC-SHA256) truncated to 32 bytes: blinded names and checksums.
pub fn keyed_hash(key: &[u8; KEY_LEN], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable_mac());
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

#[cold]
fn unreachable_mac() -> Hmac<Sha256> {
    // HMAC accepts keys of any length; this path exists only to avoid an unwrap.
    <Hmac<Sha256> as Mac>::new_from_slice(&[0u8; 32]).unwrap_or_else(|_| unreachable_mac())
}

/// Plain SHA-256.
pub fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    use sha2::Digest;
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn data_nonce(counter: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    n
}

/// The data-path AEAD: ChaCha20-Poly1305 with a 64-bit counter as nonce.
pub struct DataAead {
    // Only the 32 key bytes are kept: ring's key object is sized for AES key schedules
    // (544 bytes), and a relay holds one session per node; building the ChaCha20 key per
    // packet costs a copy.
    #[cfg(feature = "ring")]
    key: [u8; KEY_LEN],
    #[cfg(not(feature = "ring"))]
    key: chacha20poly1305::ChaCha20Poly1305,
}

impl DataAead {
    /// Creates the cipher for one direction of one session.
    pub fn new(key: &[u8; KEY_LEN]) -> Self {
        #[cfg(feature = "ring")]
        {
            DataAead { key: *key }
        }
        #[cfg(not(feature = "ring"))]
        {
            DataAead {
                key: chacha20poly1305::ChaCha20Poly1305::new(key.into()),
            }
        }
    }

    #[cfg(feature = "ring")]
    fn ring_key(&self) -> ring::aead::LessSafeKey {
        let unbound = ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, &self.key)
            .unwrap_or_else(|_| unreachable_key());
        ring::aead::LessSafeKey::new(unbound)
    }

    /// Encrypts `buf` in place and returns the tag.
    pub fn seal(&self, counter: u64, aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        #[cfg(feature = "ring")]
        {
            let nonce = ring::aead::Nonce::assume_unique_for_key(data_nonce(counter));
            match self
                .ring_key()
                .seal_in_place_separate_tag(nonce, ring::aead::Aad::from(aad), buf)
            {
                Ok(tag) => {
                    let mut t = [0u8; TAG_LEN];
                    t.copy_from_slice(tag.as_ref());
                    t
                }
                // ring fails only for inputs over 256 GiB.
                Err(_) => [0u8; TAG_LEN],
            }
        }
        #[cfg(not(feature = "ring"))]
        {
            let nonce = data_nonce(counter);
            match self
                .key
                .encrypt_in_place_detached((&nonce).into(), aad, buf)
            {
                Ok(tag) => tag.into(),
                Err(_) => [0u8; TAG_LEN],
            }
        }
    }

    /// Decrypts `buf` in place; on failure the contents of `buf` are unspecified.
    pub fn open(&self, counter: u64, aad: &[u8], buf: &mut [u8], tag: &[u8; TAG_LEN]) -> bool {
        #[cfg(feature = "ring")]
        {
            let nonce = ring::aead::Nonce::assume_unique_for_key(data_nonce(counter));
            let tag = ring::aead::Tag::from(*tag);
            self.ring_key()
                .open_in_place_separate_tag(nonce, ring::aead::Aad::from(aad), tag, buf, 0..)
                .is_ok()
        }
        #[cfg(not(feature = "ring"))]
        {
            let nonce = data_nonce(counter);
            self.key
                .decrypt_in_place_detached((&nonce).into(), aad, buf, tag.into())
                .is_ok()
        }
    }
}

#[cfg(feature = "ring")]
#[cold]
fn unreachable_key() -> ring::aead::UnboundKey {
    // A 32-byte key is always valid for ChaCha20-Poly1305.
    ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, &[0u8; 32])
        .unwrap_or_else(|_| unreachable_key())
}

/// Header protection in the spirit of RFC 9001 §5.4.4, extended to cover the connection
/// id: a 16-byte mask from ChaCha20 keyed by the receiver's header key, with counter and
/// nonce taken from a 16-byte sample of the ciphertext.
#[derive(Clone)]
pub struct HeaderKey([u8; KEY_LEN]);

impl HeaderKey {
    /// Wraps a key.
    pub fn new(key: [u8; KEY_LEN]) -> Self {
        HeaderKey(key)
    }

    /// The raw key, to announce it to the peer inside the encrypted handshake.
    pub fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The mask for a given sample.
    pub fn mask(&self, sample: &[u8; 16]) -> [u8; 16] {
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&sample[4..16]);
        let block = u32::from_le_bytes([sample[0], sample[1], sample[2], sample[3]]);
        // The keystream block at `block`, computed by the core: the stream wrapper refuses
        // the last block of the 32-bit counter (it panics on 0xffffffff), which a sender
        // controls here.
        let mut core = chacha20::ChaChaCore::<chacha20::cipher::consts::U10>::new(
            (&self.0).into(),
            (&nonce).into(),
        );
        core.set_block_pos(block);
        let mut ks =
            chacha20::cipher::Block::<chacha20::ChaChaCore<chacha20::cipher::consts::U10>>::default(
            );
        core.write_keystream_block(&mut ks);
        let mut m = [0u8; 16];
        m.copy_from_slice(&ks[..16]);
        m
    }
}

/// The handshake-layer seal: XChaCha20-Poly1305 under a key derived from the network and
/// the receiver's static key, with a random 24-byte nonce carried in front. It is the cheap
/// MAC checked before any public-key work, and it hides every byte of the handshake.
pub struct HsSeal(chacha20poly1305::XChaCha20Poly1305);

impl HsSeal {
    /// Creates the seal for one receiver.
    pub fn new(key: &[u8; KEY_LEN]) -> Self {
        HsSeal(chacha20poly1305::XChaCha20Poly1305::new(key.into()))
    }

    /// Encrypts `buf` in place under `nonce`, returning the tag.
    pub fn seal(&self, nonce: &[u8; HS_NONCE_LEN], buf: &mut [u8]) -> [u8; TAG_LEN] {
        match self.0.encrypt_in_place_detached(nonce.into(), &[], buf) {
            Ok(t) => t.into(),
            Err(_) => [0u8; TAG_LEN],
        }
    }

    /// Decrypts `buf` in place; false if the tag does not verify.
    pub fn open(&self, nonce: &[u8; HS_NONCE_LEN], buf: &mut [u8], tag: &[u8; TAG_LEN]) -> bool {
        self.0
            .decrypt_in_place_detached(nonce.into(), &[], buf, tag.into())
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_mask_is_the_chacha20_keystream_at_the_sampled_block_for_every_counter() {
        use chacha20::cipher::{StreamCipher, StreamCipherSeek};
        let hp = HeaderKey::new([9u8; 32]);
        for block in [0u32, 1, 77, 0x1234_5678, u32::MAX - 1] {
            let mut sample = [5u8; 16];
            sample[..4].copy_from_slice(&block.to_le_bytes());
            let mut nonce = [0u8; 12];
            nonce.copy_from_slice(&sample[4..]);
            let mut c = chacha20::ChaCha20::new((&[9u8; 32]).into(), (&nonce).into());
            c.seek(u64::from(block) * 64);
            let mut want = [0u8; 16];
            c.apply_keystream(&mut want);
            assert_eq!(hp.mask(&sample), want, "block {block}");
        }
        // The last block of the counter: found by fuzzing, it used to panic.
        let mut sample = [0u8; 16];
        sample[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        let _ = hp.mask(&sample);
    }

    #[test]
    fn data_aead_round_trip_and_tamper() {
        let a = DataAead::new(&[7u8; 32]);
        let mut buf = *b"hello veil, a packet of some size";
        let orig = buf;
        let tag = a.seal(5, b"hdr", &mut buf);
        assert_ne!(buf, orig);
        let mut c = buf;
        assert!(a.open(5, b"hdr", &mut c, &tag));
        assert_eq!(c, orig);
        let mut c = buf;
        assert!(!a.open(6, b"hdr", &mut c, &tag));
        let mut c = buf;
        assert!(!a.open(5, b"hdX", &mut c, &tag));
    }

    #[test]
    fn header_mask_depends_on_sample_and_key() {
        let k = HeaderKey::new([1u8; 32]);
        assert_ne!(k.mask(&[0u8; 16]), k.mask(&[1u8; 16]));
        assert_ne!(
            k.mask(&[0u8; 16]),
            HeaderKey::new([2u8; 32]).mask(&[0u8; 16])
        );
        assert_eq!(k.mask(&[9u8; 16]), k.mask(&[9u8; 16]));
    }

    #[test]
    fn derive_separates_labels() {
        assert_ne!(derive(b"x", "a", b""), derive(b"x", "b", b""));
        assert_ne!(derive(b"x", "a", b"1"), derive(b"x", "a", b"2"));
    }
}
