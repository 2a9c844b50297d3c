//! Marketplace connections: OAuth `state` values (single use, expiring), accounts with their
//! tokens sealed at rest ([`crate::secrets`]), and access tokens handed to jobs (refreshed first
//! when they are about to expire, under a row lock so concurrent jobs refresh once).

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use sqlx::PgPool;

use crate::context::Marketplaces;
use crate::secrets::TokenCipher;
use engine::JobError;
use marketplaces::Marketplace;
use marketplaces::MarketplaceError;

/// How long a consent may take before its `state` expires.
const STATE_TTL_MINUTES: i32 = 10;

/// A new single-use `state` for a consent redirect of `tenant` (with Etsy's PKCE verifier, kept
/// here). The callback is public: the state is what binds it to the tenant that started it.
pub async fn new_state(
    pool: &PgPool,
    tenant: i64,
    m: Marketplace,
    verifier: Option<&str>,
) -> Result<String, sqlx::Error> {
    // 24 random bytes, base64url: `oauth2`'s CSRF token, checked by `take_state`.
    let state = oauth2::CsrfToken::new_random_len(24).into_secret();
    sqlx::query(
        "INSERT INTO oauth_states (state, marketplace, verifier, tenant_id) VALUES ($1, $2, $3, $4)",
    )
    .bind(&state)
    .bind(m.as_str())
    .bind(verifier)
    .bind(tenant)
        .execute(pool)
        .await?;
    Ok(state)
}

/// The tenant that started a consent, and its PKCE verifier.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TakenState {
    pub tenant_id: i64,
    pub verifier: Option<String>,
}

/// Consumes a `state`: Some once, within its lifetime, for its marketplace; None for a state
/// that is unknown, replayed, expired or from another marketplace.
pub async fn take_state(
    pool: &PgPool,
    m: Marketplace,
    state: &str,
) -> Result<Option<TakenState>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE oauth_states SET used_at = now()
          WHERE state = $1 AND marketplace = $2 AND used_at IS NULL
            AND created_at > now() - make_interval(mins => $3)
         RETURNING tenant_id, verifier",
    )
    .bind(state)
    .bind(m.as_str())
    .bind(STATE_TTL_MINUTES)
    .fetch_optional(pool)
    .await
}

/// What a new connection brings.
pub struct Connection<'a> {
    pub tenant_id: i64,
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

/// Stores (or renews) a connection, schedules its first refresh, and releases the jobs held
/// while it was broken; returns the account id.
pub async fn save(
    pool: &PgPool,
    cipher: &TokenCipher,
    c: Connection<'_>,
) -> Result<i64, sqlx::Error> {
    let (key_id, access) = cipher.seal(c.access_token);
    let (_, refresh) = cipher.seal(c.refresh_token);
    let mut tx = pool.begin().await?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO marketplace_accounts (marketplace, external_user_id, shop_id, access_token, refresh_token,
                                           token_key_id, access_expires_at, refresh_expires_at, scopes, setup,
                                           tenant_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (tenant_id, marketplace, external_user_id) DO UPDATE SET
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
    .bind(c.tenant_id)
    .fetch_one(&mut *tx)
    .await?;
    schedule_refresh(&mut tx, Some(c.tenant_id), id, c.access_expires_at)
        .await
        .map_err(|e| match e {
            engine::queue::QueueError::Database(e) => e,
            other => sqlx::Error::Protocol(other.to_string()),
        })?;
    tx.commit().await?;
    release_held_jobs(pool, c.tenant_id).await?;
    Ok(id)
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Account {
    pub id: i64,
    pub tenant_id: Option<i64>,
    pub marketplace: String,
    pub external_user_id: String,
    pub shop_id: Option<String>,
    pub status: String,
    pub setup: Value,
}

impl Account {
    /// The Etsy shop id every shop-scoped Etsy call needs; an account without one cannot
    /// publish or sell until the seller opens a shop and reconnects (permanent).
    pub fn etsy_shop(&self) -> Result<u64, engine::JobError> {
        self.shop_id
            .as_deref()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| engine::JobError::Permanent {
                class: "not_connected".into(),
                message: format!(
                    "Etsy account {} has no shop: open a shop on Etsy, then reconnect",
                    self.id
                ),
            })
    }
}

/// `tenant`'s connected account on a marketplace (its oldest, if it connected several).
pub async fn connected(
    pool: &PgPool,
    tenant: i64,
    m: Marketplace,
) -> Result<Option<Account>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, tenant_id, marketplace, external_user_id, shop_id, status, setup FROM marketplace_accounts
          WHERE tenant_id = $2 AND marketplace = $1 AND status = 'connected' ORDER BY id LIMIT 1",
    )
    .bind(m.as_str())
    .bind(tenant)
    .fetch_optional(pool)
    .await
}

