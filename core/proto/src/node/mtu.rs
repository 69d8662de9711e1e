//! Path MTU in the node: one discovery ([`Pmtud`]) per peer, for the path its data takes
//! (direct, or relayed through both legs), restarted whenever that path changes; probes and
//! their acknowledgements; and what happens to an inner packet larger than the path
//! carries whole: a Packet Too Big for its sender (once the size is known, and only where
//! the sender may not fragment), and overlay fragmentation so that the packet itself still
//! arrives. TCP's MSS is clamped both ways so that most segments never need either.

use super::*;
use crate::inner;
use crate::pmtu::{PmtuState, Pmtud, Probe, BASE};

/// Bytes a direct path adds to an inner packet.
pub(super) const DIRECT_OVERHEAD: usize = TRANSPORT_OVERHEAD;
/// Bytes a relayed path adds: the end-to-end layer, the relay handle, the relay layer.
pub(super) const RELAYED_OVERHEAD: usize = 2 * TRANSPORT_OVERHEAD + 8;
/// At most one Packet Too Big per peer this often.
const PTB_INTERVAL: Duration = Duration::from_millis(100);
/// A path is this old before its size is told to the inner stack: the kernel keeps a Packet
/// Too Big for 10 minutes and no message can raise it again, so a path in passing (the
/// relay, for the moment a port rotation or a roam takes to validate a direct path again)
/// must not lower what the sender uses for that long. Meanwhile packets go in overlay
/// fragments.
const PTB_PATH_AGE: Duration = Duration::from_secs(3);
/// Header of a Fragment body: packet id (u32), index, count.
const FRAG_HDR: usize = 6;
/// Pieces one inner packet may be cut into.
const MAX_FRAGMENTS: usize = 8;

/// Bytes the peer's current path adds to an inner packet.
pub(super) fn overhead(p: &Peer) -> usize {
    if p.direct.is_some() {
        DIRECT_OVERHEAD
    } else {
        RELAYED_OVERHEAD
    }
}

/// The largest inner packet that crosses the peer's path whole now.
pub(super) fn inner_mtu(p: &Peer) -> usize {
    usize::from(p.pmtu.size()).saturating_sub(overhead(p))
}

/// How to pad an end-to-end frame to the peer on its current path: buckets, capped so that
/// the datagram (with the relay layer, if relayed) never outgrows the path MTU.
pub(super) fn e2e_padding(p: &Peer, bucket: usize) -> Padding {
    let cap = usize::from(p.pmtu.size()) - (overhead(p) - DIRECT_OVERHEAD);
    Padding::new(bucket, cap)
}

impl Node {
    /// The largest datagram the data path can need on a direct or relayed path: the TUN MTU
    /// plus the path's overhead. Discovery searches up to it.
    pub(super) fn path_ceiling(&self, direct: bool) -> u16 {
        let o = if direct {
            DIRECT_OVERHEAD
        } else {
            RELAYED_OVERHEAD
        };
        u16::try_from(usize::from(self.cfg.tun_mtu) + o).unwrap_or(u16::MAX)
    }

    /// A fresh discovery for the peer's current path (it changed, or the peer is new).
    pub(super) fn reset_pmtu(&mut self, now: Instant, pk: [u8; 32]) {
        let first_id = self.rng.next_u32();
        let Some(direct) = self.peers.get(&pk).map(|p| p.direct.is_some()) else {
            return;
        };
        let ceiling = self.path_ceiling(direct);
        // Probes at bucket sizes (or the ceiling), so that no probe has a size data never
        // has; with padding off, any size. "mtu" padding probes in the default bucket.
        let step = match self.cfg.pad_bucket {
            0 | 1 => 1,
            b if b > wire::PAD_CAP => 64,
            b => u16::try_from(b).unwrap_or(64),
        };
        let to_mtu = self.cfg.pad_bucket > wire::PAD_CAP;
        if let Some(p) = self.peers.get_mut(&pk) {
            let d = Pmtud::new(ceiling, now, first_id).with_step(step);
            p.pmtu = if to_mtu { d.without_companion() } else { d };
        }
    }

    /// Runs the peer's discovery timers and sends the probes it asks for.
    pub(super) fn pmtu_tick(&mut self, now: Instant, pk: [u8; 32]) {
        let mut probes = Vec::new();
        let Some(p) = self.peers.get_mut(&pk) else {
            return;
        };
        let (sent, black_holes) = (p.pmtu.probes_sent, p.pmtu.black_holes);
        p.pmtu.poll(now, p.rtt, &mut probes);
        self.counters.pmtu_probes_sent += p.pmtu.probes_sent - sent;
        self.counters.pmtu_black_holes += p.pmtu.black_holes - black_holes;
        for probe in probes {
            self.send_probe(now, pk, probe);
        }
    }

