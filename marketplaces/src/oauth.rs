//! The OAuth flows (consent URL with PKCE and state, code exchange, refresh, client
//! credentials) on the `oauth2` crate, with our HTTP path underneath: every token request goes
//! through [`super::http::send`], so it takes its budget from the fleet-wide limiter, feeds the circuit
//! breaker, and a non-2xx answer is classified by our taxonomy ([`super::error::classify`]) before
//! `oauth2` sees it. `oauth2` therefore only ever parses successful answers; the marketplaces'
//! own error shapes (and `invalid_grant` → reconnect) stay ours: its `BasicErrorResponse` reads
//! only RFC 6749 bodies (`{"error": …}`), not eBay's `{"errors":[{"errorId": …}]}` or Etsy's
//! arrays, and drops the status and `retry-after` that tell a 5xx or a 429 from a refusal.
//!
//! What the crate does not do, and stays here or in the clients (measured against the
//! simulators and shared/marketplaces.md):
//! - eBay's `redirect_uri` is the app's RuName, not a URL, and `oauth2::RedirectUrl` only takes
//!   URLs (`RedirectUrl::new("Stoflow-Stoflow-SimPRD-abcdef")` fails: "relative URL without a
//!   base"), so it goes in as an extra parameter of the consent URL and the code exchange.
//! - Token answers are read as `StandardTokenResponse`, where `refresh_token` and `expires_in`
//!   are optional; we require what each marketplace documents (eBay's code exchange and every
//!   Etsy answer carry a refresh token, every answer an expiry) and call a missing one the
//!   marketplace misbehaving, as a body that does not parse always was. eBay's extra
//!   `refresh_token_expires_in` is an extra token field. `token_type` is required by `oauth2`;
//!   both marketplaces send it ("User Access Token", "Bearer").
//! - Consent URLs are form-encoded by `oauth2` (spaces as `+`); Etsy documents `%20` between
//!   scopes, so its client rewrites them.

use std::future::Future;
use std::pin::Pin;

use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
    BasicTokenType,
};
use oauth2::{
    EndpointNotSet, EndpointSet, ExtraTokenFields, HttpRequest, HttpResponse, RequestTokenError,
    StandardRevocableToken, StandardTokenResponse,
};

use super::error::MarketplaceError;
use crate::marketplace::Marketplace;

/// A token-endpoint answer with `EF` as its marketplace's extra fields.
pub type TokenResponse<EF> = StandardTokenResponse<EF, BasicTokenType>;

/// An `oauth2` client with a consent page and a token endpoint (no device, introspection or
/// revocation endpoints).
pub type Client<EF> = oauth2::Client<
    BasicErrorResponse,
    TokenResponse<EF>,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// An `oauth2` client for `m`'s endpoints, or why the configured URLs are not URLs (reported
/// on use as [`MarketplaceError::Unavailable`], as a request that cannot be built always was).
pub fn client<EF: ExtraTokenFields>(
    client_id: &str,
    auth_url: String,
    token_url: String,
) -> Result<Client<EF>, String> {
    let auth = oauth2::AuthUrl::new(auth_url.clone()).map_err(|e| format!("{auth_url}: {e}"))?;
    let token =
        oauth2::TokenUrl::new(token_url.clone()).map_err(|e| format!("{token_url}: {e}"))?;
    Ok(
        oauth2::Client::new(oauth2::ClientId::new(client_id.to_string()))
            .set_auth_uri(auth)
            .set_token_uri(token),
    )
}

/// The client built in `new`, or the configuration error it could not get past.
pub fn built<EF: ExtraTokenFields>(
    m: Marketplace,
    c: &Result<Client<EF>, String>,
) -> Result<&Client<EF>, MarketplaceError> {
    c.as_ref().map_err(|e| MarketplaceError::Unavailable {
        marketplace: m.as_str(),
        detail: format!("request could not be built: {e}"),
    })
}

/// `oauth2`'s HTTP client: the request goes out through [`super::http::send`] on `http` (its
/// timeouts, user agent and connection pool). A type rather than a closure so the future is
/// boxed as `Send` (a job's future must be; a closure's borrowed future trips the compiler).
pub struct Http<'a> {
    pub m: Marketplace,
    pub http: &'a reqwest::Client,
}

impl<'c> oauth2::AsyncHttpClient<'c> for Http<'_> {
    type Error = MarketplaceError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, MarketplaceError>> + Send + 'c>>;

    fn call(&'c self, req: HttpRequest) -> Self::Future {
        Box::pin(send(self.m, self.http, req))
    }
}

async fn send(
    m: Marketplace,
    http: &reqwest::Client,
    req: HttpRequest,
) -> Result<HttpResponse, MarketplaceError> {
    let (parts, body) = req.into_parts();
    let req = http
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body);
    let r = super::http::send(m, req).await?;
    let (status, headers) = (r.status(), r.headers().clone());
    let body = r.bytes().await.map_err(|e| MarketplaceError::Unavailable {
        marketplace: m.as_str(),
        detail: format!("reading the answer failed: {e}"),
    })?;
    let mut out = HttpResponse::new(body.to_vec());
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    Ok(out)
}

/// Back to our taxonomy. A non-2xx was classified in [`Http`] already; what is left is a 2xx
/// `oauth2` could not read (another 2xx than 200, another content type, a body without the
/// fields of a token answer): the marketplace misbehaving, retryable. The body is not quoted:
/// it may hold tokens.
pub fn error(
    m: Marketplace,
    e: RequestTokenError<MarketplaceError, BasicErrorResponse>,
) -> MarketplaceError {
    let detail = match e {
        RequestTokenError::Request(e) => return e,
        RequestTokenError::Parse(e, _) => format!("unexpected token answer ({e})"),
        RequestTokenError::ServerResponse(e) => format!("unexpected token answer: {e}"),
        RequestTokenError::Other(e) => format!("unexpected token answer: {e}"),
    };
    MarketplaceError::Unavailable {
        marketplace: m.as_str(),
        detail,
    }
}

/// A field the marketplace documents on its token answer, or the answer is not one.
pub fn required<T>(m: Marketplace, v: Option<T>, field: &str) -> Result<T, MarketplaceError> {
    v.ok_or_else(|| MarketplaceError::Unavailable {
        marketplace: m.as_str(),
        detail: format!("unexpected token answer: no {field}"),
    })
}

/// Scopes as `oauth2` takes them.
pub fn scopes(s: &[&str]) -> impl Iterator<Item = oauth2::Scope> {
    s.iter().map(|s| oauth2::Scope::new(s.to_string()))
}
