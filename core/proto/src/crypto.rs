//! Cryptographic primitives used by the protocol, each behind a small interface so the
//! implementation can be chosen per target (`ring` where a C toolchain exists, pure Rust
//! elsewhere). This module owns no state beyond keys and never allocates per packet.

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Length of every symmetric key.
pub const KEY_LEN: usize = 32;
/// Length of an AEAD tag (Poly1305 or GCM).
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

/// The AEAD of a session's data path, agreed in the handshake.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Cipher {
    /// ChaCha20-Poly1305: the default, and always the cipher of sessions with relays.
    #[default]
    ChaCha20Poly1305,
    /// AES-256-GCM: used between two nodes that both offer it (both have AES instructions).
    Aes256Gcm,
}

impl Cipher {
    /// Its name as shown by `veil peers`: `aes-256-gcm` or `chacha20-poly1305`.
    pub fn name(self) -> &'static str {
        match self {
            Cipher::ChaCha20Poly1305 => "chacha20-poly1305",
            Cipher::Aes256Gcm => "aes-256-gcm",
        }
    }

    /// How many datagrams one key may seal before the session is re-keyed: AES-GCM's
    /// confidentiality limit of RFC 9001 §6.6 (2^23, for datagrams up to 64 KiB), and no
    /// limit of its own for ChaCha20-Poly1305 (there, 2^62: `rekey_after_packets` comes
    /// first).
    pub fn rekey_after_packets(self) -> u64 {
        match self {
            Cipher::ChaCha20Poly1305 => u64::MAX,
            Cipher::Aes256Gcm => 1 << 23,
        }
    }
}

/// Whether this CPU has the instructions that make AES-256-GCM faster than ChaCha20-Poly1305
/// (AES and carry-less multiplication), so that a node offers it to its peers.
///
/// On aarch64 the pure-Rust backend (no `ring`) uses them only when built with
/// `--cfg aes_armv8 --cfg polyval_armv8` (set in `.cargo/config.toml`); without those flags
/// it would run AES in software, so the answer is false there.
pub fn hardware_aes() -> bool {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(all(
        target_arch = "aarch64",
        any(feature = "ring", all(aes_armv8, polyval_armv8))
    ))]
    {
        std::arch::is_aarch64_feature_detected!("aes")
            && std::arch::is_aarch64_feature_detected!("pmull")
    }
    #[cfg(not(any(
        target_arch = "x86",
        target_arch = "x86_64",
        all(
            target_arch = "aarch64",
            any(feature = "ring", all(aes_armv8, polyval_armv8))
        )
    )))]
    {
        false
    }
}

/// The per-session crypto of a kind of [`crate::session::Session`]: the data-path AEAD of
/// one direction (a 64-bit counter as nonce, little-endian in bytes 4..12 of the 96-bit
/// nonce; a 16-byte tag; encryption in place), and how the session keeps the peer's header
/// key. Implemented by [`DataAead`] (either cipher, and the header key's schedule stored:
/// a node's sessions) and [`ChaChaAead`] (ChaCha20-Poly1305 only, and the raw header key:
/// a relay's, one per node, kept small).
pub trait SessionCrypto {
    /// How the peer's header key is kept: [`HeaderKeySchedule`] or [`HeaderKey`].
    type PeerHeaderKey: HeaderMask + From<HeaderKey>;
    /// Creates the cipher for one direction of one session.
    fn new(key: &[u8; KEY_LEN], cipher: Cipher) -> Self;
    /// Which AEAD this is.
    fn cipher(&self) -> Cipher;
    /// Encrypts `buf` in place and returns the tag.
    fn seal(&self, counter: u64, aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN];
    /// Decrypts `buf` in place; on failure the contents of `buf` are unspecified.
    fn open(&self, counter: u64, aad: &[u8], buf: &mut [u8], tag: &[u8; TAG_LEN]) -> bool;
}

/// ChaCha20-Poly1305 alone, in 32 bytes: the AEAD of the relay's sessions (it holds one per
/// node). Its `new` ignores the cipher asked for: relays never agree to anything else.
pub struct ChaChaAead {
    // Only the 32 key bytes are kept with ring: ring's key object is sized for AES key
    // schedules (544 bytes), and a relay holds one session per node; building the ChaCha20
    // key per packet costs a copy.
    #[cfg(feature = "ring")]
    key: [u8; KEY_LEN],
    #[cfg(not(feature = "ring"))]
    key: chacha20poly1305::ChaCha20Poly1305,
}

