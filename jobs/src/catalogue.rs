//! The seller's catalogue: products, and publishing them (which enqueues `publish_listing` jobs in
//! the same transaction as the status change, so a product is never marked published without its
//! jobs, nor jobs enqueued for a change that rolled back).

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgPool, Postgres, QueryBuilder};

use crate::Settings;
use crate::kinds::{PublishListing, WithdrawListing};
use crate::seller_settings;
use engine::queue::{self, Inserted, NewJob};
use marketplaces::Marketplace;

#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("no product with this id")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Queue(#[from] queue::QueueError),
}

pub use marketplaces::CONDITIONS;
pub const STATUSES: &[&str] = &["draft", "published", "sold", "archived"];

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Product {
    pub id: i64,
    /// The seller's business that owns it; every API query is scoped by it.
    pub tenant_id: i64,
    pub sku: String,
    pub title: String,
    pub description: String,
    pub brand: Option<String>,
    pub category: Option<String>,
    pub condition: String,
    pub price_cents: i64,
    pub currency: String,
    pub size: Option<String>,
    pub color: Option<String>,
    pub stock_quantity: i32,
    pub images: Value,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Every field of a product a seller sets; `None` in an update leaves the field as it is.
#[derive(Debug, Clone, Default)]
pub struct ProductFields {
    pub sku: Option<String>,
    pub title: Option<String>,
    pub description: Option<String>,
    pub brand: Option<String>,
    pub category: Option<String>,
    pub condition: Option<String>,
    pub price_cents: Option<i64>,
    pub currency: Option<String>,
    pub size: Option<String>,
    pub color: Option<String>,
    pub stock_quantity: Option<i32>,
    pub images: Option<Vec<String>>,
    pub status: Option<String>,
}

const COLUMNS: &str = "id, tenant_id, sku, title, description, brand, category, condition, price_cents, currency, size, \
                       color, stock_quantity, images, status, created_at, updated_at";

fn map_unique(e: sqlx::Error) -> CatalogueError {
    match &e {
        sqlx::Error::Database(d) if d.constraint() == Some("products_tenant_sku_key") => {
            CatalogueError::Conflict("another product already has this sku".into())
        }
        _ => CatalogueError::Database(e),
    }
}

/// A SKU for a product that came without one: `SF` and 10 random characters.
fn generated_sku() -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    let tail: String = (0..10)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect();
    format!("SF{tail}")
}

/// Creates a product of `tenant`. `title`, `condition` and `price_cents` must be set (the API
/// checks).
pub async fn create(
    pool: &PgPool,
    tenant: i64,
    f: ProductFields,
) -> Result<Product, CatalogueError> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO products (sku, title, description, brand, category, condition, price_cents, currency,
                               size, color, stock_quantity, images, status, tenant_id)
         VALUES ($1, $2, coalesce($3, ''), $4, $5, $6, $7, coalesce($8, 'EUR'), $9, $10, coalesce($11, 1),
                 coalesce($12, '[]'::jsonb), coalesce($13, 'draft'), $14)
         RETURNING {COLUMNS}"
    )))
    .bind(f.sku.unwrap_or_else(generated_sku))
    .bind(f.title)
    .bind(f.description)
    .bind(f.brand)
    .bind(f.category)
    .bind(f.condition)
    .bind(f.price_cents)
    .bind(f.currency)
    .bind(f.size)
    .bind(f.color)
    .bind(f.stock_quantity)
    .bind(f.images.map(Value::from))
    .bind(f.status)
    .bind(tenant)
    .fetch_one(pool)
    .await
    .map_err(map_unique)
}

/// A live product; with `tenant`, only one of that tenant's (workers pass None: the job's
/// product is whoever's it is).
/// A live product (not deleted) for a job, or a permanent error saying it is gone.
pub async fn for_job(pool: &PgPool, product_id: i64) -> Result<Product, engine::JobError> {
    get(pool, None, product_id).await.map_err(|e| match e {
        CatalogueError::NotFound => engine::JobError::permanent(format!(
            "product {product_id} does not exist or was deleted"
        )),
        other => engine::JobError::retry(other),
    })
}

pub async fn get(pool: &PgPool, tenant: Option<i64>, id: i64) -> Result<Product, CatalogueError> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM products
          WHERE id = $1 AND deleted_at IS NULL AND ($2::bigint IS NULL OR tenant_id = $2)"
    )))
    .bind(id)
    .bind(tenant)
    .fetch_optional(pool)
    .await?
    .ok_or(CatalogueError::NotFound)
}

/// Newest first, keyset-paginated by id.
pub async fn list(
    pool: &PgPool,
    tenant: i64,
    status: Option<&str>,
    before_id: Option<i64>,
    limit: u32,
) -> Result<Vec<Product>, CatalogueError> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM products
          WHERE tenant_id = $4 AND deleted_at IS NULL AND ($1::text IS NULL OR status = $1)
            AND ($2::bigint IS NULL OR id < $2)
          ORDER BY id DESC LIMIT $3"
    )))
    .bind(status)
    .bind(before_id)
    .bind(i64::from(limit))
    .bind(tenant)
    .fetch_all(pool)
    .await
    .map_err(Into::into)
}

