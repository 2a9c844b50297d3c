//! `/v1/queues`: how much work waits, runs and failed, per kind.

use std::sync::Arc;

use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use jobs::kinds::ALL_KINDS;
use jobs::queue::{self, KindStats};

use crate::AppState;
use crate::problem::Problem;
use crate::routes::Tag;

#[derive(Debug, Object)]
pub struct Queues {
    /// One entry per kind, including kinds with no jobs.
    pub queues: Vec<KindStats>,
}

pub struct QueuesApi {
    pub st: Arc<AppState>,
}

#[OpenApi(tag = "Tag::Queues")]
impl QueuesApi {
    /// Counts per kind and state, and the age of the oldest ready job
    #[oai(path = "/v1/queues", method = "get")]
    async fn queues(&self) -> Result<Json<Queues>, Problem> {
        Ok(Json(Queues {
            queues: queue::stats(&self.st.pool, ALL_KINDS).await?,
        }))
    }
}
