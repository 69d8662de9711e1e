//! Per-packet cost of the data path (seal, open, relay forward, and the header unmask and
//! replay check inside open) and cost of a full hybrid handshake. Seal and open run for
//! both data ciphers: `seal/…` and `open/…` are ChaCha20-Poly1305 (relay sessions, and
//! peers without AES instructions), `seal_aes/…` and `open_aes/…` AES-256-GCM.
//!
//! Run: `cargo bench -p veil-proto --bench datapath` (ring backend, the default) and
//! `cargo bench -p veil-proto --no-default-features --bench datapath` (pure-Rust backend).
//! Figures go into docs/benchmarks.md.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // a bench needs a real clock

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::time::Instant;
use veil_proto::crypto::{
    ChaChaAead, Cipher, DataAead, HeaderKey, HeaderKeySchedule, SessionCrypto,
};
use veil_proto::noise::{Initiator, Responder, SessionKeys};
use veil_proto::replay::WORDS;
use veil_proto::session::Session;
use veil_proto::wire::{self, Frame, BODY_OFFSET};
use veil_proto::Identity;

const SIZES: [usize; 3] = [64, 512, 1380];
const BUCKET: usize = 64;

/// The bench groups of each cipher: (seal, open).
const CIPHERS: [(Cipher, &str, &str); 2] = [
    (Cipher::ChaCha20Poly1305, "seal", "open"),
    (Cipher::Aes256Gcm, "seal_aes", "open_aes"),
];

/// Two ends of a session, and b's own header key (what b unmasks with). `A`: [`DataAead`]
/// for a node's sessions, [`ChaChaAead`] for a relay's.
fn pair<A: SessionCrypto>(
    now: Instant,
    cipher: Cipher,
) -> (Session<WORDS, A>, Session<WORDS, A>, HeaderKeySchedule) {
    let ka = SessionKeys {
        send: [1; 32],
        recv: [2; 32],
        hash: [0; 32],
        cipher,
    };
    let kb = SessionKeys {
        send: [2; 32],
        recv: [1; 32],
        hash: [0; 32],
        cipher,
    };
    let a = Session::new(&ka, [0xa; 8], [0xb; 8], HeaderKey::new([8; 32]), true, now);
    let b = Session::new(&kb, [0xb; 8], [0xa; 8], HeaderKey::new([7; 32]), false, now);
    (a, b, HeaderKeySchedule::new([8; 32]))
}

fn seal(c: &mut Criterion) {
    let now = Instant::now();
    for (cipher, name, _) in CIPHERS {
        let mut g = c.benchmark_group(name);
        for size in SIZES {
            let (mut a, _, _) = pair::<DataAead>(now, cipher);
            let mut buf = vec![0u8; 2048];
            g.throughput(Throughput::Bytes(size as u64));
            g.bench_function(format!("{size}B"), |bench| {
                bench.iter(|| {
                    buf[BODY_OFFSET..BODY_OFFSET + size].fill(0x5a);
                    black_box(a.seal(now, &mut buf, Frame::Data, size, BUCKET).unwrap())
                })
            });
        }
        g.finish();
    }
}

fn open(c: &mut Criterion) {
    let now = Instant::now();
    for (cipher, _, name) in CIPHERS {
        let mut g = c.benchmark_group(name);
        for size in SIZES {
            let (mut a, mut b, hpb) = pair::<DataAead>(now, cipher);
            g.throughput(Throughput::Bytes(size as u64));
            // Each iteration opens a fresh datagram (the replay window refuses repeats);
            // sealing it happens in the untimed setup.
            g.bench_function(format!("{size}B"), |bench| {
                bench.iter_batched_ref(
                    || {
                        let mut buf = vec![0u8; 2048];
                        buf[BODY_OFFSET..BODY_OFFSET + size].fill(0x5a);
                        let n = a.seal(now, &mut buf, Frame::Data, size, BUCKET).unwrap();
                        buf.truncate(n);
                        buf
                    },
                    |dg| {
                        let (_, ctr) = wire::unmask_header(&hpb, dg).unwrap();
                        black_box(b.open(now, ctr, dg, std::time::Duration::MAX).unwrap())
                    },
                    BatchSize::SmallInput,
                )
            });
        }
        g.finish();
    }
}

