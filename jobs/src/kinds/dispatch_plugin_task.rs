//! `dispatch_plugin_task`: hand one task (e.g. a Vinted listing) to the seller's browser extension,
//! which leases it over the plugin API and posts the result back. Plugin endpoints arrive with the
//! marketplaces issue.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::job::{Job, JobContext, JobError, Policy, RunInfo};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct DispatchPluginTask {
    #[cfg_attr(feature = "openapi", oai(validator(minimum(value = "1"))))]
    pub plugin_task_id: i64,
}

impl Job for DispatchPluginTask {
    const POLICY: Policy = Policy::new(3, 60, 8).backoff(5_000, 900);

    async fn run(self, _ctx: JobContext, _run: RunInfo) -> Result<Value, JobError> {
        Err(super::not_built::<Self>())
    }
}
