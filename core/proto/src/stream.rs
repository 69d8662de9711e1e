//! The framing of a node↔relay TCP stream (the fallback for networks that block UDP). A
//! stream carries the same datagrams as UDP, so everything inside is already obfuscated and
//! padded; this module only delimits them without adding a fixed byte:
//!
//! ```text
//! client -> relay:  nonce(16) || { len(2, big-endian) XOR ks_c(2) || datagram(len) }*
//! relay -> client:               { len(2, big-endian) XOR ks_r(2) || datagram(len) }*
//! ks_c = ChaCha20(derive(relay_public, "veil tcp framing", nonce || 0x00), zero nonce)
//! ks_r = ChaCha20(derive(relay_public, "veil tcp framing", nonce || 0x01), zero nonce)
//! ```
//!
//! Each keystream is consumed two bytes per frame, in order. The nonce is fresh random bytes
//! per connection, so no two streams share a keystream and nothing repeats across
//! connections. A length outside [`MIN_FRAME`]`..=`[`MAX_FRAME`] is malformed: the caller
//! closes the stream without answering.
//!
//! Sans-IO: [`Encoder`] appends frames to a caller's buffer; [`Decoder`] owns a bounded
//! receive buffer (grown on demand up to one nonce, one header and one [`MAX_FRAME`]) that
//! the caller reads into ([`Decoder::spare`], [`Decoder::advance`]) and hands out whole
//! datagrams, mutably, so the engine can decrypt them in place. Nothing here panics on any
//! input.

use crate::crypto::{derive, TAG_LEN};
use crate::wire::MIN_TRANSPORT;
use chacha20::cipher::{KeyIvInit, StreamCipher};
use chacha20::ChaCha20;

/// Random bytes a client sends first on every stream.
pub const NONCE_LEN: usize = 16;
/// Bytes of the masked length in front of every datagram.
pub const LEN_LEN: usize = 2;
/// Smallest datagram a stream carries: no datagram that could authenticate is shorter (a
/// transport datagram needs its header, a sample and the tag; senders never write less).
pub const MIN_FRAME: usize = MIN_TRANSPORT + TAG_LEN;
/// Largest datagram a stream carries. Veil's datagrams stay below 1500 bytes with the
/// default TUN MTU; this leaves room for a TUN MTU of about 16,300 while bounding what one
/// connection can make the relay buffer.
pub const MAX_FRAME: usize = 16_384;
/// What the default port of a relay's TCP listener is, and what a join token without a
/// TCP-port trailer means for every relay.
pub const DEFAULT_TCP_PORT: u16 = 443;

const LABEL: &str = "veil tcp framing";
const CLIENT_TO_RELAY: u8 = 0x00;
const RELAY_TO_CLIENT: u8 = 0x01;
/// Receive buffer a decoder starts with; it grows only for a frame that needs it.
const INITIAL_BUF: usize = 2048;
const MAX_BUF: usize = NONCE_LEN + LEN_LEN + MAX_FRAME;

/// Why a stream must be closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// A frame length outside `MIN_FRAME..=MAX_FRAME` (garbage, or another key).
    #[error("frame length {0} is outside {MIN_FRAME}..={MAX_FRAME}")]
    BadLength(usize),
    /// The keystream of this direction is used up (after 2^37 frames): open a new stream.
    #[error("the stream's keystream is exhausted")]
    Exhausted,
}

fn keystream(relay_public: &[u8; 32], nonce: &[u8; NONCE_LEN], direction: u8) -> ChaCha20 {
    let mut context = [0u8; NONCE_LEN + 1];
    context[..NONCE_LEN].copy_from_slice(nonce);
    context[NONCE_LEN] = direction;
    let key = derive(relay_public, LABEL, &context);
    // One key per stream and direction: the ChaCha20 nonce can be fixed.
    ChaCha20::new((&key).into(), (&[0u8; 12]).into())
}

/// The two halves of a client's stream to the relay with static key `relay_public`; `nonce`
/// must be fresh random bytes. The encoder writes the nonce in front of the first frame.
pub fn client(relay_public: &[u8; 32], nonce: [u8; NONCE_LEN]) -> (Encoder, Decoder) {
    let enc = Encoder {
        ks: keystream(relay_public, &nonce, CLIENT_TO_RELAY),
        preamble: Some(nonce),
    };
    let dec = Decoder::with_state(
        *relay_public,
        State::Frames(keystream(relay_public, &nonce, RELAY_TO_CLIENT)),
    );
    (enc, dec)
}

