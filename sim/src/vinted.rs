//! Vinted simulator: the SPA's internal `/api/v2` endpoints that the browser extension drives
//! with the seller's session (no public API exists). Models the session token, CSRF token,
//! validation errors (code 99) and DataDome blocks. A sale (`/_admin/items/{id}/sell`) closes the
//! item (`is_closed`, `item_closing_action: sold`) and adds a transaction to the seller's
//! `my_orders?type=sold`, newest first.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use poem::http::StatusCode;
use poem::web::{Data, Multipart, Path};
use poem::{Endpoint, EndpointExt, Request, Response, Route, get, handler, post, put};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::common::{
    Common, Shape, admin_body, admin_error, header, json, query, random_token, uuid_like,
};
use crate::log::lock;

#[derive(Debug, Clone)]
pub struct Settings {
    pub user_id: u64,
    pub login: String,
    /// The `access_token_web` the seeded session uses (cookie or Bearer).
    pub access_token: String,
    pub csrf_token: String,
    pub currency: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            user_id: 87_654_321,
            login: "stoflow_seller".into(),
            access_token: "vinted-sim-access-token".into(),
            csrf_token: "75f6c9fa-dc8e-4e52-a000-e09dd4084b3e".into(),
            currency: "EUR".into(),
        }
    }
}

struct Session {
    user_id: u64,
    login: String,
    csrf: String,
    expired: bool,
}

struct State {
    sessions: HashMap<String, Session>,
    photos: BTreeMap<u64, (u64, Value)>,
    items: BTreeMap<u64, Value>,
    /// Sales by transaction id: the `my_orders` entries, with `_owner`.
    transactions: BTreeMap<u64, Value>,
    blocked: bool,
    next_id: u64,
}

pub struct Vinted {
    st: Mutex<State>,
    settings: Settings,
    common: Arc<Common>,
}

pub fn app(settings: Settings, common: Arc<Common>) -> impl Endpoint {
    let mut sessions = HashMap::new();
    sessions.insert(
        settings.access_token.clone(),
        Session {
            user_id: settings.user_id,
            login: settings.login.clone(),
            csrf: settings.csrf_token.clone(),
            expired: false,
        },
    );
    let st = State {
        sessions,
        photos: BTreeMap::new(),
        items: BTreeMap::new(),
        transactions: BTreeMap::new(),
        blocked: false,
        next_id: crate::common::id_seed(),
    };
    let sim = Arc::new(Vinted {
        st: Mutex::new(st),
        settings,
        common: common.clone(),
    });
    let routes = Route::new()
        .at("/api/v2/users/current", get(current_user))
        .at("/api/v2/wardrobe/:user_id/items", get(wardrobe))
        .at("/api/v2/users/:user_id/items", get(wardrobe))
        .at("/api/v2/photos", post(upload_photo))
        .at("/api/v2/item_upload/items", post(create_item))
        .at(
            "/api/v2/item_upload/items/:id",
            get(get_item).put(update_item),
        )
        .at("/api/v2/items/:id/delete", post(delete_item))
        .at("/api/v2/items/:id", poem::delete(delete_item))
        .at("/api/v2/my_orders", get(my_orders))
        .at("/_admin/state", get(admin_state))
        .at("/_admin/sessions", post(admin_session))
        .at("/_admin/sessions/expire", post(admin_expire))
        .at("/_admin/block", put(admin_block))
        .at("/_admin/items/:id/sell", post(admin_sell))
        .data(sim);
    crate::common::wrap(
        routes,
        common,
        Shape {
            fail: |status, _| {
                let s = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                json(
                    s,
                    json!({"code": 500, "message": "Internal server error", "message_code": "server_error"}),
                )
            },
            throttle: |retry| {
                let mut r = json(
                    StatusCode::TOO_MANY_REQUESTS,
                    json!({"code": 429, "message": "Too many requests", "message_code": "too_many_requests"}),
                );
                r.headers_mut().insert("retry-after", retry.into());
                r
            },
        },
    )
}

fn datadome() -> Response {
    let mut r = json(
        StatusCode::FORBIDDEN,
        json!({"url": format!("https://geo.captcha-delivery.com/captcha/?initialCid={}&cid={}", random_token(32), random_token(24))}),
    );
    r.headers_mut().insert(
        "x-datadome",
        "protected"
            .parse()
            .unwrap_or_else(|_| poem::http::HeaderValue::from_static("protected")),
    );
    r
}

