//! `stoflow-plugin`: the reference browser-extension runner (see the library docs).

use std::process::ExitCode;
use std::time::Duration;

use plugin::{Config, Runner, Step};

const USAGE: &str = "usage: stoflow-plugin --token T [--api URL] [--vinted URL] [--session TOKEN] [--csrf TOKEN]
                      [--poll-ms N] [--wait-s N] [--once] [--placeholder-photos]
  --token     the plugin token from POST /v1/connections/vinted (or STOFLOW_PLUGIN_TOKEN)
  --api       the platform API (default http://127.0.0.1:8080)
  --vinted    Vinted's base URL (default: the simulator, http://127.0.0.1:8483)
  --session   the seller's access_token_web, --csrf their X-CSRF-Token (default: the simulator's seeded session)
  --poll-ms   poll interval when idle (default 5000)
  --wait-s    how long the platform may hold an idle poll open, answering as soon as a task
              is pending (long polling, default 20, at most 25; 0: plain polling)
  --once      run one poll (lease, execute, post) and exit
  --placeholder-photos  upload a generated JPEG instead of downloading each photo URL";

fn config() -> Result<(Config, bool), String> {
    let mut cfg = Config::for_simulator(
        "http://127.0.0.1:8080",
        &std::env::var("STOFLOW_PLUGIN_TOKEN").unwrap_or_default(),
        "http://127.0.0.1:8483",
    );
    cfg.placeholder_photos = false;
    let mut once = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--api" => cfg.api = value()?.trim_end_matches('/').into(),
            "--token" => cfg.token = value()?,
            "--vinted" => cfg.vinted = value()?.trim_end_matches('/').into(),
            "--session" => cfg.session = value()?,
            "--csrf" => cfg.csrf = value()?,
            "--poll-ms" => {
                let v = value()?;
                let ms: u64 = v
                    .parse()
                    .map_err(|_| format!("--poll-ms: {v:?} is not a number of milliseconds"))?;
                cfg.poll = Duration::from_millis(ms.max(1));
            }
            "--wait-s" => {
                let v = value()?;
                let s: u64 = v.parse().ok().filter(|s| *s <= 25).ok_or_else(|| {
                    format!("--wait-s: {v:?} is not a number of seconds up to 25")
                })?;
                cfg.wait = Duration::from_secs(s);
            }
            "--once" => once = true,
            "--placeholder-photos" => cfg.placeholder_photos = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if cfg.token.is_empty() {
        return Err("--token is required".into());
    }
    Ok((cfg, once))
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let (cfg, once) = match config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("stoflow-plugin: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runner = Runner::new(cfg);
    let res = if once {
        runner.step().await.map(|s| match s {
            Step::Idle => println!("no task"),
            Step::Paused(why) => println!("paused: {why}"),
            Step::Resumed => println!("session works again: account resumed"),
            Step::Ran {
                task_id,
                outcome,
                accepted,
            } => println!("task {task_id}: {outcome} (result accepted: {accepted})"),
        })
    } else {
        runner
            .run(async {
                use tokio::signal::unix::{SignalKind, signal};
                match signal(SignalKind::terminate()) {
                    Ok(mut term) => {
                        tokio::select! {
                            _ = tokio::signal::ctrl_c() => {}
                            _ = term.recv() => {}
                        }
                    }
                    Err(_) => {
                        let _ = tokio::signal::ctrl_c().await;
                    }
                }
            })
            .await
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stoflow-plugin: {e}");
            ExitCode::FAILURE
        }
    }
}
