//! One established session: the two directional AEAD keys, connection ids, counters and
//! the replay window. Sealing and opening happen in the caller's buffer.

use crate::crypto::{Cipher, DataAead, HeaderKey, SessionCrypto, TAG_LEN};
use crate::noise::SessionKeys;
use crate::replay::{ReplayWindow, WORDS};
use crate::wire::{self, Frame, HDR_LEN};
use std::ops::Range;
use std::time::Instant;

/// Why an incoming transport datagram was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// Counter already seen or too old.
    Replay,
    /// AEAD tag did not verify.
    Aead,
    /// Decrypted but not a valid frame.
    Malformed,
    /// The session is older than the caller's reject age (the sender should have re-keyed).
    Expired,
}

/// A transport session. `A` is its crypto: [`DataAead`] (either cipher, the peer's header
/// key schedule stored) for a node's sessions, [`crate::crypto::ChaChaAead`] for the
/// relay's, which are always ChaCha20-Poly1305 and keep the raw header key (small: one per
/// node).
pub struct Session<const W: usize = WORDS, A: SessionCrypto = DataAead> {
    /// The connection id we receive on (announced by us in the handshake).
    pub recv_cid: [u8; 8],
    /// The connection id the peer receives on.
    pub send_cid: [u8; 8],
    /// The peer's header-protection key.
    pub peer_hp: A::PeerHeaderKey,
    send: A,
    recv: A,
    /// Next counter to send.
    pub send_counter: u64,
    replay: ReplayWindow<W>,
    /// When the handshake completed.
    pub created: Instant,
    /// Last time a datagram of this session authenticated.
    pub last_rx: Instant,
    /// Last time we sent on it.
    pub last_tx: Instant,
    /// Whether we initiated the handshake.
    pub initiator: bool,
}

impl<const W: usize, A: SessionCrypto> Session<W, A> {
    /// Builds a session from handshake output, with the AEAD in `keys.cipher` both ways.
    pub fn new(
        keys: &SessionKeys,
        recv_cid: [u8; 8],
        send_cid: [u8; 8],
        peer_hp: HeaderKey,
        initiator: bool,
        now: Instant,
    ) -> Session<W, A> {
        Session {
            recv_cid,
            send_cid,
            peer_hp: peer_hp.into(),
            send: A::new(&keys.send, keys.cipher),
            recv: A::new(&keys.recv, keys.cipher),
            send_counter: 0,
            replay: ReplayWindow::new(),
            created: now,
            last_rx: now,
            last_tx: now,
            initiator,
        }
    }

    /// The data AEAD of this session.
    pub fn cipher(&self) -> Cipher {
        self.send.cipher()
    }

    /// Seals a frame whose body sits at `buf[BODY_OFFSET..BODY_OFFSET + body_len]`; returns
    /// the datagram length, or None if `buf` is too small.
    pub fn seal(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        kind: Frame,
        body_len: usize,
        pad: impl Into<wire::Padding>,
    ) -> Option<usize> {
        let pt_len = wire::frame_plaintext(buf, kind, body_len, pad)?;
        Some(self.reseal(now, buf, pt_len))
    }

    /// Seals `body` as a frame of `kind` into a new datagram (for frames off the fast path,
    /// which seals in the caller's buffer).
    pub fn seal_frame(
        &mut self,
        now: Instant,
        kind: Frame,
        body: &[u8],
        pad: wire::Padding,
    ) -> Option<Vec<u8>> {
        let at = wire::BODY_OFFSET;
        let size = wire::padded_len(body.len(), pad).max(at + body.len() + crate::crypto::TAG_LEN);
        let mut dg = vec![0u8; size];
        dg[at..at + body.len()].copy_from_slice(body);
        let n = self.seal(now, &mut dg, kind, body.len(), pad)?;
        dg.truncate(n);
        Some(dg)
    }

