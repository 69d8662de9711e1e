//! What an observer of a link can key on, measured on a capture: for the UDP datagrams to
//! or from one host, how concentrated each of the first bytes is (the share of the most
//! common value at each offset: a type byte or a zero field shows up as a share near 100%),
//! the datagram sizes, and whether given byte strings (keys, addresses, a network id) occur
//! anywhere in a payload. Used by `tests/e2e/capture.sh` on Veil and on boringtun.
//!
//! Also the model of the `veil-impair` test helper (module [`impair`]): loss, duplication,
//! delay, jitter and reordering of the packets of an NFQUEUE, for `tests/e2e/impair.sh`.

pub mod impair;

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

/// A byte string to look for, with a name for the report.
#[derive(Clone, Debug)]
pub struct Needle {
    /// Shown in the report.
    pub name: String,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// The concentration of one byte offset.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Offset {
    /// Offset in the UDP payload.
    pub offset: usize,
    /// Datagrams at least `offset + 1` bytes long.
    pub samples: usize,
    /// The most common value there.
    pub value: u8,
    /// Its share of the samples.
    pub share: f64,
}

/// The analysis of one capture.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// UDP datagrams to or from the host.
    pub datagrams: usize,
    /// Per offset, for the first `offsets` bytes.
    pub offsets: Vec<Offset>,
    /// The offset with the highest share (among offsets with at least `min_samples`).
    pub worst: Option<Offset>,
    /// Datagram count per UDP payload size.
    pub sizes: BTreeMap<usize, usize>,
    /// Per needle, the number of datagrams that contain it.
    pub found: BTreeMap<String, usize>,
}

/// Why a capture could not be read.
#[derive(Debug)]
pub struct CaptureError(pub String);

impl std::fmt::Display for CaptureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CaptureError {}

/// The UDP payloads to or from `host` (any host if None) in a pcap file's bytes
/// (Ethernet or Linux cooked captures).
pub fn udp_payloads(pcap: &[u8], host: Option<IpAddr>) -> Result<Vec<Vec<u8>>, CaptureError> {
    Ok(udp_datagrams(pcap)?
        .into_iter()
        .filter(|d| host.is_none_or(|h| h == d.src.ip() || h == d.dst.ip()))
        .map(|d| d.payload)
        .collect())
}

/// The UDP payloads sent to `target` (address and port) in a pcap file's bytes.
pub fn udp_payloads_to(pcap: &[u8], target: SocketAddr) -> Result<Vec<Vec<u8>>, CaptureError> {
    Ok(udp_datagrams(pcap)?
        .into_iter()
        .filter(|d| d.dst == target)
        .map(|d| d.payload)
        .collect())
}

/// A UDP datagram of a capture.
pub struct Datagram {
    /// Sender.
    pub src: SocketAddr,
    /// Receiver.
    pub dst: SocketAddr,
    /// UDP payload.
    pub payload: Vec<u8>,
}

/// Every UDP datagram in a pcap file's bytes (Ethernet, Linux cooked or raw IP captures).
pub fn udp_datagrams(pcap: &[u8]) -> Result<Vec<Datagram>, CaptureError> {
    let mut reader = pcap_file::pcap::PcapReader::new(pcap)
        .map_err(|e| CaptureError(format!("not a pcap file: {e}")))?;
    let linktype = reader.header().datalink;
    let mut out = Vec::new();
    while let Some(pkt) = reader.next_packet() {
        let pkt = pkt.map_err(|e| CaptureError(format!("damaged pcap: {e}")))?;
        let sliced = match linktype {
            pcap_file::DataLink::ETHERNET => SlicedPacket::from_ethernet(&pkt.data),
            pcap_file::DataLink::LINUX_SLL => SlicedPacket::from_linux_sll(&pkt.data),
            pcap_file::DataLink::RAW | pcap_file::DataLink::IPV4 | pcap_file::DataLink::IPV6 => {
                SlicedPacket::from_ip(&pkt.data)
            }
            other => return Err(CaptureError(format!("unsupported link type {other:?}"))),
        };
        let Ok(p) = sliced else { continue };
        let (src, dst): (IpAddr, IpAddr) = match &p.net {
            Some(NetSlice::Ipv4(ip)) => (
                ip.header().source_addr().into(),
                ip.header().destination_addr().into(),
            ),
            Some(NetSlice::Ipv6(ip)) => (
                ip.header().source_addr().into(),
                ip.header().destination_addr().into(),
            ),
            None => continue,
        };
        if let Some(TransportSlice::Udp(u)) = &p.transport {
            out.push(Datagram {
                src: SocketAddr::new(src, u.source_port()),
                dst: SocketAddr::new(dst, u.destination_port()),
                payload: u.payload().to_vec(),
            });
        }
    }
    Ok(out)
}

