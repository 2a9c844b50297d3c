//! `worker [run] [--kinds a,b]`: a worker process; run as many as you like, anywhere.
//! `worker scheduler`: enqueues periodic jobs (each tick once, however many replicas run).
//! `worker migrate`: applies migrations and exits (the Procfile's release step).
//! `worker create-user --email E --role ops|seller [--tenant ID]`: creates a user (the first ops
//! user, say); the password comes from `STOFLOW_NEW_USER_PASSWORD` or the first line of stdin.

use std::process::ExitCode;

use jobs::Settings;

#[tokio::main]
async fn main() -> ExitCode {
    let _telemetry = jobs::init_telemetry("stoflow-worker");
    let mut args = std::env::args().skip(1).peekable();
    let cmd = match args.peek().map(String::as_str) {
        Some(c) if !c.starts_with('-') => args.next().unwrap_or_default(),
        _ => "run".to_string(),
    };
    let mut settings = match Settings::load(jobs::kinds::ALL_KINDS) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if cmd == "create-user" {
        let rest: Vec<String> = args.collect();
        return match worker::users::create_user_command(settings, &rest).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--kinds", Some(k)) => {
                settings.worker.kinds = k.split(',').map(str::to_string).collect()
            }
            _ => {
                eprintln!(
                    "usage: worker [run|scheduler|migrate|create-user] [--kinds kind1,kind2]"
                );
                return ExitCode::from(2);
            }
        }
    }
    if let Err(e) = settings.validate().and_then(|()| settings.check_keys()) {
        eprintln!("{e}");
        return ExitCode::from(2);
    }
    let res = match cmd.as_str() {
        "run" => worker::run(settings).await,
        "scheduler" => worker::scheduler::run(settings).await,
        "migrate" => worker::migrate(settings).await,
        other => {
            eprintln!(
                "unknown command {other:?}; usage: worker [run|scheduler|migrate|create-user] [--kinds kind1,kind2]"
            );
            return ExitCode::from(2);
        }
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "worker exited with an error");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
