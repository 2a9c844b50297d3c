//! Probes: live = the process answers; ready = the database answers and is migrated.

use std::sync::Arc;

use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use crate::problem::Problem;
use crate::routes::Tag;
use crate::state::AppState;

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct Health {
    pub status: String,
}

pub struct HealthApi {
    pub st: Arc<AppState>,
}

#[OpenApi(tag = "Tag::Health")]
impl HealthApi {
    /// The process is up
    #[oai(path = "/health/live", method = "get")]
    async fn live(&self) -> Json<Health> {
        Json(Health {
            status: "ok".into(),
        })
    }

    /// The database is reachable and every migration is applied
    #[oai(path = "/health/ready", method = "get")]
    async fn ready(&self) -> Result<Json<Health>, Problem> {
        match jobs::db::migrations_applied(&self.st.pool).await {
            Ok(true) => Ok(Json(Health {
                status: "ready".into(),
            })),
            Ok(false) => Err(Problem::unavailable(
                "migrations are not applied; run `worker migrate`",
            )),
            Err(e) => Err(Problem::unavailable(format!("database unreachable: {e}"))),
        }
    }
}
