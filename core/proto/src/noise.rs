//! The hybrid post-quantum handshake: Noise `IKpsk2` (X25519, ChaCha20-Poly1305, BLAKE2s)
//! through `snow`, with an ML-KEM-768 exchange mixed in as the psk of message 2.
//!
//! * Message 1 (initiator → responder): the Noise message; its encrypted payload starts
//!   with the initiator's ephemeral ML-KEM-768 encapsulation key, so it travels hidden.
//! * The responder encapsulates to that key and sets the shared secret as `psk2` before it
//!   writes message 2; the ML-KEM ciphertext is appended after the Noise message (inside the
//!   obfuscation layer). The initiator decapsulates and sets `psk2` before reading.
//!
//! Transport keys therefore depend on X25519 (es, ss, ee, se) and on ML-KEM; both
//! ephemerals give forward secrecy. Randomness comes from a per-handshake seed through a
//! custom snow resolver, so a handshake can be replayed exactly in tests.

use crate::keys::Identity;
use ml_kem::array::Array;
use ml_kem::kem::{Decapsulate, KeyExport};
use ml_kem::ml_kem_768;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use snow::params::NoiseParams;
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};

const PATTERN: &str = "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
/// Length of an ML-KEM-768 encapsulation key.
pub const KEM_EK_LEN: usize = 1184;
/// Length of an ML-KEM-768 ciphertext.
pub const KEM_CT_LEN: usize = 1088;
const MAX_MSG: usize = 65535;

/// Why a handshake message was refused. Deliberately coarse: callers count, never reply.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HsError {
    /// The message did not decrypt or parse.
    #[error("handshake message rejected")]
    Rejected,
    /// Local failure (should not happen with valid keys).
    #[error("handshake could not be built")]
    Internal,
}

impl From<snow::Error> for HsError {
    fn from(_: snow::Error) -> Self {
        HsError::Rejected
    }
}

/// Keys of a completed handshake, from this side's point of view.
pub struct SessionKeys {
    /// Key for packets we send.
    pub send: [u8; 32],
    /// Key for packets we receive.
    pub recv: [u8; 32],
    /// The Noise handshake hash (unique per session).
    pub hash: [u8; 32],
    /// The data AEAD, as agreed in the handshake payloads (ChaCha20-Poly1305
    /// out of the handshake; the caller sets the one both ends chose).
    pub cipher: crate::crypto::Cipher,
}

struct SeededRandom(ChaCha20Rng);

impl Random for SeededRandom {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.0.fill_bytes(dest);
        Ok(())
    }
}

/// snow resolver whose RNG is seeded by the caller; everything else is snow's pure-Rust default.
struct SeededResolver(std::sync::Mutex<Option<[u8; 32]>>);

impl CryptoResolver for SeededResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        let seed = self.0.lock().ok()?.take()?;
        Some(Box::new(SeededRandom(ChaCha20Rng::from_seed(seed))))
    }
    fn resolve_dh(&self, choice: &snow::params::DHChoice) -> Option<Box<dyn Dh>> {
        DefaultResolver.resolve_dh(choice)
    }
    fn resolve_hash(&self, choice: &snow::params::HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }
    fn resolve_cipher(&self, choice: &snow::params::CipherChoice) -> Option<Box<dyn Cipher>> {
        DefaultResolver.resolve_cipher(choice)
    }
}

fn builder(seed: [u8; 32]) -> Result<snow::Builder<'static>, HsError> {
    let params: NoiseParams = PATTERN.parse().map_err(|_| HsError::Internal)?;
    Ok(snow::Builder::with_resolver(
        params,
        Box::new(SeededResolver(std::sync::Mutex::new(Some(seed)))),
    ))
}

