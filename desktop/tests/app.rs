//! Every command and event of the app, on tauri's mock runtime (no display), against a
//! scripted service on a real Unix socket that speaks the protocol through `veil-ipc`'s
//! types, and the keyring's mock store. The real service, relay and window are the
//! end-to-end test's (tests/e2e/desktop.sh).
#![allow(clippy::unwrap_used)]

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tauri::ipc::{CallbackFn, InvokeBody};
use tauri::test::{get_ipc_response, mock_builder, mock_context, noop_assets, INVOKE_KEY};
use tauri::webview::InvokeRequest;
use tauri::{Listener, Manager, WebviewWindow};
use veil_desktop::secrets::{Keychain, SecretStore};
use veil_desktop::AppState;
use veil_ipc::{
    Command, ErrorCode, Event, Hello, LogLine, NodeStatusReport, PeerReport, Request, Response,
    ServiceState, StateInfo, Stats, Traffic,
};

const TOKEN: &str = "veil1-test-token";

/// What the scripted service saw and is.
#[derive(Default)]
struct Fake {
    state: Option<ServiceState>,
    tokens: Vec<String>,
    subscribers: Vec<UnixStream>,
}

struct Service {
    path: PathBuf,
    dir: PathBuf,
    fake: Arc<Mutex<Fake>>,
}

