//! Logging to stderr through `tracing`, filtered by `VEIL_LOG` / `RUST_LOG` or the config's
//! `log`. Keys never appear in logs; addresses only at debug and below.

use std::io::IsTerminal;

/// The filter from `VEIL_LOG`, else `RUST_LOG`.
pub fn env_filter() -> Option<String> {
    ["VEIL_LOG", "RUST_LOG"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
}

/// Installs the stderr subscriber with `filter` (falls back to `info` if it does not parse).
pub fn init(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
