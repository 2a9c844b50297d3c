//! eBay REST Sell APIs: OAuth (authorization code with Basic client auth, on `oauth2`), Inventory (item →
//! offer → publish / withdraw) and Fulfillment (orders by last-modified date). Paths and bodies
//! follow shared/marketplaces.md §1; every non-2xx goes through [`super::http::send`].

use chrono::{DateTime, SecondsFormat, Utc};
use oauth2::TokenResponse as _;
use reqwest::header::{CONTENT_LANGUAGE, CONTENT_TYPE};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::MarketplaceError;
use super::http::{json, send};
use super::oauth;
use crate::marketplace::Marketplace;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EbaySettings {
    pub api_base: String,
    pub auth_base: String,
    pub client_id: String,
    pub client_secret: engine::settings::Secret,
    pub runame: String,
    pub marketplace_id: String,
    pub merchant_location_key: String,
    pub fulfillment_policy_id: String,
    pub payment_policy_id: String,
    pub return_policy_id: String,
    pub category_id: String,
    pub content_language: String,
    pub timeout_ms: u64,
    /// Answers eBay's `challenge_code` with `notification_endpoint` (the URL as registered).
    pub notification_verification_token: engine::settings::Secret,
    pub notification_endpoint: String,
}

const M: Marketplace = Marketplace::Ebay;

/// The scopes the jobs need (full URLs, space-separated on the wire).
pub const SCOPES: &[&str] = &[
    "https://api.ebay.com/oauth/api_scope/sell.inventory",
    "https://api.ebay.com/oauth/api_scope/sell.fulfillment",
    "https://api.ebay.com/oauth/api_scope/sell.account",
    "https://api.ebay.com/oauth/api_scope/commerce.identity.readonly",
];

/// Tokens from the authorization-code grant.
#[derive(Debug, Clone, Deserialize)]
pub struct UserTokens {
    pub access_token: String,
    pub expires_in: i64,
    pub refresh_token: String,
    pub refresh_token_expires_in: i64,
}