fn split(hs: &mut snow::HandshakeState, initiator: bool) -> SessionKeys {
    let (a, b) = hs.dangerously_get_raw_split();
    let mut hash = [0u8; 32];
    let h = hs.get_handshake_hash();
    let n = h.len().min(32);
    hash[..n].copy_from_slice(&h[..n]);
    if initiator {
        SessionKeys {
            send: a,
            recv: b,
            hash,
            cipher: crate::crypto::Cipher::ChaCha20Poly1305,
        }
    } else {
        SessionKeys {
            send: b,
            recv: a,
            hash,
            cipher: crate::crypto::Cipher::ChaCha20Poly1305,
        }
    }
}

/// The initiator's side between message 1 and message 2.
pub struct Initiator {
    hs: snow::HandshakeState,
    dk: ml_kem_768::DecapsulationKey,
}

impl Initiator {
    /// Starts a handshake to `remote` and returns message 1. `payload` travels encrypted.
    pub fn start(
        local: &Identity,
        remote: &[u8; 32],
        prologue: &[u8],
        payload: &[u8],
        seed: [u8; 32],
    ) -> Result<(Initiator, Vec<u8>), HsError> {
        let mut rng = ChaCha20Rng::from_seed(seed);
        let mut noise_seed = [0u8; 32];
        rng.fill_bytes(&mut noise_seed);
        let mut kem_seed = [0u8; 64];
        rng.fill_bytes(&mut kem_seed);
        let dk = ml_kem_768::DecapsulationKey::from_seed(Array::from(kem_seed));
        let ek = dk.encapsulation_key().to_bytes();

        let sk = local.secret_bytes();
        let mut hs = builder(noise_seed)?
            .local_private_key(&sk)
            .and_then(|b| b.remote_public_key(remote))
            .and_then(|b| b.prologue(prologue))
            .and_then(|b| b.build_initiator())
            .map_err(|_| HsError::Internal)?;
        let mut inner = Vec::with_capacity(KEM_EK_LEN + payload.len());
        inner.extend_from_slice(ek.as_slice());
        inner.extend_from_slice(payload);
        let mut out = vec![0u8; MAX_MSG];
        let n = hs
            .write_message(&inner, &mut out)
            .map_err(|_| HsError::Internal)?;
        out.truncate(n);
        Ok((Initiator { hs, dk }, out))
    }

    /// Reads message 2 and returns the session keys and the responder's payload.
    pub fn finish(mut self, msg2: &[u8]) -> Result<(SessionKeys, Vec<u8>), HsError> {
        if msg2.len() < KEM_CT_LEN + 32 + 16 {
            return Err(HsError::Rejected);
        }
        let (noise, ct) = msg2.split_at(msg2.len() - KEM_CT_LEN);
        let ct: ml_kem_768::Ciphertext = Array::try_from(ct).map_err(|_| HsError::Rejected)?;
        let ss = self.dk.decapsulate(&ct);
        self.hs.set_psk(2, ss.as_slice())?;
        let mut payload = vec![0u8; noise.len()];
        let n = self.hs.read_message(noise, &mut payload)?;
        payload.truncate(n);
        if !self.hs.is_handshake_finished() {
            return Err(HsError::Rejected);
        }
        Ok((split(&mut self.hs, true), payload))
    }
}

/// The responder's side after reading message 1.
pub struct Responder {
    hs: snow::HandshakeState,
    ek: ml_kem_768::EncapsulationKey,
    kem_m: [u8; 32],
    /// The initiator's static public key (authenticated by message 1).
    pub remote_static: [u8; 32],
}

