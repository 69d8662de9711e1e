//! The wire format. Two kinds of datagram exist, and nothing outside the encryption says
//! which is which:
//!
//! * **Transport** (belongs to a session):
//!   `[CID 8 | counter 8]` masked by header protection, then the AEAD ciphertext of
//!   `[version<<5 | frame kind][body length u16][body][zero padding]`, then the 16-byte tag.
//!   The AAD is the unmasked 16-byte header.
//! * **Handshake** (belongs to no session yet): `[random nonce 24][sealed body][tag 16]`,
//!   sealed with XChaCha20-Poly1305 under a key derived from the network and the receiver's
//!   static key. The sealed body is `[version<<4 | kind][message id u32][fragment index]
//!   [fragment count][piece length u16][piece][random padding]`.
//!
//! This module owns the layouts and nothing else: no session state, no decisions.

use crate::crypto::{HeaderMask, HsSeal, HS_NONCE_LEN, TAG_LEN};
use std::ops::Range;

/// Protocol version carried inside every encrypted header.
pub const VERSION: u8 = 1;
/// Length of the masked transport header (connection id + counter).
pub const HDR_LEN: usize = 16;
/// Length of a frame header inside the ciphertext (kind + body length).
pub const FRAME_HDR: usize = 3;
/// Offset of a frame body from the start of a transport datagram.
pub const BODY_OFFSET: usize = HDR_LEN + FRAME_HDR;
/// Bytes a transport datagram adds around its body, before padding.
pub const TRANSPORT_OVERHEAD: usize = HDR_LEN + FRAME_HDR + TAG_LEN;
/// Smallest valid transport datagram (a sample needs 16 bytes after the header).
pub const MIN_TRANSPORT: usize = HDR_LEN + 16;
/// Largest datagram padding may grow a packet to (fits a 1500-byte IPv4 path).
pub const PAD_CAP: usize = 1472;
/// Header of a handshake fragment inside its seal.
pub const HS_FRAG_HDR: usize = 9;
/// Largest handshake piece per datagram: keeps handshake datagrams, even relayed, under
/// RFC 8899's 1200-byte safe base.
pub const HS_PIECE_MAX: usize = 1000;

/// Frame kinds (the low five bits of the first plaintext byte; the top three carry the
/// protocol version).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Frame {
    /// Keeps a path alive; body `[flags]` (bit 0: please echo).
    Keepalive = 0,
    /// An inner IP packet.
    Data = 1,
    /// Node → relay: `[destination handle u64][inner datagram]`.
    Forward = 2,
    /// Relay → node: `[source handle u64][inner datagram]`.
    Deliver = 3,
    /// Node → relay: `[request u32][count u8][names 32×count][sealed record]`.
    Register = 4,
    /// Relay → node: `[request u32][status u8][handle u64][conflicting name index u8]`.
    RegisterReply = 5,
    /// Node → relay: `[request u32][name 32]`.
    Lookup = 6,
    /// Relay → node: `[request u32][found u8][handle u64][sealed record]`.
    LookupReply = 7,
    /// Relay → node: `[handle u64]` is not connected.
    Unreachable = 8,
    /// The sender closes this session.
    Close = 9,
    /// Overlay fragment of an inner packet larger than the path carries whole.
    Fragment = 10,
    /// Path MTU probe: a datagram of exactly the size being tested.
    PmtuProbe = 11,
    /// Acknowledgement of a path MTU probe.
    PmtuAck = 12,
    /// Node ↔ node, sent on a candidate path: `[token 8]`, padded like data.
    PathChallenge = 13,
    /// Node ↔ node, the answer on the path the challenge came from: `[token 8]`.
    PathResponse = 14,
    /// Reserved: new connection ids for rotation.
    NewCid = 15,
    /// Node ↔ node: the sender's candidate addresses, `[generation u8][generation of the
    /// receiver's list held u8][count u8][address]×count`, each address as [`put_addr`]
    /// writes it.
    Candidates = 16,
    /// Node ↔ relay: a CA-signed policy (rules and revocations), binary form of
    /// [`crate::cert::Policy`]. Nodes push theirs when the relay's is older; the relay
    /// broadcasts a newer one to every client.
    Policy = 17,
    /// Node → its guard relay (private two-hop mode): open this client's circuit to the
    /// relay `[public key 32][address]` (its home relay).
    Extend = 18,
    /// Guard relay → node: `[status u8]`, 0 = the circuit is open, 1 = refused (the guard
    /// has no peering key or cannot reach that relay).
    Extended = 19,
    /// A datagram on a circuit. Node ↔ guard relay: `[datagram]` (the node's datagram to
    /// or from its home relay); relay ↔ relay: `[circuit id u64][datagram]`.
    Circuit = 20,
    /// Node → relay: its sealed route announcement (`node/routes.rs`); empty: withdrawn.
    Announce = 21,
    /// Relay → node: `[handle u64][sealed announcement]` of another client; an empty
    /// announcement: that client no longer routes (or left).
    Announcement = 22,
    /// Relay ↔ relay on a link (relays that share a rendezvous, `relay/cluster.rs`):
    /// `[destination handle at the receiver u64][source handle at the sender u64][inner
    /// datagram]`, a node's Forward carried to the destination's home relay. On a link,
    /// `Unreachable` answers one: `[destination handle u64][source handle u64]`.
    Transfer = 23,
}

