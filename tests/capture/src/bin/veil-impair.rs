//! `veil-impair --queue N [--loss PCT] [--duplicate PCT] [--delay-ms MS] [--jitter-ms MS]
//! [--reorder PCT --reorder-ms MIN-MAX] [--seed N] [--stats FILE]` impairs the packets that
//! nftables rules send to NFQUEUE `N` (`queue num N`): it drops some, sends a copy of some,
//! delays all by a base delay plus jitter, and holds some back so that later packets overtake
//! them (see `veil_capture::impair` for the model).
//!
//! Packets are held by not giving their verdict yet; NFQUEUE takes verdicts in any order, and
//! the kernel re-injects a packet when its verdict arrives, so the verdict order is the order on
//! the wire. NFQUEUE cannot create packets, so a copy is sent through a raw socket right after
//! its original is accepted: leaving packets go out through the same route, arriving ones are
//! delivered locally over loopback. Copies carry a firewall mark (`--mark`); the nftables rules
//! must let marked packets pass, or copies come back into the queue.
//!
//! Counters (per direction: seen, dropped, duplicated, delayed, held back, reordered) go to
//! `--stats` as JSON at start (so a script can wait for it), every `--stats-interval` seconds
//! and at exit; at SIGTERM or SIGINT it releases every held packet, writes them, prints them
//! on stdout and exits 0. Used by `tests/e2e/impair.sh`.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    about = "Impairs the packets of an NFQUEUE: loss, duplication, delay, jitter, reordering",
    after_help = "Example, in a network namespace:\n  nft add rule ip t out oifname eth0 meta l4proto udp meta mark != 0x7e11 queue num 7\n  veil-impair --queue 7 --loss 5 --duplicate 2 --reorder 5 --reorder-ms 5-20 --jitter-ms 1"
)]
struct Args {
    /// The NFQUEUE number that the nftables rules send packets to (`queue num N`).
    #[arg(long)]
    queue: u16,
    /// Percentage of packets dropped.
    #[arg(long, default_value_t = 0.0, value_name = "PCT")]
    loss: f64,
    /// Percentage of the packets not dropped that are sent twice.
    #[arg(long, default_value_t = 0.0, value_name = "PCT")]
    duplicate: f64,
    /// Delay of every packet, in milliseconds.
    #[arg(long, default_value_t = 0.0, value_name = "MS")]
    delay_ms: f64,
    /// Uniform extra delay, from 0 to MS milliseconds, of packets not held back (it never
    /// reorders them).
    #[arg(long, default_value_t = 0.0, value_name = "MS")]
    jitter_ms: f64,
    /// Percentage of the packets not dropped that are held back, so that later ones overtake
    /// them.
    #[arg(long, default_value_t = 0.0, value_name = "PCT")]
    reorder: f64,
    /// How long a held-back packet waits, in milliseconds, on top of --delay-ms.
    #[arg(long, default_value = "5-20", value_name = "MIN-MAX", value_parser = parse_range)]
    reorder_ms: (f64, f64),
    /// Seed of the random choices (the same seed and traffic give the same decisions).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Firewall mark of the copies sent for --duplicate (decimal or 0x hex).
    #[arg(long, default_value = "0x7e11", value_parser = parse_mark)]
    mark: u32,
    /// Writes the counters as JSON to FILE at start, periodically and at exit.
    #[arg(long, value_name = "FILE")]
    stats: Option<PathBuf>,
    /// Seconds between two writes of --stats.
    #[arg(long, default_value_t = 1.0, value_name = "SECS")]
    stats_interval: f64,
    /// Most packets the kernel keeps waiting for this helper, held ones included; beyond
    /// that it drops them (counted as kernel.queue_dropped).
    #[arg(long, default_value_t = 65_536)]
    queue_len: u32,
}

