//! eBay simulator: OAuth (consent redirect + token endpoint), Sell Inventory (items, offers,
//! publish/withdraw, locations) and Sell Fulfillment getOrders, with eBay's error envelope.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use poem::http::StatusCode;
use poem::web::{Data, Path};
use poem::{EndpointExt, Request, Response, Route, get, handler, post, put};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::clock::iso_ms;
use crate::common::{
    Common, Shape, admin_body, admin_error, bearer, form, header, json, no_content, query,
    random_token, redirect, with_query,
};
use crate::log::lock;
use crate::push::{Delivery, Pusher};
use crate::ratelimit::DailyQuota;
use sha2::{Digest, Sha256};

const SCOPE_ROOT: &str = "https://api.ebay.com/oauth/api_scope";
const CONDITIONS: &[&str] = &[
    "NEW",
    "LIKE_NEW",
    "NEW_OTHER",
    "NEW_WITH_DEFECTS",
    "CERTIFIED_REFURBISHED",
    "EXCELLENT_REFURBISHED",
    "VERY_GOOD_REFURBISHED",
    "GOOD_REFURBISHED",
    "SELLER_REFURBISHED",
    "PRE_OWNED_EXCELLENT",
    "USED_EXCELLENT",
    "PRE_OWNED_FAIR",
    "USED_VERY_GOOD",
    "USED_GOOD",
    "USED_ACCEPTABLE",
    "FOR_PARTS_OR_NOT_WORKING",
];

#[derive(Debug, Clone)]
pub struct Settings {
    pub client_id: String,
    pub client_secret: String,
    pub runame: String,
    /// Where the consent page sends the browser for `runame` (eBay's "Auth Accepted URL").
    pub accept_url: String,
    pub username: String,
    /// Sell API calls per day before 429 errorId 2001.
    pub daily_quota: u64,
    /// Whether 429s carry `Retry-After`. Unverified for eBay, so off by default: clients must
    /// not depend on it.
    pub retry_after_on_429: bool,
    pub access_ttl_secs: i64,
    pub refresh_ttl_secs: i64,
    /// Where Notification API messages go from the start (`/_admin/webhooks` changes it).
    pub notification_url: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            client_id: "StoflowS-Sim-PRD-5a1b2c3d4-0e1f2a3b".into(),
            client_secret: "PRD-a1b2c3d4e5f6-sim-secret".into(),
            runame: "Stoflow-Stoflow-SimPRD-abcdef".into(),
            accept_url: "http://127.0.0.1:8080/oauth/ebay/callback".into(),
            username: "stoflow_seller".into(),
            daily_quota: 2_000_000,
            retry_after_on_429: false,
            access_ttl_secs: 7200,
            refresh_ttl_secs: 47_304_000,
            notification_url: None,
        }
    }
}

/// Seeded for every seller so a publish works with no setup: one location and one policy of
/// each kind (eBay needs them to exist before publishing).
pub const LOCATION: &str = "default";
pub const FULFILLMENT_POLICY: &str = "6196932000";
pub const PAYMENT_POLICY: &str = "6196933000";
pub const RETURN_POLICY: &str = "6196934000";

struct App {
    secret: String,
    runames: HashMap<String, String>,
}

struct Code {
    client_id: String,
    runame: String,
    user: String,
    scopes: Vec<String>,
    expires: DateTime<Utc>,
}

struct Token {
    client_id: String,
    /// `None` for application (client-credentials) tokens.
    user: Option<String>,
    scopes: Vec<String>,
    expires: DateTime<Utc>,
    revoked: bool,
}

#[derive(Default)]
struct Seller {
    items: BTreeMap<String, Value>,
    locations: BTreeSet<String>,
    policies: BTreeSet<String>,
}

struct Offer {
    user: String,
    body: Value,
    listing_id: Option<String>,
    listing_status: Option<&'static str>,
    sold: u64,
}

struct Order {
    user: String,
    value: Value,
    created: DateTime<Utc>,
    modified: DateTime<Utc>,
}

struct State {
    apps: HashMap<String, App>,
    codes: HashMap<String, Code>,
    access: HashMap<String, Token>,
    refresh: HashMap<String, Token>,
    sellers: HashMap<String, Seller>,
    offers: BTreeMap<u64, Offer>,
    orders: Vec<Order>,
    next_id: u64,
    quota: DailyQuota,
}

