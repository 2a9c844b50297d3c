//! Etsy Open API v3 simulator: PKCE consent + token endpoint with rotating refresh tokens,
//! `x-api-key: keystring:shared_secret`, per-app rate limits with Etsy's headers, listings
//! (draft → active rules), inventory, images, receipts, shop, sections, shipping profiles and
//! seller taxonomy, with both of Etsy's error body shapes.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use chrono::{DateTime, Datelike, Duration, Utc};
use poem::http::StatusCode;
use poem::web::{Data, Multipart, Path};
use poem::{
    Endpoint, EndpointExt, IntoResponse, Request, Response, Route, get, handler, post, put,
};
use regex::Regex;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::common::{
    Common, Shape, admin_body, admin_error, bearer, form, header, json, no_content, query,
    random_token, redirect, with_query,
};
use crate::log::lock;
use crate::push::{Delivery, Pusher};
use crate::ratelimit::{Verdict, Window};

const SCOPES: &[&str] = &[
    "address_r",
    "address_w",
    "billing_r",
    "cart_r",
    "cart_w",
    "email_r",
    "favorites_r",
    "favorites_w",
    "feedback_r",
    "listings_d",
    "listings_r",
    "listings_w",
    "profile_r",
    "profile_w",
    "recommend_r",
    "recommend_w",
    "shops_r",
    "shops_w",
    "transactions_r",
    "transactions_w",
];

#[derive(Debug, Clone)]
pub struct Settings {
    pub keystring: String,
    pub shared_secret: String,
    /// Registered redirect URIs; consent requires an exact match.
    pub redirect_uris: Vec<String>,
    pub user_id: u64,
    pub shop_id: u64,
    pub shop_name: String,
    /// The default shop's currency (`currency_code`; prices are in it). EUR: the demo seller is
    /// European, like the catalogue's default currency.
    pub currency_code: String,
    pub per_second: u32,
    pub per_day: u32,
    /// The year that decides `when_made` values (`2020_<year>` ...); the clock's year if unset.
    pub year: Option<i32>,
    /// Unverified: physical listings refused without `readiness_state_id` since processing
    /// profiles. On by default (the stricter choice).
    pub require_readiness_state: bool,
    /// Etsy staff: if any of who_made/when_made/is_supply is sent, send all three. Since the
    /// first two are required, this makes is_supply required. On by default.
    pub require_is_supply: bool,
    /// Spec: active physical listings need a return policy (outside the EU). Off by default,
    /// so activation needs exactly an image and a shipping profile.
    pub activation_requires_return_policy: bool,
    /// Whether 429s carry the x-limit-* headers (observed live in etsy/open-api#256).
    pub limit_headers_on_429: bool,
    pub access_ttl_secs: i64,
    pub refresh_ttl_secs: i64,
    /// Signs `order.paid` webhooks (Standard Webhooks: "whsec_" + base64); the platform's
    /// development default is the same.
    pub webhook_secret: String,
    /// Where `order.paid` webhooks go from the start (`/_admin/webhooks` changes it).
    pub webhook_url: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            keystring: "1aa2bb33cc44dd55ee66ff77".into(),
            shared_secret: "simsharedsecret".into(),
            redirect_uris: vec!["http://127.0.0.1:8080/oauth/etsy/callback".into()],
            user_id: 12_345_678,
            shop_id: 23_456_789,
            shop_name: "StoflowSimShop".into(),
            currency_code: "EUR".into(),
            per_second: 10,
            per_day: 10_000,
            year: None,
            require_readiness_state: true,
            require_is_supply: true,
            activation_requires_return_policy: false,
            limit_headers_on_429: true,
            access_ttl_secs: 3600,
            refresh_ttl_secs: 90 * 86_400,
            webhook_secret: "whsec_c3RvZmxvdy1kZXYtZXRzeS13ZWJob29rLXNlY3JldA==".into(),
            webhook_url: None,
        }
    }
}

/// Seeded per shop: shipping profile, return policy and readiness state ids are the shop id
/// plus these offsets, so they are predictable (the README lists the defaults).
const SHIPPING_OFFSET: u64 = 100;
const RETURN_OFFSET: u64 = 200;
const READINESS_OFFSET: u64 = 300;

struct App {
    app_id: u64,
    secret: String,
    redirect_uris: Vec<String>,
    window: Window,
}

struct Code {
    client_id: String,
    redirect_uri: String,
    user_id: u64,
    scopes: Vec<String>,
    challenge: String,
    expires: DateTime<Utc>,
}

struct Token {
    client_id: String,
    user_id: u64,
    scopes: Vec<String>,
    expires: DateTime<Utc>,
    revoked: bool,
}

struct Shop {
    user_id: u64,
    name: String,
    currency: String,
    sections: Vec<Value>,
}

impl State {
    /// The currency of a shop's prices.
    fn currency(&self, shop_id: u64) -> String {
        self.shops
            .get(&shop_id)
            .map_or_else(|| "USD".into(), |s| s.currency.clone())
    }
}

struct State {
    apps: HashMap<String, App>,
    codes: HashMap<String, Code>,
    access: HashMap<String, Token>,
    refresh: HashMap<String, Token>,
    shops: BTreeMap<u64, Shop>,
    listings: BTreeMap<u64, Value>,
    receipts: BTreeMap<u64, Value>,
    next_id: u64,
}

impl State {
    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

pub struct Etsy {
    st: Mutex<State>,
    common: Arc<Common>,
    settings: Settings,
    /// `order.paid` webhooks ([`crate::push`]).
    pusher: Arc<Pusher>,
}

/// Standard Webhooks signing: HMAC-SHA256 over "{id}.{timestamp}.{body}" with the base64
/// secret after `whsec_`, sent as `v1,<base64>`.
fn webhook_signer(secret: &str) -> crate::push::Signer {
    use hmac::Mac;
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .unwrap_or_else(|_| secret.as_bytes().to_vec());
    Box::new(move |d: &Delivery, at: i64| {
        let mut m = hmac::Hmac::<Sha256>::new_from_slice(&key).expect("any key length");
        m.update(format!("{}.{at}.{}", d.id, d.body).as_bytes());
        let sig = base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes());
        vec![
            ("webhook-id", d.id.clone()),
            ("webhook-timestamp", at.to_string()),
            ("webhook-signature", format!("v1,{sig}")),
        ]
    })
}

pub fn app(settings: Settings, common: Arc<Common>) -> impl Endpoint {
    let mut st = State {
        apps: HashMap::new(),
        codes: HashMap::new(),
        access: HashMap::new(),
        refresh: HashMap::new(),
        shops: BTreeMap::new(),
        listings: BTreeMap::new(),
        receipts: BTreeMap::new(),
        next_id: crate::common::id_seed(),
    };
    st.apps.insert(
        settings.keystring.clone(),
        App {
            app_id: 1_000_001,
            secret: settings.shared_secret.clone(),
            redirect_uris: settings.redirect_uris.clone(),
            window: Window::new(settings.per_second, settings.per_day),
        },
    );
    st.shops.insert(
        settings.shop_id,
        Shop {
            user_id: settings.user_id,
            name: settings.shop_name.clone(),
            currency: settings.currency_code.clone(),
            sections: Vec::new(),
        },
    );
    let pusher = Pusher::new(
        webhook_signer(&settings.webhook_secret),
        false,
        settings.webhook_url.clone(),
    );
    let sim = Arc::new(Etsy {
        st: Mutex::new(st),
        common: common.clone(),
        settings,
        pusher: pusher.clone(),
    });
    let a = "/v3/application";
    let guarded = sim.clone();
    let routes = Route::new()
        .at("/oauth/connect", get(connect))
        .at("/v3/public/oauth/token", post(token))
        .at(format!("{a}/openapi-ping"), get(ping))
        .at(format!("{a}/users/me"), get(me))
        .at(format!("{a}/users/:user_id/shops"), get(shop_by_owner))
        .at(format!("{a}/shops/:shop_id"), get(get_shop))
        .at(
            format!("{a}/shops/:shop_id/sections"),
            get(sections).post(create_section),
        )
        .at(
            format!("{a}/shops/:shop_id/shipping-profiles"),
            get(shipping_profiles),
        )
        .at(
            format!("{a}/shops/:shop_id/policies/return"),
            get(return_policies),
        )
        .at(
            format!("{a}/shops/:shop_id/readiness-state-definitions"),
            get(readiness_states),
        )
        .at(
            format!("{a}/shops/:shop_id/listings"),
            post(create_listing).get(shop_listings),
        )
        .at(
            format!("{a}/shops/:shop_id/listings/:listing_id"),
            poem::patch(update_listing),
        )
        .at(
            format!("{a}/shops/:shop_id/listings/:listing_id/images"),
            post(upload_image).get(get_images),
        )
        .at(
            format!("{a}/listings/:listing_id"),
            get(get_listing).delete(delete_listing),
        )
        .at(
            format!("{a}/listings/:listing_id/inventory"),
            get(get_inventory).put(put_inventory),
        )
        .at(format!("{a}/shops/:shop_id/receipts"), get(receipts))
        .at(
            format!("{a}/shops/:shop_id/receipts/:receipt_id"),
            get(receipt),
        )
        .at(format!("{a}/seller-taxonomy/nodes"), get(taxonomy_nodes))
        .at(
            format!("{a}/seller-taxonomy/nodes/:id/properties"),
            get(taxonomy_properties),
        )
        .at("/_admin/state", get(admin_state))
        .at("/_admin/receipts", post(admin_receipt))
        .at("/_admin/receipts/:id", post(admin_update_receipt))
        .at("/_admin/tokens/expire", post(admin_expire))
        .at("/_admin/tokens/revoke", post(admin_revoke))
        .at("/_admin/limits", put(admin_limits))
        .at("/_admin/apps", post(admin_app))
        .at("/_admin/users", post(admin_user))
        .at("/_admin/shops/:id", put(admin_shop))
        .nest("/_admin/webhooks", crate::push::admin(pusher))
        .around(move |ep, req| api_key_gate(ep, req, guarded.clone()))
        .data(sim);
    crate::common::wrap(
        routes,
        common,
        Shape {
            fail: |status, _| {
                let s = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                json(s, json!({"error": "Server Error"}))
            },
            throttle: |retry| {
                let mut r = err(StatusCode::TOO_MANY_REQUESTS, "Too many requests");
                r.headers_mut().insert("retry-after", retry.into());
                r
            },
        },
    )
}

