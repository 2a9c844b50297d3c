//! Stoflow's existing browser extension, served as its contract describes it (seed 002): it polls
//! `GET /api/plugin/tasks?limit=10` with the seller's own access token (the API's JWT) and gets a
//! list of `{id, task_type, payload, created_at}`, runs each against Vinted, and posts
//! `{success, result | error_message, error_details}` to `/api/plugin/tasks/{id}/result`.
//!
//! It is a second vocabulary over the same tasks as the leased protocol of [`crate::plugin`],
//! so the same guarantees hold: 3 attempts with backoff, pickup within 1 h, a result after the
//! lease expired (or for a task the extension does not hold) refused and changing nothing, and a
//! seller only ever sees the tasks of their own tenant's Vinted accounts.
//!
//! Where the seed is silent or ambiguous, our reading:
//! - Fetching a task leases it (the seed's `pending → executing on fetch`), for the lease timeout
//!   (`[plugin] lease_timeout_ms`); leases of this protocol carry the [`LEASE_PREFIX`], so a
//!   result is accepted only for a task this protocol fetched, never for one the reference runner
//!   holds. As in the leased protocol, one task per Vinted account is out at a time (Vinted
//!   blocks bursts): `limit` bounds the list, which has at most one task per account.
//! - Task types: `vinted_publish`, `vinted_update`, `vinted_delete`, and `vinted_sync_sales`
//!   (read the sold orders and closed wardrobe items; its payload is the leased protocol's
//!   `sync_sales` params and its result `{orders, closed_items}` as there).
//! - Payload: the seed's keys; `vinted_product_id` is our listing id; `vinted_id` (the item to
//!   update or delete) is added; `brand_id` and `gender` are null (we keep no Vinted brand ids
//!   and no gender: the brand name is in `product_data.brand`); `category_id` is the Vinted
//!   catalog id; `is_bottom` says whether the category names trousers, jeans, shorts or a skirt;
//!   `mapped_attributes.package_size_id` and `price_currency` are added. `product_data.images`
//!   joins the photo URLs with commas (a comma inside a URL is sent as `%2C`).
//! - `error_details.error_type`: `mapping_error` fails the task at once (retrying cannot fix a
//!   mapping); `api_error`, `image_error` and any other type are retried while attempts remain.
//!   `blocked` (DataDome, expired session) pauses the account as in the leased protocol.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::config::PluginSettings;
use crate::plugin::{self, Action, ErrorType, LeaseOutcome, PluginError, Report, TaskView};

/// Marks the leases handed out by this protocol.
pub const LEASE_PREFIX: &str = "ext1-";

/// The seed's task types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Enum))]
#[cfg_attr(feature = "openapi", oai(rename_all = "snake_case"))]
pub enum TaskType {
    VintedPublish,
    VintedUpdate,
    VintedDelete,
    VintedSyncSales,
}

impl From<Action> for TaskType {
    fn from(a: Action) -> Self {
        match a {
            Action::CreateListing => Self::VintedPublish,
            Action::UpdateListing => Self::VintedUpdate,
            Action::DeleteListing => Self::VintedDelete,
            Action::SyncSales => Self::VintedSyncSales,
        }
    }
}

/// A task as the extension receives it.
#[derive(Debug, Clone)]
pub struct ExtTask {
    pub id: i64,
    pub task_type: TaskType,
    pub payload: Value,
    pub created_at: DateTime<Utc>,
}

