//! Concurrency limits for queries: a gateway-wide cap, and caps per token and per app so that one
//! busy client or app cannot starve the others on a shared datasource. Refusals are immediate
//! (429 with `Retry-After`), never a queue that grows without bound.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Counts in-flight queries per key; an entry exists only while its count is above zero, so
/// memory is bounded by the number of queries in flight.
#[derive(Default)]
struct Counter {
    counts: Mutex<HashMap<String, usize>>,
}

impl Counter {
    fn try_acquire(self: &Arc<Self>, key: &str, max: usize) -> Option<Slot> {
        let mut m = self.counts.lock().ok()?;
        let n = m.entry(key.to_owned()).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Slot {
            counter: self.clone(),
            key: key.to_owned(),
        })
    }

    fn in_flight(&self, key: &str) -> usize {
        self.counts
            .lock()
            .map(|m| m.get(key).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

/// Releases its place when dropped (including when the request is cancelled).
pub struct Slot {
    counter: Arc<Counter>,
    key: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut m) = self.counter.counts.lock()
            && let Some(n) = m.get_mut(&self.key)
        {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.key);
            }
        }
    }
}

/// Which limit refused a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Gateway,
    Token,
    App,
}

impl crate::code::Coded for Refused {
    fn code(&self) -> crate::code::Code {
        crate::code::Code::TooManyRequests
    }

    fn message(&self) -> String {
        match self {
            Refused::Token => "too many queries in flight for this token",
            Refused::App => "too many queries in flight for this app",
            Refused::Gateway => "the gateway is at its query capacity",
        }
        .into()
    }

    /// A moment later another query may have finished.
    fn retryable(&self) -> bool {
        true
    }
}

pub struct Limiters {
    global: Arc<tokio::sync::Semaphore>,
    max_total: usize,
    per_token: Arc<Counter>,
    per_app: Arc<Counter>,
    max_per_token: usize,
    max_per_app: usize,
}

/// Places held by one running query.
pub struct Permit {
    _global: tokio::sync::OwnedSemaphorePermit,
    _token: Slot,
    _app: Slot,
}

impl Limiters {
    pub fn new(max_total: usize, max_per_token: usize, max_per_app: usize) -> Limiters {
        Limiters {
            global: Arc::new(tokio::sync::Semaphore::new(max_total)),
            max_total,
            per_token: Arc::default(),
            per_app: Arc::default(),
            max_per_token,
            max_per_app,
        }
    }

    pub fn acquire(&self, token: &str, app: &str) -> Result<Permit, Refused> {
        let token_slot = self
            .per_token
            .try_acquire(token, self.max_per_token)
            .ok_or(Refused::Token)?;
        let app_slot = self
            .per_app
            .try_acquire(app, self.max_per_app)
            .ok_or(Refused::App)?;
        let global = self
            .global
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Gateway)?;
        Ok(Permit {
            _global: global,
            _token: token_slot,
            _app: app_slot,
        })
    }

    /// Queries running in the whole gateway.
    pub fn in_flight(&self) -> usize {
        self.max_total
            .saturating_sub(self.global.available_permits())
    }

    pub fn app_in_flight(&self, app: &str) -> usize {
        self.per_app.in_flight(app)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_limit_refuses_past_its_bound_and_frees_on_drop() {
        let l = Limiters::new(3, 2, 2);
        let a = l.acquire("t1", "app1").unwrap();
        let _b = l.acquire("t1", "app2").unwrap();
        assert_eq!(l.acquire("t1", "app3").err(), Some(Refused::Token));
        let _c = l.acquire("t2", "app1").unwrap();
        assert_eq!(l.acquire("t3", "app1").err(), Some(Refused::App));
        assert_eq!(l.acquire("t3", "app3").err(), Some(Refused::Gateway));
        assert_eq!(l.in_flight(), 3);
        drop(a);
        assert_eq!(l.app_in_flight("app1"), 1);
        assert_eq!(l.in_flight(), 2);
        assert!(l.acquire("t3", "app3").is_ok());
    }

    #[test]
    fn idle_keys_leave_no_entries_behind() {
        let l = Limiters::new(10, 10, 10);
        for i in 0..100 {
            drop(l.acquire(&format!("t{i}"), &format!("a{i}")).unwrap());
        }
        assert!(l.per_token.counts.lock().unwrap().is_empty());
        assert!(l.per_app.counts.lock().unwrap().is_empty());
    }
}