impl Service {
    fn start(name: &str) -> Service {
        let dir = std::env::temp_dir().join(format!("veil-desktop-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("veil.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let fake = Arc::new(Mutex::new(Fake {
            state: Some(ServiceState::NeedsToken),
            ..Fake::default()
        }));
        let f = Arc::clone(&fake);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let f = Arc::clone(&f);
                std::thread::spawn(move || serve(stream, &f));
            }
        });
        Service { path, dir, fake }
    }

    /// The service stops: its socket goes and subscriptions end.
    fn stop(&self) {
        let _ = std::fs::remove_file(&self.path);
        for s in self.fake.lock().unwrap().subscribers.drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn info(state: ServiceState) -> StateInfo {
    StateInfo {
        state,
        error: None,
        overlay_ipv4: (state == ServiceState::Connected).then(|| "100.64.0.7".parse().unwrap()),
        relays: vec!["198.18.0.10:7000".into()],
    }
}

fn hello(state: ServiceState) -> Hello {
    Hello {
        protocol: 2,
        min_protocol: 1,
        version: "0.1.0".into(),
        mode: "service".into(),
        state: info(state),
    }
}

fn peer() -> PeerReport {
    serde_json::from_value(json!({
        "id": "5eed5eed5eed5eed", "overlay_ipv4": "100.64.0.9", "overlay_ipv6": "fd00::9",
        "path": "relayed", "relay_reason": "no direct candidate answered", "endpoint": "198.18.0.10:7000",
        "rtt_ms": 1.25, "pmtu": 1360, "pmtu_state": "confirmed", "tx_bytes": 1000, "rx_bytes": 2000,
        "last_handshake_unix": 1, "cipher": "aes-256-gcm"
    }))
    .unwrap()
}

fn status() -> NodeStatusReport {
    serde_json::from_value(json!({
        "id": "abcdabcdabcdabcd", "overlay_ipv4": "100.64.0.7", "overlay_ipv6": "fd00::7",
        "relay": "198.18.0.10:7000", "relay_connected": true, "uptime_s": 5,
        "counters": {"tx_bytes_direct": 10, "tx_bytes_relayed": 5}
    }))
    .unwrap()
}

fn answer(cmd: Command, fake: &Mutex<Fake>) -> Response {
    let mut f = fake.lock().unwrap();
    let state = f.state.unwrap_or(ServiceState::NeedsToken);
    let refuse = |code, m: &str| Response::error(veil_ipc::RemoteError::new(code, m.into()));
    let ok = |v: Value| Response::ok(v);
    match cmd {
        Command::Hello => ok(serde_json::to_value(hello(state)).unwrap()),
        Command::Join { token } => {
            if !token.starts_with("veil1") {
                return refuse(
                    ErrorCode::BadToken,
                    "this is not a valid join token: bad prefix",
                );
            }
            f.tokens.push(token);
            f.state = Some(ServiceState::Disconnected);
            ok(serde_json::to_value(hello(ServiceState::Disconnected)).unwrap())
        }
        Command::Connect if state == ServiceState::NeedsToken => {
            refuse(ErrorCode::NoToken, "no join token yet: join first")
        }
        Command::Connect => {
            f.state = Some(ServiceState::Connected);
            ok(serde_json::to_value(hello(ServiceState::Connected)).unwrap())
        }
        Command::Disconnect => {
            f.state = Some(ServiceState::Disconnected);
            ok(serde_json::to_value(hello(ServiceState::Disconnected)).unwrap())
        }
        Command::Leave => {
            f.state = Some(ServiceState::NeedsToken);
            ok(serde_json::to_value(hello(ServiceState::NeedsToken)).unwrap())
        }
        Command::Status => ok(serde_json::to_value(status()).unwrap()),
        Command::Peers => ok(serde_json::to_value(vec![peer()]).unwrap()),
        Command::Counters => ok(serde_json::to_value(Traffic::from_status(&status(), 7)).unwrap()),
        Command::Logs { lines } => ok(serde_json::to_value(
            (0..lines.min(3))
                .map(|i| LogLine {
                    unix_ms: i as u64,
                    level: "INFO".into(),
                    message: format!("line {i}"),
                })
                .collect::<Vec<_>>(),
        )
        .unwrap()),
        other => refuse(ErrorCode::Version, &format!("unexpected {}", other.name())),
    }
}

fn write(stream: &mut UnixStream, v: &impl serde::Serialize) -> std::io::Result<()> {
    let mut line = serde_json::to_string(v).unwrap();
    line.push('\n');
    stream.write_all(line.as_bytes())
}

fn serve(stream: UnixStream, fake: &Mutex<Fake>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap_or(0) > 0 {
        let cmd = Request::parse(line.trim()).unwrap().cmd;
        line.clear();
        if cmd == Command::Subscribe {
            let state = fake
                .lock()
                .unwrap()
                .state
                .unwrap_or(ServiceState::NeedsToken);
            let events = [
                Event::State(info(state)),
                Event::PeerUp {
                    id: "5eed5eed5eed5eed".into(),
                },
                Event::Stats(Stats {
                    traffic: Traffic::from_status(&status(), 1000),
                    relay_connected: true,
                    relay_rtt_ms: Some(0.8),
                    peers: vec![peer()],
                }),
                Event::Log(LogLine {
                    unix_ms: 1,
                    level: "INFO".into(),
                    message: "peer session up".into(),
                }),
            ];
            let _ = write(
                &mut out,
                &Response::ok(serde_json::to_value(hello(state)).unwrap()),
            );
            for e in events {
                let _ = write(&mut out, &e);
            }
            fake.lock().unwrap().subscribers.push(out);
            return;
        }
        if write(&mut out, &answer(cmd, fake)).is_err() {
            return;
        }
    }
}

struct App {
    _app: tauri::App<tauri::test::MockRuntime>,
    webview: WebviewWindow<tauri::test::MockRuntime>,
    secrets: Arc<Keychain>,
}

fn mock_keychain() -> Arc<Keychain> {
    keyring::set_default_credential_builder(keyring::mock::default_credential_builder());
    Arc::new(Keychain::with_entry(
        keyring::Entry::new("org.veil.desktop", "join-token").unwrap(),
    ))
}

fn app(socket: &Path, secrets: Arc<Keychain>) -> App {
    let state = AppState::new(socket.to_owned(), secrets.clone());
    let app = veil_desktop::configure(mock_builder(), state)
        .build(mock_context(noop_assets()))
        .unwrap();
    let webview = tauri::WebviewWindowBuilder::new(&app, "main", Default::default())
        .build()
        .unwrap();
    App {
        _app: app,
        webview,
        secrets,
    }
}

/// Invokes `cmd` as the frontend would: the result, or the error object.
fn invoke(app: &App, cmd: &str, args: Value) -> Result<Value, Value> {
    get_ipc_response(
        &app.webview,
        InvokeRequest {
            cmd: cmd.into(),
            callback: CallbackFn(0),
            error: CallbackFn(1),
            url: "tauri://localhost".parse().unwrap(),
            body: InvokeBody::Json(args),
            headers: Default::default(),
            invoke_key: INVOKE_KEY.to_string(),
        },
    )
    .map(|b| b.deserialize::<Value>().unwrap())
}

#[test]
fn every_command_against_the_service() {
    let svc = Service::start("commands");
    let app = app(&svc.path, mock_keychain());

    let h = invoke(&app, "hello", json!({})).unwrap();
    assert_eq!(h["state"], "needs_token");
    assert_eq!(h["mode"], "service");

    // Keychain: available and empty; nothing to join with.
    let k = invoke(&app, "keychain", json!({})).unwrap();
    assert_eq!(
        k,
        json!({"available": true, "has_token": false, "error": null})
    );
    assert_eq!(
        invoke(&app, "join_remembered", json!({})).unwrap(),
        Value::Null
    );

    // Connect before joining: the service's refusal, with its code and a hint.
    let e = invoke(&app, "connect", json!({})).unwrap_err();
    assert_eq!(e["kind"], "refused");
    assert_eq!(e["code"], "no_token");
    assert!(e["hint"].as_str().unwrap().contains("join token"));

    // Join: empty input, a bad token, then the real one remembered.
    let e = invoke(&app, "join", json!({"token": "  ", "remember": true})).unwrap_err();
    assert_eq!(e["kind"], "input");
    let e = invoke(&app, "join", json!({"token": "nope", "remember": true})).unwrap_err();
    assert_eq!(e["code"], "bad_token");
    assert_eq!(
        app.secrets.load().unwrap(),
        None,
        "a refused token is not remembered"
    );
    let j = invoke(
        &app,
        "join",
        json!({"token": format!(" {TOKEN}\n"), "remember": true}),
    )
    .unwrap();
    assert_eq!(j["hello"]["state"], "disconnected");
    assert_eq!(j["remembered"], true);
    assert_eq!(app.secrets.load().unwrap().as_deref(), Some(TOKEN));
    assert_eq!(svc.fake.lock().unwrap().tokens, [TOKEN]);
    // Join without remembering leaves the keychain alone.
    let j = invoke(&app, "join", json!({"token": TOKEN, "remember": false})).unwrap();
    assert_eq!(j["remembered"], false);

    let h = invoke(&app, "connect", json!({})).unwrap();
    assert_eq!(h["state"], "connected");
    assert_eq!(h["overlay_ipv4"], "100.64.0.7");

    let s = invoke(&app, "status", json!({})).unwrap();
    assert_eq!(s["relay_connected"], true);
    let p = invoke(&app, "peers", json!({})).unwrap();
    assert_eq!(p[0]["path"], "relayed");
    assert_eq!(p[0]["pmtu"], 1360);
    let c = invoke(&app, "counters", json!({})).unwrap();
    assert_eq!(c["tx_bytes"], 15);
    let l = invoke(&app, "logs", json!({"lines": 2})).unwrap();
    assert_eq!(l.as_array().unwrap().len(), 2);
    let e = invoke(&app, "logs", json!({})).unwrap_err();
    assert!(
        e.to_string().contains("lines"),
        "a missing argument is named: {e}"
    );

    let h = invoke(&app, "disconnect", json!({})).unwrap();
    assert_eq!(h["state"], "disconnected");

    // Leave, keeping the keychain's token; then join again with it, as the app does at start.
    let h = invoke(&app, "leave", json!({"forget": false})).unwrap();
    assert_eq!(h["state"], "needs_token");
    assert_eq!(
        invoke(&app, "keychain", json!({})).unwrap()["has_token"],
        true
    );
    let h = invoke(&app, "join_remembered", json!({})).unwrap();
    assert_eq!(h["state"], "disconnected");
    assert_eq!(
        svc.fake.lock().unwrap().tokens.last().map(String::as_str),
        Some(TOKEN)
    );

    // Leave and forget; forget_token on an empty keychain is fine too.
    invoke(&app, "leave", json!({"forget": true})).unwrap();
    assert_eq!(app.secrets.load().unwrap(), None);
    invoke(&app, "forget_token", json!({})).unwrap();
}

#[test]
fn a_missing_service_is_named_with_the_fix() {
    let dir = std::env::temp_dir().join(format!("veil-desktop-none-{}", std::process::id()));
    let app = app(&dir.join("veil.sock"), mock_keychain());
    for cmd in [
        "hello",
        "connect",
        "disconnect",
        "status",
        "peers",
        "counters",
    ] {
        let e = invoke(&app, cmd, json!({})).unwrap_err();
        assert_eq!(e["kind"], "service_missing", "{cmd}: {e}");
        assert!(e["hint"]
            .as_str()
            .unwrap()
            .contains("sudo veil service install"));
    }
}

#[test]
fn permission_and_protocol_errors_read_well() {
    use veil_desktop::service::{ErrorKind, UiError};
    let path = Path::new("/var/lib/veil/veil.sock");
    let e = UiError::from_client(
        veil_ipc::ClientError::PermissionDenied {
            path: path.to_owned(),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        },
        path,
    );
    assert_eq!(e.kind, ErrorKind::Permission);
    assert!(e.hint.unwrap().contains("usermod -aG veil"));
    let e = UiError::from_client(
        veil_ipc::ClientError::Remote(veil_ipc::RemoteError::new(
            ErrorCode::NotService,
            "`hello` is answered by the veil service only".into(),
        )),
        path,
    );
    assert!(e.hint.unwrap().contains("veil down"));
}

/// A keychain whose next operation fails as a desktop without a Secret Service does.
fn failing_keychain() -> Arc<Keychain> {
    keyring::set_default_credential_builder(keyring::mock::default_credential_builder());
    let entry = keyring::Entry::new("org.veil.desktop", "join-token").unwrap();
    let mock: &keyring::mock::MockCredential = entry.get_credential().downcast_ref().unwrap();
    mock.set_error(keyring::Error::NoStorageAccess(
        "org.freedesktop.secrets was not provided by any .service files".into(),
    ));
    Arc::new(Keychain::with_entry(entry))
}

#[test]
fn a_keychain_that_fails_is_reported_not_fatal() {
    let svc = Service::start("nokeychain");
    let app1 = app(&svc.path, failing_keychain());
    let k = invoke(&app1, "keychain", json!({})).unwrap();
    assert_eq!(k["available"], false);
    assert_eq!(k["error"]["kind"], "keychain");
    let message = k["error"]["message"].as_str().unwrap();
    assert!(message.contains("No keychain is available"), "{message}");
    assert!(k["error"]["hint"]
        .as_str()
        .unwrap()
        .contains("Secret Service"));
    // The join itself succeeds; the keychain's failure comes with it.
    let app2 = app(&svc.path, failing_keychain());
    let j = invoke(&app2, "join", json!({"token": TOKEN, "remember": true})).unwrap();
    assert_eq!(j["remembered"], false);
    assert_eq!(j["hello"]["state"], "disconnected");
    assert_eq!(j["keychain_error"]["kind"], "keychain");
}

#[test]
fn events_reach_the_frontend_and_a_stopped_service_is_noticed() {
    let svc = Service::start("events");
    svc.fake.lock().unwrap().state = Some(ServiceState::Connected);
    let app = app(&svc.path, mock_keychain());
    let (tx, rx) = mpsc::channel::<(String, Value)>();
    for name in [veil_desktop::EVENT, veil_desktop::LINK] {
        let tx = tx.clone();
        app.webview.listen_any(name, move |e| {
            let _ = tx.send((name.to_owned(), serde_json::from_str(e.payload()).unwrap()));
        });
    }
    veil_desktop::start_pump(app.webview.app_handle());
    let mut got = Vec::new();
    while got.len() < 5 {
        got.push(rx.recv_timeout(Duration::from_secs(10)).unwrap());
    }
    assert_eq!(got[0].0, veil_desktop::LINK);
    assert_eq!(got[0].1["up"], true);
    assert_eq!(got[0].1["hello"]["state"], "connected");
    let events: Vec<&Value> = got[1..].iter().map(|(_, v)| v).collect();
    assert_eq!(events[0]["event"], "state");
    assert_eq!(events[0]["overlay_ipv4"], "100.64.0.7");
    assert_eq!(events[1]["event"], "peer_up");
    assert_eq!(events[2]["event"], "stats");
    assert_eq!(events[2]["traffic"]["tx_bytes"], 15);
    assert_eq!(
        events[2]["peers"][0]["relay_reason"],
        "no direct candidate answered"
    );
    assert_eq!(events[3]["event"], "log");
    assert_eq!(events[3]["message"], "peer session up");

    // The service stops: the frontend hears it once, with the reason and the fix.
    svc.stop();
    let (name, link) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(name, veil_desktop::LINK);
    assert_eq!(link["up"], false);
    assert_eq!(link["error"]["kind"], "service_missing");
    assert!(
        rx.recv_timeout(Duration::from_millis(2500)).is_err(),
        "no repeated link events while nothing changes"
    );
}
