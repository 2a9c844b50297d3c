//! `dispatch_plugin_task`: supervises one task of the seller's browser extension (a Vinted
//! listing), which leases it over `/api/plugin/tasks` and posts the result back. Enqueued with
//! the task, in the same transaction (`crate::plugin::create_or_join`).
//!
//! It applies the task's deadlines — not picked up in time → `timed_out`, dead with class
//! `plugin_timeout`; a lease that expires without a result → pending again, attempt counted —
//! and ends done when the task succeeded (the listing row then holds the remote id and URL), dead
//! with the task's error when it failed. In between it snoozes until the next deadline: no
//! attempt consumed, no slot held; a posted result wakes it at once.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Object),
    oai(skip_serializing_if_is_none)
)]
pub struct DispatchPluginTask {
    #[cfg_attr(feature = "openapi", oai(validator(minimum(value = "1"))))]
    pub plugin_task_id: i64,
}
