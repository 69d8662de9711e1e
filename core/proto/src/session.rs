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
        self.open_checked(now, counter, dg, max_age, None)
    }

    /// [`Session::open`] for a datagram whose AEAD an [`OpenJob`] of this session already
    /// ran (`opened`): the age and replay checks, the replay window and the frame parse
    /// happen here, in order, as for any other datagram.
    pub fn open_opened(
        &mut self,
        now: Instant,
        dg: &mut [u8],
        max_age: std::time::Duration,
        opened: Opened,
    ) -> Result<(Frame, Range<usize>), OpenError> {
        if opened.cid != self.recv_cid {
            return Err(OpenError::Aead);
        }
        self.open_checked(now, opened.counter, dg, max_age, Some(opened.ok))
    }

    fn open_checked(
        &mut self,
        now: Instant,
        counter: u64,
        dg: &mut [u8],
        max_age: std::time::Duration,
        opened: Option<bool>,
    ) -> Result<(Frame, Range<usize>), OpenError> {
        if now.saturating_duration_since(self.created) > max_age {
            return Err(OpenError::Expired);
        }
        if !self.replay.check(counter) {
            return Err(OpenError::Replay);
        }
        if dg.len() < HDR_LEN + TAG_LEN {
            return Err(OpenError::Malformed);
        }
        let tag_at = dg.len() - TAG_LEN;
        let ok = match opened {
            Some(ok) => ok,
            None => open_in_place(&self.recv, &self.recv_cid, counter, dg),
        };
        if !ok {
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
        let counter = self.next_counter(now);
        seal_in_place(
            &self.send,
            &self.peer_hp,
            &self.send_cid,
            counter,
            buf,
            pt_len,
        )
    }

    /// The counter of the next datagram sent, now.
    fn next_counter(&mut self, now: Instant) -> u64 {
        let counter = self.send_counter;
        self.send_counter += 1;
        self.last_tx = now;
        counter
    }
}

/// Encrypts `buf[HDR_LEN..HDR_LEN + pt_len]` and writes the masked header and the tag;
/// returns the datagram length.
fn seal_in_place<A: SessionCrypto>(
    aead: &A,
    hp: &A::PeerHeaderKey,
    cid: &[u8; 8],
    counter: u64,
    buf: &mut [u8],
    pt_len: usize,
) -> usize {
    let aad = wire::header_aad(cid, counter);
    let tag = aead.seal(counter, &aad, &mut buf[HDR_LEN..HDR_LEN + pt_len]);
    wire::finish_transport(buf, cid, counter, pt_len, &tag, hp)
}

/// Decrypts `dg` (at least `HDR_LEN + TAG_LEN` bytes) in place; whether the tag verified.
fn open_in_place<A: SessionCrypto>(aead: &A, cid: &[u8; 8], counter: u64, dg: &mut [u8]) -> bool {
    let tag_at = dg.len() - TAG_LEN;
    let mut tag = [0u8; TAG_LEN];
    tag.copy_from_slice(&dg[tag_at..]);
    let aad = wire::header_aad(cid, counter);
    aead.open(counter, &aad, &mut dg[HDR_LEN..tag_at], &tag)
}

/// Sealing and opening split in two, so that the AEAD work of a batch can run on more than
/// one core while the session's state (counters, replay window, timestamps) stays with the
/// engine: the session hands out a job with the next counter ([`Session::seal_later`]) or
/// after the replay check ([`Session::open_job`]); the job holds a shared reference to the
/// key and runs on any thread; an opened datagram goes back to [`Session::open_opened`].
impl<const W: usize> Session<W, DataAead> {
    /// Like [`Session::seal`], but leaves the encryption to the returned job: the frame's
    /// plaintext is written into `buf` and the counter taken now, so datagrams keep the
    /// order they were made in whichever thread seals them. The datagram is
    /// [`SealJob::len`] bytes, and it is not one until [`SealJob::run`] ran on it.
    pub fn seal_later(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        kind: Frame,
        body_len: usize,
        pad: impl Into<wire::Padding>,
    ) -> Option<SealJob> {
        let pt_len = wire::frame_plaintext(buf, kind, body_len, pad)?;
        Some(SealJob {
            aead: self.send.clone(),
            hp: self.peer_hp.clone(),
            cid: self.send_cid,
            counter: self.next_counter(now),
            pt_len,
        })
    }

