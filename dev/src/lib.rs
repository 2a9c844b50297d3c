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

/// Where a private cluster lives: `<root>/<folder>`, or, when we are root (the server then runs
/// as `postgres`, who may not be able to enter the checkout), a folder under /tmp named after
/// the checkout.
pub fn data_dir(folder: &str) -> PathBuf {
    let root = workspace_root();
    if !pg::running_as_root() {
        return root.join(folder);
    }
    let tag: String = root
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    PathBuf::from("/tmp/stoflow-pg").join(format!("{tag}{}", folder.replace('/', "_")))
}

/// `DATABASE_URL` when set; otherwise a private cluster in `<root>/<folder>` on `port`, started
/// if needed. Returns the server URL (database `postgres`) and the cluster we manage, if any.
pub fn database(folder: &str, port: u16) -> Result<(String, Option<pg::Cluster>), pg::PgError> {
    if let Ok(url) = std::env::var("DATABASE_URL")
        && !url.is_empty()
    {
        return Ok((url, None));
    }
    let c = pg::Cluster::ensure(&data_dir(folder), port)?;
    Ok((c.url("postgres"), Some(c)))
}