/// Leases up to `limit` tasks of `tenant`'s Vinted accounts (at most one per account; paused
/// accounts give none). Returns them and the job ids to [`plugin::wake`].
pub async fn poll(
    pool: &PgPool,
    s: &PluginSettings,
    tenant: i64,
    limit: usize,
) -> Result<(Vec<ExtTask>, Vec<i64>), PluginError> {
    let accounts: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM marketplace_accounts
          WHERE tenant_id = $1 AND marketplace = 'vinted' AND status <> 'disconnected' ORDER BY id",
    )
    .bind(tenant)
    .fetch_all(pool)
    .await?;
    let mut leased = Vec::new();
    let mut woken = Vec::new();
    for account in accounts {
        if leased.len() >= limit {
            break;
        }
        let lease_id = format!("{LEASE_PREFIX}{}", plugin::hex(&rand::random::<[u8; 16]>()));
        let (out, w) = plugin::lease_as(pool, s, account, lease_id).await?;
        woken.extend(w);
        if let LeaseOutcome::Task(t) = out {
            leased.push(t);
        }
    }
    let ids: Vec<i64> = leased.iter().map(|t| t.task_id).collect();
    type Row = (i64, Option<i64>, Option<i64>, DateTime<Utc>, Option<String>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT t.id, t.product_id, t.listing_id, t.created_at, p.category
           FROM plugin_tasks t LEFT JOIN products p ON p.id = t.product_id WHERE t.id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    let tasks = leased
        .into_iter()
        .filter_map(|t| {
            let (_, product, listing, created_at, category) =
                rows.iter().find(|r| r.0 == t.task_id)?.clone();
            Some(ExtTask {
                id: t.task_id,
                task_type: t.action.into(),
                payload: payload(t.action, &t.params, product, listing, category.as_deref()),
                created_at,
            })
        })
        .collect();
    Ok((tasks, woken))
}

/// The seed's payload for a task of `action` with the leased protocol's `params`.
pub fn payload(
    action: Action,
    params: &Value,
    product_id: Option<i64>,
    listing_id: Option<i64>,
    category: Option<&str>,
) -> Value {
    let vinted_id = match &params["remote_id"] {
        Value::String(s) => s.parse::<u64>().map(Value::from).unwrap_or(json!(s)),
        other => other.clone(),
    };
    match action {
        Action::SyncSales => params.clone(),
        Action::DeleteListing => json!({
            "product_id": product_id, "vinted_product_id": listing_id, "vinted_id": vinted_id,
        }),
        Action::CreateListing | Action::UpdateListing => {
            let price = params["price"]["amount"]
                .as_str()
                .and_then(|a| a.parse::<f64>().ok());
            let images: Vec<String> = params["photo_urls"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|u| u.as_str().map(|u| u.replace(',', "%2C")))
                .collect();
            let is_bottom = category.is_some_and(|c| {
                let c = c.to_lowercase();
                [
                    "jean", "trouser", "pant", "short", "skirt", "jupe", "pantalon",
                ]
                .iter()
                .any(|k| c.contains(k))
            });
            json!({
                "product_id": product_id,
                "vinted_product_id": listing_id,
                "vinted_id": vinted_id,
                "title": params["title"],
                "description": params["description"],
                "price": price,
                "price_currency": params["price"]["currency_code"],
                "mapped_attributes": {
                    "brand_id": null,
                    "color_id": params["color_ids"][0],
                    "condition_id": params["status_id"],
                    "size_id": params["size_id"],
                    "category_id": params["catalog_id"],
                    "gender": null,
                    "is_bottom": is_bottom,
                    "package_size_id": params["package_size_id"],
                },
                "product_data": {
                    "brand": params["brand"],
                    "category": category,
                    "size": params["size"],
                    "color": params["color"],
                    "condition": params["condition"],
                    "sku": params["sku"],
                    "images": images.join(","),
                },
            })
        }
    }
}

/// What the extension reports, in the seed's vocabulary (already checked for shape).
#[derive(Debug, Clone)]
pub enum ExtOutcome {
    Published {
        vinted_id: Option<String>,
        url: Option<String>,
        image_ids: Option<String>,
    },
    Sales(crate::vinted_sales::Sales),
    Failed {
        error_type: String,
        message: String,
    },
}

/// The leased protocol's error type for the seed's `error_details.error_type`.
pub fn error_type(t: &str) -> ErrorType {
    match t {
        "mapping_error" | "validation" => ErrorType::Validation,
        "blocked" => ErrorType::Blocked,
        _ => ErrorType::Transient,
    }
}