impl ChaChaAead {
    fn from_key(key: &[u8; KEY_LEN]) -> Self {
        #[cfg(feature = "ring")]
        {
            ChaChaAead { key: *key }
        }
        #[cfg(not(feature = "ring"))]
        {
            ChaChaAead {
                key: chacha20poly1305::ChaCha20Poly1305::new(key.into()),
            }
        }
    }

    #[cfg(feature = "ring")]
    fn ring_key(&self) -> ring::aead::LessSafeKey {
        let unbound = ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, &self.key)
            .unwrap_or_else(|_| unreachable_key(&ring::aead::CHACHA20_POLY1305));
        ring::aead::LessSafeKey::new(unbound)
    }
}

impl SessionCrypto for ChaChaAead {
    type PeerHeaderKey = HeaderKey;

    fn new(key: &[u8; KEY_LEN], _cipher: Cipher) -> Self {
        ChaChaAead::from_key(key)
    }

    fn cipher(&self) -> Cipher {
        Cipher::ChaCha20Poly1305
    }

    fn seal(&self, counter: u64, aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        #[cfg(feature = "ring")]
        {
            ring_seal(&self.ring_key(), counter, aad, buf)
        }
        #[cfg(not(feature = "ring"))]
        {
            rc_seal(&self.key, counter, aad, buf)
        }
    }

    fn open(&self, counter: u64, aad: &[u8], buf: &mut [u8], tag: &[u8; TAG_LEN]) -> bool {
        #[cfg(feature = "ring")]
        {
            ring_open(&self.ring_key(), counter, aad, buf, tag)
        }
        #[cfg(not(feature = "ring"))]
        {
            rc_open(&self.key, counter, aad, buf, tag)
        }
    }
}

/// The data-path AEAD of sessions between nodes: ChaCha20-Poly1305 or AES-256-GCM, as the
/// handshake agreed (see [`SessionCrypto`] for the nonce and tag). Cloning shares the key:
/// a [`crate::session::SealJob`] or [`crate::session::OpenJob`] carries one to whichever
/// thread runs it.
#[derive(Clone)]
pub struct DataAead(std::sync::Arc<AeadKey>);

enum AeadKey {
    ChaCha(ChaChaAead),
    // The AES key schedule is expanded once, when the session is made (ring takes about
    // 100 ns to set a key up, too much per packet), and boxed so that ChaCha sessions stay
    // small.
    #[cfg(feature = "ring")]
    Aes(Box<ring::aead::LessSafeKey>),
    #[cfg(not(feature = "ring"))]
    Aes(Box<aes_gcm::Aes256Gcm>),
}

impl DataAead {
    /// Creates the cipher for one direction of one session.
    pub fn new(key: &[u8; KEY_LEN], cipher: Cipher) -> Self {
        match cipher {
            Cipher::ChaCha20Poly1305 => DataAead(std::sync::Arc::new(AeadKey::ChaCha(
                ChaChaAead::from_key(key),
            ))),
            #[cfg(feature = "ring")]
            Cipher::Aes256Gcm => {
                let unbound = ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, key)
                    .unwrap_or_else(|_| unreachable_key(&ring::aead::AES_256_GCM));
                DataAead(std::sync::Arc::new(AeadKey::Aes(Box::new(
                    ring::aead::LessSafeKey::new(unbound),
                ))))
            }
            #[cfg(not(feature = "ring"))]
            Cipher::Aes256Gcm => DataAead(std::sync::Arc::new(AeadKey::Aes(Box::new(
                aes_gcm::Aes256Gcm::new(key.into()),
            )))),
        }
    }

    /// Which AEAD this is.
    pub fn cipher(&self) -> Cipher {
        match *self.0 {
            AeadKey::ChaCha(_) => Cipher::ChaCha20Poly1305,
            AeadKey::Aes(_) => Cipher::Aes256Gcm,
        }
    }

    /// Encrypts `buf` in place and returns the tag.
    pub fn seal(&self, counter: u64, aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        match &*self.0 {
            AeadKey::ChaCha(k) => k.seal(counter, aad, buf),
            #[cfg(feature = "ring")]
            AeadKey::Aes(k) => ring_seal(k, counter, aad, buf),
            #[cfg(not(feature = "ring"))]
            AeadKey::Aes(k) => rc_seal(&**k, counter, aad, buf),
        }
    }

    /// Decrypts `buf` in place; on failure the contents of `buf` are unspecified.
    pub fn open(&self, counter: u64, aad: &[u8], buf: &mut [u8], tag: &[u8; TAG_LEN]) -> bool {
        match &*self.0 {
            AeadKey::ChaCha(k) => k.open(counter, aad, buf, tag),
            #[cfg(feature = "ring")]
            AeadKey::Aes(k) => ring_open(k, counter, aad, buf, tag),
            #[cfg(not(feature = "ring"))]
            AeadKey::Aes(k) => rc_open(&**k, counter, aad, buf, tag),
        }
    }
}