fn relay_forward(c: &mut Criterion) {
    // The relay's per-packet work: unmask, open, rewrite the frame header, reseal in place
    // (relay sessions are always ChaCha20-Poly1305, and keep the node's header key raw).
    let now = Instant::now();
    let mut g = c.benchmark_group("relay_forward");
    let size = 1380;
    let (mut a, mut r, hpr) = pair::<ChaChaAead>(now, Cipher::ChaCha20Poly1305);
    let (mut r_out, _, _) = pair::<ChaChaAead>(now, Cipher::ChaCha20Poly1305);
    g.throughput(Throughput::Bytes(size as u64));
    g.bench_function(format!("{size}B"), |bench| {
        bench.iter_batched_ref(
            || {
                let mut buf = vec![0u8; 2048];
                let n = a.seal(now, &mut buf, Frame::Forward, size, BUCKET).unwrap();
                buf.truncate(n);
                buf
            },
            |dg| {
                let (_, ctr) = wire::unmask_header(&hpr, dg).unwrap();
                let (_, body) = r.open(now, ctr, dg, std::time::Duration::MAX).unwrap();
                let pt_len = dg.len() - wire::HDR_LEN - veil_proto::crypto::TAG_LEN;
                black_box(body);
                black_box(r_out.reseal(now, dg, pt_len))
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn handshake(c: &mut Criterion) {
    let a = Identity::from_secret([1u8; 32]);
    let b = Identity::from_secret([2u8; 32]);
    let mut g = c.benchmark_group("handshake");
    g.sample_size(30);
    let mut n = 0u8;
    g.bench_function("hybrid_ikpsk2_x25519_mlkem768_full", |bench| {
        bench.iter(|| {
            n = n.wrapping_add(1);
            let (init, m1) = Initiator::start(&a, b.public(), b"p", b"hello", [n; 32]).unwrap();
            let (resp, _) = Responder::read(&b, b"p", &m1, [n ^ 0xff; 32]).unwrap();
            let (kb, m2) = resp.reply(b"world").unwrap();
            let (ka, _) = init.finish(&m2).unwrap();
            black_box((ka.send, kb.send))
        })
    });
    g.bench_function("initiator_msg1", |bench| {
        bench.iter(|| {
            n = n.wrapping_add(1);
            black_box(Initiator::start(&a, b.public(), b"p", b"hello", [n; 32]).unwrap())
        })
    });
    let (_, m1) = Initiator::start(&a, b.public(), b"p", b"hello", [9; 32]).unwrap();
    g.bench_function("responder_read_and_reply", |bench| {
        bench.iter(|| {
            n = n.wrapping_add(1);
            let (resp, _) = Responder::read(&b, b"p", &m1, [n; 32]).unwrap();
            black_box(resp.reply(b"world").unwrap())
        })
    });
    g.finish();
}

/// The two pieces of `open` that every datagram pays before its AEAD: removing header
/// protection (one AES-256 block under the receiver's own key, whose schedule it keeps
/// expanded; a node's `seal` pays the same with the peer's) and the replay-window check
/// and commit. And `header_mask_raw`: the same block under a raw key whose schedule is
/// expanded per call, as a relay masks what it sends to each node.
fn header_and_replay(c: &mut Criterion) {
    let now = Instant::now();
    let (mut a, _, hpb) = pair::<DataAead>(now, Cipher::ChaCha20Poly1305);
    let mut buf = vec![0u8; 2048];
    let len = a.seal(now, &mut buf, Frame::Data, 1380, BUCKET).unwrap();
    let dg = buf[..len].to_vec();
    let mut g = c.benchmark_group("per_packet");
    g.bench_function("header_unmask", |bench| {
        bench.iter(|| black_box(wire::unmask_header(&hpb, black_box(&dg))))
    });
    let raw_key = HeaderKey::new(*hpb.bytes());
    g.bench_function("header_mask_raw", |bench| {
        bench.iter(|| black_box(wire::unmask_header(&raw_key, black_box(&dg))))
    });
    let mut w: veil_proto::replay::ReplayWindow = veil_proto::replay::ReplayWindow::new();
    let mut counter = 0u64;
    g.bench_function("replay_check_commit", |bench| {
        bench.iter(|| {
            counter += 1;
            // Mostly in order, with some reordering inside the window.
            let c = if counter % 8 == 0 {
                counter - 5
            } else {
                counter
            };
            black_box(w.check(c) && w.commit(c))
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    seal,
    open,
    relay_forward,
    handshake,
    header_and_replay
);
criterion_main!(benches);
