//! Every marketplace HTTP outcome is classified here, once, into what it means for a job.
//! Clients call [`classify`] on each non-success response; handlers use `?` and the
//! `From<MarketplaceError> for JobError` below decides retry, snooze or dead.

use std::time::Duration;

use serde_json::Value;

use crate::marketplace::Marketplace;
use engine::JobError;

/// What an upstream response or transport failure means.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MarketplaceError {
    /// Transport failure, timeout, 5xx: try again after backoff.
    #[error("{marketplace} unavailable: {detail}")]
    Unavailable {
        marketplace: &'static str,
        detail: String,
    },
    /// 429 or a spent quota: wait (at least `retry_after` when the marketplace says so).
    #[error("{marketplace} rate limit: {detail}")]
    RateLimited {
        marketplace: &'static str,
        retry_after: Option<Duration>,
        detail: String,
    },
    /// The marketplace's circuit is open (it has been failing): wait for the next probe.
    #[error("{marketplace} circuit open: {detail}")]
    CircuitOpen {
        marketplace: &'static str,
        retry_after: Duration,
        detail: String,
    },
    /// The access token expired: refresh it, then run again.
    #[error("{marketplace} access token expired")]
    AuthExpired { marketplace: &'static str },
    /// The grant is gone (revoked, `invalid_grant`): the seller must reconnect.
    #[error("{marketplace} authorization revoked: {detail}")]
    AuthRevoked {
        marketplace: &'static str,
        detail: String,
    },
    /// The marketplace refused the request as such (validation, policy): never retry.
    #[error("{marketplace} rejected the request ({code}): {message}")]
    Rejected {
        marketplace: &'static str,
        status: u16,
        code: String,
        message: String,
    },
    /// The remote object does not exist.
    #[error("{marketplace}: not found: {detail}")]
    NotFound {
        marketplace: &'static str,
        detail: String,
    },
    /// The change is already there (e.g. eBay offer exists, 25002): treat as success.
    #[error("{marketplace}: already applied: {detail}")]
    AlreadyApplied {
        marketplace: &'static str,
        detail: String,
    },
}

impl MarketplaceError {
    /// The class recorded with a job's error (`last_error.class`).
    pub fn class(&self) -> &'static str {
        match self {
            Self::Unavailable { .. } => "unavailable",
            Self::RateLimited { .. } => "rate_limited",
            Self::CircuitOpen { .. } => "circuit_open",
            Self::AuthExpired { .. } => "auth_expired",
            Self::AuthRevoked { .. } => "auth_revoked",
            Self::Rejected { .. } => "rejected",
            Self::NotFound { .. } => "not_found",
            Self::AlreadyApplied { .. } => "already_applied",
        }
    }
}

/// Waits when a marketplace limits us without saying how long.
const DEFAULT_RATE_WAIT: Duration = Duration::from_secs(30);
/// An expired token is refreshed by a `refresh_token` job; the job waits this long meanwhile.
const REFRESH_WAIT: Duration = Duration::from_secs(5);

/// What the queue does with each class. `NotFound` and `AlreadyApplied` are decided by the
/// handler first (a delete of a missing listing is fine; a create is not): reaching here, they
/// are permanent.
impl From<MarketplaceError> for JobError {
    fn from(e: MarketplaceError) -> Self {
        let class = e.class().into();
        let message = e.to_string();
        match e {
            MarketplaceError::Unavailable { .. } => JobError::Retry { class, message },
            MarketplaceError::RateLimited { retry_after, .. } => JobError::Snooze {
                after: retry_after.unwrap_or(DEFAULT_RATE_WAIT),
                class,
                message,
            },
            MarketplaceError::CircuitOpen { retry_after, .. } => JobError::Snooze {
                after: retry_after,
                class,
                message,
            },
            MarketplaceError::AuthExpired { .. } => JobError::Snooze {
                after: REFRESH_WAIT,
                class,
                message,
            },
            MarketplaceError::AuthRevoked { .. }
            | MarketplaceError::Rejected { .. }
            | MarketplaceError::NotFound { .. }
            | MarketplaceError::AlreadyApplied { .. } => JobError::Permanent { class, message },
        }
    }
}

/// A non-success HTTP response, as the client saw it.
pub struct Response<'a> {
    pub status: u16,
    /// `retry-after` in seconds, if present.
    pub retry_after: Option<u64>,
    pub body: &'a str,
}

