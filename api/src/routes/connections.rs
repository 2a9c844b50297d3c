//! Marketplace connections: the OAuth consent flows (eBay's authorization code, Etsy's with PKCE),
//! Vinted's extension connect, and the list of connected accounts. Tokens never leave the
//! server: they are sealed at rest and no response carries them.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use jobs::accounts::{self, Connection};
use marketplaces::Marketplace;

use crate::auth::Seller;
use crate::problem::Problem;
use crate::routes::Tag;
use crate::state::AppState;

/// The plugin token's last use, for Vinted accounts (is the browser extension alive?). The
/// extension polls every few seconds and its use is recorded once a minute, so three minutes
/// without one means it is offline (no Vinted sale can be seen meanwhile).
const PLUGIN_SEEN: &str =
    "(SELECT max(last_used_at) FROM plugin_tokens p WHERE p.account_id = marketplace_accounts.id
                            AND p.revoked_at IS NULL) AS plugin_last_seen_at,
     CASE WHEN marketplace = 'vinted' THEN coalesce(
        (SELECT max(last_used_at) FROM plugin_tokens p WHERE p.account_id = marketplace_accounts.id
            AND p.revoked_at IS NULL) > now() - interval '3 minutes', false) END AS extension_online";

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct ConsentRedirect {
    /// Send the seller's browser here; the marketplace comes back to our callback.
    pub consent_url: String,
}

#[derive(Debug, Object, sqlx::FromRow)]
#[oai(skip_serializing_if_is_none)]
pub struct ConnectionView {
    pub account_id: i64,
    pub marketplace: String,
    pub status: String,
    pub status_reason: Option<String>,
    pub scopes: Vec<String>,
    pub access_expires_at: Option<DateTime<Utc>>,
    /// Vinted: when the browser extension last used its plugin token (null: never).
    pub plugin_last_seen_at: Option<DateTime<Utc>>,
    /// Vinted: whether the browser extension was seen in the last 3 minutes; while it is
    /// offline, sales on Vinted go unseen.
    pub extension_online: Option<bool>,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct Connections {
    pub connections: Vec<ConnectionView>,
}

pub struct ConnectionsApi {
    pub st: Arc<AppState>,
}

impl ConnectionsApi {
    async fn view(&self, tenant: i64, id: i64) -> Result<Json<ConnectionView>, Problem> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT id AS account_id, marketplace, status, status_reason, scopes, access_expires_at, {PLUGIN_SEEN}
               FROM marketplace_accounts WHERE id = $1 AND tenant_id = $2"
        )))
        .bind(id)
        .bind(tenant)
        .fetch_optional(&self.st.pool)
        .await?
        .map(Json)
        .ok_or_else(|| Problem::not_found("no such account"))
    }
}

