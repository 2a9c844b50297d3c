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

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Instant;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use poem::http::{StatusCode, header};
use poem::{Request, RequestBody};
use poem_openapi::registry::{MetaSecurityScheme, Registry};
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};

pub use jobs::auth::{Role, User};

use crate::AppState;

/// The name of the security scheme in the OpenAPI document.
pub const SCHEME: &str = "bearer";

/// Per-key request budgets (users after login; e-mails at login, against password guessing).
pub struct Limiters {
    pub users: DefaultKeyedRateLimiter<i64>,
    /// Login attempts per client address, whatever the e-mail (one client trying many e-mails).
    pub login_clients: DefaultKeyedRateLimiter<std::net::IpAddr>,
    /// Failed logins per (e-mail, client address).
    pub login_failures: LoginFailures,
}

impl Limiters {
    pub fn new(per_s: u32, burst: u32, logins_per_client_per_min: u32) -> Self {
        let nz = |n: u32| NonZeroU32::new(n.max(1)).expect("max(1) is non-zero");
        let per_client = nz(logins_per_client_per_min);
        Self {
            users: RateLimiter::keyed(Quota::per_second(nz(per_s)).allow_burst(nz(burst))),
            login_clients: RateLimiter::keyed(
                Quota::per_minute(per_client).allow_burst(per_client),
            ),
            login_failures: LoginFailures::default(),
        }
    }
}

/// Growing delays after failed logins, per (e-mail, client address): an attacker's failures hold
/// up the attacker's address only, never the owner typing the right password elsewhere (a lock
/// per e-mail let anyone lock any seller out).
#[derive(Default)]
pub struct LoginFailures {
    seen: std::sync::Mutex<std::collections::HashMap<(String, std::net::IpAddr), (u32, Instant)>>,
}

impl LoginFailures {
    /// Failures allowed before delays start.
    const FREE: u32 = 5;
    const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(900);
    /// Entries kept at most; the oldest quiet ones go first.
    const KEEP: usize = 100_000;

    fn wait_after(failures: u32) -> std::time::Duration {
        if failures < Self::FREE {
            return std::time::Duration::ZERO;
        }
        std::time::Duration::from_secs(1u64 << (failures - Self::FREE).min(10)).min(Self::MAX_WAIT)
    }

    /// How long this pair must still wait before its next attempt (zero: go ahead).
    pub fn wait(&self, email: &str, ip: std::net::IpAddr) -> std::time::Duration {
        let seen = self.seen.lock().expect("login failures lock");
        match seen.get(&(email.to_string(), ip)) {
            Some((n, last)) => Self::wait_after(*n).saturating_sub(last.elapsed()),
            None => std::time::Duration::ZERO,
        }
    }

    pub fn failed(&self, email: &str, ip: std::net::IpAddr) {
        let mut seen = self.seen.lock().expect("login failures lock");
        if seen.len() >= Self::KEEP {
            let hour = std::time::Duration::from_secs(3600);
            seen.retain(|_, (_, last)| last.elapsed() < hour);
        }
        let e = seen
            .entry((email.to_string(), ip))
            .or_insert((0, Instant::now()));
        e.0 += 1;
        e.1 = Instant::now();
    }

    pub fn succeeded(&self, email: &str, ip: std::net::IpAddr) {
        self.seen
            .lock()
            .expect("login failures lock")
            .remove(&(email.to_string(), ip));
    }
}

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
