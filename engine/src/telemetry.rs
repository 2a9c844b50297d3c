//! Logging and traces for every binary: `RUST_LOG` filters (default `info`); JSON lines with
//! `STOFLOW_LOG_FORMAT=json` or `[log] format = "json"` (env `STOFLOW_LOG__FORMAT`); spans
//! exported over OTLP/HTTP when `[telemetry] otlp_endpoint` (env
//! `STOFLOW_TELEMETRY__OTLP_ENDPOINT`) or the standard `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//!
//! Trace ids: the API runs each request inside [`with_trace_id`] (the W3C `traceparent` trace id
//! when the caller sends one, else a new one); [`crate::queue::insert`] stores it with the jobs
//! the request enqueues, and the worker puts it on the span of every run of those jobs. A
//! task-local rather than a `NewJob` field, so every enqueue path carries it without each
//! caller passing it along. With export on, the request span's OpenTelemetry trace is that id and
//! each run's span is parented on it ([`adopt_trace`]), so one trace holds the request, the runs
//! and their marketplace calls.

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

/// Flushes the spans not yet exported when dropped: keep it alive until `main` returns.
#[must_use = "dropping it at once stops the export"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take()
            && let Err(e) = p.shutdown()
        {
            eprintln!("telemetry: flushing traces failed: {e}");
        }
    }
}

/// Sets up logging (`json`: one JSON object per line) and, when `otlp_endpoint` or the standard
/// OTLP variables say where, the export of spans as `service` (the `service.name` tracing
/// backends group by).
pub fn init(service: &'static str, json: bool, otlp_endpoint: Option<&str>) -> Telemetry {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = if json {
        fmt.json()
            .flatten_event(true)
            .with_current_span(true)
            .boxed()
    } else {
        fmt.boxed()
    };
    let (provider, export_error) = match otlp_provider(service, otlp_endpoint) {
        Ok(p) => (p, None),
        Err(e) => (None, Some(e)),
    };
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(service)));
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .init();
    if let Some(e) = export_error {
        tracing::error!(error = %e, "traces are not exported: the OTLP exporter could not be built");
    }
    Telemetry { provider }
}

/// The tracer provider exporting to `endpoint` (a base URL), else to the standard
/// `OTEL_EXPORTER_OTLP_*ENDPOINT` variables; None when neither is set.
fn otlp_provider(
    service: &'static str,
    endpoint: Option<&str>,
) -> Result<Option<SdkTracerProvider>, opentelemetry_otlp::ExporterBuildError> {
    let endpoint = endpoint.filter(|e| !e.is_empty());
    let from_env = [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var(v).is_ok_and(|e| !e.is_empty()));
    if endpoint.is_none() && !from_env {
        return Ok(None);
    }
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson);
    if let Some(base) = endpoint {
        // Like OTEL_EXPORTER_OTLP_ENDPOINT: a base URL the signal's path goes under.
        exporter = exporter.with_endpoint(format!("{}/v1/traces", base.trim_end_matches('/')));
    }
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service)
        .build();
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter.build()?)
            .with_resource(resource)
            .build(),
    ))
}

/// Puts `span` into the trace `trace_id` (32 hex digits) under the remote span `parent` (16 hex
/// digits; None: a span id derived from the trace id, the same for every run of a job, since
/// only the trace id is stored). Call it before the span is entered. A no-op without export.
pub fn adopt_trace(span: &tracing::Span, trace_id: &str, parent: Option<&str>) {
    let Ok(trace) = TraceId::from_hex(trace_id) else {
        return;
    };
    let derived = || {
        let mut b: [u8; 8] = trace.to_bytes()[8..].try_into().unwrap_or_default();
        b[7] |= 1; // never the invalid all-zero id
        SpanId::from_bytes(b)
    };
    let parent = parent
        .and_then(|p| SpanId::from_hex(p).ok())
        .filter(|p| *p != SpanId::INVALID)
        .unwrap_or_else(derived);
    let cx = SpanContext::new(
        trace,
        parent,
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    // Fails only when no OpenTelemetry layer is installed (export off) or it started already.
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(cx));
}

/// The OpenTelemetry trace id `span` belongs to, None without export.
pub fn otel_trace_id(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
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

/// The parent span id of a W3C `traceparent` header (its third part), if well formed.
pub fn span_id_of_traceparent(h: &str) -> Option<String> {
    let span = h.trim().split('-').nth(2)?;
    let valid = span.len() == 16
        && span.bytes().all(|b| b.is_ascii_hexdigit())
        && span.bytes().any(|b| b != b'0');
    valid.then(|| span.to_ascii_lowercase())
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
        assert_eq!(
            span_id_of_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01")
                .as_deref(),
            Some("00f067aa0ba902b7")
        );
        assert_eq!(
            span_id_of_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"),
            None
        );
    }
}
