//! Marketplace notifications pushed to us: each marketplace's signature scheme, and the inbox.
//! A notification whose signature checks out is stored in `webhook_inbox` (deduplicated by the
//! marketplace's notification id) together with its `handle_webhook` job, in one transaction,
//! and answered at once; the job does the marketplace calls ([`crate::kinds::HandleWebhook`]).

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value;
use sqlx::PgPool;

use crate::kinds::HandleWebhook;
use engine::Kind;
use engine::queue::{self, NewJob, QueueError};

/// Why a notification was refused before anything was stored.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("header {0} is missing")]
    Missing(&'static str),
    #[error("header {0} is malformed: {1}")]
    Malformed(&'static str, String),
    #[error("the signature does not match the body")]
    Mismatch,
    #[error("webhook-timestamp is more than 5 minutes away from now")]
    Stale,
    #[error("no usable signing key: {0}")]
    Key(String),
}

/// Etsy's webhooks: the Standard Webhooks scheme (kept behind this one function, since Etsy's
/// exact scheme is not documented — shared/marketplaces.md §6.1). `signature` holds
/// space-separated `v1,<base64>` entries, any of which may match HMAC-SHA256 over
/// `"{id}.{timestamp}.{body}"` keyed with the base64 secret after `whsec_`.
pub fn verify_etsy(
    secret: &str,
    id: Option<&str>,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<(), SignatureError> {
    use hmac::Mac;
    let id = id.ok_or(SignatureError::Missing("webhook-id"))?;
    let ts = timestamp.ok_or(SignatureError::Missing("webhook-timestamp"))?;
    let signature = signature.ok_or(SignatureError::Missing("webhook-signature"))?;
    let at: i64 = ts
        .parse()
        .map_err(|_| SignatureError::Malformed("webhook-timestamp", "not epoch seconds".into()))?;
    let key = B64
        .decode(secret.trim_start_matches("whsec_"))
        .map_err(|e| SignatureError::Key(format!("webhook_secret is not base64: {e}")))?;
    let mac = || {
        let mut m =
            hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
        m.update(format!("{id}.{ts}.").as_bytes());
        m.update(body);
        m
    };
    let matched = signature
        .split_whitespace()
        .filter_map(|e| e.strip_prefix("v1,"))
        .filter_map(|s| B64.decode(s).ok())
        .any(|sig| mac().verify_slice(&sig).is_ok());
    if !matched {
        return Err(SignatureError::Mismatch);
    }
    // Checked after the signature, so an attacker learns nothing from the answer's wording.
    if (now - at).abs() > ETSY_TOLERANCE_S {
        return Err(SignatureError::Stale);
    }
    Ok(())
}

/// How far a signed timestamp may be from our clock (a replay window).
const ETSY_TOLERANCE_S: i64 = 300;

/// eBay's endpoint validation: hex(SHA-256(challengeCode + verificationToken + endpoint)).
pub fn ebay_challenge_response(code: &str, token: &str, endpoint: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::new()
        .chain_update(code)
        .chain_update(token)
        .chain_update(endpoint)
        .finalize();
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// `X-EBAY-SIGNATURE`, decoded: base64 of `{"alg":"ecdsa","kid":…,"signature":…,"digest":"SHA1"}`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct EbaySignature {
    pub alg: String,
    pub kid: String,
    pub signature: String,
    pub digest: String,
}

impl EbaySignature {
    pub fn parse(header: Option<&str>) -> Result<Self, SignatureError> {
        const H: &str = "x-ebay-signature";
        let raw = B64
            .decode(header.ok_or(SignatureError::Missing(H))?.trim())
            .map_err(|e| SignatureError::Malformed(H, e.to_string()))?;
        let s: Self = serde_json::from_slice(&raw)
            .map_err(|e| SignatureError::Malformed(H, e.to_string()))?;
        if !s.alg.eq_ignore_ascii_case("ecdsa") || !s.digest.eq_ignore_ascii_case("sha1") {
            return Err(SignatureError::Malformed(
                H,
                format!("unsupported alg {} / digest {}", s.alg, s.digest),
            ));
        }
        Ok(s)
    }

    /// ECDSA (P-256) over SHA-1 of the raw body, the signature DER-encoded as eBay's SDKs expect.
    pub fn verify(
        &self,
        key: &p256::ecdsa::VerifyingKey,
        body: &[u8],
    ) -> Result<(), SignatureError> {
        use p256::ecdsa::signature::hazmat::PrehashVerifier;
        use sha1::Digest;
        let bytes = B64
            .decode(&self.signature)
            .map_err(|_| SignatureError::Mismatch)?;
        let sig = p256::ecdsa::Signature::from_der(&bytes)
            .or_else(|_| p256::ecdsa::Signature::from_slice(&bytes))
            .map_err(|_| SignatureError::Mismatch)?;
        let digest = sha1::Sha1::digest(body);
        key.verify_prehash(&digest, &sig)
            .map_err(|_| SignatureError::Mismatch)
    }
}

/// An eBay public key as getPublicKey returns it: PEM, with or without its line breaks.
pub fn ebay_key_from_pem(pem: &str) -> Result<p256::ecdsa::VerifyingKey, SignatureError> {
    use p256::pkcs8::DecodePublicKey;
    let b64: String = pem
        .replace("-----BEGIN PUBLIC KEY-----", "")
        .replace("-----END PUBLIC KEY-----", "")
        .split_whitespace()
        .collect();
    let der = B64
        .decode(b64)
        .map_err(|e| SignatureError::Key(e.to_string()))?;
    p256::ecdsa::VerifyingKey::from_public_key_der(&der)
        .map_err(|e| SignatureError::Key(e.to_string()))
}

/// eBay's notification keys by `kid`, fetched once per process (eBay's SDKs cache them too).
#[derive(Default)]
pub struct EbayKeys(Mutex<HashMap<String, p256::ecdsa::VerifyingKey>>);

impl EbayKeys {
    /// The key for `kid`: cached, or fetched with an application token.
    pub async fn get(
        &self,
        ebay: &marketplaces::ebay::EbayClient,
        kid: &str,
    ) -> Result<p256::ecdsa::VerifyingKey, KeyFetchError> {
        if let Some(k) = self.lock().get(kid) {
            return Ok(*k);
        }
        let token = ebay.app_token().await?;
        let pk = match ebay.public_key(&token, kid).await {
            Ok(pk) => pk,
            // An unknown kid is a forged header, not an outage.
            Err(marketplaces::MarketplaceError::NotFound { .. }) => {
                return Err(KeyFetchError::Unknown(kid.to_string()));
            }
            Err(e) => return Err(e.into()),
        };
        let key = ebay_key_from_pem(&pk.key).map_err(KeyFetchError::Bad)?;
        self.lock().insert(kid.to_string(), key);
        Ok(key)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, p256::ecdsa::VerifyingKey>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyFetchError {
    /// eBay has no key by that id: the header is not eBay's.
    #[error("eBay has no public key {0}")]
    Unknown(String),
    #[error("eBay's public key is unusable: {0}")]
    Bad(SignatureError),
    /// eBay could not be asked (eBay resends unacknowledged notifications).
    #[error(transparent)]
    Unavailable(#[from] marketplaces::MarketplaceError),
}

/// A notification whose signature checked out.
pub struct Incoming<'a> {
    pub marketplace: &'static str,
    pub notification_id: &'a str,
    pub topic: &'a str,
    pub body: &'a str,
    pub headers: Value,
}

/// What storing a notification did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub inbox_id: i64,
    /// False for a replay (the notification id was already stored): nothing changed.
    pub new: bool,
}

/// Stores a notification and its handling job in one transaction; a replay changes nothing.
pub async fn receive(
    pool: &PgPool,
    settings: &crate::Settings,
    n: &Incoming<'_>,
) -> Result<Received, QueueError> {
    let mut tx = pool.begin().await?;
    let inserted: Option<i64> = sqlx::query_scalar(
        "INSERT INTO webhook_inbox (marketplace, notification_id, topic, body, headers)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (marketplace, notification_id) DO NOTHING RETURNING id",
    )
    .bind(n.marketplace)
    .bind(n.notification_id)
    .bind(n.topic)
    .bind(n.body)
    .bind(&n.headers)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(id) = inserted else {
        let id: i64 = sqlx::query_scalar(
            "SELECT id FROM webhook_inbox WHERE marketplace = $1 AND notification_id = $2",
        )
        .bind(n.marketplace)
        .bind(n.notification_id)
        .fetch_one(&mut *tx)
        .await?;
        return Ok(Received {
            inbox_id: id,
            new: false,
        });
    };
    let job = NewJob::of(
        &HandleWebhook { inbox_id: id },
        &settings.kinds,
        Some(format!("webhook:{id}")),
    );
    let ins = queue::insert(&mut tx, &[job]).await?;
    sqlx::query("UPDATE webhook_inbox SET job_id = $2 WHERE id = $1")
        .bind(id)
        .bind(ins[0].id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    queue::wake(pool, &[HandleWebhook::KIND]).await?;
    Ok(Received {
        inbox_id: id,
        new: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ebay_challenge_response_is_sha256_hex_of_code_token_endpoint() {
        let got = ebay_challenge_response("abc", "tok", "https://x/y");
        // python3: hashlib.sha256(b"abctokhttps://x/y").hexdigest()
        assert_eq!(
            got,
            "2f62fdb63cfbccf83548c2623c82ab3b371eab5e5f96d0db570d7c86448d87cf"
        );
        assert_ne!(got, ebay_challenge_response("abc", "tok", "https://x/z"));
    }

    #[test]
    fn etsy_signature_must_match_and_be_fresh() {
        use hmac::Mac;
        let secret = format!("whsec_{}", B64.encode(b"0123456789abcdef0123456789abcdef"));
        let body = br#"{"event_type":"order.paid"}"#;
        let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"0123456789abcdef0123456789abcdef")
            .unwrap();
        m.update(b"msg_1.1000.");
        m.update(body);
        let sig = format!("v1,bogus v1,{}", B64.encode(m.finalize().into_bytes()));
        let v =
            |id, sig: &str, now| verify_etsy(&secret, Some(id), Some("1000"), Some(sig), body, now);
        assert!(v("msg_1", &sig, 1000).is_ok());
        assert!(v("msg_1", &sig, 1299).is_ok());
        assert!(matches!(v("msg_1", &sig, 1301), Err(SignatureError::Stale)));
        assert!(matches!(
            v("msg_2", &sig, 1000),
            Err(SignatureError::Mismatch)
        ));
        assert!(matches!(
            verify_etsy(&secret, Some("msg_1"), None, Some(&sig), body, 1000),
            Err(SignatureError::Missing("webhook-timestamp"))
        ));
    }
}
