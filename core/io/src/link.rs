//! A node's TCP stream to its relay, for networks that block UDP, and the choice between it
//! and UDP ([`RelayTransport`], [`Chooser`]). The engine does not know about it: the node
//! loop sends every transmit whose destination is the relay through the stream while it is
//! in use, and feeds what the stream delivers to the engine as coming from the relay's
//! address. Peers' direct traffic stays on UDP.
//!
//! The stream is framed by [`veil_proto::stream`] (a random nonce, then masked lengths:
//! no fixed byte). Writes never block the loop: frames go into a bounded buffer written as
//! the socket accepts them; a datagram that does not fit, or that comes while the stream is
//! not up, is dropped like a lost UDP datagram (the engine retransmits what matters). A
//! stream that ends is connected again with a backoff.

use crate::socket::SocketFactory;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use veil_proto::stream::{self, Decoder, Encoder, NONCE_LEN};

/// How a node reaches its relay (config key `relay_transport`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RelayTransport {
    /// UDP first; TCP when the relay does not answer over UDP within [`AUTO_FALLBACK`].
    #[default]
    Auto,
    /// UDP only.
    Udp,
    /// TCP only (the relay must have a TCP port).
    Tcp,
}

impl RelayTransport {
    /// The config and flag spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RelayTransport::Auto => "auto",
            RelayTransport::Udp => "udp",
            RelayTransport::Tcp => "tcp",
        }
    }
}

/// In `auto`, how long the relay may leave UDP unanswered (at start, or after the relay link
/// was lost) before the node tries TCP.
pub const AUTO_FALLBACK: Duration = Duration::from_secs(3);
/// In `auto`, how long TCP may fail to bring the relay link up before UDP is tried again.
pub const AUTO_TCP_WINDOW: Duration = Duration::from_secs(10);
/// A connection attempt that takes longer is abandoned.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// First wait before connecting again after the stream ended; doubled per failure.
pub const RECONNECT_MIN: Duration = Duration::from_millis(500);
/// Longest wait before connecting again.
pub const RECONNECT_MAX: Duration = Duration::from_secs(16);
/// Bytes waiting to be written before further datagrams are dropped.
pub const OUT_BUF_MAX: usize = 256 * 1024;

type Connecting = Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send>>;

enum State {
    /// Waiting until the next attempt.
    Waiting(Instant),
    Connecting(Connecting),
    Up(Box<Up>),
}

struct Up {
    stream: TcpStream,
    enc: Encoder,
    dec: Decoder,
}

/// What the link needs from the loop after a wake-up.
pub(crate) enum Ready {
    /// Time to connect (again).
    Retry,
    /// The connection attempt ended.
    Connected(io::Result<TcpStream>),
    /// The stream has bytes to read.
    Readable,
    /// The stream accepts the bytes that wait.
    Writable,
    /// Waiting on the stream failed.
    Failed(io::Error),
}

/// What one read did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Read {
    /// Bytes arrived.
    Data,
    /// Nothing more for now.
    Blocked,
    /// The relay closed the stream.
    Ended,
}

/// Counters of the link, reported as `io_tcp_*`.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct LinkCounters {
    pub connects: u64,
    pub connect_failures: u64,
    pub stream_ends: u64,
    pub malformed: u64,
    pub dropped: u64,
    pub datagrams_out: u64,
    pub datagrams_in: u64,
}

impl LinkCounters {
    /// Adds `other` to these.
    pub(crate) fn add(&mut self, other: &LinkCounters) {
        self.connects += other.connects;
        self.connect_failures += other.connect_failures;
        self.stream_ends += other.stream_ends;
        self.malformed += other.malformed;
        self.dropped += other.dropped;
        self.datagrams_out += other.datagrams_out;
        self.datagrams_in += other.datagrams_in;
    }
}

