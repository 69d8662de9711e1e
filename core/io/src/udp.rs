//! The UDP fast path: a socket with segmentation offload on both sides (`quinn-udp`).
//!
//! - Receive: one `recvmmsg` fills several buffers, and with `UDP_GRO` each buffer holds up
//!   to 64 datagrams of one sender, all of one size but the last (`RecvMeta::stride`).
//! - Send: [`TxRun`] collects sealed datagrams for one destination back to back; with
//!   `UDP_SEGMENT` the kernel cuts the run into datagrams, so up to 64 of them cost one
//!   `sendmsg`. Padding (`padding = "buckets"`) makes the datagrams of a bulk transfer one
//!   size, which is what segmentation needs: every segment but the last has the same length.
//!
//! Where the kernel has neither (other platforms, old kernels), the same code sends and
//! receives one datagram per call.

use crate::parallel::Helpers;
use crate::socket;
use quinn_udp::{RecvMeta, Transmit as UdpTransmit, UdpSocketState};
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use tokio::io::Interest;
use veil_proto::session::SealJob;

/// The socket as the runtime watches it. On Unix, for reading only: a send never waits (a
/// full buffer is a drop), so write readiness would only wake the loop after every send for
/// nothing (tokio's `UdpSocket` asks for both).
#[cfg(unix)]
type Socket = tokio::io::unix::AsyncFd<std::net::UdpSocket>;
#[cfg(not(unix))]
type Socket = tokio::net::UdpSocket;

/// Receive calls per wake-up before the loop looks at its other sources (the TUN, timers):
/// with GRO one call may return 8 × 64 datagrams, so a busy socket would otherwise keep the
/// other direction of a TCP flow (its ACKs) waiting for tens of milliseconds.
pub const MAX_RECV_CALLS: usize = 8;
/// Buffers filled by one receive call.
pub const RX_BUFFERS: usize = 8;
/// Size of one receive buffer: 64 coalesced datagrams of up to 1500 bytes (the kernel's
/// `UDP_GRO_CNT_MAX`); less than that may truncate a coalesced batch.
pub const RX_BUFFER: usize = 64 * 1500;
/// Most bytes in one segmented send (a UDP datagram's payload limit, with room to spare).
pub const MAX_RUN_BYTES: usize = 64_000;
/// Room left after the run for the next datagram to be sealed into: the largest TUN packet
/// plus two layers of overhead and padding.
pub const SLOT: usize = 65_536 + 4_096;

/// The OS error of a send larger than the interface allows with DF set (`EMSGSIZE`;
/// `WSAEMSGSIZE` on Windows, where quinn-udp sets `IP_DONTFRAGMENT`).
#[cfg(not(windows))]
pub const EMSGSIZE: i32 = libc::EMSGSIZE;
/// See the Unix definition.
#[cfg(windows)]
pub const EMSGSIZE: i32 = 10040;

/// Which offloads the fast path uses (config key `offload`): normally all the kernel has;
/// fewer to find out what each is worth, or to work around a driver that mishandles one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Offload {
    /// TUN segmentation offload and UDP GSO/GRO, where the kernel has them.
    #[default]
    All,
    /// UDP GSO/GRO only: the TUN passes one MTU-sized packet per read and write.
    Udp,
    /// Neither: one packet per TUN read or write, one datagram per UDP send (receives are
    /// still batched with `recvmmsg`).
    Off,
}

impl Offload {
    /// The config and flag spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Offload::All => "all",
            Offload::Udp => "udp",
            Offload::Off => "off",
        }
    }

    /// Whether the TUN device is opened with segmentation offload.
    pub fn tun(self) -> bool {
        self == Offload::All
    }

    /// Whether UDP sends are segmented and receives coalesced.
    pub fn udp(self) -> bool {
        self != Offload::Off
    }
}

/// A UDP socket with its offload state.
#[derive(Debug)]
pub struct Udp {
    socket: Socket,
    state: UdpSocketState,
    local: SocketAddr,
    /// Whether sends may be segmented.
    segment: bool,
}