impl SessionCrypto for DataAead {
    type PeerHeaderKey = HeaderKeySchedule;

    fn new(key: &[u8; KEY_LEN], cipher: Cipher) -> Self {
        DataAead::new(key, cipher)
    }
    fn cipher(&self) -> Cipher {
        DataAead::cipher(self)
    }
    fn seal(&self, counter: u64, aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        DataAead::seal(self, counter, aad, buf)
    }
    fn open(&self, counter: u64, aad: &[u8], buf: &mut [u8], tag: &[u8; TAG_LEN]) -> bool {
        DataAead::open(self, counter, aad, buf, tag)
    }
}

#[cfg(feature = "ring")]
fn ring_seal(
    key: &ring::aead::LessSafeKey,
    counter: u64,
    aad: &[u8],
    buf: &mut [u8],
) -> [u8; TAG_LEN] {
    let nonce = ring::aead::Nonce::assume_unique_for_key(data_nonce(counter));
    match key.seal_in_place_separate_tag(nonce, ring::aead::Aad::from(aad), buf) {
        Ok(tag) => {
            let mut t = [0u8; TAG_LEN];
            t.copy_from_slice(tag.as_ref());
            t
        }
        // ring fails only for inputs over 64 GiB (AES-GCM) or 256 GiB (ChaCha20).
        Err(_) => [0u8; TAG_LEN],
    }
}

#[cfg(feature = "ring")]
fn ring_open(
    key: &ring::aead::LessSafeKey,
    counter: u64,
    aad: &[u8],
    buf: &mut [u8],
    tag: &[u8; TAG_LEN],
) -> bool {
    let nonce = ring::aead::Nonce::assume_unique_for_key(data_nonce(counter));
    let tag = ring::aead::Tag::from(*tag);
    key.open_in_place_separate_tag(nonce, ring::aead::Aad::from(aad), tag, buf, 0..)
        .is_ok()
}

#[cfg(feature = "ring")]
#[cold]
fn unreachable_key(alg: &'static ring::aead::Algorithm) -> ring::aead::UnboundKey {
    // A 32-byte key is always valid for ChaCha20-Poly1305 and AES-256-GCM.
    ring::aead::UnboundKey::new(alg, &[0u8; 32]).unwrap_or_else(|_| unreachable_key(alg))
}

#[cfg(not(feature = "ring"))]
fn rc_seal<A>(key: &A, counter: u64, aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN]
where
    A: AeadInPlace<
        NonceSize = chacha20poly1305::consts::U12,
        TagSize = chacha20poly1305::consts::U16,
    >,
{
    let nonce = data_nonce(counter);
    match key.encrypt_in_place_detached((&nonce).into(), aad, buf) {
        Ok(tag) => tag.into(),
        Err(_) => [0u8; TAG_LEN],
    }
}

#[cfg(not(feature = "ring"))]
fn rc_open<A>(key: &A, counter: u64, aad: &[u8], buf: &mut [u8], tag: &[u8; TAG_LEN]) -> bool
where
    A: AeadInPlace<
        NonceSize = chacha20poly1305::consts::U12,
        TagSize = chacha20poly1305::consts::U16,
    >,
{
    let nonce = data_nonce(counter);
    key.decrypt_in_place_detached((&nonce).into(), aad, buf, tag.into())
        .is_ok()
}

/// Header protection as in RFC 9001 §5.4.3, extended to cover the connection id: the
/// 16-byte mask is one AES-256 block, the encryption (ECB, a single block) of a 16-byte
/// sample of the ciphertext under the receiver's header key. A sender masks with the
/// receiver's key, kept in each session (a [`HeaderKeySchedule`] in a node's, a raw
/// [`HeaderKey`] in a relay's); a receiver unmasks with its own (a [`HeaderKeySchedule`]).
pub trait HeaderMask {
    /// The mask for a given sample: AES-256-ECB(key, sample).
    fn mask(&self, sample: &[u8; 16]) -> [u8; 16];
}

