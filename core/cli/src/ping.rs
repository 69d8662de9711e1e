//! `veil ping NAME|ADDRESS`: resolves a member's name through the running node's DNS (its
//! overlay address, port 53), then measures round trips with ICMP echo over the overlay, and
//! says which path (direct or relayed) the peer is on.

use crate::args::PingArgs;
use crate::error::CliError;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use veil_io::{ControlCommand, NodeStatusReport, PeerReport};

/// How long one echo waits for its reply.
const REPLY_WAIT: Duration = Duration::from_secs(2);

pub fn ping(args: &PingArgs) -> Result<(), CliError> {
    let status: NodeStatusReport = crate::query::ask_node(&args.target, ControlCommand::Status)?;
    let (fqdn, addr) = match args.target_name.parse::<IpAddr>() {
        Ok(a) => (None, a),
        Err(_) => {
            let server = status.overlay_ipv4.ok_or(CliError::Usage(
                "the node has no overlay address yet; wait until `veil status` shows one",
            ))?;
            let fqdn = if args.target_name.contains('.') {
                args.target_name.trim_end_matches('.').to_owned()
            } else {
                let domain = match status.dns_domain.as_str() {
                    "" => "veil",
                    d => d,
                };
                format!("{}.{domain}", args.target_name)
            };
            (Some(fqdn.clone()), resolve(server, &fqdn)?)
        }
    };
    let IpAddr::V4(v4) = addr else {
        return Err(CliError::Usage(
            "veil ping measures IPv4 overlay addresses; use ping -6 for IPv6",
        ));
    };
    match &fqdn {
        Some(n) => println!("PING {n} ({v4})"),
        None => println!("PING {v4}"),
    }
    let sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)).map_err(|e| {
        let need = if cfg!(windows) {
            "administrator rights (an elevated prompt)"
        } else {
            "root or CAP_NET_RAW"
        };
        CliError::Ping(format!(
            "cannot open an ICMP socket ({e}); veil ping needs {need}"
        ))
    })?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| CliError::Ping(e.to_string()))?;
    let id = (std::process::id() & 0xffff) as u16;
    let mut rtts = Vec::new();
    for seq in 1..=args.count {
        let sent = Instant::now();
        let packet = echo_request(id, seq);
        sock.send_to(&packet, &SockAddr::from(SocketAddr::new(addr, 0)))
            .map_err(|e| CliError::Ping(format!("sending to {v4}: {e}")))?;
        match wait_reply(&sock, v4, id, seq, sent) {
            Some(rtt) => {
                println!(
                    "reply from {v4}: seq={seq} time={:.2} ms",
                    rtt.as_secs_f64() * 1000.0
                );
                rtts.push(rtt);
            }
            None => println!("no reply from {v4}: seq={seq}"),
        }
        if seq < args.count {
            std::thread::sleep(
                Duration::from_millis(args.interval_ms).saturating_sub(sent.elapsed()),
            );
        }
    }
    let peers: Vec<PeerReport> = crate::query::ask_node(&args.target, ControlCommand::Peers)?;
    let path = peers
        .iter()
        .find(|p| p.overlay_ipv4 == Some(v4))
        .map_or_else(
            || "no session".to_owned(),
            |p| match (&p.relay_reason, &p.endpoint) {
                (Some(r), _) => format!("{} ({r})", p.path),
                (None, Some(e)) if p.path == "direct" => format!("direct to {e}"),
                _ => p.path.clone(),
            },
        );
    let lost = args.count as usize - rtts.len();
    if rtts.is_empty() {
        println!("{} sent, all lost; path: {path}", args.count);
        return Err(CliError::Ping(format!("{v4} did not answer")));
    }
    let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
    let min = rtts.iter().map(ms).fold(f64::MAX, f64::min);
    let max = rtts.iter().map(ms).fold(0.0, f64::max);
    let avg = rtts.iter().map(ms).sum::<f64>() / rtts.len() as f64;
    println!(
        "{} sent, {} lost; rtt min/avg/max {min:.2}/{avg:.2}/{max:.2} ms; path: {path}",
        args.count, lost
    );
    Ok(())
}