impl Udp {
    /// Takes over a bound, non-blocking socket; must be called inside a tokio runtime.
    /// Without `offload`, sends are one datagram each and the kernel coalesces nothing.
    pub fn new(std_socket: std::net::UdpSocket, offload: bool) -> io::Result<Udp> {
        std_socket.set_nonblocking(true)?;
        let state = UdpSocketState::new((&std_socket).into())?;
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if !offload {
            use std::os::fd::AsRawFd;
            let off: libc::c_int = 0;
            // SAFETY: the fd is a live socket owned by `std_socket`; the option value is a
            // c_int whose size is passed alongside. Failure leaves GRO on, which is harmless.
            unsafe {
                libc::setsockopt(
                    std_socket.as_raw_fd(),
                    libc::SOL_UDP,
                    libc::UDP_GRO,
                    std::ptr::from_ref(&off).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
        let local = std_socket.local_addr()?;
        #[cfg(unix)]
        // SAFETY: the `AsyncFd` owns the socket, and so its descriptor, until it is dropped;
        // nothing else closes or replaces it meanwhile.
        let socket = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(std_socket, Interest::READABLE)
        }
        .map_err(io::Error::from)?;
        #[cfg(not(unix))]
        let socket = tokio::net::UdpSocket::from_std(std_socket)?;
        Ok(Udp {
            socket,
            state,
            local,
            segment: offload,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Waits until the socket may have datagrams (the readiness stays until a receive
    /// finds none).
    pub async fn readable(&self) -> io::Result<()> {
        #[cfg(unix)]
        return self.socket.readable().await.map(drop);
        #[cfg(not(unix))]
        self.socket.readable().await
    }

    /// Waits until the socket may take datagrams. On Unix sends never wait, so this does
    /// not either.
    pub async fn writable(&self) -> io::Result<()> {
        #[cfg(unix)]
        return Ok(());
        #[cfg(not(unix))]
        self.socket.writable().await
    }

    /// How many datagrams one send may carry (1 without `UDP_SEGMENT`).
    pub fn max_segments(&self) -> usize {
        if !self.segment {
            return 1;
        }
        self.state.max_gso_segments()
    }

    /// Sends `contents` to `dst`: one datagram, or with `segment` several of that size (the
    /// last may be shorter). Never waits: a full socket buffer is `WouldBlock`.
    pub fn send(&self, dst: SocketAddr, contents: &[u8], segment: Option<usize>) -> io::Result<()> {
        let transmit = UdpTransmit {
            destination: socket::to_family(dst, self.local),
            ecn: None,
            contents,
            segment_size: segment.filter(|s| *s < contents.len()),
            src_ip: None,
        };
        #[cfg(unix)]
        return self.state.try_send(self.socket.get_ref().into(), &transmit);
        #[cfg(not(unix))]
        self.socket.try_io(Interest::WRITABLE, || {
            self.state.try_send((&self.socket).into(), &transmit)
        })
    }

    /// Receives into `rx`'s buffers; returns how many were filled (`WouldBlock` when none).
    pub fn recv(&self, rx: &mut RxBatch) -> io::Result<usize> {
        let RxBatch { bufs, meta } = rx;
        let mut slices: [IoSliceMut<'_>; RX_BUFFERS] = {
            let mut it = bufs.iter_mut();
            std::array::from_fn(|_| IoSliceMut::new(it.next().map_or(&mut [][..], |b| &mut b[..])))
        };
        #[cfg(unix)]
        return self.socket.try_io(Interest::READABLE, |socket| {
            self.state.recv(socket.into(), &mut slices, &mut meta[..])
        });
        #[cfg(not(unix))]
        self.socket.try_io(Interest::READABLE, || {
            self.state
                .recv((&self.socket).into(), &mut slices, &mut meta[..])
        })
    }
}

/// Receive buffers and what the kernel said about each.
pub struct RxBatch {
    bufs: Vec<Box<[u8]>>,
    meta: [RecvMeta; RX_BUFFERS],
}

impl Default for RxBatch {
    fn default() -> Self {
        RxBatch {
            bufs: (0..RX_BUFFERS)
                .map(|_| vec![0u8; RX_BUFFER].into_boxed_slice())
                .collect(),
            meta: [RecvMeta::default(); RX_BUFFERS],
        }
    }
}

impl RxBatch {
    /// The first `n` buffers after a receive, as [`RxBatch::get_mut`] gives each.
    pub fn iter_mut(&mut self, n: usize) -> impl Iterator<Item = (SocketAddr, usize, &mut [u8])> {
        self.bufs
            .iter_mut()
            .zip(&self.meta)
            .take(n)
            .filter_map(|(buf, meta)| received(meta, buf))
    }

    /// Buffer `i` after a receive: its sender (as the engine knows addresses), the segment
    /// size, and the bytes (one datagram per `stride`).
    pub fn get_mut(&mut self, i: usize) -> Option<(SocketAddr, usize, &mut [u8])> {
        received(self.meta.get(i)?, self.bufs.get_mut(i)?)
    }
}

/// A receive buffer as [`RxBatch::get_mut`] describes it.
fn received<'a>(meta: &RecvMeta, buf: &'a mut [u8]) -> Option<(SocketAddr, usize, &'a mut [u8])> {
    let buf = buf.get_mut(..meta.len)?;
    let stride = if meta.stride == 0 {
        meta.len
    } else {
        meta.stride
    };
    Some((socket::normalize(meta.addr), stride.max(1), buf))
}

/// The datagrams of one receive buffer: `stride`-sized pieces (the last may be shorter), or
/// for an empty buffer the one empty datagram it held (a zero-length datagram is still a
/// datagram the engine counts).
pub fn datagrams(buf: &mut [u8], stride: usize) -> impl Iterator<Item = &mut [u8]> {
    let empty = buf.is_empty();
    buf.chunks_mut(stride.max(1))
        .chain(empty.then_some(&mut [][..]))
}

impl std::fmt::Debug for RxBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RxBatch")
            .field("bufs", &self.bufs.len())
            .finish()
    }
}

/// What a flush of a [`TxRun`] reports besides success.
#[derive(Debug)]
pub enum SendFailure {
    /// The datagrams were larger than the interface allows (DF): destination and size.
    TooBig(SocketAddr, usize),
    /// Any other error, with the number of datagrams lost.
    Other(io::Error, usize),
}

/// Sealed datagrams for one destination, back to back, waiting to be sent in one call.
///
/// The sockets a datagram can leave from: the current one, and the one before a socket
/// rotation while it is still open (`Transmit::previous_socket`).
#[derive(Clone, Copy, Debug)]
pub struct Sockets<'a> {
    /// Where datagrams leave from.
    pub current: &'a Udp,
    /// The socket before the last rotation, during its grace.
    pub previous: Option<&'a Udp>,
}

impl<'a> Sockets<'a> {
    /// Just `current` (a relay, or a node that has not rotated).
    pub fn one(current: &'a Udp) -> Self {
        Sockets {
            current,
            previous: None,
        }
    }

    /// The socket for a datagram: the previous one if asked and still open, else the
    /// current one.
    pub fn pick(self, previous: bool) -> &'a Udp {
        match self.previous {
            Some(p) if previous => p,
            _ => self.current,
        }
    }
}

/// The engine seals the next datagram straight into [`TxRun::slot`]; [`TxRun::commit`] then
/// either extends the run with it or sends the run and starts a new one with it.
pub struct TxRun {
    buf: Box<[u8]>,
    /// Bytes in the run.
    len: usize,
    /// Length of the run's first datagram: every other one has it, but the last may be
    /// shorter (and then ends the run).
    segment: usize,
    count: usize,
    dst: Option<SocketAddr>,
    /// The run leaves from the previous socket ([`Sockets::pick`]).
    previous: bool,
    /// Most datagrams per send.
    max_segments: usize,
    /// Datagrams in the run still to be sealed: offset, length and job (see
    /// [`veil_proto::node::Node::handle_tun_packet_later`]).
    jobs: Vec<(usize, usize, SealJob)>,
    /// Sends made, and the datagrams they carried.
    pub runs: u64,
    /// See `runs`.
    pub run_datagrams: u64,
}

impl Default for TxRun {
    fn default() -> Self {
        TxRun {
            buf: vec![0u8; MAX_RUN_BYTES + SLOT].into_boxed_slice(),
            len: 0,
            segment: 0,
            count: 0,
            dst: None,
            previous: false,
            max_segments: 1,
            jobs: Vec::new(),
            runs: 0,
            run_datagrams: 0,
        }
    }
}

impl std::fmt::Debug for TxRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxRun")
            .field("len", &self.len)
            .field("count", &self.count)
            .finish()
    }
}

