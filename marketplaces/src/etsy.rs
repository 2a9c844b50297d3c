//! Etsy Open API v3 client: OAuth 2.0 with PKCE (rotating refresh tokens), shop and listing
//! reads, the draft → inventory → image → active publishing path, receipts with
//! `min_last_modified` paging, and the last seen rate-limit headers.
//!
//! Facts follow `shared/marketplaces.md` §2. Every call goes through [`super::http::send`], so
//! status codes are classified once, in [`super::error::classify`]. Pure helpers (`when_made`,
//! condition mapping, title and tag rules) let a publish handler fail permanently before it
//! spends a call.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use regex::Regex;
use serde::{Deserialize, Serialize, Serializer};

use super::error::MarketplaceError;
use super::http::{InvalidField, http_client, json, send};
use super::oauth;
use crate::marketplace::Marketplace;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtsySettings {
    pub api_base: String,
    pub auth_base: String,
    pub keystring: String,
    pub shared_secret: engine::settings::Secret,
    pub redirect_uri: String,
    pub timeout_ms: u64,
    /// Seller taxonomy node new listings go in until products carry their own.
    pub taxonomy_id: u64,
    /// Stock at or below this is reported as low by `poll_etsy` (`low_stock`).
    pub low_stock_threshold: u32,
    /// Signs Etsy's webhooks: "whsec_" + base64 (Standard Webhooks).
    pub webhook_secret: engine::settings::Secret,
}

const M: Marketplace = Marketplace::Etsy;

/// The scopes our jobs need (marketplaces.md §2.2); `shops_w` only to create processing
/// profiles, which we do not.
pub const SCOPES: &[&str] = &[
    "listings_r",
    "listings_w",
    "listings_d",
    "shops_r",
    "transactions_r",
    "transactions_w",
];

/// Etsy rejects epoch filters before 2000-01-01.
const MIN_EPOCH: i64 = 946_684_800;
/// The largest page `limit` Etsy accepts.
pub const MAX_PAGE: u32 = 100;

// ---- client ---------------------------------------------------------------------------

/// A client for one Etsy app (keystring + shared secret). Cheap to clone; clones share the
/// connection pool and the rate-limit record.
#[derive(Clone)]
pub struct EtsyClient {
    http: reqwest::Client,
    api_base: String,
    auth_base: String,
    keystring: String,
    /// The OAuth flows: PKCE, the bare keystring as `client_id` in the body, no secret.
    oauth: Result<oauth::Client<oauth2::EmptyExtraTokenFields>, String>,
    /// `keystring:shared_secret`, the `x-api-key` value required since Feb 2026.
    api_key: String,
    rate: Arc<Mutex<Option<RateInfo>>>,
}

impl std::fmt::Debug for EtsyClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtsyClient")
            .field("api_base", &self.api_base)
            .field("auth_base", &self.auth_base)
            .field("keystring", &self.keystring)
            .finish_non_exhaustive()
    }
}

/// Etsy's limits as of the last successful `/v3/application` answer. They are counted per API
/// key for public calls and per OAuth token for private ones, so with several sellers on one
/// client this describes whichever seller called last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateInfo {
    pub limit_per_second: Option<u64>,
    pub remaining_this_second: Option<u64>,
    pub limit_per_day: Option<u64>,
    pub remaining_today: Option<u64>,
}

impl RateInfo {
    fn from_headers(h: &reqwest::header::HeaderMap) -> Option<Self> {
        let get = |k: &str| h.get(k)?.to_str().ok()?.trim().parse::<u64>().ok();
        let r = Self {
            limit_per_second: get("x-limit-per-second"),
            remaining_this_second: get("x-remaining-this-second"),
            limit_per_day: get("x-limit-per-day"),
            remaining_today: get("x-remaining-today"),
        };
        (r != Self::EMPTY).then_some(r)
    }

    const EMPTY: Self = Self {
        limit_per_second: None,
        remaining_this_second: None,
        limit_per_day: None,
        remaining_today: None,
    };
}

impl EtsyClient {
    pub fn new(s: &EtsySettings) -> Self {
        // The token endpoint lives on the API host under `/v3/public` and takes no `x-api-key`.
        let oauth = oauth::client(
            &s.keystring,
            format!("{}/oauth/connect", s.auth_base.trim_end_matches('/')),
            format!("{}/v3/public/oauth/token", s.api_base.trim_end_matches('/')),
        )
        .and_then(|c| {
            let redirect = oauth2::RedirectUrl::new(s.redirect_uri.clone())
                .map_err(|e| format!("{}: {e}", s.redirect_uri))?;
            Ok(c.set_auth_type(oauth2::AuthType::RequestBody)
                .set_redirect_uri(redirect))
        });
        Self {
            http: http_client(s.timeout_ms),
            oauth,
            api_base: s.api_base.trim_end_matches('/').to_string(),
            auth_base: s.auth_base.trim_end_matches('/').to_string(),
            keystring: s.keystring.clone(),
            api_key: format!("{}:{}", s.keystring, s.shared_secret.expose()),
            rate: Arc::new(Mutex::new(None)),
        }
    }

    /// The rate-limit headers of the last successful call, if any carried them.
    pub fn rate_info(&self) -> Option<RateInfo> {
        *self.rate.lock().unwrap_or_else(|e| e.into_inner())
    }

    // ---- OAuth ------------------------------------------------------------------------

    fn oauth(&self) -> Result<&oauth::Client<oauth2::EmptyExtraTokenFields>, MarketplaceError> {
        oauth::built(M, &self.oauth)
    }

    /// The consent page the seller is sent to, with `pkce`'s S256 challenge; `state` must be
    /// non-empty and single use (the caller checks it on the callback).
    pub fn consent_url(
        &self,
        state: &str,
        pkce: &Pkce,
        scopes: &[&str],
    ) -> Result<String, MarketplaceError> {
        let (mut url, _) = self
            .oauth()?
            .authorize_url(|| oauth2::CsrfToken::new(state.to_string()))
            .set_pkce_challenge(pkce.challenge.clone())
            .add_scopes(oauth::scopes(scopes))
            .url();
        // `oauth2` form-encodes the query: spaces as `+`, a literal `+` as `%2B`. Etsy documents
        // the scope list as `%20`-separated, and swapping every `+` for `%20` is exact.
        let query = url.query().map(|q| q.replace('+', "%20"));
        url.set_query(query.as_deref());
        Ok(url.into())
    }

