//! The tray icon: a V whose colour says the state (teal connected, amber connecting, grey
//! off, red when the service cannot be reached), a menu with the state, Connect or
//! Disconnect, Open Veil and Quit. Its items are kept in [`TrayItems`] so that the pump can
//! update them; without a tray (tests, desktops without one) every update is a no-op.

use crate::pump::Link;
use crate::service;
use crate::AppState;
use std::sync::Mutex;
use tauri::image::Image;
use tauri::menu::{Menu, MenuItem, PredefinedMenuItem};
use tauri::tray::TrayIconBuilder;
use tauri::{AppHandle, Manager, Runtime};
use veil_ipc::{Command, ServiceState, StateInfo};

/// The tray icon's id.
pub const TRAY_ID: &str = "veil";
const SIZE: u32 = 32;

/// The look of the icon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Look {
    /// Connected.
    On,
    /// Connecting or disconnecting.
    Busy,
    /// Disconnected or not joined.
    Off,
    /// The service cannot be reached.
    Error,
}

/// The menu items the pump updates, and the state they show.
pub struct TrayItems<R: Runtime> {
    status: MenuItem<R>,
    toggle: MenuItem<R>,
    state: Mutex<Option<ServiceState>>,
}

/// The icon for `look`, drawn at 32 px: the app's V on a dark rounded square.
pub fn icon(look: Look) -> Image<'static> {
    let (r, g, b) = match look {
        Look::On => (45, 212, 191),
        Look::Busy => (245, 176, 65),
        Look::Off => (148, 160, 180),
        Look::Error => (239, 83, 80),
    };
    let s = SIZE as f32;
    let mut rgba = Vec::with_capacity((SIZE * SIZE * 4) as usize);
    let seg = |px: f32, py: f32, ax: f32, ay: f32, bx: f32, by: f32| {
        let (dx, dy) = (bx - ax, by - ay);
        let t = (((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy)).clamp(0.0, 1.0);
        ((px - ax - t * dx).powi(2) + (py - ay - t * dy).powi(2)).sqrt()
    };
    for y in 0..SIZE {
        for x in 0..SIZE {
            let (cx, cy) = (x as f32 + 0.5, y as f32 + 0.5);
            let radius = 0.22 * s;
            let qx = ((cx - s / 2.0).abs() - (s / 2.0 - radius)).max(0.0);
            let qy = ((cy - s / 2.0).abs() - (s / 2.0 - radius)).max(0.0);
            let bg = (0.5 - ((qx * qx + qy * qy).sqrt() - radius)).clamp(0.0, 1.0);
            let d = seg(cx, cy, 0.27 * s, 0.27 * s, 0.5 * s, 0.75 * s).min(seg(
                cx,
                cy,
                0.73 * s,
                0.27 * s,
                0.5 * s,
                0.75 * s,
            ));
            let v = (0.1 * s - d + 0.5).clamp(0.0, 1.0);
            let mix = |base: f32, fg: u8| (base * (1.0 - v) + f32::from(fg) * v) as u8;
            rgba.extend_from_slice(&[mix(18.0, r), mix(27.0, g), mix(50.0, b), (255.0 * bg) as u8]);
        }
    }
    Image::new_owned(rgba, SIZE, SIZE)
}

/// Makes the tray icon and its menu.
pub fn create<R: Runtime>(app: &AppHandle<R>) -> tauri::Result<()> {
    let status = MenuItem::with_id(app, "status", "Veil: starting…", false, None::<&str>)?;
    let toggle = MenuItem::with_id(app, "toggle", "Connect", false, None::<&str>)?;
    let show = MenuItem::with_id(app, "show", "Open Veil", true, None::<&str>)?;
    let quit = MenuItem::with_id(app, "quit", "Quit Veil", true, None::<&str>)?;
    let sep = PredefinedMenuItem::separator(app)?;
    let menu = Menu::with_items(app, &[&status, &sep, &toggle, &show, &quit])?;
    TrayIconBuilder::with_id(TRAY_ID)
        .icon(icon(Look::Off))
        .tooltip("Veil")
        .menu(&menu)
        .on_menu_event(|app, event| match event.id.as_ref() {
            "toggle" => toggle_connection(app),
            "show" => show_window(app),
            "quit" => app.exit(0),
            _ => {}
        })
        .build(app)?;
    app.manage(TrayItems {
        status,
        toggle,
        state: Mutex::new(None),
    });
    Ok(())
}

fn show_window<R: Runtime>(app: &AppHandle<R>) {
    if let Some(w) = app.get_webview_window("main") {
        let _ = w.show();
        let _ = w.unminimize();
        let _ = w.set_focus();
    }
}

/// Connect or disconnect from the tray, off the UI thread; a refusal opens the window,
/// where the pump's state event explains it.
fn toggle_connection<R: Runtime>(app: &AppHandle<R>) {
    let current = app
        .try_state::<TrayItems<R>>()
        .and_then(|t| t.state.lock().ok().and_then(|s| *s));
    let cmd = match current {
        Some(ServiceState::Connected | ServiceState::Connecting) => Command::Disconnect,
        Some(ServiceState::Disconnected) => Command::Connect,
        _ => return show_window(app),
    };
    let socket = app.state::<AppState>().socket.clone();
    let app = app.clone();
    std::thread::spawn(move || {
        let r = service::call(&socket, std::time::Duration::from_secs(45), |c| {
            c.change(cmd)
        });
        if r.is_err() {
            show_window(&app);
        }
    });
}

/// Shows whether the service is reachable.
pub fn show_link<R: Runtime>(app: &AppHandle<R>, link: &Link) {
    match (&link.hello, &link.error) {
        (Some(h), _) => show_state(app, &h.state),
        (None, e) => {
            let text = match e.as_ref().map(|e| e.kind) {
                Some(service::ErrorKind::Permission) => "Veil: permission denied",
                _ => "Veil: service not running",
            };
            update(app, Look::Error, text, None, None);
        }
    }
}

/// Shows the service's state.
pub fn show_state<R: Runtime>(app: &AppHandle<R>, s: &StateInfo) {
    let (look, text, toggle) = match s.state {
        ServiceState::Connected => (
            Look::On,
            match s.overlay_ipv4 {
                Some(a) => format!("Connected as {a}"),
                None => "Connected".into(),
            },
            Some("Disconnect"),
        ),
        ServiceState::Connecting => (Look::Busy, "Connecting…".into(), Some("Disconnect")),
        ServiceState::Disconnecting => (Look::Busy, "Disconnecting…".into(), None),
        ServiceState::Disconnected => (Look::Off, "Disconnected".into(), Some("Connect")),
        ServiceState::NeedsToken => (Look::Off, "Not joined to a network".into(), None),
        ServiceState::Unknown => (Look::Off, "Unknown state".into(), None),
    };
    update(app, look, &format!("Veil: {text}"), toggle, Some(s.state));
}

fn update<R: Runtime>(
    app: &AppHandle<R>,
    look: Look,
    text: &str,
    toggle: Option<&str>,
    state: Option<ServiceState>,
) {
    let Some(items) = app.try_state::<TrayItems<R>>() else {
        return;
    };
    if let Ok(mut s) = items.state.lock() {
        *s = state;
    }
    let _ = items.status.set_text(text);
    let _ = items.toggle.set_text(toggle.unwrap_or("Connect"));
    let _ = items.toggle.set_enabled(toggle.is_some());
    if let Some(tray) = app.tray_by_id(TRAY_ID) {
        let _ = tray.set_icon(Some(icon(look)));
        let _ = tray.set_tooltip(Some(text));
    }
}
