//! `api`: the platform's HTTP server. Settings from config/env (see jobs/config.default.toml).

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let _telemetry = jobs::init_telemetry("stoflow-api");
    let settings = match jobs::Settings::load(jobs::kinds::ALL_KINDS)
        .and_then(|s| s.check_keys().map(|()| s))
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match api::run(settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "api exited with an error");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
