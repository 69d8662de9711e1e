//! The `veil` binary: argument parsing and dispatch. Each command lives in its own module;
//! every failure is printed as one line on stderr and exits with status 1 (usage errors: 2).

mod addr;
mod args;
mod cert;
mod config;
mod error;
mod logging;
mod network;
mod ping;
mod query;
mod relay_cmd;
mod service;
mod up;

use args::{CertCmd, Cli, Cmd, NetworkCmd, PolicyCmd, RelaySub, ServiceCmd};
use clap::Parser;
use error::CliError;
use std::future::Future;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !long_running(&cli.cmd) {
        quiet_broken_pipe();
    }
    match dispatch(&cli.cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("veil: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The commands that run a node, a relay or the service: they keep Rust's default of
/// ignoring SIGPIPE, so that a peer closing a socket is an error to handle, not an exit.
fn long_running(cmd: &Cmd) -> bool {
    matches!(cmd, Cmd::Up(_) | Cmd::Service(ServiceCmd::Run(_)))
        || matches!(cmd, Cmd::Relay(r) if r.sub.is_none())
}

/// A short command whose reader went away (`veil status | head`, `| grep -q`) ends there,
/// quietly, as Unix tools do, instead of panicking in `println!` on the broken pipe.
fn quiet_broken_pipe() {
    #[cfg(unix)]
    // SAFETY: restores the default disposition of one signal before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn dispatch(cmd: &Cmd) -> Result<(), CliError> {
    match cmd {
        Cmd::Network(NetworkCmd::Create(a)) => network::create(a),
        Cmd::Network(NetworkCmd::Rotate(a)) => network::rotate(a),
        Cmd::Network(NetworkCmd::Adopt(a)) => query::adopt(a),
        Cmd::Relay(r) => match &r.sub {
            Some(RelaySub::Status(a)) => query::relay_status(a),
            Some(RelaySub::Adopt(a)) => query::relay_adopt(a),
            None => relay_cmd::run(&r.run),
        },
        Cmd::Up(a) => up::up(a),
        Cmd::Status(a) => query::status(a),
        Cmd::Peers(a) => query::peers(a),
        Cmd::Down(a) => query::down(a),
        Cmd::Ping(a) => ping::ping(a),
        Cmd::Key(a) => cert::key(a),
        Cmd::Cert(CertCmd::Sign(a)) => cert::sign(a),
        Cmd::Cert(CertCmd::Revoke(a)) => cert::revoke(a),
        Cmd::Policy(PolicyCmd::Sign(a)) => cert::policy_sign(a),
        Cmd::Policy(PolicyCmd::Push(a)) => query::policy_push(a),
        Cmd::Service(s) => match s {
            ServiceCmd::Run(a) => service::run(a),
            ServiceCmd::Install(a) => service::install(a),
            ServiceCmd::Uninstall(a) => service::uninstall(a),
            ServiceCmd::Status(a) => service::status(a),
            ServiceCmd::Join(a) => service::join(a),
            ServiceCmd::Connect(a) => service::change(a, veil_ipc::Command::Connect),
            ServiceCmd::Disconnect(a) => service::change(a, veil_ipc::Command::Disconnect),
            ServiceCmd::Leave(a) => service::change(a, veil_ipc::Command::Leave),
        },
    }
}

/// The runtime of a foreground node or relay: one thread, which the single event loop fills.
fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)
}

/// Completes on SIGINT or SIGTERM. The handlers are installed before this returns, so a signal
/// that arrives while the node starts is not lost. Needs a running runtime.
#[cfg(unix)]
fn shutdown_signal() -> Result<impl Future<Output = ()>, CliError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(CliError::Runtime)?;
    let mut int = signal(SignalKind::interrupt()).map_err(CliError::Runtime)?;
    Ok(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "stopping");
    })
}

/// Completes on Ctrl-C, Ctrl-Break or the console window closing (Windows' stand-ins for
/// SIGINT and SIGTERM). The handlers are installed before this returns. Needs a running
/// runtime.
#[cfg(windows)]
fn shutdown_signal() -> Result<impl Future<Output = ()>, CliError> {
    use tokio::signal::windows::{ctrl_break, ctrl_c, ctrl_close};
    let mut int = ctrl_c().map_err(CliError::Runtime)?;
    let mut brk = ctrl_break().map_err(CliError::Runtime)?;
    let mut close = ctrl_close().map_err(CliError::Runtime)?;
    Ok(async move {
        let name = tokio::select! {
            _ = int.recv() => "Ctrl-C",
            _ = brk.recv() => "Ctrl-Break",
            _ = close.recv() => "console closed",
        };
        tracing::info!(signal = name, "stopping");
    })
}