    /// Opens a datagram whose unmasked header was (`recv_cid`, `counter`), in place; a
    /// session older than `max_age` opens nothing.
    pub fn open(
        &mut self,
        now: Instant,
        counter: u64,
        dg: &mut [u8],
        max_age: std::time::Duration,
    ) -> Result<(Frame, Range<usize>), OpenError> {
        if now.saturating_duration_since(self.created) > max_age {
            return Err(OpenError::Expired);
        }
        if !self.replay.check(counter) {
            return Err(OpenError::Replay);
        }
        let tag_at = dg.len() - TAG_LEN;
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&dg[tag_at..]);
        let aad = wire::header_aad(&self.recv_cid, counter);
        if !self
            .recv
            .open(counter, &aad, &mut dg[HDR_LEN..tag_at], &tag)
        {
            return Err(OpenError::Aead);
        }
        self.replay.commit(counter);
        self.last_rx = now;
        wire::parse_plaintext(dg, tag_at - HDR_LEN).ok_or(OpenError::Malformed)
    }

    /// Seals, in place, a plaintext that is already at `buf[HDR_LEN..HDR_LEN + pt_len]`:
    /// the second half of [`Session::seal`], and the relay's forwarding path (the caller
    /// rewrites the frame header).
    pub fn reseal(&mut self, now: Instant, buf: &mut [u8], pt_len: usize) -> usize {
        let counter = self.send_counter;
        self.send_counter += 1;
        let aad = wire::header_aad(&self.send_cid, counter);
        let tag = self
            .send
            .seal(counter, &aad, &mut buf[HDR_LEN..HDR_LEN + pt_len]);
        self.last_tx = now;
        wire::finish_transport(buf, &self.send_cid, counter, pt_len, &tag, &self.peer_hp)
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests need a base Instant; the library never reads the clock
mod tests {
    use super::*;
    use crate::wire::BODY_OFFSET;

    fn pair(now: Instant, cipher: Cipher) -> (Session, Session, HeaderKey, HeaderKey) {
        let ka = SessionKeys {
            send: [1; 32],
            recv: [2; 32],
            hash: [0; 32],
            cipher,
        };
        let kb = SessionKeys {
            send: [2; 32],
            recv: [1; 32],
            hash: [0; 32],
            cipher,
        };
        let hpa = HeaderKey::new([7; 32]);
        let hpb = HeaderKey::new([8; 32]);
        let a = Session::new(&ka, [0xa; 8], [0xb; 8], hpb.clone(), true, now);
        let b = Session::new(&kb, [0xb; 8], [0xa; 8], hpa.clone(), false, now);
        (a, b, hpa, hpb)
    }

    #[test]
    fn seal_open_replay_chacha20_poly1305() {
        seal_open_replay(Cipher::ChaCha20Poly1305);
    }

    #[test]
    fn seal_open_replay_aes_256_gcm() {
        seal_open_replay(Cipher::Aes256Gcm);
    }

    #[test]
    fn sessions_with_different_ciphers_open_nothing() {
        let now = Instant::now();
        let (mut a, _, _, hpb) = pair(now, Cipher::Aes256Gcm);
        let (_, mut b, _, _) = pair(now, Cipher::ChaCha20Poly1305);
        let mut buf = vec![0u8; 2048];
        let n = a.seal(now, &mut buf, Frame::Data, 5, 64).expect("fits");
        let mut dg = buf[..n].to_vec();
        let (_, ctr) = wire::unmask_header(&hpb, &dg).expect("header");
        assert_eq!(
            b.open(now, ctr, &mut dg, std::time::Duration::MAX).err(),
            Some(OpenError::Aead)
        );
    }

    fn seal_open_replay(cipher: Cipher) {
        let now = Instant::now();
        let (mut a, mut b, _hpa, hpb) = pair(now, cipher);
        assert_eq!((a.cipher(), b.cipher()), (cipher, cipher));
        let mut buf = vec![0u8; 2048];
        buf[BODY_OFFSET..BODY_OFFSET + 5].copy_from_slice(b"hello");
        let n = a.seal(now, &mut buf, Frame::Data, 5, 64).expect("fits");
        assert_eq!(n % 64, 0);
        let dg = buf[..n].to_vec();
        let (cid, ctr) = wire::unmask_header(&hpb, &dg).expect("header");
        assert_eq!(cid, [0xb; 8]);
        assert_eq!(ctr, 0);
        let mut d = dg.clone();
        let (k, r) = b
            .open(now, ctr, &mut d, std::time::Duration::MAX)
            .expect("opens");
        assert_eq!(k, Frame::Data);
        assert_eq!(&d[r], b"hello");
        let mut d = dg.clone();
        assert_eq!(
            b.open(now, ctr, &mut d, std::time::Duration::MAX).err(),
            Some(OpenError::Replay)
        );
        // A second packet masks to different header bytes.
        buf[BODY_OFFSET..BODY_OFFSET + 5].copy_from_slice(b"hello");
        let n2 = a.seal(now, &mut buf, Frame::Data, 5, 64).expect("fits");
        assert_ne!(&buf[..16], &dg[..16]);
        let mut flipped = buf[..n2].to_vec();
        flipped[40] ^= 1;
        let (_, c2) = wire::unmask_header(&hpb, &flipped).expect("header");
        assert!(b
            .open(now, c2, &mut flipped, std::time::Duration::MAX)
            .is_err());
    }
}
