//! Keeping a replica's in-memory control plane current with a shared PostgreSQL store.
//!
//! Every write through any replica bumps the store's version counter and `NOTIFY`s
//! [`crate::store::postgres::CHANGES_CHANNEL`] in its own transaction. Each replica runs one
//! thread that `LISTEN`s on a connection of its own and, on a notification or every
//! [`Freshness::check_every`] without one, asks the store whether the version moved and reloads
//! when it did ([`Store::refresh_if_changed`]). A check that succeeds stamps the moment it
//! started: everything committed before that moment is in the view.
//!
//! The hot path never asks the store; it reads the stamp ([`Freshness::check`]). A replica that
//! has not confirmed its view for longer than `store.max_staleness_ms` (its store connection is
//! down, or it is still resynchronising after one came back) answers 503 rather than serve
//! access that may have been revoked meanwhile. Notifications make the common case fast; the
//! version check makes it correct, since a notification sent while the listening connection was
//! down is never delivered.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::store::{Store, StoreError, View};

/// When this replica last confirmed that its view held every committed change.
#[derive(Debug)]
pub struct Freshness {
    origin: Instant,
    /// Milliseconds after `origin` at which the last successful check started; 0: never.
    confirmed_at_ms: AtomicU64,
    max_staleness: Duration,
    stopped: AtomicBool,
}

impl Freshness {
    pub fn new(max_staleness: Duration) -> Arc<Freshness> {
        Arc::new(Freshness {
            origin: Instant::now(),
            confirmed_at_ms: AtomicU64::new(0),
            max_staleness,
            stopped: AtomicBool::new(false),
        })
    }

    /// How often the version is checked without a notification: a quarter of the bound, so a
    /// check or two may fail before the replica stops answering.
    pub fn check_every(&self) -> Duration {
        (self.max_staleness / 4).max(Duration::from_millis(10))
    }

    fn now_ms(&self) -> u64 {
        // +1 so that a check at the very start is not mistaken for "never".
        self.origin.elapsed().as_millis() as u64 + 1
    }

    /// Records a successful check (or load) that started at `started_ms` (from
    /// [`Self::start`]).
    pub fn confirm(&self, started_ms: u64) {
        self.confirmed_at_ms
            .fetch_max(started_ms, Ordering::Release);
    }

    /// The moment a check or a load starts, to [`Self::confirm`] once it succeeded.
    pub fn start(&self) -> u64 {
        self.now_ms()
    }

    /// `Ok` when the view was confirmed current within the bound.
    pub fn check(&self) -> Result<(), StoreError> {
        let at = self.confirmed_at_ms.load(Ordering::Acquire);
        if at == 0 {
            return Err(StoreError::Unavailable(
                "the control plane has not been loaded from the store yet".into(),
            ));
        }
        let age = Duration::from_millis(self.now_ms().saturating_sub(at));
        if age > self.max_staleness {
            return Err(StoreError::Unavailable(format!(
                "the control plane was last confirmed current {} ms ago (bound {} ms)",
                age.as_millis(),
                self.max_staleness.as_millis()
            )));
        }
        Ok(())
    }

    /// Ends the sync thread at its next wake-up.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
    }

    fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }
}

/// The view to serve a request from: the store's current snapshot, or `Unavailable` when a
/// shared store's view may be stale. No I/O.
pub fn fresh_view(store: &Store, freshness: Option<&Freshness>) -> Result<Arc<View>, StoreError> {
    if let Some(f) = freshness {
        f.check()?;
    }
    Ok(store.view())
}

/// Starts the sync thread for a PostgreSQL store at `url`.
pub fn start(
    store: Arc<Store>,
    url: crate::config::StoreUrl,
    freshness: Arc<Freshness>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("sluice-store-sync".into())
        .spawn(move || run(&store, url.expose(), &freshness))
}

fn run(store: &Store, url: &str, freshness: &Freshness) {
    let mut backoff = Duration::from_millis(50);
    while !freshness.stopped() {
        // Without a listening connection the version is still checked on time (the store's own
        // connection), so the bound holds; only the wake-up on a change is slower.
        let mut listener = match crate::store::postgres::connect(url).and_then(|mut c| {
            c.batch_execute(&format!(
                "LISTEN {}",
                crate::store::postgres::CHANGES_CHANNEL
            ))
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            Ok(c)
        }) {
            Ok(c) => {
                backoff = Duration::from_millis(50);
                Some(c)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for control-plane changes; polling");
                None
            }
        };
        // One pass per wake-up until the listening connection breaks.
        loop {
            if freshness.stopped() {
                return;
            }
            let started = freshness.start();
            match store.refresh_if_changed() {
                Ok(true) => {
                    freshness.confirm(started);
                    tracing::info!("reloaded the control plane after a change on another replica");
                }
                Ok(false) => freshness.confirm(started),
                Err(e) => tracing::warn!(error = %e, "cannot check the store for changes"),
            }
            let Some(client) = listener.as_mut() else {
                std::thread::sleep(freshness.check_every().min(backoff));
                backoff = (backoff * 2).min(Duration::from_secs(2));
                break;
            };
            match wait_for_change(client, freshness.check_every()) {
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "lost the control-plane change listener");
                    break;
                }
            }
        }
    }
}

/// Waits up to `wait` for a change notification, then swallows any others already queued (one
/// reload covers them all).
fn wait_for_change(client: &mut postgres::Client, wait: Duration) -> Result<(), postgres::Error> {
    use postgres::fallible_iterator::FallibleIterator;
    let mut notes = client.notifications();
    let woken = notes.timeout_iter(wait).next()?.is_some();
    if woken {
        let mut rest = notes.iter();
        while rest.next()?.is_some() {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unconfirmed_or_old_is_unavailable_and_a_check_restores() {
        let f = Freshness::new(Duration::from_millis(400));
        assert!(
            matches!(f.check(), Err(StoreError::Unavailable(m)) if m.contains("not been loaded"))
        );
        let t = f.start();
        f.confirm(t);
        assert!(f.check().is_ok());
        std::thread::sleep(Duration::from_millis(450));
        assert!(matches!(f.check(), Err(StoreError::Unavailable(m)) if m.contains("bound 400 ms")));
        // An older check finishing late never moves the stamp back.
        let newer = f.start();
        f.confirm(newer);
        f.confirm(t);
        assert!(f.check().is_ok());
        assert_eq!(f.check_every(), Duration::from_millis(100));
    }
}
