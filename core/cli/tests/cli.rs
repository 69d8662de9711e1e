//! End-to-end checks of the `veil` binary that need no running node and no root: network
//! creation, and the one-line errors of `up`, `status` and `network create`.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use veil_proto::{JoinToken, RelayToken};

fn veil(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_veil"))
        .args(args)
        .env_remove("VEIL_TOKEN")
        .env_remove("VEIL_TOKEN_FILE")
        .env_remove("VEIL_STATE_DIR")
        .env_remove("VEIL_TUN")
        .output()
        .expect("run veil")
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("veil-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn create(dir: &Path, relays: &[&str]) -> Output {
    let mut args = vec!["network", "create", "--out", dir.to_str().unwrap()];
    for r in relays {
        args.extend(["--relay", r]);
    }
    veil(&args)
}

#[test]
fn network_create_prints_one_token_and_writes_private_files() {
    let dir = scratch("create");
    let out = create(&dir, &["198.18.0.1:7000", "relay.example:443"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let token = JoinToken::decode(stdout.trim()).expect("stdout is a join token");
    assert_eq!(token.relays.len(), 2);
    assert_eq!(token.relays[0].addr, "198.18.0.1:7000");
    assert_eq!(token.relays[1].addr, "relay.example:443");

    let files = ["join.token", "relay-1.token", "relay-2.token"];
    for f in files {
        let mode = std::fs::metadata(dir.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    assert!(!dir.join("relay-3.token").exists());
    let join_file = std::fs::read_to_string(dir.join("join.token")).unwrap();
    assert_eq!(JoinToken::decode(&join_file).unwrap(), token);
    RelayToken::decode(&std::fs::read_to_string(dir.join("relay-2.token")).unwrap()).unwrap();

    // A second run refuses to overwrite the network.
    let again = create(&dir, &["198.18.0.1:7000"]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_relay_value_is_named() {
    let dir = scratch("badrelay");
    for bad in ["198.18.0.1", "relay.example:http"] {
        let out = create(&dir, &["198.18.0.1:7000", bad]);
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(err.contains(&format!("`{bad}`")), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    assert!(!dir.join("join.token").exists());
}

fn corrupted_token() -> String {
    let dir = scratch("corrupt-src");
    let out = create(&dir, &["198.18.0.1:7000"]);
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    std::fs::remove_dir_all(&dir).unwrap();
    let mut bytes = token.into_bytes();
    let i = bytes.len() - 10;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap()
}

#[test]
fn corrupted_token_is_refused_before_anything_else() {
    let state = scratch("corrupt");
    let token = corrupted_token();
    let out = veil(&[
        "up",
        "--token",
        &token,
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("the join token is corrupted (checksum mismatch): copy it again in full"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        !state.exists(),
        "nothing is created before the token is valid"
    );

    // Same through a token file.
    let file = scratch("corrupt-file");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let out = veil(&[
        "up",
        "--token-file",
        file.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    assert!(
        stderr(&out).contains("checksum mismatch"),
        "{}",
        stderr(&out)
    );
    std::fs::remove_file(&file).unwrap();
}

#[test]
fn unknown_config_key_is_named() {
    let dir = scratch("config");
    let out = create(&dir, &["198.18.0.1:7000"]);
    assert!(out.status.success());
    let cfg = dir.join("veil.toml");
    std::fs::write(&cfg, "keepalive_secs = 10\nkeepalive_sec = 5\n").unwrap();
    let state = dir.join("state");
    let out = veil(&[
        "up",
        "--token-file",
        dir.join("join.token").to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("unknown key `keepalive_sec`"), "{err}");
    assert!(err.contains(cfg.to_str().unwrap()), "{err}");
    assert!(
        !state.exists(),
        "config is checked before the state dir is made"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn status_without_node_says_so() {
    let state = scratch("nonode");
    let out = veil(&["status", "--json", "--state-dir", state.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    let expected = format!(
        "no veil node is running with state dir {} (no socket at {}/veil.sock)",
        state.display(),
        state.display()
    );
    assert!(err.contains(&expected), "{err}");
    for cmd in ["peers", "down"] {
        let out = veil(&[cmd, "--state-dir", state.to_str().unwrap()]);
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("no veil node is running"),
            "{cmd}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn missing_token_is_explained() {
    let state = scratch("notoken");
    let out = veil(&["up", "--state-dir", state.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no join token"), "{}", stderr(&out));
}

#[test]
fn network_rotate_keeps_relays_and_names_and_checks_its_inputs() {
    let d = scratch("rotate");
    let (old, new) = (d.join("old"), d.join("new"));
    assert!(create(&old, &["198.18.0.1:7000", "198.18.0.2:7000"])
        .status
        .success());
    let o = veil(&[
        "network",
        "rotate",
        "--from",
        old.to_str().unwrap(),
        "--out",
        new.to_str().unwrap(),
        "--overlap-secs",
        "3600",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let read = |p: PathBuf| std::fs::read_to_string(p).unwrap();
    let j0 = JoinToken::decode(&read(old.join("join.token"))).unwrap();
    let j1 = JoinToken::decode(&read(new.join("join.token"))).unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), j1.encode());
    assert!(j1.supersedes(&j0));
    assert_eq!(j1.relays, j0.relays);
    assert_eq!(j1.keys().ula_prefix(), j0.keys().ula_prefix());
    assert_ne!(j1.secret, j0.secret);
    for n in 1..=2 {
        let r0 = RelayToken::decode(&read(old.join(format!("relay-{n}.token")))).unwrap();
        let r1 = RelayToken::decode(&read(new.join(format!("relay-{n}.token")))).unwrap();
        assert!(r1.supersedes(&r0));
        assert_eq!(r1.relay_base, *j1.keys().relay().bytes());
        let mode = std::fs::metadata(new.join(format!("relay-{n}.token")))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // Refuses to overwrite, a short overlap, and relay tokens of another network.
    let o = veil(&[
        "network",
        "rotate",
        "--from",
        old.to_str().unwrap(),
        "--out",
        new.to_str().unwrap(),
    ]);
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
    let o = veil(&[
        "network",
        "rotate",
        "--from",
        old.to_str().unwrap(),
        "--out",
        d.join("x").to_str().unwrap(),
        "--overlap-secs",
        "5",
    ]);
    assert!(stderr(&o).contains("--overlap-secs"), "{}", stderr(&o));
    let other = d.join("other");
    assert!(create(&other, &["198.18.0.1:7000"]).status.success());
    std::fs::copy(other.join("relay-1.token"), old.join("relay-1.token")).unwrap();
    let o = veil(&[
        "network",
        "rotate",
        "--from",
        old.to_str().unwrap(),
        "--out",
        d.join("y").to_str().unwrap(),
    ]);
    assert!(
        stderr(&o).contains("is not the token of relay 1"),
        "{}",
        stderr(&o)
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn cert_revoke_adds_to_the_policy_in_force() {
    let d = scratch("revoke");
    let o = veil(&[
        "network",
        "create",
        "--relay",
        "198.18.0.1:7000",
        "--with-ca",
        "--out",
        d.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ca = d.join("ca.key");
    let (k1, k2) = ("11".repeat(32), "22".repeat(32));
    let p1 = d.join("p1");
    let o = veil(&[
        "policy",
        "sign",
        "--ca",
        ca.to_str().unwrap(),
        "--serial",
        "7",
        "--allow",
        "web:db",
        "--revoke",
        &k1,
        "--out",
        p1.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = veil(&[
        "cert",
        "revoke",
        "--ca",
        ca.to_str().unwrap(),
        "--policy",
        p1.to_str().unwrap(),
        "--node-key",
        &k2,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let ca_pub = veil_proto::CaKey::decode(&std::fs::read_to_string(&ca).unwrap())
        .unwrap()
        .public();
    let p = veil_proto::Policy::decode(&text, &ca_pub).unwrap();
    assert_eq!(p.serial, 8);
    assert_eq!(p.rules, vec![("web".to_string(), "db".to_string())]);
    assert!(p.is_revoked(&[0x11; 32]) && p.is_revoked(&[0x22; 32]));
    let o = veil(&[
        "cert",
        "revoke",
        "--ca",
        ca.to_str().unwrap(),
        "--node-key",
        "xyz",
    ]);
    assert!(stderr(&o).contains("64 hex digits"), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn relay_tcp_ports_go_into_the_token_and_survive_rotation() {
    let d = scratch("tcpport");
    let (old, new) = (d.join("old"), d.join("new"));
    let out = veil(&[
        "network",
        "create",
        "--out",
        old.to_str().unwrap(),
        "--relay",
        "198.18.0.1:7000",
        "--relay",
        "198.18.0.2:7000",
        "--relay-tcp-port",
        "8443",
        "--relay-tcp-port",
        "0",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--tcp-listen HOST:8443"),
        "{}",
        stderr(&out)
    );
    let j0 = JoinToken::decode(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    let ports: Vec<u16> = j0.relays.iter().map(|r| r.tcp_port).collect();
    assert_eq!(ports, [8443, 0]);
    let o = veil(&[
        "network",
        "rotate",
        "--from",
        old.to_str().unwrap(),
        "--out",
        new.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j1 = JoinToken::decode(String::from_utf8_lossy(&o.stdout).trim()).unwrap();
    assert_eq!(j1.relays, j0.relays, "rotation keeps the TCP ports");
    // Without the flag: 443 everywhere, and no trailer (the token is as long as before).
    let plain = create(&d.join("plain"), &["198.18.0.1:7000", "198.18.0.2:7000"]);
    let jp = JoinToken::decode(String::from_utf8_lossy(&plain.stdout).trim()).unwrap();
    assert!(jp.relays.iter().all(|r| r.tcp_port == 443));
    // Neither once nor once per relay: an error naming the flag.
    let bad = veil(&[
        "network",
        "create",
        "--out",
        d.join("bad").to_str().unwrap(),
        "--relay",
        "198.18.0.1:7000",
        "--relay-tcp-port",
        "1",
        "--relay-tcp-port",
        "2",
    ]);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("--relay-tcp-port"),
        "{}",
        stderr(&bad)
    );
    std::fs::remove_dir_all(&d).unwrap();
}