/// Classifies a non-2xx response of `m`'s API.
pub fn classify(m: Marketplace, r: &Response<'_>) -> MarketplaceError {
    let marketplace = m.as_str();
    let body: Value = serde_json::from_str(r.body).unwrap_or(Value::Null);
    let (code, message) = error_code_and_message(m, &body, r.body);
    let retry_after = r.retry_after.map(Duration::from_secs);
    match (m, r.status) {
        // OAuth token endpoints (all three): the grant is gone.
        (_, 400 | 401) if code == "invalid_grant" => MarketplaceError::AuthRevoked {
            marketplace,
            detail: message,
        },
        // Our app's credentials are wrong: a configuration error, not the seller's grant.
        (_, 400 | 401) if code == "invalid_client" => MarketplaceError::Rejected {
            marketplace,
            status: r.status,
            code,
            message,
        },
        (Marketplace::Ebay, 401) if code == "1001" => MarketplaceError::AuthExpired { marketplace },
        // An access token Etsy no longer takes: refresh it; if the grant itself is gone, the
        // refresh answers invalid_grant and that marks the connection broken.
        (Marketplace::Etsy, 401) if code == "invalid_token" || message.contains("expired") => {
            MarketplaceError::AuthExpired { marketplace }
        }
        (Marketplace::Vinted, 401) => MarketplaceError::AuthExpired { marketplace },
        (_, 401) => MarketplaceError::AuthRevoked {
            marketplace,
            detail: message,
        },
        // eBay's 429 (errorId 2001) is a spent daily quota, not a burst.
        (Marketplace::Ebay, 429) => MarketplaceError::RateLimited {
            marketplace,
            retry_after: retry_after.or(Some(Duration::from_secs(3600))),
            detail: message,
        },
        (_, 429) => MarketplaceError::RateLimited {
            marketplace,
            retry_after,
            detail: message,
        },
        // Vinted's anti-bot block: back off for long, it is a limit, not a verdict on the item.
        (Marketplace::Vinted, 403)
            if message.to_lowercase().contains("captcha") || code == "bot" =>
        {
            MarketplaceError::RateLimited {
                marketplace,
                retry_after: retry_after.or(Some(Duration::from_secs(1800))),
                detail: message,
            }
        }
        // 25002 is also eBay's generic "user error"; only the offer-exists form, which names the
        // existing offerId, means the change is already there.
        (Marketplace::Ebay, _) if code == "25002" && r.body.contains("\"offerId\"") => {
            MarketplaceError::AlreadyApplied {
                marketplace,
                detail: message,
            }
        }
        (_, 404) => MarketplaceError::NotFound {
            marketplace,
            detail: message,
        },
        (_, 408) | (_, 500..=599) => MarketplaceError::Unavailable {
            marketplace,
            detail: format!("HTTP {}: {message}", r.status),
        },
        (_, status) => MarketplaceError::Rejected {
            marketplace,
            status,
            code,
            message,
        },
    }
}

