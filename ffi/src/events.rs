//! Events for the app, and the queue `next_event` waits on.

use crate::records::TunnelSettings;
use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::sync::Notify;

/// Something the app may show or act on.
#[derive(Clone, Debug, PartialEq, uniffi::Enum)]
pub enum VeilEvent {
    /// The session with the relay is up and the node is registered: peers can reach it.
    Connected {
        /// The relay's address.
        relay: String,
    },
    /// The relay stopped answering; the node keeps retrying (direct sessions stay up).
    Disconnected {
        /// The relay's address.
        relay: String,
    },
    /// A session with a peer came up.
    PeerUp {
        /// The peer's short id.
        peer: String,
    },
    /// A peer session closed (idle or failed); it reopens on demand.
    PeerDown {
        /// The peer's short id.
        peer: String,
    },
    /// A peer's path or its MTU changed.
    PathChanged {
        /// The peer's short id.
        peer: String,
        /// `direct`, `relayed`, `private` or `none`.
        path: String,
        /// The underlay endpoint of a direct path.
        endpoint: Option<String>,
        /// The path MTU found so far.
        pmtu: Option<u32>,
    },
    /// The interface must be rebuilt with these settings (the rendezvous gave another
    /// overlay IPv4 than the one the interface has); hand the new descriptor to `set_tun`.
    SettingsChanged {
        /// The settings to build it with.
        settings: TunnelSettings,
    },
    /// Another member holds the configured DNS name: this device runs without one.
    NameTaken {
        /// The name.
        name: String,
    },
    /// The node stopped because of an error it cannot recover from.
    Error {
        /// What happened, and what to check.
        message: String,
    },
    /// The node stopped (after `stop`, or after an `Error`).
    Stopped,
}

/// Most events kept for an app that does not read them; the oldest are dropped first.
pub const EVENT_QUEUE: usize = 1024;

/// A bounded queue with an async wait.
#[derive(Default)]
pub(crate) struct EventQueue {
    items: Mutex<VecDeque<VeilEvent>>,
    ready: Notify,
}

impl EventQueue {
    pub fn push(&self, e: VeilEvent) {
        {
            let mut q = self.items.lock().unwrap_or_else(|p| p.into_inner());
            if q.len() >= EVENT_QUEUE {
                q.pop_front();
            }
            q.push_back(e);
        }
        self.ready.notify_one();
    }

    fn pop(&self) -> Option<VeilEvent> {
        self.items
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
    }

    /// The next event, waiting for one.
    pub async fn next(&self) -> VeilEvent {
        loop {
            if let Some(e) = self.pop() {
                return e;
            }
            // A push between the pop and here leaves a permit, so this returns at once.
            self.ready.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_and_keeps_order() {
        let q = std::sync::Arc::new(EventQueue::default());
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { (q2.next().await, q2.next().await) });
        tokio::task::yield_now().await;
        q.push(VeilEvent::Stopped);
        q.push(VeilEvent::PeerUp { peer: "a".into() });
        let (a, b) = waiter.await.expect("join");
        assert_eq!(a, VeilEvent::Stopped);
        assert_eq!(b, VeilEvent::PeerUp { peer: "a".into() });
    }

    #[tokio::test]
    async fn drops_the_oldest_when_full() {
        let q = EventQueue::default();
        for i in 0..EVENT_QUEUE + 5 {
            q.push(VeilEvent::PeerUp {
                peer: i.to_string(),
            });
        }
        assert_eq!(q.next().await, VeilEvent::PeerUp { peer: "5".into() });
    }
}