// ---- errors ---------------------------------------------------------------------------

fn err(status: StatusCode, msg: &str) -> Response {
    json(status, json!({ "error": msg }))
}

fn bad(msg: &str) -> Response {
    err(StatusCode::BAD_REQUEST, msg)
}

/// The second shape Etsy uses for listing validation: an array of path/type/message.
fn bad_list(items: Vec<(String, &str, String)>) -> Response {
    let v: Vec<Value> = items
        .into_iter()
        .map(|(path, ty, msg)| json!({"path": path, "type": ty, "message": msg}))
        .collect();
    json(StatusCode::BAD_REQUEST, Value::Array(v))
}

fn oauth_err(status: StatusCode, e: &str, desc: &str) -> Response {
    json(status, json!({"error": e, "error_description": desc}))
}

// ---- x-api-key and rate limits -------------------------------------------------------

fn limit_headers(r: &mut Response, v: &Verdict) {
    let h = r.headers_mut();
    h.insert("x-limit-per-second", v.per_second.into());
    h.insert("x-remaining-this-second", v.remaining_second.into());
    h.insert("x-limit-per-day", v.per_day.into());
    h.insert("x-remaining-today", v.remaining_day.into());
}

/// Every `/v3/application` call needs `x-api-key: keystring:shared_secret` and counts against
/// that app's per-second and per-day limits; every answer carries the limit headers.
async fn api_key_gate<E: Endpoint>(
    ep: Arc<E>,
    req: Request,
    sim: Arc<Etsy>,
) -> poem::Result<Response> {
    if !req.uri().path().starts_with("/v3/application") {
        return ep.call(req).await.map(IntoResponse::into_response);
    }
    let key = header(&req, "x-api-key").unwrap_or("").to_string();
    let verdict = {
        let now = sim.common.clock.now();
        let mut st = lock(&sim.st);
        let Some((ks, secret)) = key.split_once(':') else {
            let msg = if key.is_empty() {
                "Invalid API key: should be in the format 'keystring:shared_secret'."
            } else {
                "Shared secret is required in x-api-key header."
            };
            return Ok(err(StatusCode::FORBIDDEN, msg));
        };
        let Some(app) = st.apps.get_mut(ks).filter(|a| a.secret == secret) else {
            return Ok(err(StatusCode::FORBIDDEN, "Invalid API key"));
        };
        app.window.take(now)
    };
    if !verdict.allowed {
        let mut r = err(
            StatusCode::TOO_MANY_REQUESTS,
            "You have exceeded your quota of requests",
        );
        r.headers_mut()
            .insert("retry-after", verdict.retry_after.into());
        if sim.settings.limit_headers_on_429 {
            limit_headers(&mut r, &verdict);
        }
        return Ok(r);
    }
    let mut r = ep.call(req).await.map(IntoResponse::into_response)?;
    limit_headers(&mut r, &verdict);
    Ok(r)
}

/// The keystring of an already-validated `x-api-key`.
fn keystring(req: &Request) -> &str {
    header(req, "x-api-key")
        .and_then(|k| k.split(':').next())
        .unwrap_or("")
}

/// Checks the bearer token (issued to this app, unexpired, with `scope`); returns the user id.
fn user(sim: &Etsy, st: &State, req: &Request, scope: &str) -> Result<u64, Response> {
    let invalid = |d: &str| oauth_err(StatusCode::UNAUTHORIZED, "invalid_token", d);
    let Some(tok) = bearer(req).and_then(|t| st.access.get(t)) else {
        return Err(invalid("access token is invalid"));
    };
    if tok.revoked || tok.client_id != keystring(req) {
        return Err(invalid("access token is invalid"));
    }
    if tok.expires <= sim.common.clock.now() {
        return Err(invalid("access token is expired"));
    }
    if !tok.scopes.iter().any(|s| s == scope) {
        return Err(oauth_err(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            "Insufficient scope",
        ));
    }
    Ok(tok.user_id)
}

/// Like `user`, and the user must own the shop in the path.
fn owner(
    sim: &Etsy,
    st: &State,
    req: &Request,
    shop_id: &str,
    scope: &str,
) -> Result<u64, Response> {
    let uid = user(sim, st, req, scope)?;
    let shop = shop_id
        .parse::<u64>()
        .ok()
        .and_then(|id| st.shops.get(&id).map(|s| (id, s)));
    match shop {
        Some((id, s)) if s.user_id == uid => Ok(id),
        Some(_) => Err(err(
            StatusCode::FORBIDDEN,
            "The authenticated user does not own this shop.",
        )),
        None => Err(err(
            StatusCode::NOT_FOUND,
            &format!("Shop with id {shop_id} not found."),
        )),
    }
}

macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(r) => return r,
        }
    };
}

// ---- OAuth ----------------------------------------------------------------------------

/// The consent page. The simulated user approves at once: 302 to redirect_uri with code and
/// state. An unregistered redirect URI gets an error page and no redirect, as on Etsy.
#[handler]
fn connect(req: &Request, Data(sim): Data<&Arc<Etsy>>) -> Response {
    let q = query(req);
    let get = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
    let mut st = lock(&sim.st);
    let Some(app) = st.apps.get(get("client_id")) else {
        return page("The application is not known (client_id).");
    };
    let uri = get("redirect_uri").to_string();
    if !app.redirect_uris.contains(&uri) {
        return page("The requested redirect URL is not permitted.");
    }
    let state = get("state").to_string();
    let fail = |e: &str, d: &str| {
        redirect(&with_query(
            &uri,
            &[("state", &state), ("error", e), ("error_description", d)],
        ))
    };
    if get("response_type") != "code" {
        return fail("unsupported_response_type", "response_type must be code");
    }
    if state.is_empty() {
        return fail("invalid_request", "state is required");
    }
    let scopes: Vec<String> = get("scope").split_whitespace().map(String::from).collect();
    if scopes.is_empty() || scopes.iter().any(|s| !SCOPES.contains(&s.as_str())) {
        return fail("invalid_scope", "The requested scope is invalid");
    }
    let challenge = get("code_challenge").to_string();
    if get("code_challenge_method") != "S256" || challenge.len() != 43 {
        return fail(
            "invalid_request",
            "code_challenge with code_challenge_method=S256 is required",
        );
    }
    let user_id = q
        .get("sim_user_id")
        .and_then(|u| u.parse().ok())
        .unwrap_or(sim.settings.user_id);
    let code = random_token(48);
    st.codes.insert(
        code.clone(),
        Code {
            client_id: get("client_id").to_string(),
            redirect_uri: uri.clone(),
            user_id,
            scopes,
            challenge,
            expires: sim.common.clock.now() + Duration::seconds(300),
        },
    );
    redirect(&with_query(&uri, &[("code", &code), ("state", &state)]))
}

fn page(msg: &str) -> Response {
    Response::builder()
        .status(StatusCode::BAD_REQUEST)
        .content_type("text/html; charset=utf-8")
        .body(format!(
            "<html><body><h1>Etsy</h1><p>{msg}</p></body></html>"
        ))
}

fn valid_verifier(v: &str) -> bool {
    (43..=128).contains(&v.len())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._~-".contains(c))
}

fn issue(
    st: &mut State,
    s: &Settings,
    now: DateTime<Utc>,
    client_id: &str,
    user_id: u64,
    scopes: &[String],
) -> Response {
    let access = format!("{user_id}.{}", random_token(86));
    let refresh = format!("{user_id}.{}", random_token(86));
    let tok = |ttl| Token {
        client_id: client_id.to_string(),
        user_id,
        scopes: scopes.to_vec(),
        expires: now + Duration::seconds(ttl),
        revoked: false,
    };
    st.access.insert(access.clone(), tok(s.access_ttl_secs));
    st.refresh.insert(refresh.clone(), tok(s.refresh_ttl_secs));
    json(
        StatusCode::OK,
        json!({"access_token": access, "token_type": "Bearer", "expires_in": s.access_ttl_secs,
            "refresh_token": refresh, "scope": scopes.join(" ")}),
    )
}