impl State {
    fn seller(&mut self, user: &str) -> &mut Seller {
        self.sellers
            .entry(user.to_string())
            .or_insert_with(|| Seller {
                locations: [LOCATION.to_string()].into(),
                policies: [FULFILLMENT_POLICY, PAYMENT_POLICY, RETURN_POLICY]
                    .map(String::from)
                    .into(),
                ..Seller::default()
            })
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

pub struct Ebay {
    st: Mutex<State>,
    common: Arc<Common>,
    settings: Settings,
    /// Notification API messages ([`crate::push`]).
    pusher: Arc<Pusher>,
}

// ---- Notification API -------------------------------------------------------------------

/// The id of the key that signs this simulator's notifications.
pub const NOTIFICATION_KID: &str = "7a1c5e2b-3f4d-4e8a-9b6c-0d2e4f6a8b1c";
/// The seller topic for a new paid order (beside MARKETPLACE_ACCOUNT_DELETION).
pub const ORDER_TOPIC: &str = "ORDER_CONFIRMATION";

/// The simulator's notification signing key (P-256), fixed so every run serves the same one.
fn notification_key() -> p256::ecdsa::SigningKey {
    let seed = Sha256::digest(b"stoflow-sim-ebay-notification-key");
    p256::ecdsa::SigningKey::from_slice(&seed).expect("a valid P-256 scalar")
}

/// `X-EBAY-SIGNATURE`: base64 of {"alg":"ecdsa","kid","signature","digest":"SHA1"}, the
/// signature ECDSA over SHA-1 of the body, DER-encoded (what eBay's SDKs verify).
fn notification_signer() -> crate::push::Signer {
    let key = notification_key();
    Box::new(move |d: &Delivery, _at: i64| {
        use p256::ecdsa::signature::hazmat::PrehashSigner;
        let digest = sha1::Sha1::digest(d.body.as_bytes());
        let sig: p256::ecdsa::Signature = key.sign_prehash(&digest).expect("signs");
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let header = json!({"alg": "ecdsa", "kid": NOTIFICATION_KID,
                            "signature": b64(sig.to_der().as_bytes()), "digest": "SHA1"});
        vec![("x-ebay-signature", b64(header.to_string().as_bytes()))]
    })
}

/// A seller's eBay user id (eBay's are opaque short strings), derived from the username.
fn user_id(username: &str) -> String {
    let d = Sha256::digest(username.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&d[..8])
}

/// The Notification API envelope (shared/marketplaces.md §1.6).
fn notification(topic: &str, now: DateTime<Utc>, data: Value) -> Delivery {
    let id = format!("{:032x}", rand::random::<u128>());
    let at = iso_ms(now);
    let body = json!({"metadata": {"topic": topic, "schemaVersion": "1.0", "deprecated": false},
        "notification": {"notificationId": id, "eventDate": at, "publishDate": at,
            "publishAttemptCount": 1, "data": data}});
    Delivery {
        id,
        topic: topic.into(),
        body: body.to_string(),
    }
}

/// getPublicKey: any valid token (eBay wants an application token).
#[handler]
fn public_key(req: &Request, Path(kid): Path<String>, Data(sim): Data<&Arc<Ebay>>) -> Response {
    use p256::pkcs8::EncodePublicKey;
    let now = sim.common.clock.now();
    let st = lock(&sim.st);
    let valid = bearer(req)
        .and_then(|t| st.access.get(t))
        .is_some_and(|t| !t.revoked && t.expires > now);
    if !valid {
        return err_one(
            401,
            1001,
            "OAuth",
            "REQUEST",
            "Invalid access token",
            vec![],
        );
    }
    if kid != NOTIFICATION_KID {
        return err_one(
            404,
            195001,
            "API_NOTIFICATION",
            "REQUEST",
            "The specified key id is invalid.",
            vec![],
        );
    }
    let der = notification_key()
        .verifying_key()
        .to_public_key_der()
        .expect("encodes");
    // eBay sends the PEM without its line breaks.
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----{}-----END PUBLIC KEY-----",
        base64::engine::general_purpose::STANDARD.encode(der.as_bytes())
    );
    json(
        StatusCode::OK,
        json!({"algorithm": "ECDSA", "digest": "SHA1", "key": pem}),
    )
}

#[handler]
fn topics() -> Response {
    let topic = |id: &str, scope: &str, description: &str| {
        json!({"topicId": id, "description": description, "authorizationScopes": [],
            "scope": scope, "filterable": false, "status": "ENABLED",
            "supportedPayloads": [{"schemaVersion": "1.0", "format": ["JSON"],
                "deliveryProtocol": "HTTPS", "deprecated": false}]})
    };
    json(
        StatusCode::OK,
        json!({"topics": [
            topic("MARKETPLACE_ACCOUNT_DELETION", "APPLICATION", "A user asked for their account and data to be deleted."),
            topic(ORDER_TOPIC, "USER", "A buyer paid an order of the seller."),
        ], "total": 2}),
    )
}

/// Identity getUser: the token's user.
#[handler]
fn identity_user(req: &Request, Data(sim): Data<&Arc<Ebay>>) -> Response {
    let now = sim.common.clock.now();
    let st = lock(&sim.st);
    match bearer(req)
        .and_then(|t| st.access.get(t))
        .filter(|t| !t.revoked && t.expires > now)
        .and_then(|t| t.user.clone())
    {
        Some(u) => json(
            StatusCode::OK,
            json!({"userId": user_id(&u), "username": u, "accountType": "BUSINESS"}),
        ),
        None => err_one(
            401,
            1001,
            "OAuth",
            "REQUEST",
            "Invalid access token",
            vec![],
        ),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Deletion {
    username: Option<String>,
}

/// A user closes their eBay account: MARKETPLACE_ACCOUNT_DELETION is pushed.
#[handler]
fn admin_account_deletion(body: Vec<u8>, Data(sim): Data<&Arc<Ebay>>) -> Response {
    let d: Deletion = match admin_body(&body) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let user = d.username.unwrap_or_else(|| sim.settings.username.clone());
    let n = notification(
        "MARKETPLACE_ACCOUNT_DELETION",
        sim.common.clock.now(),
        json!({"username": user, "userId": user_id(&user), "eiasToken": format!("nY+sHZ2P{}", user_id(&user))}),
    );
    let id = n.id.clone();
    sim.pusher.push(n);
    json(StatusCode::OK, json!({"notificationId": id}))
}

pub fn app(settings: Settings, common: Arc<Common>) -> impl poem::Endpoint {
    let mut st = State {
        apps: HashMap::new(),
        codes: HashMap::new(),
        access: HashMap::new(),
        refresh: HashMap::new(),
        sellers: HashMap::new(),
        offers: BTreeMap::new(),
        orders: Vec::new(),
        next_id: crate::common::id_seed(),
        quota: DailyQuota::new(settings.daily_quota),
    };
    st.apps.insert(
        settings.client_id.clone(),
        App {
            secret: settings.client_secret.clone(),
            runames: [(settings.runame.clone(), settings.accept_url.clone())].into(),
        },
    );
    st.seller(&settings.username);
    let pusher = Pusher::new(
        notification_signer(),
        true,
        settings.notification_url.clone(),
    );
    let sim = Arc::new(Ebay {
        st: Mutex::new(st),
        common: common.clone(),
        settings,
        pusher: pusher.clone(),
    });
    let inv = "/sell/inventory/v1";
    let routes = Route::new()
        .at("/oauth2/authorize", get(authorize))
        .at("/identity/v1/oauth2/token", post(token))
        .at(format!("{inv}/inventory_item"), get(list_items))
        .at(
            format!("{inv}/inventory_item/:sku"),
            put(put_item).get(get_item).delete(delete_item),
        )
        .at(format!("{inv}/offer"), post(create_offer).get(get_offers))
        .at(
            format!("{inv}/offer/:id"),
            get(get_offer).put(update_offer).delete(delete_offer),
        )
        .at(format!("{inv}/offer/:id/publish"), post(publish))
        .at(format!("{inv}/offer/:id/withdraw"), post(withdraw))
        .at(format!("{inv}/location/:key"), post(create_location))
        .at("/sell/fulfillment/v1/order", get(get_orders))
        .at("/sell/fulfillment/v1/order/:id", get(get_order))
        .at("/_admin/state", get(admin_state))
        .at("/_admin/orders", post(admin_order))
        .at("/_admin/orders/:id", post(admin_update_order))
        .at("/_admin/tokens/expire", post(admin_expire))
        .at("/_admin/tokens/revoke", post(admin_revoke))
        .at("/_admin/quota", put(admin_quota))
        .at("/_admin/apps", post(admin_app))
        .at("/_admin/users", post(admin_user))
        .at("/_admin/account_deletion", post(admin_account_deletion))
        .nest("/_admin/webhooks", crate::push::admin(pusher))
        .at("/commerce/notification/v1/public_key/:kid", get(public_key))
        .at("/commerce/notification/v1/topic", get(topics))
        .at("/commerce/identity/v1/user/", get(identity_user))
        .data(sim);
    crate::common::wrap(
        routes,
        common,
        Shape {
            fail: |status, id| {
                let id = id.unwrap_or(25001);
                let msg = if id == 25025 {
                    "Concurrent access of the same Inventory or Inventory Item Group object is not allowed. Please try again later."
                } else {
                    "A system error has occurred."
                };
                err_one(status, id, "API_INVENTORY", "APPLICATION", msg, vec![])
            },
            throttle: |retry| {
                let mut r = quota_error();
                r.headers_mut().insert("retry-after", retry.into());
                r
            },
        },
    )
}

// ---- error envelope -------------------------------------------------------------------

fn err_one(
    status: u16,
    id: u64,
    domain: &str,
    category: &str,
    msg: &str,
    params: Vec<(&str, String)>,
) -> Response {
    let parameters: Vec<Value> = params
        .into_iter()
        .map(|(n, v)| json!({"name": n, "value": v}))
        .collect();
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json(
        status,
        json!({"errors": [{"errorId": id, "domain": domain, "subdomain": "Selling", "category": category,
            "message": msg, "longMessage": msg, "parameters": parameters}]}),
    )
}

fn inv_err(id: u64, msg: &str, params: Vec<(&str, String)>) -> Response {
    err_one(400, id, "API_INVENTORY", "REQUEST", msg, params)
}

fn ful_err(id: u64, msg: &str) -> Response {
    err_one(400, id, "API_FULFILLMENT", "REQUEST", msg, vec![])
}

fn invalid_field(field: &str) -> Response {
    inv_err(
        25709,
        &format!("Invalid value for {field}."),
        vec![("fieldName", field.to_string())],
    )
}

fn quota_error() -> Response {
    json(
        StatusCode::TOO_MANY_REQUESTS,
        json!({"errors": [{"errorId": 2001, "domain": "ACCESS", "category": "REQUEST",
            "message": "Too many requests.",
            "longMessage": "The request limit has been reached for the resource."}]}),
    )
}

fn oauth_err(status: StatusCode, error: &str, desc: &str) -> Response {
    json(status, json!({"error": error, "error_description": desc}))
}

// ---- OAuth ----------------------------------------------------------------------------

/// The consent page. The simulated user approves at once: 302 to the RuName's accept URL.
#[handler]
fn authorize(req: &Request, Data(sim): Data<&Arc<Ebay>>) -> Response {
    let q = query(req);
    let get = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
    let mut st = lock(&sim.st);
    let Some(app) = st.apps.get(get("client_id")) else {
        return page(
            StatusCode::BAD_REQUEST,
            "unauthorized_client: unknown client_id",
        );
    };
    let Some(accept) = app.runames.get(get("redirect_uri")).cloned() else {
        return page(
            StatusCode::BAD_REQUEST,
            "invalid_request: redirect_uri is not a RuName of this application",
        );
    };
    if get("response_type") != "code" {
        return page(StatusCode::BAD_REQUEST, "unsupported_response_type");
    }
    let scopes: Vec<String> = get("scope").split_whitespace().map(String::from).collect();
    if scopes.is_empty() || scopes.iter().any(|s| !s.starts_with(SCOPE_ROOT)) {
        return page(
            StatusCode::BAD_REQUEST,
            "invalid_scope: The requested scope is invalid",
        );
    }
    let code = format!("v^1.1#i^1#f^0#r^1#I^3#p^3#t^{}", random_token(64));
    let user = q
        .get("sim_user")
        .cloned()
        .unwrap_or_else(|| sim.settings.username.clone());
    st.seller(&user);
    let now = sim.common.clock.now();
    st.codes.insert(
        code.clone(),
        Code {
            client_id: get("client_id").to_string(),
            runame: get("redirect_uri").to_string(),
            user,
            scopes,
            expires: now + Duration::seconds(299),
        },
    );
    let mut pairs = vec![("code", code.as_str()), ("expires_in", "299")];
    if let Some(s) = q.get("state") {
        pairs.insert(0, ("state", s.as_str()));
    }
    redirect(&with_query(&accept, &pairs))
}

fn page(status: StatusCode, msg: &str) -> Response {
    Response::builder()
        .status(status)
        .content_type("text/html; charset=utf-8")
        .body(format!(
            "<html><body><h1>eBay sign-in error</h1><p>{msg}</p></body></html>"
        ))
}

#[handler]
fn token(req: &Request, body: Vec<u8>, Data(sim): Data<&Arc<Ebay>>) -> Response {
    let Some(client_id) = basic_client(req, &sim.st) else {
        return oauth_err(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        );
    };
    let Some(f) = form(&body) else {
        return oauth_err(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "request body is not form-encoded",
        );
    };
    let now = sim.common.clock.now();
    let s = &sim.settings;
    let mut st = lock(&sim.st);
    let bad_grant = || {
        oauth_err(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "the provided authorization grant code is invalid or was issued to another client",
        )
    };
    match f.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {
            let code = f.get("code").map(String::as_str).unwrap_or("");
            // Codes are single use: removed whether or not the rest checks out.
            let Some(c) = st.codes.remove(code) else {
                return bad_grant();
            };
            if c.client_id != client_id
                || c.expires < now
                || f.get("redirect_uri") != Some(&c.runame)
            {
                return bad_grant();
            }
            let access = format!("v^1.1#i^1#p^3#r^1#I^3#f^0#t^{}", random_token(96));
            let refresh = format!("v^1.1#i^1#p^3#r^1#f^0#I^3#t^{}", random_token(96));
            let tok = |ttl| Token {
                client_id: client_id.clone(),
                user: Some(c.user.clone()),
                scopes: c.scopes.clone(),
                expires: now + Duration::seconds(ttl),
                revoked: false,
            };
            st.access.insert(access.clone(), tok(s.access_ttl_secs));
            st.refresh.insert(refresh.clone(), tok(s.refresh_ttl_secs));
            json(
                StatusCode::OK,
                json!({"access_token": access, "expires_in": s.access_ttl_secs, "refresh_token": refresh,
                    "refresh_token_expires_in": s.refresh_ttl_secs, "token_type": "User Access Token"}),
            )
        }
        Some("refresh_token") => {
            let rt = f.get("refresh_token").map(String::as_str).unwrap_or("");
            let Some(r) = st.refresh.get(rt) else {
                return bad_grant();
            };
            if r.client_id != client_id || r.revoked || r.expires < now {
                return bad_grant();
            }
            let scopes = match f.get("scope") {
                None => r.scopes.clone(),
                Some(req) => {
                    let asked: Vec<String> = req.split_whitespace().map(String::from).collect();
                    if asked.iter().any(|a| !r.scopes.contains(a)) {
                        return oauth_err(
                            StatusCode::BAD_REQUEST,
                            "invalid_scope",
                            "The requested scope is invalid",
                        );
                    }
                    asked
                }
            };
            let user = r.user.clone();
            let access = format!("v^1.1#i^1#p^3#r^1#I^3#f^0#t^{}", random_token(96));
            st.access.insert(
                access.clone(),
                Token {
                    client_id,
                    user,
                    scopes,
                    expires: now + Duration::seconds(s.access_ttl_secs),
                    revoked: false,
                },
            );
            json(
                StatusCode::OK,
                json!({"access_token": access, "expires_in": s.access_ttl_secs, "token_type": "User Access Token"}),
            )
        }
        Some("client_credentials") => {
            let scopes: Vec<String> = f
                .get("scope")
                .map(|s| s.split_whitespace().map(String::from).collect())
                .unwrap_or_default();
            if scopes.is_empty() || scopes.iter().any(|s| !s.starts_with(SCOPE_ROOT)) {
                return oauth_err(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    "The requested scope is invalid",
                );
            }
            let access = format!("v^1.1#i^1#f^0#I^3#p^1#r^0#t^{}", random_token(96));
            st.access.insert(
                access.clone(),
                Token {
                    client_id,
                    user: None,
                    scopes,
                    expires: now + Duration::seconds(s.access_ttl_secs),
                    revoked: false,
                },
            );
            json(
                StatusCode::OK,
                json!({"access_token": access, "expires_in": s.access_ttl_secs, "token_type": "Application Access Token"}),
            )
        }
        _ => oauth_err(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant type in request is not supported by the authorization server",
        ),
    }
}

/// The client id from a valid `Authorization: Basic base64(id:secret)` header.
fn basic_client(req: &Request, st: &Mutex<State>) -> Option<String> {
    let b64 = header(req, "authorization")?.strip_prefix("Basic ")?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let (id, secret) = raw.split_once(':')?;
    let st = lock(st);
    (st.apps.get(id)?.secret == secret).then(|| id.to_string())
}

// ---- Sell API guard -------------------------------------------------------------------

/// Checks the bearer token, the daily quota and the scope; returns the seller's username.
/// `write` selects the full scope; reads also accept `.readonly`.
fn guard(
    sim: &Ebay,
    st: &mut State,
    req: &Request,
    api: &str,
    write: bool,
) -> Result<String, Response> {
    let now = sim.common.clock.now();
    let invalid = || {
        err_one(
            401,
            1001,
            "OAuth",
            "REQUEST",
            "Invalid access token",
            vec![],
        )
    };
    let tok = bearer(req)
        .and_then(|t| st.access.get(t))
        .ok_or_else(invalid)?;
    if tok.revoked || tok.expires <= now {
        return Err(invalid());
    }
    let full = format!("{SCOPE_ROOT}/sell.{api}");
    let ro = format!("{full}.readonly");
    let scoped = tok
        .scopes
        .iter()
        .any(|s| *s == full || (!write && *s == ro));
    let user = tok.user.clone();
    if !st.quota.take(now) {
        let mut r = quota_error();
        if sim.settings.retry_after_on_429 {
            let secs = (now
                .date_naive()
                .succ_opt()
                .unwrap_or(now.date_naive())
                .and_hms_opt(0, 0, 0))
            .map(|t| (t.and_utc() - now).num_seconds())
            .unwrap_or(86_400);
            r.headers_mut().insert("retry-after", secs.max(1).into());
        }
        return Err(r);
    }
    match (user, scoped) {
        (Some(u), true) => Ok(u),
        _ => Err(json(
            StatusCode::FORBIDDEN,
            json!({"errors": [{"errorId": 1100, "domain": "ACCESS", "category": "REQUEST",
                "message": "Access denied", "longMessage": "Insufficient permissions to fulfill the request."}]}),
        )),
    }
}

/// `Content-Language` (and a JSON body) are required on item and offer writes.
fn require_language(req: &Request) -> Result<String, Response> {
    let lang = header(req, "content-language").unwrap_or("");
    let ok = lang.len() >= 2
        && lang
            .split('-')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphabetic()));
    if !ok {
        return Err(invalid_field("header Content-Language"));
    }
    if !header(req, "content-type").is_some_and(|c| c.starts_with("application/json")) {
        return Err(invalid_field("header Content-Type"));
    }
    Ok(lang.to_string())
}

