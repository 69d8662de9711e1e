//! The relay's TCP listener: the fallback for nodes whose network blocks UDP. The engine
//! does not know about it. Each connection gets a task that reads frames
//! ([`veil_proto::stream`]) and hands every datagram to the relay loop as if it came from
//! the connection's peer address; the loop writes a transmit on the connection whose peer
//! address is its destination ([`TcpSide::route`]). So the relay writes to a connection only
//! in answer to datagrams that authenticated, never first, and nothing to garbage.
//!
//! Bounds: at most [`MAX_CONNS`] connections (when full, the oldest that was never answered
//! makes room, else the new one is closed); a connection that was never answered is closed
//! after [`UNANSWERED_TIMEOUT`], one that carried nothing either way for the relay's client
//! timeout too; at most [`OUT_QUEUE_BYTES`] queued for writing per connection (beyond, a
//! datagram is dropped, as UDP would); the receive buffer of the frame decoder is bounded by
//! one frame. Malformed framing closes the connection without a word and is counted.

use crate::socket::{self, SocketFactory};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use veil_proto::stream::{Decoder, Encoder};

/// Most connections at once.
pub const MAX_CONNS: usize = 4096;
/// A connection the relay never answered is closed this long after it opened.
pub const UNANSWERED_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes queued for writing per connection before datagrams to it are dropped.
pub const OUT_QUEUE_BYTES: usize = 256 * 1024;
/// Datagrams read from all connections and not yet taken by the relay loop.
const EVENT_QUEUE: usize = 1024;
/// How often connections are checked against their timeouts.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Why a connection ended, as its task reports it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum EndReason {
    /// The peer closed or reset it, or a read or write failed.
    Closed,
    /// Its framing was malformed.
    Malformed,
}

/// What connection tasks tell the relay loop.
#[derive(Debug)]
pub(crate) enum ConnEvent {
    Datagram(SocketAddr, u64, Vec<u8>),
    Ended(SocketAddr, u64, EndReason),
}

struct Conn {
    id: u64,
    tx: mpsc::UnboundedSender<Vec<u8>>,
    queued: Arc<AtomicUsize>,
    opened: Instant,
    last_active: Instant,
    answered: bool,
    task: JoinHandle<()>,
}

/// Counters of the TCP side, reported as `io_tcp_*`.
#[derive(Debug, Default)]
struct TcpCounters {
    accepted: u64,
    refused_full: u64,
    evicted: u64,
    malformed: u64,
    closed_unanswered: u64,
    closed_idle: u64,
    closed_by_peer: u64,
    dropped_queue_full: u64,
    datagrams_in: u64,
    datagrams_out: u64,
}

/// The listener and its live connections.
pub(crate) struct TcpSide {
    listener: TcpListener,
    local: SocketAddr,
    relay_public: [u8; 32],
    conns: HashMap<SocketAddr, Conn>,
    next_id: u64,
    events_tx: mpsc::Sender<ConnEvent>,
    events_rx: mpsc::Receiver<ConnEvent>,
    idle_timeout: Duration,
    counters: TcpCounters,
}

impl TcpSide {
    /// Listens on `addr` through `factory`. Must be called inside a tokio runtime.
    pub(crate) fn bind(
        addr: SocketAddr,
        factory: &dyn SocketFactory,
        relay_public: [u8; 32],
        idle_timeout: Duration,
    ) -> io::Result<TcpSide> {
        let std_listener = factory.listen_tcp(addr)?;
        std_listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(std_listener)?;
        let local = listener.local_addr()?;
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        Ok(TcpSide {
            listener,
            local,
            relay_public,
            conns: HashMap::new(),
            next_id: 0,
            events_tx,
            events_rx,
            idle_timeout,
            counters: TcpCounters::default(),
        })
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Waits for a new connection (accepted here) or an event of a connection's task.
    pub(crate) async fn next_event(&mut self) -> Option<ConnEvent> {
        tokio::select! {
            r = self.listener.accept() => {
                match r {
                    Ok((stream, peer)) => self.accept(stream, socket::normalize(peer)),
                    Err(e) => tracing::debug!(error = %e, "TCP accept failed"),
                }
                None
            }
            ev = self.events_rx.recv() => ev,
        }
    }

    fn accept(&mut self, stream: TcpStream, peer: SocketAddr) {
        let now = Instant::now();
        if self.conns.len() >= MAX_CONNS {
            // Room for the new one only at the expense of one that never got an answer.
            let oldest = self
                .conns
                .iter()
                .filter(|(_, c)| !c.answered)
                .min_by_key(|(_, c)| c.opened)
                .map(|(a, _)| *a);
            match oldest {
                Some(a) => {
                    self.close(a);
                    self.counters.evicted += 1;
                }
                None => {
                    self.counters.refused_full += 1;
                    return;
                }
            }
        }
        if let Some(old) = self.conns.get(&peer) {
            // The same 4-tuple again: the old connection is gone whatever its task thinks.
            old.task.abort();
        }
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY");
        }
        self.counters.accepted += 1;
        self.next_id += 1;
        let id = self.next_id;
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(serve(
            stream,
            peer,
            id,
            self.relay_public,
            rx,
            Arc::clone(&queued),
            self.events_tx.clone(),
        ));
        self.conns.insert(
            peer,
            Conn {
                id,
                tx,
                queued,
                opened: now,
                last_active: now,
                answered: false,
                task,
            },
        );
    }