fn unauthenticated() -> Response {
    json(
        StatusCode::UNAUTHORIZED,
        json!({"code": 100, "message": "Jeton d'authentification invalide", "message_code": "invalid_authentication_token"}),
    )
}

fn not_found() -> Response {
    json(
        StatusCode::NOT_FOUND,
        json!({"code": 404, "message": "Not found", "message_code": "not_found"}),
    )
}

fn token_of(req: &Request) -> Option<String> {
    if let Some(t) = header(req, "authorization").and_then(|a| a.strip_prefix("Bearer ")) {
        return Some(t.to_string());
    }
    header(req, "cookie")?
        .split(';')
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == "access_token_web")
        .map(|(_, v)| v.to_string())
}

/// Order of checks: anti-bot block, then session (401), then CSRF on writes (403 code 106).
fn guard(st: &State, req: &Request, write: bool) -> Result<(u64, String), Response> {
    if st.blocked {
        return Err(datadome());
    }
    let s = token_of(req)
        .and_then(|t| st.sessions.get(&t))
        .filter(|s| !s.expired)
        .ok_or_else(unauthenticated)?;
    if write && header(req, "x-csrf-token") != Some(s.csrf.as_str()) {
        return Err(json(
            StatusCode::FORBIDDEN,
            json!({"code": 106, "message_code": "access_denied"}),
        ));
    }
    Ok((s.user_id, s.login.clone()))
}

macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(r) => return r,
        }
    };
}

#[handler]
fn current_user(req: &Request, Data(sim): Data<&Arc<Vinted>>) -> Response {
    let st = lock(&sim.st);
    let (id, login) = tri!(guard(&st, req, false));
    json(
        StatusCode::OK,
        json!({"user": {"id": id, "login": login, "currency": sim.settings.currency}}),
    )
}

/// The read shape: price as `{amount, currency_code}`, and the closing state.
fn read_view(item: &Value) -> Value {
    let mut v = item.clone();
    v["price"] = json!({"amount": item["price"].as_f64().map(|p| format!("{p}")).unwrap_or_default(),
        "currency_code": item["currency"]});
    if let Some(o) = v.as_object_mut() {
        o.remove("_owner");
    }
    v
}

