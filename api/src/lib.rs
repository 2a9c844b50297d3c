//! The HTTP API: a thin poem + poem-openapi layer that validates, enqueues and reads. It never
//! runs a job. Documented at `/openapi.json` and `/docs` (Swagger UI).

pub mod auth;
pub mod conn;
pub mod dashboard;
pub mod events;
pub mod openapi;
pub mod problem;
pub mod routes;
pub mod state;
pub mod tenancy;
pub mod throttle;

use std::sync::Arc;

use anyhow::Context as _;
use poem::http::{Method, StatusCode};
use poem::listener::TcpListener;
use poem::{Endpoint, EndpointExt, Request, Route, Server};
use poem_openapi::OpenApiService;

use engine::queue::Notifier;
use jobs::Settings;
use state::AppState;

/// The whole HTTP application, ready to serve.
pub fn app(st: Arc<AppState>) -> impl Endpoint {
    let limit = st.settings.api.body_limit_bytes;
    let st_for_metrics = st.clone();
    let cors = cors(&st.settings.api.cors_origins);
    let apis = (
        routes::auth::AuthApi { st: st.clone() },
        routes::jobs::JobsApi { st: st.clone() },
        routes::products::ProductsApi { st: st.clone() },
        routes::settings::SettingsApi { st: st.clone() },
        routes::connections::ConnectionsApi { st: st.clone() },
        routes::orders::OrdersApi { st: st.clone() },
        routes::queues::QueuesApi { st: st.clone() },
        routes::plugin::PluginApi { st: st.clone() },
        routes::limits::LimitsApi { st: st.clone() },
        routes::health::HealthApi { st: st.clone() },
        routes::webhooks::WebhooksApi { st: st.clone() },
        dashboard::DashboardApi { st: st.clone() },
        routes::events::EventsApi { st: st.clone() },
    );
    let service = OpenApiService::new(apis, "Stoflow Jobs", env!("CARGO_PKG_VERSION"))
        .description("Typed jobs over HTTP into Postgres, run by separate worker processes.");
    let spec = openapi::document(&service.spec());
    let spec = poem::endpoint::make_sync(move |_| {
        poem::Response::builder()
            .content_type("application/json")
            .body(spec.clone())
    });
    let metrics_st = st_for_metrics.clone();
    let docs = service.swagger_ui();
    Route::new()
        .nest("/", service)
        .at("/openapi.json", spec)
        .at(
            "/metrics",
            poem::get(poem::endpoint::make(move |_| {
                let st = metrics_st.clone();
                async move { metrics(&st).await }
            })),
        )
        .nest("/docs", docs)
        .nest("/dashboard", dashboard::pages())
        .around(dashboard::guard)
        .around(tenancy::scope)
        .around(move |ep, req| limit_body(ep, req, limit))
        .data(st)
        .catch_all_error(problem::render)
        // Outside the error renderer, so errors (401, 429) carry CORS headers too.
        .with_if(cors.is_some(), cors.unwrap_or_default())
        .around(request_log)
}

/// CORS from `api.cors_origins` (None: no CORS headers at all).
fn cors(origins: &[String]) -> Option<poem::middleware::Cors> {
    if origins.is_empty() {
        return None;
    }
    let c = poem::middleware::Cors::new()
        .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
        .allow_headers(["authorization", "content-type", "idempotency-key"])
        .expose_headers(["location", "retry-after"])
        .max_age(600);
    Some(if origins.iter().any(|o| o == "*") {
        c
    } else {
        c.allow_origins(origins.iter().map(String::as_str))
    })
}

