//! The AEAD of one batch on the node's thread alone and shared with helper threads
//! (`crypto_threads`): 44 datagrams of 1,380 bytes (one 64 KiB TCP segment from the TUN)
//! sealed, and 256 opened (part of one receive call's batch). On a machine with a core to
//! spare this is what a helper can give; where every core is busy, see docs/performance.md
//! (step 7).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::time::Instant;
use veil_io::parallel::Helpers;
use veil_proto::crypto::{Cipher, HeaderKey};
use veil_proto::noise::SessionKeys;
use veil_proto::session::Session;
use veil_proto::wire::{self, Frame};

const SLOT: usize = 1_500;
const BODY: usize = 1_380;

fn sessions() -> (Session, Session) {
    #[allow(clippy::disallowed_methods)] // a benchmark needs a base Instant
    let now = Instant::now();
    let keys = |send, recv| SessionKeys {
        send: [send; 32],
        recv: [recv; 32],
        hash: [0; 32],
        cipher: Cipher::Aes256Gcm,
    };
    let (hpa, hpb) = (HeaderKey::new([7; 32]), HeaderKey::new([8; 32]));
    let tx = Session::new(&keys(1, 2), [0xa; 8], [0xb; 8], hpb, true, now);
    let rx = Session::new(&keys(2, 1), [0xb; 8], [0xa; 8], hpa, false, now);
    (tx, rx)
}

fn batch(c: &mut Criterion) {
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let mut g = c.benchmark_group("batch");
    for helpers in [0, 1] {
        if helpers >= cores {
            continue;
        }
        let mut h = Helpers::new(helpers).expect("threads");
        // Seal: the jobs of one segment, run again and again over the same buffers.
        let (mut tx, rx) = sessions();
        let mut bufs = vec![0u8; 44 * SLOT];
        let jobs: Vec<_> = bufs
            .chunks_mut(SLOT)
            .map(|b| tx.seal_later(now, b, Frame::Data, BODY, 64).expect("fits"))
            .collect();
        g.throughput(Throughput::Elements(44));
        g.bench_function(format!("seal_44x1380B_helpers_{helpers}"), |b| {
            b.iter(|| {
                let mut items: Vec<_> = jobs.iter().zip(bufs.chunks_mut(SLOT)).collect();
                assert!(h.for_each(&mut items, |(job, buf)| {
                    job.run(buf);
                }));
            });
        });
        // Open: 256 sealed datagrams; the jobs are made once (the replay window does not
        // move, since nothing is committed), and opening fails after the first round (the
        // plaintext is left in place) at the same cost as a success.
        let mut sealed = vec![0u8; 256 * SLOT];
        let mut opens = Vec::new();
        for b in sealed.chunks_mut(SLOT) {
            let n = tx.seal(now, b, Frame::Data, BODY, 64).expect("fits");
            let hp = veil_proto::crypto::HeaderKeySchedule::from(HeaderKey::new([8; 32]));
            let (_, ctr) = wire::unmask_header(&hp, &b[..n]).expect("header");
            opens.push((
                rx.open_job(now, ctr, std::time::Duration::MAX)
                    .expect("job"),
                n,
            ));
        }
        g.throughput(Throughput::Elements(256));
        g.bench_function(format!("open_256x1380B_helpers_{helpers}"), |b| {
            b.iter(|| {
                let mut items: Vec<_> = opens.iter().zip(sealed.chunks_mut(SLOT)).collect();
                assert!(h.for_each(&mut items, |((job, n), buf)| {
                    std::hint::black_box(job.run(&mut buf[..*n]));
                }));
            });
        });
    }
    g.finish();
}

criterion_group!(benches, batch);
criterion_main!(benches);