/// Jobs a catalogue change enqueued: (kind, marketplace, row).
pub type Enqueued = Vec<(&'static str, Marketplace, Inserted)>;

/// Sets the given fields (the others keep theirs) and keeps the marketplaces true, in the same
/// transaction: archiving the product, marking it sold or taking its stock to 0 withdraws its
/// live listings; editing what a listing shows updates them (when the seller's
/// `auto_update_listings` is on).
pub async fn update(
    pool: &PgPool,
    settings: &Settings,
    tenant: i64,
    id: i64,
    f: ProductFields,
) -> Result<(Product, Enqueued), CatalogueError> {
    let mut tx = pool.begin().await?;
    let before: Product = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM products
          WHERE id = $1 AND tenant_id = $2 AND deleted_at IS NULL FOR UPDATE"
    )))
    .bind(id)
    .bind(tenant)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(CatalogueError::NotFound)?;
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new("UPDATE products SET updated_at = now()");
    macro_rules! set {
        ($col:literal, $v:expr) => {
            if let Some(v) = $v {
                q.push(concat!(", ", $col, " = ")).push_bind(v);
            }
        };
    }
    set!("sku", f.sku);
    set!("title", f.title);
    set!("description", f.description);
    set!("brand", f.brand);
    set!("category", f.category);
    set!("condition", f.condition);
    set!("price_cents", f.price_cents);
    set!("currency", f.currency);
    set!("size", f.size);
    set!("color", f.color);
    set!("stock_quantity", f.stock_quantity);
    set!("images", f.images.map(Value::from));
    set!("status", f.status);
    q.push(" WHERE id = ")
        .push_bind(id)
        .push(" RETURNING ")
        .push(COLUMNS);
    let after: Product = q
        .build_query_as()
        .fetch_one(&mut *tx)
        .await
        .map_err(map_unique)?;
    let enqueued = follow_edit(&mut tx, settings, &before, &after).await?;
    tx.commit().await?;
    Ok((after, enqueued))
}

/// What the marketplaces need after an edit (see [`update`]).
async fn follow_edit(
    tx: &mut sqlx::PgConnection,
    settings: &Settings,
    before: &Product,
    after: &Product,
) -> Result<Enqueued, CatalogueError> {
    let live = live_listings(tx, after.id).await?;
    if live.is_empty() {
        return Ok(vec![]);
    }
    let became = |s: &str| after.status == s && before.status != s;
    let withdraw_reason = if became("sold") {
        Some("marked sold by the seller")
    } else if became("archived") {
        Some("product archived")
    } else if after.stock_quantity == 0 && before.stock_quantity != 0 {
        Some("out of stock")
    } else {
        None
    };
    if let Some(reason) = withdraw_reason {
        return withdraw_live(tx, settings, after, &live, reason).await;
    }
    if after.status != "published" || !listing_changed(before, after) {
        return Ok(vec![]);
    }
    if !seller_settings::get(&mut *tx, after.tenant_id)
        .await?
        .auto_update_listings
    {
        return Ok(vec![]);
    }
    // The publish path's own key (product version), so publishing this version again by hand
    // returns these jobs.
    let inserted = enqueue_each(tx, settings, after, "publish", &live, |m| PublishListing {
        product_id: after.id,
        marketplace: m,
    })
    .await?;
    Ok(tagged::<PublishListing>(&live, inserted))
}

/// Whether anything a marketplace listing shows changed.
fn listing_changed(a: &Product, b: &Product) -> bool {
    (
        &a.title,
        &a.description,
        &a.brand,
        &a.category,
        &a.condition,
    ) != (
        &b.title,
        &b.description,
        &b.brand,
        &b.category,
        &b.condition,
    ) || (a.price_cents, &a.currency, &a.size, &a.color)
        != (b.price_cents, &b.currency, &b.size, &b.color)
        || a.stock_quantity != b.stock_quantity
        || a.images != b.images
}

/// Marketplaces where the product has a listing that is (or is becoming) live.
async fn live_listings(
    tx: &mut sqlx::PgConnection,
    product: i64,
) -> Result<Vec<Marketplace>, CatalogueError> {
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT marketplace FROM listings
          WHERE product_id = $1 AND status IN ('published', 'publishing') ORDER BY marketplace",
    )
    .bind(product)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows.iter().filter_map(|m| Marketplace::parse(m)).collect())
}

async fn withdraw_live(
    tx: &mut sqlx::PgConnection,
    settings: &Settings,
    p: &Product,
    live: &[Marketplace],
    reason: &str,
) -> Result<Enqueued, CatalogueError> {
    let inserted = enqueue_each(tx, settings, p, "withdraw", live, |m| WithdrawListing {
        product_id: p.id,
        marketplace: m,
        reason: Some(reason.into()),
    })
    .await?;
    Ok(tagged::<WithdrawListing>(live, inserted))
}

fn tagged<J: engine::Kind>(ms: &[Marketplace], inserted: Vec<Inserted>) -> Enqueued {
    ms.iter()
        .zip(inserted)
        .map(|(m, i)| (J::KIND, *m, i))
        .collect()
}

