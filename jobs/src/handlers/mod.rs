//! The handlers of the job kinds: each kind's policy and what it does when it runs (`impl Job`),
//! one file per kind, named like its declaration in [`crate::kinds`]. Domain modules enqueue kinds;
//! only these files run them, so the domain never imports a handler.

pub mod dispatch_plugin_task;
pub mod handle_webhook;
pub mod noop;
pub mod poll_etsy;
pub mod prune_jobs;
pub mod publish_listing;
pub mod refresh_token;
pub mod sync_orders;
pub mod withdraw_listing;