    /// The HTTP client `oauth2`'s token requests go out on: ours, through `marketplace::send`.
    fn token_http(&self) -> oauth::Http<'_> {
        oauth::Http {
            m: M,
            http: &self.http,
        }
    }

    /// Trades the callback's `code` for tokens; `verifier` is that of the [`Pkce`] whose
    /// challenge went into [`Self::consent_url`].
    pub async fn exchange_code(
        &self,
        code: &str,
        verifier: &str,
    ) -> Result<Tokens, MarketplaceError> {
        let t = self
            .oauth()?
            .exchange_code(oauth2::AuthorizationCode::new(code.to_string()))
            .set_pkce_verifier(oauth2::PkceCodeVerifier::new(verifier.to_string()))
            .request_async(&self.token_http())
            .await
            .map_err(|e| oauth::error(M, e))?;
        Tokens::from_answer(t)
    }

    /// Refreshes the access token. Etsy rotates refresh tokens: the returned `refresh_token`
    /// replaces the presented one, which is consumed; persist it before anything else.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Tokens, MarketplaceError> {
        let rt = oauth2::RefreshToken::new(refresh_token.to_string());
        let t = self
            .oauth()?
            .exchange_refresh_token(&rt)
            .request_async(&self.token_http())
            .await
            .map_err(|e| oauth::error(M, e))?;
        Tokens::from_answer(t)
    }

    // ---- requests ---------------------------------------------------------------------

    fn request(&self, method: reqwest::Method, token: &str, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}/v3/application{path}", self.api_base))
            .header("x-api-key", &self.api_key)
            .bearer_auth(token)
    }

    fn get(&self, token: &str, path: &str) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::GET, token, path)
    }

    async fn call(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, MarketplaceError> {
        let r = send(M, req).await?;
        if let Some(info) = RateInfo::from_headers(r.headers()) {
            *self.rate.lock().unwrap_or_else(|e| e.into_inner()) = Some(info);
        }
        Ok(r)
    }

    async fn call_json<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, MarketplaceError> {
        let r = self.call(req).await?;
        json(M, r).await
    }

    /// `GET /openapi-ping`: needs only the app's API key; counts against its limits. Used by the
    /// `noop` kind to exercise the limiter without a seller.
    pub async fn ping(&self) -> Result<u64, MarketplaceError> {
        #[derive(Deserialize)]
        struct Ping {
            application_id: u64,
        }
        let req = self
            .http
            .get(format!("{}/v3/application/openapi-ping", self.api_base))
            .header("x-api-key", &self.api_key);
        let p: Ping = self.call_json(req).await?;
        Ok(p.application_id)
    }

    // ---- user, shop, profiles, taxonomy -----------------------------------------------

    /// The token's user and their shop (scope `shops_r`).
    pub async fn get_me(&self, token: &str) -> Result<Me, MarketplaceError> {
        self.call_json(self.get(token, "/users/me")).await
    }

    pub async fn get_shop(&self, token: &str, shop_id: u64) -> Result<Shop, MarketplaceError> {
        self.call_json(self.get(token, &format!("/shops/{shop_id}")))
            .await
    }

    pub async fn shipping_profiles(
        &self,
        token: &str,
        shop_id: u64,
    ) -> Result<Page<ShippingProfile>, MarketplaceError> {
        self.call_json(self.get(token, &format!("/shops/{shop_id}/shipping-profiles")))
            .await
    }

    /// Processing profiles; physical listings and inventory offerings name one by id.
    pub async fn readiness_states(
        &self,
        token: &str,
        shop_id: u64,
    ) -> Result<Page<ReadinessState>, MarketplaceError> {
        self.call_json(self.get(
            token,
            &format!("/shops/{shop_id}/readiness-state-definitions"),
        ))
        .await
    }

    /// The seller taxonomy tree (roots with nested children).
    pub async fn taxonomy_nodes(
        &self,
        token: &str,
    ) -> Result<Page<TaxonomyNode>, MarketplaceError> {
        self.call_json(self.get(token, "/seller-taxonomy/nodes"))
            .await
    }

    // ---- listings ---------------------------------------------------------------------

    /// Creates a draft (free; publishing is [`ListingUpdate::activate`], which costs a fee).
    pub async fn create_draft_listing(
        &self,
        token: &str,
        shop_id: u64,
        draft: &DraftListing,
    ) -> Result<Listing, MarketplaceError> {
        let req = self
            .request(
                reqwest::Method::POST,
                token,
                &format!("/shops/{shop_id}/listings"),
            )
            .form(&draft.form());
        self.call_json(req).await
    }

    /// Partial update (PATCH). Price and quantity are not listing fields in v3: they live on
    /// the inventory's offerings ([`Self::update_inventory`]).
    pub async fn update_listing(
        &self,
        token: &str,
        shop_id: u64,
        listing_id: u64,
        update: &ListingUpdate,
    ) -> Result<Listing, MarketplaceError> {
        let req = self
            .request(
                reqwest::Method::PATCH,
                token,
                &format!("/shops/{shop_id}/listings/{listing_id}"),
            )
            .form(&update.form());
        self.call_json(req).await
    }

    /// Deletes a listing (scope `listings_d`). A missing listing is `NotFound`; whether that
    /// counts as done is the caller's call.
    pub async fn delete_listing(
        &self,
        token: &str,
        listing_id: u64,
    ) -> Result<(), MarketplaceError> {
        self.call(self.request(
            reqwest::Method::DELETE,
            token,
            &format!("/listings/{listing_id}"),
        ))
        .await
        .map(drop)
    }

    /// A listing with its images and inventory.
    pub async fn get_listing(
        &self,
        token: &str,
        listing_id: u64,
    ) -> Result<Listing, MarketplaceError> {
        let req = self
            .get(token, &format!("/listings/{listing_id}"))
            .query(&[("includes", "Images,Inventory")]);
        self.call_json(req).await
    }

    /// One page of a shop's listings in `state`, newest first. Etsy has no
    /// `min_last_modified` here: pollers compare `updated_timestamp` themselves.
    pub async fn listings_by_shop(
        &self,
        token: &str,
        shop_id: u64,
        state: ListingState,
        limit: u32,
        offset: u32,
    ) -> Result<Page<Listing>, MarketplaceError> {
        let req = self
            .get(token, &format!("/shops/{shop_id}/listings"))
            .query(&[
                ("state", state.as_str().to_string()),
                ("limit", limit.clamp(1, MAX_PAGE).to_string()),
                ("offset", offset.to_string()),
            ]);
        self.call_json(req).await
    }

    /// The newest listing of `shop_id` in `states` (with its inventory) that `matches`, looking
    /// at the newest `scan` listings of each state. Etsy has no SKU search; publishers use this to
    /// find a draft created by a run that crashed before it could record the listing id.
    pub async fn find_listing(
        &self,
        token: &str,
        shop_id: u64,
        states: &[ListingState],
        scan: u32,
        matches: impl Fn(&Listing) -> bool,
    ) -> Result<Option<Listing>, MarketplaceError> {
        for state in states {
            let req = self
                .get(token, &format!("/shops/{shop_id}/listings"))
                .query(&[
                    ("state", state.as_str().to_string()),
                    ("limit", scan.clamp(1, MAX_PAGE).to_string()),
                    ("offset", "0".to_string()),
                    ("sort_on", "created".to_string()),
                    ("sort_order", "desc".to_string()),
                    ("includes", "Inventory".to_string()),
                ]);
            let page: Page<Listing> = self.call_json(req).await?;
            if let Some(hit) = page.results.into_iter().find(|l| matches(l)) {
                return Ok(Some(hit));
            }
        }
        Ok(None)
    }

    pub async fn get_inventory(
        &self,
        token: &str,
        listing_id: u64,
    ) -> Result<Inventory, MarketplaceError> {
        self.call_json(self.get(token, &format!("/listings/{listing_id}/inventory")))
            .await
    }

    /// Replaces the inventory (JSON, unlike the listing endpoints). The listing's quantity
    /// becomes the sum of enabled offerings; at 0 an active listing is sold out.
    pub async fn update_inventory(
        &self,
        token: &str,
        listing_id: u64,
        inventory: &InventoryUpdate,
    ) -> Result<Inventory, MarketplaceError> {
        let req = self
            .request(
                reqwest::Method::PUT,
                token,
                &format!("/listings/{listing_id}/inventory"),
            )
            .json(inventory);
        self.call_json(req).await
    }

    /// Uploads one image (multipart field `image`) at `rank` (1 = the main photo).
    pub async fn upload_image(
        &self,
        token: &str,
        shop_id: u64,
        listing_id: u64,
        bytes: Vec<u8>,
        filename: &str,
        rank: u32,
    ) -> Result<ListingImage, MarketplaceError> {
        let part = reqwest::multipart::Part::bytes(bytes)
            .file_name(filename.to_string())
            .mime_str(image_mime(filename))
            .expect("a constant, valid MIME type");
        let form = reqwest::multipart::Form::new()
            .part("image", part)
            .text("rank", rank.max(1).to_string());
        let req = self
            .request(
                reqwest::Method::POST,
                token,
                &format!("/shops/{shop_id}/listings/{listing_id}/images"),
            )
            .multipart(form);
        self.call_json(req).await
    }

    // ---- receipts ---------------------------------------------------------------------

    /// One page of a shop's receipts (scope `transactions_r`).
    pub async fn receipts(
        &self,
        token: &str,
        shop_id: u64,
        query: &ReceiptQuery,
    ) -> Result<Page<Receipt>, MarketplaceError> {
        let req = self
            .get(token, &format!("/shops/{shop_id}/receipts"))
            .query(query);
        self.call_json(req).await
    }

    /// getShopReceipt: one receipt (scope `transactions_r`).
    pub async fn receipt(
        &self,
        token: &str,
        shop_id: u64,
        receipt_id: u64,
    ) -> Result<Receipt, MarketplaceError> {
        self.call_json(self.get(token, &format!("/shops/{shop_id}/receipts/{receipt_id}")))
            .await
    }

    /// Every receipt modified at or after `since` (epoch seconds), oldest change first, each
    /// once. Pages ascend by `updated`, so a receipt modified while we page moves to the end
    /// and may be seen twice: the later copy wins. Etsy does not bump `updated_timestamp` on
    /// cancellations and refunds: pollers also read cancelled ones
    /// ([`Self::receipts_canceled_unshipped_since`]).
    pub async fn receipts_modified_since(
        &self,
        token: &str,
        shop_id: u64,
        since: i64,
    ) -> Result<Vec<Receipt>, MarketplaceError> {
        let query = ReceiptQuery {
            min_last_modified: Some(since.max(MIN_EPOCH)),
            sort_on: Some(ReceiptSort::Updated),
            sort_order: Some(SortOrder::Asc),
            ..ReceiptQuery::default()
        };
        let mut out = self.all_receipts(token, shop_id, query).await?;
        out.sort_by_key(|r| (r.updated_timestamp, r.receipt_id));
        Ok(out)
    }

    /// Every receipt created at or after `since` (epoch seconds) that was cancelled before it
    /// shipped, whatever its `updated_timestamp` (which a cancellation does not bump).
    pub async fn receipts_canceled_unshipped_since(
        &self,
        token: &str,
        shop_id: u64,
        since: i64,
    ) -> Result<Vec<Receipt>, MarketplaceError> {
        let query = ReceiptQuery {
            min_created: Some(since.max(MIN_EPOCH)),
            was_canceled: Some(true),
            was_shipped: Some(false),
            sort_on: Some(ReceiptSort::Created),
            sort_order: Some(SortOrder::Asc),
            ..ReceiptQuery::default()
        };
        self.all_receipts(token, shop_id, query).await
    }

    /// Pages through `query` (100 a page), each receipt once: one that changes while we page
    /// may be seen twice, and the later copy wins.
    async fn all_receipts(
        &self,
        token: &str,
        shop_id: u64,
        mut query: ReceiptQuery,
    ) -> Result<Vec<Receipt>, MarketplaceError> {
        query.limit = Some(MAX_PAGE);
        query.offset = Some(0);
        let mut out: Vec<Receipt> = Vec::new();
        let mut index: HashMap<u64, usize> = HashMap::new();
        loop {
            let page = self.receipts(token, shop_id, &query).await?;
            let n = page.results.len() as u32;
            for r in page.results {
                match index.get(&r.receipt_id) {
                    Some(&i) => out[i] = r,
                    None => {
                        index.insert(r.receipt_id, out.len());
                        out.push(r);
                    }
                }
            }
            let offset = query.offset.unwrap_or(0) + n;
            if n == 0 || u64::from(offset) >= page.count {
                break;
            }
            query.offset = Some(offset);
        }
        Ok(out)
    }
}