fn json_object(body: &[u8]) -> Result<Value, Response> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) if v.is_object() => Ok(v),
        _ => Err(inv_err(
            2004,
            "Invalid request. The request has errors. For help, see the documentation for this API.",
            vec![],
        )),
    }
}

fn valid_sku(sku: &str) -> bool {
    !sku.is_empty()
        && sku.len() <= 50
        && sku
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

// ---- inventory items ------------------------------------------------------------------

#[handler]
fn put_item(
    req: &Request,
    Path(sku): Path<String>,
    body: Vec<u8>,
    Data(sim): Data<&Arc<Ebay>>,
) -> Response {
    let mut st = lock(&sim.st);
    let user = match guard(sim, &mut st, req, "inventory", true) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let lang = match require_language(req) {
        Ok(l) => l,
        Err(r) => return r,
    };
    if !valid_sku(&sku) {
        return inv_err(
            25707,
            "This is an invalid value for a SKU. Only alphanumeric characters can be used for SKUs, and their length must not exceed 50 characters",
            vec![],
        );
    }
    let mut item = match json_object(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    if let Some(c) = item.get("condition")
        && !c.as_str().is_some_and(|c| CONDITIONS.contains(&c))
    {
        return inv_err(25021, "Invalid condition.", vec![]);
    }
    if item
        .pointer("/product/title")
        .and_then(Value::as_str)
        .is_some_and(|t| t.chars().count() > 80)
    {
        return invalid_field("product.title");
    }
    item["locale"] = json!(lang.replace('-', "_"));
    // Full replacement: whatever the previous record had is gone.
    st.seller(&user).items.insert(sku, item);
    no_content()
}

fn item_view(sku: &str, item: &Value) -> Value {
    let mut v = item.clone();
    v["sku"] = json!(sku);
    v["groupIds"] = json!([]);
    v
}

#[handler]
fn get_item(req: &Request, Path(sku): Path<String>, Data(sim): Data<&Arc<Ebay>>) -> Response {
    let mut st = lock(&sim.st);
    let user = match guard(sim, &mut st, req, "inventory", false) {
        Ok(u) => u,
        Err(r) => return r,
    };
    match st.seller(&user).items.get(&sku) {
        Some(item) => json(StatusCode::OK, item_view(&sku, item)),
        None => err_one(
            404,
            25710,
            "API_INVENTORY",
            "REQUEST",
            "We didn't find the entity you are requesting. Please verify the request",
            vec![],
        ),
    }
}

#[handler]
fn list_items(req: &Request, Data(sim): Data<&Arc<Ebay>>) -> Response {
    let mut st = lock(&sim.st);
    let user = match guard(sim, &mut st, req, "inventory", false) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let q = query(req);
    let limit: usize = q
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(25)
        .clamp(1, 200);
    let offset: usize = q.get("offset").and_then(|l| l.parse().ok()).unwrap_or(0);
    let items = &st.seller(&user).items;
    let page: Vec<Value> = items
        .iter()
        .skip(offset)
        .take(limit)
        .map(|(s, i)| item_view(s, i))
        .collect();
    json(
        StatusCode::OK,
        json!({"href": req.uri().to_string(), "inventoryItems": page, "limit": limit,
            "size": page.len(), "total": items.len()}),
    )
}

#[handler]
fn delete_item(req: &Request, Path(sku): Path<String>, Data(sim): Data<&Arc<Ebay>>) -> Response {
    let mut st = lock(&sim.st);
    let user = match guard(sim, &mut st, req, "inventory", true) {
        Ok(u) => u,
        Err(r) => return r,
    };
    if st.seller(&user).items.remove(&sku).is_none() {
        return inv_err(
            25702,
            &format!("SKU {sku} is not available in the system"),
            vec![("sku", sku)],
        );
    }
    // Deleting the item deletes its offers and ends their listings.
    st.offers
        .retain(|_, o| !(o.user == user && o.body["sku"] == json!(sku)));
    no_content()
}

#[handler]
fn create_location(
    req: &Request,
    Path(key): Path<String>,
    Data(sim): Data<&Arc<Ebay>>,
) -> Response {
    let mut st = lock(&sim.st);
    let user = match guard(sim, &mut st, req, "inventory", true) {
        Ok(u) => u,
        Err(r) => return r,
    };
    if key.is_empty() || key.len() > 36 {
        return invalid_field("merchantLocationKey");
    }
    if !st.seller(&user).locations.insert(key) {
        return inv_err(25803, "merchantLocationKey already exists", vec![]);
    }
    no_content()
}

// ---- offers ---------------------------------------------------------------------------

fn offer_view(id: u64, o: &Offer) -> Value {
    let mut v = o.body.clone();
    v["offerId"] = json!(id.to_string());
    v["status"] = json!(if o.listing_status == Some("ACTIVE")
        || o.listing_status == Some("OUT_OF_STOCK")
    {
        "PUBLISHED"
    } else {
        "UNPUBLISHED"
    });
    if let (Some(lid), Some(ls)) = (&o.listing_id, o.listing_status) {
        v["listing"] = json!({"listingId": lid, "listingStatus": ls, "soldQuantity": o.sold, "listingOnHold": false});
    }
    v
}

fn parse_offer(body: &[u8]) -> Result<Value, Response> {
    let v = json_object(body)?;
    for f in ["sku", "marketplaceId"] {
        if v.get(f).and_then(Value::as_str).is_none_or(str::is_empty) {
            return Err(invalid_field(f));
        }
    }
    if !matches!(
        v.get("format").and_then(Value::as_str),
        Some("FIXED_PRICE" | "AUCTION")
    ) {
        return Err(invalid_field("format"));
    }
    if let Some(p) = v.pointer("/pricingSummary/price/value")
        && !p
            .as_str()
            .is_some_and(|s| s.parse::<f64>().is_ok_and(|x| x > 0.0))
    {
        return Err(inv_err(
            25003,
            "Invalid price. Amount.value must be a string holding a positive decimal.",
            vec![],
        ));
    }
    Ok(v)
}

fn offer_id(id: &str) -> Option<u64> {
    id.parse().ok()
}

#[handler]
fn create_offer(req: &Request, body: Vec<u8>, Data(sim): Data<&Arc<Ebay>>) -> Response {
    let mut st = lock(&sim.st);
    let user = match guard(sim, &mut st, req, "inventory", true) {
        Ok(u) => u,
        Err(r) => return r,
    };
    if let Err(r) = require_language(req) {
        return r;
    }
    let v = match parse_offer(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let sku = v["sku"].as_str().unwrap_or_default().to_string();
    if !st.seller(&user).items.contains_key(&sku) {
        return inv_err(
            25702,
            &format!("SKU {sku} is not available in the system"),
            vec![("sku", sku)],
        );
    }
    let key = |b: &Value| {
        (
            b["sku"].clone(),
            b["marketplaceId"].clone(),
            b["format"].clone(),
        )
    };
    if let Some((id, _)) = st
        .offers
        .iter()
        .find(|(_, o)| o.user == user && key(&o.body) == key(&v))
    {
        return inv_err(
            25002,
            "A user error has occurred. Offer entity already exists",
            vec![("offerId", id.to_string())],
        );
    }
    let id = st.id();
    st.offers.insert(
        id,
        Offer {
            user,
            body: v,
            listing_id: None,
            listing_status: None,
            sold: 0,
        },
    );
    json(
        StatusCode::CREATED,
        json!({"offerId": id.to_string(), "warnings": []}),
    )
}

fn unavailable(id: &str) -> Response {
    inv_err(
        25713,
        "This Offer is not available.",
        vec![("offerId", id.to_string())],
    )
}

#[handler]
fn get_offer(req: &Request, Path(id): Path<String>, Data(sim): Data<&Arc<Ebay>>) -> Response {
    let mut st = lock(&sim.st);
    let user = match guard(sim, &mut st, req, "inventory", false) {
        Ok(u) => u,
        Err(r) => return r,
    };
    match offer_id(&id).and_then(|n| {
        st.offers
            .get(&n)
            .filter(|o| o.user == user)
            .map(|o| offer_view(n, o))
    }) {
        Some(v) => json(StatusCode::OK, v),
        None => err_one(
            404,
            25713,
            "API_INVENTORY",
            "REQUEST",
            "This Offer is not available.",
            vec![],
        ),
    }
}

/// updateOffer: a full replacement (marketplaces.md 1.4.4). Content-Type and Content-Language
/// are required; sku, marketplaceId and format identify the offer and cannot change (sent or
/// not, they stay); a price must be a positive decimal string. A published offer revises its
/// live listing, so the new body must still be publishable (listingDescription included), or
/// it is refused and the listing keeps the old one.
#[handler]
fn update_offer(
    req: &Request,
    Path(id): Path<String>,
    body: Vec<u8>,
    Data(sim): Data<&Arc<Ebay>>,
) -> Response {
    let mut st = lock(&sim.st);
    let user = match guard(sim, &mut st, req, "inventory", true) {
        Ok(u) => u,
        Err(r) => return r,
    };
    if let Err(r) = require_language(req) {
        return r;
    }
    let Some((n, old)) = offer_id(&id).and_then(|n| {
        st.offers
            .get(&n)
            .filter(|o| o.user == user)
            .map(|o| (n, o.body.clone()))
    }) else {
        return unavailable(&id);
    };
    let mut v = match json_object(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    for k in ["sku", "marketplaceId", "format"] {
        v[k] = old[k].clone();
    }
    if let Err(r) = parse_offer(&serde_json::to_vec(&v).unwrap_or_default()) {
        return r;
    }
    let published = st.offers.get(&n).is_some_and(|o| o.listing_id.is_some());
    if published {
        if v.get("listingDescription").is_none() {
            return invalid_field("listingDescription");
        }
        let sku = v["sku"].as_str().unwrap_or_default().to_string();
        let errs = {
            let seller = st.seller(&user);
            publish_errors(&v, seller.items.get(&sku), seller)
        };
        if !errs.is_empty() {
            return json(StatusCode::BAD_REQUEST, json!({ "errors": errs }));
        }
    }
    if let Some(o) = st.offers.get_mut(&n) {
        o.body = v;
    }
    no_content()
}

#[handler]
fn delete_offer(req: &Request, Path(id): Path<String>, Data(sim): Data<&Arc<Ebay>>) -> Response {
    let mut st = lock(&sim.st);
    let user = match guard(sim, &mut st, req, "inventory", true) {
        Ok(u) => u,
        Err(r) => return r,
    };
    match offer_id(&id) {
        Some(n) if st.offers.get(&n).is_some_and(|o| o.user == user) => {
            st.offers.remove(&n);
            no_content()
        }
        _ => unavailable(&id),
    }
}

#[handler]
fn get_offers(req: &Request, Data(sim): Data<&Arc<Ebay>>) -> Response {
    let mut st = lock(&sim.st);
    let user = match guard(sim, &mut st, req, "inventory", false) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let q = query(req);
    let Some(sku) = q.get("sku").filter(|s| !s.is_empty()) else {
        return invalid_field("sku");
    };
    if !st.seller(&user).items.contains_key(sku) {
        return inv_err(
            25702,
            &format!("SKU {sku} is not available in the system"),
            vec![("sku", sku.clone())],
        );
    }
    let limit: usize = q
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(100)
        .clamp(1, 200);
    let offset: usize = q.get("offset").and_then(|l| l.parse().ok()).unwrap_or(0);
    let all: Vec<Value> = st
        .offers
        .iter()
        .filter(|(_, o)| o.user == user && o.body["sku"] == json!(sku))
        .filter(|(_, o)| {
            q.get("marketplace_id")
                .is_none_or(|m| o.body["marketplaceId"] == json!(m))
        })
        .filter(|(_, o)| q.get("format").is_none_or(|f| o.body["format"] == json!(f)))
        .map(|(id, o)| offer_view(*id, o))
        .collect();
    if all.is_empty() {
        // eBay answers an existing SKU without offers with 25713, not an empty page.
        return err_one(
            404,
            25713,
            "API_INVENTORY",
            "REQUEST",
            "This Offer is not available.",
            vec![],
        );
    }
    let page: Vec<Value> = all.iter().skip(offset).take(limit).cloned().collect();
    json(
        StatusCode::OK,
        json!({"href": req.uri().to_string(), "limit": limit, "offers": page, "size": page.len(), "total": all.len()}),
    )
}

/// What publishOffer checks, in eBay's terms: each missing piece becomes one error entry.
fn publish_errors(offer: &Value, item: Option<&Value>, seller: &Seller) -> Vec<Value> {
    let mut errs = Vec::new();
    let mut miss = |id: u64, msg: String| {
        errs.push(json!({"errorId": id, "domain": "API_INVENTORY", "subdomain": "Selling", "category": "REQUEST",
            "message": msg, "longMessage": msg, "parameters": []}));
    };
    let s = |v: &Value, p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    match s(offer, "/merchantLocationKey") {
        Some(k) if seller.locations.contains(&k) => {}
        _ => miss(
            25012,
            "A user error has occurred. Invalid or missing merchantLocationKey.".into(),
        ),
    }
    if offer
        .get("availableQuantity")
        .and_then(Value::as_u64)
        .is_none()
    {
        miss(
            25004,
            "A user error has occurred. availableQuantity is missing.".into(),
        );
    }
    if s(offer, "/categoryId").is_none() {
        miss(
            25005,
            "A user error has occurred. Invalid or missing category.".into(),
        );
    }
    if s(offer, "/pricingSummary/price/value").is_none() {
        miss(
            25003,
            "A user error has occurred. Invalid or missing price.".into(),
        );
    }
    if s(offer, "/listingDuration").is_none() {
        miss(
            25002,
            "A user error has occurred. listingDuration is missing.".into(),
        );
    }
    for (ptr, id, name) in [
        ("/listingPolicies/fulfillmentPolicyId", 25007, "fulfillment"),
        ("/listingPolicies/paymentPolicyId", 25008, "payment"),
        ("/listingPolicies/returnPolicyId", 25009, "return"),
    ] {
        match s(offer, ptr) {
            Some(p) if seller.policies.contains(&p) => {}
            Some(_) => miss(
                25035,
                "The specified policy is not found for the market place".into(),
            ),
            None => miss(
                id,
                format!("A user error has occurred. Please add a {name} policy to your listing."),
            ),
        }
    }
    let Some(item) = item else {
        miss(
            25702,
            "The SKU could not be found or is not available.".into(),
        );
        return errs;
    };
    if item
        .pointer("/availability/shipToLocationAvailability/quantity")
        .and_then(Value::as_u64)
        .is_none()
    {
        miss(
            25004,
            "A user error has occurred. Invalid or missing quantity.".into(),
        );
    }
    if s(item, "/condition").is_none() {
        miss(
            25021,
            "A user error has occurred. Invalid or missing condition.".into(),
        );
    }
    if s(item, "/product/title").is_none() {
        miss(
            25002,
            "A user error has occurred. product.title is missing.".into(),
        );
    }
    if s(item, "/product/description").is_none() && s(offer, "/listingDescription").is_none() {
        miss(
            25002,
            "A user error has occurred. product.description is missing.".into(),
        );
    }
    if !item
        .pointer("/product/aspects")
        .is_some_and(Value::is_object)
    {
        miss(
            25029,
            "product.aspects is required for this category.".into(),
        );
    }
    let imgs = item.pointer("/product/imageUrls").and_then(Value::as_array);
    let ok_imgs = imgs.is_some_and(|a| {
        !a.is_empty()
            && a.len() <= 24
            && a.iter()
                .all(|u| u.as_str().is_some_and(|u| u.starts_with("https://")))
    });
    if !ok_imgs {
        miss(
            25014,
            "A user error has occurred. At least one HTTPS picture URL is required.".into(),
        );
    }
    errs
}

#[handler]
fn publish(req: &Request, Path(id): Path<String>, Data(sim): Data<&Arc<Ebay>>) -> Response {
    let mut st = lock(&sim.st);
    let user = match guard(sim, &mut st, req, "inventory", true) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let Some(n) = offer_id(&id).filter(|n| st.offers.get(n).is_some_and(|o| o.user == user)) else {
        return unavailable(&id);
    };
    let offer = st
        .offers
        .get(&n)
        .map(|o| o.body.clone())
        .unwrap_or_default();
    let sku = offer["sku"].as_str().unwrap_or_default().to_string();
    let errs = {
        let seller = st.seller(&user);
        publish_errors(&offer, seller.items.get(&sku), seller)
    };
    if !errs.is_empty() {
        return json(StatusCode::BAD_REQUEST, json!({ "errors": errs }));
    }
    let fresh = st.id().to_string();
    let Some(o) = st.offers.get_mut(&n) else {
        return unavailable(&id);
    };
    // Publishing a published offer revises the same listing.
    let lid = o
        .listing_id
        .get_or_insert_with(|| format!("11{fresh}"))
        .clone();
    o.listing_status = Some("ACTIVE");
    json(StatusCode::OK, json!({"listingId": lid, "warnings": []}))
}

#[handler]
fn withdraw(req: &Request, Path(id): Path<String>, Data(sim): Data<&Arc<Ebay>>) -> Response {
    let mut st = lock(&sim.st);
    let user = match guard(sim, &mut st, req, "inventory", true) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let o = offer_id(&id)
        .and_then(|n| st.offers.get_mut(&n))
        .filter(|o| o.user == user);
    match o {
        Some(o) if matches!(o.listing_status, Some("ACTIVE" | "OUT_OF_STOCK")) => {
            o.listing_status = Some("ENDED");
            let lid = o.listing_id.take().unwrap_or_default();
            json(StatusCode::OK, json!({"listingId": lid, "warnings": []}))
        }
        _ => unavailable(&id),
    }
}

// ---- fulfillment ----------------------------------------------------------------------

struct OrderFilter {
    created: Option<(DateTime<Utc>, Option<DateTime<Utc>>)>,
    modified: Option<(DateTime<Utc>, Option<DateTime<Utc>>)>,
    statuses: Option<Vec<String>>,
}

fn parse_date(s: &str) -> Option<DateTime<Utc>> {
    // eBay wants exactly yyyy-MM-ddTHH:mm:ss.SSSZ.
    if s.len() != 24 {
        return None;
    }
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.3fZ")
        .ok()
        .map(|d| d.and_utc())
}

fn parse_filter(f: &str, now: DateTime<Utc>) -> Result<OrderFilter, Response> {
    let mut out = OrderFilter {
        created: None,
        modified: None,
        statuses: None,
    };
    for crit in f.split(',').map(str::trim).filter(|c| !c.is_empty()) {
        let Some((name, value)) = crit.split_once(':') else {
            return Err(ful_err(30700, "Invalid filter name"));
        };
        match name {
            "creationdate" | "lastmodifieddate" => {
                let inner = value
                    .strip_prefix('[')
                    .and_then(|v| v.strip_suffix(']'))
                    .ok_or_else(|| ful_err(30800, "Invalid filter value"))?;
                let (a, b) = inner
                    .split_once("..")
                    .ok_or_else(|| ful_err(30800, "Invalid filter value"))?;
                if a.is_empty() {
                    return Err(ful_err(30820, "Start date is missing"));
                }
                let start = parse_date(a).ok_or_else(|| ful_err(30810, "Invalid date format"))?;
                let end = if b.is_empty() {
                    None
                } else {
                    Some(parse_date(b).ok_or_else(|| ful_err(30810, "Invalid date format"))?)
                };
                if start > now || end.is_some_and(|e| e > now) {
                    return Err(ful_err(30850, "Start and end dates can't be in the future"));
                }
                if now - start > Duration::days(90) {
                    return Err(ful_err(30830, "Start date must be within 90 days"));
                }
                if end.is_some_and(|e| e < start) {
                    return Err(ful_err(30840, "Start date should be before end date"));
                }
                if name == "creationdate" {
                    out.created = Some((start, end));
                } else {
                    out.modified = Some((start, end));
                }
            }
            "orderfulfillmentstatus" => {
                let inner = value
                    .strip_prefix('{')
                    .and_then(|v| v.strip_suffix('}'))
                    .ok_or_else(|| ful_err(30800, "Invalid filter value"))?;
                let mut set: Vec<String> = inner.split('|').map(str::to_string).collect();
                set.sort();
                if set != ["IN_PROGRESS", "NOT_STARTED"] && set != ["FULFILLED", "IN_PROGRESS"] {
                    return Err(ful_err(30800, "Invalid filter value"));
                }
                out.statuses = Some(set);
            }
            _ => return Err(ful_err(30700, "Invalid filter name")),
        }
    }
    // When both date filters are sent eBay uses only creationdate.
    if out.created.is_some() {
        out.modified = None;
    }
    Ok(out)
}

fn within(t: DateTime<Utc>, range: Option<(DateTime<Utc>, Option<DateTime<Utc>>)>) -> bool {
    range.is_none_or(|(a, b)| t >= a && b.is_none_or(|b| t <= b))
}

fn order_view(o: &Order) -> Value {
    let mut v = o.value.clone();
    v["creationDate"] = json!(iso_ms(o.created));
    v["lastModifiedDate"] = json!(iso_ms(o.modified));
    v
}

#[handler]
fn get_orders(req: &Request, Data(sim): Data<&Arc<Ebay>>) -> Response {
    let mut st = lock(&sim.st);
    let user = match guard(sim, &mut st, req, "fulfillment", false) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let now = sim.common.clock.now();
    let q = query(req);
    let limit = match q.get("limit").map(|l| l.parse::<usize>()) {
        None => 50,
        Some(Ok(l)) if (1..=1000).contains(&l) => l,
        _ => return ful_err(31100, "Invalid limit"),
    };
    let offset = match q.get("offset").map(|o| o.parse::<usize>()) {
        None => 0,
        Some(Ok(o)) => o,
        _ => return ful_err(31000, "Invalid offset"),
    };
    let mine = st.orders.iter().filter(|o| o.user == user);
    let matched: Vec<&Order> = if let Some(ids) = q.get("orderIds") {
        let ids: Vec<&str> = ids.split(',').map(str::trim).collect();
        if ids.len() > 50 {
            return ful_err(30900, "Too many order IDs. The maximum is 50.");
        }
        mine.filter(|o| ids.iter().any(|i| o.value["orderId"] == json!(i)))
            .collect()
    } else {
        let f = match parse_filter(q.get("filter").map(String::as_str).unwrap_or(""), now) {
            Ok(f) => f,
            Err(r) => return r,
        };
        let default_window = f.created.is_none() && f.modified.is_none();
        mine.filter(|o| within(o.created, f.created) && within(o.modified, f.modified))
            .filter(|o| !default_window || now - o.created <= Duration::days(90))
            .filter(|o| {
                f.statuses.as_ref().is_none_or(|s| {
                    s.iter()
                        .any(|s| o.value["orderFulfillmentStatus"] == json!(s))
                })
            })
            .collect()
    };
    let total = matched.len();
    let page: Vec<Value> = matched
        .iter()
        .skip(offset)
        .take(limit)
        .map(|o| order_view(o))
        .collect();
    let path = "/sell/fulfillment/v1/order";
    let link = |off: usize| {
        let mut pairs: Vec<(String, String)> = q
            .iter()
            .filter(|(k, _)| *k != "offset")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        pairs.sort();
        pairs.push(("offset".into(), off.to_string()));
        format!(
            "{path}?{}",
            serde_urlencoded::to_string(&pairs).unwrap_or_default()
        )
    };
    let mut body = json!({"href": link(offset), "limit": limit, "offset": offset, "orders": page,
        "total": total, "warnings": []});
    if offset + limit < total {
        body["next"] = json!(link(offset + limit));
    }
    if offset > 0 {
        body["prev"] = json!(link(offset.saturating_sub(limit)));
    }
    json(StatusCode::OK, body)
}

#[handler]
fn get_order(req: &Request, Path(id): Path<String>, Data(sim): Data<&Arc<Ebay>>) -> Response {
    let mut st = lock(&sim.st);
    let user = match guard(sim, &mut st, req, "fulfillment", false) {
        Ok(u) => u,
        Err(r) => return r,
    };
    match st
        .orders
        .iter()
        .find(|o| o.user == user && o.value["orderId"] == json!(id))
    {
        Some(o) => json(StatusCode::OK, order_view(o)),
        None => err_one(
            404,
            32100,
            "API_FULFILLMENT",
            "REQUEST",
            "Invalid order ID",
            vec![],
        ),
    }
}

// ---- admin ----------------------------------------------------------------------------

#[handler]
fn admin_state(Data(sim): Data<&Arc<Ebay>>) -> Response {
    let st = lock(&sim.st);
    let items: Vec<Value> = st
        .sellers
        .iter()
        .flat_map(|(u, s)| {
            s.items
                .iter()
                .map(move |(sku, i)| json!({"user": u, "sku": sku, "item": i}))
        })
        .collect();
    let offers: Vec<Value> = st
        .offers
        .iter()
        .map(|(id, o)| json!({"user": o.user, "offer": offer_view(*id, o)}))
        .collect();
    let orders: Vec<Value> = st.orders.iter().map(order_view).collect();
    let listings = st
        .offers
        .values()
        .filter(|o| o.listing_id.is_some())
        .count();
    json(
        StatusCode::OK,
        json!({"items": items, "offers": offers, "published_listings": listings, "orders": orders,
            "users": st.sellers.keys().collect::<Vec<_>>(), "daily_quota": st.quota.limit}),
    )
}

#[derive(Deserialize)]
struct NewLine {
    sku: String,
    quantity: u64,
    /// Unit price; defaults to the offer's price, else 10.00.
    price: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewOrder {
    user: Option<String>,
    buyer: Option<String>,
    line_items: Vec<NewLine>,
    status: Option<String>,
}

/// Places an order as a buyer would: decrements stock, and the order shows in getOrders.
#[handler]
fn admin_order(body: Vec<u8>, Data(sim): Data<&Arc<Ebay>>) -> Response {
    let o: NewOrder = match admin_body(&body) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let now = sim.common.clock.now();
    let user = o.user.unwrap_or_else(|| sim.settings.username.clone());
    let mut st = lock(&sim.st);
    let order_num = st.id();
    let order_id = format!(
        "{:02}-{:05}-{:05}",
        (order_num / 10_000_000_000) % 100,
        (order_num / 100_000) % 100_000,
        order_num % 100_000
    );
    let mut lines = Vec::new();
    let mut total = 0.0;
    for (i, l) in o.line_items.iter().enumerate() {
        let offer = st
            .offers
            .values_mut()
            .find(|of| of.user == user && of.body["sku"] == json!(l.sku));
        let (listing, title_price) = match offer {
            Some(of) => {
                of.sold += l.quantity;
                if let Some(q) = of.body.get("availableQuantity").and_then(Value::as_u64) {
                    let left = q.saturating_sub(l.quantity);
                    of.body["availableQuantity"] = json!(left);
                    if left == 0 && of.listing_status == Some("ACTIVE") {
                        of.listing_status = Some("OUT_OF_STOCK");
                    }
                }
                let p = of
                    .body
                    .pointer("/pricingSummary/price/value")
                    .and_then(Value::as_str)
                    .map(String::from);
                (of.listing_id.clone(), p)
            }
            None => (None, None),
        };
        let seller = st.seller(&user);
        let title = seller
            .items
            .get_mut(&l.sku)
            .map(|item| {
                if let Some(q) =
                    item.pointer_mut("/availability/shipToLocationAvailability/quantity")
                    && let Some(n) = q.as_u64()
                {
                    *q = json!(n.saturating_sub(l.quantity));
                }
                item.pointer("/product/title")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            })
            .unwrap_or_default();
        let unit: f64 = l
            .price
            .clone()
            .or(title_price)
            .and_then(|p| p.parse().ok())
            .unwrap_or(10.0);
        let cost = unit * l.quantity as f64;
        total += cost;
        let amount = json!({"value": format!("{cost:.2}"), "currency": "USD"});
        lines.push(json!({"lineItemId": format!("{}{}", order_num, i + 1), "legacyItemId": listing,
            "sku": l.sku, "title": title, "quantity": l.quantity, "lineItemCost": amount, "total": amount,
            "deliveryCost": {"shippingCost": {"value": "0.00", "currency": "USD"}},
            "lineItemFulfillmentStatus": "NOT_STARTED", "listingMarketplaceId": "EBAY_US",
            "purchaseMarketplaceId": "EBAY_US", "soldFormat": "FIXED_PRICE", "appliedPromotions": [],
            "taxes": [], "refunds": []}));
    }
    let amount = json!({"value": format!("{total:.2}"), "currency": "USD"});
    let value = json!({"orderId": order_id, "legacyOrderId": format!("{order_num}-{order_num}"),
        "orderFulfillmentStatus": o.status.unwrap_or_else(|| "NOT_STARTED".into()),
        "orderPaymentStatus": "PAID", "sellerId": user,
        "buyer": {"username": o.buyer.unwrap_or_else(|| "sim_buyer".into())},
        "pricingSummary": {"priceSubtotal": amount, "total": amount},
        "cancelStatus": {"cancelState": "NONE_REQUESTED", "cancelRequests": []},
        "fulfillmentHrefs": [], "lineItems": lines});
    let push = notification(
        ORDER_TOPIC,
        now,
        json!({"orderId": order_id, "userId": user_id(&user), "username": user}),
    );
    st.orders.push(Order {
        user,
        value,
        created: now,
        modified: now,
    });
    let v = st.orders.last().map(order_view).unwrap_or_default();
    drop(st);
    sim.pusher.push(push);
    json(StatusCode::CREATED, v)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderUpdate {
    #[serde(rename = "orderFulfillmentStatus")]
    fulfillment: Option<String>,
    #[serde(rename = "orderPaymentStatus")]
    payment: Option<String>,
    /// `CANCELED` cancels the order (its `cancelStatus`, with `cancelledDate`).
    #[serde(rename = "cancelState")]
    cancel: Option<String>,
}

/// Changes an order's status and bumps lastModifiedDate, as a shipment, refund or cancellation
/// would.
#[handler]
fn admin_update_order(
    Path(id): Path<String>,
    body: Vec<u8>,
    Data(sim): Data<&Arc<Ebay>>,
) -> Response {
    let u: OrderUpdate = match admin_body(&body) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let now = sim.common.clock.now();
    let mut st = lock(&sim.st);
    let Some(o) = st
        .orders
        .iter_mut()
        .find(|o| o.value["orderId"] == json!(id))
    else {
        return admin_error("no such order");
    };
    if let Some(f) = u.fulfillment {
        o.value["orderFulfillmentStatus"] = json!(f);
    }
    if let Some(p) = u.payment {
        o.value["orderPaymentStatus"] = json!(p);
    }
    if let Some(c) = u.cancel {
        let date =
            (c == "CANCELED").then(|| now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        o.value["cancelStatus"] =
            json!({"cancelState": c, "cancelRequests": [], "cancelledDate": date});
    }
    o.modified = now;
    json(StatusCode::OK, order_view(o))
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct TokenSel {
    /// One token; all tokens when absent.
    token: Option<String>,
}

/// Expires access tokens: their next use answers 401 errorId 1001.
#[handler]
fn admin_expire(body: Vec<u8>, Data(sim): Data<&Arc<Ebay>>) -> Response {
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

/// Revokes refresh tokens (and the access tokens of the same users): the next refresh gets
/// `invalid_grant`, as after a password change.
#[handler]
fn admin_revoke(body: Vec<u8>, Data(sim): Data<&Arc<Ebay>>) -> Response {
    let sel: TokenSel = match admin_body(&body) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let mut st = lock(&sim.st);
    let mut users = BTreeSet::new();
    let mut n = 0;
    for (t, tok) in st.refresh.iter_mut() {
        if sel.token.as_ref().is_none_or(|s| s == t) {
            tok.revoked = true;
            users.insert(tok.user.clone());
            n += 1;
        }
    }
    for tok in st.access.values_mut() {
        if users.contains(&tok.user) {
            tok.revoked = true;
        }
    }
    json(StatusCode::OK, json!({ "revoked": n }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Quota {
    daily_quota: u64,
}

/// Sets the daily quota and starts today's count from zero.
#[handler]
fn admin_quota(body: Vec<u8>, Data(sim): Data<&Arc<Ebay>>) -> Response {
    match admin_body::<Quota>(&body) {
        Ok(q) => {
            lock(&sim.st).quota.reset(q.daily_quota);
            json(StatusCode::OK, json!({ "daily_quota": q.daily_quota }))
        }
        Err(r) => r,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewApp {
    client_id: String,
    client_secret: Option<String>,
    runame: String,
    accept_url: String,
}

/// Adds an application, or adds/changes a RuName's accept URL on an existing one.
#[handler]
fn admin_app(body: Vec<u8>, Data(sim): Data<&Arc<Ebay>>) -> Response {
    let a: NewApp = match admin_body(&body) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let mut st = lock(&sim.st);
    let app = st.apps.entry(a.client_id.clone()).or_insert_with(|| App {
        secret: String::new(),
        runames: HashMap::new(),
    });
    if let Some(s) = a.client_secret {
        app.secret = s;
    }
    if app.secret.is_empty() {
        return admin_error("client_secret is required for a new application");
    }
    app.runames.insert(a.runame.clone(), a.accept_url.clone());
    json(
        StatusCode::OK,
        json!({"client_id": a.client_id, "runame": a.runame, "accept_url": a.accept_url}),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    username: String,
}

/// Seeds a seller (with the default location and policies); consent picks it with
/// `&sim_user=<username>`.
#[handler]
fn admin_user(body: Vec<u8>, Data(sim): Data<&Arc<Ebay>>) -> Response {
    match admin_body::<NewUser>(&body) {
        Ok(u) => {
            lock(&sim.st).seller(&u.username);
            json(
                StatusCode::OK,
                json!({"username": u.username, "location": LOCATION,
                "policies": {"fulfillment": FULFILLMENT_POLICY, "payment": PAYMENT_POLICY, "return": RETURN_POLICY}}),
            )
        }
        Err(r) => r,
    }
}