/// Masks and appends frames of one direction.
pub struct Encoder {
    ks: ChaCha20,
    /// The client's nonce, until the first frame carries it.
    preamble: Option<[u8; NONCE_LEN]>,
}

impl Encoder {
    /// Appends `datagram` as one frame to `out` (after the nonce, on a client's first
    /// frame). On error nothing is appended and the encoder is unchanged.
    pub fn encode(&mut self, datagram: &[u8], out: &mut Vec<u8>) -> Result<(), StreamError> {
        let len = datagram.len();
        if !(MIN_FRAME..=MAX_FRAME).contains(&len) {
            return Err(StreamError::BadLength(len));
        }
        let mut hdr = (len as u16).to_be_bytes();
        self.ks
            .try_apply_keystream(&mut hdr)
            .map_err(|_| StreamError::Exhausted)?;
        if let Some(nonce) = self.preamble.take() {
            out.extend_from_slice(&nonce);
        }
        out.extend_from_slice(&hdr);
        out.extend_from_slice(datagram);
        Ok(())
    }

    /// Bytes `encode` appends for a datagram of `len` bytes (nonce included while unsent).
    pub fn framed_len(&self, len: usize) -> usize {
        len + LEN_LEN + self.preamble.map_or(0, |_| NONCE_LEN)
    }
}

enum State {
    /// A relay's decoder before the client's nonce.
    Nonce,
    /// Frames, with the keystream of this direction.
    Frames(ChaCha20),
}

/// Unmasks the frames of one direction; see the module docs for the call order.
pub struct Decoder {
    relay_public: [u8; 32],
    state: State,
    nonce: Option<[u8; NONCE_LEN]>,
    /// The length of the frame whose header was read, if its body is not complete yet.
    pending: Option<usize>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    failed: Option<StreamError>,
}

impl Decoder {
    /// The relay's decoder of a new connection: it reads the client's nonce first.
    pub fn relay(relay_public: &[u8; 32]) -> Decoder {
        Decoder::with_state(*relay_public, State::Nonce)
    }

    fn with_state(relay_public: [u8; 32], state: State) -> Decoder {
        Decoder {
            relay_public,
            state,
            nonce: None,
            pending: None,
            buf: Vec::new(),
            start: 0,
            end: 0,
            failed: None,
        }
    }

    /// The relay's encoder for answers on this stream, once the client's nonce was read.
    pub fn reply_encoder(&self) -> Option<Encoder> {
        self.nonce.map(|nonce| Encoder {
            ks: keystream(&self.relay_public, &nonce, RELAY_TO_CLIENT),
            preamble: None,
        })
    }

    /// What the unit being read still needs in the buffer (nonce, header or body).
    fn unit(&self) -> usize {
        match (&self.state, self.pending) {
            (State::Nonce, _) => NONCE_LEN,
            (State::Frames(_), None) => LEN_LEN,
            (State::Frames(_), Some(len)) => len,
        }
    }