#[handler]
fn token(body: Vec<u8>, Data(sim): Data<&Arc<Etsy>>) -> Response {
    let Some(f) = form(&body) else {
        return oauth_err(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "body must be application/x-www-form-urlencoded",
        );
    };
    let get = |k: &str| f.get(k).map(String::as_str).unwrap_or("");
    let now = sim.common.clock.now();
    let mut st = lock(&sim.st);
    if !st.apps.contains_key(get("client_id")) {
        return oauth_err(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client_id is not a known application",
        );
    }
    match get("grant_type") {
        "authorization_code" => {
            // Single use: the code is consumed even when the exchange fails.
            let Some(c) = st.codes.remove(get("code")) else {
                return oauth_err(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "code is invalid or was already used",
                );
            };
            if c.client_id != get("client_id")
                || c.redirect_uri != get("redirect_uri")
                || c.expires < now
            {
                return oauth_err(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "code is invalid or expired",
                );
            }
            let verifier = get("code_verifier");
            let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(Sha256::digest(verifier.as_bytes()));
            if !valid_verifier(verifier) || computed != c.challenge {
                return oauth_err(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "code_verifier is invalid",
                );
            }
            issue(
                &mut st,
                &sim.settings,
                now,
                &c.client_id,
                c.user_id,
                &c.scopes,
            )
        }
        "refresh_token" => {
            let rt = get("refresh_token");
            let Some(old) = st.refresh.get_mut(rt) else {
                return oauth_err(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "refresh_token is invalid",
                );
            };
            if old.revoked {
                return oauth_err(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "refresh_token is revoked",
                );
            }
            if old.client_id != get("client_id") {
                return oauth_err(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "refresh_token is invalid",
                );
            }
            if old.expires < now {
                return oauth_err(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "refresh_token is expired",
                );
            }
            // Rotation: the presented refresh token is consumed.
            old.revoked = true;
            let (client, uid, scopes) = (old.client_id.clone(), old.user_id, old.scopes.clone());
            issue(&mut st, &sim.settings, now, &client, uid, &scopes)
        }
        _ => oauth_err(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant_type is not supported",
        ),
    }
}

// ---- shop, sections, profiles ---------------------------------------------------------

fn shop_view(st: &State, id: u64) -> Option<Value> {
    let s = st.shops.get(&id)?;
    let active = st
        .listings
        .values()
        .filter(|l| l["shop_id"] == json!(id) && l["state"] == "active")
        .count();
    Some(
        json!({"shop_id": id, "user_id": s.user_id, "shop_name": s.name, "currency_code": s.currency,
        "is_vacation": false, "listing_active_count": active, "url": format!("https://www.etsy.com/shop/{}", s.name),
        "create_date": 1_600_000_000, "created_timestamp": 1_600_000_000, "title": s.name}),
    )
}

#[handler]
fn ping(req: &Request, Data(sim): Data<&Arc<Etsy>>) -> Response {
    let st = lock(&sim.st);
    let id = st
        .apps
        .get(keystring(req))
        .map(|a| a.app_id)
        .unwrap_or_default();
    json(StatusCode::OK, json!({ "application_id": id }))
}

#[handler]
fn me(req: &Request, Data(sim): Data<&Arc<Etsy>>) -> Response {
    let st = lock(&sim.st);
    let uid = tri!(user(sim, &st, req, "shops_r"));
    let shop = st
        .shops
        .iter()
        .find(|(_, s)| s.user_id == uid)
        .map(|(id, _)| *id);
    json(StatusCode::OK, json!({"user_id": uid, "shop_id": shop}))
}

#[handler]
fn shop_by_owner(Path(uid): Path<String>, Data(sim): Data<&Arc<Etsy>>) -> Response {
    let st = lock(&sim.st);
    let found = st
        .shops
        .iter()
        .find(|(_, s)| uid.parse() == Ok(s.user_id))
        .map(|(id, _)| *id);
    match found.and_then(|id| shop_view(&st, id)) {
        Some(v) => json(StatusCode::OK, v),
        None => err(
            StatusCode::NOT_FOUND,
            &format!("User with id {uid} does not have a shop."),
        ),
    }
}

#[handler]
fn get_shop(Path(id): Path<String>, Data(sim): Data<&Arc<Etsy>>) -> Response {
    let st = lock(&sim.st);
    match id.parse().ok().and_then(|id| shop_view(&st, id)) {
        Some(v) => json(StatusCode::OK, v),
        None => err(
            StatusCode::NOT_FOUND,
            &format!("Shop with id {id} not found."),
        ),
    }
}

fn list(results: Vec<Value>) -> Response {
    json(
        StatusCode::OK,
        json!({"count": results.len(), "results": results}),
    )
}

#[handler]
fn sections(Path(id): Path<String>, Data(sim): Data<&Arc<Etsy>>) -> Response {
    let st = lock(&sim.st);
    match id.parse().ok().and_then(|id: u64| st.shops.get(&id)) {
        Some(s) => list(s.sections.clone()),
        None => err(
            StatusCode::NOT_FOUND,
            &format!("Shop with id {id} not found."),
        ),
    }
}

#[handler]
fn create_section(
    req: &Request,
    Path(id): Path<String>,
    body: Vec<u8>,
    Data(sim): Data<&Arc<Etsy>>,
) -> Response {
    let mut st = lock(&sim.st);
    let shop_id = tri!(owner(sim, &st, req, &id, "shops_w"));
    let title = form(&body)
        .and_then(|f| f.get("title").cloned())
        .unwrap_or_default();
    if title.trim().is_empty() || title.chars().count() > 24 {
        return bad("title is required and must be at most 24 characters");
    }
    let sid = st.id();
    let Some(shop) = st.shops.get_mut(&shop_id) else {
        return bad("shop not found");
    };
    let v = json!({"shop_section_id": sid, "title": title, "rank": shop.sections.len() + 1,
        "user_id": shop.user_id, "active_listing_count": 0});
    shop.sections.push(v.clone());
    json(StatusCode::OK, v)
}

#[handler]
fn shipping_profiles(
    req: &Request,
    Path(id): Path<String>,
    Data(sim): Data<&Arc<Etsy>>,
) -> Response {
    let st = lock(&sim.st);
    let shop_id = tri!(owner(sim, &st, req, &id, "shops_r"));
    list(vec![
        json!({"shipping_profile_id": shop_id + SHIPPING_OFFSET, "title": "Standard",
        "user_id": st.shops.get(&shop_id).map(|s| s.user_id), "min_processing_days": 1, "max_processing_days": 3,
        "processing_days_display_label": "1-3 days", "origin_country_iso": "US", "origin_postal_code": "10001",
        "profile_type": "manual", "domestic_handling_fee": 0, "international_handling_fee": 0,
        "shipping_profile_destinations": [{"shipping_profile_destination_id": shop_id + SHIPPING_OFFSET + 1,
            "shipping_profile_id": shop_id + SHIPPING_OFFSET, "origin_country_iso": "US", "destination_country_iso": "US",
            "destination_region": "none", "primary_cost": {"amount": 500, "divisor": 100, "currency_code": "USD"},
            "secondary_cost": {"amount": 200, "divisor": 100, "currency_code": "USD"}}],
        "shipping_profile_upgrades": []}),
    ])
}

#[handler]
fn return_policies(req: &Request, Path(id): Path<String>, Data(sim): Data<&Arc<Etsy>>) -> Response {
    let st = lock(&sim.st);
    let shop_id = tri!(owner(sim, &st, req, &id, "shops_r"));
    list(vec![
        json!({"return_policy_id": shop_id + RETURN_OFFSET, "shop_id": shop_id,
        "accepts_returns": true, "accepts_exchanges": true, "return_deadline": 30}),
    ])
}

#[handler]
fn readiness_states(
    req: &Request,
    Path(id): Path<String>,
    Data(sim): Data<&Arc<Etsy>>,
) -> Response {
    let st = lock(&sim.st);
    let shop_id = tri!(owner(sim, &st, req, &id, "shops_r"));
    list(vec![
        json!({"shop_id": shop_id, "readiness_state_id": shop_id + READINESS_OFFSET,
        "readiness_state": "ready_to_ship", "min_processing_days": 1, "max_processing_days": 3,
        "processing_days_display_label": "1-3 days"}),
    ])
}

// ---- taxonomy -------------------------------------------------------------------------

/// A small seller taxonomy: (id, parent, name). Leaves are 11, 12 and 21.
const NODES: &[(u64, Option<u64>, &str)] = &[
    (1, None, "Clothing"),
    (11, Some(1), "Dresses"),
    (12, Some(1), "Tops & Tees"),
    (2, None, "Jewelry"),
    (21, Some(2), "Necklaces"),
];

fn node(id: u64) -> Value {
    let Some((_, parent, name)) = NODES.iter().find(|n| n.0 == id) else {
        return Value::Null;
    };
    let children: Vec<Value> = NODES
        .iter()
        .filter(|n| n.1 == Some(id))
        .map(|n| node(n.0))
        .collect();
    let path: Vec<u64> = parent.iter().copied().chain([id]).collect();
    json!({"id": id, "level": if parent.is_some() {1} else {0}, "name": name, "parent_id": parent,
        "children": children, "full_path_taxonomy_ids": path})
}

#[handler]
fn taxonomy_nodes() -> Response {
    list(
        NODES
            .iter()
            .filter(|n| n.1.is_none())
            .map(|n| node(n.0))
            .collect(),
    )
}