/// The first plaintext byte of a frame.
pub fn frame_byte(kind: Frame) -> u8 {
    (VERSION << 5) | kind as u8
}

impl Frame {
    /// The frame kind of a number (the low five bits of a frame byte), if it is one.
    pub fn from_kind(v: u8) -> Option<Frame> {
        Frame::from_u8(v)
    }

    fn from_u8(v: u8) -> Option<Frame> {
        use Frame::*;
        Some(match v {
            0 => Keepalive,
            1 => Data,
            2 => Forward,
            3 => Deliver,
            4 => Register,
            5 => RegisterReply,
            6 => Lookup,
            7 => LookupReply,
            8 => Unreachable,
            9 => Close,
            10 => Fragment,
            11 => PmtuProbe,
            12 => PmtuAck,
            13 => PathChallenge,
            14 => PathResponse,
            15 => NewCid,
            16 => Candidates,
            17 => Policy,
            18 => Extend,
            19 => Extended,
            20 => Circuit,
            21 => Announce,
            22 => Announcement,
            23 => Transfer,
            _ => return None,
        })
    }
}

/// Handshake message kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum HsKind {
    /// Noise message 1.
    Init = 1,
    /// Noise message 2 plus the ML-KEM ciphertext.
    Response = 2,
}

/// A bucket size that pads every datagram to the path MTU (the cap): the "mtu" padding mode.
pub const PAD_TO_MTU: usize = usize::MAX;

/// How a frame is padded: to a multiple of `bucket` bytes (0 or 1: not at all), never
/// beyond `cap` (the path's MTU, at most [`PAD_CAP`]) unless the frame is bigger already.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Padding {
    /// Bucket size.
    pub bucket: usize,
    /// Largest padded size.
    pub cap: usize,
}

impl Padding {
    /// Buckets of `bucket` bytes, capped at `cap` (and at [`PAD_CAP`]).
    pub fn new(bucket: usize, cap: usize) -> Self {
        Padding {
            bucket,
            cap: cap.min(PAD_CAP),
        }
    }
}

impl From<usize> for Padding {
    /// Buckets of this size, capped at [`PAD_CAP`].
    fn from(bucket: usize) -> Self {
        Padding {
            bucket,
            cap: PAD_CAP,
        }
    }
}

