//! What only the platform can do, as traits the app implements in Kotlin or Swift: keep the
//! node key in the system's secret store, and keep Veil's own sockets out of the tunnel.

use crate::error::VeilError;
use std::io;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use veil_io::socket;

/// The system's secret store (Android Keystore-wrapped storage, the iOS Keychain shared with
/// the extension). The node keeps its private key under the name `node-key`.
#[uniffi::export(with_foreign)]
pub trait SecretStore: Send + Sync {
    /// The secret stored under `name`, or None when there is none yet.
    fn load(&self, name: String) -> Result<Option<Vec<u8>>, VeilError>;
    /// Stores (or replaces) the secret under `name`.
    fn store(&self, name: String, value: Vec<u8>) -> Result<(), VeilError>;
}

/// Keeps a socket of Veil's out of the tunnel it carries. Android: `VpnService.protect(fd)`;
/// without it the node's packets to its relay would loop back into its own interface.
#[uniffi::export(with_foreign)]
pub trait SocketProtector: Send + Sync {
    /// Excludes the socket `fd` from the VPN; false (or an error) when the platform refused.
    fn protect_socket(&self, fd: i32) -> Result<bool, VeilError>;
}

/// The name the node key is kept under.
pub const NODE_KEY: &str = "node-key";

/// The node key from the store, or a fresh one put there.
pub(crate) fn node_key(store: &dyn SecretStore) -> Result<[u8; 32], VeilError> {
    if let Some(bytes) = store.load(NODE_KEY.into())? {
        return <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| VeilError::SecretStore {
            detail: format!(
                "the secret store's `{NODE_KEY}` has {} bytes, not 32; delete it to give this device a new identity",
                bytes.len()
            ),
        });
    }
    let mut key = [0u8; 32];
    getrandom::getrandom(&mut key).map_err(|e| VeilError::Internal {
        detail: format!("no random bytes from the OS: {e}"),
    })?;
    store.store(NODE_KEY.into(), key.to_vec())?;
    Ok(key)
}

/// veil-io's socket factory with the platform's `protect` applied to every socket.
pub(crate) struct ProtectingFactory {
    pub protector: Option<Arc<dyn SocketProtector>>,
}

impl ProtectingFactory {
    fn protect(&self, fd: i32) -> io::Result<()> {
        let Some(p) = &self.protector else {
            return Ok(());
        };
        match p.protect_socket(fd) {
            Ok(true) => Ok(()),
            Ok(false) => Err(io::Error::other(
                "the platform refused to protect the socket (VpnService.protect returned false; is the VPN permission granted?)",
            )),
            Err(e) => Err(io::Error::other(format!(
                "the platform could not protect the socket: {e}"
            ))),
        }
    }
}

impl veil_io::SocketFactory for ProtectingFactory {
    fn bind_udp(&self, addr: SocketAddr) -> io::Result<UdpSocket> {
        let s = socket::bind_udp(addr)?;
        self.protect(s.as_raw_fd())?;
        Ok(s)
    }

    fn tcp_socket(&self, peer: SocketAddr) -> io::Result<TcpStream> {
        let s = socket::tcp_socket(peer)?;
        self.protect(s.as_raw_fd())?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Memory(Mutex<HashMap<String, Vec<u8>>>);

    impl SecretStore for Memory {
        fn load(&self, name: String) -> Result<Option<Vec<u8>>, VeilError> {
            Ok(self.0.lock().expect("lock").get(&name).cloned())
        }
        fn store(&self, name: String, value: Vec<u8>) -> Result<(), VeilError> {
            self.0.lock().expect("lock").insert(name, value);
            Ok(())
        }
    }

    #[test]
    fn key_is_made_once_and_kept() {
        let store = Memory::default();
        let a = node_key(&store).expect("fresh");
        let b = node_key(&store).expect("kept");
        assert_eq!(a, b);
        assert_ne!(a, [0u8; 32]);
    }

    #[test]
    fn a_foreign_value_is_refused_not_replaced() {
        let store = Memory::default();
        store.store(NODE_KEY.into(), vec![1, 2, 3]).expect("store");
        match node_key(&store) {
            Err(VeilError::SecretStore { detail }) => assert!(detail.contains("3 bytes")),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            store.load(NODE_KEY.into()).expect("load"),
            Some(vec![1, 2, 3])
        );
    }

    struct Refuse;
    impl SocketProtector for Refuse {
        fn protect_socket(&self, _fd: i32) -> Result<bool, VeilError> {
            Ok(false)
        }
    }

    #[test]
    fn a_refused_protect_fails_the_socket() {
        use veil_io::SocketFactory;
        let f = ProtectingFactory {
            protector: Some(Arc::new(Refuse)),
        };
        let err = f
            .bind_udp(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect_err("refused");
        assert!(err.to_string().contains("protect"));
        let open = ProtectingFactory { protector: None };
        assert!(open.bind_udp(SocketAddr::from(([127, 0, 0, 1], 0))).is_ok());
    }
}