/// Prometheus metrics: this process's counters plus queue gauges read from the database
/// (the same numbers as `GET /v1/queues`).
async fn metrics(st: &AppState) -> poem::Result<poem::Response> {
    use engine::metrics::{labels, render_gauge};
    let mut out = jobs::render_metrics();
    let stats = engine::queue::stats(&st.pool, jobs::kinds::ALL_KINDS)
        .await
        .map_err(db_error)?;
    let mut depth = vec![];
    let (mut oldest, mut paused) = (vec![], vec![]);
    for k in &stats {
        for (state, n) in [
            ("scheduled", k.scheduled),
            ("pending", k.pending),
            ("running", k.running),
            ("retrying", k.retrying),
            ("done", k.done),
            ("dead", k.dead),
            ("cancelled", k.cancelled),
        ] {
            depth.push((labels(&[("kind", &k.kind), ("state", state)]), n as f64));
        }
        oldest.push((
            labels(&[("kind", &k.kind)]),
            k.oldest_pending_age_s.unwrap_or(0.0),
        ));
        paused.push((
            labels(&[("kind", &k.kind)]),
            if k.paused { 1.0 } else { 0.0 },
        ));
    }
    render_gauge(
        &mut out,
        "stoflow_queue_jobs",
        "Jobs in the queue table by kind and state.",
        &depth,
    );
    render_gauge(
        &mut out,
        "stoflow_queue_oldest_pending_seconds",
        "Age of the oldest job ready to run and not claimed.",
        &oldest,
    );
    render_gauge(
        &mut out,
        "stoflow_queue_paused",
        "1 when the kind is paused.",
        &paused,
    );
    let alive: i64 = sqlx::query_scalar("SELECT count(*) FROM workers WHERE stopped_at IS NULL")
        .fetch_one(&st.pool)
        .await
        .map_err(db_error)?;
    render_gauge(
        &mut out,
        "stoflow_worker_processes",
        "Worker processes holding a live lease.",
        &[(Vec::new(), alive as f64)],
    );
    limit_gauges(st, &mut out).await?;
    Ok(poem::Response::builder()
        .content_type(engine::metrics::CONTENT_TYPE)
        .body(engine::metrics::finish(out)))
}

/// A database error outside an operation, as the same problem an operation would answer.
fn db_error(e: impl Into<problem::Problem>) -> poem::Error {
    poem::Error::from_response(poem::IntoResponse::into_response(e.into()))
}

/// Budget and circuit gauges from the fleet-wide limiter's rows.
async fn limit_gauges(st: &AppState, out: &mut String) -> poem::Result<()> {
    use engine::metrics::{labels, render_gauge};
    let v = jobs::limits::view(&st.pool).await.map_err(db_error)?;
    let (mut used, mut remaining, mut blocked) = (vec![], vec![], vec![]);
    for k in &v.keys {
        let l = labels(&[("key", &k.key), ("marketplace", &k.marketplace)]);
        used.push((l.clone(), k.used as f64));
        if let Some(r) = k.remaining {
            remaining.push((l.clone(), r as f64));
        }
        blocked.push((l, if k.blocked_until.is_some() { 1.0 } else { 0.0 }));
    }
    let (mut open, mut waiting) = (vec![], vec![]);
    for m in &v.marketplaces {
        let state = match m.circuit.as_str() {
            "closed" => 0.0,
            "half_open" => 0.5,
            _ => 1.0,
        };
        open.push((labels(&[("marketplace", &m.marketplace)]), state));
        for (on, n) in [
            ("limit", m.jobs_waiting_on_limit),
            ("circuit", m.jobs_waiting_on_circuit),
        ] {
            waiting.push((
                labels(&[("marketplace", &m.marketplace), ("on", on)]),
                n as f64,
            ));
        }
    }
    render_gauge(
        out,
        "stoflow_rate_limit_used",
        "Requests counted in the key's current window (a day).",
        &used,
    );
    render_gauge(
        out,
        "stoflow_rate_limit_remaining",
        "Requests left in the key's current window.",
        &remaining,
    );
    render_gauge(
        out,
        "stoflow_rate_limit_blocked",
        "1 while the marketplace blocks the key (Retry-After, spent quota).",
        &blocked,
    );
    render_gauge(
        out,
        "stoflow_circuit_state",
        "0 closed, 0.5 half-open, 1 open.",
        &open,
    );
    render_gauge(
        out,
        "stoflow_jobs_waiting_on_limit",
        "Jobs snoozed on a marketplace's rate limit or open circuit.",
        &waiting,
    );
    Ok(())
}

