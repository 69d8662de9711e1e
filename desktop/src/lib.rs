//! # veil-desktop
//!
//! The desktop app: an unprivileged window and tray icon in front of the `veil` service,
//! which runs the node as root. The app talks to the service's control socket with
//! `veil-ipc` (root and group `veil` only) and holds no key; it may remember the join token
//! in the user's keychain ([`secrets`]).
//!
//! - [`commands`]: what the frontend (ui/app.js) invokes; each one request to the service.
//! - [`pump`]: a thread subscribed to the service that emits its events to the frontend
//!   (`veil://event`) and whether the service is reachable (`veil://link`), and keeps the
//!   tray in step; it reconnects by itself.
//! - [`tray`]: the tray icon (state, connect/disconnect, open, quit).
//! - [`service`]: the socket and the app's error shape.

pub mod commands;
pub mod pump;
pub mod secrets;
pub mod service;
pub mod tray;

use secrets::SecretStore;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tauri::{Manager, Runtime};

/// The event that carries the service's events to the frontend (a `veil_ipc::Event`).
pub const EVENT: &str = "veil://event";
/// The event that says whether the service is reachable (a [`pump::Link`]).
pub const LINK: &str = "veil://link";

/// What every command and the pump share.
pub struct AppState {
    /// The service's control socket.
    pub socket: PathBuf,
    /// Where the token is remembered.
    pub secrets: Arc<dyn SecretStore>,
    /// The event pump, once started.
    pub pump: Mutex<Option<pump::Pump>>,
}

impl AppState {
    /// State for `socket` with the platform keychain.
    pub fn new(socket: PathBuf, secrets: Arc<dyn SecretStore>) -> Self {
        AppState {
            socket,
            secrets,
            pump: Mutex::new(None),
        }
    }
}

/// The app's commands and state on `builder` (the real one, or tauri's mock in tests).
pub fn configure<R: Runtime>(builder: tauri::Builder<R>, state: AppState) -> tauri::Builder<R> {
    builder
        .manage(state)
        .invoke_handler(tauri::generate_handler![
            commands::hello,
            commands::status,
            commands::peers,
            commands::counters,
            commands::logs,
            commands::join,
            commands::join_remembered,
            commands::connect,
            commands::disconnect,
            commands::leave,
            commands::keychain,
            commands::forget_token,
        ])
}

/// Starts the event pump of `app` (once).
pub fn start_pump<R: Runtime>(app: &tauri::AppHandle<R>) {
    let state = app.state::<AppState>();
    let mut slot = state.pump.lock().unwrap_or_else(|p| p.into_inner());
    if slot.is_none() {
        *slot = Some(pump::Pump::start(app.clone(), state.socket.clone()));
    }
}

/// Runs the app (the binary's `main`).
pub fn run() {
    let state = AppState::new(service::socket_path(), Arc::new(secrets::Keychain::new()));
    let app = configure(tauri::Builder::default(), state)
        .setup(|app| {
            if let Err(e) = tray::create(app.handle()) {
                // No tray on this desktop: the window is the app, and closing it quits.
                eprintln!("veil-desktop: no tray icon ({e})");
            }
            start_pump(app.handle());
            Ok(())
        })
        .on_window_event(|window, event| {
            // With a tray, closing the window keeps the app (and its tray icon) running.
            if let tauri::WindowEvent::CloseRequested { api, .. } = event {
                if window
                    .app_handle()
                    .try_state::<tray::TrayItems<tauri::Wry>>()
                    .is_some()
                {
                    api.prevent_close();
                    let _ = window.hide();
                }
            }
        })
        .build(tauri::generate_context!());
    match app {
        Ok(app) => app.run(|_, _| {}),
        Err(e) => {
            eprintln!("veil-desktop: cannot start: {e}");
            std::process::exit(1);
        }
    }
}