/// Total length of a transport datagram whose body is `body_len` bytes, after padding
/// (see [`Padding`]).
pub fn padded_len(body_len: usize, pad: impl Into<Padding>) -> usize {
    let Padding { bucket, cap } = pad.into();
    // Header protection samples 16 bytes of ciphertext, so even an unpadded frame is at
    // least that long.
    let bare = (body_len + TRANSPORT_OVERHEAD).max(MIN_TRANSPORT + TAG_LEN);
    if bucket <= 1 {
        return bare;
    }
    let rounded = bare.div_ceil(bucket) * bucket;
    if rounded > cap && bare <= cap {
        cap
    } else if bare > cap {
        bare
    } else {
        rounded
    }
}

/// Removes header protection: returns the connection id and counter of a datagram that
/// may be a transport datagram for the holder of `hp`. Does not modify `dg`.
pub fn unmask_header(hp: &impl HeaderMask, dg: &[u8]) -> Option<([u8; 8], u64)> {
    if dg.len() < MIN_TRANSPORT + TAG_LEN {
        return None;
    }
    let mut sample = [0u8; 16];
    sample.copy_from_slice(&dg[HDR_LEN..HDR_LEN + 16]);
    let mask = hp.mask(&sample);
    let mut cid = [0u8; 8];
    let mut ctr = [0u8; 8];
    for i in 0..8 {
        cid[i] = dg[i] ^ mask[i];
        ctr[i] = dg[8 + i] ^ mask[8 + i];
    }
    Some((cid, u64::from_le_bytes(ctr)))
}

/// Writes the frame header and padding of a transport datagram whose body already sits at
/// `buf[BODY_OFFSET..BODY_OFFSET + body_len]`; returns the plaintext length (frame header,
/// body, padding) that must then be sealed at `buf[HDR_LEN..]`.
pub fn frame_plaintext(
    buf: &mut [u8],
    kind: Frame,
    body_len: usize,
    pad: impl Into<Padding>,
) -> Option<usize> {
    let total = padded_len(body_len, pad);
    let pt_len = total - HDR_LEN - TAG_LEN;
    if buf.len() < total || body_len > usize::from(u16::MAX) {
        return None;
    }
    buf[HDR_LEN] = frame_byte(kind);
    buf[HDR_LEN + 1..HDR_LEN + 3].copy_from_slice(&(body_len as u16).to_be_bytes());
    buf[BODY_OFFSET + body_len..HDR_LEN + pt_len].fill(0);
    Some(pt_len)
}

/// Writes the header (`cid`, `counter`), the tag, and applies header protection for the
/// receiver's `hp`. `buf[HDR_LEN..HDR_LEN + pt_len]` must already be ciphertext.
pub fn finish_transport(
    buf: &mut [u8],
    cid: &[u8; 8],
    counter: u64,
    pt_len: usize,
    tag: &[u8; TAG_LEN],
    hp: &impl HeaderMask,
) -> usize {
    let total = HDR_LEN + pt_len + TAG_LEN;
    buf[HDR_LEN + pt_len..total].copy_from_slice(tag);
    let mut sample = [0u8; 16];
    sample.copy_from_slice(&buf[HDR_LEN..HDR_LEN + 16]);
    let mask = hp.mask(&sample);
    for i in 0..8 {
        buf[i] = cid[i] ^ mask[i];
        buf[8 + i] = counter.to_le_bytes()[i] ^ mask[8 + i];
    }
    total
}

/// The AAD of a transport datagram: its unmasked header.
pub fn header_aad(cid: &[u8; 8], counter: u64) -> [u8; HDR_LEN] {
    let mut a = [0u8; HDR_LEN];
    a[..8].copy_from_slice(cid);
    a[8..].copy_from_slice(&counter.to_le_bytes());
    a
}

/// Parses a decrypted plaintext (at `dg[HDR_LEN..HDR_LEN + pt_len]`): frame kind and the
/// range of its body within `dg`.
pub fn parse_plaintext(dg: &[u8], pt_len: usize) -> Option<(Frame, Range<usize>)> {
    if pt_len < FRAME_HDR {
        return None;
    }
    let b0 = dg[HDR_LEN];
    if b0 >> 5 != VERSION {
        return None;
    }
    let kind = Frame::from_u8(b0 & 0x1f)?;
    let len = usize::from(u16::from_be_bytes([dg[HDR_LEN + 1], dg[HDR_LEN + 2]]));
    if FRAME_HDR + len > pt_len {
        return None;
    }
    Some((kind, BODY_OFFSET..BODY_OFFSET + len))
}

