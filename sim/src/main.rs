//! `stoflow-sim`: runs the eBay, Etsy and Vinted simulators until SIGTERM or Ctrl-C.

use std::process::ExitCode;

use sim::SimConfig;

const USAGE: &str =
    "usage: stoflow-sim [--host H] [--ebay-port P] [--etsy-port P] [--vinted-port P]
  env: STOFLOW_SIM_HOST, STOFLOW_SIM_EBAY_PORT, STOFLOW_SIM_ETSY_PORT, STOFLOW_SIM_VINTED_PORT,
       STOFLOW_SIM_EBAY_NOTIFICATION_URL, STOFLOW_SIM_ETSY_WEBHOOK_URL (where sales are pushed)
  defaults: 127.0.0.1, 8481, 8482, 8483 (0 picks a free port)
  STOFLOW_SIM_API_BASE: the platform whose OAuth callbacks the consent pages approve to
  (default http://127.0.0.1:8080)";

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("{0}\n{USAGE}")]
    Usage(String),
    #[error("could not start: {0}")]
    Io(#[from] std::io::Error),
}

fn port(flag: &str, v: Option<String>) -> Result<u16, CliError> {
    v.ok_or_else(|| CliError::Usage(format!("{flag} needs a value")))?
        .parse()
        .map_err(|_| CliError::Usage(format!("{flag}: not a port number")))
}

fn config() -> Result<SimConfig, CliError> {
    let env_port = |k: &str, d: u16| -> Result<u16, CliError> {
        match std::env::var(k) {
            Ok(v) => port(k, Some(v)),
            Err(_) => Ok(d),
        }
    };
    let mut cfg = SimConfig {
        host: std::env::var("STOFLOW_SIM_HOST").unwrap_or_else(|_| "127.0.0.1".into()),
        ebay_port: env_port("STOFLOW_SIM_EBAY_PORT", 8481)?,
        etsy_port: env_port("STOFLOW_SIM_ETSY_PORT", 8482)?,
        vinted_port: env_port("STOFLOW_SIM_VINTED_PORT", 8483)?,
        ..SimConfig::default()
    };
    if let Ok(api) = std::env::var("STOFLOW_SIM_API_BASE") {
        let api = api.trim_end_matches('/');
        cfg.ebay.accept_url = format!("{api}/oauth/ebay/callback");
        cfg.etsy.redirect_uris = vec![format!("{api}/oauth/etsy/callback")];
    }
    cfg.ebay.notification_url = std::env::var("STOFLOW_SIM_EBAY_NOTIFICATION_URL").ok();
    cfg.etsy.webhook_url = std::env::var("STOFLOW_SIM_ETSY_WEBHOOK_URL").ok();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--host" => {
                cfg.host = args
                    .next()
                    .ok_or_else(|| CliError::Usage("--host needs a value".into()))?
            }
            "--ebay-port" => cfg.ebay_port = port(&a, args.next())?,
            "--etsy-port" => cfg.etsy_port = port(&a, args.next())?,
            "--vinted-port" => cfg.vinted_port = port(&a, args.next())?,
            "-h" | "--help" => return Err(CliError::Usage(String::new())),
            other => return Err(CliError::Usage(format!("unknown argument {other}"))),
        }
    }
    Ok(cfg)
}

async fn run() -> Result<(), CliError> {
    let cfg = config()?;
    let (e, t, v) = (cfg.ebay.clone(), cfg.etsy.clone(), cfg.vinted.clone());
    let running = sim::start(cfg).await?;
    println!(
        "eBay   {}  client_id={} client_secret={} RuName={} -> {} user={}",
        running.ebay_url, e.client_id, e.client_secret, e.runame, e.accept_url, e.username
    );
    println!(
        "Etsy   {}  x-api-key={}:{} redirect_uri={} user_id={} shop_id={}",
        running.etsy_url,
        t.keystring,
        t.shared_secret,
        t.redirect_uris.join(","),
        t.user_id,
        t.shop_id
    );
    println!(
        "Vinted {}  access_token_web={} X-CSRF-Token={} user_id={}",
        running.vinted_url, v.access_token, v.csrf_token, v.user_id
    );
    println!("admin: <base>/_admin/... (see sim/README.md)");
    wait_for_signal().await;
    running.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stoflow-sim: {e}");
            ExitCode::from(2)
        }
    }
}