/// An account by id, whatever its status.
pub async fn get(pool: &PgPool, id: i64) -> Result<Option<Account>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, tenant_id, marketplace, external_user_id, shop_id, status, setup FROM marketplace_accounts WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// The connected account a job of `tenant` on marketplace `m` works for; while the connection
/// is broken the job is held (snoozed until the seller reconnects), and without one it fails
/// telling the seller to connect one.
pub async fn require_connected(
    pool: &PgPool,
    tenant: i64,
    m: Marketplace,
) -> Result<Account, JobError> {
    if let Some(held) = held_if_broken(pool, tenant, m).await? {
        return Err(held);
    }
    connected(pool, tenant, m)
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
    if let Some(m) = marketplaces::Marketplace::parse(&marketplace) {
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

/// A refresh job runs this long before the access token expires.
pub const REFRESH_LEAD: Duration = Duration::minutes(10);

/// Enqueues the `refresh_token` job of `account` for `REFRESH_LEAD` before `expires_at`, in the
/// caller's transaction. One job per account and expiry (the idempotency key), however many
/// times this is called for the same token.
pub async fn schedule_refresh(
    conn: &mut sqlx::PgConnection,
    tenant: Option<i64>,
    account: i64,
    expires_at: DateTime<Utc>,
) -> Result<(), engine::queue::QueueError> {
    use crate::kinds::RefreshToken;
    use engine::{Job, Kind};
    let job = engine::queue::NewJob {
        kind: RefreshToken::KIND,
        args: serde_json::json!({ "account_id": account }),
        priority: 0,
        run_at: Some(expires_at - REFRESH_LEAD),
        max_attempts: RefreshToken::POLICY.max_attempts,
        idempotency_key: Some(format!(
            "refresh_token:{account}:{}",
            expires_at.timestamp()
        )),
    };
    engine::queue::insert_for(conn, tenant, &[job]).await?;
    Ok(())
}

/// Jobs of `tenant` held because its connection was broken run now (it is connected again).
pub async fn release_held_jobs(pool: &PgPool, tenant: i64) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE jobs SET run_at = now()
          WHERE tenant_id = $1 AND state = 'available' AND last_error->>'class' = $2",
    )
    .bind(tenant)
    .bind(ACCOUNT_BROKEN)
    .execute(pool)
    .await?
    .rows_affected())
}

/// Error class of a job held because its account's connection is broken.
pub const ACCOUNT_BROKEN: &str = "account_broken";
/// How long such a job waits before looking again (reconnecting releases it at once).
pub const HELD_FOR: std::time::Duration = std::time::Duration::from_secs(300);

/// The error that holds a job while `tenant`'s connection to `m` is broken (None when it is not).
pub async fn held_if_broken(
    pool: &PgPool,
    tenant: i64,
    m: Marketplace,
) -> Result<Option<JobError>, sqlx::Error> {
    let reason: Option<Option<String>> = sqlx::query_scalar(
        "SELECT status_reason FROM marketplace_accounts
          WHERE tenant_id = $1 AND marketplace = $2 AND status = 'broken' ORDER BY id LIMIT 1",
    )
    .bind(tenant)
    .bind(m.as_str())
    .fetch_optional(pool)
    .await?;
    Ok(reason.map(|r| JobError::Snooze {
        after: HELD_FOR,
        class: ACCOUNT_BROKEN.into(),
        message: format!(
            "paused: the {} connection is broken ({}); reconnect at /v1/connections/{}/connect",
            m.as_str(),
            r.unwrap_or_default(),
            m.as_str()
        ),
    }))
}