/// A header key as the relay keeps each node's (in every client session): only the 32 raw
/// bytes, and the AES key schedule is expanded on every call. A relay holds one per node,
/// and the expanded schedule of the pure-Rust `aes` crate takes 960 bytes (sized for its
/// software fallback), 30 times the key. Measured (x86_64 with AES-NI, benches
/// `per_packet/header_mask_raw` and `header_unmask`): 77 ns a mask expanding per call,
/// 13 ns with the schedule stored ([`HeaderKeySchedule`]); the expansion is a chain of
/// dependent instructions and costs most of it. So the relay's sessions pay 77 ns per
/// datagram they send to save 960 bytes per node, and everything else stores the schedule.
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

    /// The mask for a given sample: AES-256-ECB(key, sample).
    pub fn mask(&self, sample: &[u8; 16]) -> [u8; 16] {
        aes_block(&aes::Aes256Enc::new((&self.0).into()), sample)
    }
}

impl HeaderMask for HeaderKey {
    fn mask(&self, sample: &[u8; 16]) -> [u8; 16] {
        HeaderKey::mask(self, sample)
    }
}

/// A header key with its AES key schedule expanded once (about 1 KB; 13 ns a mask instead
/// of 77 ns, see [`HeaderKey`]): our own keys, which every received datagram is unmasked
/// with (a node holds one for its peers and one per relay link, a relay one), and the
/// peer's key in a node's sessions (a node holds a few). Cloning shares the schedule.
#[derive(Clone)]
pub struct HeaderKeySchedule {
    key: [u8; KEY_LEN],
    aes: std::sync::Arc<aes::Aes256Enc>,
}

impl HeaderKeySchedule {
    /// Expands a key.
    pub fn new(key: [u8; KEY_LEN]) -> Self {
        HeaderKeySchedule {
            key,
            aes: std::sync::Arc::new(aes::Aes256Enc::new((&key).into())),
        }
    }

    /// The raw key, to announce it to the peer inside the encrypted handshake.
    pub fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.key
    }

    /// The mask for a given sample: AES-256-ECB(key, sample).
    pub fn mask(&self, sample: &[u8; 16]) -> [u8; 16] {
        aes_block(&self.aes, sample)
    }
}

impl From<HeaderKey> for HeaderKeySchedule {
    fn from(k: HeaderKey) -> Self {
        HeaderKeySchedule::new(k.0)
    }
}

impl HeaderMask for HeaderKeySchedule {
    fn mask(&self, sample: &[u8; 16]) -> [u8; 16] {
        HeaderKeySchedule::mask(self, sample)
    }
}

