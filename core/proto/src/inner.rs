//! What the overlay does to inner IP packets that are larger than a path carries: it tells
//! the sender's stack (ICMP Fragmentation Needed for IPv4, Packet Too Big for IPv6, written
//! back into the TUN as if the peer had sent it) and keeps TCP segments small from the start
//! (MSS clamping of SYN and SYN-ACK). Packets are built with `etherparse`, which computes
//! the checksums.

use etherparse::{icmpv4::DestUnreachableHeader, Icmpv4Type, Icmpv6Type, IpNumber, PacketBuilder};
use std::net::IpAddr;

/// Most of the offending packet an ICMPv4 error quotes (576-byte datagrams, RFC 1812).
const ICMP4_QUOTE: usize = 576 - 20 - 8;
/// Most of the offending packet an ICMPv6 error quotes (it must fit 1280 bytes, RFC 4443).
const ICMP6_QUOTE: usize = 1280 - 40 - 8;
/// TTL / hop limit of the messages we write.
const HOP_LIMIT: u8 = 64;

/// Whether the sender of `packet` asked that it not be fragmented on the way: IPv4 with
/// the DF bit; IPv6 always (routers never fragment it).
pub fn dont_fragment(packet: &[u8]) -> bool {
    match packet.first().map(|b| b >> 4) {
        Some(4) => packet.len() >= 20 && packet[6] & 0x40 != 0,
        Some(6) => true,
        _ => false,
    }
}

/// Whether `packet` is itself an ICMP error (never answered with another one, RFC 1122
/// 3.2.2 and RFC 4443 2.4) or an IPv4 fragment other than the first.
fn is_exempt(packet: &[u8]) -> bool {
    match packet.first().map(|b| b >> 4) {
        Some(4) => {
            let ihl = usize::from(packet[0] & 0x0f) * 4;
            let offset = u16::from_be_bytes([packet[6], packet[7]]) & 0x1fff;
            offset != 0
                || (packet[9] == 1
                    && packet
                        .get(ihl)
                        .is_some_and(|t| matches!(t, 3 | 4 | 5 | 11 | 12)))
        }
        Some(6) => packet[6] == 58 && packet.get(40).is_some_and(|t| *t < 128),
        _ => true,
    }
}

/// The message that tells `packet`'s sender that at most `mtu` bytes fit the path to its
/// destination: ICMPv4 Destination Unreachable / Fragmentation Needed or ICMPv6 Packet Too
/// Big, from the packet's destination to its source, quoting the packet. None for packets
/// that must not get one (too short, ICMP errors, later IPv4 fragments).
pub fn too_big_reply(packet: &[u8], mtu: u16) -> Option<Vec<u8>> {
    let (src, dst) = (
        crate::node::ip_source(packet)?,
        crate::node::ip_destination(packet)?,
    );
    if is_exempt(packet) {
        return None;
    }
    let mut out = Vec::new();
    match (dst, src) {
        (IpAddr::V4(from), IpAddr::V4(to)) => {
            let quote = &packet[..packet.len().min(ICMP4_QUOTE)];
            PacketBuilder::ipv4(from.octets(), to.octets(), HOP_LIMIT)
                .icmpv4(Icmpv4Type::DestinationUnreachable(
                    DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: mtu },
                ))
                .write(&mut out, quote)
                .ok()?;
        }
        (IpAddr::V6(from), IpAddr::V6(to)) => {
            let quote = &packet[..packet.len().min(ICMP6_QUOTE)];
            PacketBuilder::ipv6(from.octets(), to.octets(), HOP_LIMIT)
                .icmpv6(Icmpv6Type::PacketTooBig {
                    mtu: u32::from(mtu),
                })
                .write(&mut out, quote)
                .ok()?;
        }
        _ => return None,
    }
    Some(out)
}

/// Where the TCP header of `packet` starts, if it is TCP (IPv4 not a later fragment; IPv6
/// without extension headers).
fn tcp_offset(packet: &[u8]) -> Option<usize> {
    match packet.first()? >> 4 {
        4 => {
            let ihl = usize::from(packet[0] & 0x0f) * 4;
            let offset = u16::from_be_bytes([*packet.get(6)?, *packet.get(7)?]) & 0x1fff;
            (ihl >= 20 && packet.get(9) == Some(&u8::from(IpNumber::TCP)) && offset == 0)
                .then_some(ihl)
        }
        6 => (packet.get(6) == Some(&u8::from(IpNumber::TCP))).then_some(40),
        _ => None,
    }
}

/// If `packet` is a TCP SYN (or SYN-ACK) announcing an MSS above `mss`, lowers the MSS to
/// `mss` and fixes the TCP checksum. Returns whether the packet changed.
pub fn clamp_mss(packet: &mut [u8], mss: u16) -> bool {
    let Some(t) = tcp_offset(packet) else {
        return false;
    };
    if packet.len() < t + 20 || packet[t + 13] & 0x02 == 0 {
        return false;
    }
    let doff = usize::from(packet[t + 12] >> 4) * 4;
    if doff < 20 || packet.len() < t + doff {
        return false;
    }
    let mut i = t + 20;
    while i < t + doff {
        match packet[i] {
            0 => return false,
            1 => i += 1,
            kind => {
                let Some(&len) = packet.get(i + 1) else {
                    return false;
                };
                let len = usize::from(len);
                if len < 2 || i + len > t + doff {
                    return false;
                }
                if kind == 2 && len == 4 {
                    let old = u16::from_be_bytes([packet[i + 2], packet[i + 3]]);
                    if old <= mss {
                        return false;
                    }
                    packet[i + 2..i + 4].copy_from_slice(&mss.to_be_bytes());
                    let sum = tcp_checksum(packet, t);
                    packet[t + 16..t + 18].copy_from_slice(&sum.to_be_bytes());
                    return true;
                }
                i += len;
            }
        }
    }
    false
}