impl TxRun {
    /// Where the next datagram is sealed.
    pub fn slot(&mut self) -> &mut [u8] {
        &mut self.buf[self.len..self.len + SLOT]
    }

    /// The datagram sealed into the slot, `len` bytes, without committing it (for a
    /// datagram that leaves another way, the TCP stream to the relay).
    pub fn slot_datagram(&self, len: usize) -> &[u8] {
        &self.buf[self.len..self.len + len.min(SLOT)]
    }

    /// Adds the `len`-byte datagram in the slot for `dst`, to leave from the socket
    /// `sockets.pick(previous)`; with a `job`, the datagram is sealed when the run is sent
    /// (the jobs of a run spread over `helpers`). Sends the run first when the datagram
    /// cannot join it, and sends the run when it is full or ended by a short datagram.
    /// Failures are returned, never fatal.
    #[allow(clippy::too_many_arguments)]
    pub fn commit(
        &mut self,
        sockets: Sockets<'_>,
        dst: SocketAddr,
        previous: bool,
        len: usize,
        job: Option<SealJob>,
        helpers: &mut Helpers,
        failures: &mut Vec<SendFailure>,
    ) {
        let len = len.min(SLOT);
        self.max_segments = sockets.pick(previous).max_segments().max(1);
        let joins = self.count > 0
            && self.dst == Some(dst)
            && self.previous == previous
            && len <= self.segment
            && self.count < self.max_segments
            && self.len + len <= MAX_RUN_BYTES;
        if !joins && self.count > 0 {
            // Send the run, then move the new datagram to the front.
            let start = self.len;
            self.flush(sockets, helpers, failures);
            self.buf.copy_within(start..start + len, 0);
        }
        if self.count == 0 {
            self.dst = Some(dst);
            self.previous = previous;
            self.segment = len;
        }
        if let Some(job) = job {
            self.jobs.push((self.len, len, job));
        }
        self.len += len;
        self.count += 1;
        let ended = len < self.segment
            || self.count >= self.max_segments
            || self.len + self.segment > MAX_RUN_BYTES;
        if ended {
            self.flush(sockets, helpers, failures);
        }
    }

