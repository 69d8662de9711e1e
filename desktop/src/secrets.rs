//! The join token in the user's keychain, when the user asks the app to remember it: the
//! Secret Service on Linux (GNOME Keyring, KWallet), the Credential Manager on Windows, the
//! Keychain on macOS, all through the `keyring` crate. The service keeps its own copy in its
//! root-only state directory; this one lets the app join again by itself after the service
//! forgot it (reinstalled, or left the network).

use crate::service::{ErrorKind, UiError};

/// The keychain entry's service name.
pub const KEYCHAIN_SERVICE: &str = "org.veil.desktop";
/// The keychain entry's account name.
pub const KEYCHAIN_ACCOUNT: &str = "join-token";

/// Where the token is remembered.
pub trait SecretStore: Send + Sync {
    /// The remembered token, if any.
    fn load(&self) -> Result<Option<String>, UiError>;
    /// Remembers `token`.
    fn store(&self, token: &str) -> Result<(), UiError>;
    /// Forgets it (nothing to forget is fine).
    fn clear(&self) -> Result<(), UiError>;
}

/// The platform keychain.
pub struct Keychain {
    entry: Result<keyring::Entry, keyring::Error>,
}

impl Keychain {
    /// The app's entry (one entry, so that a platform with per-entry state, and the mock
    /// store, see the same credential for each call).
    pub fn new() -> Self {
        Keychain {
            entry: keyring::Entry::new(KEYCHAIN_SERVICE, KEYCHAIN_ACCOUNT),
        }
    }

    /// A keychain on `entry` (tests hand in the mock store's entries).
    pub fn with_entry(entry: keyring::Entry) -> Self {
        Keychain { entry: Ok(entry) }
    }

    fn entry(&self) -> Result<&keyring::Entry, UiError> {
        self.entry.as_ref().map_err(|e| error(e.to_string(), false))
    }
}

impl Default for Keychain {
    fn default() -> Self {
        Self::new()
    }
}

fn error(detail: String, unavailable: bool) -> UiError {
    if unavailable {
        UiError::new(
            ErrorKind::Keychain,
            format!("No keychain is available on this desktop ({detail}), so the token cannot be remembered."),
        )
        .with_hint(if cfg!(target_os = "linux") {
            "Veil uses the Secret Service: start GNOME Keyring or KWallet, or leave \"remember\" off and paste the token when asked."
        } else {
            "Leave \"remember\" off and paste the token when asked."
        })
    } else {
        UiError::new(
            ErrorKind::Keychain,
            format!("The keychain failed: {detail}."),
        )
    }
}

fn keychain_error(e: keyring::Error) -> UiError {
    match e {
        keyring::Error::NoStorageAccess(p) | keyring::Error::PlatformFailure(p) => {
            error(p.to_string(), true)
        }
        other => error(other.to_string(), false),
    }
}

impl SecretStore for Keychain {
    fn load(&self) -> Result<Option<String>, UiError> {
        match self.entry()?.get_password() {
            Ok(t) => Ok(Some(t)),
            Err(keyring::Error::NoEntry) => Ok(None),
            Err(e) => Err(keychain_error(e)),
        }
    }

    fn store(&self, token: &str) -> Result<(), UiError> {
        self.entry()?.set_password(token).map_err(keychain_error)
    }

    fn clear(&self) -> Result<(), UiError> {
        match self.entry()?.delete_credential() {
            Ok(()) | Err(keyring::Error::NoEntry) => Ok(()),
            Err(e) => Err(keychain_error(e)),
        }
    }
}