    /// The AEAD work of opening a datagram with header (`recv_cid`, `counter`), or None when
    /// [`Session::open`] would refuse it before the AEAD (too old, replayed). The replay
    /// window is only checked here; [`Session::open_opened`] checks and moves it.
    pub fn open_job(
        &self,
        now: Instant,
        counter: u64,
        max_age: std::time::Duration,
    ) -> Option<OpenJob> {
        if now.saturating_duration_since(self.created) > max_age || !self.replay.check(counter) {
            return None;
        }
        Some(OpenJob {
            aead: self.recv.clone(),
            cid: self.recv_cid,
            counter,
        })
    }
}

/// The encryption of one datagram, made by [`Session::seal_later`].
pub struct SealJob {
    aead: DataAead,
    hp: crate::crypto::HeaderKeySchedule,
    cid: [u8; 8],
    counter: u64,
    pt_len: usize,
}

impl SealJob {
    /// The datagram's length once sealed.
    pub fn len(&self) -> usize {
        HDR_LEN + self.pt_len + TAG_LEN
    }

    /// Never: a datagram has at least a header and a tag (for clippy's `len` rule).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Seals the datagram in `buf` (the buffer `seal_later` wrote its plaintext into, at
    /// least [`SealJob::len`] bytes); returns its length, 0 if `buf` is too short.
    pub fn run(&self, buf: &mut [u8]) -> usize {
        if buf.len() < self.len() {
            return 0;
        }
        seal_in_place(
            &self.aead,
            &self.hp,
            &self.cid,
            self.counter,
            buf,
            self.pt_len,
        )
    }
}

/// The decryption of one datagram, made by [`Session::open_job`].
pub struct OpenJob {
    aead: DataAead,
    cid: [u8; 8],
    counter: u64,
}

impl OpenJob {
    /// Decrypts the datagram in place (on failure its contents are unspecified) and says
    /// how it went, for [`Session::open_opened`].
    pub fn run(&self, dg: &mut [u8]) -> Opened {
        let ok =
            dg.len() >= HDR_LEN + TAG_LEN && open_in_place(&self.aead, &self.cid, self.counter, dg);
        Opened {
            cid: self.cid,
            counter: self.counter,
            ok,
        }
    }
}

/// What an [`OpenJob`] found: only a job makes one, so the engine takes `ok` as the AEAD's
/// word for that session and counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opened {
    cid: [u8; 8],
    counter: u64,
    ok: bool,
}

impl Opened {
    /// The session's receive connection id.
    pub fn cid(&self) -> [u8; 8] {
        self.cid
    }

