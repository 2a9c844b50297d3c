pub mod health;
pub mod jobs;
pub mod queues;

#[derive(poem_openapi::Tags)]
pub enum Tag {
    /// Enqueue and follow jobs.
    Jobs,
    /// Queue depth per kind.
    Queues,
    /// Liveness and readiness probes.
    Health,
}