/// Soft delete: the product leaves the catalogue (its row and listings stay for history) and its
/// live listings are withdrawn, in the same transaction.
pub async fn delete(
    pool: &PgPool,
    settings: &Settings,
    tenant: i64,
    id: i64,
) -> Result<Enqueued, CatalogueError> {
    let mut tx = pool.begin().await?;
    let p: Product = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE products SET deleted_at = now(), updated_at = now()
          WHERE id = $1 AND tenant_id = $2 AND deleted_at IS NULL RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(tenant)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(CatalogueError::NotFound)?;
    let live = live_listings(&mut tx, id).await?;
    let enqueued = withdraw_live(&mut tx, settings, &p, &live, "product deleted").await?;
    tx.commit().await?;
    Ok(enqueued)
}

/// Whether `tenant` owns product `id`, deleted or not (its listings stay readable).
pub async fn owned(pool: &PgPool, tenant: i64, id: i64) -> Result<(), CatalogueError> {
    sqlx::query_scalar::<_, i64>("SELECT id FROM products WHERE id = $1 AND tenant_id = $2")
        .bind(id)
        .bind(tenant)
        .fetch_optional(pool)
        .await?
        .map(drop)
        .ok_or(CatalogueError::NotFound)
}

/// Marks the product published and enqueues one `publish_listing` per marketplace, atomically.
/// The idempotency key carries the product's version (`updated_at`), so a repeated request for
/// the same version returns the same jobs, and an edited product is published anew.
pub async fn publish(
    pool: &PgPool,
    settings: &Settings,
    tenant: i64,
    id: i64,
    marketplaces: &[Marketplace],
) -> Result<Vec<(Marketplace, Inserted)>, CatalogueError> {
    per_marketplace(pool, settings, tenant, id, marketplaces, "publish", |m| {
        PublishListing {
            product_id: id,
            marketplace: m,
        }
    })
    .await
}

/// Enqueues one `withdraw_listing` per marketplace (the product stays in the catalogue).
pub async fn withdraw(
    pool: &PgPool,
    settings: &Settings,
    tenant: i64,
    id: i64,
    marketplaces: &[Marketplace],
) -> Result<Vec<(Marketplace, Inserted)>, CatalogueError> {
    per_marketplace(pool, settings, tenant, id, marketplaces, "withdraw", |m| {
        WithdrawListing {
            product_id: id,
            marketplace: m,
            reason: Some("withdrawn by the seller".into()),
        }
    })
    .await
}

/// One job per marketplace for a live product, keyed by the product's version, in one
/// transaction; publishing also marks the product published.
async fn per_marketplace<J: engine::Job>(
    pool: &PgPool,
    settings: &Settings,
    tenant: i64,
    id: i64,
    marketplaces: &[Marketplace],
    action: &str,
    job: impl Fn(Marketplace) -> J,
) -> Result<Vec<(Marketplace, Inserted)>, CatalogueError> {
    let mut tx = pool.begin().await?;
    let row: Option<(String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT status, updated_at FROM products
          WHERE id = $1 AND tenant_id = $2 AND deleted_at IS NULL FOR UPDATE",
    )
    .bind(id)
    .bind(tenant)
    .fetch_optional(&mut *tx)
    .await?;
    let (status, version) = row.ok_or(CatalogueError::NotFound)?;
    let publishing = action == "publish";
    if publishing && matches!(status.as_str(), "sold" | "archived") {
        return Err(CatalogueError::Conflict(format!(
            "product {id} is {status}; only draft or published products can be published"
        )));
    }
    let jobs: Vec<NewJob> = marketplaces
        .iter()
        .map(|m| {
            NewJob::of(
                &job(*m),
                &settings.kinds,
                Some(job_key(action, id, *m, version)),
            )
        })
        .collect();
    let inserted = queue::insert_for(&mut tx, Some(tenant), &jobs).await?;
    if publishing {
        sqlx::query("UPDATE products SET status = 'published' WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(marketplaces.iter().copied().zip(inserted).collect())
}

/// One job per marketplace for product `p` at its current version.
async fn enqueue_each<J: engine::Job>(
    tx: &mut sqlx::PgConnection,
    settings: &Settings,
    p: &Product,
    action: &str,
    marketplaces: &[Marketplace],
    job: impl Fn(Marketplace) -> J,
) -> Result<Vec<Inserted>, CatalogueError> {
    let jobs: Vec<NewJob> = marketplaces
        .iter()
        .map(|m| {
            let key = job_key(action, p.id, *m, p.updated_at);
            NewJob::of(&job(*m), &settings.kinds, Some(key))
        })
        .collect();
    Ok(queue::insert_for(tx, Some(p.tenant_id), &jobs).await?)
}

/// `action:product:marketplace:version`: the same request for the same version of a product
/// names the same job.
fn job_key(action: &str, id: i64, m: Marketplace, version: DateTime<Utc>) -> String {
    format!(
        "{action}:{id}:{}:{}",
        m.as_str(),
        version.timestamp_micros()
    )
}