    /// Seals the datagrams of the run that wait for it, on this thread and `helpers`;
    /// false if that failed (the run must not be sent).
    fn seal(&mut self, helpers: &mut Helpers) -> bool {
        if self.jobs.is_empty() {
            return true;
        }
        let mut items = Vec::with_capacity(self.jobs.len());
        let mut rest = &mut self.buf[..self.len];
        let mut at = 0;
        for (offset, len, job) in &self.jobs {
            let Some(skip) = offset.checked_sub(at) else {
                break;
            };
            let (_, tail) = rest.split_at_mut(skip.min(rest.len()));
            let (datagram, tail) = tail.split_at_mut((*len).min(tail.len()));
            items.push((job, datagram));
            rest = tail;
            at = offset + len;
        }
        let sealed = helpers.for_each(&mut items, |(job, datagram)| {
            job.run(datagram);
        });
        self.jobs.clear();
        sealed
    }

    /// Sends what the run holds.
    pub fn flush(
        &mut self,
        sockets: Sockets<'_>,
        helpers: &mut Helpers,
        failures: &mut Vec<SendFailure>,
    ) {
        let udp = sockets.pick(self.previous);
        let sealed = self.seal(helpers);
        let (Some(dst), count) = (self.dst, self.count) else {
            return;
        };
        if !sealed {
            failures.push(SendFailure::Other(
                io::Error::other("a run's sealing failed"),
                count,
            ));
        } else if count > 0 {
            let segment = (count > 1).then_some(self.segment);
            match udp.send(dst, &self.buf[..self.len], segment) {
                Ok(()) => {
                    self.runs += 1;
                    self.run_datagrams += count as u64;
                }
                Err(e) if e.raw_os_error() == Some(EMSGSIZE) => {
                    failures.push(SendFailure::TooBig(dst, self.segment));
                }
                Err(e) => failures.push(SendFailure::Other(e, count)),
            }
        }
        self.len = 0;
        self.count = 0;
        self.dst = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn pair() -> io::Result<(Udp, Udp)> {
        let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let a = Udp::new(socket::bind_udp(any)?, true)?;
        let b = Udp::new(socket::bind_udp(any)?, true)?;
        Ok((a, b))
    }

    async fn ready(a: &Udp) -> io::Result<()> {
        tokio::time::timeout(std::time::Duration::from_secs(1), a.writable())
            .await
            .map_err(|_| io::Error::other("never writable"))?
    }

    /// Everything that arrived at `b`, datagram by datagram, waiting up to a second.
    async fn received(b: &Udp, want: usize) -> io::Result<Vec<Vec<u8>>> {
        let mut rx = RxBatch::default();
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
        while got.len() < want {
            tokio::select! {
                r = b.readable() => r?,
                () = tokio::time::sleep_until(deadline) => break,
            }
            let n = match b.recv(&mut rx) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            };
            for i in 0..n {
                if let Some((_, stride, buf)) = rx.get_mut(i) {
                    got.extend(datagrams(buf, stride).map(|d| d.to_vec()));
                }
            }
        }
        Ok(got)
    }