/// Analyses `payloads`: the first `offsets` byte offsets (an offset counts only with at
/// least `min_samples` datagrams long enough), sizes, needles.
pub fn analyse(
    payloads: &[Vec<u8>],
    offsets: usize,
    min_samples: usize,
    needles: &[Needle],
) -> Report {
    let mut per = Vec::new();
    for off in 0..offsets {
        let mut counts = [0usize; 256];
        let mut samples = 0;
        for p in payloads {
            if let Some(b) = p.get(off) {
                counts[usize::from(*b)] += 1;
                samples += 1;
            }
        }
        let (value, n) = counts
            .iter()
            .enumerate()
            .max_by_key(|(_, n)| **n)
            .map_or((0, 0), |(v, n)| (v as u8, *n));
        per.push(Offset {
            offset: off,
            samples,
            value,
            share: if samples == 0 {
                0.0
            } else {
                n as f64 / samples as f64
            },
        });
    }
    let worst = per
        .iter()
        .filter(|o| o.samples >= min_samples)
        .max_by(|a, b| a.share.total_cmp(&b.share))
        .cloned();
    let mut sizes = BTreeMap::new();
    for p in payloads {
        *sizes.entry(p.len()).or_insert(0) += 1;
    }
    let found = needles
        .iter()
        .map(|n| {
            let count = payloads
                .iter()
                .filter(|p| !n.bytes.is_empty() && p.windows(n.bytes.len()).any(|w| w == n.bytes))
                .count();
            (n.name.clone(), count)
        })
        .collect();
    Report {
        datagrams: payloads.len(),
        offsets: per,
        worst,
        sizes,
        found,
    }
}

/// Parses hex (spaces and colons allowed).
pub fn parse_hex(s: &str) -> Option<Vec<u8>> {
    let clean: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    if clean.len() % 2 != 0 || clean.len() != s.chars().filter(|c| !matches!(c, ' ' | ':')).count()
    {
        return None;
    }
    (0..clean.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&clean[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_byte_is_found_and_random_bytes_are_not() {
        // WireGuard-like: a type byte and three zeros, then random bytes.
        let mut x: u32 = 7;
        let mut rnd = || {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 16) as u8
        };
        let fixed: Vec<Vec<u8>> = (0..1000)
            .map(|_| {
                let mut v = vec![4, 0, 0, 0];
                v.extend((0..60).map(|_| rnd()));
                v
            })
            .collect();
        let r = analyse(&fixed, 32, 100, &[]);
        let w = r.worst.unwrap_or_else(|| panic!("no worst"));
        assert!(w.share > 0.99 && w.offset < 4, "{w:?}");
        let random: Vec<Vec<u8>> = (0..5000)
            .map(|_| (0..64).map(|_| rnd()).collect())
            .collect();
        let r = analyse(&random, 64, 100, &[]);
        assert!(r.worst.map_or(0.0, |w| w.share) < 0.02);
        assert_eq!(r.sizes.get(&64), Some(&5000));
    }

    #[test]
    fn needles_are_counted_per_datagram() {
        let key = vec![1, 2, 3, 4, 5];
        let d = vec![vec![0, 1, 2, 3, 4, 5, 9], vec![9, 9], vec![1, 2, 3, 4, 5]];
        let r = analyse(
            &d,
            4,
            1,
            &[Needle {
                name: "key".into(),
                bytes: key,
            }],
        );
        assert_eq!(r.found.get("key"), Some(&2));
        assert_eq!(parse_hex("0a:0B ff"), Some(vec![10, 11, 255]));
        assert_eq!(parse_hex("0g"), None);
    }
}
