//! `prune_jobs` (internal): retention. Deletes finished jobs older than the configured ages, in
//! batches so no statement holds locks for long, and forgets worker processes stopped a day ago.
//! Enqueued by the scheduler once per cron tick (deduplicated across scheduler replicas).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PruneJobs {
    /// The cron tick that enqueued this run (for people reading the job list).
    #[serde(default)]
    pub tick: Option<String>,
}
