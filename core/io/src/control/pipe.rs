//! The control socket on Windows: a named pipe (`\\.\pipe\veil`, see [`super::socket_path`])
//! carrying the same JSON lines. A pipe has no file to remove and no mode: it goes with the
//! process, and its default access control list lets SYSTEM and Administrators write to it
//! (everyone else may only read, so cannot send a request). Remote clients are refused.

use std::io;
use std::path::{Path, PathBuf};
use tokio::net::windows::named_pipe::{ClientOptions, NamedPipeServer, ServerOptions};
use tokio::sync::Mutex;

/// ERROR_ACCESS_DENIED: what creating the first instance of a pipe that exists gives.
const ACCESS_DENIED: i32 = 5;
/// ERROR_PIPE_BUSY: the pipe exists, every instance is taken.
const PIPE_BUSY: i32 = 231;

/// The pipe's next instance, waiting for a client.
#[derive(Debug)]
pub(super) struct PipeListener {
    name: PathBuf,
    next: Mutex<NamedPipeServer>,
}

impl PipeListener {
    /// Creates the first instance of the pipe `name`; refuses if another process has it
    /// (one answers there, or Windows refuses a first instance). Must be called inside a
    /// tokio runtime.
    pub(super) fn bind(name: &Path) -> io::Result<PipeListener> {
        let in_use = || {
            io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "another veil process is running (it answers on {})",
                    name.display()
                ),
            )
        };
        match ClientOptions::new().open(name) {
            Ok(_) => return Err(in_use()),
            Err(e) if e.raw_os_error() == Some(PIPE_BUSY) => return Err(in_use()),
            Err(_) => {}
        }
        let first = ServerOptions::new()
            .first_pipe_instance(true)
            .reject_remote_clients(true)
            .create(name)
            .map_err(|e| {
                if e.raw_os_error() == Some(ACCESS_DENIED) {
                    in_use()
                } else {
                    e
                }
            })?;
        Ok(PipeListener {
            name: name.to_owned(),
            next: Mutex::new(first),
        })
    }

    /// The next connected client (a pipe has no peer address: `()`). A fresh instance
    /// takes the connected one's place at once, so a client never finds the pipe missing.
    pub(super) async fn accept(&self) -> io::Result<(NamedPipeServer, ())> {
        let mut next = self.next.lock().await;
        let connected = next.connect().await;
        let fresh = ServerOptions::new()
            .reject_remote_clients(true)
            .create(&self.name)?;
        // A failed connect leaves an instance that cannot be reused: it is replaced too.
        let client = std::mem::replace(&mut *next, fresh);
        connected.map(|()| (client, ()))
    }
}