#[handler]
fn wardrobe(req: &Request, Path(uid): Path<String>, Data(sim): Data<&Arc<Vinted>>) -> Response {
    let st = lock(&sim.st);
    tri!(guard(&st, req, false));
    let q = query(req);
    let per_page: usize = q
        .get("per_page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(20)
        .clamp(1, 96);
    let page: usize = q
        .get("page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1)
        .max(1);
    let all: Vec<&Value> = st
        .items
        .values()
        .filter(|i| uid.parse() == Ok(i["_owner"].as_u64().unwrap_or(0)))
        .collect();
    let items: Vec<Value> = all
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|i| read_view(i))
        .collect();
    json(
        StatusCode::OK,
        json!({"items": items, "pagination": {"current_page": page, "total_pages": all.len().div_ceil(per_page),
            "total_entries": all.len(), "per_page": per_page}}),
    )
}

/// The seller's orders: `type=sold` (purchases: none in the simulator), `status` all |
/// in_progress | completed | canceled (by `transaction_user_status`), newest first.
#[handler]
fn my_orders(req: &Request, Data(sim): Data<&Arc<Vinted>>) -> Response {
    let st = lock(&sim.st);
    let (owner, _) = tri!(guard(&st, req, false));
    let q = query(req);
    let per_page: usize = q
        .get("per_page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(20)
        .clamp(1, 100);
    let page: usize = q
        .get("page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1)
        .max(1);
    let sold = q.get("type").is_none_or(|t| t == "sold");
    let status = q.get("status").map(String::as_str).unwrap_or("all");
    let all: Vec<&Value> = st
        .transactions
        .values()
        .rev()
        .filter(|t| sold && t["_owner"] == json!(owner))
        .filter(|t| status == "all" || t["transaction_user_status"] == json!(status))
        .collect();
    let orders: Vec<Value> = all
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|t| {
            let mut t = (*t).clone();
            if let Some(o) = t.as_object_mut() {
                o.remove("_owner");
            }
            t
        })
        .collect();
    json(
        StatusCode::OK,
        json!({"my_orders": orders, "pagination": {"current_page": page,
            "total_pages": all.len().div_ceil(per_page), "total_entries": all.len(), "per_page": per_page}}),
    )
}

#[handler]
async fn upload_photo(
    req: &Request,
    mp: poem::Result<Multipart>,
    Data(sim): Data<&Arc<Vinted>>,
) -> Response {
    let owner = {
        let st = lock(&sim.st);
        tri!(guard(&st, req, true)).0
    };
    let Ok(mut mp) = mp else {
        return validation(vec![("photo", "Une photo est requise")]);
    };
    let (mut size, mut temp_uuid) = (0usize, String::new());
    loop {
        match mp.next_field().await {
            Ok(Some(f)) => match f.name().unwrap_or("") {
                "photo[file]" => size = f.bytes().await.map(|b| b.len()).unwrap_or(0),
                "photo[temp_uuid]" => temp_uuid = f.text().await.unwrap_or_default(),
                _ => {}
            },
            Ok(None) => break,
            Err(_) => return validation(vec![("photo", "Le fichier est illisible")]),
        }
    }
    if size == 0 {
        return validation(vec![("photo", "Une photo est requise")]);
    }
    let mut st = lock(&sim.st);
    st.next_id += 1;
    let id = st.next_id;
    let v = json!({"id": id, "url": format!("https://images1.vinted.net/t/sim/{id}.jpeg"), "width": 800,
        "height": 1067, "temp_uuid": temp_uuid, "is_main": false});
    st.photos.insert(id, (owner, v.clone()));
    json(StatusCode::OK, v)
}

fn validation(errs: Vec<(&str, &str)>) -> Response {
    let errors: Vec<Value> = errs
        .into_iter()
        .map(|(f, v)| json!({"field": f, "value": v}))
        .collect();
    json(
        StatusCode::BAD_REQUEST,
        json!({"code": 99, "message": "Sorry, there are some errors", "message_code": "validation_error",
            "errors": errors, "payload": {}}),
    )
}

/// The rules a real listing hits most often; messages are French, as Vinted's are.
fn validate(
    item: &Value,
    owner: u64,
    photos: &BTreeMap<u64, (u64, Value)>,
) -> Vec<(&'static str, &'static str)> {
    let mut e = Vec::new();
    let s = |k: &str| {
        item.get(k)
            .and_then(Value::as_str)
            .map(str::trim)
            .unwrap_or("")
    };
    let title = s("title");
    if title.chars().count() < 5 {
        e.push(("title", "Le titre doit contenir au moins 5 caractères"));
    } else {
        let letters: Vec<char> = title.chars().filter(|c| c.is_alphabetic()).collect();
        let upper = letters.iter().filter(|c| c.is_uppercase()).count();
        if letters.len() >= 5 && upper * 2 > letters.len() {
            e.push(("title", "Le titre contient trop de lettres majuscules"));
        }
    }
    if title.chars().count() > 100 {
        e.push(("title", "Le titre est trop long"));
    }
    if s("description").chars().count() < 5 {
        e.push((
            "description",
            "La description doit contenir au moins 5 caractères",
        ));
    }
    if item.get("catalog_id").and_then(Value::as_u64).is_none() {
        e.push(("catalog_id", "Le champ Catégorie doit être renseigné"));
    }
    if item.get("brand_id").and_then(Value::as_u64).is_none() && s("brand").is_empty() {
        e.push(("brand", "Le champ Marque doit être renseigné"));
    }
    let attr = |code: &str| {
        item["item_attributes"].as_array().is_some_and(|a| {
            a.iter().any(|x| {
                x["code"] == json!(code) && x["ids"].as_array().is_some_and(|i| !i.is_empty())
            })
        })
    };
    if item.get("size_id").and_then(Value::as_u64).is_none() && !attr("size") {
        e.push(("size_id", "Le champ Taille doit être renseigné"));
    }
    let status_ok = item
        .get("status_id")
        .and_then(Value::as_u64)
        .is_some_and(|s| [1, 2, 3, 4, 5, 6].contains(&s));
    if !status_ok && !attr("condition") {
        e.push(("status_id", "Le champ État doit être renseigné"));
    }
    let colors = item["color_ids"].as_array().map(Vec::len).unwrap_or(0);
    if colors == 0 {
        e.push(("color_ids", "Le champ Couleur doit être renseigné"));
    } else if colors > 2 {
        e.push(("color_ids", "Deux couleurs maximum"));
    }
    if !item["price"].as_f64().is_some_and(|p| p >= 1.0) {
        e.push(("price", "Le prix doit être d'au moins 1,00 €"));
    }
    let assigned = item["assigned_photos"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let photos_ok = !assigned.is_empty()
        && assigned.iter().all(|p| {
            p["id"]
                .as_u64()
                .and_then(|id| photos.get(&id))
                .is_some_and(|(o, _)| *o == owner)
        });
    if !photos_ok {
        e.push(("assigned_photos", "Ajoute au moins une photo"));
    }
    e
}

/// Checks and stores an item body (create when `id` is None).
fn save(sim: &Vinted, req: &Request, body: &[u8], id: Option<u64>) -> Response {
    let mut st = lock(&sim.st);
    let (owner, _) = tri!(guard(&st, req, true));
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return json(
            StatusCode::BAD_REQUEST,
            json!({"code": 99, "message": "Invalid JSON", "message_code": "validation_error", "errors": [], "payload": {}}),
        );
    };
    if body["push_up"] == json!(true) {
        // A real push_up buys a paid bump; the platform must never send it.
        return validation(vec![("push_up", "push_up must be false")]);
    }
    let mut item = body["item"].clone();
    if !item.is_object() {
        return validation(vec![("item", "item is required")]);
    }
    if let Some(id) = id
        && !st
            .items
            .get(&id)
            .is_some_and(|i| i["_owner"] == json!(owner) && i["is_closed"] == json!(false))
    {
        return not_found();
    }
    let errs = validate(&item, owner, &st.photos);
    if !errs.is_empty() {
        return validation(errs);
    }
    let id = id.unwrap_or_else(|| {
        st.next_id += 1;
        st.next_id
    });
    let photos: Vec<Value> = item["assigned_photos"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|p| {
            p["id"]
                .as_u64()
                .and_then(|id| st.photos.get(&id))
                .map(|(_, v)| v.clone())
        })
        .collect();
    item["id"] = json!(id);
    item["currency"] = json!(item["currency"].as_str().unwrap_or(&sim.settings.currency));
    item["photos"] = json!(photos);
    item["url"] = json!(format!("https://www.vinted.fr/items/{id}"));
    item["is_closed"] = json!(false);
    item["is_draft"] = json!(false);
    item["item_closing_action"] = Value::Null;
    item["view_count"] = json!(0);
    item["favourite_count"] = json!(0);
    item["user_id"] = json!(owner);
    item["_owner"] = json!(owner);
    if let Some(first) = item["color_ids"]
        .as_array()
        .and_then(|c| c.first())
        .cloned()
    {
        item["color1_id"] = first;
    }
    st.items.insert(id, item.clone());
    json(StatusCode::OK, json!({ "item": read_view(&item) }))
}

#[handler]
fn create_item(req: &Request, body: Vec<u8>, Data(sim): Data<&Arc<Vinted>>) -> Response {
    save(sim, req, &body, None)
}

#[handler]
fn update_item(
    req: &Request,
    Path(id): Path<String>,
    body: Vec<u8>,
    Data(sim): Data<&Arc<Vinted>>,
) -> Response {
    match id.parse() {
        Ok(id) => save(sim, req, &body, Some(id)),
        Err(_) => not_found(),
    }
}

#[handler]
fn get_item(req: &Request, Path(id): Path<String>, Data(sim): Data<&Arc<Vinted>>) -> Response {
    let st = lock(&sim.st);
    let (owner, _) = tri!(guard(&st, req, false));
    match id
        .parse::<u64>()
        .ok()
        .and_then(|id| st.items.get(&id))
        .filter(|i| i["_owner"] == json!(owner))
    {
        Some(i) => json(StatusCode::OK, json!({ "item": read_view(i) })),
        None => not_found(),
    }
}

#[handler]
fn delete_item(req: &Request, Path(id): Path<String>, Data(sim): Data<&Arc<Vinted>>) -> Response {
    let mut st = lock(&sim.st);
    let (owner, _) = tri!(guard(&st, req, true));
    match id.parse::<u64>().ok().filter(|id| {
        st.items
            .get(id)
            .is_some_and(|i| i["_owner"] == json!(owner))
    }) {
        Some(id) => {
            st.items.remove(&id);
            json(StatusCode::OK, json!({"code": 0}))
        }
        None => not_found(),
    }
}

// ---- admin ----------------------------------------------------------------------------

#[handler]
fn admin_state(Data(sim): Data<&Arc<Vinted>>) -> Response {
    let st = lock(&sim.st);
    let items: Vec<Value> = st.items.values().map(read_view).collect();
    let photos: Vec<Value> = st.photos.values().map(|(_, p)| p.clone()).collect();
    json(
        StatusCode::OK,
        json!({"items": items, "photos": photos, "blocked": st.blocked}),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSession {
    user_id: u64,
    login: String,
}

/// Creates a logged-in session for a user; returns its access token and CSRF token.
#[handler]
fn admin_session(body: Vec<u8>, Data(sim): Data<&Arc<Vinted>>) -> Response {
    let s: NewSession = match admin_body(&body) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let token = random_token(40);
    let csrf = uuid_like();
    lock(&sim.st).sessions.insert(
        token.clone(),
        Session {
            user_id: s.user_id,
            login: s.login.clone(),
            csrf: csrf.clone(),
            expired: false,
        },
    );
    json(
        StatusCode::OK,
        json!({"user_id": s.user_id, "login": s.login, "access_token_web": token, "csrf_token": csrf}),
    )
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct TokenSel {
    token: Option<String>,
}

/// Expires sessions: the next request answers 401 code 100.
#[handler]
fn admin_expire(body: Vec<u8>, Data(sim): Data<&Arc<Vinted>>) -> Response {
    let sel: TokenSel = match admin_body(&body) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let mut st = lock(&sim.st);
    let mut n = 0;
    for (t, s) in st.sessions.iter_mut() {
        if sel.token.as_ref().is_none_or(|x| x == t) {
            s.expired = true;
            n += 1;
        }
    }
    json(StatusCode::OK, json!({ "expired": n }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Block {
    enabled: bool,
}

/// Turns the DataDome block on or off: while on, every API request gets 403 with a captcha URL.
#[handler]
fn admin_block(body: Vec<u8>, Data(sim): Data<&Arc<Vinted>>) -> Response {
    match admin_body::<Block>(&body) {
        Ok(b) => {
            lock(&sim.st).blocked = b.enabled;
            json(StatusCode::OK, json!({ "blocked": b.enabled }))
        }
        Err(r) => r,
    }
}

/// Marks an item sold, as a buyer would: closed with `item_closing_action = sold`, and a
/// transaction in the seller's `my_orders`. Answers the item with its `transaction_id`.
#[handler]
fn admin_sell(Path(id): Path<String>, Data(sim): Data<&Arc<Vinted>>) -> Response {
    let now = sim.common.clock.now();
    let mut st = lock(&sim.st);
    let Some(item_id) = id
        .parse::<u64>()
        .ok()
        .filter(|id| st.items.contains_key(id))
    else {
        return admin_error("no such item");
    };
    if st.items[&item_id]["is_closed"] == json!(true) {
        return admin_error("the item is closed already");
    }
    st.next_id += 1;
    let txn = st.next_id;
    let i = st.items.get_mut(&item_id).expect("checked above");
    i["is_closed"] = json!(true);
    i["item_closing_action"] = json!("sold");
    let view = read_view(i);
    let order = json!({"transaction_id": txn, "item_id": item_id, "conversation_id": txn + 1,
        "title": view["title"], "price": view["price"], "status": "Paiement validé",
        "transaction_user_status": "in_progress", "date": now.to_rfc3339(), "_owner": i["_owner"]});
    st.transactions.insert(txn, order);
    let mut out = view;
    out["transaction_id"] = json!(txn);
    json(StatusCode::OK, out)
}
