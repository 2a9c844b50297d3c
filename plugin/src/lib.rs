//! The reference plugin runner: what the seller's browser extension does, as a small program.
//! It polls `GET /api/plugin/tasks` with its device token, runs each task against Vinted's web
//! API with the seller's session (CSRF token, photo upload, `item_upload/items` create/update,
//! delete; `sync_sales`: the sold orders of `my_orders?type=sold` and the closed wardrobe items),
//! and posts the result to `POST /api/plugin/tasks/{id}/result`.
//!
//! Vinted's answers become the plugin protocol's error types ([`classify`]): 401 and the
//! DataDome 403 (and a refused CSRF token) → `blocked`; 400/422 code 99 → `validation`; 429,
//! 5xx and dropped connections → `transient`. While the account is paused it checks the session
//! (`GET /api/v2/users/current`) and reports `POST /api/plugin/session {"ok": true}` once it works,
//! as the extension does when the seller has logged in again.

use std::time::{Duration, Instant};

use reqwest::multipart;
use serde_json::{Value, json};

#[derive(Debug, Clone)]
pub struct Config {
    /// The platform's API, e.g. http://127.0.0.1:8080.
    pub api: String,
    /// The plugin token from `POST /v1/connections/vinted`.
    pub token: String,
    /// Vinted's base URL (the simulator in dev: http://127.0.0.1:8483).
    pub vinted: String,
    /// The seller's `access_token_web` and CSRF token (an extension reads them from the tab).
    pub session: String,
    pub csrf: String,
    pub poll: Duration,
    /// How long the platform may hold an idle lease request open (long polling: a task made
    /// meanwhile is answered at once). Zero: plain polling every `poll`.
    pub wait: Duration,
    /// Upload a generated JPEG for each photo instead of downloading its URL (no network).
    pub placeholder_photos: bool,
}