fn image_mime(filename: &str) -> &'static str {
    let ext = filename
        .rsplit('.')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        _ => "image/jpeg",
    }
}

// ---- OAuth types ----------------------------------------------------------------------

/// A PKCE pair (`oauth2`'s, S256): keep `verifier` server-side with the `state`; the challenge
/// goes to consent.
#[derive(Clone)]
pub struct Pkce {
    pub verifier: String,
    pub challenge: oauth2::PkceCodeChallenge,
}

impl Pkce {
    /// A fresh pair: 48 random bytes, a 64-character base64url verifier (43–128 allowed).
    pub fn new() -> Self {
        let (challenge, verifier) = oauth2::PkceCodeChallenge::new_random_sha256_len(48);
        Self {
            verifier: verifier.into_secret(),
            challenge,
        }
    }

    /// `BASE64URL(SHA256(verifier))` without padding, the only method Etsy accepts (S256).
    pub fn challenge_for(verifier: &str) -> String {
        let v = oauth2::PkceCodeVerifier::new(verifier.to_string());
        oauth2::PkceCodeChallenge::from_code_verifier_sha256(&v)
            .as_str()
            .to_string()
    }
}

impl Default for Pkce {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Pkce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkce")
            .field("challenge", &self.challenge.as_str())
            .finish_non_exhaustive()
    }
}

