pub mod auth;
pub mod connections;
pub mod health;
pub mod jobs;
pub mod limits;
pub mod orders;
pub mod plugin;
pub mod products;
pub mod queues;
pub mod settings;
pub mod webhooks;

#[derive(poem_openapi::Tags)]
pub enum Tag {
    /// Log in, refresh tokens.
    Auth,
    /// Enqueue and follow jobs.
    Jobs,
    /// The seller's catalogue.
    Products,
    /// Marketplace accounts and their OAuth consent flows.
    Connections,
    /// Orders imported from the marketplaces, and what the marketplaces refused.
    Orders,
    /// Queue depth per kind.
    Queues,
    /// Marketplace rate-limit budgets and circuit breakers.
    Limits,
    /// Liveness and readiness probes.
    Health,
    /// The ops dashboard's views and bulk actions (ops role).
    Dashboard,
    /// Notifications the marketplaces push (signed; no login).
    Webhooks,
}

/// Parses a keyset cursor given out by a list endpoint (the last id of the previous page).
pub fn parse_cursor(c: Option<&str>) -> Result<Option<i64>, crate::problem::Problem> {
    match c {
        None => Ok(None),
        Some(c) => c
            .parse::<i64>()
            .ok()
            .filter(|v| *v > 0)
            .map(Some)
            .ok_or_else(|| {
                crate::problem::Problem::bad_request(format!(
                    "cursor {c:?} is not a cursor returned by this endpoint"
                ))
            }),
    }
}