    /// A datagram from connection `id` at `peer`: whether it is still live (feed the engine
    /// only then).
    pub(crate) fn on_datagram(&mut self, peer: SocketAddr, id: u64) -> bool {
        match self.conns.get_mut(&peer) {
            Some(c) if c.id == id => {
                c.last_active = Instant::now();
                self.counters.datagrams_in += 1;
                true
            }
            _ => false,
        }
    }

    /// A connection's task ended.
    pub(crate) fn on_ended(&mut self, peer: SocketAddr, id: u64, reason: EndReason) {
        if self.conns.get(&peer).is_some_and(|c| c.id == id) {
            self.conns.remove(&peer);
            match reason {
                EndReason::Closed => self.counters.closed_by_peer += 1,
                EndReason::Malformed => self.counters.malformed += 1,
            }
        }
    }

    /// Writes `data` on the connection whose peer is `dst`; false if there is none (the
    /// caller sends it over UDP).
    pub(crate) fn route(&mut self, dst: SocketAddr, data: &[u8]) -> bool {
        let Some(c) = self.conns.get_mut(&dst) else {
            return false;
        };
        c.answered = true;
        c.last_active = Instant::now();
        if c.queued.load(Ordering::Relaxed) + data.len() > OUT_QUEUE_BYTES {
            self.counters.dropped_queue_full += 1;
            return true;
        }
        c.queued.fetch_add(data.len(), Ordering::Relaxed);
        if c.tx.send(data.to_vec()).is_err() {
            // The task is ending; its Ended event removes the entry.
            self.counters.dropped_queue_full += 1;
        } else {
            self.counters.datagrams_out += 1;
        }
        true
    }

    /// Closes connections past their timeouts.
    pub(crate) fn sweep(&mut self) {
        let now = Instant::now();
        let mut unanswered = Vec::new();
        let mut idle = Vec::new();
        for (a, c) in &self.conns {
            if !c.answered && now.saturating_duration_since(c.opened) >= UNANSWERED_TIMEOUT {
                unanswered.push(*a);
            } else if now.saturating_duration_since(c.last_active) >= self.idle_timeout {
                idle.push(*a);
            }
        }
        self.counters.closed_unanswered += unanswered.len() as u64;
        self.counters.closed_idle += idle.len() as u64;
        for a in unanswered.into_iter().chain(idle) {
            self.close(a);
        }
    }

    fn close(&mut self, peer: SocketAddr) {
        if let Some(c) = self.conns.remove(&peer) {
            // Dropping the task's stream closes the connection.
            c.task.abort();
        }
    }