/// A refreshed access token (eBay keeps the refresh token: none comes back).
#[derive(Debug, Clone, Deserialize)]
pub struct AccessToken {
    pub access_token: String,
    pub expires_in: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Amount {
    /// A decimal string, e.g. "29.99" (eBay wants strings, not numbers).
    pub value: String,
    pub currency: String,
}

/// `InventoryItem` (a full replacement on every PUT).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InventoryItem {
    pub availability: Availability,
    /// eBay's condition enum, e.g. `USED_VERY_GOOD`.
    pub condition: String,
    pub product: Product,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Availability {
    pub ship_to_location_availability: ShipTo,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ShipTo {
    pub quantity: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Product {
    pub title: String,
    pub description: String,
    /// Name → values, e.g. {"Brand": ["Acme"]}.
    pub aspects: std::collections::BTreeMap<String, Vec<String>>,
    pub image_urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub brand: Option<String>,
}

/// `EbayOfferDetailsWithKeys`: what createOffer takes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OfferDetails {
    pub sku: String,
    pub marketplace_id: String,
    /// `FIXED_PRICE`.
    pub format: String,
    pub available_quantity: i64,
    pub category_id: String,
    pub listing_description: String,
    /// `GTC` for fixed price.
    pub listing_duration: String,
    pub merchant_location_key: String,
    pub listing_policies: ListingPolicies,
    pub pricing_summary: PricingSummary,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ListingPolicies {
    pub fulfillment_policy_id: String,
    pub payment_policy_id: String,
    pub return_policy_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PricingSummary {
    pub price: Amount,
}

/// An offer as getOffers returns it (the fields the jobs use).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Offer {
    pub offer_id: String,
    pub sku: String,
    /// `PUBLISHED` or `UNPUBLISHED`.
    pub status: String,
    #[serde(default)]
    pub listing: Option<OfferListing>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OfferListing {
    pub listing_id: String,
    #[serde(default)]
    pub listing_status: Option<String>,
}

/// A page of getOrders.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderPage {
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
    #[serde(default)]
    pub orders: Vec<Order>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    pub order_id: String,
    pub creation_date: DateTime<Utc>,
    pub last_modified_date: DateTime<Utc>,
    #[serde(default)]
    pub order_fulfillment_status: Option<String>,
    #[serde(default)]
    pub order_payment_status: Option<String>,
    #[serde(default)]
    pub pricing_summary: Option<Value>,
    #[serde(default)]
    pub line_items: Vec<LineItem>,
    #[serde(default)]
    pub cancel_status: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LineItem {
    pub line_item_id: String,
    #[serde(default)]
    pub sku: Option<String>,
    /// The listing id.
    #[serde(default)]
    pub legacy_item_id: Option<String>,
    pub quantity: i64,
}

pub struct EbayClient {
    http: reqwest::Client,
    /// The OAuth flows, with Basic client authentication (eBay's own clients send the raw
    /// `id:secret`; `oauth2` form-encodes both first, RFC 6749 §2.3.1, which changes nothing for
    /// eBay's `[A-Za-z0-9-]` ids and secrets).
    oauth: Result<oauth::Client<EbayTokenFields>, String>,
    s: EbaySettings,
}

/// The field eBay adds to the authorization-code grant's answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EbayTokenFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token_expires_in: Option<i64>,
}

impl oauth2::ExtraTokenFields for EbayTokenFields {}

impl EbayClient {
    pub fn new(s: &EbaySettings) -> Self {
        let oauth = oauth::client(
            &s.client_id,
            format!("{}/oauth2/authorize", s.auth_base.trim_end_matches('/')),
            format!(
                "{}/identity/v1/oauth2/token",
                s.api_base.trim_end_matches('/')
            ),
        )
        .map(|c| {
            c.set_client_secret(oauth2::ClientSecret::new(
                s.client_secret.expose().to_string(),
            ))
        });
        Self {
            http: super::http::http_client(s.timeout_ms),
            oauth,
            s: s.clone(),
        }
    }

    fn api(&self, path: &str) -> String {
        format!("{}{path}", self.s.api_base.trim_end_matches('/'))
    }

    fn oauth(&self) -> Result<&oauth::Client<EbayTokenFields>, MarketplaceError> {
        oauth::built(M, &self.oauth)
    }

    /// The consent page to send the seller to; eBay redirects to the RuName's accept URL with
    /// `code` and `state`. The RuName is not a URL, so it is an extra parameter (see
    /// [`oauth`]).
    pub fn consent_url(&self, state: &str) -> Result<String, MarketplaceError> {
        let (url, _) = self
            .oauth()?
            .authorize_url(|| oauth2::CsrfToken::new(state.to_string()))
            .add_scopes(oauth::scopes(SCOPES))
            .add_extra_param("redirect_uri", self.s.runame.as_str())
            .url();
        Ok(url.into())
    }

    /// The HTTP client `oauth2`'s token requests go out on: ours, through `marketplace::send`.
    fn token_http(&self) -> oauth::Http<'_> {
        oauth::Http {
            m: M,
            http: &self.http,
        }
    }

    /// Exchanges an authorization code (already URL-decoded once) for tokens.
    pub async fn exchange_code(&self, code: &str) -> Result<UserTokens, MarketplaceError> {
        let t = self
            .oauth()?
            .exchange_code(oauth2::AuthorizationCode::new(code.to_string()))
            .add_extra_param("redirect_uri", self.s.runame.as_str())
            .request_async(&self.token_http())
            .await
            .map_err(|e| oauth::error(M, e))?;
        Ok(UserTokens {
            access_token: t.access_token().secret().clone(),
            expires_in: expires_in(&t)?,
            refresh_token: oauth::required(M, t.refresh_token(), "refresh_token")?
                .secret()
                .clone(),
            refresh_token_expires_in: oauth::required(
                M,
                t.extra_fields().refresh_token_expires_in,
                "refresh_token_expires_in",
            )?,
        })
    }

    /// A new access token from the refresh token; `invalid_grant` means the seller must reconnect.
    pub async fn refresh(&self, refresh_token: &str) -> Result<AccessToken, MarketplaceError> {
        let rt = oauth2::RefreshToken::new(refresh_token.to_string());
        let t = self
            .oauth()?
            .exchange_refresh_token(&rt)
            .add_scopes(oauth::scopes(SCOPES))
            .request_async(&self.token_http())
            .await
            .map_err(|e| oauth::error(M, e))?;
        Ok(AccessToken {
            access_token: t.access_token().secret().clone(),
            expires_in: expires_in(&t)?,
        })
    }

    fn inventory(&self, path: &str) -> String {
        self.api(&format!("/sell/inventory/v1{path}"))
    }

    /// createOrReplaceInventoryItem: idempotent by SKU.
    pub async fn put_inventory_item(
        &self,
        token: &str,
        sku: &str,
        item: &InventoryItem,
    ) -> Result<(), MarketplaceError> {
        let req = self
            .http
            .put(self.inventory(&format!("/inventory_item/{}", enc(sku))))
            .bearer_auth(token)
            .header(CONTENT_TYPE, "application/json")
            .header(CONTENT_LANGUAGE, &self.s.content_language)
            .json(item);
        send(M, req).await.map(|_| ())
    }

    /// The item, or None when eBay has no such SKU.
    pub async fn get_inventory_item(
        &self,
        token: &str,
        sku: &str,
    ) -> Result<Option<InventoryItem>, MarketplaceError> {
        let req = self
            .http
            .get(self.inventory(&format!("/inventory_item/{}", enc(sku))))
            .bearer_auth(token);
        match send(M, req).await {
            Ok(r) => json(M, r).await.map(Some),
            Err(MarketplaceError::NotFound { .. }) => Ok(None),
            Err(e) if is_unknown_sku(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes the item, its offers and its listing; deleting a missing SKU is not an error.
    pub async fn delete_inventory_item(
        &self,
        token: &str,
        sku: &str,
    ) -> Result<(), MarketplaceError> {
        let req = self
            .http
            .delete(self.inventory(&format!("/inventory_item/{}", enc(sku))))
            .bearer_auth(token);
        match send(M, req).await {
            Ok(_) | Err(MarketplaceError::NotFound { .. }) => Ok(()),
            Err(e) if is_unknown_sku(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Offers of a SKU (none when eBay knows no offer for it).
    pub async fn offers_by_sku(
        &self,
        token: &str,
        sku: &str,
    ) -> Result<Vec<Offer>, MarketplaceError> {
        #[derive(Deserialize)]
        struct Offers {
            #[serde(default)]
            offers: Vec<Offer>,
        }
        let req = self
            .http
            .get(self.inventory("/offer"))
            .query(&[
                ("sku", sku),
                ("marketplace_id", self.s.marketplace_id.as_str()),
            ])
            .bearer_auth(token);
        match send(M, req).await {
            Ok(r) => Ok(json::<Offers>(M, r).await?.offers),
            Err(MarketplaceError::NotFound { .. }) => Ok(vec![]),
            Err(e) if is_unknown_sku(&e) || is_offer_unavailable(&e) => Ok(vec![]),
            Err(e) => Err(e),
        }
    }

    /// createOffer; when the SKU already has its offer (25002) the existing offer's id is
    /// returned, so a publish retried after a crash never creates a second one.
    pub async fn create_offer(
        &self,
        token: &str,
        offer: &OfferDetails,
    ) -> Result<String, MarketplaceError> {
        match self.post_offer(token, offer).await {
            Err(MarketplaceError::AlreadyApplied { .. }) => {
                self.existing_offer(token, &offer.sku).await
            }
            other => other,
        }
    }

    async fn post_offer(
        &self,
        token: &str,
        offer: &OfferDetails,
    ) -> Result<String, MarketplaceError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Created {
            offer_id: String,
        }
        let req = self
            .http
            .post(self.inventory("/offer"))
            .bearer_auth(token)
            .header(CONTENT_TYPE, "application/json")
            .header(CONTENT_LANGUAGE, &self.s.content_language)
            .json(offer);
        Ok(json::<Created>(M, send(M, req).await?).await?.offer_id)
    }

    /// The id of the offer eBay reported as existing for `sku`.
    async fn existing_offer(&self, token: &str, sku: &str) -> Result<String, MarketplaceError> {
        let existing = self.offers_by_sku(token, sku).await?;
        existing
            .into_iter()
            .next()
            .map(|o| o.offer_id)
            .ok_or_else(|| MarketplaceError::Unavailable {
                marketplace: M.as_str(),
                detail: format!("offer for {sku} reported as existing but not found"),
            })
    }

    /// updateOffer: replaces the whole offer (price, quantity, policies…); on a published offer
    /// eBay revises the live listing.
    pub async fn update_offer(
        &self,
        token: &str,
        offer_id: &str,
        offer: &OfferDetails,
    ) -> Result<(), MarketplaceError> {
        let req = self
            .http
            .put(self.inventory(&format!("/offer/{}", enc(offer_id))))
            .bearer_auth(token)
            .header(CONTENT_TYPE, "application/json")
            .header(CONTENT_LANGUAGE, &self.s.content_language)
            .json(offer);
        send(M, req).await.map(|_| ())
    }

    /// The offer's id with exactly this content: updated in place when `known` (or an offer
    /// eBay already holds for the SKU) exists, created otherwise.
    pub async fn upsert_offer(
        &self,
        token: &str,
        known: Option<&str>,
        offer: &OfferDetails,
    ) -> Result<String, MarketplaceError> {
        if let Some(id) = known {
            match self.update_offer(token, id, offer).await {
                Ok(()) => return Ok(id.to_string()),
                // Deleted on eBay since: make it again.
                Err(e)
                    if matches!(e, MarketplaceError::NotFound { .. })
                        || is_offer_unavailable(&e) => {}
                Err(e) => return Err(e),
            }
        }
        match self.post_offer(token, offer).await {
            // An earlier run created it and crashed before recording it: bring it up to date.
            Err(MarketplaceError::AlreadyApplied { .. }) => {
                let id = self.existing_offer(token, &offer.sku).await?;
                self.update_offer(token, &id, offer).await?;
                Ok(id)
            }
            other => other,
        }
    }

    /// publishOffer → the listing id.
    pub async fn publish_offer(
        &self,
        token: &str,
        offer_id: &str,
    ) -> Result<String, MarketplaceError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Published {
            listing_id: String,
        }
        let req = self
            .http
            .post(self.inventory(&format!("/offer/{}/publish", enc(offer_id))))
            .bearer_auth(token);
        Ok(json::<Published>(M, send(M, req).await?).await?.listing_id)
    }

    /// withdrawOffer: ends the listing, keeps the offer.
    pub async fn withdraw_offer(
        &self,
        token: &str,
        offer_id: &str,
    ) -> Result<(), MarketplaceError> {
        let req = self
            .http
            .post(self.inventory(&format!("/offer/{}/withdraw", enc(offer_id))))
            .bearer_auth(token);
        send(M, req).await.map(|_| ())
    }

    /// getOrders modified at or after `since`, one page.
    pub async fn orders_modified_since(
        &self,
        token: &str,
        since: DateTime<Utc>,
        limit: u32,
        offset: u32,
    ) -> Result<OrderPage, MarketplaceError> {
        let filter = format!(
            "lastmodifieddate:[{}..]",
            since.to_rfc3339_opts(SecondsFormat::Millis, true)
        );
        let req = self
            .http
            .get(self.api("/sell/fulfillment/v1/order"))
            .query(&[
                ("filter", filter),
                ("limit", limit.to_string()),
                ("offset", offset.to_string()),
            ])
            .bearer_auth(token);
        json(M, send(M, req).await?).await
    }
}

impl EbayClient {
    /// An application token (client-credentials grant, base scope): for calls made for the app,
    /// not a seller (the Notification API's public keys).
    pub async fn app_token(&self) -> Result<String, MarketplaceError> {
        let t = self
            .oauth()?
            .exchange_client_credentials()
            .add_scope(oauth2::Scope::new(
                "https://api.ebay.com/oauth/api_scope".into(),
            ))
            .request_async(&self.token_http())
            .await
            .map_err(|e| oauth::error(M, e))?;
        Ok(t.access_token().secret().clone())
    }

    /// getPublicKey: the key that signs notifications under `kid` (PEM, possibly on one line).
    pub async fn public_key(
        &self,
        app_token: &str,
        kid: &str,
    ) -> Result<PublicKey, MarketplaceError> {
        let req = self
            .http
            .get(self.api(&format!(
                "/commerce/notification/v1/public_key/{}",
                enc(kid)
            )))
            .bearer_auth(app_token);
        json(M, send(M, req).await?).await
    }

    /// getOrder: one order by id.
    pub async fn order(&self, token: &str, order_id: &str) -> Result<Order, MarketplaceError> {
        let req = self
            .http
            .get(self.api(&format!("/sell/fulfillment/v1/order/{}", enc(order_id))))
            .bearer_auth(token);
        json(M, send(M, req).await?).await
    }

    /// Identity getUser: the seller's eBay user id and username (which notifications name).
    pub async fn user(&self, token: &str) -> Result<User, MarketplaceError> {
        let req = self
            .http
            .get(self.api("/commerce/identity/v1/user/"))
            .bearer_auth(token);
        json(M, send(M, req).await?).await
    }
}

/// getPublicKey's answer.
#[derive(Debug, Clone, Deserialize)]
pub struct PublicKey {
    pub algorithm: String,
    pub digest: String,
    pub key: String,
}

/// Identity getUser's answer (the fields we keep).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub user_id: String,
    pub username: String,
}

/// Seconds the access token lives (eBay always says; 7200).
fn expires_in(t: &oauth::TokenResponse<EbayTokenFields>) -> Result<i64, MarketplaceError> {
    let d = oauth::required(M, t.expires_in(), "expires_in")?;
    Ok(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// eBay answers an unknown SKU with 400 + 25702 (or 25710) rather than 404.
fn is_unknown_sku(e: &MarketplaceError) -> bool {
    matches!(e, MarketplaceError::Rejected { code, .. } if code == "25702" || code == "25710")
}

fn is_offer_unavailable(e: &MarketplaceError) -> bool {
    matches!(e, MarketplaceError::Rejected { code, .. } if code == "25713")
}

fn enc(s: &str) -> String {
    serde_urlencoded::to_string([("", s)])
        .expect("encodes")
        .trim_start_matches('=')
        .replace('+', "%20")
}

/// What a seller's eBay account provides to every listing (its location and business policies,
/// and the category to list in): read from the account once accounts are stored.
#[derive(Debug, Clone)]
pub struct SellerSetup {
    pub merchant_location_key: String,
    pub fulfillment_policy_id: String,
    pub payment_policy_id: String,
    pub return_policy_id: String,
    pub category_id: String,
}

/// eBay's condition for a product condition on Vinted's scale.
pub fn condition(c: &str) -> &'static str {
    match c {
        "new_with_tags" => "NEW",
        "new_without_tags" => "NEW_OTHER",
        "very_good" => "USED_VERY_GOOD",
        "good" => "USED_GOOD",
        _ => "USED_ACCEPTABLE",
    }
}

/// A price in cents as eBay's decimal string.
pub fn price(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_are_decimal_strings_and_conditions_map() {
        assert_eq!(price(1250), "12.50");
        assert_eq!(price(5), "0.05");
        assert_eq!(condition("very_good"), "USED_VERY_GOOD");
        assert_eq!(condition("new_with_tags"), "NEW");
    }

    #[test]
    fn the_consent_url_names_the_runame_which_oauth2_cannot_hold_as_a_redirect_url() {
        let s = crate::default_settings::<EbaySettings>("marketplaces.ebay");
        assert!(oauth2::RedirectUrl::new(s.runame.clone()).is_err());
        let url = EbayClient::new(&s).consent_url("st4te").unwrap();
        let url = reqwest::Url::parse(&url).unwrap();
        assert_eq!(url.path(), "/oauth2/authorize");
        let q: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
        assert_eq!(q["redirect_uri"], s.runame);
        assert_eq!(q["client_id"], s.client_id);
        assert_eq!(q["state"], "st4te");
        assert_eq!(q["scope"], SCOPES.join(" "));
    }

    #[test]
    fn endpoints_that_are_not_urls_fail_the_call_not_the_process() {
        let mut s = crate::default_settings::<EbaySettings>("marketplaces.ebay");
        s.auth_base = "not a url".into();
        let e = EbayClient::new(&s).consent_url("st4te").unwrap_err();
        assert_eq!(e.class(), "unavailable", "{e}");
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(enc("SF-1_A"), "SF-1_A");
        assert_eq!(enc("a b/c"), "a%20b%2Fc");
    }
}
