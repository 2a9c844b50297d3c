//! Signed notifications a simulator pushes to a configured destination (Etsy webhooks, eBay's
//! Notification API), with the switches tests need: drop the next deliveries, send each twice
//! (replay), hold them and release them in reverse order (reorder), sign with a skewed clock.
//! A delivery not answered 2xx is retried with a growing delay, as the marketplaces do.
//!
//! Admin: `PUT /_admin/webhooks` `{"url" ("": push nowhere), "drop_next", "replay", "hold", "timestamp_offset_s",
//! "verification_token"}` (each optional; with `verification_token`, eBay's `challenge_code`
//! handshake is done against `url` first and the call fails when the answer is wrong),
//! `POST /_admin/webhooks/flush` `{"reverse": true}` sends what is held, `GET /_admin/webhooks`
//! lists every attempt (failed ones with their status) and every delivery.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use poem::http::StatusCode;
use poem::web::Data;
use poem::{EndpointExt, Response, Route, get, handler, post};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::common::json;
use crate::log::lock;

/// One notification: its id (replays keep it), topic and exact body.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: String,
    pub topic: String,
    pub body: String,
}

/// Signs a delivery for a send at `at` (epoch seconds): the headers to send.
pub type Signer = Box<dyn Fn(&Delivery, i64) -> Vec<(&'static str, String)> + Send + Sync>;

/// Attempts per delivery before it is given up (the marketplaces retry for hours; tests need
/// seconds).
const MAX_ATTEMPTS: u32 = 8;

#[derive(Default)]
struct Config {
    url: Option<String>,
    drop_next: u32,
    replay: bool,
    hold: bool,
    timestamp_offset_s: i64,
    held: Vec<Delivery>,
    log: Vec<Value>,
}

pub struct Pusher {
    http: reqwest::Client,
    sign: Signer,
    /// eBay validates a destination with `challenge_code` before using it.
    challenge: bool,
    cfg: Mutex<Config>,
}

impl Pusher {
    /// `url`: where to push from the start (None: nowhere until `/_admin/webhooks` says).
    pub fn new(sign: Signer, challenge: bool, url: Option<String>) -> Arc<Self> {
        Arc::new(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("http client"),
            sign,
            challenge,
            cfg: Mutex::new(Config {
                url,
                ..Config::default()
            }),
        })
    }

    /// Sends `d` to the destination (in the background), as the switches say.
    pub fn push(self: &Arc<Self>, d: Delivery) {
        let mut c = lock(&self.cfg);
        let Some(url) = c.url.clone() else {
            return;
        };
        if c.drop_next > 0 {
            c.drop_next -= 1;
            c.log
                .push(json!({"id": d.id, "topic": d.topic, "dropped": true}));
            return;
        }
        if c.hold {
            c.held.push(d);
            return;
        }
        let copies = if c.replay { 2 } else { 1 };
        drop(c);
        for _ in 0..copies {
            let me = self.clone();
            let (d, url) = (d.clone(), url.clone());
            tokio::spawn(async move { me.deliver(&url, &d).await });
        }
    }

    async fn deliver(&self, url: &str, d: &Delivery) {
        let mut delay = Duration::from_millis(200);
        let mut last = String::new();
        for attempt in 1..=MAX_ATTEMPTS {
            let at = chrono::Utc::now().timestamp() + lock(&self.cfg).timestamp_offset_s;
            let mut req = self
                .http
                .post(url)
                .header("content-type", "application/json")
                .body(d.body.clone());
            for (k, v) in (self.sign)(d, at) {
                req = req.header(k, v);
            }
            match req.send().await {
                Ok(r) if r.status().is_success() => {
                    let status = r.status().as_u16();
                    lock(&self.cfg)
                        .log
                        .push(json!({"id": d.id, "topic": d.topic,
                        "attempts": attempt, "status": status, "delivered": true}));
                    return;
                }
                Ok(r) => last = r.status().as_u16().to_string(),
                Err(e) => last = e.to_string(),
            }
            lock(&self.cfg)
                .log
                .push(json!({"id": d.id, "topic": d.topic,
                "attempt": attempt, "status": last, "delivered": false}));
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        lock(&self.cfg)
            .log
            .push(json!({"id": d.id, "topic": d.topic,
            "attempts": MAX_ATTEMPTS, "status": last, "delivered": false, "given_up": true}));
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Update {
    url: Option<String>,
    drop_next: Option<u32>,
    replay: Option<bool>,
    hold: Option<bool>,
    timestamp_offset_s: Option<i64>,
    verification_token: Option<String>,
}

/// `/_admin/webhooks` routes of a simulator's pusher.
pub fn admin(p: Arc<Pusher>) -> impl poem::Endpoint {
    Route::new()
        .at("/", get(view).put(configure))
        .at("/flush", post(flush))
        .data(p)
}

#[handler]
fn view(Data(p): Data<&Arc<Pusher>>) -> Response {
    let c = lock(&p.cfg);
    json(
        StatusCode::OK,
        json!({"url": c.url, "drop_next": c.drop_next, "replay": c.replay, "hold": c.hold,
               "held": c.held.len(), "deliveries": c.log}),
    )
}

#[handler]
async fn configure(body: Vec<u8>, Data(p): Data<&Arc<Pusher>>) -> Response {
    let u: Update = match serde_json::from_slice(&body) {
        Ok(u) => u,
        Err(e) => return json(StatusCode::BAD_REQUEST, json!({"error": e.to_string()})),
    };
    if let (true, Some(url), Some(token)) = (p.challenge, &u.url, &u.verification_token)
        && let Err(e) = challenge(&p.http, url, token).await
    {
        return json(StatusCode::CONFLICT, json!({"error": e}));
    }
    let mut c = lock(&p.cfg);
    if let Some(url) = u.url {
        // An empty url stops pushing (sales are then seen by polling alone).
        c.url = (!url.is_empty()).then_some(url);
    }
    c.drop_next = u.drop_next.unwrap_or(c.drop_next);
    c.replay = u.replay.unwrap_or(c.replay);
    c.hold = u.hold.unwrap_or(c.hold);
    c.timestamp_offset_s = u.timestamp_offset_s.unwrap_or(c.timestamp_offset_s);
    json(
        StatusCode::OK,
        json!({"url": c.url, "verified": p.challenge}),
    )
}

/// eBay's endpoint validation: GET `url?challenge_code=…` must answer
/// hex(SHA-256(code + token + url)) as `challengeResponse`.
async fn challenge(http: &reqwest::Client, url: &str, token: &str) -> Result<(), String> {
    use sha2::Digest;
    let code: String = format!("{:032x}", rand::random::<u128>());
    let want: String = sha2::Sha256::new()
        .chain_update(&code)
        .chain_update(token)
        .chain_update(url)
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let r = http
        .get(url)
        .query(&[("challenge_code", &code)])
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    if status.is_success() && v["challengeResponse"] == json!(want) {
        Ok(())
    } else {
        Err(format!("challenge failed: {status} {v}"))
    }
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Flush {
    reverse: bool,
}

/// Sends the held deliveries one after the other (newest first with `reverse`), and stops holding.
#[handler]
async fn flush(body: Vec<u8>, Data(p): Data<&Arc<Pusher>>) -> Response {
    let f: Flush = serde_json::from_slice(&body).unwrap_or_default();
    let (mut held, url) = {
        let mut c = lock(&p.cfg);
        c.hold = false;
        (std::mem::take(&mut c.held), c.url.clone())
    };
    if f.reverse {
        held.reverse();
    }
    let n = held.len();
    if let Some(url) = url {
        for d in &held {
            p.deliver(&url, d).await;
        }
    }
    json(StatusCode::OK, json!({"sent": n}))
}
