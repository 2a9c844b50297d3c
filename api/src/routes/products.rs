//! `/v1/products`: the seller's catalogue, and publishing a product to marketplaces.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};

use jobs::catalogue::{self, CatalogueError, Product, ProductFields};
use marketplaces::Marketplace;

use crate::auth::Seller;
use crate::problem::Problem;
use crate::routes::Tag;
use crate::state::AppState;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum Condition {
    NewWithTags,
    NewWithoutTags,
    VeryGood,
    Good,
    Satisfactory,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum ProductStatus {
    Draft,
    Published,
    Sold,
    Archived,
}

fn name<T: poem_openapi::types::ToJSON>(v: T) -> String {
    v.to_json()
        .and_then(|j| j.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// A product as the seller writes it. On create, `title`, `condition` and `price` are required;
/// on update (PATCH) every field is optional and only the ones sent change.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct ProductInput {
    /// The marketplace SKU: letters, digits, `-`, `_`, at most 50. Generated when omitted.
    #[oai(validator(pattern = r"^[A-Za-z0-9_-]{1,50}$"))]
    pub sku: Option<String>,
    #[oai(validator(min_length = 1, max_length = 255))]
    pub title: Option<String>,
    #[oai(validator(max_length = 10000))]
    pub description: Option<String>,
    #[oai(validator(max_length = 100))]
    pub brand: Option<String>,
    #[oai(validator(max_length = 200))]
    pub category: Option<String>,
    pub condition: Option<Condition>,
    /// A decimal amount above zero with at most two decimals, e.g. "12.50".
    #[oai(validator(pattern = r"^[0-9]{1,9}(\.[0-9]{1,2})?$"))]
    pub price: Option<String>,
    /// ISO 4217 code, e.g. EUR.
    #[oai(validator(pattern = "^[A-Z]{3}$"))]
    pub currency: Option<String>,
    #[oai(validator(max_length = 50))]
    pub size: Option<String>,
    #[oai(validator(max_length = 50))]
    pub color: Option<String>,
    #[oai(validator(minimum(value = "0"), maximum(value = "100000")))]
    pub stock_quantity: Option<i32>,
    /// Image URLs (http or https), at most 24.
    #[oai(validator(max_items = 24))]
    pub images: Option<Vec<String>>,
    pub status: Option<ProductStatus>,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct ProductView {
    pub id: i64,
    pub sku: String,
    pub title: String,
    pub description: String,
    pub brand: Option<String>,
    pub category: Option<String>,
    pub condition: String,
    pub price: String,
    pub currency: String,
    pub size: Option<String>,
    pub color: Option<String>,
    pub stock_quantity: i32,
    pub images: Vec<String>,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Product> for ProductView {
    fn from(p: Product) -> Self {
        Self {
            price: format!("{}.{:02}", p.price_cents / 100, p.price_cents % 100),
            images: serde_json::from_value(p.images).unwrap_or_default(),
            id: p.id,
            sku: p.sku,
            title: p.title,
            description: p.description,
            brand: p.brand,
            category: p.category,
            condition: p.condition,
            currency: p.currency,
            size: p.size,
            color: p.color,
            stock_quantity: p.stock_quantity,
            status: p.status,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct ProductList {
    pub products: Vec<ProductView>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct PublishRequest {
    #[oai(validator(min_items = 1, max_items = 3, unique_items))]
    pub marketplaces: Vec<Marketplace>,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct PublishJob {
    pub marketplace: Marketplace,
    pub job_id: i64,
    /// False when this version of the product was already sent to this marketplace.
    pub created: bool,
    pub status_url: String,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct PublishResponse {
    pub jobs: Vec<PublishJob>,
}

/// A product's listing on one marketplace.
#[derive(Debug, Object, sqlx::FromRow)]
#[oai(skip_serializing_if_is_none)]
pub struct ListingView {
    pub marketplace: String,
    pub account_id: Option<i64>,
    pub sku: String,
    /// publishing, published, failed or withdrawn.
    pub status: String,
    pub remote_offer_id: Option<String>,
    pub remote_listing_id: Option<String>,
    pub url: Option<String>,
    /// The last failure: when, its class and message.
    pub last_error: Option<serde_json::Value>,
    pub published_at: Option<DateTime<Utc>>,
    pub withdrawn_at: Option<DateTime<Utc>>,
    pub withdraw_reason: Option<String>,
    /// The state the marketplace last reported (Etsy polling).
    pub remote_state: Option<String>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct ListingList {
    pub listings: Vec<ListingView>,
}

#[derive(ApiResponse)]
pub enum CreatedProduct {
    #[oai(status = 201)]
    Created(Json<ProductView>, #[oai(header = "Location")] String),
}

#[derive(ApiResponse)]
pub enum Deleted {
    #[oai(status = 204)]
    NoContent,
}

#[derive(ApiResponse)]
pub enum Publishing {
    /// The publish jobs are enqueued; follow each at its `status_url`.
    #[oai(status = 202)]
    Accepted(Json<PublishResponse>),
}

impl From<CatalogueError> for Problem {
    fn from(e: CatalogueError) -> Self {
        match e {
            CatalogueError::NotFound => Problem::not_found("no product with this id"),
            CatalogueError::Conflict(d) => Problem::conflict(d),
            CatalogueError::Queue(q) => q.into(),
            CatalogueError::Database(e) => e.into(),
        }
    }
}

/// The fields `POST /v1/products` requires (the document's `NewProduct` lists them too).
pub const CREATE_REQUIRED: [&str; 3] = ["title", "condition", "price"];

/// Checks beyond the schema and converts to the catalogue's fields.
fn fields(p: ProductInput, creating: bool) -> Result<ProductFields, Problem> {
    if creating {
        let present = [p.title.is_some(), p.condition.is_some(), p.price.is_some()];
        for (field, present) in CREATE_REQUIRED.into_iter().zip(present) {
            if !present {
                return Err(Problem::unprocessable(format!(
                    "{field} is required to create a product"
                )));
            }
        }
    }
    // Postgres text cannot hold NUL; say which field has one rather than fail on the insert.
    for (field, v) in [
        ("title", &p.title),
        ("description", &p.description),
        ("brand", &p.brand),
        ("category", &p.category),
        ("size", &p.size),
        ("color", &p.color),
    ] {
        if v.as_deref().is_some_and(|v| v.contains('\0')) {
            return Err(Problem::unprocessable(format!(
                "{field} contains a NUL character (\\u0000)"
            )));
        }
    }
    let price_cents = match p.price.as_deref() {
        None => None,
        Some(s) => {
            let (whole, frac) = s.split_once('.').unwrap_or((s, "0"));
            let frac = format!("{frac:0<2}");
            let cents = whole
                .parse::<i64>()
                .ok()
                .zip(frac.parse::<i64>().ok())
                .map(|(w, f)| w * 100 + f);
            match cents {
                Some(c) if c > 0 => Some(c),
                _ => return Err(Problem::unprocessable("price must be greater than 0")),
            }
        }
    };
    if let Some(bad) = p
        .images
        .iter()
        .flatten()
        .find(|u| !(u.starts_with("https://") || u.starts_with("http://")) || u.len() > 2048)
    {
        return Err(Problem::unprocessable(format!(
            "images: {bad:?} is not an http(s) URL of at most 2048 characters"
        )));
    }
    Ok(ProductFields {
        sku: p.sku,
        title: p.title,
        description: p.description,
        brand: p.brand,
        category: p.category,
        condition: p.condition.map(name),
        price_cents,
        currency: p.currency,
        size: p.size,
        color: p.color,
        stock_quantity: p.stock_quantity,
        images: p.images,
        status: p.status.map(name),
    })
}

pub struct ProductsApi {
    pub st: Arc<AppState>,
}

#[OpenApi(tag = "Tag::Products")]
impl ProductsApi {
    /// Create a product
    #[oai(path = "/v1/products", method = "post")]
    async fn create(
        &self,
        auth: Seller,
        body: Json<ProductInput>,
    ) -> Result<CreatedProduct, Problem> {
        let p = catalogue::create(&self.st.pool, auth.tenant(), fields(body.0, true)?).await?;
        let loc = format!("/v1/products/{}", p.id);
        Ok(CreatedProduct::Created(Json(p.into()), loc))
    }

    /// List products, newest first
    #[oai(path = "/v1/products", method = "get")]
    async fn list(
        &self,
        auth: Seller,
        status: Query<Option<ProductStatus>>,
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))] limit: Query<Option<u32>>,
        /// `next_cursor` of the previous page (a positive id).
        #[oai(validator(pattern = r"^[1-9][0-9]{0,17}$"))]
        cursor: Query<Option<String>>,
    ) -> Result<Json<ProductList>, Problem> {
        let limit = limit.0.unwrap_or(50);
        let before = super::parse_cursor(cursor.0.as_deref())?;
        let rows = catalogue::list(
            &self.st.pool,
            auth.tenant(),
            status.0.map(name).as_deref(),
            before,
            limit,
        )
        .await?;
        let next_cursor = (rows.len() == limit as usize)
            .then(|| rows.last().map(|r| r.id.to_string()))
            .flatten();
        Ok(Json(ProductList {
            products: rows.into_iter().map(Into::into).collect(),
            next_cursor,
        }))
    }

    /// Get a product
    #[oai(path = "/v1/products/:id", method = "get")]
    async fn get(&self, auth: Seller, id: Path<i64>) -> Result<Json<ProductView>, Problem> {
        Ok(Json(
            catalogue::get(&self.st.pool, Some(auth.tenant()), id.0)
                .await?
                .into(),
        ))
    }

    /// Change some fields of a product
    ///
    /// Keeps the marketplaces true in the same transaction: setting `status` to `archived` or
    /// `sold`, or `stock_quantity` to 0, withdraws the product's live listings (one
    /// `withdraw_listing` job each); changing what a published product's listings show (title,
    /// description, price, quantity, images, …) updates every live listing with one
    /// `publish_listing` job each, unless the seller turned `auto_update_listings` off
    /// (`/v1/settings`).
    #[oai(path = "/v1/products/:id", method = "patch")]
    async fn update(
        &self,
        auth: Seller,
        id: Path<i64>,
        body: Json<ProductInput>,
    ) -> Result<Json<ProductView>, Problem> {
        let (p, enqueued) = catalogue::update(
            &self.st.pool,
            &self.st.settings,
            auth.tenant(),
            id.0,
            fields(body.0, false)?,
        )
        .await?;
        self.enqueued(&enqueued);
        Ok(Json(p.into()))
    }

    /// Delete a product (soft: it leaves the catalogue, its history stays)
    ///
    /// Its live listings are withdrawn (one `withdraw_listing` job each, enqueued in the same
    /// transaction); `GET /v1/products/{id}/listings` keeps showing them.
    #[oai(path = "/v1/products/:id", method = "delete")]
    async fn delete(&self, auth: Seller, id: Path<i64>) -> Result<Deleted, Problem> {
        let enqueued =
            catalogue::delete(&self.st.pool, &self.st.settings, auth.tenant(), id.0).await?;
        self.enqueued(&enqueued);
        Ok(Deleted::NoContent)
    }

    /// Publish a product to marketplaces
    ///
    /// Marks it published and enqueues one `publish_listing` job per marketplace in the same
    /// transaction. Repeating the request for an unchanged product returns the same jobs; after
    /// an edit it updates the live listings.
    #[oai(path = "/v1/products/:id/publish", method = "post")]
    async fn publish(
        &self,
        auth: Seller,
        id: Path<i64>,
        body: Json<PublishRequest>,
    ) -> Result<Publishing, Problem> {
        let res = catalogue::publish(
            &self.st.pool,
            &self.st.settings,
            auth.tenant(),
            id.0,
            &body.0.marketplaces,
        )
        .await?;
        Ok(self.accepted::<jobs::kinds::PublishListing>(res))
    }

    /// Withdraw a product's listings from marketplaces
    ///
    /// Enqueues one `withdraw_listing` job per marketplace (eBay: the offer is withdrawn; Etsy:
    /// the listing is deactivated). The product stays in the catalogue.
    #[oai(path = "/v1/products/:id/withdraw", method = "post")]
    async fn withdraw(
        &self,
        auth: Seller,
        id: Path<i64>,
        body: Json<PublishRequest>,
    ) -> Result<Publishing, Problem> {
        let res = catalogue::withdraw(
            &self.st.pool,
            &self.st.settings,
            auth.tenant(),
            id.0,
            &body.0.marketplaces,
        )
        .await?;
        Ok(self.accepted::<jobs::kinds::WithdrawListing>(res))
    }

    /// A product's listings: per marketplace its state, remote ids, URL and last error
    ///
    /// Also for a deleted product, so its withdrawals can be followed.
    #[oai(path = "/v1/products/:id/listings", method = "get")]
    async fn listings(&self, auth: Seller, id: Path<i64>) -> Result<Json<ListingList>, Problem> {
        catalogue::owned(&self.st.pool, auth.tenant(), id.0).await?;
        let listings: Vec<ListingView> = sqlx::query_as(
            "SELECT marketplace, account_id, sku, status, remote_offer_id, remote_listing_id, url,
                    last_error, published_at, withdrawn_at, withdraw_reason, remote_state, updated_at
               FROM listings WHERE product_id = $1 ORDER BY marketplace",
        )
        .bind(id.0)
        .fetch_all(&self.st.pool)
        .await?;
        Ok(Json(ListingList { listings }))
    }
}

impl ProductsApi {
    /// Counts the jobs a catalogue change created and wakes the workers of their kinds.
    fn enqueued(&self, jobs: &catalogue::Enqueued) {
        for (kind, _, _) in jobs.iter().filter(|(_, _, i)| i.created) {
            self.st
                .metrics
                .inc("stoflow_jobs_enqueued_total", &[("kind", kind)], 1);
            self.st.notifier.poke(kind);
        }
    }

    fn accepted<J: engine::Job>(
        &self,
        res: Vec<(Marketplace, engine::queue::Inserted)>,
    ) -> Publishing {
        let created = res.iter().filter(|(_, i)| i.created).count() as u64;
        let kind = <J as engine::Kind>::KIND;
        self.st
            .metrics
            .inc("stoflow_jobs_enqueued_total", &[("kind", kind)], created);
        if created > 0 {
            self.st.notifier.poke(kind);
        }
        let jobs = res
            .into_iter()
            .map(|(m, i)| PublishJob {
                marketplace: m,
                job_id: i.id,
                created: i.created,
                status_url: format!("/v1/jobs/{}", i.id),
            })
            .collect();
        Publishing::Accepted(Json(PublishResponse { jobs }))
    }
}
