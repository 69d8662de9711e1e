//! Replays the committed fuzz corpora (fuzz/corpus/TARGET/*) through the fuzz targets'
//! bodies on stable, so every input a fuzzer ever kept is a regression test. Run the
//! fuzzers themselves with `cargo +nightly fuzz run TARGET` in fuzz/.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use veil_sim::fuzz;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty corpus {}", dir.display());
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

fn replay(target: &str, f: fn(&[u8]), limit: usize) {
    let inputs = corpus(target);
    for input in inputs.iter().take(limit) {
        f(input);
    }
    println!("{target}: {} inputs replayed", inputs.len().min(limit));
}

#[test]
fn node_datagram() {
    replay("node_datagram", fuzz::node_datagram, usize::MAX);
}

#[test]
fn relay_datagram() {
    replay("relay_datagram", fuzz::relay_datagram, usize::MAX);
}

#[test]
fn relay_frames() {
    replay("relay_frames", fuzz::relay_frames, usize::MAX);
}

#[test]
fn reassembly() {
    replay("reassembly", fuzz::reassembly, usize::MAX);
}

#[test]
fn control_request() {
    replay("control_request", fuzz::control_request, usize::MAX);
}

#[test]
fn decoders() {
    replay("decoders", fuzz::decoders, usize::MAX);
}

#[test]
fn node_script() {
    // Each input builds its own network: the corpus is replayed whole but kept small.
    replay("node_script", fuzz::node_script, usize::MAX);
}

/// Writes the seed corpora from a real session (run once: `cargo test -p veil-sim --test
/// fuzz_corpus -- --ignored seed`); the fuzzers grow them from there.
#[test]
#[ignore]
fn seed() {
    use std::time::Duration;
    use veil_sim::udp4;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let write = |target: &str, name: String, data: &[u8]| {
        let d = root.join(target);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(name), data).unwrap();
    };
    // The network of the datagram targets, captured: its datagrams authenticate there.
    let mut sim = fuzz::prepared(true);
    let (a, b) = (sim.ipv4(0).unwrap(), sim.ipv4(1).unwrap());
    for k in 0..20u8 {
        sim.tun_send(0, &udp4(a, b, &vec![k; 100 + usize::from(k) * 60]));
        sim.run_for(Duration::from_millis(50));
    }
    let (n0, relay) = (sim.nodes[0].addr, sim.relay_addr);
    for (i, c) in sim.captured.iter().enumerate().take(200) {
        let mut v = vec![i as u8];
        v.extend_from_slice(&c.bytes);
        if c.to == n0 {
            write("node_datagram", format!("seed-{i:03}"), &v);
        } else if c.to == relay {
            write("relay_datagram", format!("seed-{i:03}"), &v);
        }
    }
    // The seeds authenticate at the fuzzers' network: most are not dropped as strangers.
    let mut check = fuzz::prepared(false);
    let before = check.nodes[0].node.counters().dropped_unauthenticated;
    let seeds: Vec<&veil_sim::Captured> = sim.captured.iter().filter(|c| c.to == n0).collect();
    for c in &seeds {
        check.inject(c.from, n0, c.bytes.clone());
        check.run_for(Duration::from_millis(1));
    }
    let strangers = check.nodes[0].node.counters().dropped_unauthenticated - before;
    assert!(
        strangers * 10 < seeds.len() as u64,
        "{strangers} of {} seeds unauthenticated",
        seeds.len()
    );
    write(
        "reassembly",
        "seed-0".into(),
        &[1, 7, 0, 2, 3, 1, 2, 3, 1, 7, 1, 2, 2, 4, 5],
    );
    for (i, line) in [
        r#"{"v":1,"cmd":"status"}"#,
        r#"{"v":1,"cmd":{"policy":"veilpolicy1.AAAA"}}"#,
        r#"{"v":1,"cmd":{"adopt":"veil1.AAAA"}}"#,
        r#"{"v":2,"cmd":"down"}"#,
    ]
    .iter()
    .enumerate()
    {
        write("control_request", format!("seed-{i}"), line.as_bytes());
    }
    let (join, relays) = veil_proto::create_network([3; 32], &["198.18.0.1:7000".into()]);
    let ca = veil_proto::CaKey::from_seed([4; 32]);
    let cert = ca
        .sign([5; 32], None, &["web".into()], 1_900_000_000)
        .unwrap();
    let policy = ca
        .sign_policy(1, &[("web".into(), "db".into())], &[[6; 32]])
        .unwrap();
    for (i, text) in [
        join.encode(),
        relays[0].encode(),
        ca.encode(),
        cert.encode(),
        policy.encode(),
    ]
    .iter()
    .enumerate()
    {
        write("decoders", format!("seed-{i}"), text.as_bytes());
    }
    write(
        "node_script",
        "seed-0".into(),
        &[0, 10, 4, 1, 2, 3, 4, 5, 20, 0, 1, 1, 0, 3, 8, 5, 30, 0],
    );
    write(
        "node_script",
        "seed-1".into(),
        &[6, 1, 0, 5, 50, 0, 0, 200, 0, 7, 3, 0, 0, 230, 0],
    );
    // Both nodes dual-stack, then 80 s of traffic both ways: the path surveys run.
    let mut survey = vec![7, 1, 0, 7, 9, 0];
    for _ in 0..8 {
        survey.extend_from_slice(&[0, 10, 0, 0, 11, 0, 5, 250, 0]);
    }
    write("node_script", "seed-2".into(), &survey);
}