/// The action of task `id` if it belongs to `tenant` (None: not found for this seller).
pub async fn action_of(pool: &PgPool, tenant: i64, id: i64) -> Result<Option<Action>, sqlx::Error> {
    let a: Option<String> = sqlx::query_scalar(
        "SELECT t.action FROM plugin_tasks t JOIN marketplace_accounts a ON a.id = t.account_id
          WHERE t.id = $1 AND a.tenant_id = $2",
    )
    .bind(id)
    .bind(tenant)
    .fetch_optional(pool)
    .await?;
    Ok(a.and_then(|a| Action::parse(&a)))
}

/// Records the extension's result for task `id` of `tenant`: accepted only while this protocol
/// holds the task's lease (else 409, nothing changes); another tenant's task is not found.
pub async fn report(
    pool: &PgPool,
    s: &PluginSettings,
    tenant: i64,
    id: i64,
    outcome: ExtOutcome,
) -> Result<TaskView, PluginError> {
    let row: Option<(i64, Option<String>)> = sqlx::query_as(
        "SELECT t.account_id, t.lease_id FROM plugin_tasks t
           JOIN marketplace_accounts a ON a.id = t.account_id WHERE t.id = $1 AND a.tenant_id = $2",
    )
    .bind(id)
    .bind(tenant)
    .fetch_optional(pool)
    .await?;
    let Some((account, lease)) = row else {
        return Err(PluginError::NotFound(format!(
            "no task {id} for this seller"
        )));
    };
    // Not fetched through this protocol: a lease id no task has, so the result is refused.
    let lease_id = lease
        .filter(|l| l.starts_with(LEASE_PREFIX))
        .unwrap_or_else(|| format!("{LEASE_PREFIX}none"));
    let mut r = Report {
        lease_id,
        success: true,
        remote_id: None,
        url: None,
        image_ids: None,
        error: None,
        sales: None,
        execution_time_ms: None,
        executed_at: None,
    };
    match outcome {
        ExtOutcome::Published {
            vinted_id,
            url,
            image_ids,
        } => {
            r.remote_id = vinted_id;
            r.url = url;
            r.image_ids = image_ids;
        }
        ExtOutcome::Sales(sales) => r.sales = Some(sales),
        ExtOutcome::Failed {
            error_type: t,
            message,
        } => {
            r.success = false;
            r.error = Some((error_type(&t), message));
        }
    }
    plugin::report(pool, s, account, id, r).await
}

/// The seed's status words for a task state.
pub fn status_word(state: &str) -> &'static str {
    match state {
        "pending" => "pending",
        "leased" => "processing",
        "succeeded" => "completed",
        "timed_out" => "timeout",
        _ => "failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_payload_has_the_seed_shape() {
        let params = json!({
            "remote_id": null, "sku": "S1", "title": "Levi's 501", "description": "Nice jeans",
            "brand": "Levi's", "size": "32", "size_id": 207, "color": "blue", "color_ids": [12],
            "condition": "very_good", "status_id": 2, "catalog_id": 5, "package_size_id": 1,
            "price": {"amount": "27.90", "currency_code": "EUR"},
            "photo_urls": ["https://i/1.jpg", "https://i/a,b.jpg"],
        });
        let p = payload(
            Action::CreateListing,
            &params,
            Some(123),
            Some(789),
            Some("Jeans"),
        );
        assert_eq!(p["price"], json!(27.9));
        assert_eq!(p["mapped_attributes"]["color_id"], 12);
        assert_eq!(p["mapped_attributes"]["is_bottom"], true);
        assert_eq!(
            p["product_data"]["images"],
            "https://i/1.jpg,https://i/a%2Cb.jpg"
        );
        let d = payload(
            Action::DeleteListing,
            &json!({"remote_id": "42"}),
            Some(1),
            Some(2),
            None,
        );
        assert_eq!(d["vinted_id"], 42);
    }

    #[test]
    fn mapping_errors_are_not_retried() {
        assert_eq!(error_type("mapping_error"), ErrorType::Validation);
        assert_eq!(error_type("api_error"), ErrorType::Transient);
        assert_eq!(error_type("image_error"), ErrorType::Transient);
    }
}
