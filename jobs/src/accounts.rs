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
use crate::marketplace::Marketplaces;
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

/// An account by id, whatever its status.
pub async fn get(pool: &PgPool, id: i64) -> Result<Option<Account>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, marketplace, external_user_id, shop_id, status, setup FROM marketplace_accounts WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// The connected account a job of marketplace `m` works for, or a permanent error telling the
/// seller to connect one.
pub async fn require_connected(pool: &PgPool, m: Marketplace) -> Result<Account, JobError> {
    connected(pool, m)
        .await?
        .ok_or_else(|| JobError::Permanent {
            class: "not_connected".into(),
            message: format!(
                "no connected {} account: connect one at /v1/connections/{}/connect",
                m.as_str(),
                m.as_str()
            ),
        })
}

/// Adds keys to an account's listing setup (profiles read once from the marketplace).
pub async fn merge_setup(pool: &PgPool, id: i64, keys: Value) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE marketplace_accounts SET setup = setup || $2, updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(keys)
    .execute(pool)
    .await
    .map(drop)
}

/// Marketplace, access token, refresh token (both sealed), their key id, the access expiry.
type SealedTokens = (String, Vec<u8>, Vec<u8>, String, DateTime<Utc>);

/// A refreshed pair: Etsy rotates the refresh token on every refresh, eBay keeps it.
struct Refreshed {
    access_token: String,
    expires_in: u64,
    refresh_token: Option<String>,
}

/// A usable access token for `account`, refreshed first when it expires within a minute.
/// The row lock makes concurrent jobs of one account wait for a single refresh, and a rotated
/// refresh token (Etsy) is stored in the same transaction that read the old one, so a crash
/// never leaves the connection holding a consumed token. A refresh token the marketplace no
/// longer takes marks the account broken and fails the job for good.
pub async fn access_token(
    pool: &PgPool,
    market: &Marketplaces,
    account: i64,
) -> Result<String, JobError> {
    let cipher = &market.cipher;
    let mut tx = pool.begin().await?;
    let row: Option<SealedTokens> = sqlx::query_as(
        "SELECT marketplace, access_token, refresh_token, token_key_id, access_expires_at FROM marketplace_accounts
          WHERE id = $1 AND status = 'connected' FOR UPDATE",
    )
    .bind(account)
    .fetch_optional(&mut *tx)
    .await?;
    let (marketplace, access, refresh, key_id, expires) =
        row.ok_or_else(|| JobError::Permanent {
            class: "not_connected".into(),
            message: format!("account {account} is not connected"),
        })?;
    // The run acts for this seller from here on: its requests count against the seller's budget.
    if let Some(m) = crate::domain::Marketplace::parse(&marketplace) {
        crate::limits::set_seller(m, account);
    }
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
    let old_refresh = open(&refresh)?;
    let refreshed = match marketplace.as_str() {
        "ebay" => market.ebay.refresh(&old_refresh).await.map(|t| Refreshed {
            access_token: t.access_token,
            expires_in: t.expires_in.max(0) as u64,
            refresh_token: None,
        }),
        "etsy" => market.etsy.refresh(&old_refresh).await.map(|t| Refreshed {
            access_token: t.access_token,
            expires_in: t.expires_in,
            refresh_token: Some(t.refresh_token),
        }),
        other => {
            return Err(JobError::permanent(format!(
                "{other} accounts have no OAuth tokens"
            )));
        }
    };
    match refreshed {
        Ok(t) => {
            let (new_key, sealed) = cipher.seal(&t.access_token);
            // Re-seal the refresh token too (rotated or not), so one key id fits both.
            let (_, refresh_sealed) =
                cipher.seal(t.refresh_token.as_deref().unwrap_or(&old_refresh));
            let rotated = t.refresh_token.is_some();
            sqlx::query(
                "UPDATE marketplace_accounts SET access_token = $2, refresh_token = $3, token_key_id = $4,
                        access_expires_at = now() + make_interval(secs => $5),
                        refresh_expires_at = CASE WHEN $6 THEN now() + interval '90 days' ELSE refresh_expires_at END,
                        updated_at = now() WHERE id = $1",
            )
            .bind(account)
            .bind(sealed)
            .bind(refresh_sealed)
            .bind(new_key)
            .bind(t.expires_in as f64)
            .bind(rotated)
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

/// The marketplace refused a token before its recorded expiry: refresh on the next use.
pub async fn mark_access_expired(pool: &PgPool, account: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE marketplace_accounts SET access_expires_at = now() WHERE id = $1")
        .bind(account)
        .execute(pool)
        .await
        .map(drop)
}