    /// A probe: a datagram of exactly `probe.size` bytes on the peer's path, `[id u32]`
    /// then zeros, sealed like any frame (unpadded, its size is the point).
    fn send_probe(&mut self, now: Instant, pk: [u8; 32], probe: Probe) {
        let Some(p) = self.peers.get(&pk) else {
            return;
        };
        let Some(body_len) = usize::from(probe.size).checked_sub(overhead(p)) else {
            return;
        };
        let mut body = vec![0u8; body_len.max(5)];
        body[..4].copy_from_slice(&probe.id.to_be_bytes());
        body[4] = u8::from(probe.companion);
        self.send_peer_frame_padded(now, pk, Frame::PmtuProbe, &body, None, Padding::new(0, 0));
    }

    /// A peer's probe: acknowledge it (small, on our best path). A companion's
    /// acknowledgement also says the largest end-to-end datagram received from the peer
    /// since its previous companion, and starts that count again.
    pub(super) fn on_probe(&mut self, now: Instant, pk: [u8; 32], body: &[u8]) {
        let Some(id) = body.get(..4) else {
            self.counters.dropped_malformed += 1;
            return;
        };
        let mut ack = [0u8; 6];
        ack[..4].copy_from_slice(id);
        let len = if body.get(4) == Some(&1) {
            let Some(p) = self.peers.get_mut(&pk) else {
                return;
            };
            ack[4..].copy_from_slice(&std::mem::take(&mut p.rx_max).to_be_bytes());
            6
        } else {
            4
        };
        self.send_peer_frame(now, pk, Frame::PmtuAck, &ack[..len], None);
    }

    /// An acknowledgement of one of our probes.
    pub(super) fn on_probe_ack(&mut self, now: Instant, pk: [u8; 32], body: &[u8]) {
        let mut c = Cursor(body);
        let Some(id) = c.u32() else {
            self.counters.dropped_malformed += 1;
            return;
        };
        // The peer counts end-to-end datagrams; this path's sizes add its relay layers.
        let rx_max = c.array::<2>().map(u16::from_be_bytes);
        if let Some(p) = self.peers.get_mut(&pk) {
            let layers = overhead(p) - DIRECT_OVERHEAD;
            let rx_max = rx_max.map(|m| u16::try_from(usize::from(m) + layers).unwrap_or(u16::MAX));
            let before = p.pmtu.probes_acked;
            p.pmtu.on_ack(now, id, rx_max);
            self.counters.pmtu_probes_acked += p.pmtu.probes_acked - before;
        }
    }

    /// The I/O layer could not send a datagram of `size` bytes to `dst`: the socket refused
    /// it as larger than the interface (sockets never fragment). Every path through that
    /// destination learns that the size fails.
    pub fn datagram_too_big(&mut self, now: Instant, dst: SocketAddr, size: usize) {
        let (via_relay, size) = self.via_relay_size(dst, size);
        let size = u16::try_from(size).unwrap_or(u16::MAX);
        for p in self.peers.values_mut() {
            let on_path = match p.direct {
                Some(a) => a == dst,
                None => via_relay,
            };
            if on_path {
                let before = p.pmtu.black_holes;
                p.pmtu.on_too_big(now, size);
                self.counters.pmtu_black_holes += p.pmtu.black_holes - before;
            }
        }
    }

    /// The MSS TCP should use towards and from this peer.
    fn peer_mss(&self, p: &Peer, packet: &[u8]) -> u16 {
        let mtu = usize::from(p.pmtu.mss_size())
            .saturating_sub(overhead(p))
            .min(usize::from(self.cfg.tun_mtu));
        inner::mss_for(packet, u16::try_from(mtu).unwrap_or(u16::MAX))
    }

    /// A copy of an outgoing TCP SYN with its MSS lowered to what the path to `pk` carries,
    /// if it announces more; None for every other packet (which goes as it is).
    pub(super) fn clamp_outgoing(&mut self, pk: &[u8; 32], packet: &[u8]) -> Option<Vec<u8>> {
        if !is_tcp_syn(packet) {
            return None;
        }
        let p = self.peers.get(pk)?;
        let mss = self.peer_mss(p, packet);
        let mut v = packet.to_vec();
        if inner::clamp_mss(&mut v, mss) {
            self.counters.mss_clamped += 1;
            Some(v)
        } else {
            None
        }
    }

    /// Lowers the MSS of an incoming TCP SYN or SYN-ACK from `pk`, in place.
    pub(super) fn clamp_incoming(&mut self, pk: &[u8; 32], packet: &mut [u8]) {
        if !is_tcp_syn(packet) {
            return;
        }
        let Some(p) = self.peers.get(pk) else { return };
        let mss = self.peer_mss(p, packet);
        if inner::clamp_mss(packet, mss) {
            self.counters.mss_clamped += 1;
        }
    }