/// Both are on every approved consent's redirect; their absence means it was declined.
fn code_and_state(
    code: Option<String>,
    state: Option<String>,
) -> Result<(String, String), Problem> {
    let (code, state) = code.zip(state).ok_or_else(|| {
        Problem::bad_request("code and state are required (was the consent declined?)")
    })?;
    // Ours are URL-safe base64 (accounts::new_state); anything else cannot be one of them.
    let ours = |s: &str| {
        (1..=128).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !ours(&state) || code.len() > 2048 || code.chars().any(char::is_control) {
        return Err(Problem::bad_request(
            "state is unknown, already used or expired, or the code is malformed; start again at /v1/connections/{marketplace}/connect",
        ));
    }
    Ok((code, state))
}

/// A marketplace refusing our code (or our app) is the request's problem; silence is theirs.
fn refused(name: &'static str) -> impl Fn(marketplaces::MarketplaceError) -> Problem {
    move |e| match e.class() {
        "auth_revoked" | "rejected" => {
            Problem::bad_request(format!("{name} refused the authorization: {e}"))
        }
        _ => Problem::unavailable(format!("{name} did not answer: {e}")),
    }
}

#[OpenApi(tag = "Tag::Connections")]
impl ConnectionsApi {
    /// Start connecting an eBay account
    #[oai(path = "/v1/connections/ebay/connect", method = "get")]
    async fn ebay_connect(&self, auth: Seller) -> Result<Json<ConsentRedirect>, Problem> {
        let state =
            accounts::new_state(&self.st.pool, auth.tenant(), Marketplace::Ebay, None).await?;
        Ok(Json(ConsentRedirect {
            consent_url: self
                .st
                .market
                .ebay
                .consent_url(&state)
                .map_err(refused("eBay"))?,
        }))
    }

    /// eBay's redirect after consent: exchanges the code and stores the connection
    #[oai(path = "/oauth/ebay/callback", method = "get")]
    async fn ebay_callback(
        &self,
        code: Query<Option<String>>,
        state: Query<Option<String>>,
    ) -> Result<Json<ConnectionView>, Problem> {
        let (code, state) = code_and_state(code.0, state.0)?;
        let Some(taken) = accounts::take_state(&self.st.pool, Marketplace::Ebay, &state).await?
        else {
            return Err(Problem::bad_request(
                "state is unknown, already used or expired; start again at /v1/connections/ebay/connect",
            ));
        };
        let t = self
            .st
            .market
            .ebay
            .exchange_code(&code)
            .await
            .map_err(|e| match e.class() {
                "auth_revoked" | "rejected" => {
                    Problem::bad_request(format!("eBay refused the code: {e}"))
                }
                _ => Problem::unavailable(format!("eBay did not answer: {e}")),
            })?;
        let scopes: Vec<String> = marketplaces::ebay::SCOPES
            .iter()
            .map(|s| s.to_string())
            .collect();
        // The eBay user the notifications name (orders, account deletion). Without it the
        // account still works; only pushes cannot be matched to it (polling still sees sales).
        let setup = match self.st.market.ebay.user(&t.access_token).await {
            Ok(u) => serde_json::json!({"ebay_user_id": u.user_id, "ebay_username": u.username}),
            Err(e) => {
                tracing::warn!(error = %e, "eBay getUser failed; notifications will not match this account");
                serde_json::json!({})
            }
        };
        let now = Utc::now();
        // eBay gives no user id with the tokens: one eBay account per tenant.
        let id = accounts::save(
            &self.st.pool,
            &self.st.market.cipher,
            Connection {
                tenant_id: taken.tenant_id,
                marketplace: Marketplace::Ebay,
                external_user_id: "ebay-seller",
                shop_id: None,
                access_token: &t.access_token,
                access_expires_at: now + chrono::Duration::seconds(t.expires_in),
                refresh_token: &t.refresh_token,
                refresh_expires_at: Some(
                    now + chrono::Duration::seconds(t.refresh_token_expires_in),
                ),
                scopes: &scopes,
                setup,
            },
        )
        .await?;
        self.view(taken.tenant_id, id).await
    }

    /// Start connecting an Etsy shop (OAuth with PKCE; the verifier stays on the server)
    #[oai(path = "/v1/connections/etsy/connect", method = "get")]
    async fn etsy_connect(&self, auth: Seller) -> Result<Json<ConsentRedirect>, Problem> {
        use marketplaces::etsy::{Pkce, SCOPES};
        let pkce = Pkce::new();
        let state = accounts::new_state(
            &self.st.pool,
            auth.tenant(),
            Marketplace::Etsy,
            Some(&pkce.verifier),
        )
        .await?;
        Ok(Json(ConsentRedirect {
            consent_url: self
                .st
                .market
                .etsy
                .consent_url(&state, &pkce, SCOPES)
                .map_err(refused("Etsy"))?,
        }))
    }

    /// Etsy's redirect after consent: exchanges the code with the stored verifier
    #[oai(path = "/oauth/etsy/callback", method = "get")]
    async fn etsy_callback(
        &self,
        code: Query<Option<String>>,
        state: Query<Option<String>>,
    ) -> Result<Json<ConnectionView>, Problem> {
        let (code, state) = code_and_state(code.0, state.0)?;
        let Some(accounts::TakenState {
            tenant_id,
            verifier: Some(verifier),
        }) = accounts::take_state(&self.st.pool, Marketplace::Etsy, &state).await?
        else {
            return Err(Problem::bad_request(
                "state is unknown, already used or expired; start again at /v1/connections/etsy/connect",
            ));
        };
        let etsy = &self.st.market.etsy;
        let t = etsy
            .exchange_code(&code, &verifier)
            .await
            .map_err(refused("Etsy"))?;
        let me = etsy
            .get_me(&t.access_token)
            .await
            .map_err(refused("Etsy"))?;
        let scopes: Vec<String> = marketplaces::etsy::SCOPES
            .iter()
            .map(|s| s.to_string())
            .collect();
        let now = Utc::now();
        let (user, shop) = (me.user_id.to_string(), me.shop_id.map(|s| s.to_string()));
        let id = accounts::save(
            &self.st.pool,
            &self.st.market.cipher,
            Connection {
                tenant_id,
                marketplace: Marketplace::Etsy,
                external_user_id: &user,
                shop_id: shop.as_deref(),
                access_token: &t.access_token,
                access_expires_at: now + chrono::Duration::seconds(t.expires_in as i64),
                refresh_token: &t.refresh_token,
                // Etsy refresh tokens live 90 days and rotate on every refresh.
                refresh_expires_at: Some(now + chrono::Duration::days(90)),
                scopes: &scopes,
                setup: serde_json::json!({}),
            },
        )
        .await?;
        self.view(tenant_id, id).await
    }

    /// Disconnect an account: its tokens are deleted; its jobs fail until it is connected again
    #[oai(path = "/v1/connections/:id/disconnect", method = "post")]
    async fn disconnect(
        &self,
        auth: Seller,
        id: poem_openapi::param::Path<i64>,
    ) -> Result<Json<ConnectionView>, Problem> {
        let n = sqlx::query(
            "UPDATE marketplace_accounts SET status = 'disconnected', status_reason = 'disconnected by the seller',
                    access_token = NULL, refresh_token = NULL, access_expires_at = NULL, updated_at = now()
              WHERE id = $1 AND tenant_id = $2",
        )
        .bind(id.0)
        .bind(auth.tenant())
        .execute(&self.st.pool)
        .await?
        .rows_affected();
        if n == 0 {
            return Err(Problem::not_found("no such account"));
        }
        self.view(auth.tenant(), id.0).await
    }

    /// Connected marketplace accounts: status, scopes, expiry (never their tokens)
    #[oai(path = "/v1/connections", method = "get")]
    async fn list(&self, auth: Seller) -> Result<Json<Connections>, Problem> {
        let connections: Vec<ConnectionView> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT id AS account_id, marketplace, status, status_reason, scopes, access_expires_at, {PLUGIN_SEEN}
               FROM marketplace_accounts WHERE tenant_id = $1 ORDER BY id"
        )))
        .bind(auth.tenant())
        .fetch_all(&self.st.pool)
        .await?;
        Ok(Json(Connections { connections }))
    }
}
