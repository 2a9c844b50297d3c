//! The audit log: every operator action (retry, cancel, bulk retry/cancel, pause, resume) with
//! who, what, when, the filter of a bulk action and how many jobs it changed.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;

/// One operator action to record.
#[derive(Debug, Clone)]
pub struct Action<'a> {
    /// Who: the caller's identity. A placeholder until users exist (issue #5).
    pub actor: &'a str,
    pub action: &'a str,
    pub target: Option<String>,
    pub filter: Option<Value>,
    pub count: i64,
    pub reason: Option<&'a str>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
pub struct Entry {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub filter: Option<Value>,
    pub count: i64,
    pub reason: Option<String>,
}

pub async fn record(pool: &PgPool, a: &Action<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_log (actor, action, target, filter, count, reason)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(a.actor)
    .bind(a.action)
    .bind(&a.target)
    .bind(&a.filter)
    .bind(a.count)
    .bind(a.reason)
    .execute(pool)
    .await
    .map(|_| ())
}

/// Newest first, keyset-paginated by id.
pub async fn list(
    pool: &PgPool,
    before_id: Option<i64>,
    limit: u32,
) -> Result<Vec<Entry>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, at, actor, action, target, filter, count, reason FROM audit_log
          WHERE ($1::bigint IS NULL OR id < $1) ORDER BY id DESC LIMIT $2",
    )
    .bind(before_id)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
}
