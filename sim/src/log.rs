//! The request log every simulator keeps, so tests can count what a client really sent
//! (retries, duplicates) and in what order.

use std::sync::Mutex;

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// RFC 3339 with milliseconds, from the simulator clock.
    pub timestamp: String,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// `None` when the connection was dropped on purpose and no response was sent.
    pub status: Option<u16>,
    pub dropped: bool,
}

#[derive(Debug, Default)]
pub struct RequestLog {
    entries: Mutex<Vec<Entry>>,
}

impl RequestLog {
    pub fn push(&self, e: Entry) {
        lock(&self.entries).push(e);
    }

    pub fn all(&self) -> Vec<Entry> {
        lock(&self.entries).clone()
    }

    pub fn clear(&self) {
        lock(&self.entries).clear();
    }
}

/// A poisoned lock only means another handler panicked mid-update; the simulator's state is
/// still the best we have, so keep serving rather than cascading the panic.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
