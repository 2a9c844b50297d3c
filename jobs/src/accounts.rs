//! Marketplace connections: OAuth `state` values (single use, expiring), accounts with their
//! tokens sealed at rest ([`crate::secrets`]), and access tokens handed to jobs (refreshed first
//! when they are about to expire, under a row lock so concurrent jobs refresh once).

use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use sqlx::PgPool;

use crate::domain::Marketplace;
use crate::job::JobError;
use crate::marketplace::MarketplaceError;
use crate::marketplace::ebay::EbayClient;
use crate::secrets::TokenCipher;

/// How long a consent may take before its `state` expires.
const STATE_TTL_MINUTES: i32 = 10;

/// A new single-use `state` for a consent redirect (with Etsy's PKCE verifier, kept here).
pub async fn new_state(
    pool: &PgPool,
    m: Marketplace,
    verifier: Option<&str>,
) -> Result<String, sqlx::Error> {
    let state = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 24]>());
    sqlx::query("INSERT INTO oauth_states (state, marketplace, verifier) VALUES ($1, $2, $3)")
        .bind(&state)
        .bind(m.as_str())
        .bind(verifier)
        .execute(pool)
        .await?;
    Ok(state)
}

/// Consumes a `state`: Some(verifier) once, within its lifetime, for its marketplace; None for a
/// state that is unknown, replayed, expired or from another marketplace.
pub async fn take_state(
    pool: &PgPool,
    m: Marketplace,
    state: &str,
) -> Result<Option<Option<String>>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE oauth_states SET used_at = now()
          WHERE state = $1 AND marketplace = $2 AND used_at IS NULL
            AND created_at > now() - make_interval(mins => $3)
         RETURNING verifier",
    )
    .bind(state)
    .bind(m.as_str())
    .bind(STATE_TTL_MINUTES)
    .fetch_optional(pool)
    .await
}

/// What a new connection brings.
pub struct Connection<'a> {
    pub marketplace: Marketplace,
    pub external_user_id: &'a str,
    pub shop_id: Option<&'a str>,
    pub access_token: &'a str,
    pub access_expires_at: DateTime<Utc>,
    pub refresh_token: &'a str,
    pub refresh_expires_at: Option<DateTime<Utc>>,
    pub scopes: &'a [String],
    pub setup: Value,
}

/// Stores (or renews) a connection; returns the account id.
pub async fn save(
    pool: &PgPool,
    cipher: &TokenCipher,
    c: Connection<'_>,
) -> Result<i64, sqlx::Error> {
    let (key_id, access) = cipher.seal(c.access_token);
    let (_, refresh) = cipher.seal(c.refresh_token);
    sqlx::query_scalar(
        "INSERT INTO marketplace_accounts (marketplace, external_user_id, shop_id, access_token, refresh_token,
                                           token_key_id, access_expires_at, refresh_expires_at, scopes, setup)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (marketplace, external_user_id) DO UPDATE SET
            shop_id = excluded.shop_id, access_token = excluded.access_token, refresh_token = excluded.refresh_token,
            token_key_id = excluded.token_key_id, access_expires_at = excluded.access_expires_at,
            refresh_expires_at = excluded.refresh_expires_at, scopes = excluded.scopes, setup = excluded.setup,
            status = 'connected', status_reason = NULL, updated_at = now()
         RETURNING id",
    )
    .bind(c.marketplace.as_str())
    .bind(c.external_user_id)
    .bind(c.shop_id)
    .bind(access)
    .bind(refresh)
    .bind(key_id)
    .bind(c.access_expires_at)
    .bind(c.refresh_expires_at)
    .bind(c.scopes)
    .bind(c.setup)
    .fetch_one(pool)
    .await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Account {
    pub id: i64,
    pub marketplace: String,
    pub external_user_id: String,
    pub shop_id: Option<String>,
    pub status: String,
    pub setup: Value,
}

/// The connected account of a marketplace (the oldest, while there is one seller per install).
pub async fn connected(pool: &PgPool, m: Marketplace) -> Result<Option<Account>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, marketplace, external_user_id, shop_id, status, setup FROM marketplace_accounts
          WHERE marketplace = $1 AND status = 'connected' ORDER BY id LIMIT 1",
    )
    .bind(m.as_str())
    .fetch_optional(pool)
    .await
}

/// Access token, refresh token (both sealed), their key id, and the access token's expiry.
type SealedTokens = (Vec<u8>, Vec<u8>, String, DateTime<Utc>);

/// A usable eBay access token for `account`, refreshed first when it expires within a minute.
/// A refresh token eBay no longer takes marks the account broken and fails the job for good.
pub async fn ebay_access_token(
    pool: &PgPool,
    cipher: &TokenCipher,
    ebay: &EbayClient,
    account: i64,
) -> Result<String, JobError> {
    let mut tx = pool.begin().await?;
    // The row lock makes concurrent jobs of one account wait for a single refresh.
    let row: Option<SealedTokens> = sqlx::query_as(
        "SELECT access_token, refresh_token, token_key_id, access_expires_at FROM marketplace_accounts
          WHERE id = $1 AND status = 'connected' FOR UPDATE",
    )
    .bind(account)
    .fetch_optional(&mut *tx)
    .await?;
    let (access, refresh, key_id, expires) = row.ok_or_else(|| JobError::Permanent {
        class: "not_connected".into(),
        message: format!("account {account} is not connected"),
    })?;
    let open = |sealed: &[u8]| {
        cipher
            .open(&key_id, sealed)
            .map_err(|e| JobError::Permanent {
                class: "token_unreadable".into(),
                message: e.to_string(),
            })
    };
    if expires > Utc::now() + Duration::seconds(60) {
        return open(&access);
    }
    match ebay.refresh(&open(&refresh)?).await {
        Ok(t) => {
            let (new_key, sealed) = cipher.seal(&t.access_token);
            // Re-seal the refresh token too when the active key changed, so one key id fits both.
            let (_, refresh_sealed) = cipher.seal(&open(&refresh)?);
            sqlx::query(
                "UPDATE marketplace_accounts SET access_token = $2, refresh_token = $3, token_key_id = $4,
                        access_expires_at = now() + make_interval(secs => $5), updated_at = now() WHERE id = $1",
            )
            .bind(account)
            .bind(sealed)
            .bind(refresh_sealed)
            .bind(new_key)
            .bind(t.expires_in as f64)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(t.access_token)
        }
        Err(e @ MarketplaceError::AuthRevoked { .. }) => {
            sqlx::query("UPDATE marketplace_accounts SET status = 'broken', status_reason = $2, updated_at = now() WHERE id = $1")
                .bind(account)
                .bind(format!("reconnect needed: {e}"))
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Err(e.into())
        }
        Err(e) => Err(e.into()),
    }
}