/// The stream to one relay.
pub(crate) struct TcpLink {
    /// The relay's address as the engine knows it (its UDP address).
    relay: SocketAddr,
    relay_public: [u8; 32],
    /// Where its TCP listener is.
    target: SocketAddr,
    state: State,
    out: Vec<u8>,
    out_pos: usize,
    backoff: Duration,
    pub(crate) counters: LinkCounters,
}

impl TcpLink {
    /// A link to the relay known to the engine as `relay`, whose listener is at `target`;
    /// it connects at once.
    pub(crate) fn new(
        relay: SocketAddr,
        relay_public: [u8; 32],
        target: SocketAddr,
        counters: LinkCounters,
    ) -> TcpLink {
        TcpLink {
            relay,
            relay_public,
            target,
            state: State::Waiting(Instant::now()),
            out: Vec::new(),
            out_pos: 0,
            backoff: RECONNECT_MIN,
            counters,
        }
    }

    /// The relay this link carries.
    pub(crate) fn relay(&self) -> SocketAddr {
        self.relay
    }

    #[cfg(test)]
    pub(crate) fn is_up(&self) -> bool {
        matches!(self.state, State::Up(_))
    }

    /// Waits for whatever the link waits on.
    pub(crate) async fn ready(&mut self) -> Ready {
        let want_write = self.out_pos < self.out.len();
        match &mut self.state {
            State::Waiting(at) => {
                tokio::time::sleep_until(*at).await;
                Ready::Retry
            }
            State::Connecting(fut) => Ready::Connected(fut.await),
            State::Up(up) => {
                let stream = &up.stream;
                tokio::select! {
                    r = stream.readable() => r.map_or_else(Ready::Failed, |()| Ready::Readable),
                    r = stream.writable(), if want_write => {
                        r.map_or_else(Ready::Failed, |()| Ready::Writable)
                    }
                }
            }
        }
    }