    /// An inner packet larger than the peer's path carries whole. Once discovery has settled
    /// on the size and the path is [`PTB_PATH_AGE`] old, a sender that must not fragment (IPv4 with DF, or IPv6 while the path
    /// carries at least IPv6's 1280) is told with a Packet Too Big (rate-limited); in every
    /// case the packet itself goes in overlay fragments, so nothing is lost meanwhile.
    pub(super) fn send_oversized(&mut self, now: Instant, pk: [u8; 32], packet: &[u8]) -> bool {
        let Some(p) = self.peers.get_mut(&pk) else {
            return false;
        };
        let mtu = inner_mtu(p);
        let settled = p.pmtu.state() == PmtuState::Confirmed
            && now.saturating_duration_since(p.pmtu.since()) >= PTB_PATH_AGE;
        let v6 = packet.first().map(|b| b >> 4) == Some(6);
        let may_tell = inner::dont_fragment(packet) && (!v6 || mtu >= 1280);
        let due = p
            .last_ptb
            .is_none_or(|t| now.saturating_duration_since(t) >= PTB_INTERVAL);
        if settled && may_tell && due {
            if let Some(reply) = inner::too_big_reply(packet, u16::try_from(mtu).unwrap_or(0)) {
                p.last_ptb = Some(now);
                self.counters.too_big_sent += 1;
                self.tun_out.push_back(reply);
            }
        }
        self.send_fragments(now, pk, packet, mtu)
    }

    /// Cuts `packet` into Fragment frames of at most `mtu` bytes each (with their header),
    /// `[id u32][index u8][count u8][piece]`.
    fn send_fragments(&mut self, now: Instant, pk: [u8; 32], packet: &[u8], mtu: usize) -> bool {
        let piece = mtu.saturating_sub(FRAG_HDR);
        if piece < 64 || packet.len().div_ceil(piece) > MAX_FRAGMENTS {
            self.counters.dropped_too_big += 1;
            return false;
        }
        let count = packet.len().div_ceil(piece);
        let id = self.rng.next_u32();
        let mut ok = true;
        for (i, chunk) in packet.chunks(piece).enumerate() {
            let mut body = Vec::with_capacity(FRAG_HDR + chunk.len());
            body.extend_from_slice(&id.to_be_bytes());
            body.push(i as u8);
            body.push(count as u8);
            body.extend_from_slice(chunk);
            ok &= self.send_peer_frame(now, pk, Frame::Fragment, &body, None);
        }
        if ok {
            self.counters.fragmented_packets += 1;
            let mut direct = false;
            if let Some(p) = self.peers.get_mut(&pk) {
                p.tx_bytes += packet.len() as u64;
                p.last_data = now;
                direct = p.direct.is_some();
            }
            self.counters.tx_packets += 1;
            if direct {
                self.counters.tx_packets_direct += 1;
                self.counters.tx_bytes_direct += packet.len() as u64;
            } else {
                self.counters.tx_packets_relayed += 1;
                self.counters.tx_bytes_relayed += packet.len() as u64;
            }
        }
        ok
    }

    /// A Fragment from `pk`: the whole inner packet once every piece is there.
    pub(super) fn on_fragment(
        &mut self,
        now: Instant,
        pk: [u8; 32],
        body: &[u8],
    ) -> Option<Vec<u8>> {
        let mut c = Cursor(body);
        let (Some(id), Some(index), Some(count)) = (c.u32(), c.u8(), c.u8()) else {
            self.counters.dropped_malformed += 1;
            return None;
        };
        if usize::from(count) > MAX_FRAGMENTS || index >= count {
            self.counters.dropped_malformed += 1;
            return None;
        }
        let (whole, evicted) = self.data_reasm.add(now, pk, id, index, count, c.rest());
        self.counters.reassembly_timeouts += evicted;
        if whole.is_some() {
            self.counters.reassembled_packets += 1;
        }
        whole
    }

    /// The peer's path MTU for `veil peers`: the largest inner packet that crosses whole,
    /// and the state of discovery.
    pub(super) fn pmtu_status(p: &Peer) -> (u32, &'static str) {
        (
            u32::try_from(inner_mtu(p)).unwrap_or(0),
            p.pmtu.state().as_str(),
        )
    }
}

/// A TCP segment with SYN set (SYN or SYN-ACK), cheaply.
fn is_tcp_syn(p: &[u8]) -> bool {
    match p.first().map(|b| b >> 4) {
        Some(4) => {
            let ihl = usize::from(p[0] & 0x0f) * 4;
            p.len() >= ihl + 14 && p[9] == 6 && p[ihl + 13] & 0x02 != 0
        }
        Some(6) => p.len() >= 54 && p[6] == 6 && p[53] & 0x02 != 0,
        _ => false,
    }
}

/// The discovery a peer starts with before its first path is known (relayed).
pub(super) fn initial_pmtud(now: Instant) -> Pmtud {
    Pmtud::new(BASE, now, 0)
}
