//! What the three simulators share: the request log, fault injection and clock, the
//! middleware that applies them, the `/_admin` routes for them, and small response helpers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use poem::http::StatusCode;
use poem::web::Data;
use poem::{Endpoint, EndpointExt, IntoResponse, Request, Response, Route, handler};
use rand::Rng;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::clock::{Clock, iso_ms};
use crate::faults::{Faults, Injected};
use crate::log::{Entry, RequestLog, lock};
use crate::net::Kills;

pub struct Common {
    pub log: RequestLog,
    pub faults: Mutex<Faults>,
    pub clock: Clock,
    pub kills: Kills,
}

impl Common {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            log: RequestLog::default(),
            faults: Mutex::new(Faults::default()),
            clock: Clock::default(),
            kills: Kills::default(),
        })
    }
}

/// How a marketplace renders an injected failure or throttle.
#[derive(Clone, Copy)]
pub struct Shape {
    pub fail: fn(u16, Option<u64>) -> Response,
    pub throttle: fn(u64) -> Response,
}

/// Wraps a simulator's routes: `/_admin/*` passes straight through (never logged, never
/// faulted, so tests can always steer); everything else is delayed, faulted and logged.
pub fn wrap(routes: impl Endpoint + 'static, common: Arc<Common>, shape: Shape) -> impl Endpoint {
    let routes = admin_routes(Route::new().nest("/", routes))
        .catch_all_error(|e: poem::Error| async move {
            let status = e.status();
            json(status, json!({"error": e.to_string()}))
        })
        .data(common.clone());
    routes.around(move |ep, req| {
        let common = common.clone();
        async move { apply(ep, req, common, shape).await }
    })
}

async fn apply<E: Endpoint>(
    ep: Arc<E>,
    req: Request,
    c: Arc<Common>,
    shape: Shape,
) -> poem::Result<Response> {
    let path = req.uri().path().to_string();
    if path.starts_with("/_admin") {
        return ep.call(req).await.map(IntoResponse::into_response);
    }
    let method = req.method().to_string();
    let query = req.uri().query().map(str::to_string);
    let (latency, injected) = lock(&c.faults).next(&path);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let timestamp = c
        .clock
        .now()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let resp = match injected {
        Some(Injected::Drop) => {
            if let Some(peer) = req.remote_addr().as_socket_addr() {
                lock(&c.kills).insert(*peer);
            }
            c.log.push(Entry {
                timestamp,
                method,
                path,
                query,
                status: None,
                dropped: true,
            });
            return Ok(Response::builder()
                .status(StatusCode::INTERNAL_SERVER_ERROR)
                .finish());
        }
        Some(Injected::Fail { status, error_id }) => (shape.fail)(status, error_id),
        Some(Injected::Throttle { retry_after }) => (shape.throttle)(retry_after),
        None => ep.call(req).await.map(IntoResponse::into_response)?,
    };
    c.log.push(Entry {
        timestamp,
        method,
        path,
        query,
        status: Some(resp.status().as_u16()),
        dropped: false,
    });
    Ok(resp)
}

fn admin_routes(r: Route) -> Route {
    r.at(
        "/_admin/requests",
        poem::get(requests).delete(clear_requests),
    )
    .at(
        "/_admin/faults",
        poem::get(get_faults).post(set_faults).delete(clear_faults),
    )
    .at("/_admin/clock", poem::get(get_clock).post(advance_clock))
    .at("/_admin/photos/:name", poem::get(photo))
}

/// A stand-in for the catalogue's image host: any name is a small JPEG (start and end markers
/// around the name), except names starting with `missing`, which are 404.
#[handler]
fn photo(poem::web::Path(name): poem::web::Path<String>) -> Response {
    if name.starts_with("missing") {
        return json(StatusCode::NOT_FOUND, json!({"error": "no such photo"}));
    }
    let mut body = vec![0xFF, 0xD8, 0xFF, 0xE0];
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(&[0xFF, 0xD9]);
    Response::builder().content_type("image/jpeg").body(body)
}