    /// Starts a connection attempt through `factory`.
    pub(crate) fn connect(&mut self, factory: &dyn SocketFactory) {
        let target = self.target;
        let socket = factory.tcp_socket(target).map(TcpSocket::from_std_stream);
        let fut: Connecting = Box::pin(async move {
            let socket = socket?;
            match tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(target)).await {
                Ok(r) => r,
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "TCP connect timed out",
                )),
            }
        });
        self.state = State::Connecting(fut);
    }

    /// The attempt ended: up with a fresh nonce, or waiting for the next attempt. Returns
    /// true when the stream is up.
    pub(crate) fn on_connected(&mut self, r: io::Result<TcpStream>) -> bool {
        let stream = match r {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "TCP connection to the relay failed");
                self.counters.connect_failures += 1;
                self.wait();
                return false;
            }
        };
        let mut nonce = [0u8; NONCE_LEN];
        if let Err(e) = getrandom::getrandom(&mut nonce) {
            tracing::warn!(error = %e, "no randomness for the TCP stream");
            self.wait();
            return false;
        }
        let (enc, dec) = stream::client(&self.relay_public, nonce);
        self.out.clear();
        self.out_pos = 0;
        self.counters.connects += 1;
        self.state = State::Up(Box::new(Up { stream, enc, dec }));
        true
    }

    /// The stream ended (or failed): connect again after the backoff.
    pub(crate) fn on_ended(&mut self, malformed: bool) {
        if malformed {
            self.counters.malformed += 1;
        }
        self.counters.stream_ends += 1;
        self.wait();
    }

    fn wait(&mut self) {
        self.state = State::Waiting(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(RECONNECT_MAX);
        self.out.clear();
        self.out_pos = 0;
    }

    /// Queues one datagram for the relay and writes what the socket takes now. Dropped
    /// (counted) while the stream is not up or its buffer is full.
    pub(crate) fn send(&mut self, data: &[u8]) {
        let State::Up(up) = &mut self.state else {
            self.counters.dropped += 1;
            return;
        };
        let enc = &mut up.enc;
        if self.out.len() - self.out_pos + enc.framed_len(data.len()) > OUT_BUF_MAX {
            self.counters.dropped += 1;
            return;
        }
        if self.out_pos > 0 && self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        }
        if enc.encode(data, &mut self.out).is_err() {
            self.counters.dropped += 1;
            return;
        }
        self.counters.datagrams_out += 1;
        if let Err(e) = self.flush() {
            tracing::debug!(error = %e, "TCP stream to the relay failed");
            self.on_ended(false);
        }
    }

    /// Writes buffered bytes until the socket would block.
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        let State::Up(up) = &mut self.state else {
            return Ok(());
        };
        let stream = &up.stream;
        while self.out_pos < self.out.len() {
            match stream.try_write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        } else if self.out_pos > OUT_BUF_MAX / 2 {
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
        Ok(())
    }

    /// Reads what the socket has into the decoder (one read; take the datagrams with
    /// [`TcpLink::next_datagram`] before the next).
    pub(crate) fn read(&mut self) -> io::Result<Read> {
        let State::Up(up) = &mut self.state else {
            return Ok(Read::Blocked);
        };
        let Up { stream, dec, .. } = &mut **up;
        let spare = dec.spare();
        if spare.is_empty() {
            return Ok(Read::Ended);
        }
        match stream.try_read(spare) {
            Ok(0) => Ok(Read::Ended),
            Ok(n) => {
                dec.advance(n);
                Ok(Read::Data)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Read::Blocked),
            Err(e) => Err(e),
        }
    }

    /// The next whole datagram from the relay, copied to the start of `buf`; Err: the
    /// framing is malformed (end the stream).
    pub(crate) fn next_datagram(&mut self, buf: &mut [u8]) -> Result<Option<usize>, ()> {
        let State::Up(up) = &mut self.state else {
            return Ok(None);
        };
        let dec = &mut up.dec;
        match dec.next() {
            Ok(Some(dg)) => {
                let Some(dst) = buf.get_mut(..dg.len()) else {
                    return Ok(None);
                };
                dst.copy_from_slice(dg);
                self.counters.datagrams_in += 1;
                // The relay writes only in answer to what authenticated: it is there.
                self.backoff = RECONNECT_MIN;
                Ok(Some(dg.len()))
            }
            Ok(None) => Ok(None),
            Err(_) => Err(()),
        }
    }
}

/// When auto mode uses which transport: UDP until the relay link has been down for
/// [`AUTO_FALLBACK`] on UDP, then TCP until it has been down for [`AUTO_TCP_WINDOW`] on TCP,
/// and so on; a link that is up stays where it is.
#[derive(Debug)]
pub(crate) struct Chooser {
    mode: RelayTransport,
    tcp: bool,
    /// Since when the relay link is down on the current transport (None while up).
    down_since: Option<Instant>,
}

impl Chooser {
    pub(crate) fn new(mode: RelayTransport, now: Instant) -> Chooser {
        Chooser {
            mode,
            tcp: mode == RelayTransport::Tcp,
            down_since: Some(now),
        }
    }

    /// Whether the relay's datagrams go over TCP now.
    pub(crate) fn tcp(&self) -> bool {
        self.tcp
    }

    pub(crate) fn relay_up(&mut self) {
        self.down_since = None;
    }

    pub(crate) fn relay_down(&mut self, now: Instant) {
        self.down_since.get_or_insert(now);
    }

    /// In auto mode, switches transport when the current one had its chance; returns true
    /// when it switched.
    pub(crate) fn poll(&mut self, now: Instant) -> bool {
        if self.mode != RelayTransport::Auto {
            return false;
        }
        let Some(since) = self.down_since else {
            return false;
        };
        let window = if self.tcp {
            AUTO_TCP_WINDOW
        } else {
            AUTO_FALLBACK
        };
        if now.saturating_duration_since(since) < window {
            return false;
        }
        self.tcp = !self.tcp;
        self.down_since = Some(now);
        true
    }