/// The TCP checksum of the segment at `packet[t..]` (its checksum field taken as zero),
/// over the IPv4 or IPv6 pseudo-header.
fn tcp_checksum(packet: &[u8], t: usize) -> u16 {
    let seg = &packet[t..];
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        for c in b.chunks(2) {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], 0])
            };
            sum += u32::from(w);
        }
    };
    if packet[0] >> 4 == 4 {
        add(&packet[12..20]);
    } else {
        add(&packet[8..40]);
    }
    add(&[0, 6]);
    let len = seg.len() as u32;
    add(&len.to_be_bytes());
    add(&seg[..16]);
    add(&seg[18..]);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The MSS that makes a TCP segment to or from `packet`'s family fit an inner MTU of `mtu`.
pub fn mss_for(packet: &[u8], mtu: u16) -> u16 {
    let headers = if packet.first().map(|b| b >> 4) == Some(6) {
        60
    } else {
        40
    };
    mtu.saturating_sub(headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{SlicedPacket, TcpHeader, TcpOptionElement, TransportSlice};

    fn syn(v6: bool, mss: u16) -> Vec<u8> {
        let b = if v6 {
            PacketBuilder::ipv6([0xfd; 16], [0xfe; 16], 64)
        } else {
            PacketBuilder::ipv4([100, 64, 0, 1], [100, 64, 0, 2], 64)
        };
        let mut tcp = TcpHeader::new(40000, 80, 1, 65535);
        tcp.syn = true;
        tcp.set_options(&[
            TcpOptionElement::Noop,
            TcpOptionElement::MaximumSegmentSize(mss),
            TcpOptionElement::SelectiveAcknowledgementPermitted,
        ])
        .unwrap_or_default();
        let mut out = Vec::new();
        b.tcp_header(tcp).write(&mut out, &[]).unwrap_or_default();
        out
    }

    fn mss_and_checksum_ok(p: &[u8]) -> (Option<u16>, bool) {
        let s = SlicedPacket::from_ip(p).unwrap_or_else(|e| panic!("{e:?}"));
        let Some(TransportSlice::Tcp(t)) = s.transport else {
            panic!("not tcp")
        };
        let h = t.to_header();
        let mss = h.options_iterator().find_map(|o| match o {
            Ok(TcpOptionElement::MaximumSegmentSize(m)) => Some(m),
            _ => None,
        });
        let expect = match s.net {
            Some(etherparse::NetSlice::Ipv4(ip)) => h
                .calc_checksum_ipv4(&ip.header().to_header(), t.payload())
                .unwrap_or(0),
            Some(etherparse::NetSlice::Ipv6(ip)) => h
                .calc_checksum_ipv6(&ip.header().to_header(), t.payload())
                .unwrap_or(0),
            None => 0,
        };
        (mss, expect == h.checksum)
    }

    #[test]
    fn mss_is_clamped_with_a_valid_checksum() {
        for v6 in [false, true] {
            let mut p = syn(v6, 1460);
            assert_eq!(mss_and_checksum_ok(&p), (Some(1460), true));
            assert!(clamp_mss(&mut p, 1200));
            assert_eq!(mss_and_checksum_ok(&p), (Some(1200), true), "v6 {v6}");
            // Already small enough: untouched.
            assert!(!clamp_mss(&mut p, 1300));
            assert_eq!(mss_and_checksum_ok(&p), (Some(1200), true));
        }
    }

    #[test]
    fn too_big_replies_parse_and_quote_the_packet() {
        // IPv4 with DF.
        let mut p = syn(false, 1460);
        p.resize(1400, 0);
        p[6] |= 0x40;
        assert!(dont_fragment(&p));
        let r = too_big_reply(&p, 1300).unwrap_or_default();
        let s = SlicedPacket::from_ip(&r).unwrap_or_else(|e| panic!("{e:?}"));
        let Some(TransportSlice::Icmpv4(icmp)) = s.transport else {
            panic!("not icmpv4")
        };
        assert_eq!(
            icmp.icmp_type(),
            Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
                next_hop_mtu: 1300
            })
        );
        let h = icmp.header();
        assert_eq!(h.checksum, h.icmp_type.calc_checksum(icmp.payload()));
        assert_eq!(&icmp.payload()[..20], &p[..20]);
        assert_eq!(r.len(), 576);
        assert_eq!(crate::node::ip_destination(&r), crate::node::ip_source(&p));
        assert_eq!(crate::node::ip_source(&r), crate::node::ip_destination(&p));
        // IPv6.
        let mut p6 = syn(true, 1440);
        p6.resize(1400, 0);
        let r6 = too_big_reply(&p6, 1280).unwrap_or_default();
        let s = SlicedPacket::from_ip(&r6).unwrap_or_else(|e| panic!("{e:?}"));
        let Some(TransportSlice::Icmpv6(icmp)) = s.transport else {
            panic!("not icmpv6")
        };
        assert_eq!(icmp.icmp_type(), Icmpv6Type::PacketTooBig { mtu: 1280 });
        assert!(r6.len() <= 1280);
        let (Some(IpAddr::V6(src)), Some(IpAddr::V6(dst))) = (
            crate::node::ip_source(&r6),
            crate::node::ip_destination(&r6),
        ) else {
            panic!("addresses")
        };
        let h = icmp.header();
        let expect = h
            .icmp_type
            .calc_checksum(src.octets(), dst.octets(), icmp.payload())
            .unwrap_or(0);
        assert_eq!(h.checksum, expect);
        // Never an error about an error.
        assert!(too_big_reply(&r, 1200).is_none());
        assert!(too_big_reply(&r6, 1200).is_none());
    }
}
