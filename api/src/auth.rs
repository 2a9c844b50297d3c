//! Who is calling: bearer JWT access tokens (see `jobs::auth`), roles and per-user rate limits.
//!
//! # Protecting a route
//!
//! - **poem-openapi operations** take a guard parameter; it appears in `/openapi.json` as the
//!   `bearer` security scheme:
//!   - [`Seller`]: any logged-in user (seller or ops), acting inside their own tenant. Scope every
//!     query by `user.tenant_id`; another tenant's object is a 404, never a 403.
//!   - [`Ops`]: ops users only (cross-tenant views, queue controls); others get 403.
//!
//!   ```ignore
//!   async fn list(&self, auth: Seller, ...) -> Result<..., Problem> {
//!       let tenant = auth.0.tenant_id; ...
//!   }
//!   ```
//! - **plain poem handlers** (HTML pages, device-token routes): `let user = authenticate(&req).await?;`
//!   then `require_ops(&user)?` where needed. Both return problem+json errors.
//!
//! Every guard also applies the per-user rate limit (`api.user_rate_per_s` / `user_rate_burst`):
//! over it, 429 with `Retry-After`. Missing, malformed, expired or unknown-key tokens: 401 with
//! `WWW-Authenticate: Bearer`.

use std::sync::Arc;

use governor::DefaultKeyedRateLimiter;
use governor::clock::{Clock, DefaultClock};
use poem::http::{StatusCode, header};
use poem::{Request, RequestBody};
use poem_openapi::registry::{MetaSecurityScheme, Registry};
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};

pub use jobs::auth::{Role, User};

use crate::state::AppState;

/// The name of the security scheme in the OpenAPI document.
pub const SCHEME: &str = "bearer";

fn problem(status: StatusCode, detail: &str) -> poem::Response {
    let title = status.canonical_reason().unwrap_or("Error");
    let body = serde_json::json!({
        "type": format!("https://stoflow.dev/problems/{}", title.to_lowercase().replace(' ', "-")),
        "title": title,
        "status": status.as_u16(),
        "detail": detail,
    });
    poem::Response::builder()
        .status(status)
        .content_type("application/problem+json")
        .body(body.to_string())
}

pub fn unauthorized(detail: &str) -> poem::Error {
    let mut r = problem(StatusCode::UNAUTHORIZED, detail);
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    poem::Error::from_response(r)
}

pub fn forbidden(detail: &str) -> poem::Error {
    poem::Error::from_response(problem(StatusCode::FORBIDDEN, detail))
}

pub fn too_many(wait: std::time::Duration) -> poem::Error {
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    let mut r = problem(
        StatusCode::TOO_MANY_REQUESTS,
        &format!("request rate limit reached; retry in {secs} s"),
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
    poem::Error::from_response(r)
}

/// Takes one request from `key`'s budget, or 429.
pub fn check_rate<K: Clone + std::hash::Hash + Eq>(
    limiter: &DefaultKeyedRateLimiter<K>,
    key: &K,
) -> poem::Result<()> {
    limiter
        .check_key(key)
        .map_err(|not_until| too_many(not_until.wait_time_from(DefaultClock::default().now())))
}

/// The caller of `req`, from its `Authorization: Bearer` access token, within the rate limit.
pub async fn authenticate(req: &Request) -> poem::Result<User> {
    let st = req
        .data::<Arc<AppState>>()
        .ok_or_else(|| poem::Error::from_status(StatusCode::INTERNAL_SERVER_ERROR))?;
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            unauthorized("log in at /v1/auth/login and send Authorization: Bearer <access_token>")
        })?;
    let token = match value.split_once(' ') {
        Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t.trim(),
        _ => {
            return Err(unauthorized(
                "the Authorization header must be \"Bearer <access_token>\"",
            ));
        }
    };
    let user = st
        .signer
        .verify(token)
        .map_err(|e| unauthorized(&e.to_string()))?;
    check_rate(&st.limiters.users, &user.id)?;
    Ok(user)
}

pub fn require_ops(user: &User) -> poem::Result<()> {
    if user.is_ops() {
        Ok(())
    } else {
        Err(forbidden("this operation is for ops users"))
    }
}

fn register_scheme(registry: &mut Registry) {
    registry.create_security_scheme(
        SCHEME,
        MetaSecurityScheme {
            ty: "http",
            description: Some("Access token from POST /v1/auth/login (JWT, short-lived)."),
            name: None,
            key_in: None,
            scheme: Some("bearer"),
            bearer_format: Some("JWT"),
            flows: None,
            openid_connect_url: None,
        },
    );
}

macro_rules! guard {
    ($(#[$doc:meta])* $name:ident, $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name(pub User);

        impl<'a> ApiExtractor<'a> for $name {
            const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::SecurityScheme];
            type ParamType = ();
            type ParamRawType = ();

            fn register(registry: &mut Registry) {
                register_scheme(registry);
            }

            fn security_schemes() -> Vec<&'static str> {
                vec![SCHEME]
            }

            async fn from_request(
                req: &'a Request,
                _body: &mut RequestBody,
                _opts: ExtractParamOptions<Self::ParamType>,
            ) -> poem::Result<Self> {
                let user = authenticate(req).await?;
                let check: fn(&User) -> poem::Result<()> = $check;
                check(&user)?;
                Ok(Self(user))
            }
        }
    };
}

guard!(
    /// Any logged-in user, acting inside their own tenant (`.0.tenant_id`).
    Seller,
    |_| Ok(())
);
guard!(
    /// An ops user (cross-tenant views, queue controls); anyone else gets 403.
    Ops,
    require_ops
);

impl Seller {
    pub fn tenant(&self) -> i64 {
        self.0.tenant_id
    }
    /// None for ops users (they see every tenant's jobs), the caller's tenant otherwise.
    pub fn job_scope(&self) -> Option<i64> {
        (!self.0.is_ops()).then_some(self.0.tenant_id)
    }
}

/// Who is acting, for the audit log: the user the access token names.
#[derive(Debug, Clone)]
pub struct Actor(pub String);

impl Actor {
    pub fn user(u: &User) -> String {
        format!("user:{} ({})", u.id, u.role.as_str())
    }

    /// The actor the guard attached to this request.
    pub fn of(req: &Request) -> String {
        req.extensions()
            .get::<Actor>()
            .map(|a| a.0.clone())
            .unwrap_or_else(|| "unknown".to_string())
    }
}
