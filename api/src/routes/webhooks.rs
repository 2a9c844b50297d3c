//! Notifications pushed by the marketplaces (public routes: the signature is the credential).
//! Each request: the signature is checked before anything else (bad or missing → 401, nothing
//! stored), then the notification is stored with its handling job and answered 204 at once; a
//! replay (same notification id) changes nothing. No marketplace call is made here, apart from
//! fetching an eBay signing key the first time its `kid` is seen.

use std::sync::Arc;

use poem::Request;
use poem_openapi::param::Query;
use poem_openapi::payload::{Binary, Json};
use poem_openapi::{ApiResponse, Object, OpenApi};
use serde_json::{Value, json};

use jobs::webhooks::{self, EbaySignature, Incoming, KeyFetchError};

use crate::problem::Problem;
use crate::routes::Tag;
use crate::state::AppState;

pub struct WebhooksApi {
    pub st: Arc<AppState>,
}

#[derive(ApiResponse)]
pub enum Accepted {
    /// Stored (or already stored: a replay); it is handled by a job.
    #[oai(status = 204)]
    Stored,
}

#[derive(Debug, Object)]
pub struct Challenge {
    /// hex(SHA-256(challenge_code + verification token + endpoint URL)).
    #[oai(rename = "challengeResponse")]
    pub challenge_response: String,
}

fn header<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

fn unauthorized(e: impl std::fmt::Display) -> Problem {
    Problem::unauthorized(format!("notification refused: {e}"))
}

#[OpenApi(tag = "Tag::Webhooks")]
impl WebhooksApi {
    /// Etsy `order.paid` webhook (Standard Webhooks signature: `webhook-id`,
    /// `webhook-timestamp`, `webhook-signature`)
    #[oai(path = "/webhooks/etsy", method = "post")]
    async fn etsy(&self, req: &Request, body: Binary<Vec<u8>>) -> Result<Accepted, Problem> {
        let s = &self.st.settings.marketplaces.etsy;
        webhooks::verify_etsy(
            s.webhook_secret.expose(),
            header(req, "webhook-id"),
            header(req, "webhook-timestamp"),
            header(req, "webhook-signature"),
            &body.0,
            chrono::Utc::now().timestamp(),
        )
        .map_err(unauthorized)?;
        let (text, payload) = json_body(&body.0)?;
        let Some(topic) = payload["event_type"].as_str() else {
            return Err(Problem::bad_request("event_type is required"));
        };
        if payload["resource_url"].as_str().is_none() {
            return Err(Problem::bad_request("resource_url is required"));
        }
        let id = header(req, "webhook-id").unwrap_or_default();
        let headers = json!({
            "webhook-id": id,
            "webhook-timestamp": header(req, "webhook-timestamp"),
        });
        self.store("etsy", id, topic, text, headers).await
    }

    /// eBay Notification API endpoint validation: answers `challenge_code`
    #[oai(path = "/webhooks/ebay", method = "get")]
    async fn ebay_challenge(
        &self,
        #[oai(validator(min_length = 1))] challenge_code: Query<String>,
    ) -> Result<Json<Challenge>, Problem> {
        let code = challenge_code.0;
        let s = &self.st.settings.marketplaces.ebay;
        Ok(Json(Challenge {
            challenge_response: webhooks::ebay_challenge_response(
                &code,
                s.notification_verification_token.expose(),
                &s.notification_endpoint,
            ),
        }))
    }

    /// eBay Notification API messages (`X-EBAY-SIGNATURE`: ECDSA, key by `kid`)
    #[oai(path = "/webhooks/ebay", method = "post")]
    async fn ebay(&self, req: &Request, body: Binary<Vec<u8>>) -> Result<Accepted, Problem> {
        let sig = EbaySignature::parse(header(req, "x-ebay-signature")).map_err(unauthorized)?;
        let key = self
            .st
            .ebay_keys
            .get(&self.st.market.ebay, &sig.kid)
            .await
            .map_err(|e| match e {
                // eBay resends what is not acknowledged: a 503 loses nothing.
                KeyFetchError::Unavailable(e) => {
                    Problem::unavailable(format!("eBay's signing key could not be fetched: {e}"))
                }
                other => unauthorized(other),
            })?;
        sig.verify(&key, &body.0).map_err(unauthorized)?;
        let (text, payload) = json_body(&body.0)?;
        let Some(topic) = payload["metadata"]["topic"].as_str() else {
            return Err(Problem::bad_request("metadata.topic is required"));
        };
        let Some(id) = payload["notification"]["notificationId"].as_str() else {
            return Err(Problem::bad_request(
                "notification.notificationId is required",
            ));
        };
        let headers = json!({ "x-ebay-signature": header(req, "x-ebay-signature") });
        self.store("ebay", id, topic, text, headers).await
    }
}

impl WebhooksApi {
    async fn store(
        &self,
        marketplace: &'static str,
        id: &str,
        topic: &str,
        body: &str,
        headers: Value,
    ) -> Result<Accepted, Problem> {
        let n = Incoming {
            marketplace,
            notification_id: id,
            topic,
            body,
            headers,
        };
        let r = webhooks::receive(&self.st.pool, &self.st.settings, &n).await?;
        tracing::info!(
            marketplace,
            topic,
            inbox_id = r.inbox_id,
            new = r.new,
            "notification received"
        );
        Ok(Accepted::Stored)
    }
}

/// The body as text and as JSON (what was signed is stored as it came).
fn json_body(bytes: &[u8]) -> Result<(&str, Value), Problem> {
    let text =
        std::str::from_utf8(bytes).map_err(|_| Problem::bad_request("body is not UTF-8 JSON"))?;
    let v = serde_json::from_str(text)
        .map_err(|e| Problem::bad_request(format!("body is not JSON: {e}")))?;
    Ok((text, v))
}
