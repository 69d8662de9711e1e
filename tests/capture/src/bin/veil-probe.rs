//! `veil-probe --target HOST:PORT --kind KIND --count N [--rate PPS] [--seeds FILE.pcap]`
//! sends datagrams that must get no answer from a Veil node or relay:
//!
//! * `random`: random bytes of random length (1–1472);
//! * `truncated`: captured datagrams (from `--seeds`, those sent to the target) cut short;
//! * `bitflip`: captured datagrams with one random bit flipped;
//! * `replay`: captured datagrams sent again verbatim (handshakes included);
//! * `foreign`: handshakes of another network (another secret), made by Veil's own engine.
//!
//! Prints the number sent. The test (`tests/e2e/stealth.sh`) checks the capture for replies
//! and the target's counters.

use clap::{Parser, ValueEnum};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Kind {
    Random,
    Truncated,
    Bitflip,
    Replay,
    Foreign,
}

#[derive(Parser)]
#[command(about = "Sends datagrams a Veil node or relay must not answer")]
struct Args {
    /// Where to send.
    #[arg(long)]
    target: SocketAddr,
    /// What to send.
    #[arg(long, value_enum)]
    kind: Kind,
    /// How many datagrams.
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    /// Datagrams per second (0: as fast as the socket takes them).
    #[arg(long, default_value_t = 50_000)]
    rate: u64,
    /// A capture whose datagrams to the target seed truncated, bitflip and replay.
    #[arg(long)]
    seeds: Option<PathBuf>,
    /// Seed of the random choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// xorshift64*: enough randomness for probe contents, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn fill(&mut self, b: &mut [u8]) {
        for c in b.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

/// Handshake datagrams of other networks: each a fresh network whose node starts a relay
/// handshake towards the target.
fn foreign(target: SocketAddr, n: usize, rng: &mut Rng) -> Vec<Vec<u8>> {
    use veil_proto::{create_network, Identity, Node, NodeConfig};
    let now = Instant::now();
    let mut out = Vec::new();
    let mut buf = vec![0u8; veil_proto::MAX_DATAGRAM];
    for _ in 0..n {
        let mut seed = [0u8; 32];
        rng.fill(&mut seed);
        let (token, _) = create_network(seed, &[target.to_string()]);
        let cfg = NodeConfig {
            relays: vec![(target, token.relays[0].public_key)],
            ..NodeConfig::default()
        };
        rng.fill(&mut seed);
        let id = Identity::from_secret(seed);
        rng.fill(&mut seed);
        let mut node = Node::new(
            &token,
            id,
            cfg,
            seed,
            now,
            Duration::from_secs(1_800_000_000),
        );
        node.handle_timeout(now);
        while let Some(t) = node.poll_transmit(&mut buf) {
            out.push(buf[..t.len].to_vec());
        }
    }
    out
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut rng = Rng(args.seed.max(1) | 1);
    let seeds: Vec<Vec<u8>> = match &args.seeds {
        None => Vec::new(),
        Some(path) => match std::fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|d| veil_capture::udp_payloads_to(&d, args.target).map_err(|e| e.0))
        {
            Ok(s) => s,
            Err(e) => {
                eprintln!("veil-probe: {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        },
    };
    let needs_seeds = matches!(args.kind, Kind::Truncated | Kind::Bitflip | Kind::Replay);
    if needs_seeds && seeds.is_empty() {
        eprintln!(
            "veil-probe: --kind {:?} needs --seeds with datagrams sent to {}",
            args.kind, args.target
        );
        return ExitCode::from(2);
    }
    let pool = match args.kind {
        Kind::Foreign => foreign(args.target, 200, &mut rng),
        _ => seeds,
    };
    let bind: SocketAddr = if args.target.is_ipv6() {
        "[::]:0".parse().unwrap_or_else(|_| unreachable!())
    } else {
        "0.0.0.0:0".parse().unwrap_or_else(|_| unreachable!())
    };
    let sock = match UdpSocket::bind(bind) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("veil-probe: bind: {e}");
            return ExitCode::FAILURE;
        }
    };
    let start = Instant::now();
    let mut sent = 0u64;
    // Room for a random datagram and for the longest seed (a capture may hold larger ones).
    let longest = pool.iter().map(Vec::len).max().unwrap_or(0);
    let mut dg = vec![0u8; longest.max(1472)];
    while sent < args.count {
        let len = match args.kind {
            Kind::Random => {
                let len = 1 + rng.below(1472);
                rng.fill(&mut dg[..len]);
                len
            }
            Kind::Truncated => {
                let s = &pool[rng.below(pool.len())];
                let len = rng.below(s.len());
                dg[..len].copy_from_slice(&s[..len]);
                len
            }
            Kind::Bitflip => {
                let s = &pool[rng.below(pool.len())];
                dg[..s.len()].copy_from_slice(s);
                let bit = rng.below(s.len() * 8);
                dg[bit / 8] ^= 1 << (bit % 8);
                s.len()
            }
            Kind::Replay | Kind::Foreign => {
                let s = &pool[(sent as usize) % pool.len()];
                dg[..s.len()].copy_from_slice(s);
                s.len()
            }
        };
        // A datagram the kernel refuses for a moment (full buffer) is retried.
        loop {
            match sock.send_to(&dg[..len], args.target) {
                Ok(_) => break,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) if e.raw_os_error() == Some(105) => std::thread::yield_now(),
                Err(e) => {
                    eprintln!("veil-probe: send: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        sent += 1;
        if args.rate > 0 {
            let due = start + Duration::from_secs_f64(sent as f64 / args.rate as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
    }
    println!("{sent}");
    ExitCode::SUCCESS
}