/// The IPv4 of `fqdn` from the node's DNS at `server`:53.
fn resolve(server: Ipv4Addr, fqdn: &str) -> Result<IpAddr, CliError> {
    use simple_dns::{rdata::RData, Name, Packet, Question, CLASS, QCLASS, QTYPE, RCODE, TYPE};
    let name =
        Name::new(fqdn).map_err(|_| CliError::Ping(format!("{fqdn:?} is not a DNS name")))?;
    let mut q = Packet::new_query((std::process::id() & 0xffff) as u16);
    q.questions.push(Question::new(
        name,
        QTYPE::TYPE(TYPE::A),
        QCLASS::CLASS(CLASS::IN),
        false,
    ));
    let bytes = q
        .build_bytes_vec()
        .map_err(|e| CliError::Ping(e.to_string()))?;
    let sock =
        UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).map_err(|e| CliError::Ping(e.to_string()))?;
    sock.set_read_timeout(Some(REPLY_WAIT))
        .map_err(|e| CliError::Ping(e.to_string()))?;
    let mut buf = [0u8; 1500];
    for _ in 0..3 {
        sock.send_to(&bytes, (server, 53))
            .map_err(|e| CliError::Ping(format!("asking the node's DNS at {server}: {e}")))?;
        let Ok(n) = sock.recv(&mut buf) else { continue };
        let Ok(a) = Packet::parse(&buf[..n]) else {
            continue;
        };
        if a.id() != q.id() {
            continue;
        }
        return match a.rcode() {
            RCODE::NoError => a
                .answers
                .iter()
                .find_map(|r| match &r.rdata {
                    RData::A(a) => Some(IpAddr::V4(Ipv4Addr::from(a.address))),
                    _ => None,
                })
                .ok_or_else(|| CliError::Ping(format!("{fqdn} has no IPv4 address"))),
            RCODE::NameError => Err(CliError::Ping(format!(
                "no member is named {fqdn} (names are set with `veil up --name`)"
            ))),
            RCODE::Refused => Err(CliError::Ping(format!(
                "{fqdn} is not under the network's domain; give NAME or NAME.<domain>"
            ))),
            rc => Err(CliError::Ping(format!(
                "the node could not resolve {fqdn} ({rc:?}); is its relay connected?"
            ))),
        };
    }
    Err(CliError::Ping(format!(
        "the node's DNS at {server}:53 did not answer; is `veil up` running with its TUN up?"
    )))
}

fn echo_request(id: u16, seq: u16) -> Vec<u8> {
    let payload = *b"veil ping payload 0123456789abcd";
    let header = etherparse::Icmpv4Header::with_checksum(
        etherparse::Icmpv4Type::EchoRequest(etherparse::IcmpEchoHeader { id, seq }),
        &payload,
    );
    let mut out = header.to_bytes().to_vec();
    out.extend_from_slice(&payload);
    out
}

/// Reads until the echo reply for `id`/`seq` from `from` arrives, or `REPLY_WAIT` passes.
fn wait_reply(sock: &Socket, from: Ipv4Addr, id: u16, seq: u16, sent: Instant) -> Option<Duration> {
    let mut buf = [0u8; 2048];
    while sent.elapsed() < REPLY_WAIT {
        let Ok(n) = (&*sock).read(&mut buf) else {
            continue;
        };
        let Ok(p) = etherparse::SlicedPacket::from_ip(&buf[..n]) else {
            continue;
        };
        let (Some(etherparse::NetSlice::Ipv4(ip)), Some(etherparse::TransportSlice::Icmpv4(icmp))) =
            (p.net, p.transport)
        else {
            continue;
        };
        if ip.header().source_addr() != from {
            continue;
        }
        if let etherparse::Icmpv4Type::EchoReply(h) = icmp.icmp_type() {
            if h.id == id && h.seq == seq {
                return Some(sent.elapsed());
            }
        }
    }
    None
}
