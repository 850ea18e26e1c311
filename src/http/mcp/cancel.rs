//! Tool calls in flight on this replica, so a client's `notifications/cancelled` can stop one.
//!
//! The endpoint is stateless: rmcp answers each POST on its own and ignores a notification that
//! arrives on another POST, while in the 2025-11-25 revision that notification, not a closed
//! stream, is how a client cancels. So the endpoint reads cancellations itself and ends the call
//! here. Calls are keyed by the bearer token and the JSON-RPC request id: a token can only
//! cancel its own calls, and ids are unique per client but not across clients sharing a token,
//! so an id that names several calls of the token cancels none of them (each still ends at its
//! statement timeout). A cancellation that reaches another replica finds nothing here; see the
//! README's notes on replicas.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::oneshot;

type Key = (String, String);
/// A registered call: its serial (to unregister exactly it) and how to cancel it.
type Entry = (u64, oneshot::Sender<()>);

#[derive(Default)]
pub struct Cancels {
    calls: Mutex<HashMap<Key, Vec<Entry>>>,
    next: AtomicU64,
}

/// Keeps a call registered; dropped when the call ends.
pub struct Registered<'a> {
    cancels: &'a Cancels,
    key: Key,
    serial: u64,
}

impl Cancels {
    /// Registers a call of `token` with JSON-RPC id `id` (its JSON text); the receiver fires when
    /// the client cancels it.
    pub fn register(&self, token: &str, id: String) -> (Registered<'_>, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        let serial = self.next.fetch_add(1, Ordering::Relaxed);
        let key = (token.to_owned(), id);
        if let Ok(mut calls) = self.calls.lock() {
            calls.entry(key.clone()).or_default().push((serial, tx));
        }
        (
            Registered {
                cancels: self,
                key,
                serial,
            },
            rx,
        )
    }

    /// Cancels the one call of `token` with this id; false when none (or several) match.
    pub fn cancel(&self, token: &str, id: String) -> bool {
        let Ok(mut calls) = self.calls.lock() else {
            return false;
        };
        let key = (token.to_owned(), id);
        match calls.get(&key).map(Vec::len) {
            Some(1) => {}
            _ => return false,
        }
        calls
            .remove(&key)
            .and_then(|mut v| v.pop())
            .is_some_and(|(_, tx)| tx.send(()).is_ok())
    }

    /// Calls registered now (for tests of the bookkeeping).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.calls
            .lock()
            .map(|c| c.values().map(Vec::len).sum())
            .unwrap_or(0)
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        if let Ok(mut calls) = self.cancels.calls.lock()
            && let Some(list) = calls.get_mut(&self.key)
        {
            list.retain(|(s, _)| *s != self.serial);
            if list.is_empty() {
                calls.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_is_cancelled_by_its_own_token_and_id_only() {
        let c = Cancels::default();
        let (_reg, mut rx) = c.register("tok_a", "7".into());
        assert!(!c.cancel("tok_b", "7".into()), "another token");
        assert!(!c.cancel("tok_a", "8".into()), "another id");
        assert!(rx.try_recv().is_err());
        assert!(c.cancel("tok_a", "7".into()));
        assert!(rx.try_recv().is_ok());
        assert!(!c.cancel("tok_a", "7".into()), "only once");
    }

    #[test]
    fn an_id_that_names_two_calls_of_a_token_cancels_neither() {
        let c = Cancels::default();
        let (_r1, mut rx1) = c.register("tok_a", "1".into());
        let (_r2, mut rx2) = c.register("tok_a", "1".into());
        assert!(!c.cancel("tok_a", "1".into()));
        assert!(rx1.try_recv().is_err() && rx2.try_recv().is_err());
    }

    #[test]
    fn a_finished_call_leaves_nothing_behind() {
        let c = Cancels::default();
        {
            let _r1 = c.register("tok_a", "1".into());
            let _r2 = c.register("tok_a", "1".into());
            assert_eq!(c.len(), 2);
        }
        assert_eq!(c.len(), 0);
        let (_r, mut rx) = c.register("tok_a", "1".into());
        assert!(c.cancel("tok_a", "1".into()));
        assert!(rx.try_recv().is_ok());
    }
}
