//! The one error type every call returns: a Kotlin/Swift/Python exception whose `detail`
//! says what was wrong and what to do (the generated exceptions show their fields, so the
//! whole message is in `detail`; `InvalidConfig` also names the `field`).

/// Why a call failed. Each `detail` names what was wrong and how to fix it.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum VeilError {
    /// The join token does not decode.
    #[error("{detail}")]
    InvalidToken {
        /// What is wrong with it.
        detail: String,
    },
    /// A field of the configuration is out of range or malformed.
    #[error("setting `{field}` is not valid: {detail}")]
    InvalidConfig {
        /// The field of `VeilConfig`.
        field: String,
        /// What is wrong and what is allowed.
        detail: String,
    },
    /// The platform's secret store failed, or holds something that is not a node key.
    #[error("{detail}")]
    SecretStore {
        /// What happened.
        detail: String,
    },
    /// `start` on a running node.
    #[error("{detail}")]
    AlreadyRunning {
        /// What to do.
        detail: String,
    },
    /// A call that needs a running node.
    #[error("{detail}")]
    NotRunning {
        /// What to do.
        detail: String,
    },
    /// The TUN descriptor is unusable.
    #[error("{detail}")]
    Tun {
        /// The OS error and what to check.
        detail: String,
    },
    /// The network: the socket could not be opened or protected, or the relay never answered.
    #[error("{detail}")]
    Network {
        /// What failed and what to check.
        detail: String,
    },
    /// The node stopped answering (it is shutting down) or something unexpected failed.
    #[error("{detail}")]
    Internal {
        /// What failed.
        detail: String,
    },
}

impl VeilError {
    pub(crate) fn not_running() -> Self {
        VeilError::NotRunning {
            detail: "the node is not running; call start() first".into(),
        }
    }

    pub(crate) fn already_running() -> Self {
        VeilError::AlreadyRunning {
            detail: "the node is already running; call stop() first".into(),
        }
    }
}

impl From<uniffi::UnexpectedUniFFICallbackError> for VeilError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        VeilError::Internal {
            detail: format!("a platform callback failed: {}", e.reason),
        }
    }
}

impl From<veil_io::NodeError> for VeilError {
    fn from(e: veil_io::NodeError) -> Self {
        use veil_io::NodeError as E;
        match e {
            E::Tun(t) => VeilError::Tun {
                detail: format!("the TUN device cannot be used: {t}"),
            },
            e @ (E::Socket { .. } | E::RelayUnreachable { .. }) => VeilError::Network {
                detail: e.to_string(),
            },
            e => VeilError::Internal {
                detail: e.to_string(),
            },
        }
    }
}