/// The token endpoint's answer. Both tokens start with the Etsy user id (`12345678.…`).
#[derive(Clone, Deserialize)]
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: String,
    /// Seconds (3600 on Etsy).
    pub expires_in: u64,
    #[serde(default)]
    pub token_type: String,
    /// Space-separated; not always present.
    #[serde(default)]
    pub scope: Option<String>,
}

impl Tokens {
    /// Etsy's answer as `oauth2` read it; Etsy always sends a (rotated) refresh token and the
    /// expiry.
    fn from_answer(
        t: oauth::TokenResponse<oauth2::EmptyExtraTokenFields>,
    ) -> Result<Self, MarketplaceError> {
        use oauth2::TokenResponse as _;
        let scope = t
            .scopes()
            .map(|s| s.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" "));
        Ok(Self {
            access_token: t.access_token().secret().clone(),
            refresh_token: oauth::required(M, t.refresh_token(), "refresh_token")?
                .secret()
                .clone(),
            expires_in: oauth::required(M, t.expires_in(), "expires_in")?.as_secs(),
            token_type: t.token_type().as_ref().to_string(),
            scope,
        })
    }

    /// The Etsy user id the access token belongs to.
    pub fn user_id(&self) -> Option<u64> {
        self.access_token.split_once('.')?.0.parse().ok()
    }
}

/// Tokens never print.
impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("user_id", &self.user_id())
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

// ---- read types -----------------------------------------------------------------------

/// Etsy's list envelope: `count` is the total across pages.
#[derive(Debug, Clone, Deserialize)]
pub struct Page<T> {
    pub count: u64,
    pub results: Vec<T>,
}

/// An amount as `amount / divisor` in `currency_code` (1250/100 = 12.50).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Money {
    pub amount: i64,
    pub divisor: i64,
    pub currency_code: String,
}

