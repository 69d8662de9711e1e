//! The commands the frontend invokes. Each is async and does its one blocking request on a
//! worker thread, so the window never waits on the socket. Errors are [`UiError`]s.

use crate::service::{self, ErrorKind, UiError};
use crate::AppState;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tauri::State;
use veil_ipc::{
    Client, ClientError, Command, Hello, LogLine, NodeStatusReport, PeerReport, Traffic,
};

/// Quick requests.
const SHORT: Duration = Duration::from_secs(10);
/// Connecting (the node starts) and disconnecting (it says goodbye) take longer.
const LONG: Duration = Duration::from_secs(45);

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, UiError> + Send + 'static,
) -> Result<T, UiError> {
    tauri::async_runtime::spawn_blocking(f)
        .await
        .map_err(|e| UiError::new(ErrorKind::Io, format!("internal error: {e}")))?
}

async fn ask<T: Send + 'static>(
    state: &State<'_, AppState>,
    timeout: Duration,
    f: impl FnOnce(&mut Client) -> Result<T, ClientError> + Send + 'static,
) -> Result<T, UiError> {
    let socket: PathBuf = state.socket.clone();
    blocking(move || service::call(&socket, timeout, f)).await
}

/// Who answers, and its state.
#[tauri::command]
pub async fn hello(state: State<'_, AppState>) -> Result<Hello, UiError> {
    ask(&state, SHORT, Client::hello).await
}

/// The node's status.
#[tauri::command]
pub async fn status(state: State<'_, AppState>) -> Result<NodeStatusReport, UiError> {
    ask(&state, SHORT, Client::status).await
}

/// The node's peers.
#[tauri::command]
pub async fn peers(state: State<'_, AppState>) -> Result<Vec<PeerReport>, UiError> {
    ask(&state, SHORT, Client::peers).await
}

/// Traffic totals now.
#[tauri::command]
pub async fn counters(state: State<'_, AppState>) -> Result<Traffic, UiError> {
    ask(&state, SHORT, Client::counters).await
}

/// The service's newest log lines.
#[tauri::command]
pub async fn logs(state: State<'_, AppState>, lines: usize) -> Result<Vec<LogLine>, UiError> {
    ask(&state, SHORT, move |c| c.logs(lines)).await
}

/// The answer to `join`: the service's state, and what became of "remember".
#[derive(Debug, Serialize)]
pub struct Joined {
    /// The service after the join.
    pub hello: Hello,
    /// The token is in the keychain now.
    pub remembered: bool,
    /// Why it is not, although asked.
    pub keychain_error: Option<UiError>,
}

/// Gives the service a join token; with `remember`, keeps it in the keychain too (only once
/// the service accepted it). A keychain failure does not undo the join: it is reported.
#[tauri::command]
pub async fn join(
    state: State<'_, AppState>,
    token: String,
    remember: bool,
) -> Result<Joined, UiError> {
    let token = token.trim().to_owned();
    if token.is_empty() {
        return Err(
            UiError::new(ErrorKind::Input, "Paste the join token first.").with_hint(
                "It is the line `veil network create` printed, or the contents of join.token.",
            ),
        );
    }
    let secrets = Arc::clone(&state.secrets);
    let t = token.clone();
    let hello = ask(&state, SHORT, move |c| c.join(&t)).await?;
    let (remembered, keychain_error) = if remember {
        match blocking(move || secrets.store(&token)).await {
            Ok(()) => (true, None),
            Err(e) => (false, Some(e)),
        }
    } else {
        (false, None)
    };
    Ok(Joined {
        hello,
        remembered,
        keychain_error,
    })
}

/// Joins with the token remembered in the keychain, if there is one (`None`: nothing
/// remembered). The token never reaches the frontend.
#[tauri::command]
pub async fn join_remembered(state: State<'_, AppState>) -> Result<Option<Hello>, UiError> {
    let secrets = Arc::clone(&state.secrets);
    let Some(token) = blocking(move || secrets.load()).await? else {
        return Ok(None);
    };
    ask(&state, SHORT, move |c| c.join(&token)).await.map(Some)
}

/// Starts the node.
#[tauri::command]
pub async fn connect(state: State<'_, AppState>) -> Result<Hello, UiError> {
    ask(&state, LONG, |c| c.change(Command::Connect)).await
}

/// Stops the node.
#[tauri::command]
pub async fn disconnect(state: State<'_, AppState>) -> Result<Hello, UiError> {
    ask(&state, LONG, |c| c.change(Command::Disconnect)).await
}

/// Leaves the network: the service forgets the token; with `forget`, the keychain too.
#[tauri::command]
pub async fn leave(state: State<'_, AppState>, forget: bool) -> Result<Hello, UiError> {
    let hello = ask(&state, LONG, |c| c.change(Command::Leave)).await?;
    if forget {
        let secrets = Arc::clone(&state.secrets);
        blocking(move || secrets.clear()).await?;
    }
    Ok(hello)
}

/// Whether a keychain is there and holds a token.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct KeychainInfo {
    /// It answered.
    pub available: bool,
    /// It holds a token.
    pub has_token: bool,
    /// Why it is not available.
    pub error: Option<UiError>,
}

/// Asks the keychain (for the "remember" checkbox and its note).
#[tauri::command]
pub async fn keychain(state: State<'_, AppState>) -> Result<KeychainInfo, UiError> {
    let secrets = Arc::clone(&state.secrets);
    Ok(match blocking(move || secrets.load()).await {
        Ok(t) => KeychainInfo {
            available: true,
            has_token: t.is_some(),
            error: None,
        },
        Err(e) => KeychainInfo {
            available: false,
            has_token: false,
            error: Some(e),
        },
    })
}

/// Forgets the remembered token.
#[tauri::command]
pub async fn forget_token(state: State<'_, AppState>) -> Result<(), UiError> {
    let secrets = Arc::clone(&state.secrets);
    blocking(move || secrets.clear()).await
}