    /// When [`Chooser::poll`] next has something to decide.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        if self.mode != RelayTransport::Auto {
            return None;
        }
        let window = if self.tcp {
            AUTO_TCP_WINDOW
        } else {
            AUTO_FALLBACK
        };
        self.down_since.map(|s| s + window)
    }
}

/// A relay's measured round trip (None: not timed).
pub type RelayTime = Option<std::time::Duration>;

/// Orders a token's relays by round trip, nearest first: a TCP connection to each relay's TCP
/// listener (the kernel's SYN/SYN-ACK, nothing the relay has to answer) is timed, all at
/// once, for at most `timeout`. The sockets come from `factory`, as the node's own do (a
/// phone's are protected from its VPN, the CLI's carry the kill switch's mark). Relays that
/// could not be timed (no TCP port, filtered, slower than `timeout`) follow in token order.
/// Logs the order with the times and returns both.
pub fn rank_relays(
    relays: Vec<(SocketAddr, [u8; 32])>,
    tcp: &[(SocketAddr, SocketAddr)],
    timeout: std::time::Duration,
    factory: &dyn crate::SocketFactory,
) -> (Vec<(SocketAddr, [u8; 32])>, Vec<RelayTime>) {
    let timed: Vec<RelayTime> = std::thread::scope(|s| {
        let handles: Vec<_> = relays
            .iter()
            .map(|(udp, _)| {
                let target = tcp.iter().find(|(r, _)| r == udp).map(|(_, t)| *t);
                s.spawn(move || {
                    let t = target?;
                    let socket = socket2::Socket::from(factory.tcp_socket(t).ok()?);
                    let start = std::time::Instant::now();
                    socket.connect_timeout(&t.into(), timeout).ok()?;
                    Some(start.elapsed())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().ok().flatten())
            .collect()
    });
    let mut order: Vec<usize> = (0..relays.len()).collect();
    // Stable: equal keys keep token order; untimed ones go last.
    order.sort_by_key(|&i| timed[i].map_or((1, std::time::Duration::ZERO), |d| (0, d)));
    let ranked: Vec<_> = order.iter().map(|&i| relays[i]).collect();
    let times: Vec<RelayTime> = order.iter().map(|&i| timed[i]).collect();
    let shown: Vec<String> = ranked
        .iter()
        .zip(&times)
        .map(|((a, _), t)| match t {
            Some(t) => format!("{a} ({} µs)", t.as_micros()),
            None => format!("{a} (not timed)"),
        })
        .collect();
    tracing::info!(relays = %shown.join(", "), "relays by round trip, nearest first");
    (ranked, times)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::unwrap_used)]
    fn relays_are_ranked_with_the_factorys_sockets() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        struct Counting(AtomicUsize);
        impl crate::SocketFactory for Counting {
            fn bind_udp(&self, addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
                std::net::UdpSocket::bind(addr)
            }
            fn tcp_socket(&self, peer: SocketAddr) -> std::io::Result<std::net::TcpStream> {
                self.0.fetch_add(1, Ordering::Relaxed);
                crate::socket::tcp_socket(peer)
            }
        }
        let listening = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let udp = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        // In token order: a relay whose TCP port refuses, one that listens, one without.
        let relays = vec![
            (udp(7001), [1; 32]),
            (udp(7002), [2; 32]),
            (udp(7003), [3; 32]),
        ];
        let tcp = [
            (udp(7001), closed),
            (udp(7002), listening.local_addr().unwrap()),
        ];
        let f = Counting(AtomicUsize::new(0));
        let (ranked, times) = rank_relays(relays, &tcp, std::time::Duration::from_millis(500), &f);
        let keys: Vec<u8> = ranked.iter().map(|(_, k)| k[0]).collect();
        assert_eq!(
            keys,
            vec![2, 1, 3],
            "the timed one first, the others in token order"
        );
        assert!(times[0].is_some() && times[1].is_none() && times[2].is_none());
        assert_eq!(
            f.0.load(Ordering::Relaxed),
            2,
            "both sockets came from the factory"
        );
    }

    #[test]
    fn auto_falls_back_to_tcp_and_back() {
        let t0 = Instant::now();
        let mut c = Chooser::new(RelayTransport::Auto, t0);
        assert!(!c.tcp());
        assert!(!c.poll(t0 + Duration::from_secs(2)));
        assert_eq!(c.deadline(), Some(t0 + AUTO_FALLBACK));
        assert!(c.poll(t0 + AUTO_FALLBACK));
        assert!(c.tcp());
        c.relay_up();
        assert_eq!(c.deadline(), None);
        assert!(!c.poll(t0 + Duration::from_secs(60)));
        // Lost on TCP: TCP gets its window again, then UDP.
        let t1 = t0 + Duration::from_secs(100);
        c.relay_down(t1);
        assert!(!c.poll(t1 + AUTO_FALLBACK));
        assert!(c.poll(t1 + AUTO_TCP_WINDOW));
        assert!(!c.tcp());
        // Fixed modes never switch.
        for mode in [RelayTransport::Udp, RelayTransport::Tcp] {
            let mut c = Chooser::new(mode, t0);
            assert_eq!(c.tcp(), mode == RelayTransport::Tcp);
            assert!(!c.poll(t0 + Duration::from_secs(600)));
            assert_eq!(c.deadline(), None);
        }
    }

    #[tokio::test]
    async fn a_stream_carries_datagrams_both_ways() -> io::Result<()> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let target = listener.local_addr()?;
        let relay_udp: SocketAddr = "127.0.0.1:7000".parse().map_err(io::Error::other)?;
        let pk = [5u8; 32];
        let mut link = TcpLink::new(relay_udp, pk, target, LinkCounters::default());
        assert!(matches!(link.ready().await, Ready::Retry));
        link.connect(&crate::DefaultSocketFactory);
        // The attempt runs only while `ready` is polled: accept alongside.
        let (accepted, ready) = tokio::join!(listener.accept(), link.ready());
        let (mut server, _) = accepted?;
        let Ready::Connected(r) = ready else {
            return Err(io::Error::other("expected a connection"));
        };
        assert!(link.on_connected(r));
        link.send(&[1u8; 100]);
        link.send(&[2u8; 200]);
        let mut got = vec![0u8; NONCE_LEN + 304];
        server.read_exact(&mut got).await?;
        let mut dec = Decoder::relay(&pk);
        dec.feed(&got);
        assert_eq!(
            dec.next().ok().flatten().map(|d| d.to_vec()),
            Some(vec![1u8; 100])
        );
        assert_eq!(
            dec.next().ok().flatten().map(|d| d.to_vec()),
            Some(vec![2u8; 200])
        );
        let mut enc = dec
            .reply_encoder()
            .ok_or_else(|| io::Error::other("no encoder"))?;
        let mut back = Vec::new();
        enc.encode(&[3u8; 64], &mut back)
            .map_err(io::Error::other)?;
        server.write_all(&back).await?;
        let mut buf = vec![0u8; 2048];
        let len = loop {
            if let Ok(Some(n)) = link.next_datagram(&mut buf) {
                break n;
            }
            assert!(matches!(link.ready().await, Ready::Readable));
            assert_ne!(link.read()?, Read::Ended);
        };
        assert_eq!(&buf[..len], &[3u8; 64]);
        // The relay closes: the link waits and connects again.
        drop(server);
        assert!(matches!(link.ready().await, Ready::Readable));
        assert_eq!(link.read()?, Read::Ended);
        link.on_ended(false);
        assert!(!link.is_up());
        link.send(&[4u8; 64]);
        assert_eq!(link.counters.dropped, 1);
        Ok(())
    }
}
