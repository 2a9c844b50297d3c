//! `GET /v1/events`: the job feed over SSE.

use std::time::Duration;

use tokio::sync::broadcast;

use crate::events::{JobChange, Scope};

pub struct EventsApi {
    pub st: std::sync::Arc<crate::state::AppState>,
}

#[poem_openapi::OpenApi(tag = "crate::routes::Tag::Jobs")]
impl EventsApi {
    /// Job state changes, live (Server-Sent Events)
    ///
    /// One event per change of any job the caller may see (a seller: their tenant's; ops: all),
    /// optionally of one kind. Driven by Postgres notifications; a slow client skips ahead (re-read
    /// `GET /v1/jobs/{id}` for the latest state).
    #[oai(path = "/v1/events", method = "get")]
    async fn events(
        &self,
        auth: crate::auth::Seller,
        kind: poem_openapi::param::Query<Option<crate::routes::KindName>>,
    ) -> Result<
        poem_openapi::payload::EventStream<futures::stream::BoxStream<'static, JobChange>>,
        crate::problem::Problem,
    > {
        use futures::StreamExt;
        let scope = Scope {
            tenant: auth.job_scope(),
            kind: kind.0.map(|k| k.0),
        };
        let rx = self.st.job_feed.subscribe();
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(batch) => return Some((batch, rx)),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .flat_map(move |batch| {
            let items: Vec<JobChange> = batch.iter().filter(|c| scope.admits(c)).cloned().collect();
            futures::stream::iter(items)
        })
        .boxed();
        Ok(poem_openapi::payload::EventStream::new(stream).keep_alive(Duration::from_secs(15)))
    }
}