/// The request log and trace (poem's `Tracing` logged whole URIs: OAuth callbacks carry the
/// authorization code and state in the query; query values whose name could hold a secret are
/// redacted). The request runs with a trace id (the caller's W3C `traceparent` one, else a new
/// one): jobs it enqueues store it, their runs log it, and the response names it in `x-trace-id`.
/// With OTLP export on, this span is the request's span in that trace.
async fn request_log<E: Endpoint>(ep: Arc<E>, req: Request) -> poem::Result<poem::Response> {
    let span = tracing::info_span!(
        "request",
        remote_addr = %req.remote_addr(),
        method = %req.method(),
        uri = %redacted_uri(req.uri()),
        trace_id = tracing::field::Empty,
        // The OpenTelemetry names (HTTP semantic conventions): no route template at this layer,
        // so the span is named by the method alone.
        otel.name = %req.method(),
        otel.kind = "server",
        http.request.method = %req.method(),
        url.path = req.uri().path(),
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    let traceparent = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok());
    let id = match traceparent.and_then(engine::telemetry::trace_id_of_traceparent) {
        Some(id) => {
            let parent = traceparent.and_then(engine::telemetry::span_id_of_traceparent);
            engine::telemetry::adopt_trace(&span, &id, parent.as_deref());
            id
        }
        None => {
            engine::telemetry::otel_trace_id(&span).unwrap_or_else(engine::telemetry::new_trace_id)
        }
    };
    span.record("trace_id", id.as_str());
    let served = async {
        let started = std::time::Instant::now();
        let mut resp = match ep.call(req).await {
            Ok(r) => poem::IntoResponse::into_response(r),
            Err(e) => problem::render(e).await,
        };
        let status = resp.status();
        let span = tracing::Span::current();
        span.record("http.response.status_code", status.as_u16());
        if status.is_server_error() {
            span.record("otel.status_code", "ERROR");
        }
        tracing::info!(status = %status, duration = ?started.elapsed(), "response");
        if let Ok(v) = poem::http::HeaderValue::from_str(&id) {
            resp.headers_mut().insert("x-trace-id", v);
        }
        Ok(resp)
    };
    let served = engine::telemetry::with_trace_id(id.clone(), served);
    tracing::Instrument::instrument(served, span).await
}

/// Query parameters whose values are never logged.
const SECRET_PARAMS: &[&str] = &[
    "code",
    "state",
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "password",
    "code_verifier",
    "client_secret",
    "signature",
    "challenge_code",
];

/// The URI with the values of secret-bearing query parameters replaced by `[redacted]`.
pub fn redacted_uri(uri: &poem::http::Uri) -> String {
    let Some(query) = uri.query() else {
        return uri.path().to_string();
    };
    let redacted: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _))
                if SECRET_PARAMS.iter().any(|s| {
                    name.eq_ignore_ascii_case(s) || name.to_ascii_lowercase().contains("token")
                }) =>
            {
                format!("{name}=[redacted]")
            }
            _ => pair.to_string(),
        })
        .collect();
    format!("{}?{}", uri.path(), redacted.join("&"))
}

/// Rejects bodies over `limit` bytes with 413, whether or not they declare a Content-Length.
async fn limit_body<E: Endpoint>(
    ep: Arc<E>,
    mut req: Request,
    limit: usize,
) -> poem::Result<poem::Response> {
    let declared = req
        .headers()
        .get(poem::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let too_large = || {
        poem::Error::from_string(
            format!("request body exceeds {limit} bytes"),
            StatusCode::PAYLOAD_TOO_LARGE,
        )
    };
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    if declared.is_none() && ![Method::GET, Method::HEAD].contains(req.method()) {
        let body = req
            .take_body()
            .into_bytes_limit(limit)
            .await
            .map_err(|_| too_large())?;
        req.set_body(body);
    }
    if req.method() == Method::POST && matches!(req.uri().path(), "/v1/jobs" | "/v1/jobs/batch") {
        let body = req.take_body().into_bytes().await?;
        if let Some(detail) = unknown_job_fields(&body) {
            return Err(poem::Error::from_string(detail, StatusCode::BAD_REQUEST));
        }
        req.set_body(body);
    }
    ep.call(req).await.map(poem::IntoResponse::into_response)
}

/// Names the first argument field a job's kind does not have (a typo must not be ignored) or
/// whose value does not fit, before the typed parser, whose messages do not name fields.
/// Bodies that are not JSON objects are left to the typed parser, which explains them.
fn unknown_job_fields(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let items: Vec<(String, &serde_json::Value)> = match v.get("jobs").and_then(|j| j.as_array()) {
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, r)| Some((format!("jobs[{i}].job"), r.get("job")?)))
            .collect(),
        None => vec![("job".to_string(), v.get("job")?)],
    };
    for (at, job) in items {
        let obj = job.as_object()?;
        let public = jobs::kinds::PUBLIC_KINDS;
        let Some(kind) = obj.get("kind").and_then(|k| k.as_str()) else {
            return Some(format!(
                "{at}.kind is required: one of {}",
                public.join(", ")
            ));
        };
        let Some(known) = jobs::kinds::field_names(kind) else {
            return Some(format!(
                "{at}.kind {kind:?} is not a kind that can be enqueued; one of {}",
                public.join(", ")
            ));
        };
        if let Some(bad) = obj
            .keys()
            .find(|k| *k != "kind" && !known.contains(&k.as_str()))
        {
            return Some(format!(
                "{at}: unknown field {bad:?} for kind {kind:?}; expected one of: {}",
                known.join(", ")
            ));
        }
        let mut args = obj.clone();
        args.remove("kind");
        if let Some(Err(e)) = jobs::kinds::check_args(kind, serde_json::Value::Object(args)) {
            return Some(format!("{at} ({kind}): {e}"));
        }
    }
    None
}

pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let signal = engine::shutdown_signal();
    let mut spec = engine::db::PoolSpec {
        application_name: "stoflow-api",
        custom_plans: false,
        acquire_timeout: std::time::Duration::from_millis(settings.api.db_acquire_timeout_ms),
        session: Some(tenancy::session),
    };
    let mut pool = jobs::db::connect_migrated_waiting(&settings, &spec).await?;
    if !tenancy::seller_role_usable(&pool).await {
        tracing::warn!(
            role = jobs::db::SELLER_ROLE,
            "this database user cannot use the seller role: row-level security is off (the code's tenant filters still apply); grant it to enable the second wall"
        );
        pool.close().await;
        spec.session = None;
        pool = jobs::db::connect_migrated_waiting(&settings, &spec).await?;
    }
    let bind = settings.api.bind.clone();
    let job_changes = events::spawn_listener(pool.clone(), engine::queue::EVENTS_CHANNEL);
    let plugin_wakeups = events::spawn_listener(pool.clone(), jobs::plugin::WAKEUP_CHANNEL);
    let st = Arc::new(AppState {
        metrics: engine::metrics::global(),
        job_feed: events::spawn_feed(pool.clone(), &job_changes),
        job_changes,
        plugin_wakeups,
        job_events: Notifier::job_events(pool.clone()),
        market: jobs::context::Marketplaces::new(
            &settings.marketplaces.ebay,
            &settings.marketplaces.etsy,
            &settings.security,
        )?,
        notifier: Notifier::spawn(pool.clone()),
        enqueuer: engine::coalesce::Coalescer::spawn(pool.clone(), 500, 4),
        signer: jobs::auth::Signer::new(&settings.auth).map_err(anyhow::Error::msg)?,
        limiters: throttle::Limiters::new(
            settings.api.user_rate_per_s,
            settings.api.user_rate_burst,
            settings.api.login_per_client_per_min,
        ),
        ebay_keys: Default::default(),
        pool,
        settings: Arc::new(settings),
    });
    tracing::info!(%bind, "api listening");
    let a = &st.settings.api;
    let guards = conn::Guards {
        head_timeout: std::time::Duration::from_millis(a.header_timeout_ms),
        body_timeout: std::time::Duration::from_millis(a.body_timeout_ms),
        idle_timeout: std::time::Duration::from_millis(a.idle_timeout_ms),
        max_per_client: a.max_connections_per_client,
    };
    let acceptor = poem::listener::Listener::into_acceptor(TcpListener::bind(bind.clone()))
        .await
        .with_context(|| format!("api.bind {bind}"))?;
    Server::new_with_acceptor(conn::GuardedAcceptor::new(acceptor, guards))
        .run_with_graceful_shutdown(app(st), signal, Some(std::time::Duration::from_secs(10)))
        .await
        .context("http server")
}

#[cfg(test)]
mod tests {
    #[test]
    fn secrets_in_the_query_are_redacted_and_the_rest_kept() {
        let uri = "/oauth/ebay/callback?state=s3cr3t&code=v%5E1.1%23abc&expires_in=299&x=1"
            .parse()
            .unwrap();
        let got = super::redacted_uri(&uri);
        assert_eq!(
            got,
            "/oauth/ebay/callback?state=[redacted]&code=[redacted]&expires_in=299&x=1"
        );
        assert_eq!(
            super::redacted_uri(&"/v1/jobs".parse().unwrap()),
            "/v1/jobs"
        );
    }
}