impl Responder {
    /// Reads message 1; returns the responder state and the initiator's payload.
    pub fn read(
        local: &Identity,
        prologue: &[u8],
        msg1: &[u8],
        seed: [u8; 32],
    ) -> Result<(Responder, Vec<u8>), HsError> {
        let mut rng = ChaCha20Rng::from_seed(seed);
        let mut noise_seed = [0u8; 32];
        rng.fill_bytes(&mut noise_seed);
        let mut kem_m = [0u8; 32];
        rng.fill_bytes(&mut kem_m);
        let sk = local.secret_bytes();
        let mut hs = builder(noise_seed)?
            .local_private_key(&sk)
            .and_then(|b| b.prologue(prologue))
            .and_then(|b| b.build_responder())
            .map_err(|_| HsError::Internal)?;
        let mut payload = vec![0u8; msg1.len()];
        let n = hs.read_message(msg1, &mut payload)?;
        payload.truncate(n);
        if payload.len() < KEM_EK_LEN {
            return Err(HsError::Rejected);
        }
        let ek_bytes: Array<u8, _> =
            Array::try_from(&payload[..KEM_EK_LEN]).map_err(|_| HsError::Rejected)?;
        let ek = ml_kem_768::EncapsulationKey::new(&ek_bytes).map_err(|_| HsError::Rejected)?;
        let mut remote_static = [0u8; 32];
        let rs = hs.get_remote_static().ok_or(HsError::Rejected)?;
        if rs.len() != 32 {
            return Err(HsError::Rejected);
        }
        remote_static.copy_from_slice(rs);
        payload.drain(..KEM_EK_LEN);
        Ok((
            Responder {
                hs,
                ek,
                kem_m,
                remote_static,
            },
            payload,
        ))
    }

    /// Writes message 2 (Noise message followed by the ML-KEM ciphertext).
    pub fn reply(mut self, payload: &[u8]) -> Result<(SessionKeys, Vec<u8>), HsError> {
        let (ct, ss) = self.ek.encapsulate_deterministic(&Array::from(self.kem_m));
        self.hs
            .set_psk(2, ss.as_slice())
            .map_err(|_| HsError::Internal)?;
        let mut out = vec![0u8; MAX_MSG];
        let n = self
            .hs
            .write_message(payload, &mut out)
            .map_err(|_| HsError::Internal)?;
        out.truncate(n);
        out.extend_from_slice(ct.as_slice());
        if !self.hs.is_handshake_finished() {
            return Err(HsError::Internal);
        }
        Ok((split(&mut self.hs, false), out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hybrid_handshake_agrees_and_binds_kem() {
        let a = Identity::from_secret([1u8; 32]);
        let b = Identity::from_secret([2u8; 32]);
        let (init, m1) = Initiator::start(&a, b.public(), b"p", b"hello", [3u8; 32]).expect("m1");
        let (resp, p1) = Responder::read(&b, b"p", &m1, [4u8; 32]).expect("read");
        assert_eq!(p1, b"hello");
        assert_eq!(&resp.remote_static, a.public());
        let (kb, m2) = resp.reply(b"world").expect("m2");
        let (ka, p2) = init.finish(&m2).expect("finish");
        assert_eq!(p2, b"world");
        assert_eq!(ka.send, kb.recv);
        assert_eq!(ka.recv, kb.send);
        assert_eq!(ka.hash, kb.hash);
        assert!(
            m1.len() > 1200,
            "message 1 carries the ML-KEM key: {}",
            m1.len()
        );
    }

    #[test]
    fn tampered_kem_ciphertext_fails() {
        let a = Identity::from_secret([1u8; 32]);
        let b = Identity::from_secret([2u8; 32]);
        let (init, m1) = Initiator::start(&a, b.public(), b"p", b"", [3u8; 32]).expect("m1");
        let (resp, _) = Responder::read(&b, b"p", &m1, [4u8; 32]).expect("read");
        let (_, mut m2) = resp.reply(b"").expect("m2");
        let last = m2.len() - 1;
        m2[last] ^= 1;
        assert!(init.finish(&m2).is_err());
    }

    #[test]
    fn wrong_prologue_or_key_fails() {
        let a = Identity::from_secret([1u8; 32]);
        let b = Identity::from_secret([2u8; 32]);
        let c = Identity::from_secret([5u8; 32]);
        let (_, m1) = Initiator::start(&a, b.public(), b"p", b"", [3u8; 32]).expect("m1");
        assert!(Responder::read(&b, b"q", &m1, [4u8; 32]).is_err());
        assert!(Responder::read(&c, b"p", &m1, [4u8; 32]).is_err());
    }
}