fn parse_range(s: &str) -> Result<(f64, f64), String> {
    let (lo, hi) = s.split_once('-').unwrap_or((s, s));
    let num = |x: &str| {
        x.trim()
            .parse::<f64>()
            .map_err(|_| format!("`{x}` is not a number of milliseconds"))
    };
    Ok((num(lo)?, num(hi)?))
}

fn parse_mark(s: &str) -> Result<u32, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    };
    match r {
        Ok(0) => Err("the mark must not be 0 (unmarked packets would look like copies)".into()),
        Ok(m) => Ok(m),
        Err(_) => Err(format!("`{s}` is not a 32-bit number")),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("veil-impair: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn run(_: Args) -> Result<(), String> {
    Err("needs Linux (NFQUEUE)".into())
}

#[cfg(target_os = "linux")]
use linux::run;

#[cfg(target_os = "linux")]
mod linux {
    use super::Args;
    use serde::Serialize;
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    use std::io;
    use std::net::{IpAddr, SocketAddr};
    use std::os::fd::RawFd;
    use std::path::Path;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};
    use veil_capture::impair::{
        ip_destination, Config, Counters, Decision, Dir, Impairer, Scheduler, Ticket,
    };

    /// Bytes of each packet copied to us: enough for any datagram on a 1500 (or 4000) byte
    /// link; a longer packet is cut in our copy only (its verdict still passes it whole), and
    /// is then never duplicated. It also bounds each receive buffer, which a held packet keeps.
    const COPY_RANGE: u16 = 4096;
    /// Kernel receive buffer of the queue socket: room for a burst while we release packets.
    const RCVBUF: libc::c_int = 16 << 20;
    /// Most packets taken from the queue before due ones are released.
    const BATCH: usize = 256;
    /// Longest sleep: how soon a signal that lands just before the sleep is noticed.
    const IDLE: Duration = Duration::from_millis(100);

    static STOP: AtomicBool = AtomicBool::new(false);

    extern "C" fn on_signal(_: libc::c_int) {
        STOP.store(true, Ordering::Relaxed);
    }

    fn install_signal_handlers() -> io::Result<()> {
        for sig in [libc::SIGTERM, libc::SIGINT] {
            // SAFETY: `sa` is zeroed (a valid sigaction), then given a handler that only
            // stores to an atomic (async-signal-safe) and an empty mask; no SA_RESTART, so the
            // wait returns EINTR at once.
            let rc = unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
                libc::sigemptyset(&mut sa.sa_mask);
                libc::sigaction(sig, &sa, std::ptr::null_mut())
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    fn sockopt_int(fd: RawFd, level: libc::c_int, name: libc::c_int) -> Option<libc::c_int> {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `v` and `len` are valid for writes of the sizes given; on a descriptor that
        // is not a socket (or closed meanwhile) getsockopt only fails.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                level,
                name,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        (rc == 0).then_some(v)
    }

    /// The descriptor of the queue's netlink socket. nfq 0.2 does not expose it, and we need
    /// it to sleep until a packet comes or a release is due (rather than spin) and to enlarge
    /// its buffer; it is the process's only NETLINK_NETFILTER socket.
    fn netfilter_socket() -> Result<RawFd, String> {
        let dir = std::fs::read_dir("/proc/self/fd")
            .map_err(|e| format!("cannot list /proc/self/fd: {e}"))?;
        let found: Vec<RawFd> = dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|&fd| {
                sockopt_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN) == Some(libc::AF_NETLINK)
                    && sockopt_int(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL)
                        == Some(libc::NETLINK_NETFILTER)
            })
            .collect();
        match found[..] {
            [fd] => Ok(fd),
            [] => Err("the queue's netlink socket is not among /proc/self/fd".into()),
            _ => Err(format!(
                "{} netfilter sockets open, expected one",
                found.len()
            )),
        }
    }

    fn set_rcvbuf(fd: RawFd, bytes: libc::c_int) -> io::Result<()> {
        // SAFETY: the value points at a live c_int of the size given; SO_RCVBUFFORCE (root)
        // goes past net.core.rmem_max.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&bytes as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Waits until `fd` is readable, `timeout` passes or a signal comes.
    fn wait_readable(fd: RawFd, timeout: Duration) -> io::Result<()> {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let ts = libc::timespec {
            tv_sec: timeout.as_secs().min(3600) as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: one valid pollfd and a valid timespec for the duration of the call; a null
        // signal mask leaves the process's mask as it is.
        let rc = unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Sends copies of packets, whole IP packets with their headers (IPPROTO_RAW).
    struct Copier {
        v4: Option<Socket>,
        v6: Option<Socket>,
    }

    impl Copier {
        fn open(domain: Domain, mark: u32) -> io::Result<Socket> {
            let s = Socket::new(domain, Type::RAW, Some(Protocol::from(libc::IPPROTO_RAW)))?;
            s.set_mark(mark)?;
            s.set_nonblocking(true)?;
            s.set_send_buffer_size(4 << 20)?;
            Ok(s)
        }

        fn send(&self, packet: &[u8]) -> Result<(), CopyError> {
            let (sock, dst) = match ip_destination(packet) {
                Some(ip @ IpAddr::V4(_)) => (self.v4.as_ref(), ip),
                Some(ip @ IpAddr::V6(_)) => (self.v6.as_ref(), ip),
                None => return Err(CopyError::Skipped),
            };
            let sock = sock.ok_or(CopyError::Skipped)?;
            sock.send_to(packet, &SockAddr::from(SocketAddr::new(dst, 0)))
                .map(|_| ())
                .map_err(|_| CopyError::Failed)
        }
    }

    enum CopyError {
        /// Not an IP packet, or no socket for its family.
        Skipped,
        /// The socket refused it.
        Failed,
    }

    /// What the I/O side counted besides the model.
    #[derive(Default, Serialize)]
    struct Io {
        /// Copies sent through the raw socket.
        copies_sent: u64,
        /// Copies the raw socket refused (a full buffer, no route).
        copies_failed: u64,
        /// Copies not attempted: a packet longer than the copy range, or not IP.
        copies_skipped: u64,
        /// Verdicts the kernel refused.
        verdict_errors: u64,
        /// Receive errors on the queue socket.
        recv_errors: u64,
        /// Packets held now, and at most.
        held_now: usize,
        held_max: usize,
    }

    /// The kernel's view of the queue, from /proc/net/netfilter/nfnetlink_queue.
    #[derive(Serialize)]
    struct Kernel {
        /// Dropped because the queue was full.
        queue_dropped: u64,
        /// Dropped because the netlink socket could not take them.
        user_dropped: u64,
    }

    fn kernel_stats(queue: u16) -> Option<Kernel> {
        let text = std::fs::read_to_string("/proc/self/net/netfilter/nfnetlink_queue").ok()?;
        text.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first()?.parse::<u16>().ok()? == queue).then_some(())?;
            Some(Kernel {
                queue_dropped: f.get(5)?.parse().ok()?,
                user_dropped: f.get(6)?.parse().ok()?,
            })
        })
    }

    #[derive(Serialize)]
    struct Stats<'a> {
        queue: u16,
        seed: u64,
        config: &'a Config,
        elapsed_s: f64,
        total: Counters,
        #[serde(rename = "in")]
        inbound: Counters,
        out: Counters,
        io: &'a Io,
        kernel: Option<Kernel>,
    }

    struct Helper {
        queue_num: u16,
        seed: u64,
        queue: nfq::Queue,
        model: Impairer,
        held: Scheduler<nfq::Message>,
        copier: Copier,
        io: Io,
        copy: Vec<u8>,
        start: Instant,
    }

    impl Helper {
        fn stats_json(&mut self) -> String {
            self.io.held_now = self.held.len();
            let s = Stats {
                queue: self.queue_num,
                seed: self.seed,
                config: self.model.config(),
                elapsed_s: self.start.elapsed().as_secs_f64(),
                total: self.model.total(),
                inbound: self.model.counters(Dir::In),
                out: self.model.counters(Dir::Out),
                io: &self.io,
                kernel: kernel_stats(self.queue_num),
            };
            serde_json::to_string(&s).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
        }

        fn write_stats(&mut self, path: &Path) -> io::Result<()> {
            let json = self.stats_json();
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, json + "\n")?;
            std::fs::rename(&tmp, path)
        }

        fn verdict(&mut self, mut msg: nfq::Message, v: nfq::Verdict) {
            msg.set_verdict(v);
            if self.queue.verdict(msg).is_err() {
                self.io.verdict_errors += 1;
            }
        }

        fn release(&mut self, ticket: Ticket, msg: nfq::Message) {
            let copy = ticket.duplicate && {
                let p = msg.get_payload();
                let whole = msg.get_original_len() == p.len();
                if whole {
                    self.copy.clear();
                    self.copy.extend_from_slice(p);
                } else {
                    self.io.copies_skipped += 1;
                }
                whole
            };
            self.verdict(msg, nfq::Verdict::Accept);
            self.model.on_release(&ticket);
            if copy {
                match self.copier.send(&self.copy) {
                    Ok(()) => self.io.copies_sent += 1,
                    Err(CopyError::Skipped) => self.io.copies_skipped += 1,
                    Err(CopyError::Failed) => self.io.copies_failed += 1,
                }
            }
        }

        fn on_packet(&mut self, msg: nfq::Message) {
            let now = Instant::now();
            match self.model.on_packet(now, Dir::from_hook(msg.get_hook())) {
                Decision::Drop => self.verdict(msg, nfq::Verdict::Drop),
                Decision::Pass(t) if t.release <= now && self.held.is_empty() => {
                    self.release(t, msg)
                }
                Decision::Pass(t) => {
                    self.held.push(t, msg);
                    self.io.held_max = self.io.held_max.max(self.held.len());
                }
            }
        }

        fn release_due(&mut self) {
            let now = Instant::now();
            while let Some((t, msg)) = self.held.pop_due(now) {
                self.release(t, msg);
            }
        }

        /// Takes up to BATCH packets from the queue; false if there were none.
        fn drain(&mut self) -> bool {
            let mut got = false;
            for _ in 0..BATCH {
                match self.queue.recv() {
                    Ok(msg) => {
                        got = true;
                        self.on_packet(msg);
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                        ) =>
                    {
                        break
                    }
                    Err(_) => {
                        self.io.recv_errors += 1;
                        break;
                    }
                }
            }
            got
        }
    }

    fn ms(x: f64, what: &str) -> Result<Duration, String> {
        Duration::try_from_secs_f64(x / 1000.0)
            .map_err(|_| format!("{what} must be a non-negative number of milliseconds, got {x}"))
    }

    pub fn run(args: Args) -> Result<(), String> {
        let cfg = Config {
            loss: args.loss / 100.0,
            duplicate: args.duplicate / 100.0,
            delay: ms(args.delay_ms, "--delay-ms")?,
            jitter: ms(args.jitter_ms, "--jitter-ms")?,
            reorder: args.reorder / 100.0,
            reorder_min: ms(args.reorder_ms.0, "--reorder-ms")?,
            reorder_max: ms(args.reorder_ms.1, "--reorder-ms")?,
        };
        cfg.validate()?;
        let interval = Duration::try_from_secs_f64(args.stats_interval)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                format!(
                    "--stats-interval must be a positive number of seconds, got {}",
                    args.stats_interval
                )
            })?;
        let q = args.queue;
        let mut queue = nfq::Queue::open().map_err(|e| {
            format!("cannot open a netfilter queue socket: {e} (needs root or CAP_NET_ADMIN)")
        })?;
        let fd = netfilter_socket()?;
        queue.bind(q).map_err(|e| {
            let hint = match e.raw_os_error() {
                Some(libc::EPERM | libc::EBUSY) => {
                    " (another process is bound to it, or this one lacks CAP_NET_ADMIN)"
                }
                Some(libc::ENOENT | libc::EOPNOTSUPP) => " (is nfnetlink_queue in the kernel?)",
                _ => "",
            };
            format!("cannot bind to queue {q}: {e}{hint}")
        })?;
        let setup =
            |r: io::Result<()>, what: &str| r.map_err(|e| format!("queue {q}: {what}: {e}"));
        setup(queue.set_copy_range(q, COPY_RANGE), "set the copy range")?;
        setup(queue.set_queue_max_len(q, args.queue_len), "set the length")?;
        setup(queue.set_fail_open(q, false), "turn fail-open off")?;
        queue.set_nonblocking(true);
        set_rcvbuf(fd, RCVBUF).map_err(|e| format!("queue socket: receive buffer: {e}"))?;

        let copier = if cfg.duplicate > 0.0 {
            let v4 = Copier::open(Domain::IPV4, args.mark)
                .map_err(|e| format!("raw IPv4 socket for copies: {e}"))?;
            // IPv6 copies are best effort: a host without IPv6 still impairs IPv4.
            let v6 = match Copier::open(Domain::IPV6, args.mark) {
                Ok(s) => Some(s),
                Err(e) => {
                    eprintln!(
                        "veil-impair: no raw IPv6 socket ({e}); IPv6 packets are not duplicated"
                    );
                    None
                }
            };
            Copier { v4: Some(v4), v6 }
        } else {
            Copier { v4: None, v6: None }
        };
        install_signal_handlers().map_err(|e| format!("signal handlers: {e}"))?;

        eprintln!(
            "veil-impair: queue {q}: loss {}%, duplicate {}%, delay {} ms + jitter 0-{} ms, \
             reorder {}% held {}-{} ms, seed {}, copies marked {:#x}",
            args.loss,
            args.duplicate,
            args.delay_ms,
            args.jitter_ms,
            args.reorder,
            args.reorder_ms.0,
            args.reorder_ms.1,
            args.seed,
            args.mark
        );
        let mut h = Helper {
            queue_num: q,
            seed: args.seed,
            queue,
            model: Impairer::new(cfg, args.seed),
            held: Scheduler::default(),
            copier,
            io: Io::default(),
            copy: Vec::with_capacity(usize::from(COPY_RANGE)),
            start: Instant::now(),
        };
        let stats = args.stats.as_deref();
        let write = |h: &mut Helper| -> Result<(), String> {
            match stats {
                Some(p) => h
                    .write_stats(p)
                    .map_err(|e| format!("cannot write {}: {e}", p.display())),
                None => Ok(()),
            }
        };
        write(&mut h)?;
        let mut next_stats = Instant::now() + interval;
        while !STOP.load(Ordering::Relaxed) {
            let got = h.drain();
            h.release_due();
            let now = Instant::now();
            if now >= next_stats {
                write(&mut h)?;
                next_stats = now + interval;
            }
            if got {
                continue;
            }
            let until = h.held.next_release().map_or(IDLE, |t| t - now.min(t));
            let until = until.min(IDLE).min(next_stats - now.min(next_stats));
            wait_readable(fd, until).map_err(|e| format!("waiting for packets: {e}"))?;
        }
        // Take what is waiting and release what is held, so that stopping the helper loses
        // nothing it did not decide to drop (what comes after the socket closes, the kernel
        // drops: the rules have no `bypass`).
        h.drain();
        while let Some((t, msg)) = h.held.pop() {
            h.release(t, msg);
        }
        write(&mut h)?;
        println!("{}", h.stats_json());
        Ok(())
    }
}
