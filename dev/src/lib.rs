//! Developer tooling shared by the run command, the integration tests and the benchmarks:
//! a private Postgres cluster ([`pg`]) and the platform's processes ([`proc`]).

pub mod pg;
pub mod proc;

use std::path::PathBuf;

/// The workspace root (where `Cargo.toml` with `[workspace]` lives).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("dev/ has a parent")
        .to_path_buf()
}

/// `DATABASE_URL` when set; otherwise a private cluster in `<root>/<folder>` on `port`, started
/// if needed. Returns the server URL (database `postgres`) and the cluster we manage, if any.
pub fn database(folder: &str, port: u16) -> Result<(String, Option<pg::Cluster>), pg::PgError> {
    if let Ok(url) = std::env::var("DATABASE_URL")
        && !url.is_empty()
    {
        return Ok((url, None));
    }
    let c = pg::Cluster::ensure(&workspace_root().join(folder), port)?;
    Ok((c.url("postgres"), Some(c)))
}
