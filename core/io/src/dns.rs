//! The node's DNS listener: UDP port 53 on its overlay IPv4 (Linux and other systems where
//! `veil up` made the TUN). Questions go to the engine (`Node::handle_dns_query`) with a
//! token, answers come back by token. Where systemd-resolved runs, the TUN is made the DNS
//! server for the network's domain (`resolvectl dns` / `resolvectl domain ~DOMAIN`), so
//! `NAME.veil` resolves for every program; elsewhere that step is the operator's
//! (docs/dns.md; on Windows a warning says so, docs/windows.md). Phones answer inside the TUN
//! instead (`NodeConfig::dns_intercept`).

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
#[cfg(unix)]
use std::path::Path;
use tokio::net::UdpSocket;

/// Questions awaiting an answer at most (the oldest asker is forgotten first).
const MAX_PENDING: usize = 512;
/// Largest DNS message read (EDNS clients send at most this over UDP).
const MAX_QUERY: usize = 4096;

/// The listener and who asked what.
pub struct DnsListener {
    sock: UdpSocket,
    addr: Ipv4Addr,
    pending: HashMap<u64, SocketAddr>,
    order: VecDeque<u64>,
    next: u64,
    buf: Box<[u8]>,
}

impl DnsListener {
    /// Binds `addr:53` (the address must be on an interface already). Needs root or
    /// CAP_NET_BIND_SERVICE. Must be called inside a tokio runtime.
    pub fn bind(addr: Ipv4Addr) -> io::Result<DnsListener> {
        let std = std::net::UdpSocket::bind((addr, 53))?;
        std.set_nonblocking(true)?;
        Ok(DnsListener {
            sock: UdpSocket::from_std(std)?,
            addr,
            pending: HashMap::new(),
            order: VecDeque::new(),
            next: 0,
            buf: vec![0u8; MAX_QUERY].into_boxed_slice(),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// Waits until a question may be read.
    pub async fn readable(&self) -> io::Result<()> {
        self.sock.readable().await
    }

    /// The next question, with the token its answer must carry; None when there is none.
    pub fn recv(&mut self) -> Option<(u64, &[u8])> {
        loop {
            let (n, from) = match self.sock.try_recv_from(&mut self.buf) {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) => {
                    tracing::debug!(error = %e, "DNS receive failed");
                    continue;
                }
            };
            if self.order.len() >= MAX_PENDING {
                if let Some(old) = self.order.pop_front() {
                    self.pending.remove(&old);
                }
            }
            self.next = self.next.wrapping_add(1) & (u64::MAX >> 1);
            self.pending.insert(self.next, from);
            self.order.push_back(self.next);
            return Some((self.next, &self.buf[..n]));
        }
    }

    /// Sends the answer for `token` to whoever asked.
    pub fn answer(&mut self, token: u64, message: &[u8]) {
        let Some(to) = self.pending.remove(&token) else {
            return;
        };
        self.order.retain(|t| *t != token);
        if let Err(e) = self.sock.try_send_to(message, to) {
            tracing::debug!(error = %e, "DNS answer not sent");
        }
    }
}

/// Where systemd-resolved runs: routes `~domain` to `server` on `tun`. Returns what it did,
/// for the log; errors are reported, never fatal (DNS is a convenience, the tunnel works
/// without it).
#[cfg(unix)]
pub fn configure_resolved(tun: &str, server: Ipv4Addr, domain: &str) -> Option<String> {
    if !Path::new("/run/systemd/resolve/io.systemd.Resolve").exists() {
        return None;
    }
    let run = |args: &[&str]| {
        std::process::Command::new("resolvectl")
            .args(args)
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    let server = server.to_string();
    let route = format!("~{domain}");
    if run(&["dns", tun, &server]) && run(&["domain", tun, &route]) {
        Some(format!(
            "systemd-resolved sends *.{domain} to {server} on {tun}"
        ))
    } else {
        tracing::warn!(
            "could not configure systemd-resolved (resolvectl dns/domain {tun}); *.{domain} resolves only through {server} directly"
        );
        None
    }
}

/// Windows: nothing sends `*.domain` to the node yet (no NRPT rule is made); says so, and how
/// to ask the node directly (the address only at debug, as everywhere in the log).
#[cfg(windows)]
pub fn configure_resolved(_tun: &str, server: Ipv4Addr, domain: &str) -> Option<String> {
    tracing::warn!(
        "Windows does not send *.{domain} to the node yet: ask the node's overlay IPv4 directly (nslookup NAME.{domain} ADDRESS, the address `veil status` shows); see docs/windows.md"
    );
    tracing::debug!(%server, "DNS server for *.{domain}");
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn questions_and_answers_travel_by_token() -> io::Result<()> {
        // Port 53 needs root; run the same logic on an ephemeral loopback port.
        let std = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        std.set_nonblocking(true)?;
        let port = std.local_addr()?.port();
        let mut l = DnsListener {
            sock: UdpSocket::from_std(std)?,
            addr: Ipv4Addr::LOCALHOST,
            pending: HashMap::new(),
            order: VecDeque::new(),
            next: 0,
            buf: vec![0u8; MAX_QUERY].into_boxed_slice(),
        };
        let client = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        client
            .send_to(b"question", (Ipv4Addr::LOCALHOST, port))
            .await?;
        l.readable().await?;
        let (token, q) = l.recv().expect("a question");
        assert_eq!(q, b"question");
        assert!(l.recv().is_none());
        l.answer(token, b"answer");
        l.answer(token, b"twice");
        let mut buf = [0u8; 64];
        let (n, _) = client.recv_from(&mut buf).await?;
        assert_eq!(&buf[..n], b"answer");
        assert!(
            client.try_recv_from(&mut buf).is_err(),
            "one answer per question"
        );
        Ok(())
    }
}
