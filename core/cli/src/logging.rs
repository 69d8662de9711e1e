//! Logging to stderr through `tracing`, filtered by `VEIL_LOG` / `RUST_LOG` or the config's
//! `log`. Keys never appear in logs; addresses only at debug and below. The service also
//! keeps its recent lines in a [`LogRing`] (at most `info`, so never an address) for the
//! control socket's `logs` and its subscribers.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;
use veil_ipc::{Event, LogLine};

/// The filter from `VEIL_LOG`, else `RUST_LOG`.
pub fn env_filter() -> Option<String> {
    ["VEIL_LOG", "RUST_LOG"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
}

fn filter(text: &str) -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_new(text)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
}

fn stderr_layer<S>() -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
}

/// Installs the stderr subscriber with `filter` (falls back to `info` if it does not parse).
pub fn init(text: &str) {
    let _ = tracing_subscriber::registry()
        .with(stderr_layer().with_filter(filter(text)))
        .try_init();
}

/// Installs the stderr subscriber and feeds `ring` with the same lines, at most `info`.
pub fn init_with_ring(text: &str, ring: Arc<LogRing>) {
    let capped = tracing_subscriber::filter::filter_fn(|m| *m.level() <= tracing::Level::INFO);
    let _ = tracing_subscriber::registry()
        .with(stderr_layer().with_filter(filter(text)))
        .with(
            RingLayer(ring)
                .with_filter(filter(text))
                .with_filter(capped),
        )
        .try_init();
}

/// The newest log lines, bounded, and a channel that carries each new one as an event.
#[derive(Debug)]
pub struct LogRing {
    lines: Mutex<VecDeque<LogLine>>,
    capacity: usize,
    events: broadcast::Sender<Event>,
}

impl LogRing {
    /// A ring of `capacity` lines that also sends each line on `events`.
    pub fn new(capacity: usize, events: broadcast::Sender<Event>) -> Arc<Self> {
        Arc::new(LogRing {
            lines: Mutex::new(VecDeque::with_capacity(capacity)),
            capacity,
            events,
        })
    }

    /// Keeps `line` (dropping the oldest when full) and sends it to subscribers.
    pub fn push(&self, line: LogLine) {
        if let Ok(mut lines) = self.lines.lock() {
            if lines.len() == self.capacity {
                lines.pop_front();
            }
            lines.push_back(line.clone());
        }
        // Nobody subscribed is the usual case.
        let _ = self.events.send(Event::Log(line));
    }

    /// The newest `n` lines, oldest first.
    pub fn tail(&self, n: usize) -> Vec<LogLine> {
        match self.lines.lock() {
            Ok(lines) => lines
                .iter()
                .skip(lines.len().saturating_sub(n))
                .cloned()
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

struct RingLayer(Arc<LogRing>);

impl<S: tracing::Subscriber> Layer<S> for RingLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut text = Text::default();
        event.record(&mut text);
        self.0.push(LogLine {
            unix_ms: veil_ipc::unix_ms(),
            level: event.metadata().level().to_string(),
            message: text.0,
        });
    }
}

/// The message, then `key=value` for each other field, as the stderr log shows them.
#[derive(Default)]
struct Text(String);

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write as _;
        if field.name() == "message" {
            let rest = std::mem::take(&mut self.0);
            let _ = write!(self.0, "{value:?}");
            if !rest.is_empty() {
                self.0.push(' ');
                self.0.push_str(&rest);
            }
        } else {
            if !self.0.is_empty() {
                self.0.push(' ');
            }
            let _ = write!(self.0, "{}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            use std::fmt::Write as _;
            if !self.0.is_empty() {
                self.0.push(' ');
            }
            let _ = write!(self.0, "{}={value}", field.name());
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_newest_lines_and_sends_each() {
        let (tx, mut rx) = broadcast::channel(16);
        let ring = LogRing::new(3, tx);
        for i in 0..5 {
            ring.push(LogLine {
                unix_ms: i,
                level: "INFO".into(),
                message: format!("line {i}"),
            });
        }
        let tail: Vec<_> = ring.tail(10).into_iter().map(|l| l.message).collect();
        assert_eq!(tail, ["line 2", "line 3", "line 4"]);
        assert_eq!(ring.tail(1)[0].message, "line 4");
        assert!(matches!(rx.try_recv().unwrap(), Event::Log(l) if l.message == "line 0"));
    }

    #[test]
    fn lines_read_like_the_log() {
        let (tx, _) = broadcast::channel(16);
        let ring = LogRing::new(8, tx);
        let subscriber = tracing_subscriber::registry().with(
            RingLayer(ring.clone()).with_filter(tracing_subscriber::filter::LevelFilter::INFO),
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(peer = "ab12", "peer session up");
            tracing::debug!("an address: hidden");
            tracing::warn!("relay stopped answering");
        });
        let lines = ring.tail(8);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].message, "peer session up peer=ab12");
        assert_eq!(lines[0].level, "INFO");
        assert_eq!(lines[1].level, "WARN");
    }
}
