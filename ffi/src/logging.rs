//! Log forwarding: the node's `tracing` events go to the app's [`LogSink`] (Android's
//! `Log`, iOS's `os_log`), through a dispatcher of the node's own (no global subscriber; each
//! node's runtime threads carry it).

use std::fmt::Write as _;
use std::sync::Arc;
use tracing::field::{Field, Visit};
use tracing::{Dispatch, Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::EnvFilter;

/// Severity of a log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum LogLevel {
    /// Something failed.
    Error,
    /// Something is wrong but the node goes on.
    Warn,
    /// What a user may want to know (relay up, peer up, path changes).
    Info,
    /// Details for a bug report.
    Debug,
    /// Everything.
    Trace,
}

/// Where the node's logs go.
#[uniffi::export(with_foreign)]
pub trait LogSink: Send + Sync {
    /// One log line: `target` is the Rust module, `message` the text with its fields
    /// (`key=value`). Called from the node's threads; must not block for long, and must not
    /// throw (an exception here is a panic in the node's thread: catch everything).
    fn log(&self, level: LogLevel, target: String, message: String);
}

struct SinkLayer(Arc<dyn LogSink>);

#[derive(Default)]
struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let rest = std::mem::take(&mut self.0);
            let _ = write!(self.0, "{value:?}");
            self.0.push_str(&rest);
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.insert_str(0, value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

impl<S: Subscriber> Layer<S> for SinkLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let level = match *meta.level() {
            tracing::Level::ERROR => LogLevel::Error,
            tracing::Level::WARN => LogLevel::Warn,
            tracing::Level::INFO => LogLevel::Info,
            tracing::Level::DEBUG => LogLevel::Debug,
            tracing::Level::TRACE => LogLevel::Trace,
        };
        let mut line = Line::default();
        event.record(&mut line);
        self.0.log(level, meta.target().to_owned(), line.0);
    }
}

/// A dispatcher sending what `filter` lets through to `sink` (the filter was checked with
/// the configuration).
pub(crate) fn dispatch(sink: Arc<dyn LogSink>, filter: &str) -> Dispatch {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    Dispatch::new(
        tracing_subscriber::registry()
            .with(filter)
            .with(SinkLayer(sink)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Keep(Mutex<Vec<(LogLevel, String, String)>>);
    impl LogSink for Keep {
        fn log(&self, level: LogLevel, target: String, message: String) {
            self.0.lock().expect("lock").push((level, target, message));
        }
    }

    #[test]
    fn lines_carry_level_target_message_and_fields() {
        let keep = Arc::new(Keep::default());
        let d = dispatch(keep.clone(), "info");
        tracing::dispatcher::with_default(&d, || {
            tracing::info!(peer = "ab12", "peer session up");
            tracing::debug!("filtered out");
        });
        let lines = keep.0.lock().expect("lock");
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0].0, LogLevel::Info);
        assert_eq!(lines[0].1, module_path!());
        assert_eq!(lines[0].2, "peer session up peer=ab12");
    }
}