/// The marketplace's own error code and message, from each one's body shapes.
fn error_code_and_message(m: Marketplace, body: &Value, raw: &str) -> (String, String) {
    // OAuth errors are the same everywhere: {"error": "invalid_grant", "error_description": …}.
    if let (Some(e), Some(d)) = (body["error"].as_str(), body["error_description"].as_str()) {
        return (e.to_string(), d.to_string());
    }
    match m {
        Marketplace::Ebay => {
            let e = &body["errors"][0];
            let code = e["errorId"]
                .as_i64()
                .map(|c| c.to_string())
                .unwrap_or_default();
            let msg = e["longMessage"]
                .as_str()
                .or(e["message"].as_str())
                .unwrap_or(raw);
            (code, msg.to_string())
        }
        Marketplace::Etsy => match body {
            // Validation errors come as an array: [{"path": "/title/1", "type": …, "message": …}].
            Value::Array(items) => {
                let first = &items[0];
                let msg = items
                    .iter()
                    .map(|i| {
                        format!(
                            "{}: {}",
                            i["path"].as_str().unwrap_or("?"),
                            i["message"].as_str().unwrap_or("?")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                (first["type"].as_str().unwrap_or_default().to_string(), msg)
            }
            _ => {
                let e = body["error"].as_str().unwrap_or(raw);
                // `{"error": "invalid_token"}` is a code; `{"error": "Listing not found"}` prose.
                let code = if e.contains(' ') { "" } else { e };
                (code.to_string(), e.to_string())
            }
        },
        Marketplace::Vinted => {
            let code = body["code"]
                .as_i64()
                .map(|c| c.to_string())
                .unwrap_or_default();
            let msg = body["message"]
                .as_str()
                .or(body["error"].as_str())
                .unwrap_or(raw);
            (code, msg.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(m: Marketplace, status: u16, retry_after: Option<u64>, body: &str) -> MarketplaceError {
        classify(
            m,
            &Response {
                status,
                retry_after,
                body,
            },
        )
    }

    #[test]
    fn ebay_outcomes_are_classified_by_error_id() {
        let expired = r#"{"errors":[{"errorId":1001,"domain":"OAuth","category":"REQUEST","message":"Invalid access token"}]}"#;
        assert_eq!(
            c(Marketplace::Ebay, 401, None, expired).class(),
            "auth_expired"
        );
        let quota = r#"{"errors":[{"errorId":2001,"domain":"ACCESS","category":"REQUEST","message":"Too many requests."}]}"#;
        assert!(matches!(
            c(Marketplace::Ebay, 429, None, quota),
            MarketplaceError::RateLimited {
                retry_after: Some(_),
                ..
            }
        ));
        let exists = r#"{"errors":[{"errorId":25002,"domain":"API_INVENTORY","category":"REQUEST","message":"Offer entity already exists","parameters":[{"name":"offerId","value":"7"}]}]}"#;
        assert_eq!(
            c(Marketplace::Ebay, 400, None, exists).class(),
            "already_applied"
        );
        let invalid = r#"{"errors":[{"errorId":25707,"message":"Only alphanumeric characters can be used for SKUs"}]}"#;
        assert!(
            matches!(c(Marketplace::Ebay, 400, None, invalid), MarketplaceError::Rejected { ref code, .. } if code == "25707")
        );
        assert_eq!(c(Marketplace::Ebay, 503, None, "").class(), "unavailable");
        let grant = r#"{"error":"invalid_grant","error_description":"the provided authorization refresh token is invalid"}"#;
        assert_eq!(
            c(Marketplace::Ebay, 400, None, grant).class(),
            "auth_revoked"
        );
    }

    #[test]
    fn etsy_outcomes_accept_both_body_shapes_and_keep_retry_after() {
        let e = c(
            Marketplace::Etsy,
            429,
            Some(7),
            r#"{"error":"Too many requests"}"#,
        );
        assert_eq!(
            e,
            MarketplaceError::RateLimited {
                marketplace: "etsy",
                retry_after: Some(Duration::from_secs(7)),
                detail: "Too many requests".into()
            }
        );
        let arr = r#"[{"path":"/title/1","type":"invalid_characters","message":"contains invalid characters"}]"#;
        match c(Marketplace::Etsy, 400, None, arr) {
            MarketplaceError::Rejected { code, message, .. } => {
                assert_eq!(code, "invalid_characters");
                assert!(message.contains("/title/1"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            c(Marketplace::Etsy, 401, None, r#"{"error":"invalid_token"}"#).class(),
            "auth_expired"
        );
        assert_eq!(
            c(
                Marketplace::Etsy,
                404,
                None,
                r#"{"error":"Listing not found"}"#
            )
            .class(),
            "not_found"
        );
    }

    #[test]
    fn job_outcomes_follow_the_class() {
        let snooze = JobError::from(MarketplaceError::RateLimited {
            marketplace: "etsy",
            retry_after: Some(Duration::from_secs(9)),
            detail: String::new(),
        });
        assert!(
            matches!(snooze, JobError::Snooze { after, .. } if after == Duration::from_secs(9))
        );
        assert!(matches!(
            JobError::from(MarketplaceError::Unavailable {
                marketplace: "ebay",
                detail: String::new()
            }),
            JobError::Retry { .. }
        ));
        let rej = JobError::from(MarketplaceError::Rejected {
            marketplace: "etsy",
            status: 400,
            code: "x".into(),
            message: "title".into(),
        });
        assert!(matches!(rej, JobError::Permanent { ref class, .. } if class == "rejected"));
        assert!(matches!(
            JobError::from(MarketplaceError::AuthExpired {
                marketplace: "ebay"
            }),
            JobError::Snooze { .. }
        ));
    }
}