impl Money {
    /// The amount in hundredths of the currency unit.
    pub fn cents(&self) -> i64 {
        if self.divisor <= 0 {
            return 0;
        }
        (self.amount * 100 + self.divisor / 2).div_euclid(self.divisor)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Me {
    pub user_id: u64,
    pub shop_id: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Shop {
    pub shop_id: u64,
    pub user_id: u64,
    pub shop_name: String,
    pub currency_code: String,
    #[serde(default)]
    pub is_vacation: bool,
    #[serde(default)]
    pub listing_active_count: u64,
    #[serde(default)]
    pub url: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ShippingProfile {
    pub shipping_profile_id: u64,
    pub title: String,
    #[serde(default)]
    pub min_processing_days: Option<u32>,
    #[serde(default)]
    pub max_processing_days: Option<u32>,
    #[serde(default)]
    pub origin_country_iso: Option<String>,
    #[serde(default)]
    pub profile_type: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ReadinessState {
    pub readiness_state_id: u64,
    /// `ready_to_ship` or `made_to_order`.
    pub readiness_state: String,
    #[serde(default)]
    pub min_processing_days: Option<u32>,
    #[serde(default)]
    pub max_processing_days: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TaxonomyNode {
    pub id: u64,
    pub level: u32,
    pub name: String,
    pub parent_id: Option<u64>,
    #[serde(default)]
    pub children: Vec<TaxonomyNode>,
    #[serde(default)]
    pub full_path_taxonomy_ids: Vec<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListingState {
    Active,
    Inactive,
    SoldOut,
    Draft,
    Expired,
    /// A state this client does not know yet.
    #[serde(other)]
    Other,
}

impl ListingState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Inactive => "inactive",
            Self::SoldOut => "sold_out",
            Self::Draft => "draft",
            Self::Expired => "expired",
            Self::Other => "other",
        }
    }
}

/// A `ShopListing`, with `images`/`inventory` when asked for through `includes`.
#[derive(Debug, Clone, Deserialize)]
pub struct Listing {
    pub listing_id: u64,
    pub shop_id: u64,
    #[serde(default)]
    pub user_id: Option<u64>,
    pub title: String,
    #[serde(default)]
    pub description: String,
    pub state: ListingState,
    pub quantity: u32,
    pub price: Money,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub who_made: Option<String>,
    #[serde(default)]
    pub when_made: Option<String>,
    #[serde(default)]
    pub is_supply: Option<bool>,
    #[serde(default)]
    pub taxonomy_id: Option<u64>,
    #[serde(default)]
    pub shipping_profile_id: Option<u64>,
    #[serde(default)]
    pub readiness_state_id: Option<u64>,
    #[serde(default)]
    pub created_timestamp: i64,
    #[serde(default)]
    pub updated_timestamp: i64,
    #[serde(default)]
    pub images: Option<Vec<ListingImage>>,
    #[serde(default)]
    pub inventory: Option<Inventory>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ListingImage {
    pub listing_image_id: u64,
    pub listing_id: u64,
    #[serde(default)]
    pub rank: u32,
    #[serde(default)]
    pub url_fullxfull: Option<String>,
    #[serde(default)]
    pub alt_text: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Inventory {
    pub products: Vec<InventoryProduct>,
    #[serde(default)]
    pub price_on_property: Vec<u64>,
    #[serde(default)]
    pub quantity_on_property: Vec<u64>,
    #[serde(default)]
    pub sku_on_property: Vec<u64>,
    #[serde(default)]
    pub readiness_state_on_property: Vec<u64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct InventoryProduct {
    pub product_id: u64,
    #[serde(default)]
    pub sku: String,
    #[serde(default)]
    pub is_deleted: bool,
    pub offerings: Vec<Offering>,
    #[serde(default)]
    pub property_values: Vec<PropertyValue>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Offering {
    pub offering_id: u64,
    pub quantity: u32,
    pub is_enabled: bool,
    #[serde(default)]
    pub is_deleted: bool,
    pub price: Money,
    #[serde(default)]
    pub readiness_state_id: Option<u64>,
}

/// A variation value, the same shape in requests and answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PropertyValue {
    pub property_id: u64,
    #[serde(default)]
    pub property_name: Option<String>,
    #[serde(default)]
    pub scale_id: Option<u64>,
    pub value_ids: Vec<u64>,
    /// No parentheses allowed.
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Receipt {
    pub receipt_id: u64,
    /// `paid`, `completed`, `open`, `payment processing`, `canceled`, `fully refunded`, …
    pub status: String,
    #[serde(default)]
    pub is_paid: bool,
    #[serde(default)]
    pub is_shipped: bool,
    #[serde(default)]
    pub buyer_email: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub country_iso: Option<String>,
    pub created_timestamp: i64,
    pub updated_timestamp: i64,
    #[serde(default)]
    pub grandtotal: Option<Money>,
    #[serde(default)]
    pub transactions: Vec<Transaction>,
}

/// A receipt's line item.
#[derive(Debug, Clone, Deserialize)]
pub struct Transaction {
    pub transaction_id: u64,
    /// Absent when the listing no longer exists.
    #[serde(default)]
    pub listing_id: Option<u64>,
    #[serde(default)]
    pub product_id: Option<u64>,
    #[serde(default)]
    pub sku: Option<String>,
    pub quantity: u32,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub price: Option<Money>,
}

/// Filters and paging of getShopReceipts; unset fields are not sent.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReceiptQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_created: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_created: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_last_modified: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_last_modified: Option<i64>,
    /// 1–100 (Etsy's default 25).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sort_on: Option<ReceiptSort>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sort_order: Option<SortOrder>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub was_paid: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub was_shipped: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub was_canceled: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptSort {
    Created,
    Updated,
    ReceiptId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SortOrder {
    Asc,
    Desc,
}

// ---- write types ----------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhoMade {
    IDid,
    SomeoneElse,
    Collective,
}

impl WhoMade {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::IDid => "i_did",
            Self::SomeoneElse => "someone_else",
            Self::Collective => "collective",
        }
    }
}

/// `who_made`, `when_made` and `is_supply` travel together: Etsy staff say to send all
/// three if any is sent (etsy/open-api#511), so they are one value here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    pub who_made: WhoMade,
    /// One of the year-dependent values of [`when_made_values`].
    pub when_made: String,
    pub is_supply: bool,
}

impl Provenance {
    fn push(&self, f: &mut Vec<(&'static str, String)>) {
        f.push(("who_made", self.who_made.as_str().into()));
        f.push(("when_made", self.when_made.clone()));
        f.push(("is_supply", self.is_supply.to_string()));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListingType {
    Physical,
    Download,
    Both,
}

impl ListingType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Physical => "physical",
            Self::Download => "download",
            Self::Both => "both",
        }
    }
}

/// createDraftListing's form (marketplaces.md §2.6). Prices are cents of the shop's currency.
#[derive(Debug, Clone)]
pub struct DraftListing {
    pub title: String,
    pub description: String,
    /// 1–999.
    pub quantity: u32,
    pub price_cents: u64,
    pub taxonomy_id: u64,
    pub provenance: Provenance,
    /// Required to activate a physical listing.
    pub shipping_profile_id: Option<u64>,
    /// The processing profile; Etsy (and the simulator by default) refuse physical listings
    /// without one.
    pub readiness_state_id: Option<u64>,
    pub return_policy_id: Option<u64>,
    pub shop_section_id: Option<u64>,
    /// Sent as one comma-separated string: repeated fields keep only the last value.
    pub tags: Vec<String>,
    pub materials: Vec<String>,
    pub listing_type: Option<ListingType>,
    pub should_auto_renew: Option<bool>,
}

impl DraftListing {
    fn form(&self) -> Vec<(&'static str, String)> {
        let mut f = vec![
            ("title", self.title.clone()),
            ("description", self.description.clone()),
            ("quantity", self.quantity.to_string()),
            ("price", decimal(self.price_cents)),
            ("taxonomy_id", self.taxonomy_id.to_string()),
        ];
        self.provenance.push(&mut f);
        push_opt(&mut f, "shipping_profile_id", self.shipping_profile_id);
        push_opt(&mut f, "readiness_state_id", self.readiness_state_id);
        push_opt(&mut f, "return_policy_id", self.return_policy_id);
        push_opt(&mut f, "shop_section_id", self.shop_section_id);
        push_list(&mut f, "tags", Some(&self.tags).filter(|t| !t.is_empty()));
        push_list(
            &mut f,
            "materials",
            Some(&self.materials).filter(|m| !m.is_empty()),
        );
        push_opt(&mut f, "type", self.listing_type.map(ListingType::as_str));
        push_opt(&mut f, "should_auto_renew", self.should_auto_renew);
        f
    }
}

/// The states updateListing can set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettableState {
    /// Publishes: needs an image and, when physical, a shipping profile.
    Active,
    Inactive,
}

/// updateListing's form; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ListingUpdate {
    pub state: Option<SettableState>,
    pub title: Option<String>,
    pub description: Option<String>,
    pub taxonomy_id: Option<u64>,
    pub provenance: Option<Provenance>,
    pub shipping_profile_id: Option<u64>,
    pub readiness_state_id: Option<u64>,
    pub return_policy_id: Option<u64>,
    pub shop_section_id: Option<u64>,
    /// `Some(vec![])` clears the tags.
    pub tags: Option<Vec<String>>,
    pub materials: Option<Vec<String>>,
    pub should_auto_renew: Option<bool>,
}

impl ListingUpdate {
    /// `state=active`: publishes a draft (or renews a sold-out listing at quantity 1).
    pub fn activate() -> Self {
        Self {
            state: Some(SettableState::Active),
            ..Self::default()
        }
    }

    fn form(&self) -> Vec<(&'static str, String)> {
        let mut f = Vec::new();
        let state = self.state.map(|s| match s {
            SettableState::Active => "active",
            SettableState::Inactive => "inactive",
        });
        push_opt(&mut f, "state", state);
        push_opt(&mut f, "title", self.title.as_deref());
        push_opt(&mut f, "description", self.description.as_deref());
        push_opt(&mut f, "taxonomy_id", self.taxonomy_id);
        if let Some(p) = &self.provenance {
            p.push(&mut f);
        }
        push_opt(&mut f, "shipping_profile_id", self.shipping_profile_id);
        push_opt(&mut f, "readiness_state_id", self.readiness_state_id);
        push_opt(&mut f, "return_policy_id", self.return_policy_id);
        push_opt(&mut f, "shop_section_id", self.shop_section_id);
        push_list(&mut f, "tags", self.tags.as_ref());
        push_list(&mut f, "materials", self.materials.as_ref());
        push_opt(&mut f, "should_auto_renew", self.should_auto_renew);
        f
    }
}

fn push_opt<T: ToString>(f: &mut Vec<(&'static str, String)>, k: &'static str, v: Option<T>) {
    if let Some(v) = v {
        f.push((k, v.to_string()));
    }
}

/// Lists travel as one comma-separated value; `Some(empty)` sends an empty one (clears it).
fn push_list(f: &mut Vec<(&'static str, String)>, k: &'static str, v: Option<&Vec<String>>) {
    if let Some(v) = v {
        f.push((k, v.join(",")));
    }
}

/// Cents as a decimal string, exactly (no float rounding on the wire).
fn decimal(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// updateListingInventory's JSON body. Prices are cents; Etsy wants a float in the request
/// (and answers with `Money`).
#[derive(Debug, Clone, Serialize)]
pub struct InventoryUpdate {
    pub products: Vec<ProductUpdate>,
    pub price_on_property: Vec<u64>,
    pub quantity_on_property: Vec<u64>,
    pub sku_on_property: Vec<u64>,
    pub readiness_state_on_property: Vec<u64>,
}

impl InventoryUpdate {
    /// A single product (no variations): one SKU, one price, one quantity.
    pub fn single(
        sku: &str,
        price_cents: u64,
        quantity: u32,
        readiness_state_id: Option<u64>,
    ) -> Self {
        Self {
            products: vec![ProductUpdate {
                sku: sku.to_string(),
                property_values: Vec::new(),
                offerings: vec![OfferingUpdate {
                    price_cents,
                    quantity,
                    is_enabled: true,
                    readiness_state_id,
                }],
            }],
            price_on_property: Vec::new(),
            quantity_on_property: Vec::new(),
            sku_on_property: Vec::new(),
            readiness_state_on_property: Vec::new(),
        }
    }
}

/// The current inventory as an update, to change one thing (say a quantity) and send it back.
impl From<&Inventory> for InventoryUpdate {
    fn from(i: &Inventory) -> Self {
        Self {
            products: i
                .products
                .iter()
                .filter(|p| !p.is_deleted)
                .map(|p| ProductUpdate {
                    sku: p.sku.clone(),
                    property_values: p.property_values.clone(),
                    offerings: p
                        .offerings
                        .iter()
                        .filter(|o| !o.is_deleted)
                        .map(|o| OfferingUpdate {
                            price_cents: o.price.cents().max(0) as u64,
                            quantity: o.quantity,
                            is_enabled: o.is_enabled,
                            readiness_state_id: o.readiness_state_id,
                        })
                        .collect(),
                })
                .collect(),
            price_on_property: i.price_on_property.clone(),
            quantity_on_property: i.quantity_on_property.clone(),
            sku_on_property: i.sku_on_property.clone(),
            readiness_state_on_property: i.readiness_state_on_property.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ProductUpdate {
    pub sku: String,
    pub property_values: Vec<PropertyValue>,
    pub offerings: Vec<OfferingUpdate>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OfferingUpdate {
    #[serde(rename = "price", serialize_with = "cents_as_float")]
    pub price_cents: u64,
    pub quantity: u32,
    pub is_enabled: bool,
    /// Required per offering since processing profiles (E26).
    pub readiness_state_id: Option<u64>,
}

fn cents_as_float<S: Serializer>(cents: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(*cents as f64 / 100.0)
}

// ---- pure rules -----------------------------------------------------------------------

fn invalid(field: &'static str, message: impl Into<String>) -> InvalidField {
    InvalidField {
        marketplace: "etsy",
        field,
        message: message.into(),
    }
}

/// Etsy's `when_made` values in `year`: the enum rolls every January (`2020_2026`,
/// `2007_2009`, `before_2007`, `2000_2006` in 2026), so stale values are refused.
pub fn when_made_values(year: i32) -> Vec<String> {
    let mut v = vec![
        "made_to_order".to_string(),
        format!("2020_{year}"),
        "2010_2019".into(),
        format!("{}_2009", year - 19),
        format!("before_{}", year - 19),
        format!("2000_{}", year - 20),
    ];
    v.extend(DECADES.iter().map(|d| d.to_string()));
    v
}

const DECADES: &[&str] = &[
    "1990s",
    "1980s",
    "1970s",
    "1960s",
    "1950s",
    "1940s",
    "1930s",
    "1920s",
    "1910s",
    "1900s",
    "1800s",
    "1700s",
    "before_1700",
];

/// The narrowest `when_made` value covering an item made in `made_in`, in `current_year`'s
/// enum. A year in the future is taken as this year. Follows the pattern of
/// marketplaces.md §2.6, which holds while `current_year - 19 <= 2009` (until 2028).
pub fn when_made(made_in: i32, current_year: i32) -> String {
    let y = made_in.min(current_year);
    match y {
        2020.. => format!("2020_{current_year}"),
        2010..=2019 => "2010_2019".into(),
        2000..=2009 if y >= current_year - 19 => format!("{}_2009", current_year - 19),
        2000..=2009 => format!("2000_{}", current_year - 20),
        1900..=1999 => format!("{}s", y / 10 * 10),
        1800..=1899 => "1800s".into(),
        1700..=1799 => "1700s".into(),
        _ => "before_1700".into(),
    }
}

/// Provenance of a product on the platform's condition scale (`catalogue::CONDITIONS`).
/// Our sellers resell goods made by others, so `who_made` is always `someone_else` and none
/// is a craft supply. `when_made` comes from the year the item was made when known; without
/// it we claim the most recent range, since calling an item older than we know it to be would
/// misdescribe it (Etsy treats 20+ years as vintage).
pub fn provenance_for_condition(
    condition: &str,
    made_in: Option<i32>,
    current_year: i32,
) -> Result<Provenance, InvalidField> {
    if !crate::marketplace::CONDITIONS.contains(&condition) {
        return Err(invalid(
            "condition",
            format!("unknown condition {condition:?}"),
        ));
    }
    // New items were made recently whatever year the seller typed.
    let made_in = match condition {
        "new_with_tags" | "new_without_tags" => None,
        _ => made_in,
    };
    Ok(Provenance {
        who_made: WhoMade::SomeoneElse,
        when_made: when_made(made_in.unwrap_or(current_year), current_year),
        is_supply: false,
    })
}

static TITLE_FORBIDDEN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[^\p{L}\p{Nd}\p{P}\p{Sm}\p{Zs}™©®]").expect("a valid title regex")
});

pub const TITLE_MAX: usize = 140;

/// Etsy's title rules: not blank, at most 140 characters, only letters, digits, punctuation,
/// math symbols, spaces and ™©®, and each of `% : & +` at most once.
pub fn validate_title(title: &str) -> Result<(), InvalidField> {
    if title.trim().is_empty() {
        return Err(invalid("title", "must not be empty"));
    }
    let n = title.chars().count();
    if n > TITLE_MAX {
        return Err(invalid(
            "title",
            format!("is {n} characters; at most {TITLE_MAX} are allowed"),
        ));
    }
    if let Some(m) = TITLE_FORBIDDEN.find(title) {
        return Err(invalid(
            "title",
            format!(
                "contains the character {:?}, which Etsy does not allow",
                m.as_str()
            ),
        ));
    }
    for c in ['%', ':', '&', '+'] {
        if title.matches(c).count() > 1 {
            return Err(invalid("title", format!("may contain '{c}' at most once")));
        }
    }
    Ok(())
}

/// Etsy's tag rules: at most 13, each at most 20 characters of letters, digits, spaces,
/// `-`, `'` and ™©®, no duplicates (case-insensitive), none containing a comma (tags travel
/// comma-separated).
pub fn validate_tags(tags: &[String]) -> Result<(), InvalidField> {
    if tags.len() > 13 {
        return Err(invalid(
            "tags",
            format!("{} tags; at most 13 are allowed", tags.len()),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for t in tags {
        let t = t.trim();
        if t.is_empty() || t.chars().count() > 20 {
            return Err(invalid("tags", format!("{t:?} must be 1 to 20 characters")));
        }
        if !t
            .chars()
            .all(|c| c.is_alphanumeric() || c.is_whitespace() || "-'™©®".contains(c))
        {
            return Err(invalid(
                "tags",
                format!("{t:?} contains a character Etsy does not allow"),
            ));
        }
        if !seen.insert(t.to_lowercase()) {
            return Err(invalid("tags", format!("{t:?} appears twice")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::JobError;

    #[test]
    fn when_made_follows_the_rolling_enum() {
        assert_eq!(when_made(2025, 2026), "2020_2026");
        assert_eq!(when_made(2030, 2026), "2020_2026");
        assert_eq!(when_made(2015, 2026), "2010_2019");
        assert_eq!(when_made(2008, 2026), "2007_2009");
        assert_eq!(when_made(2007, 2026), "2007_2009");
        assert_eq!(when_made(2006, 2026), "2000_2006");
        assert_eq!(when_made(2004, 2024), "2000_2004");
        assert_eq!(when_made(2005, 2024), "2005_2009");
        assert_eq!(when_made(1987, 2026), "1980s");
        assert_eq!(when_made(1900, 2026), "1900s");
        assert_eq!(when_made(1850, 2026), "1800s");
        assert_eq!(when_made(1750, 2026), "1700s");
        assert_eq!(when_made(1650, 2026), "before_1700");
        // Every derived value is one Etsy accepts that year.
        for year in [2022, 2024, 2026, 2028] {
            let allowed = when_made_values(year);
            for made in 1600..=year + 1 {
                let w = when_made(made, year);
                assert!(allowed.contains(&w), "{made} in {year}: {w}");
            }
        }
        assert!(when_made_values(2026).contains(&"before_2007".to_string()));
    }

    #[test]
    fn conditions_map_to_someone_else_with_a_range() {
        for c in crate::marketplace::CONDITIONS {
            let p = provenance_for_condition(c, None, 2026).unwrap();
            assert_eq!(p.who_made, WhoMade::SomeoneElse);
            assert!(!p.is_supply);
            assert_eq!(p.when_made, "2020_2026");
        }
        let vintage = provenance_for_condition("good", Some(1978), 2026).unwrap();
        assert_eq!(vintage.when_made, "1970s");
        // A new item is recent, whatever year was typed.
        let new = provenance_for_condition("new_with_tags", Some(1978), 2026).unwrap();
        assert_eq!(new.when_made, "2020_2026");
        let e = provenance_for_condition("mint", None, 2026).unwrap_err();
        assert_eq!(e.field, "condition");
    }

    #[test]
    fn titles_follow_etsy_rules_and_name_the_field() {
        assert!(validate_title("Robe d'été en lin – taille M, 100% lin").is_ok());
        assert!(validate_title("Levi's 501 ™ jeans: W32 & L34 + belt").is_ok());
        let long = "a".repeat(141);
        for bad in [
            "",
            "   ",
            long.as_str(),
            "50% off 100% wool",
            "a: b: c",
            "this & that & more",
            "1+1+1",
            "Price $20",
            "caret ^ here",
            "emoji 😀 dress",
        ] {
            let e = validate_title(bad).unwrap_err();
            assert_eq!(e.field, "title", "{bad:?}");
            assert!(e.to_string().starts_with("etsy title: "), "{e}");
        }
        assert!(validate_title(&"a".repeat(140)).is_ok());
        assert!(matches!(
            JobError::from(validate_title("").unwrap_err()),
            JobError::Permanent { ref class, .. } if class == "rejected"
        ));
    }

    #[test]
    fn tags_follow_etsy_rules() {
        let t = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(validate_tags(&t(&["linen", "summer dress", "it's-vintage"])).is_ok());
        let many: Vec<String> = (0..14).map(|i| format!("tag{i}")).collect();
        assert!(validate_tags(&many[..13]).is_ok());
        assert!(validate_tags(&many).is_err());
        assert!(validate_tags(&t(&["Linen", "linen"])).is_err());
        assert!(validate_tags(&t(&["a,b"])).is_err());
        assert!(validate_tags(&t(&["twenty-one characters"])).is_err());
    }

    #[test]
    fn pkce_challenge_is_s256_base64url_without_padding() {
        // RFC 7636 appendix B.
        assert_eq!(
            Pkce::challenge_for("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let p = Pkce::new();
        assert_eq!(p.verifier.len(), 64);
        assert_eq!(p.challenge.as_str().len(), 43);
        assert_eq!(p.challenge.as_str(), Pkce::challenge_for(&p.verifier));
        assert_ne!(p.verifier, Pkce::new().verifier);
    }

    #[test]
    fn the_consent_url_has_pkce_state_and_percent_20_scopes() {
        let etsy = EtsyClient::new(&crate::default_settings::<EtsySettings>(
            "marketplaces.etsy",
        ));
        let pkce = Pkce::new();
        let url = etsy
            .consent_url("st-1", &pkce, &["listings_r", "shops_r"])
            .unwrap();
        assert!(url.contains("scope=listings_r%20shops_r"), "{url}");
        let url = reqwest::Url::parse(&url).unwrap();
        assert_eq!(url.path(), "/oauth/connect");
        let q: HashMap<String, String> = url.query_pairs().into_owned().collect();
        assert_eq!(q["state"], "st-1");
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["code_challenge"], pkce.challenge.as_str());
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(
            q["redirect_uri"],
            crate::default_settings::<EtsySettings>("marketplaces.etsy").redirect_uri
        );
    }

    #[test]
    fn forms_send_provenance_together_and_tags_as_one_string() {
        let d = DraftListing {
            title: "T".into(),
            description: "D".into(),
            quantity: 2,
            price_cents: 1205,
            taxonomy_id: 11,
            provenance: Provenance {
                who_made: WhoMade::SomeoneElse,
                when_made: "2020_2026".into(),
                is_supply: false,
            },
            shipping_profile_id: None,
            readiness_state_id: Some(7),
            return_policy_id: None,
            shop_section_id: None,
            tags: vec!["a".into(), "b c".into()],
            materials: vec![],
            listing_type: None,
            should_auto_renew: None,
        };
        let f = d.form();
        let get = |k: &str| f.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("price"), Some("12.05"));
        assert_eq!(get("tags"), Some("a,b c"));
        assert_eq!(get("who_made"), Some("someone_else"));
        assert_eq!(get("is_supply"), Some("false"));
        assert_eq!(get("materials"), None);
        assert_eq!(f.iter().filter(|(n, _)| *n == "tags").count(), 1);
        let u = ListingUpdate {
            tags: Some(vec![]),
            ..ListingUpdate::activate()
        }
        .form();
        assert_eq!(u, vec![("state", "active".into()), ("tags", String::new())]);
    }

    #[test]
    fn money_converts_to_cents() {
        let m = |amount, divisor| Money {
            amount,
            divisor,
            currency_code: "USD".into(),
        };
        assert_eq!(m(1250, 100).cents(), 1250);
        assert_eq!(m(125, 10).cents(), 1250);
        assert_eq!(m(12, 1).cents(), 1200);
    }
}