fn aes_block(aes: &aes::Aes256Enc, sample: &[u8; 16]) -> [u8; 16] {
    use aes::cipher::BlockEncrypt;
    let mut block = aes::Block::from(*sample);
    aes.encrypt_block(&mut block);
    block.into()
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

    fn hex<const N: usize>(s: &str) -> [u8; N] {
        let mut out = [0u8; N];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex");
        }
        out
    }

    #[test]
    fn header_mask_is_aes256_of_the_sample_fips197_c3() {
        // FIPS-197 appendix C.3 (AES-256).
        let key: [u8; 32] = hex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f");
        let pt: [u8; 16] = hex("00112233445566778899aabbccddeeff");
        let ct: [u8; 16] = hex("8ea2b7ca516745bfeafc49904b496089");
        assert_eq!(HeaderKey::new(key).mask(&pt), ct);
        assert_eq!(HeaderKeySchedule::new(key).mask(&pt), ct);
    }

    #[test]
    fn header_mask_is_the_aes_crate_block_encryption_for_any_sample() {
        use aes::cipher::BlockEncrypt;
        let hp = HeaderKey::new([9u8; 32]);
        let aes = aes::Aes256::new((&[9u8; 32]).into());
        let schedule = HeaderKeySchedule::new([9u8; 32]);
        assert_eq!(schedule.bytes(), hp.bytes());
        for sample in [[0u8; 16], [0xffu8; 16], *b"0123456789abcdef"] {
            let mut want = aes::Block::from(sample);
            aes.encrypt_block(&mut want);
            let want = <[u8; 16]>::from(want);
            assert_eq!(hp.mask(&sample), want);
            assert_eq!(schedule.mask(&sample), want, "the stored schedule agrees");
        }
    }

    fn round_trip_and_tamper(cipher: Cipher) {
        let a = DataAead::new(&[7u8; 32], cipher);
        assert_eq!(a.cipher(), cipher);
        let mut buf = *b"hello veil, a packet of some size";
        let orig = buf;
        let tag = a.seal(5, b"hdr", &mut buf);
        assert_ne!(buf, orig);
        let mut c = buf;
        assert!(a.open(5, b"hdr", &mut c, &tag));
        assert_eq!(c, orig);
        // Wrong counter, wrong header, flipped ciphertext, flipped tag, wrong key.
        let mut c = buf;
        assert!(!a.open(6, b"hdr", &mut c, &tag));
        let mut c = buf;
        assert!(!a.open(5 | 1 << 40, b"hdr", &mut c, &tag));
        let mut c = buf;
        assert!(!a.open(5, b"hdX", &mut c, &tag));
        let mut c = buf;
        c[3] ^= 0x80;
        assert!(!a.open(5, b"hdr", &mut c, &tag));
        let mut t = tag;
        t[15] ^= 1;
        let mut c = buf;
        assert!(!a.open(5, b"hdr", &mut c, &t));
        let mut c = buf;
        assert!(!DataAead::new(&[8u8; 32], cipher).open(5, b"hdr", &mut c, &tag));
        // Empty plaintext: the tag alone authenticates the header.
        let tag = a.seal(9, b"hdr", &mut []);
        assert!(a.open(9, b"hdr", &mut [], &tag));
        assert!(!a.open(9, b"hdx", &mut [], &tag));
    }

    #[test]
    fn data_aead_chacha20_poly1305_round_trip_and_tamper() {
        round_trip_and_tamper(Cipher::ChaCha20Poly1305);
    }

    #[test]
    fn data_aead_aes_256_gcm_round_trip_and_tamper() {
        round_trip_and_tamper(Cipher::Aes256Gcm);
    }

    #[test]
    fn chacha_aead_is_data_aead_chacha_whatever_it_is_asked_for() {
        let relay = <ChaChaAead as SessionCrypto>::new(&[7u8; 32], Cipher::Aes256Gcm);
        assert_eq!(relay.cipher(), Cipher::ChaCha20Poly1305);
        let node = DataAead::new(&[7u8; 32], Cipher::ChaCha20Poly1305);
        let mut a = *b"same bytes either way";
        let mut b = a;
        let ta = relay.seal(3, b"h", &mut a);
        let tb = node.seal(3, b"h", &mut b);
        assert_eq!((a, ta), (b, tb));
        assert!(relay.open(3, b"h", &mut b, &tb));
        assert!(node.open(3, b"h", &mut a, &ta));
        assert_eq!(a, b);
    }

    #[test]
    fn data_aead_ciphers_differ_and_do_not_open_each_other() {
        let chacha = DataAead::new(&[7u8; 32], Cipher::ChaCha20Poly1305);
        let aes = DataAead::new(&[7u8; 32], Cipher::Aes256Gcm);
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        let ta = chacha.seal(1, b"h", &mut a);
        let tb = aes.seal(1, b"h", &mut b);
        assert_ne!(a, b);
        assert!(!aes.open(1, b"h", &mut a, &ta));
        assert!(!chacha.open(1, b"h", &mut b, &tb));
    }

    #[test]
    fn data_aead_aes_256_gcm_known_answer() {
        // The 64-bit counter sits little-endian in bytes 4..12 of the nonce: with counter 0
        // the nonce is all zeros, and AES-256-GCM with an all-zero key, nonce and 16-byte
        // plaintext gives the ciphertext and tag of McGrew & Viega's test case 14.
        let a = DataAead::new(&[0u8; 32], Cipher::Aes256Gcm);
        let mut buf = [0u8; 16];
        let tag = a.seal(0, &[], &mut buf);
        assert_eq!(buf, hex::<16>("cea7403d4d606b6e074ec5d3baf39d18"));
        assert_eq!(tag, hex::<16>("d0d1c8a799996bf0265b98b5d48ab919"));
    }

    #[test]
    fn cipher_names() {
        assert_eq!(Cipher::default(), Cipher::ChaCha20Poly1305);
        assert_eq!(Cipher::Aes256Gcm.name(), "aes-256-gcm");
        assert_eq!(Cipher::ChaCha20Poly1305.name(), "chacha20-poly1305");
        assert_eq!(Cipher::Aes256Gcm.rekey_after_packets(), 1 << 23);
        // Only a smoke test: the answer depends on the CPU.
        let _ = hardware_aes();
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