#[handler]
fn taxonomy_properties(Path(id): Path<String>) -> Response {
    if !id
        .parse::<u64>()
        .is_ok_and(|id| NODES.iter().any(|n| n.0 == id))
    {
        return err(
            StatusCode::NOT_FOUND,
            &format!("Taxonomy node {id} not found."),
        );
    }
    let colors: Vec<Value> = [(1, "Black"), (2, "White"), (3, "Red"), (4, "Blue")]
        .iter()
        .map(|(i, n)| json!({"value_id": i, "name": n, "scale_id": null, "equal_to": []}))
        .collect();
    list(vec![
        json!({"property_id": 200, "name": "Primary color", "display_name": "Primary color", "scales": [],
            "is_required": false, "supports_attributes": true, "supports_variations": true, "is_multivalued": false,
            "max_values_allowed": null, "possible_values": colors, "selected_values": []}),
        json!({"property_id": 100, "name": "Size", "display_name": "Size",
            "scales": [{"scale_id": 1, "display_name": "US letter", "description": ""}],
            "is_required": false, "supports_attributes": false, "supports_variations": true, "is_multivalued": false,
            "max_values_allowed": null, "possible_values": [], "selected_values": []}),
    ])
}

// ---- listings -------------------------------------------------------------------------

pub fn when_made_values(year: i32) -> Vec<String> {
    let mut v = vec![
        "made_to_order".to_string(),
        format!("2020_{year}"),
        "2010_2019".into(),
        format!("{}_2009", year - 19),
        format!("before_{}", year - 19),
        format!("2000_{}", year - 20),
    ];
    for d in [
        "1990s",
        "1980s",
        "1970s",
        "1960s",
        "1950s",
        "1940s",
        "1930s",
        "1920s",
        "1910s",
        "1900s",
        "1800s",
        "1700s",
        "before_1700",
    ] {
        v.push(d.into());
    }
    v
}

fn money(amount: f64, currency: &str) -> Value {
    json!({"amount": (amount * 100.0).round() as i64, "divisor": 100, "currency_code": currency})
}

