//! The event pump: one thread that keeps a subscription to the service open, emits each of
//! its events to the frontend ([`crate::EVENT`]), says whether the service is reachable
//! ([`crate::LINK`], only when that changes or the reason does) and keeps the tray in step.
//! When the service is missing, refuses or stops, it tries again every second.

use crate::service::UiError;
use crate::{tray, EVENT, LINK};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tauri::{AppHandle, Emitter, Runtime};
use veil_ipc::{Client, Closer, Event, Hello};

/// How long between attempts while the service cannot be reached.
pub const RETRY: Duration = Duration::from_secs(1);

/// Whether the app reaches the service.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Link {
    /// A subscription is open.
    pub up: bool,
    /// The service's `hello` when it is.
    pub hello: Option<Hello>,
    /// Why not, when it is not.
    pub error: Option<UiError>,
}

/// The running pump; dropping it stops the thread.
pub struct Pump {
    stop: Arc<AtomicBool>,
    closer: Arc<Mutex<Option<Closer>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Pump {
    /// Starts the thread for `app` and the socket at `socket`.
    pub fn start<R: Runtime>(app: AppHandle<R>, socket: PathBuf) -> Pump {
        let stop = Arc::new(AtomicBool::new(false));
        let closer = Arc::new(Mutex::new(None));
        let (s, c) = (Arc::clone(&stop), Arc::clone(&closer));
        let thread = std::thread::Builder::new()
            .name("veil-events".into())
            .spawn(move || run(&app, &socket, &s, &c))
            .ok();
        Pump {
            stop,
            closer,
            thread,
        }
    }
}

impl Drop for Pump {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(c) = self.closer.lock().ok().and_then(|mut c| c.take()) {
            c.close();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run<R: Runtime>(
    app: &AppHandle<R>,
    socket: &Path,
    stop: &AtomicBool,
    closer: &Mutex<Option<Closer>>,
) {
    let mut last: Option<Link> = None;
    // Only changes reach the frontend: up or down, another hello, another kind of failure
    // (a service that stopped and then is missing is one failure, not two).
    let same = |a: &Link, b: &Link| {
        a.up == b.up
            && a.hello == b.hello
            && a.error.as_ref().map(|e| e.kind) == b.error.as_ref().map(|e| e.kind)
    };
    let mut say = |link: Link| {
        if !last.as_ref().is_some_and(|l| same(l, &link)) {
            tray::show_link(app, &link);
            let _ = app.emit(LINK, &link);
            last = Some(link);
        }
    };
    while !stop.load(Ordering::SeqCst) {
        let down = match Client::connect(socket).and_then(Client::subscribe) {
            Ok((hello, mut events)) => {
                if let Ok(c) = events.closer() {
                    if let Ok(mut slot) = closer.lock() {
                        *slot = Some(c);
                    }
                }
                say(Link {
                    up: true,
                    hello: Some(hello),
                    error: None,
                });
                let mut why = None;
                while !stop.load(Ordering::SeqCst) {
                    match events.next_event() {
                        Ok(Some(e)) => {
                            if let Event::State(s) = &e {
                                tray::show_state(app, s);
                            }
                            let _ = app.emit(EVENT, &e);
                        }
                        Ok(None) => break,
                        Err(e) => {
                            why = Some(UiError::from_client(e, socket));
                            break;
                        }
                    }
                }
                why.unwrap_or_else(|| {
                    UiError::new(
                        crate::service::ErrorKind::ServiceMissing,
                        "The Veil service stopped.",
                    )
                    .with_hint("It restarts by itself after a crash; otherwise start it with `sudo systemctl start veil`.")
                })
            }
            Err(e) => UiError::from_client(e, socket),
        };
        if stop.load(Ordering::SeqCst) {
            return;
        }
        say(Link {
            up: false,
            hello: None,
            error: Some(down),
        });
        for _ in 0..10 {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(RETRY / 10);
        }
    }
}