    fn seal(run: &mut TxRun, len: usize, tag: u8) {
        run.slot()[..len].fill(tag);
    }

    #[tokio::test]
    async fn runs_arrive_as_the_datagrams_they_were_made_of() -> io::Result<()> {
        let (a, b) = pair()?;
        ready(&a).await?;
        let dst = b.local_addr();
        let mut run = TxRun::default();
        let mut h = Helpers::none();
        let mut failures = Vec::new();
        // 100 full-size datagrams, then a short one that ends the run, then one more.
        let mut sent = Vec::new();
        for i in 0..100u8 {
            seal(&mut run, 1280, i);
            run.commit(
                Sockets::one(&a),
                dst,
                false,
                1280,
                None,
                &mut h,
                &mut failures,
            );
            sent.push(vec![i; 1280]);
        }
        seal(&mut run, 640, 200);
        run.commit(
            Sockets::one(&a),
            dst,
            false,
            640,
            None,
            &mut h,
            &mut failures,
        );
        sent.push(vec![200; 640]);
        // A longer datagram cannot join a run of shorter ones: it starts its own.
        seal(&mut run, 64, 201);
        run.commit(
            Sockets::one(&a),
            dst,
            false,
            64,
            None,
            &mut h,
            &mut failures,
        );
        seal(&mut run, 128, 202);
        run.commit(
            Sockets::one(&a),
            dst,
            false,
            128,
            None,
            &mut h,
            &mut failures,
        );
        run.flush(Sockets::one(&a), &mut h, &mut failures);
        sent.push(vec![201; 64]);
        sent.push(vec![202; 128]);
        assert!(failures.is_empty(), "{failures:?}");
        let got = received(&b, sent.len()).await?;
        assert_eq!(got, sent);
        Ok(())
    }