    /// The datagram's counter.
    pub fn counter(&self) -> u64 {
        self.counter
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests need a base Instant; the library never reads the clock
mod tests {
    use super::*;
    use crate::wire::BODY_OFFSET;
    use std::time::Duration;

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

    #[test]
    fn jobs_seal_and_open_like_the_session_does() {
        for cipher in [Cipher::Aes256Gcm, Cipher::ChaCha20Poly1305] {
            let now = Instant::now();
            let (mut a, mut b, _, hpb) = pair(now, cipher);
            let mut bufs: Vec<Vec<u8>> = Vec::new();
            let mut jobs = Vec::new();
            for i in 0..4u8 {
                let mut buf = vec![0u8; 256];
                buf[BODY_OFFSET..BODY_OFFSET + 3].copy_from_slice(&[i; 3]);
                jobs.push(
                    a.seal_later(now, &mut buf, Frame::Data, 3, 64)
                        .expect("fits"),
                );
                bufs.push(buf);
            }
            // Run out of order, on another thread: each datagram has the counter it was
            // given when it was made.
            std::thread::scope(|s| {
                s.spawn(|| {
                    for (job, buf) in jobs.iter().zip(bufs.iter_mut()).rev() {
                        assert_eq!(job.run(buf), job.len());
                    }
                });
            });
            let dgs: Vec<Vec<u8>> = jobs
                .iter()
                .zip(&bufs)
                .map(|(j, b)| b[..j.len()].to_vec())
                .collect();
            // The inline path opens them.
            let (cid, ctr) = wire::unmask_header(&hpb, &dgs[0]).expect("header");
            assert_eq!((cid, ctr), ([0xb; 8], 0));
            let mut d = dgs[0].clone();
            let (_, r) = b.open(now, ctr, &mut d, Duration::MAX).expect("opens");
            assert_eq!(&d[r], &[0; 3]);
            // Open jobs: made before any is committed, so both copies of datagram 1 get one;
            // the session takes the first and refuses the replay.
            let mut batch = [
                dgs[1].clone(),
                dgs[1].clone(),
                dgs[2].clone(),
                dgs[3].clone(),
            ];
            let opened: Vec<Opened> = batch
                .iter_mut()
                .map(|dg| {
                    let (_, ctr) = wire::unmask_header(&hpb, dg).expect("header");
                    let job = b.open_job(now, ctr, Duration::MAX).expect("a job");
                    job.run(dg)
                })
                .collect();
            let results: Vec<_> = batch
                .iter_mut()
                .zip(&opened)
                .map(|(dg, o)| {
                    b.open_opened(now, dg, Duration::MAX, *o)
                        .map(|(_, r)| dg[r].to_vec())
                })
                .collect();
            assert_eq!(results[0], Ok(vec![1; 3]));
            assert_eq!(results[1], Err(OpenError::Replay));
            assert_eq!(results[2], Ok(vec![2; 3]));
            assert_eq!(results[3], Ok(vec![3; 3]));
            // Committed counters get no job at all.
            assert!(b.open_job(now, 1, Duration::MAX).is_none());
            // A flipped bit fails the job, and the session counts it as the AEAD's failure
            // without moving its window.
            let mut c = a
                .seal_later(now, &mut bufs[0], Frame::Data, 3, 64)
                .expect("fits");
            let n = c.run(&mut bufs[0]);
            let mut dg = bufs[0][..n].to_vec();
            dg[n - 1] ^= 1;
            let (_, ctr) = wire::unmask_header(&hpb, &dg).expect("header");
            let o = b
                .open_job(now, ctr, Duration::MAX)
                .expect("a job")
                .run(&mut dg);
            assert_eq!(
                b.open_opened(now, &mut dg, Duration::MAX, o).err(),
                Some(OpenError::Aead)
            );
            assert!(
                b.open_job(now, ctr, Duration::MAX).is_some(),
                "window unmoved"
            );
            // An Opened of one session means nothing to another.
            let (_, mut other, _, _) = pair(now, cipher);
            c = a
                .seal_later(now, &mut bufs[0], Frame::Data, 3, 64)
                .expect("fits");
            let n = c.run(&mut bufs[0]);
            let mut dg = bufs[0][..n].to_vec();
            let (_, ctr) = wire::unmask_header(&hpb, &dg).expect("header");
            let o = b
                .open_job(now, ctr, Duration::MAX)
                .expect("a job")
                .run(&mut dg);
            other.recv_cid = [0xc; 8];
            assert_eq!(
                other.open_opened(now, &mut dg, Duration::MAX, o).err(),
                Some(OpenError::Aead)
            );
            // An expired session hands out no job.
            let later = now + Duration::from_secs(10);
            assert!(b.open_job(later, 100, Duration::from_secs(5)).is_none());
        }
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