    /// Where to read more bytes into. Call [`Decoder::next`] until it yields nothing first:
    /// the buffer then holds less than one unit and the slice is not empty (unless the
    /// stream failed, when it is).
    pub fn spare(&mut self) -> &mut [u8] {
        if self.failed.is_some() {
            return &mut [];
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let want = self.unit().clamp(INITIAL_BUF, MAX_BUF);
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
        let end = self.end.min(self.buf.len());
        &mut self.buf[end..]
    }

    /// Records that `n` bytes were written at the start of [`Decoder::spare`].
    pub fn advance(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Copies as much of `data` as fits (draining complete datagrams is the caller's job);
    /// returns how many bytes were taken.
    pub fn feed(&mut self, data: &[u8]) -> usize {
        let spare = self.spare();
        let n = spare.len().min(data.len());
        spare[..n].copy_from_slice(&data[..n]);
        self.advance(n);
        n
    }

    /// The next whole datagram, if one has arrived. An error is final: close the stream.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<&mut [u8]>, StreamError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        loop {
            let avail = self.end - self.start;
            match &mut self.state {
                State::Nonce => {
                    if avail < NONCE_LEN {
                        return Ok(None);
                    }
                    let mut nonce = [0u8; NONCE_LEN];
                    nonce.copy_from_slice(&self.buf[self.start..self.start + NONCE_LEN]);
                    self.start += NONCE_LEN;
                    self.nonce = Some(nonce);
                    self.state =
                        State::Frames(keystream(&self.relay_public, &nonce, CLIENT_TO_RELAY));
                }
                State::Frames(ks) => {
                    let len = match self.pending {
                        Some(len) => len,
                        None => {
                            if avail < LEN_LEN {
                                return Ok(None);
                            }
                            let mut hdr = [self.buf[self.start], self.buf[self.start + 1]];
                            if ks.try_apply_keystream(&mut hdr).is_err() {
                                self.failed = Some(StreamError::Exhausted);
                                return Err(StreamError::Exhausted);
                            }
                            self.start += LEN_LEN;
                            let len = usize::from(u16::from_be_bytes(hdr));
                            if !(MIN_FRAME..=MAX_FRAME).contains(&len) {
                                self.failed = Some(StreamError::BadLength(len));
                                return Err(StreamError::BadLength(len));
                            }
                            self.pending = Some(len);
                            len
                        }
                    };
                    if self.end - self.start < len {
                        return Ok(None);
                    }
                    self.pending = None;
                    let at = self.start;
                    self.start += len;
                    return Ok(self.buf.get_mut(at..at + len));
                }
            }
        }
    }

    /// Bytes held: buffered input and the buffer's capacity (for memory accounting).
    pub fn buffered(&self) -> (usize, usize) {
        (self.end - self.start, self.buf.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PK: [u8; 32] = [7u8; 32];

    fn dg(len: usize, fill: u8) -> Vec<u8> {
        (0..len).map(|i| fill.wrapping_add(i as u8)).collect()
    }

    fn drain(dec: &mut Decoder) -> Result<Vec<Vec<u8>>, StreamError> {
        let mut out = Vec::new();
        while let Some(d) = dec.next()? {
            out.push(d.to_vec());
        }
        Ok(out)
    }

    #[test]
    fn round_trip_both_directions_in_any_chunking() -> Result<(), StreamError> {
        let (mut enc, mut cdec) = client(&PK, [1u8; NONCE_LEN]);
        let sent = vec![dg(48, 1), dg(1472, 2), dg(MAX_FRAME, 3), dg(64, 4)];
        let mut wire = Vec::new();
        for d in &sent {
            enc.encode(d, &mut wire)?;
        }
        assert_eq!(
            wire.len(),
            NONCE_LEN + sent.iter().map(|d| d.len() + 2).sum::<usize>()
        );
        for chunk in [1usize, 2, 3, 17, 1000, wire.len()] {
            let mut rdec = Decoder::relay(&PK);
            let mut got = Vec::new();
            for piece in wire.chunks(chunk) {
                let mut rest = piece;
                while !rest.is_empty() {
                    let n = rdec.feed(rest);
                    assert!(n > 0, "the decoder took nothing");
                    rest = &rest[n..];
                    got.extend(drain(&mut rdec)?);
                }
            }
            assert_eq!(got, sent, "chunk {chunk}");
            assert!(rdec.buffered().1 <= MAX_BUF);
        }
        // Answers: the relay's encoder exists once the nonce was read.
        let mut rdec = Decoder::relay(&PK);
        assert!(rdec.reply_encoder().is_none());
        rdec.feed(&wire[..NONCE_LEN + 2]);
        assert!(drain(&mut rdec)?.is_empty());
        let mut renc = rdec.reply_encoder().ok_or(StreamError::Exhausted)?;
        let mut back = Vec::new();
        renc.encode(&dg(100, 9), &mut back)?;
        renc.encode(&dg(200, 8), &mut back)?;
        assert_eq!(back.len(), 304, "no nonce from the relay");
        cdec.feed(&back);
        assert_eq!(drain(&mut cdec)?, vec![dg(100, 9), dg(200, 8)]);
        Ok(())
    }

    #[test]
    fn no_fixed_prefix_across_streams() -> Result<(), StreamError> {
        let d = dg(768, 0);
        let mut firsts = Vec::new();
        for n in 0..16u8 {
            let (mut enc, _) = client(&PK, [n; NONCE_LEN]);
            let mut w = Vec::new();
            enc.encode(&d, &mut w)?;
            enc.encode(&d, &mut w)?;
            // The two length fields of the same length differ within a stream too.
            assert_ne!(w[16..18], w[16 + 770..18 + 770]);
            firsts.push(w[16..18].to_vec());
        }
        firsts.sort();
        firsts.dedup();
        assert!(firsts.len() >= 14, "masked lengths repeat: {firsts:?}");
        Ok(())
    }

    #[test]
    fn bad_lengths_are_refused_and_final() {
        let (mut enc, _) = client(&PK, [2u8; NONCE_LEN]);
        let mut w = Vec::new();
        assert_eq!(
            enc.encode(&[0u8; 47], &mut w),
            Err(StreamError::BadLength(47))
        );
        assert_eq!(
            enc.encode(&vec![0u8; MAX_FRAME + 1], &mut w),
            Err(StreamError::BadLength(MAX_FRAME + 1))
        );
        assert!(
            w.is_empty(),
            "a refused frame writes nothing, not even the nonce"
        );
        // A header that decodes to 0: the keystream's first two bytes themselves.
        let mut ks = keystream(&PK, &[2u8; NONCE_LEN], CLIENT_TO_RELAY);
        let mut hdr = [0u8; 2];
        ks.apply_keystream(&mut hdr);
        let mut dec = Decoder::relay(&PK);
        dec.feed(&[2u8; NONCE_LEN]);
        dec.feed(&hdr);
        assert_eq!(dec.next().map(|_| ()), Err(StreamError::BadLength(0)));
        assert_eq!(dec.next().map(|_| ()), Err(StreamError::BadLength(0)));
        assert!(dec.spare().is_empty());
    }

    #[test]
    fn another_relay_key_does_not_decode() -> Result<(), StreamError> {
        let (mut enc, _) = client(&PK, [3u8; NONCE_LEN]);
        let mut w = Vec::new();
        for _ in 0..64 {
            enc.encode(&dg(64, 1), &mut w)?;
        }
        let mut dec = Decoder::relay(&[8u8; 32]);
        dec.feed(&w);
        let mut good = 0;
        loop {
            match dec.next() {
                Ok(Some(d)) if d.len() == 64 => good += 1,
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        assert!(good < 2, "{good} frames decoded under the wrong key");
        Ok(())
    }

    #[test]
    fn exhausted_keystream_is_an_error_not_a_panic() {
        use chacha20::cipher::StreamCipherSeek;
        let (mut enc, _) = client(&PK, [4u8; NONCE_LEN]);
        // Two blocks before the end of the 32-bit block counter's keystream.
        assert!(enc.ks.try_seek((u64::from(u32::MAX) - 2) * 64).is_ok());
        let mut w = Vec::new();
        let mut frames = 0;
        while enc.encode(&[0u8; 64], &mut w).is_ok() {
            frames += 1;
            assert!(frames <= 96, "the keystream never ran out");
        }
        assert_eq!(enc.encode(&[0u8; 64], &mut w), Err(StreamError::Exhausted));
        assert_eq!(w.len(), NONCE_LEN + frames * 66);
    }

    proptest! {
        #[test]
        fn garbage_never_panics_and_stays_bounded(
            data in proptest::collection::vec(any::<u8>(), 0..40_000),
            chunk in 1usize..5000,
        ) {
            let mut dec = Decoder::relay(&PK);
            'outer: for piece in data.chunks(chunk) {
                let mut rest = piece;
                while !rest.is_empty() {
                    let n = dec.feed(rest);
                    rest = &rest[n..];
                    loop {
                        match dec.next() {
                            Ok(Some(d)) => prop_assert!((MIN_FRAME..=MAX_FRAME).contains(&d.len())),
                            Ok(None) => break,
                            Err(_) => break 'outer,
                        }
                    }
                    if n == 0 {
                        break 'outer;
                    }
                }
            }
            prop_assert!(dec.buffered().1 <= MAX_BUF);
        }
    }
}