fn list_field(s: &str) -> Vec<String> {
    s.split(',')
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Title, tag and material rules. Errors use Etsy's array shape.
fn text_rules(f: &HashMap<String, String>) -> Result<(), Response> {
    let mut errs = Vec::new();
    if let Some(title) = f.get("title") {
        let forbidden =
            Regex::new(r"[^\p{L}\p{Nd}\p{P}\p{Sm}\p{Zs}™©®]").map_err(|e| bad(&e.to_string()))?;
        if let Some(m) = forbidden.find(title) {
            let pos = title[..m.start()].chars().count();
            errs.push((
                format!("/title/{pos}"),
                "invalid_characters",
                "contains invalid characters".to_string(),
            ));
        }
        for c in ['%', ':', '&', '+'] {
            if title.matches(c).count() > 1 {
                errs.push((
                    "/title".into(),
                    "invalid_characters",
                    format!("may contain '{c}' at most once"),
                ));
            }
        }
        if title.chars().count() > 140 {
            errs.push((
                "/title".into(),
                "string_too_long",
                "cannot be longer than 140 characters".into(),
            ));
        }
        if title.trim().is_empty() {
            errs.push((
                "/title".into(),
                "string_too_short",
                "cannot be empty".into(),
            ));
        }
    }
    if let Some(tags) = f.get("tags") {
        let tags = list_field(tags);
        if tags.len() > 13 {
            errs.push((
                "/tags".into(),
                "array_too_long",
                "cannot be more than 13 items".into(),
            ));
        }
        for (i, t) in tags.iter().enumerate() {
            if t.chars().count() > 20 {
                errs.push((
                    format!("/tags/{i}"),
                    "string_too_long",
                    "cannot be longer than 20 characters".into(),
                ));
            }
            if !t
                .chars()
                .all(|c| c.is_alphanumeric() || c.is_whitespace() || "-'™©®".contains(c))
            {
                errs.push((
                    format!("/tags/{i}"),
                    "invalid_characters",
                    "contains invalid characters".into(),
                ));
            }
        }
        let mut seen: Vec<String> = tags.iter().map(|t| t.to_lowercase()).collect();
        seen.sort();
        seen.dedup();
        if seen.len() != tags.len() && errs.is_empty() {
            return Err(bad(
                "There was a problem with /tags : You may not have duplicate tags.",
            ));
        }
    }
    if let Some(m) = f.get("materials") {
        for (i, t) in list_field(m).iter().enumerate() {
            if !t.chars().all(|c| c.is_alphanumeric() || c.is_whitespace()) {
                errs.push((
                    format!("/materials/{i}"),
                    "invalid_characters",
                    "contains invalid characters".into(),
                ));
            }
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(bad_list(errs))
    }
}

/// Enum and reference rules shared by create and update; errors use `{"error": ...}`.
fn field_rules(sim: &Etsy, f: &HashMap<String, String>, shop_id: u64) -> Result<(), Response> {
    let year = sim
        .settings
        .year
        .unwrap_or_else(|| sim.common.clock.now().year());
    if let Some(w) = f.get("who_made")
        && !["i_did", "someone_else", "collective"].contains(&w.as_str())
    {
        return Err(bad(
            "who_made must be one of i_did, someone_else, collective",
        ));
    }
    if let Some(w) = f.get("when_made") {
        let allowed = when_made_values(year);
        if !allowed.contains(w) {
            return Err(bad(&format!(
                "when_made must be one of {}",
                allowed.join(", ")
            )));
        }
    }
    if let Some(s) = f.get("is_supply")
        && !["true", "false", "1", "0"].contains(&s.as_str())
    {
        return Err(bad("is_supply must be a boolean"));
    }
    if let Some(t) = f.get("taxonomy_id")
        && !t
            .parse::<u64>()
            .is_ok_and(|t| NODES.iter().any(|n| n.0 == t))
    {
        return Err(bad("taxonomy_id must be a valid seller taxonomy id"));
    }
    let id_is = |k: &str, want: u64| f.get(k).is_none_or(|v| v.parse() == Ok(want));
    if !id_is("shipping_profile_id", shop_id + SHIPPING_OFFSET) {
        return Err(bad(
            "shipping_profile_id is not a shipping profile of this shop",
        ));
    }
    if !id_is("return_policy_id", shop_id + RETURN_OFFSET) {
        return Err(bad("return_policy_id is not a return policy of this shop"));
    }
    if !id_is("readiness_state_id", shop_id + READINESS_OFFSET) {
        return Err(bad(
            "readiness_state_id is not a readiness state definition of this shop",
        ));
    }
    if let Some(t) = f.get("type")
        && !["physical", "download", "both"].contains(&t.as_str())
    {
        return Err(bad("type must be one of physical, download, both"));
    }
    Ok(())
}

fn opt_u64(f: &HashMap<String, String>, k: &str) -> Value {
    f.get(k)
        .and_then(|v| v.parse::<u64>().ok())
        .map(Value::from)
        .unwrap_or(Value::Null)
}

fn truthy(v: &str) -> bool {
    v == "true" || v == "1"
}

#[handler]
fn create_listing(
    req: &Request,
    Path(shop): Path<String>,
    body: Vec<u8>,
    Data(sim): Data<&Arc<Etsy>>,
) -> Response {
    let mut st = lock(&sim.st);
    let shop_id = tri!(owner(sim, &st, req, &shop, "listings_w"));
    if !header(req, "content-type")
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"))
    {
        return bad("Content-Type must be application/x-www-form-urlencoded");
    }
    let Some(f) = form(&body) else {
        return bad("Could not parse the form body");
    };
    let mut required = vec![
        "quantity",
        "title",
        "description",
        "price",
        "who_made",
        "when_made",
        "taxonomy_id",
    ];
    if sim.settings.require_is_supply {
        required.push("is_supply");
    }
    let physical = f.get("type").is_none_or(|t| t != "download");
    if physical && sim.settings.require_readiness_state {
        required.push("readiness_state_id");
    }
    if let Some(missing) = required
        .iter()
        .find(|k| f.get(**k).is_none_or(|v| v.trim().is_empty()))
    {
        return bad(&format!("Missing required parameter: {missing}"));
    }
    let Some(quantity) = f
        .get("quantity")
        .and_then(|q| q.parse::<u64>().ok())
        .filter(|q| (1..=999).contains(q))
    else {
        return bad("quantity must be an integer between 1 and 999");
    };
    let Some(price) = f
        .get("price")
        .and_then(|p| p.parse::<f64>().ok())
        .filter(|p| *p >= 0.2 && *p <= 50_000.0)
    else {
        return bad("price must be a number between 0.20 and 50000.00");
    };
    tri!(text_rules(&f));
    tri!(field_rules(sim, &f, shop_id));
    let now = sim.common.clock.now().timestamp();
    let id = st.id();
    let offering_id = st.id();
    let product_id = st.id();
    let readiness = opt_u64(&f, "readiness_state_id");
    let cur = st.currency(shop_id);
    let get = |k: &str| f.get(k).cloned().unwrap_or_default();
    let listing = json!({
        "listing_id": id, "user_id": st.shops.get(&shop_id).map(|s| s.user_id), "shop_id": shop_id,
        "title": get("title"), "description": get("description"), "state": "draft",
        "creation_timestamp": now, "created_timestamp": now, "ending_timestamp": now + 120 * 86_400,
        "original_creation_timestamp": now, "last_modified_timestamp": now, "updated_timestamp": now,
        "state_timestamp": now, "quantity": quantity, "shop_section_id": opt_u64(&f, "shop_section_id"),
        "featured_rank": -1, "url": format!("https://www.etsy.com/listing/{id}"), "num_favorers": 0,
        "non_taxable": false, "is_taxable": f.get("is_taxable").is_none_or(|v| truthy(v)),
        "is_customizable": f.get("is_customizable").is_some_and(|v| truthy(v)), "is_personalizable": false,
        "listing_type": f.get("type").cloned().unwrap_or_else(|| "physical".into()),
        "tags": list_field(&get("tags")), "materials": list_field(&get("materials")),
        "shipping_profile_id": opt_u64(&f, "shipping_profile_id"), "return_policy_id": opt_u64(&f, "return_policy_id"),
        "processing_min": opt_u64(&f, "processing_min"), "processing_max": opt_u64(&f, "processing_max"),
        "who_made": get("who_made"), "when_made": get("when_made"), "is_supply": truthy(&get("is_supply")),
        "is_private": false, "style": list_field(&get("styles")), "file_data": "", "has_variations": false,
        "should_auto_renew": f.get("should_auto_renew").is_some_and(|v| truthy(v)), "language": "en-US",
        "price": money(price, &cur), "taxonomy_id": opt_u64(&f, "taxonomy_id"), "readiness_state_id": readiness,
        "suggested_title": null, "views": 0,
        "_images": [],
        "_inventory": {"products": [{"product_id": product_id, "sku": "", "is_deleted": false, "property_values": [],
            "offerings": [{"offering_id": offering_id, "quantity": quantity, "is_enabled": true, "is_deleted": false,
                "price": money(price, &cur), "readiness_state_id": readiness}]}],
            "price_on_property": [], "quantity_on_property": [], "sku_on_property": [], "readiness_state_on_property": []},
    });
    st.listings.insert(id, listing.clone());
    json(StatusCode::CREATED, listing_view(&listing, &[]))
}

/// The public shape: internal `_images`/`_inventory` become `images`/`inventory` only when
/// asked for through `includes`.
fn listing_view(l: &Value, includes: &[&str]) -> Value {
    let mut v = l.clone();
    if let Some(o) = v.as_object_mut() {
        let images = o.remove("_images");
        let inventory = o.remove("_inventory");
        if includes.iter().any(|i| i.eq_ignore_ascii_case("images")) {
            o.insert("images".into(), images.unwrap_or_default());
        }
        if includes.iter().any(|i| i.eq_ignore_ascii_case("inventory")) {
            o.insert("inventory".into(), inventory.unwrap_or_default());
        }
    }
    v
}

fn includes(req: &Request) -> Vec<String> {
    query(req)
        .get("includes")
        .map(|s| list_field(s))
        .unwrap_or_default()
}

#[handler]
fn update_listing(
    req: &Request,
    Path((shop, lid)): Path<(String, String)>,
    body: Vec<u8>,
    Data(sim): Data<&Arc<Etsy>>,
) -> Response {
    let mut st = lock(&sim.st);
    let shop_id = tri!(owner(sim, &st, req, &shop, "listings_w"));
    let Some(f) = form(&body) else {
        return bad("Could not parse the form body");
    };
    tri!(text_rules(&f));
    tri!(field_rules(sim, &f, shop_id));
    let now = sim.common.clock.now().timestamp();
    let settings = &sim.settings;
    let Some(l) = lid
        .parse::<u64>()
        .ok()
        .and_then(|id| st.listings.get_mut(&id))
        .filter(|l| l["shop_id"] == json!(shop_id))
    else {
        return err(
            StatusCode::NOT_FOUND,
            &format!("Listing with id {lid} not found."),
        );
    };
    let mut next = l.clone();
    for k in ["title", "description", "who_made", "when_made"] {
        if let Some(v) = f.get(k) {
            next[k] = json!(v);
        }
    }
    for k in [
        "shipping_profile_id",
        "return_policy_id",
        "shop_section_id",
        "taxonomy_id",
        "readiness_state_id",
        "processing_min",
        "processing_max",
    ] {
        if f.contains_key(k) {
            next[k] = opt_u64(&f, k);
        }
    }
    for k in [
        "is_supply",
        "is_taxable",
        "should_auto_renew",
        "is_customizable",
    ] {
        if let Some(v) = f.get(k) {
            next[k] = json!(truthy(v));
        }
    }
    if let Some(v) = f.get("tags") {
        next["tags"] = json!(list_field(v));
    }
    if let Some(v) = f.get("materials") {
        next["materials"] = json!(list_field(v));
    }
    if let Some(state) = f.get("state") {
        match state.as_str() {
            "active" => {
                // A listing is published only with an image and, when physical, a shipping
                // profile (and optionally a return policy); drafts need neither.
                let mut errs = Vec::new();
                if next["_images"].as_array().is_none_or(Vec::is_empty) {
                    errs.push((
                        "/images".to_string(),
                        "array_too_short",
                        "cannot be less than 1 items".to_string(),
                    ));
                }
                let physical = next["listing_type"] != "download";
                if physical && next["shipping_profile_id"].is_null() {
                    errs.push((
                        "/shipping_profile_id".into(),
                        "required",
                        "a shipping profile is required for a physical listing".into(),
                    ));
                }
                if physical
                    && settings.activation_requires_return_policy
                    && next["return_policy_id"].is_null()
                {
                    errs.push((
                        "/return_policy_id".into(),
                        "required",
                        "a return policy is required for an active physical listing".into(),
                    ));
                }
                if !errs.is_empty() {
                    return bad_list(errs);
                }
                if next["state"] == "sold_out" {
                    next["quantity"] = json!(1);
                    if let Some(o) = next.pointer_mut("/_inventory/products/0/offerings/0/quantity")
                    {
                        *o = json!(1);
                    }
                }
                next["state"] = json!("active");
                next["state_timestamp"] = json!(now);
            }
            "inactive" => {
                next["state"] = json!("inactive");
                next["state_timestamp"] = json!(now);
            }
            _ => return bad("state must be one of active, inactive"),
        }
    }
    next["last_modified_timestamp"] = json!(now);
    next["updated_timestamp"] = json!(now);
    *l = next;
    json(StatusCode::OK, listing_view(l, &[]))
}

#[handler]
fn get_listing(req: &Request, Path(lid): Path<String>, Data(sim): Data<&Arc<Etsy>>) -> Response {
    let st = lock(&sim.st);
    let inc = includes(req);
    let inc: Vec<&str> = inc.iter().map(String::as_str).collect();
    match lid.parse::<u64>().ok().and_then(|id| st.listings.get(&id)) {
        Some(l) => json(StatusCode::OK, listing_view(l, &inc)),
        None => err(
            StatusCode::NOT_FOUND,
            &format!("Listing with id {lid} not found."),
        ),
    }
}

#[handler]
fn delete_listing(req: &Request, Path(lid): Path<String>, Data(sim): Data<&Arc<Etsy>>) -> Response {
    let mut st = lock(&sim.st);
    let uid = tri!(user(sim, &st, req, "listings_d"));
    match lid.parse::<u64>().ok().filter(|id| {
        st.listings
            .get(id)
            .is_some_and(|l| l["user_id"] == json!(uid))
    }) {
        Some(id) => {
            st.listings.remove(&id);
            no_content()
        }
        None => err(
            StatusCode::NOT_FOUND,
            &format!("Listing with id {lid} not found."),
        ),
    }
}

fn paging(q: &HashMap<String, String>) -> Result<(usize, usize), Response> {
    let limit = match q.get("limit").map(|l| l.parse::<usize>()) {
        None => 25,
        Some(Ok(l)) if (1..=100).contains(&l) => l,
        _ => return Err(bad("limit must be an integer between 1 and 100")),
    };
    let offset = match q.get("offset").map(|o| o.parse::<usize>()) {
        None => 0,
        Some(Ok(o)) => o,
        _ => return Err(bad("offset must be a non-negative integer")),
    };
    Ok((limit, offset))
}

#[handler]
fn shop_listings(req: &Request, Path(shop): Path<String>, Data(sim): Data<&Arc<Etsy>>) -> Response {
    let st = lock(&sim.st);
    let shop_id = tri!(owner(sim, &st, req, &shop, "listings_r"));
    let q = query(req);
    let state = q.get("state").cloned().unwrap_or_else(|| "active".into());
    if !["active", "inactive", "sold_out", "draft", "expired"].contains(&state.as_str()) {
        return bad("state must be one of active, inactive, sold_out, draft, expired");
    }
    let (limit, offset) = tri!(paging(&q));
    let inc = includes(req);
    let inc: Vec<&str> = inc.iter().map(String::as_str).collect();
    let mut all: Vec<&Value> = st
        .listings
        .values()
        .filter(|l| l["shop_id"] == json!(shop_id) && l["state"] == json!(state))
        .collect();
    let key = match q.get("sort_on").map(String::as_str) {
        Some("updated") => "updated_timestamp",
        Some("price") => "price",
        Some("title") => "title",
        _ => "created_timestamp",
    };
    all.sort_by(|a, b| {
        let o = a[key]
            .to_string()
            .cmp(&b[key].to_string())
            .then(a["listing_id"].as_u64().cmp(&b["listing_id"].as_u64()));
        if matches!(
            q.get("sort_order").map(String::as_str),
            Some("asc" | "ascending" | "up")
        ) {
            o
        } else {
            o.reverse()
        }
    });
    let count = all.len();
    let results: Vec<Value> = all
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(|l| listing_view(l, &inc))
        .collect();
    json(StatusCode::OK, json!({"count": count, "results": results}))
}

// ---- images ---------------------------------------------------------------------------

#[handler]
async fn upload_image(
    req: &Request,
    Path((shop, lid)): Path<(String, String)>,
    mp: poem::Result<Multipart>,
    Data(sim): Data<&Arc<Etsy>>,
) -> Response {
    {
        let st = lock(&sim.st);
        let shop_id = tri!(owner(sim, &st, req, &shop, "listings_w"));
        if !lid
            .parse::<u64>()
            .ok()
            .and_then(|id| st.listings.get(&id))
            .is_some_and(|l| l["shop_id"] == json!(shop_id))
        {
            return err(
                StatusCode::NOT_FOUND,
                &format!("Listing with id {lid} not found."),
            );
        }
    }
    let Ok(mut mp) = mp else {
        return bad("Expected a multipart/form-data body");
    };
    let mut image: Option<usize> = None;
    let mut rank = 1u64;
    let mut alt = String::new();
    loop {
        let field = match mp.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(_) => return bad("Malformed multipart body"),
        };
        match field.name().unwrap_or("") {
            "image" => image = field.bytes().await.ok().map(|b| b.len()),
            "rank" => {
                rank = field
                    .text()
                    .await
                    .ok()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(1)
            }
            "alt_text" => alt = field.text().await.unwrap_or_default(),
            _ => {}
        }
    }
    let Some(size) = image.filter(|n| *n > 0) else {
        return bad("An image file (field 'image') or listing_image_id is required");
    };
    if alt.chars().count() > 500 {
        return bad("alt_text must be at most 500 characters");
    }
    let mut st = lock(&sim.st);
    let image_id = st.id();
    let now = sim.common.clock.now().timestamp();
    let Some(l) = lid
        .parse::<u64>()
        .ok()
        .and_then(|id| st.listings.get_mut(&id))
    else {
        return err(
            StatusCode::NOT_FOUND,
            &format!("Listing with id {lid} not found."),
        );
    };
    let url = format!("https://i.etsystatic.com/sim/il_fullxfull.{image_id}.jpg");
    let img = json!({"listing_id": l["listing_id"], "listing_image_id": image_id, "hex_code": null, "red": null,
        "green": null, "blue": null, "hue": null, "saturation": null, "brightness": null, "is_black_and_white": null,
        "creation_tsz": now, "created_timestamp": now, "rank": rank, "url_75x75": url, "url_170x135": url,
        "url_570xN": url, "url_fullxfull": url, "full_height": 1000, "full_width": 1000, "alt_text": alt, "bytes": size});
    if let Some(a) = l["_images"].as_array_mut() {
        if a.len() >= 20 {
            return bad("A listing may have at most 20 images");
        }
        a.push(img.clone());
    }
    l["updated_timestamp"] = json!(now);
    l["last_modified_timestamp"] = json!(now);
    json(StatusCode::CREATED, img)
}

#[handler]
fn get_images(Path((_shop, lid)): Path<(String, String)>, Data(sim): Data<&Arc<Etsy>>) -> Response {
    let st = lock(&sim.st);
    match lid.parse::<u64>().ok().and_then(|id| st.listings.get(&id)) {
        Some(l) => list(l["_images"].as_array().cloned().unwrap_or_default()),
        None => err(
            StatusCode::NOT_FOUND,
            &format!("Listing with id {lid} not found."),
        ),
    }
}

// ---- inventory ------------------------------------------------------------------------

#[handler]
fn get_inventory(req: &Request, Path(lid): Path<String>, Data(sim): Data<&Arc<Etsy>>) -> Response {
    let st = lock(&sim.st);
    let uid = tri!(user(sim, &st, req, "listings_r"));
    match lid
        .parse::<u64>()
        .ok()
        .and_then(|id| st.listings.get(&id))
        .filter(|l| l["user_id"] == json!(uid))
    {
        Some(l) => json(StatusCode::OK, l["_inventory"].clone()),
        None => err(
            StatusCode::NOT_FOUND,
            &format!("Listing with id {lid} not found."),
        ),
    }
}

#[derive(Deserialize)]
struct InvIn {
    products: Vec<ProductIn>,
    #[serde(default)]
    price_on_property: Vec<u64>,
    #[serde(default)]
    quantity_on_property: Vec<u64>,
    #[serde(default)]
    sku_on_property: Vec<u64>,
    #[serde(default)]
    readiness_state_on_property: Vec<u64>,
}

#[derive(Deserialize)]
struct ProductIn {
    #[serde(default)]
    sku: String,
    #[serde(default)]
    property_values: Vec<PropIn>,
    offerings: Vec<OfferingIn>,
}

#[derive(Deserialize)]
struct PropIn {
    property_id: u64,
    value_ids: Vec<u64>,
    values: Vec<String>,
    #[serde(default)]
    scale_id: Option<u64>,
    #[serde(default)]
    property_name: Option<String>,
}

#[derive(Deserialize)]
struct OfferingIn {
    price: f64,
    quantity: u64,
    is_enabled: bool,
    readiness_state_id: Option<u64>,
}

#[handler]
fn put_inventory(
    req: &Request,
    Path(lid): Path<String>,
    body: Vec<u8>,
    Data(sim): Data<&Arc<Etsy>>,
) -> Response {
    let mut st = lock(&sim.st);
    let uid = tri!(user(sim, &st, req, "listings_w"));
    let inv: InvIn = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return bad(&format!("Invalid inventory body: {e}")),
    };
    if inv.products.is_empty() {
        return bad_list(vec![(
            "/products".into(),
            "array_too_short",
            "cannot be less than 1 items".into(),
        )]);
    }
    let shop_ready = st
        .shops
        .iter()
        .find(|(_, s)| s.user_id == uid)
        .map(|(id, _)| id + READINESS_OFFSET);
    let cur = st
        .shops
        .iter()
        .find(|(_, s)| s.user_id == uid)
        .map_or_else(|| "USD".into(), |(_, s)| s.currency.clone());
    let mut products = Vec::new();
    let mut total = 0u64;
    let mut min_price: Option<f64> = None;
    for (i, p) in inv.products.iter().enumerate() {
        if p.offerings.is_empty() {
            return bad_list(vec![(
                format!("/products/{i}/offerings"),
                "array_too_short",
                "cannot be less than 1 items".into(),
            )]);
        }
        if p.property_values
            .iter()
            .any(|v| v.values.iter().any(|s| s.contains('(') || s.contains(')')))
        {
            return bad_list(vec![(
                format!("/products/{i}/property_values"),
                "invalid_characters",
                "values may not contain parentheses".into(),
            )]);
        }
        let mut offerings = Vec::new();
        for (j, o) in p.offerings.iter().enumerate() {
            if o.price < 0.2 || o.quantity > 999 {
                return bad_list(vec![(
                    format!("/products/{i}/offerings/{j}"),
                    "out_of_range",
                    "price must be ≥ 0.20 and quantity ≤ 999".into(),
                )]);
            }
            if sim.settings.require_readiness_state && o.readiness_state_id.is_none() {
                return bad_list(vec![(
                    format!("/products/{i}/offerings/{j}/readiness_state_id"),
                    "required",
                    "is required".into(),
                )]);
            }
            if o.readiness_state_id.is_some() && o.readiness_state_id != shop_ready {
                return bad("readiness_state_id is not a readiness state definition of this shop");
            }
            if o.is_enabled {
                total += o.quantity;
                min_price = Some(min_price.map_or(o.price, |m: f64| m.min(o.price)));
            }
            offerings.push((o, st.id()));
        }
        let pid = st.id();
        let props: Vec<Value> = p
            .property_values
            .iter()
            .map(|v| {
                json!({"property_id": v.property_id,
            "property_name": v.property_name, "scale_id": v.scale_id, "scale_name": null,
            "value_ids": v.value_ids, "values": v.values})
            })
            .collect();
        let offers: Vec<Value> = offerings
            .iter()
            .map(|(o, id)| {
                json!({"offering_id": id, "quantity": o.quantity,
            "is_enabled": o.is_enabled, "is_deleted": false, "price": money(o.price, &cur),
            "readiness_state_id": o.readiness_state_id})
            })
            .collect();
        products.push(json!({"product_id": pid, "sku": p.sku, "is_deleted": false, "offerings": offers, "property_values": props}));
    }
    let now = sim.common.clock.now().timestamp();
    let Some(l) = lid
        .parse::<u64>()
        .ok()
        .and_then(|id| st.listings.get_mut(&id))
        .filter(|l| l["user_id"] == json!(uid))
    else {
        return err(
            StatusCode::NOT_FOUND,
            &format!("Listing with id {lid} not found."),
        );
    };
    let inventory = json!({"products": products, "price_on_property": inv.price_on_property,
        "quantity_on_property": inv.quantity_on_property, "sku_on_property": inv.sku_on_property,
        "readiness_state_on_property": inv.readiness_state_on_property});
    l["_inventory"] = inventory.clone();
    set_quantity(l, total, now);
    if let Some(p) = min_price {
        l["price"] = money(p, &cur);
    }
    l["has_variations"] = json!(inv.products.len() > 1);
    json(StatusCode::OK, inventory)
}

