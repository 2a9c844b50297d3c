//! `/v1/limits`: what the fleet-wide marketplace limiter and circuit breakers hold right now.

use std::sync::Arc;

use poem_openapi::OpenApi;
use poem_openapi::payload::Json;

use jobs::limits::{self, LimitsView};

use crate::problem::Problem;
use crate::routes::Tag;
use crate::state::AppState;

pub struct LimitsApi {
    pub st: Arc<AppState>,
}

#[OpenApi(tag = "Tag::Limits")]
impl LimitsApi {
    /// Rate-limit budgets per key, circuit state per marketplace, jobs waiting on either
    ///
    /// A key appears once a request has used it. `used`/`remaining` count the current window (a
    /// day for Etsy and eBay); `blocked_until` is a marketplace's Retry-After or spent quota.
    #[oai(path = "/v1/limits", method = "get")]
    async fn limits(&self, _ops: crate::auth::Ops) -> Result<Json<LimitsView>, Problem> {
        Ok(Json(limits::view(&self.st.pool).await?))
    }
}
