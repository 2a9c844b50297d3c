//! The second wall: a seller's request runs its queries as the database role `stoflow_seller`
//! with the seller's tenant set (row-level security, migration 20261206000900), so a query that
//! forgets its tenant filter still sees only that tenant's rows. The tenant travels in a
//! task-local set around the request; the pool reads it at every acquire
//! ([`engine::db::PoolSpec::session`], [`jobs::db::tenant_session`]). Ops users, anonymous routes and background tasks
//! (the enqueue coalescer, event feeds) run as the owner: their cross-tenant path is explicit.

use std::sync::Arc;

use poem::http::header;
use poem::{Endpoint, Request};

use crate::state::AppState;

tokio::task_local! {
    static TENANT: i64;
}

/// The tenant of the seller request this task serves, if any.
pub fn current() -> Option<i64> {
    TENANT.try_with(|t| *t).ok()
}

/// The connection parameters for this task's queries (the pool's per-acquire hook).
pub fn session() -> engine::db::SessionParams {
    jobs::db::tenant_session(current())
}

/// Runs the request in its seller's tenant scope (when it carries a valid seller token; anything
/// else is left to the routes' own authentication, which answers 401/403 as before).
pub async fn scope<E: Endpoint>(ep: Arc<E>, req: Request) -> poem::Result<poem::Response> {
    let tenant = req.data::<Arc<AppState>>().and_then(|st| {
        let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let user = st.signer.verify(token.trim()).ok()?;
        (!user.is_ops()).then_some(user.tenant_id)
    });
    let call = async move { ep.call(req).await.map(poem::IntoResponse::into_response) };
    match tenant {
        Some(t) => TENANT.scope(t, call).await,
        None => call.await,
    }
}

/// Whether this database user may run as the seller role (the migration could not create or
/// grant it without the privilege): without it the API runs on the code's tenant filters alone.
pub async fn seller_role_usable(pool: &sqlx::PgPool) -> bool {
    sqlx::query_scalar::<_, bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)
                AND pg_has_role(current_user, $1, 'MEMBER')",
    )
    .bind(jobs::db::SELLER_ROLE)
    .fetch_one(pool)
    .await
    .unwrap_or(false)
}
