//! `/v1/orders`: orders imported from the marketplaces, and `/v1/marketplace-errors`: what the
//! marketplaces refused or failed, newest first.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use marketplaces::Marketplace;

use crate::auth::Seller;
use crate::problem::Problem;
use crate::routes::Tag;
use crate::state::AppState;

#[derive(Debug, Object, sqlx::FromRow)]
#[oai(skip_serializing_if_is_none)]
pub struct OrderView {
    pub id: i64,
    pub marketplace: String,
    pub account_id: i64,
    pub remote_order_id: String,
    pub status: String,
    pub total_cents: Option<i64>,
    pub currency: Option<String>,
    pub placed_at: Option<DateTime<Utc>>,
    pub remote_updated_at: Option<DateTime<Utc>>,
    /// `[{line_id, product_id, sku, quantity}]`.
    pub lines: serde_json::Value,
    pub imported_at: DateTime<Utc>,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct OrderList {
    pub orders: Vec<OrderView>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Object, sqlx::FromRow)]
#[oai(skip_serializing_if_is_none)]
pub struct MarketplaceErrorView {
    pub id: i64,
    pub marketplace: String,
    pub account_id: Option<i64>,
    pub job_id: Option<i64>,
    pub kind: String,
    /// unavailable, rate_limited, auth_expired, auth_revoked, rejected, not_found, …
    pub class: String,
    pub message: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct MarketplaceErrorList {
    pub errors: Vec<MarketplaceErrorView>,
}

pub struct OrdersApi {
    pub st: Arc<AppState>,
}

#[OpenApi(tag = "Tag::Orders")]
impl OrdersApi {
    /// Imported orders, newest first
    #[oai(path = "/v1/orders", method = "get")]
    async fn list(
        &self,
        auth: Seller,
        marketplace: Query<Option<Marketplace>>,
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))] limit: Query<Option<u32>>,
        /// `next_cursor` of the previous page (a positive id).
        #[oai(validator(pattern = r"^[1-9][0-9]{0,17}$"))]
        cursor: Query<Option<String>>,
    ) -> Result<Json<OrderList>, Problem> {
        let limit = limit.0.unwrap_or(50);
        let before = super::parse_cursor(cursor.0.as_deref())?;
        let orders: Vec<OrderView> = sqlx::query_as(
            "SELECT o.id, o.marketplace, o.account_id, o.remote_order_id, o.status, o.total_cents, o.currency,
                    o.placed_at, o.remote_updated_at, o.created_at AS imported_at,
                    coalesce((SELECT jsonb_agg(jsonb_build_object('line_id', l.line_id, 'product_id', l.product_id,
                                                                  'sku', l.sku, 'quantity', l.quantity) ORDER BY l.line_id)
                                FROM order_lines l WHERE l.order_id = o.id), '[]'::jsonb) AS lines
               FROM orders o
              WHERE ($1::text IS NULL OR o.marketplace = $1) AND ($2::bigint IS NULL OR o.id < $2)
                AND o.account_id IN (SELECT id FROM marketplace_accounts WHERE tenant_id = $4)
              ORDER BY o.id DESC LIMIT $3",
        )
        .bind(marketplace.0.map(Marketplace::as_str))
        .bind(before)
        .bind(i64::from(limit))
        .bind(auth.tenant())
        .fetch_all(&self.st.pool)
        .await?;
        let next_cursor = (orders.len() == limit as usize)
            .then(|| orders.last().map(|o| o.id.to_string()))
            .flatten();
        Ok(Json(OrderList {
            orders,
            next_cursor,
        }))
    }

    /// Recent marketplace failures (refusals, outages, rate limits), newest first
    ///
    /// A seller sees their own accounts' failures; ops users see every tenant's.
    #[oai(path = "/v1/marketplace-errors", method = "get")]
    async fn errors(
        &self,
        auth: Seller,
        marketplace: Query<Option<Marketplace>>,
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))] limit: Query<Option<u32>>,
    ) -> Result<Json<MarketplaceErrorList>, Problem> {
        let errors: Vec<MarketplaceErrorView> = sqlx::query_as(
            "SELECT id, marketplace, account_id, job_id, kind, class, message, at FROM marketplace_errors
              WHERE ($1::text IS NULL OR marketplace = $1)
                AND ($3::bigint IS NULL OR account_id IN (SELECT id FROM marketplace_accounts WHERE tenant_id = $3))
              ORDER BY at DESC, id DESC LIMIT $2",
        )
        .bind(marketplace.0.map(Marketplace::as_str))
        .bind(i64::from(limit.0.unwrap_or(50)))
        .bind(auth.job_scope())
        .fetch_all(&self.st.pool)
        .await?;
        Ok(Json(MarketplaceErrorList { errors }))
    }
}
