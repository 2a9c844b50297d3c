//! `/v1/queues`: how much work waits, runs and failed, per kind.

use std::sync::Arc;

use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use engine::queue::{self, KindStats};
use jobs::kinds::ALL_KINDS;

use crate::auth::Ops;
use crate::problem::Problem;
use crate::routes::Tag;
use crate::state::AppState;

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct Queues {
    /// One entry per kind, including kinds with no jobs.
    pub queues: Vec<KindStats>,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct KindControl {
    pub kind: String,
    pub paused: bool,
}

pub struct QueuesApi {
    pub st: Arc<AppState>,
}

#[OpenApi(tag = "Tag::Queues")]
impl QueuesApi {
    /// Counts per kind and state, and the age of the oldest ready job (ops)
    #[oai(path = "/v1/queues", method = "get")]
    async fn queues(&self, _ops: Ops) -> Result<Json<Queues>, Problem> {
        Ok(Json(Queues {
            queues: queue::stats(&self.st.pool, ALL_KINDS).await?,
        }))
    }

    /// Pause a kind: no worker process fetches it until it is resumed (ops)
    ///
    /// Running jobs finish; waiting jobs stay waiting.
    #[oai(path = "/v1/queues/:kind/pause", method = "post")]
    async fn pause(
        &self,
        ops: Ops,
        kind: Path<String>,
        /// Why, for the people who will wonder.
        #[oai(validator(max_length = 500))]
        reason: Query<Option<String>>,
    ) -> Result<Json<KindControl>, Problem> {
        self.set(&ops, kind.0, true, reason.0.as_deref()).await
    }

    /// Resume a paused kind (ops)
    #[oai(path = "/v1/queues/:kind/resume", method = "post")]
    async fn resume(&self, ops: Ops, kind: Path<String>) -> Result<Json<KindControl>, Problem> {
        self.set(&ops, kind.0, false, None).await
    }
}

impl QueuesApi {
    async fn set(
        &self,
        ops: &Ops,
        kind: String,
        paused: bool,
        reason: Option<&str>,
    ) -> Result<Json<KindControl>, Problem> {
        if !ALL_KINDS.contains(&kind.as_str()) {
            return Err(Problem::not_found(format!(
                "no kind {kind:?}; known kinds: {}",
                ALL_KINDS.join(", ")
            )));
        }
        queue::set_paused(&self.st.pool, &kind, paused, reason).await?;
        jobs::audit::record(
            &self.st.pool,
            &jobs::audit::Action {
                actor: &crate::auth::Actor::user(&ops.0),
                action: if paused { "pause" } else { "resume" },
                target: Some(kind.clone()),
                filter: None,
                count: 1,
                reason,
            },
        )
        .await?;
        Ok(Json(KindControl { kind, paused }))
    }
}