    #[tokio::test]
    async fn runs_sealed_by_jobs_on_helpers_open_in_order() -> io::Result<()> {
        use veil_proto::crypto::{Cipher, HeaderKey};
        use veil_proto::noise::SessionKeys;
        use veil_proto::session::Session;
        use veil_proto::wire::{self, Frame, BODY_OFFSET};
        let (a, b) = pair()?;
        ready(&a).await?;
        let now = std::time::Instant::now();
        let keys = |send, recv| SessionKeys {
            send: [send; 32],
            recv: [recv; 32],
            hash: [0; 32],
            cipher: Cipher::Aes256Gcm,
        };
        let (hpa, hpb) = (HeaderKey::new([7; 32]), HeaderKey::new([8; 32]));
        let mut tx: Session = Session::new(&keys(1, 2), [0xa; 8], [0xb; 8], hpb.clone(), true, now);
        let mut rx: Session = Session::new(&keys(2, 1), [0xb; 8], [0xa; 8], hpa, false, now);
        let mut run = TxRun::default();
        let mut h = Helpers::new(2)?;
        let mut failures = Vec::new();
        // 150 datagrams of 1,000-byte bodies: runs of up to 64 (or what GSO allows),
        // each sealed by jobs on this thread and the helpers when it is sent.
        for i in 0..150u32 {
            let slot = run.slot();
            slot[BODY_OFFSET..BODY_OFFSET + 1000].fill(i as u8);
            let job = tx
                .seal_later(now, slot, Frame::Data, 1000, 64)
                .ok_or_else(|| io::Error::other("no room"))?;
            let len = job.len();
            run.commit(
                Sockets::one(&a),
                b.local_addr(),
                false,
                len,
                Some(job),
                &mut h,
                &mut failures,
            );
        }
        run.flush(Sockets::one(&a), &mut h, &mut failures);
        assert!(failures.is_empty(), "{failures:?}");
        let got = received(&b, 150).await?;
        assert_eq!(got.len(), 150);
        let hp = veil_proto::crypto::HeaderKeySchedule::from(hpb);
        for (i, mut dg) in got.into_iter().enumerate() {
            let (_, counter) = wire::unmask_header(&hp, &dg).expect("a header");
            assert_eq!(counter, i as u64, "in the order made");
            let (_, body) = rx
                .open(now, counter, &mut dg, std::time::Duration::MAX)
                .expect("opens");
            assert_eq!(&dg[body], &[i as u8; 1000][..]);
        }
        assert!(h.batches > 0, "runs were shared");
        Ok(())
    }

    #[tokio::test]
    async fn a_run_for_another_destination_is_sent_first() -> io::Result<()> {
        let (a, b) = pair()?;
        let (_, c) = pair()?;
        ready(&a).await?;
        let mut run = TxRun::default();
        let mut h = Helpers::none();
        let mut failures = Vec::new();
        for (i, dst) in [
            b.local_addr(),
            b.local_addr(),
            c.local_addr(),
            b.local_addr(),
        ]
        .into_iter()
        .enumerate()
        {
            seal(&mut run, 300, i as u8);
            run.commit(
                Sockets::one(&a),
                dst,
                false,
                300,
                None,
                &mut h,
                &mut failures,
            );
        }
        run.flush(Sockets::one(&a), &mut h, &mut failures);
        assert!(failures.is_empty(), "{failures:?}");
        assert_eq!(
            received(&b, 3).await?,
            vec![vec![0; 300], vec![1; 300], vec![3; 300]]
        );
        assert_eq!(received(&c, 1).await?, vec![vec![2; 300]]);
        Ok(())
    }

    #[tokio::test]
    async fn an_empty_datagram_is_one_datagram() -> io::Result<()> {
        let (a, b) = pair()?;
        ready(&a).await?;
        a.send(b.local_addr(), &[], None)?;
        a.send(b.local_addr(), &[7; 10], None)?;
        assert_eq!(received(&b, 2).await?, vec![vec![], vec![7; 10]]);
        Ok(())
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_kernel_segments_runs_here() -> io::Result<()> {
        let (a, _) = pair()?;
        assert!(a.max_segments() > 1, "UDP_SEGMENT is expected on Linux");
        Ok(())
    }
}