    pub(crate) fn counters(&self) -> [(&'static str, u64); 11] {
        let c = &self.counters;
        [
            ("io_tcp_connections", self.conns.len() as u64),
            ("io_tcp_accepted", c.accepted),
            ("io_tcp_refused_full", c.refused_full),
            ("io_tcp_evicted", c.evicted),
            ("io_tcp_malformed", c.malformed),
            ("io_tcp_closed_unanswered", c.closed_unanswered),
            ("io_tcp_closed_idle", c.closed_idle),
            ("io_tcp_closed_by_peer", c.closed_by_peer),
            ("io_tcp_dropped_queue_full", c.dropped_queue_full),
            ("io_tcp_datagrams_in", c.datagrams_in),
            ("io_tcp_datagrams_out", c.datagrams_out),
        ]
    }
}

impl Drop for TcpSide {
    fn drop(&mut self) {
        for c in self.conns.values() {
            c.task.abort();
        }
    }
}

/// One connection: reads frames and passes their datagrams on; writes what the loop routes
/// to it. Ends (and reports why) on EOF, an error or malformed framing; aborted by the loop
/// on its timeouts.
async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    id: u64,
    relay_public: [u8; 32],
    mut out: mpsc::UnboundedReceiver<Vec<u8>>,
    queued: Arc<AtomicUsize>,
    events: mpsc::Sender<ConnEvent>,
) {
    let (mut rd, mut wr) = stream.into_split();
    let mut dec = Decoder::relay(&relay_public);
    let mut enc: Option<Encoder> = None;
    let mut wbuf: Vec<u8> = Vec::new();
    let reason = 'conn: loop {
        tokio::select! {
            r = rd.read(dec.spare()) => {
                let n = match r {
                    Ok(0) | Err(_) => break 'conn EndReason::Closed,
                    Ok(n) => n,
                };
                dec.advance(n);
                loop {
                    match dec.next() {
                        Ok(Some(dg)) => {
                            let ev = ConnEvent::Datagram(peer, id, dg.to_vec());
                            if events.send(ev).await.is_err() {
                                break 'conn EndReason::Closed;
                            }
                        }
                        Ok(None) => break,
                        Err(_) => break 'conn EndReason::Malformed,
                    }
                }
            }
            m = out.recv() => {
                let Some(first) = m else { break 'conn EndReason::Closed };
                // The loop writes only in answer to authenticated datagrams, so the nonce
                // is known; without it, nothing can be written.
                if enc.is_none() {
                    enc = dec.reply_encoder();
                }
                let Some(e) = enc.as_mut() else {
                    queued.fetch_sub(first.len(), Ordering::Relaxed);
                    continue;
                };
                wbuf.clear();
                let mut next = Some(first);
                while let Some(dg) = next.take() {
                    queued.fetch_sub(dg.len(), Ordering::Relaxed);
                    // A datagram the framing cannot carry is dropped, like an oversized
                    // UDP datagram.
                    let _ = e.encode(&dg, &mut wbuf);
                    if wbuf.len() < 64 * 1024 {
                        next = out.try_recv().ok();
                    }
                }
                if wr.write_all(&wbuf).await.is_err() {
                    break 'conn EndReason::Closed;
                }
            }
        }
    };
    let _ = events.send(ConnEvent::Ended(peer, id, reason)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use veil_proto::stream::{self, NONCE_LEN};

    const PK: [u8; 32] = [9u8; 32];

    /// The next event of a connection (accepts happen on the way).
    async fn event(side: &mut TcpSide) -> ConnEvent {
        loop {
            if let Some(ev) = side.next_event().await {
                return ev;
            }
        }
    }

    #[tokio::test]
    async fn answers_only_through_route_and_closes_on_malformed_framing() -> io::Result<()> {
        let mut side = TcpSide::bind(
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            &crate::DefaultSocketFactory,
            PK,
            Duration::from_secs(90),
        )?;
        let mut client = TcpStream::connect(side.local_addr()).await?;
        let (mut enc, mut dec) = stream::client(&PK, [3u8; NONCE_LEN]);
        let mut wire = Vec::new();
        enc.encode(&[0x55; 64], &mut wire)
            .map_err(io::Error::other)?;
        client.write_all(&wire).await?;
        let ConnEvent::Datagram(peer, id, dg) = event(&mut side).await else {
            return Err(io::Error::other("expected a datagram"));
        };
        assert_eq!(peer, client.local_addr()?);
        assert_eq!(dg, vec![0x55; 64]);
        assert!(side.on_datagram(peer, id));
        // Nothing was written yet; an answer routed to the peer arrives framed.
        assert!(!side.route(SocketAddr::from((Ipv4Addr::LOCALHOST, 1)), &[0; 64]));
        assert!(side.route(peer, &[0x66; 80]));
        let mut back = vec![0u8; 82];
        client.read_exact(&mut back).await?;
        dec.feed(&back);
        assert_eq!(
            dec.next().ok().flatten().map(|d| d.to_vec()),
            Some(vec![0x66; 80])
        );
        // A length the framing refuses: the connection ends, counted, without a byte.
        // The second header of a stream with the same nonce reveals the keystream bytes
        // it was masked with (length 64): sent as they are, they decode to length 0.
        let mut w = Vec::new();
        let mut twin = stream::client(&PK, [3u8; NONCE_LEN]).0;
        twin.encode(&[0u8; 64], &mut w).map_err(io::Error::other)?;
        twin.encode(&[0u8; 64], &mut w).map_err(io::Error::other)?;
        let at = NONCE_LEN + 2 + 64;
        let mut bad = vec![w[at], w[at + 1] ^ 64];
        bad.extend_from_slice(&[0u8; 10]);
        client.write_all(&bad).await?;
        let ev = event(&mut side).await;
        let ConnEvent::Ended(p, i, reason) = ev else {
            return Err(io::Error::other("expected the end"));
        };
        assert!(matches!(reason, EndReason::Malformed));
        side.on_ended(p, i, reason);
        assert_eq!(side.counters.malformed, 1);
        assert!(side.conns.is_empty());
        let mut rest = Vec::new();
        let _ = client.read_to_end(&mut rest).await;
        assert!(rest.is_empty(), "the relay wrote to a malformed stream");
        Ok(())
    }
}