/// Listing quantity is the sum of enabled offerings; at 0 an active listing is sold out.
fn set_quantity(l: &mut Value, total: u64, now: i64) {
    l["quantity"] = json!(total);
    if total == 0 && l["state"] == "active" {
        l["state"] = json!("sold_out");
        l["state_timestamp"] = json!(now);
    }
    l["last_modified_timestamp"] = json!(now);
    l["updated_timestamp"] = json!(now);
}

// ---- receipts -------------------------------------------------------------------------

fn epoch_param(q: &HashMap<String, String>, k: &str) -> Result<Option<i64>, Response> {
    match q.get(k) {
        None => Ok(None),
        Some(v) => match v.parse::<i64>() {
            Ok(n) if n >= 946_684_800 => Ok(Some(n)),
            _ => Err(bad(&format!("{k} must be an epoch timestamp ≥ 946684800"))),
        },
    }
}

fn bool_param(q: &HashMap<String, String>, k: &str) -> Result<Option<bool>, Response> {
    match q.get(k).map(String::as_str) {
        None => Ok(None),
        Some("true" | "1") => Ok(Some(true)),
        Some("false" | "0") => Ok(Some(false)),
        Some(_) => Err(bad(&format!("{k} must be a boolean"))),
    }
}

#[handler]
fn receipts(req: &Request, Path(shop): Path<String>, Data(sim): Data<&Arc<Etsy>>) -> Response {
    let st = lock(&sim.st);
    let shop_id = tri!(owner(sim, &st, req, &shop, "transactions_r"));
    let q = query(req);
    let (limit, offset) = tri!(paging(&q));
    let min_c = tri!(epoch_param(&q, "min_created"));
    let max_c = tri!(epoch_param(&q, "max_created"));
    let min_m = tri!(epoch_param(&q, "min_last_modified"));
    let max_m = tri!(epoch_param(&q, "max_last_modified"));
    let mut flags = Vec::new();
    for (k, field) in [
        ("was_paid", "is_paid"),
        ("was_shipped", "is_shipped"),
        ("was_delivered", "_delivered"),
        ("was_canceled", "_canceled"),
    ] {
        if let Some(b) = tri!(bool_param(&q, k)) {
            flags.push((field, b));
        }
    }
    let sort_key = match q.get("sort_on").map(String::as_str) {
        None | Some("created") => "created_timestamp",
        Some("updated") => "updated_timestamp",
        Some("receipt_id") => "receipt_id",
        Some(_) => return bad("sort_on must be one of created, updated, receipt_id"),
    };
    let asc = match q.get("sort_order").map(String::as_str) {
        None | Some("desc" | "descending" | "down") => false,
        Some("asc" | "ascending" | "up") => true,
        Some(_) => {
            return bad("sort_order must be one of asc, ascending, desc, descending, up, down");
        }
    };
    let in_range = |v: &Value, min: Option<i64>, max: Option<i64>| {
        let t = v.as_i64().unwrap_or_default();
        min.is_none_or(|m| t >= m) && max.is_none_or(|m| t <= m)
    };
    let mut all: Vec<&Value> = st
        .receipts
        .values()
        .filter(|r| r["_shop_id"] == json!(shop_id))
        .filter(|r| {
            in_range(&r["created_timestamp"], min_c, max_c)
                && in_range(&r["updated_timestamp"], min_m, max_m)
        })
        .filter(|r| {
            flags
                .iter()
                .all(|(f, b)| r[*f].as_bool().unwrap_or(false) == *b)
        })
        .collect();
    all.sort_by_key(|r| {
        (
            r[sort_key].as_i64().unwrap_or_default(),
            r["receipt_id"].as_u64().unwrap_or_default(),
        )
    });
    if !asc {
        all.reverse();
    }
    let count = all.len();
    let results: Vec<Value> = all
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(receipt_view)
        .collect();
    json(StatusCode::OK, json!({"count": count, "results": results}))
}