/// A decoded handshake fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HsFragment {
    /// Message 1 or 2.
    pub kind: HsKind,
    /// Identifies the handshake attempt (message 2 echoes the id of message 1).
    pub msg_id: u32,
    /// Index of this piece.
    pub index: u8,
    /// Number of pieces.
    pub count: u8,
    /// Range of the piece within the datagram buffer.
    pub piece: Range<usize>,
}

/// Seals one handshake fragment into a new datagram.
#[allow(clippy::too_many_arguments)]
pub fn seal_handshake(
    seal: &HsSeal,
    nonce: &[u8; HS_NONCE_LEN],
    kind: HsKind,
    msg_id: u32,
    index: u8,
    count: u8,
    piece: &[u8],
    pad: usize,
) -> Vec<u8> {
    let body = HS_FRAG_HDR + piece.len() + pad;
    let mut dg = vec![0u8; HS_NONCE_LEN + body + TAG_LEN];
    dg[..HS_NONCE_LEN].copy_from_slice(nonce);
    let b = &mut dg[HS_NONCE_LEN..HS_NONCE_LEN + body];
    b[0] = (VERSION << 4) | kind as u8;
    b[1..5].copy_from_slice(&msg_id.to_be_bytes());
    b[5] = index;
    b[6] = count;
    b[7..9].copy_from_slice(&(piece.len() as u16).to_be_bytes());
    b[9..9 + piece.len()].copy_from_slice(piece);
    let tag = seal.seal(nonce, b);
    dg[HS_NONCE_LEN + body..].copy_from_slice(&tag);
    dg
}

/// Opens a handshake datagram in place; `None` if it does not authenticate or parse.
pub fn open_handshake(seal: &HsSeal, dg: &mut [u8]) -> Option<HsFragment> {
    if dg.len() < HS_NONCE_LEN + HS_FRAG_HDR + TAG_LEN {
        return None;
    }
    let mut nonce = [0u8; HS_NONCE_LEN];
    nonce.copy_from_slice(&dg[..HS_NONCE_LEN]);
    let tag_at = dg.len() - TAG_LEN;
    let mut tag = [0u8; TAG_LEN];
    tag.copy_from_slice(&dg[tag_at..]);
    if !seal.open(&nonce, &mut dg[HS_NONCE_LEN..tag_at], &tag) {
        return None;
    }
    let b = &dg[HS_NONCE_LEN..tag_at];
    if b[0] >> 4 != VERSION {
        return None;
    }
    let kind = match b[0] & 0x0f {
        1 => HsKind::Init,
        2 => HsKind::Response,
        _ => return None,
    };
    let msg_id = u32::from_be_bytes([b[1], b[2], b[3], b[4]]);
    let (index, count) = (b[5], b[6]);
    let len = usize::from(u16::from_be_bytes([b[7], b[8]]));
    if count == 0 || index >= count || HS_FRAG_HDR + len > b.len() {
        return None;
    }
    let start = HS_NONCE_LEN + HS_FRAG_HDR;
    Some(HsFragment {
        kind,
        msg_id,
        index,
        count,
        piece: start..start + len,
    })
}

/// A little-endian-free cursor for frame bodies (all integers are big-endian).
pub struct Cursor<'a>(pub &'a [u8]);