/// Refreshes `account`'s tokens unless its access token still has `min_remaining` to live.
/// The row lock serialises refreshes of one account: a second one waits, then finds the token
/// fresh and does nothing. Etsy's rotated refresh token is written in the same transaction that
/// read the old one under the lock, so no refresh can present a consumed token.
pub async fn refresh_account(
    pool: &PgPool,
    market: &crate::context::Marketplaces,
    account: i64,
    min_remaining: Duration,
) -> Result<Value, JobError> {
    let cipher = &market.cipher;
    let mut tx = pool.begin().await?;
    #[allow(clippy::type_complexity)]
    let row: Option<(
        String,
        String,
        Option<Vec<u8>>,
        Option<String>,
        Option<DateTime<Utc>>,
        Option<i64>,
    )> = sqlx::query_as(
        "SELECT marketplace, status, refresh_token, token_key_id, access_expires_at, tenant_id
               FROM marketplace_accounts WHERE id = $1 FOR UPDATE",
    )
    .bind(account)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((marketplace, status, Some(refresh), Some(key_id), expires, tenant)) = row else {
        return Err(JobError::Permanent {
            class: "not_connected".into(),
            message: format!("account {account} does not exist or has no OAuth tokens"),
        });
    };
    if status != "connected" {
        return Ok(serde_json::json!({ "refreshed": false, "status": status }));
    }
    if expires.is_some_and(|e| e > Utc::now() + min_remaining) {
        return Ok(serde_json::json!({ "refreshed": false, "reason": "fresh" }));
    }
    let old_refresh = cipher
        .open(&key_id, &refresh)
        .map_err(|e| JobError::Permanent {
            class: "token_unreadable".into(),
            message: e.to_string(),
        })?;
    let res = match marketplace.as_str() {
        "ebay" => market
            .ebay
            .refresh(&old_refresh)
            .await
            .map(|t| (t.access_token, None, t.expires_in)),
        "etsy" => market
            .etsy
            .refresh(&old_refresh)
            .await
            .map(|t| (t.access_token, Some(t.refresh_token), t.expires_in as i64)),
        other => {
            return Err(JobError::permanent(format!(
                "{other} accounts have no OAuth tokens to refresh"
            )));
        }
    };
    match res {
        Ok((access, new_refresh, expires_in)) => {
            let (new_key, access_sealed) = cipher.seal(&access);
            let (_, refresh_sealed) = cipher.seal(new_refresh.as_deref().unwrap_or(&old_refresh));
            let expires_at = Utc::now() + Duration::seconds(expires_in);
            sqlx::query(
                "UPDATE marketplace_accounts SET access_token = $2, refresh_token = $3, token_key_id = $4,
                        access_expires_at = $5, updated_at = now() WHERE id = $1",
            )
            .bind(account)
            .bind(access_sealed)
            .bind(refresh_sealed)
            .bind(new_key)
            .bind(expires_at)
            .execute(&mut *tx)
            .await?;
            schedule_refresh(&mut tx, tenant, account, expires_at)
                .await
                .map_err(JobError::retry)?;
            tx.commit().await?;
            Ok(serde_json::json!({ "refreshed": true, "access_expires_at": expires_at }))
        }
        Err(e @ MarketplaceError::AuthRevoked { .. }) => {
            sqlx::query(
                "UPDATE marketplace_accounts SET status = 'broken', status_reason = $2, updated_at = now()
                  WHERE id = $1",
            )
            .bind(account)
            .bind(format!("reconnect needed: {e}"))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            tracing::warn!(account, "refresh token revoked: connection marked broken");
            Err(e.into())
        }
        Err(e) => Err(e.into()),
    }
}
