//! Logging for every binary: `RUST_LOG` filters (default `info`); JSON lines with
//! `STOFLOW_LOG_FORMAT=json` or `[log] format = "json"` (env `STOFLOW_LOG__FORMAT`).
//!
//! Trace ids: the API runs each request inside [`with_trace_id`] (the W3C `traceparent` trace id
//! when the caller sends one, else a new one); [`crate::queue::insert`] stores it with the jobs
//! the request enqueues, and the worker puts it on the span of every run of those jobs. A
//! task-local rather than a `NewJob` field, so every enqueue path carries it without each
//! caller passing it along.

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let json = match std::env::var("STOFLOW_LOG_FORMAT") {
        Ok(v) => v == "json",
        // The settings carry `[log] format` (file or STOFLOW_LOG__FORMAT); a bad config is
        // reported by the caller's own load, after logging is up.
        Err(_) => crate::Settings::load().is_ok_and(|s| s.log.format == "json"),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init();
    } else {
        builder.init();
    }
}

tokio::task_local! {
    static TRACE_ID: String;
}

/// Runs `f` with `id` as the trace id of the jobs it enqueues.
pub async fn with_trace_id<F: std::future::Future>(id: String, f: F) -> F::Output {
    TRACE_ID.scope(id, f).await
}

/// The trace id of the request being served, if any.
pub fn current_trace_id() -> Option<String> {
    TRACE_ID.try_with(Clone::clone).ok()
}

/// A new random trace id (32 lowercase hex digits, as in W3C trace context).
pub fn new_trace_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The trace id of a W3C `traceparent` header (`00-<32 hex>-<16 hex>-<2 hex>`), if well formed.
pub fn trace_id_of_traceparent(h: &str) -> Option<String> {
    let mut parts = h.trim().split('-');
    let (_version, trace) = (parts.next()?, parts.next()?);
    let valid = trace.len() == 32
        && trace.bytes().all(|b| b.is_ascii_hexdigit())
        && trace.bytes().any(|b| b != b'0');
    valid.then(|| trace.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_trace_id_is_taken_when_well_formed() {
        assert_eq!(
            trace_id_of_traceparent("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01")
                .as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(trace_id_of_traceparent("00-0000-00f067aa0ba902b7-01"), None);
        assert_eq!(
            trace_id_of_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(new_trace_id().len(), 32);
    }
}