#[handler]
fn requests(Data(c): Data<&Arc<Common>>) -> Response {
    json(StatusCode::OK, json!({ "requests": c.log.all() }))
}

#[handler]
fn clear_requests(Data(c): Data<&Arc<Common>>) -> Response {
    c.log.clear();
    no_content()
}

#[handler]
fn get_faults(Data(c): Data<&Arc<Common>>) -> Response {
    json(StatusCode::OK, json!(*lock(&c.faults)))
}

#[handler]
fn set_faults(Data(c): Data<&Arc<Common>>, body: Vec<u8>) -> Response {
    match serde_json::from_slice::<Faults>(&body) {
        Ok(f) => {
            *lock(&c.faults) = f.clone();
            json(StatusCode::OK, json!(f))
        }
        Err(e) => admin_error(&e.to_string()),
    }
}

#[handler]
fn clear_faults(Data(c): Data<&Arc<Common>>) -> Response {
    *lock(&c.faults) = Faults::default();
    no_content()
}

#[handler]
fn get_clock(Data(c): Data<&Arc<Common>>) -> Response {
    json(StatusCode::OK, json!({ "now": iso_ms(c.clock.now()) }))
}

#[derive(Deserialize)]
struct Advance {
    advance_secs: i64,
}

#[handler]
fn advance_clock(Data(c): Data<&Arc<Common>>, body: Vec<u8>) -> Response {
    match serde_json::from_slice::<Advance>(&body) {
        Ok(a) => json(
            StatusCode::OK,
            json!({ "now": iso_ms(c.clock.advance(a.advance_secs)) }),
        ),
        Err(e) => admin_error(&e.to_string()),
    }
}

pub fn json(status: StatusCode, v: Value) -> Response {
    Response::builder()
        .status(status)
        .content_type("application/json")
        .body(v.to_string())
}

pub fn no_content() -> Response {
    Response::builder().status(StatusCode::NO_CONTENT).finish()
}

/// Admin endpoints are ours, not a marketplace's: one plain shape for their errors.
pub fn admin_error(msg: &str) -> Response {
    json(StatusCode::BAD_REQUEST, json!({ "error": msg }))
}

/// Parses an admin JSON body into `T`, or answers 400.
pub fn admin_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Response> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| admin_error(&e.to_string()))
}

/// Form bodies and query strings, last value wins (Etsy documents that repeated keys keep
/// only the last value).
pub fn form(bytes: &[u8]) -> Option<HashMap<String, String>> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(bytes)
        .ok()
        .map(|v| v.into_iter().collect())
}

pub fn query(req: &Request) -> HashMap<String, String> {
    form(req.uri().query().unwrap_or("").as_bytes()).unwrap_or_default()
}

pub fn header<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

pub fn bearer(req: &Request) -> Option<&str> {
    header(req, "authorization")?.strip_prefix("Bearer ")
}

/// The first id a simulator hands out: the wall clock in microseconds-ish (milliseconds × 1000),
/// so a restarted simulator never reissues an id a kept database already holds (ids stay unique
/// unless one process issued over 1000 ids per millisecond it ran). Below 2^53: JSON-safe.
pub fn id_seed() -> u64 {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    ms * 1000
}

pub fn random_token(len: usize) -> String {
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

pub fn uuid_like() -> String {
    let h = |n: usize| -> String {
        let mut r = rand::rng();
        (0..n)
            .map(|_| format!("{:x}", r.random_range(0..16u8)))
            .collect()
    };
    format!("{}-{}-4{}-a{}-{}", h(8), h(4), h(3), h(3), h(12))
}

pub fn redirect(location: &str) -> Response {
    Response::builder()
        .status(StatusCode::FOUND)
        .header("location", location)
        .finish()
}

/// Appends query pairs to a URL that may already carry a query.
pub fn with_query(base: &str, pairs: &[(&str, &str)]) -> String {
    let q = serde_urlencoded::to_string(pairs).unwrap_or_default();
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}{q}")
}
