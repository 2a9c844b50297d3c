//! `/v1/auth`: password login, token refresh (rotating), and who am I.

use std::sync::Arc;

use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use jobs::auth::{self, AuthError, Tokens};

use crate::auth::{Seller, check_rate};
use crate::problem::Problem;
use crate::routes::Tag;
use crate::state::AppState;

#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct LoginRequest {
    #[oai(validator(min_length = 1, max_length = 320))]
    pub email: String,
    #[oai(validator(min_length = 1, max_length = 1024))]
    pub password: String,
}

#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct RefreshRequest {
    #[oai(validator(min_length = 1, max_length = 200))]
    pub refresh_token: String,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct Me {
    pub user_id: i64,
    pub tenant_id: i64,
    /// `seller` or `ops`.
    pub role: String,
}

impl From<&auth::User> for Me {
    fn from(u: &auth::User) -> Self {
        Self {
            user_id: u.id,
            tenant_id: u.tenant_id,
            role: u.role.as_str().into(),
        }
    }
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct TokenResponse {
    /// Send as `Authorization: Bearer <access_token>`.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds the access token lives.
    pub expires_in: i64,
    /// Single use: exchange it at /v1/auth/refresh for a new pair. Using one twice revokes the
    /// login's every refresh token.
    pub refresh_token: String,
    pub user: Me,
}

impl From<Tokens> for TokenResponse {
    fn from(t: Tokens) -> Self {
        Self {
            user: (&t.user).into(),
            access_token: t.access_token,
            token_type: "Bearer".into(),
            expires_in: t.expires_in,
            refresh_token: t.refresh_token,
        }
    }
}

impl From<AuthError> for Problem {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Database(e) => e.into(),
            AuthError::Invalid(d) => Problem::unprocessable(d),
            AuthError::EmailTaken => Problem::conflict(e.to_string()),
            e => Problem::unauthorized(e.to_string()),
        }
    }
}

pub struct AuthApi {
    pub st: Arc<AppState>,
}

#[OpenApi(tag = "Tag::Auth")]
impl AuthApi {
    /// Log in with e-mail and password
    ///
    /// Returns a short-lived access token and a single-use refresh token.
    #[oai(path = "/v1/auth/login", method = "post")]
    async fn login(
        &self,
        req: &poem::Request,
        body: Json<LoginRequest>,
    ) -> Result<Json<TokenResponse>, Problem> {
        let l = &self.st.limiters;
        let email = body.0.email.to_lowercase();
        let client = req
            .remote_addr()
            .as_socket_addr()
            .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |a| a.ip());
        check_rate(&l.login_clients, &client)
            .map_err(|_| Problem::too_many("too many login attempts from this address", 10))?;
        let wait = l.login_failures.wait(&email, client);
        if !wait.is_zero() {
            return Err(Problem::too_many(
                "too many failed logins for this e-mail from this address; wait and try again",
                wait.as_secs().max(1),
            ));
        }
        let s = &self.st.settings.auth;
        match auth::login(&self.st.pool, &self.st.signer, s, &email, &body.0.password).await {
            Ok(t) => {
                l.login_failures.succeeded(&email, client);
                Ok(Json(t.into()))
            }
            Err(e) => {
                if matches!(e, auth::AuthError::BadCredentials) {
                    l.login_failures.failed(&email, client);
                }
                Err(e.into())
            }
        }
    }

    /// Exchange a refresh token for a new access token and refresh token
    #[oai(path = "/v1/auth/refresh", method = "post")]
    async fn refresh(&self, body: Json<RefreshRequest>) -> Result<Json<TokenResponse>, Problem> {
        let s = &self.st.settings.auth;
        Ok(Json(
            auth::refresh(&self.st.pool, &self.st.signer, s, &body.0.refresh_token)
                .await?
                .into(),
        ))
    }

    /// The caller: user, tenant and role
    #[oai(path = "/v1/auth/me", method = "get")]
    async fn me(&self, auth: Seller) -> Json<Me> {
        Json((&auth.0).into())
    }
}