impl<'a> Cursor<'a> {
    /// Takes `n` bytes.
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    /// Takes one byte.
    pub fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    /// Takes a big-endian u32.
    pub fn u32(&mut self) -> Option<u32> {
        self.array::<4>().map(u32::from_be_bytes)
    }
    /// Takes a big-endian u64.
    pub fn u64(&mut self) -> Option<u64> {
        self.array::<8>().map(u64::from_be_bytes)
    }
    /// Takes a fixed array.
    pub fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Some(a)
    }
    /// Reads an address written by [`put_addr`].
    pub fn addr(&mut self) -> Option<std::net::SocketAddr> {
        use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
        let ip = match self.u8()? {
            4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>()?)),
            6 => IpAddr::V6(Ipv6Addr::from(self.array::<16>()?)),
            _ => return None,
        };
        let port = u16::from_be_bytes(self.array::<2>()?);
        Some(SocketAddr::new(ip, port))
    }
    /// The rest.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }
}

/// Appends a socket address: `[4][ipv4 4][port u16]` or `[6][ipv6 16][port u16]`.
pub fn put_addr(out: &mut Vec<u8>, a: std::net::SocketAddr) {
    match a.ip() {
        std::net::IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        std::net::IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&a.port().to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpadded_frames_still_carry_a_sample() {
        for bucket in [0, 1, 7, 16, 33] {
            for body in [0, 1, 12, 100] {
                assert!(padded_len(body, bucket) >= MIN_TRANSPORT + TAG_LEN);
            }
        }
    }

    #[test]
    fn addresses_and_frame_bytes_round_trip() {
        let addrs: [std::net::SocketAddr; 2] = [
            "198.18.0.1:7000".parse().expect("v4"),
            "[fd00:198:18::1]:65535".parse().expect("v6"),
        ];
        let mut b = Vec::new();
        for a in addrs {
            put_addr(&mut b, a);
        }
        let mut c = Cursor(&b);
        assert_eq!(c.addr(), Some(addrs[0]));
        assert_eq!(c.addr(), Some(addrs[1]));
        assert_eq!(c.addr(), None);
        assert_eq!(Cursor(&[5, 1, 2, 3, 4, 0, 1]).addr(), None);
        for k in 0..=23u8 {
            let f = Frame::from_u8(k).expect("kind");
            assert_eq!(frame_byte(f) & 0x1f, k);
            assert_eq!(frame_byte(f) >> 5, VERSION);
        }
        assert_eq!(Frame::from_u8(24), None);
    }

    #[test]
    fn padding_buckets() {
        assert_eq!(padded_len(0, 64), 64);
        assert_eq!(padded_len(30, 64), 128);
        assert_eq!(padded_len(1280, 64), 1344);
        assert_eq!(padded_len(1420, 64), PAD_CAP);
        assert_eq!(padded_len(2000, 64), 2000 + TRANSPORT_OVERHEAD);
        assert_eq!(padded_len(5, 0), MIN_TRANSPORT + TAG_LEN);
        assert_eq!(padded_len(50, 0), 50 + TRANSPORT_OVERHEAD);
        // Capped at the path's MTU.
        assert_eq!(padded_len(1200, Padding::new(64, 1252)), 1252);
        assert_eq!(padded_len(1100, Padding::new(64, 1252)), 1152);
        assert_eq!(
            padded_len(1250, Padding::new(64, 1252)),
            1250 + TRANSPORT_OVERHEAD
        );
    }

    #[test]
    fn handshake_round_trip_and_tamper() {
        let seal = HsSeal::new(&[4u8; 32]);
        let mut dg = seal_handshake(&seal, &[9u8; 24], HsKind::Init, 77, 1, 2, b"piece", 13);
        let mut bad = dg.clone();
        let f = open_handshake(&seal, &mut dg).expect("opens");
        assert_eq!(
            (f.kind, f.msg_id, f.index, f.count),
            (HsKind::Init, 77, 1, 2)
        );
        assert_eq!(&dg[f.piece], b"piece");
        bad[30] ^= 1;
        assert!(open_handshake(&seal, &mut bad).is_none());
        let mut other = seal_handshake(&seal, &[9u8; 24], HsKind::Init, 77, 0, 1, b"x", 0);
        assert!(open_handshake(&HsSeal::new(&[5u8; 32]), &mut other).is_none());
    }
}