impl Config {
    /// Settings for the Vinted simulator's seeded session.
    pub fn for_simulator(api: &str, token: &str, vinted: &str) -> Self {
        Self {
            api: api.trim_end_matches('/').into(),
            token: token.into(),
            vinted: vinted.trim_end_matches('/').into(),
            session: "vinted-sim-access-token".into(),
            csrf: "75f6c9fa-dc8e-4e52-a000-e09dd4084b3e".into(),
            poll: Duration::from_secs(5),
            wait: Duration::from_secs(20),
            placeholder_photos: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The platform refused the token: the extension must be connected again.
    #[error("the platform refused the plugin token (401): connect the Vinted account again")]
    Unauthorized,
    #[error("platform API: {0}")]
    Api(String),
}

/// A failure as the plugin protocol names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// transient, validation or blocked.
    pub kind: &'static str,
    pub message: String,
}

impl Failure {
    fn new(kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// What one poll did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// No task to run.
    Idle,
    /// The account is paused and the session still does not work.
    Paused(String),
    /// The session works again and the platform was told.
    Resumed,
    /// A task ran; `outcome` is `succeeded` or its error type; `accepted` is false when the
    /// platform refused the result (the lease was lost).
    Ran {
        task_id: i64,
        outcome: String,
        accepted: bool,
    },
}

/// Classifies one Vinted answer that was not a success.
pub fn classify(status: u16, datadome_header: bool, body: &str) -> Failure {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let short: String = body.chars().take(300).collect();
    match status {
        401 => Failure::new(
            "blocked",
            format!(
                "Vinted session expired (401 {}): log in to Vinted again",
                v["message_code"].as_str().unwrap_or("")
            ),
        ),
        403 if datadome_header || body.contains("captcha-delivery") => Failure::new(
            "blocked",
            "DataDome challenge (403): open Vinted in the browser and solve it",
        ),
        403 => Failure::new(
            "blocked",
            format!(
                "Vinted refused the request (403 {}): reload Vinted so the CSRF token is fresh",
                v["message_code"].as_str().unwrap_or("")
            ),
        ),
        400 | 422 => {
            let errs: Vec<String> = v["errors"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|e| {
                            format!(
                                "{}: {}",
                                e["field"].as_str().unwrap_or("?"),
                                e["value"].as_str().unwrap_or("")
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let msg = if errs.is_empty() {
                format!("Vinted refused the listing ({status}): {short}")
            } else {
                format!("Vinted refused the listing: {}", errs.join("; "))
            };
            Failure::new("validation", msg)
        }
        404 => Failure::new("validation", "the item does not exist on Vinted (404)"),
        429 | 500..=599 => Failure::new("transient", format!("Vinted answered {status}: {short}")),
        _ => Failure::new("validation", format!("Vinted answered {status}: {short}")),
    }
}

/// A 1×1 JPEG, for uploads that must not download anything.
const PLACEHOLDER_JPEG: &[u8] = &[
    0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, 0x4A, 0x46, 0x49, 0x46, 0x00, 0x01, 0x01, 0x00, 0x00, 0x01,
    0x00, 0x01, 0x00, 0x00, 0xFF, 0xDB, 0x00, 0x43, 0x00, 0x08, 0x06, 0x06, 0x07, 0x06, 0x05, 0x08,
    0x07, 0x07, 0x07, 0x09, 0x09, 0x08, 0x0A, 0x0C, 0x14, 0x0D, 0x0C, 0x0B, 0x0B, 0x0C, 0x19, 0x12,
    0x13, 0x0F, 0x14, 0x1D, 0x1A, 0x1F, 0x1E, 0x1D, 0x1A, 0x1C, 0x1C, 0x20, 0x24, 0x2E, 0x27, 0x20,
    0x22, 0x2C, 0x23, 0x1C, 0x1C, 0x28, 0x37, 0x29, 0x2C, 0x30, 0x31, 0x34, 0x34, 0x34, 0x1F, 0x27,
    0x39, 0x3D, 0x38, 0x32, 0x3C, 0x2E, 0x33, 0x34, 0x32, 0xFF, 0xC0, 0x00, 0x0B, 0x08, 0x00, 0x01,
    0x00, 0x01, 0x01, 0x01, 0x11, 0x00, 0xFF, 0xC4, 0x00, 0x14, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x09, 0xFF, 0xDA, 0x00, 0x08,
    0x01, 0x01, 0x00, 0x00, 0x3F, 0x00, 0x2A, 0x9F, 0xFF, 0xD9,
];

fn parse_time(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.with_timezone(&chrono::Utc))
}

fn uuid_like() -> String {
    let b: [u8; 16] = rand::random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

pub struct Runner {
    cfg: Config,
    http: reqwest::Client,
}

impl Runner {
    pub fn new(cfg: Config) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("stoflow-plugin/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("http client");
        Self { cfg, http }
    }

    fn api(&self, path: &str) -> reqwest::RequestBuilder {
        let url = format!("{}{path}", self.cfg.api);
        let req = if path.ends_with("/tasks") {
            self.http.get(url)
        } else {
            self.http.post(url)
        };
        req.bearer_auth(&self.cfg.token)
    }

    async fn api_json(&self, req: reqwest::RequestBuilder) -> Result<(u16, Value), RunnerError> {
        let r = req
            .send()
            .await
            .map_err(|e| RunnerError::Api(e.to_string()))?;
        let status = r.status().as_u16();
        if status == 401 {
            return Err(RunnerError::Unauthorized);
        }
        let text = r
            .text()
            .await
            .map_err(|e| RunnerError::Api(e.to_string()))?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    /// The seller's session headers on a Vinted request (what the extension's tab carries).
    fn vinted(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.cfg.vinted))
            .bearer_auth(&self.cfg.session)
            .header("X-CSRF-Token", &self.cfg.csrf)
            .header("Platform", "web")
            .header("Locale", "fr-FR")
    }

    /// Sends a Vinted request; a non-2xx answer or no answer is a classified [`Failure`].
    async fn vinted_send(&self, req: reqwest::RequestBuilder) -> Result<Value, Failure> {
        let r = req
            .send()
            .await
            .map_err(|e| Failure::new("transient", format!("Vinted did not answer: {e}")))?;
        let status = r.status().as_u16();
        let datadome = r.headers().contains_key("x-datadome");
        let text = r.text().await.map_err(|e| {
            Failure::new("transient", format!("reading Vinted's answer failed: {e}"))
        })?;
        if (200..300).contains(&status) {
            // A non-JSON 200 is how DataDome answers some routes.
            return serde_json::from_str(&text).map_err(|_| {
                if text.contains("captcha-delivery") {
                    Failure::new(
                        "blocked",
                        "DataDome challenge: open Vinted in the browser and solve it",
                    )
                } else {
                    Failure::new("transient", "Vinted answered with a body that is not JSON")
                }
            });
        }
        Err(classify(status, datadome, &text))
    }

    async fn photo_bytes(&self, url: &str) -> Result<Vec<u8>, Failure> {
        if self.cfg.placeholder_photos {
            return Ok(PLACEHOLDER_JPEG.to_vec());
        }
        let r = self.http.get(url).send().await.map_err(|e| {
            Failure::new("transient", format!("downloading photo {url} failed: {e}"))
        })?;
        if !r.status().is_success() {
            return Err(Failure::new(
                "validation",
                format!("photo {url} answered {}", r.status().as_u16()),
            ));
        }
        r.bytes()
            .await
            .map(|b| b.to_vec())
            .map_err(|e| Failure::new("transient", format!("downloading photo {url} failed: {e}")))
    }

    /// Uploads the task's photos under one `temp_uuid`; returns their Vinted ids.
    async fn upload_photos(&self, params: &Value, temp_uuid: &str) -> Result<Vec<u64>, Failure> {
        let urls: Vec<String> = params["photo_urls"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|u| u.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let mut ids = Vec::with_capacity(urls.len());
        for url in urls {
            let bytes = self.photo_bytes(&url).await?;
            let part = multipart::Part::bytes(bytes)
                .file_name("photo.jpg")
                .mime_str("image/jpeg")
                .expect("mime");
            let form = multipart::Form::new()
                .text("photo[type]", "item")
                .text("photo[temp_uuid]", temp_uuid.to_string())
                .part("photo[file]", part);
            let v = self
                .vinted_send(
                    self.vinted(reqwest::Method::POST, "/api/v2/photos")
                        .multipart(form),
                )
                .await?;
            // The answer is sometimes wrapped in `photo`.
            let id = v["id"]
                .as_u64()
                .or_else(|| v["photo"]["id"].as_u64())
                .ok_or_else(|| {
                    Failure::new(
                        "transient",
                        format!("photo upload answered without an id: {v}"),
                    )
                })?;
            ids.push(id);
        }
        Ok(ids)
    }

    /// The `item_upload/items` body (marketplaces.md 3.4).
    fn item_body(params: &Value, id: Option<u64>, photos: &[u64], temp_uuid: &str) -> Value {
        let price: f64 = params["price"]["amount"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or(0.0);
        let size_id = params["size_id"].clone();
        let status_id = params["status_id"].clone();
        json!({
            "item": {
                "id": id, "currency": params["price"]["currency_code"], "temp_uuid": temp_uuid,
                "title": params["title"], "description": params["description"],
                "brand_id": null, "brand": params["brand"], "catalog_id": params["catalog_id"],
                "isbn": null, "is_unisex": false, "ai_photo": false, "price": price,
                "package_size_id": params["package_size_id"],
                "shipment_prices": {"domestic": null, "international": null},
                "color_ids": params["color_ids"],
                "assigned_photos": photos.iter().map(|p| json!({"id": p, "orientation": 0})).collect::<Vec<_>>(),
                "measurement_length": null, "measurement_width": null,
                "item_attributes": [{"code": "size", "ids": [size_id]}, {"code": "condition", "ids": [status_id]}],
                "size_id": size_id, "status_id": status_id,
                "manufacturer": null, "manufacturer_labelling": null,
            },
            // A true push_up buys a paid bump: never.
            "feedback_id": null, "push_up": false, "parcel": null, "upload_session_id": temp_uuid,
        })
    }

    /// Runs one task against Vinted: Ok((remote_id, url)) or the failure to report.
    pub async fn execute(
        &self,
        action: &str,
        params: &Value,
    ) -> Result<(Option<String>, Option<String>), Failure> {
        let remote: Option<u64> = params["remote_id"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .or_else(|| params["remote_id"].as_u64());
        match action {
            "create_listing" | "update_listing" => {
                let temp_uuid = uuid_like();
                let photos = self.upload_photos(params, &temp_uuid).await?;
                let req = match (action, remote) {
                    ("update_listing", Some(id)) => self
                        .vinted(
                            reqwest::Method::PUT,
                            &format!("/api/v2/item_upload/items/{id}"),
                        )
                        .json(&Self::item_body(params, Some(id), &photos, &temp_uuid)),
                    ("update_listing", None) => {
                        return Err(Failure::new(
                            "validation",
                            "update_listing without params.remote_id",
                        ));
                    }
                    _ => self
                        .vinted(reqwest::Method::POST, "/api/v2/item_upload/items")
                        .json(&Self::item_body(params, None, &photos, &temp_uuid)),
                };
                let v = self
                    .vinted_send(req.header("x-upload-form", "true"))
                    .await?;
                let item = &v["item"];
                let id = item["id"]
                    .as_u64()
                    .map(|i| i.to_string())
                    .or_else(|| item["id"].as_str().map(String::from))
                    .ok_or_else(|| {
                        Failure::new(
                            "transient",
                            format!("Vinted saved the item without an id: {v}"),
                        )
                    })?;
                Ok((Some(id), item["url"].as_str().map(String::from)))
            }
            "delete_listing" => {
                let Some(id) = remote else {
                    return Err(Failure::new(
                        "validation",
                        "delete_listing without params.remote_id",
                    ));
                };
                match self
                    .vinted_send(
                        self.vinted(reqwest::Method::POST, &format!("/api/v2/items/{id}/delete")),
                    )
                    .await
                {
                    // Already gone is what we wanted.
                    Ok(_) => Ok((Some(id.to_string()), None)),
                    Err(f) if f.message.contains("(404)") => Ok((Some(id.to_string()), None)),
                    Err(f) => Err(f),
                }
            }
            other => Err(Failure::new(
                "validation",
                format!("unknown action {other:?}"),
            )),
        }
    }

    /// `sync_sales`: the seller's sold orders, newest first, page by page back to `params.since`
    /// (the newest order the platform has; at most `max_pages`), and the closed items of the
    /// wardrobe's first pages. Returns the result's `data`: `{orders, closed_items}`.
    pub async fn sync_sales(&self, params: &Value) -> Result<Value, Failure> {
        let max_pages = params["max_pages"].as_u64().unwrap_or(3).max(1);
        let per_page = params["orders_per_page"].as_u64().unwrap_or(20);
        let since = params["since"].as_str().and_then(parse_time);
        let id = |v: &Value| {
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        };
        let mut orders = Vec::new();
        for page in 1..=max_pages {
            let path =
                format!("/api/v2/my_orders?type=sold&status=all&per_page={per_page}&page={page}");
            let v = self
                .vinted_send(self.vinted(reqwest::Method::GET, &path))
                .await?;
            let list = v["my_orders"].as_array().cloned().unwrap_or_default();
            let mut reached_known = false;
            for o in &list {
                let date = o["date"].as_str().and_then(parse_time);
                reached_known |= matches!((date, since), (Some(d), Some(s)) if d < s);
                let (Some(txn), Some(item)) = (id(&o["transaction_id"]), id(&o["item_id"])) else {
                    continue;
                };
                let amount = o["price"]["amount"]
                    .as_str()
                    .and_then(|a| a.parse::<f64>().ok())
                    .map(|a| format!("{a:.2}"));
                orders.push(json!({
                    "transaction_id": txn, "item_id": item,
                    "status": o["transaction_user_status"].as_str().unwrap_or("unknown"),
                    "amount": amount, "currency_code": o["price"]["currency_code"], "date": date,
                }));
            }
            let pages = v["pagination"]["total_pages"].as_u64().unwrap_or(1);
            if reached_known || list.is_empty() || page >= pages {
                break;
            }
        }
        let user = params["user_id"].as_str().unwrap_or_default();
        let per_page = params["wardrobe_per_page"].as_u64().unwrap_or(96);
        let mut closed = Vec::new();
        for page in 1..=max_pages {
            let path = format!(
                "/api/v2/wardrobe/{user}/items?page={page}&per_page={per_page}&order=relevance"
            );
            let v = self
                .vinted_send(self.vinted(reqwest::Method::GET, &path))
                .await?;
            for i in v["items"].as_array().into_iter().flatten() {
                if i["is_closed"] == json!(true)
                    && let Some(item) = id(&i["id"])
                {
                    closed
                        .push(json!({"id": item, "item_closing_action": i["item_closing_action"]}));
                }
            }
            if page >= v["pagination"]["total_pages"].as_u64().unwrap_or(1) {
                break;
            }
        }
        Ok(json!({ "orders": orders, "closed_items": closed }))
    }

    /// Whether the seller's Vinted session works right now.
    pub async fn session_works(&self) -> bool {
        self.vinted_send(self.vinted(reqwest::Method::GET, "/api/v2/users/current"))
            .await
            .is_ok()
    }

    /// One poll: lease a task, run it, post the result.
    pub async fn step(&self) -> Result<Step, RunnerError> {
        let lease = self.lease().await?;
        self.handle(lease).await
    }

    /// Asks for a task (held by the platform up to `wait` while there is none).
    async fn lease(&self) -> Result<Value, RunnerError> {
        let req = self
            .http
            .get(format!("{}/api/plugin/tasks", self.cfg.api))
            .query(&[("wait", self.cfg.wait.as_secs())])
            .timeout(self.cfg.wait + Duration::from_secs(30))
            .bearer_auth(&self.cfg.token);
        let (status, lease) = self.api_json(req).await?;
        if status != 200 {
            return Err(RunnerError::Api(format!(
                "lease answered {status}: {lease}"
            )));
        }
        Ok(lease)
    }

    /// Runs a leased task and posts its result (or handles a pause).
    async fn handle(&self, lease: Value) -> Result<Step, RunnerError> {
        if let Some(why) = lease["paused"].as_str() {
            if self.session_works().await {
                let (s, v) = self
                    .api_json(self.api("/api/plugin/session").json(&json!({"ok": true})))
                    .await?;
                if s != 200 {
                    return Err(RunnerError::Api(format!(
                        "session report answered {s}: {v}"
                    )));
                }
                tracing::info!("Vinted session works again; the account is resumed");
                return Ok(Step::Resumed);
            }
            return Ok(Step::Paused(why.to_string()));
        }
        let Some(task_id) = lease["task_id"].as_i64() else {
            return Ok(Step::Idle);
        };
        let action = lease["action"].as_str().unwrap_or("").to_string();
        let started = Instant::now();
        let outcome = if action == "sync_sales" {
            self.sync_sales(&lease["params"]).await
        } else {
            self.execute(&action, &lease["params"])
                .await
                .map(|(remote_id, url)| json!({"remote_id": remote_id, "url": url}))
        };
        let elapsed = started.elapsed().as_millis() as u64;
        let (body, label) = match &outcome {
            Ok(data) => (
                json!({"lease_id": lease["lease_id"], "success": true, "data": data}),
                "succeeded".to_string(),
            ),
            Err(f) => (
                json!({"lease_id": lease["lease_id"], "success": false,
                       "error": {"type": f.kind, "message": f.message}}),
                f.kind.to_string(),
            ),
        };
        let mut body = body;
        body["execution_time_ms"] = json!(elapsed);
        body["executed_at"] = json!(chrono::Utc::now());
        let (s, v) = self
            .api_json(
                self.api(&format!("/api/plugin/tasks/{task_id}/result"))
                    .json(&body),
            )
            .await?;
        let accepted = s == 200;
        match (&outcome, accepted) {
            (_, false) => tracing::warn!(task_id, status = s, answer = %v, "result refused"),
            (Ok(data), true) => tracing::info!(task_id, %action, %data, "task succeeded"),
            (Err(f), true) => {
                tracing::warn!(task_id, %action, kind = f.kind, message = %f.message, "task failed")
            }
        }
        Ok(Step::Ran {
            task_id,
            outcome: label,
            accepted,
        })
    }

    /// Polls until `stop` resolves: at once again after a task, every `poll` when idle.
    pub async fn run(
        &self,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), RunnerError> {
        tokio::pin!(stop);
        loop {
            let asked = Instant::now();
            // Stopping while the platform holds an idle lease request open is safe; once a task
            // is leased it runs to its result.
            let lease = tokio::select! {
                _ = &mut stop => return Ok(()),
                l = self.lease() => l,
            };
            let step = match lease {
                Ok(lease) => self.handle(lease).await,
                Err(e) => Err(e),
            };
            let wait = match step {
                // Long polling held the request: ask again at once. Answered at once (a platform
                // that does not hold, or another lease open): wait `poll`.
                Ok(Step::Idle)
                    if asked.elapsed() >= self.cfg.wait / 2 && !self.cfg.wait.is_zero() =>
                {
                    Duration::ZERO
                }
                Ok(Step::Ran { .. }) | Ok(Step::Resumed) => Duration::ZERO,
                Ok(Step::Idle) => self.cfg.poll,
                Ok(Step::Paused(why)) => {
                    tracing::warn!(%why, "account paused; waiting for the Vinted session to work");
                    self.cfg.poll
                }
                Err(RunnerError::Unauthorized) => return Err(RunnerError::Unauthorized),
                Err(e) => {
                    tracing::warn!(error = %e, "poll failed; trying again");
                    self.cfg.poll
                }
            };
            tokio::select! {
                _ = &mut stop => return Ok(()),
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vinted_answers_become_protocol_error_types() {
        assert_eq!(classify(401, false, r#"{"code":100}"#).kind, "blocked");
        assert_eq!(
            classify(
                403,
                true,
                r#"{"url":"https://geo.captcha-delivery.com/captcha/"}"#
            )
            .kind,
            "blocked"
        );
        let v = classify(
            400,
            false,
            r#"{"code":99,"errors":[{"field":"title","value":"trop de majuscules"}]}"#,
        );
        assert_eq!(v.kind, "validation");
        assert!(
            v.message.contains("title: trop de majuscules"),
            "{}",
            v.message
        );
        assert_eq!(classify(503, false, "").kind, "transient");
        assert_eq!(classify(429, false, "").kind, "transient");
    }
}
