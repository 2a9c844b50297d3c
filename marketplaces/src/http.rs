//! The one way out to a marketplace: [`send`] (limits, a span, the status metric, errors
//! classified once), and what every client shares.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::future::BoxFuture;
use reqwest::header::HeaderMap;

use super::error::{self, MarketplaceError, classify};
use crate::marketplace::Marketplace;
use engine::JobError;

/// Decides when a request may go out and learns from its answer: the fleet-wide rate limits and
/// circuit breakers ([`crate::limits`]), installed once per process with [`install_gate`].
/// Without one, requests go out unpaced (the marketplace's 429s still snooze jobs).
pub trait Gate: Send + Sync + 'static {
    /// Waits for the budget of a request to `path`, or refuses it (a snooze).
    fn admit<'a>(
        &'a self,
        m: Marketplace,
        path: &'a str,
    ) -> BoxFuture<'a, Result<Ticket, MarketplaceError>>;
    /// Learns from the answer (limit headers, Retry-After, failures for the circuit); may turn
    /// it into a snooze.
    fn report<'a>(
        &'a self,
        ticket: &'a Ticket,
        seen: &'a Result<HeaderMap, MarketplaceError>,
    ) -> BoxFuture<'a, Option<MarketplaceError>>;
    /// A 429's wait, spread so the fleet does not come back at once.
    fn jittered(&self, d: Duration) -> Duration;
}

/// The clients' families: answers by marketplace and status. Kept apart from the engine's and
/// the limiter's; both binaries render all three at `/metrics`.
pub const FAMILIES: &[engine::metrics::Family3] = &[(
    "stoflow_marketplace_http_responses_total",
    "counter",
    "Marketplace HTTP answers by marketplace and status (\"error\": no answer).",
)];

/// This process's marketplace-answer metrics ([`FAMILIES`]).
pub fn metrics() -> &'static engine::metrics::Metrics {
    static M: OnceLock<engine::metrics::Metrics> = OnceLock::new();
    M.get_or_init(|| engine::metrics::Metrics::new(FAMILIES))
}

/// What [`Gate::admit`] hands to [`Gate::report`] (the gate's own record of the admission).
pub struct Ticket(pub Box<dyn std::any::Any + Send + Sync>);

static GATE: OnceLock<Arc<dyn Gate>> = OnceLock::new();

/// Makes every request of this process pass `gate` (the first call wins).
pub fn install_gate(gate: Arc<dyn Gate>) {
    let _ = GATE.set(gate);
}

/// A field a marketplace would refuse, found before calling it: permanent, and it names the
/// field so the seller knows what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{marketplace} {field}: {message}")]
pub struct InvalidField {
    pub marketplace: &'static str,
    pub field: &'static str,
    pub message: String,
}

impl From<InvalidField> for JobError {
    fn from(e: InvalidField) -> Self {
        JobError::Permanent {
            class: "rejected".into(),
            message: e.to_string(),
        }
    }
}

/// Sends a request; a 2xx comes back as is, anything else as a classified [`MarketplaceError`].
/// Every request first takes its budget from the [`Gate`] when this process installed one, and
/// reports how it went (Retry-After, limit headers, failures for the circuit breaker).
pub async fn send(
    m: Marketplace,
    req: reqwest::RequestBuilder,
) -> Result<reqwest::Response, MarketplaceError> {
    let (client, req) = req.build_split();
    let req = req.map_err(|e| MarketplaceError::Unavailable {
        marketplace: m.as_str(),
        detail: format!("request could not be built: {e}"),
    })?;
    let Some(limits) = GATE.get() else {
        return send_unlimited(m, &client, req).await;
    };
    let adm = limits.admit(m, req.url().path()).await?;
    let res = send_unlimited(m, &client, req).await;
    let seen = match &res {
        Ok(r) => Ok(r.headers().clone()),
        Err(e) => Err(e.clone()),
    };
    if let Some(replaced) = limits.report(&adm, &seen).await {
        return Err(replaced);
    }
    match res {
        // The snooze that follows a 429 is spread so the fleet does not return at once.
        Err(MarketplaceError::RateLimited {
            marketplace,
            retry_after: Some(d),
            detail,
        }) => Err(MarketplaceError::RateLimited {
            marketplace,
            retry_after: Some(limits.jittered(d)),
            detail,
        }),
        other => other,
    }
}

/// One marketplace call, in its own span (a client span of the job's trace when traces are
/// exported).
async fn send_unlimited(
    m: Marketplace,
    client: &reqwest::Client,
    req: reqwest::Request,
) -> Result<reqwest::Response, MarketplaceError> {
    let span = tracing::info_span!(
        "marketplace_call",
        marketplace = m.as_str(),
        otel.name = %format_args!("{} {}", req.method(), m.as_str()),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        http.request.method = %req.method(),
        url.path = req.url().path(),
        server.address = req.url().host_str().unwrap_or_default(),
        http.response.status_code = tracing::field::Empty,
    );
    let res = tracing::Instrument::instrument(call(m, client, req), span.clone()).await;
    if res.is_err() {
        span.record("otel.status_code", "ERROR");
    }
    res
}

async fn call(
    m: Marketplace,
    client: &reqwest::Client,
    req: reqwest::Request,
) -> Result<reqwest::Response, MarketplaceError> {
    let r = client.execute(req).await;
    if let Ok(r) = &r {
        tracing::Span::current().record("http.response.status_code", r.status().as_u16());
    }
    let status_label = match &r {
        Ok(r) => r.status().as_str().to_string(),
        Err(_) => "error".to_string(),
    };
    metrics().inc(
        "stoflow_marketplace_http_responses_total",
        &[("marketplace", m.as_str()), ("status", &status_label)],
        1,
    );
    let r = r.map_err(|e| MarketplaceError::Unavailable {
        marketplace: m.as_str(),
        detail: format!("request failed: {e}"),
    })?;
    if r.status().is_success() {
        return Ok(r);
    }
    let status = r.status().as_u16();
    let retry_after = r
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let body = r.text().await.unwrap_or_default();
    Err(classify(
        m,
        &error::Response {
            status,
            retry_after,
            body: &body,
        },
    ))
}

/// Reads a 2xx body as JSON; a body that does not parse is the marketplace misbehaving.
pub async fn json<T: serde::de::DeserializeOwned>(
    m: Marketplace,
    r: reqwest::Response,
) -> Result<T, MarketplaceError> {
    let text = r.text().await.map_err(|e| MarketplaceError::Unavailable {
        marketplace: m.as_str(),
        detail: format!("reading the answer failed: {e}"),
    })?;
    serde_json::from_str(&text).map_err(|e| MarketplaceError::Unavailable {
        marketplace: m.as_str(),
        detail: format!(
            "unexpected answer ({e}): {}",
            text.chars().take(200).collect::<String>()
        ),
    })
}

/// An HTTP client with the given timeout (connect and whole request).
pub fn http_client(timeout_ms: u64) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_millis(timeout_ms))
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("stoflow-jobs/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("reqwest client")
}