fn receipt_view(r: &Value) -> Value {
    let mut v = r.clone();
    if let Some(o) = v.as_object_mut() {
        o.retain(|k, _| !k.starts_with('_'));
    }
    v
}

#[handler]
fn receipt(
    req: &Request,
    Path((shop, rid)): Path<(String, String)>,
    Data(sim): Data<&Arc<Etsy>>,
) -> Response {
    let st = lock(&sim.st);
    let shop_id = tri!(owner(sim, &st, req, &shop, "transactions_r"));
    match rid
        .parse::<u64>()
        .ok()
        .and_then(|id| st.receipts.get(&id))
        .filter(|r| r["_shop_id"] == json!(shop_id))
    {
        Some(r) => json(StatusCode::OK, receipt_view(r)),
        None => err(
            StatusCode::NOT_FOUND,
            &format!("Receipt with id {rid} not found."),
        ),
    }
}

// ---- admin ----------------------------------------------------------------------------

#[handler]
fn admin_state(Data(sim): Data<&Arc<Etsy>>) -> Response {
    let st = lock(&sim.st);
    let listings: Vec<Value> = st
        .listings
        .values()
        .map(|l| listing_view(l, &["Images", "Inventory"]))
        .collect();
    let all_receipts: Vec<Value> = st.receipts.values().map(receipt_view).collect();
    let shops: Vec<Value> = st
        .shops
        .keys()
        .filter_map(|id| shop_view(&st, *id))
        .collect();
    let apps: Vec<Value> = st
        .apps
        .iter()
        .map(|(k, a)| {
            json!({"keystring": k, "per_second": a.window.per_second,
        "per_day": a.window.per_day, "redirect_uris": a.redirect_uris})
        })
        .collect();
    json(
        StatusCode::OK,
        json!({"listings": listings, "receipts": all_receipts, "shops": shops, "apps": apps}),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTx {
    listing_id: u64,
    #[serde(default = "one")]
    quantity: u64,
    /// Which inventory product sold; the first one when absent.
    sku: Option<String>,
}

fn one() -> u64 {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewReceipt {
    shop_id: Option<u64>,
    buyer_email: Option<String>,
    transactions: Vec<NewTx>,
    /// Epoch seconds; the simulator clock when absent.
    created_timestamp: Option<i64>,
    #[serde(default = "yes")]
    was_paid: bool,
}

fn yes() -> bool {
    true
}

/// A buyer checks out: stock goes down (sold out at 0) and a receipt appears.
#[handler]
fn admin_receipt(body: Vec<u8>, Data(sim): Data<&Arc<Etsy>>) -> Response {
    let r: NewReceipt = match admin_body(&body) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let shop_id = r.shop_id.unwrap_or(sim.settings.shop_id);
    let now = sim.common.clock.now().timestamp();
    let created = r.created_timestamp.unwrap_or(now);
    let mut st = lock(&sim.st);
    let Some(seller) = st.shops.get(&shop_id).map(|s| s.user_id) else {
        return admin_error("no such shop");
    };
    let cur = st.currency(shop_id);
    let receipt_id = st.id() + 1_000_000_000;
    let mut txs = Vec::new();
    let mut subtotal = 0.0;
    for t in &r.transactions {
        let tx_id = st.id() + 2_000_000_000;
        let Some(l) = st
            .listings
            .get_mut(&t.listing_id)
            .filter(|l| l["shop_id"] == json!(shop_id))
        else {
            return admin_error(&format!("no listing {} in shop {shop_id}", t.listing_id));
        };
        let products = l
            .pointer_mut("/_inventory/products")
            .and_then(Value::as_array_mut);
        let mut unit = 0.0;
        let mut product_id = Value::Null;
        let mut sku = String::new();
        let mut total = 0;
        if let Some(products) = products {
            let idx = t
                .sku
                .as_ref()
                .and_then(|s| products.iter().position(|p| p["sku"] == json!(s)))
                .unwrap_or(0);
            if let Some(p) = products.get_mut(idx) {
                product_id = p["product_id"].clone();
                sku = p["sku"].as_str().unwrap_or_default().to_string();
                if let Some(o) = p.pointer_mut("/offerings/0") {
                    let q = o["quantity"].as_u64().unwrap_or_default();
                    o["quantity"] = json!(q.saturating_sub(t.quantity));
                    unit = o
                        .pointer("/price/amount")
                        .and_then(Value::as_f64)
                        .unwrap_or_default()
                        / 100.0;
                }
            }
            total = products
                .iter()
                .flat_map(|p| p["offerings"].as_array().cloned().unwrap_or_default())
                .filter(|o| o["is_enabled"] == json!(true))
                .map(|o| o["quantity"].as_u64().unwrap_or_default())
                .sum();
        }
        set_quantity(l, total, now);
        subtotal += unit * t.quantity as f64;
        txs.push(json!({"transaction_id": tx_id, "title": l["title"], "description": l["description"],
            "seller_user_id": seller, "buyer_user_id": 99_000_001, "create_timestamp": created,
            "created_timestamp": created, "paid_timestamp": if r.was_paid { json!(created) } else { Value::Null },
            "shipped_timestamp": null, "quantity": t.quantity, "listing_image_id": null, "receipt_id": receipt_id,
            "is_digital": false, "file_data": "", "listing_id": t.listing_id, "transaction_type": "listing",
            "product_id": product_id, "sku": sku, "price": money(unit, &cur), "shipping_cost": money(0.0, &cur),
            "variations": [], "product_data": [], "shipping_profile_id": l["shipping_profile_id"],
            "min_processing_days": 1, "max_processing_days": 3, "shipping_method": null, "shipping_upgrade": null,
            "expected_ship_date": created + 3 * 86_400, "buyer_coupon": 0, "shop_coupon": 0}));
    }
    let total = money(subtotal, &cur);
    let v = json!({"receipt_id": receipt_id, "receipt_type": 0, "seller_user_id": seller,
        "seller_email": "seller@example.com", "buyer_user_id": 99_000_001,
        "buyer_email": r.buyer_email.unwrap_or_else(|| "buyer@example.com".into()), "name": "Sim Buyer",
        "first_line": "1 Main St", "second_line": null, "city": "New York", "state": "NY", "zip": "10001",
        "status": if r.was_paid { "paid" } else { "open" }, "formatted_address": "Sim Buyer\n1 Main St\nNew York, NY 10001",
        "country_iso": "US", "payment_method": "cc", "payment_email": "", "message_from_seller": null,
        "message_from_buyer": null, "message_from_payment": null, "is_paid": r.was_paid, "is_shipped": false,
        "create_timestamp": created, "created_timestamp": created, "update_timestamp": created,
        "updated_timestamp": created, "is_gift": false, "gift_message": "", "gift_sender": "",
        "grandtotal": total, "subtotal": total, "total_price": total, "total_shipping_cost": money(0.0, &cur),
        "total_tax_cost": money(0.0, &cur), "total_vat_cost": money(0.0, &cur), "discount_amt": money(0.0, &cur),
        "gift_wrap_price": money(0.0, &cur), "shipments": [], "transactions": txs, "refunds": [],
        "_shop_id": shop_id, "_delivered": false, "_canceled": false});
    st.receipts.insert(receipt_id, v.clone());
    drop(st);
    if r.was_paid {
        // Etsy's ORDER_PAID webhook: flat, naming the receipt; the receiver fetches it.
        let body = json!({"event_type": "order.paid",
            "resource_url": format!("https://openapi.etsy.com/v3/application/shops/{shop_id}/receipts/{receipt_id}"),
            "shop_id": shop_id});
        sim.pusher.push(Delivery {
            id: format!("msg_{receipt_id}"),
            topic: "order.paid".into(),
            body: body.to_string(),
        });
    }
    json(StatusCode::CREATED, receipt_view(&v))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReceiptUpdate {
    status: Option<String>,
    is_shipped: Option<bool>,
    is_paid: Option<bool>,
    /// Whether the change bumps `updated_timestamp` (default true). Etsy is known not to bump
    /// it on cancellations and refunds; set false to reproduce that.
    #[serde(default = "yes")]
    touch: bool,
}

#[handler]
fn admin_update_receipt(
    Path(id): Path<String>,
    body: Vec<u8>,
    Data(sim): Data<&Arc<Etsy>>,
) -> Response {
    let u: ReceiptUpdate = match admin_body(&body) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let now = sim.common.clock.now().timestamp();
    let mut st = lock(&sim.st);
    let Some(r) = id
        .parse::<u64>()
        .ok()
        .and_then(|id| st.receipts.get_mut(&id))
    else {
        return admin_error("no such receipt");
    };
    if let Some(s) = u.status {
        r["_canceled"] = json!(s == "canceled");
        r["status"] = json!(s);
    }
    if let Some(b) = u.is_shipped {
        r["is_shipped"] = json!(b);
    }
    if let Some(b) = u.is_paid {
        r["is_paid"] = json!(b);
    }
    if u.touch {
        r["update_timestamp"] = json!(now);
        r["updated_timestamp"] = json!(now);
    }
    json(StatusCode::OK, receipt_view(r))
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct TokenSel {
    token: Option<String>,
}

/// Expires access tokens: the next use answers 401 `invalid_token` "access token is expired".
#[handler]
fn admin_expire(body: Vec<u8>, Data(sim): Data<&Arc<Etsy>>) -> Response {
    let sel: TokenSel = match admin_body(&body) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let past = sim.common.clock.now() - Duration::seconds(1);
    let mut st = lock(&sim.st);
    let mut n = 0;
    for (t, tok) in st.access.iter_mut() {
        if sel.token.as_ref().is_none_or(|s| s == t) {
            tok.expires = past;
            n += 1;
        }
    }
    json(StatusCode::OK, json!({ "expired": n }))
}

/// Revokes refresh tokens and their users' access tokens (a password change): the next
/// refresh answers `invalid_grant` "refresh_token is revoked".
#[handler]
fn admin_revoke(body: Vec<u8>, Data(sim): Data<&Arc<Etsy>>) -> Response {
    let sel: TokenSel = match admin_body(&body) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let mut st = lock(&sim.st);
    let mut users = Vec::new();
    let mut n = 0;
    for (t, tok) in st.refresh.iter_mut() {
        if sel.token.as_ref().is_none_or(|s| s == t) && !tok.revoked {
            tok.revoked = true;
            users.push(tok.user_id);
            n += 1;
        }
    }
    for tok in st.access.values_mut() {
        if users.contains(&tok.user_id) {
            tok.revoked = true;
        }
    }
    json(StatusCode::OK, json!({ "revoked": n }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Limits {
    keystring: Option<String>,
    per_second: u32,
    per_day: u32,
    /// Length of the day window in seconds (default a day), so tests can see a quota return.
    day_secs: Option<u64>,
}

/// Sets an app's per-second and per-day limits and clears its counters.
#[handler]
fn admin_limits(body: Vec<u8>, Data(sim): Data<&Arc<Etsy>>) -> Response {
    let l: Limits = match admin_body(&body) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let ks = l
        .keystring
        .unwrap_or_else(|| sim.settings.keystring.clone());
    let mut st = lock(&sim.st);
    let Some(app) = st.apps.get_mut(&ks) else {
        return admin_error("no such keystring");
    };
    app.window = Window::new(l.per_second, l.per_day).with_day_secs(l.day_secs.unwrap_or(86_400));
    json(
        StatusCode::OK,
        json!({"keystring": ks, "per_second": l.per_second, "per_day": l.per_day}),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewApp {
    keystring: String,
    shared_secret: String,
    #[serde(default)]
    redirect_uris: Vec<String>,
}

#[handler]
fn admin_app(body: Vec<u8>, Data(sim): Data<&Arc<Etsy>>) -> Response {
    let a: NewApp = match admin_body(&body) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let mut st = lock(&sim.st);
    let app_id = st.id();
    let s = &sim.settings;
    let app = st.apps.entry(a.keystring.clone()).or_insert_with(|| App {
        app_id,
        secret: String::new(),
        redirect_uris: Vec::new(),
        window: Window::new(s.per_second, s.per_day),
    });
    app.secret = a.shared_secret;
    for u in a.redirect_uris {
        if !app.redirect_uris.contains(&u) {
            app.redirect_uris.push(u);
        }
    }
    json(
        StatusCode::OK,
        json!({"keystring": a.keystring, "redirect_uris": app.redirect_uris}),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    user_id: u64,
    shop_id: u64,
    shop_name: Option<String>,
    /// The shop's currency (default: the simulator's `currency_code`).
    currency_code: Option<String>,
}

/// Seeds a user with a shop (with its shipping profile, return policy and readiness state);
/// consent picks the user with `&sim_user_id=<id>`.
#[handler]
fn admin_user(body: Vec<u8>, Data(sim): Data<&Arc<Etsy>>) -> Response {
    let u: NewUser = match admin_body(&body) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let name = u
        .shop_name
        .unwrap_or_else(|| format!("SimShop{}", u.shop_id));
    lock(&sim.st).shops.insert(
        u.shop_id,
        Shop {
            user_id: u.user_id,
            name,
            currency: u
                .currency_code
                .unwrap_or_else(|| sim.settings.currency_code.clone()),
            sections: Vec::new(),
        },
    );
    json(
        StatusCode::OK,
        json!({"user_id": u.user_id, "shop_id": u.shop_id,
        "shipping_profile_id": u.shop_id + SHIPPING_OFFSET, "return_policy_id": u.shop_id + RETURN_OFFSET,
        "readiness_state_id": u.shop_id + READINESS_OFFSET}),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShopChange {
    /// ISO 4217, e.g. USD: the currency of the shop's prices from now on.
    currency_code: String,
}

/// Changes a shop, as its owner would in the shop settings (today: its currency).
#[handler]
fn admin_shop(Path(id): Path<u64>, body: Vec<u8>, Data(sim): Data<&Arc<Etsy>>) -> Response {
    let c: ShopChange = match admin_body(&body) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if !(c.currency_code.len() == 3 && c.currency_code.chars().all(|c| c.is_ascii_uppercase())) {
        return admin_error("currency_code must be an ISO 4217 code such as USD");
    }
    let mut st = lock(&sim.st);
    let Some(shop) = st.shops.get_mut(&id) else {
        return admin_error("no such shop");
    };
    shop.currency = c.currency_code;
    let view = shop_view(&st, id);
    json(StatusCode::OK, view.unwrap_or_default())
}
