//! The worker process: registers one apalis worker per consumed kind on the Postgres backend,
//! runs them under an apalis `Monitor`, and shuts down gracefully on SIGTERM/SIGINT.

pub mod scheduler;
pub mod users;

use std::sync::Arc;

use anyhow::Context as _;
use apalis_core::monitor::Monitor;
use engine::runtime::Runtime;
use engine::{Job, Policy};
use jobs::kinds::{KindVisitor, for_each_kind};
use jobs::{JobContext, Settings};

/// Job handlers share the pool, so a wait for a connection is normal under load: 10 s, not the
/// API's short one. An unreachable database is waited for.
pub async fn connect(settings: &Settings) -> anyhow::Result<sqlx::PgPool> {
    Ok(jobs::db::connect_migrated_waiting(settings, &jobs::db::WORKER).await?)
}

pub async fn migrate(settings: Settings) -> anyhow::Result<()> {
    connect(&settings).await?;
    tracing::info!("migrations applied");
    Ok(())
}

/// The kinds this process consumes with their resolved policies.
pub fn consumed_kinds(settings: &Settings) -> Vec<(&'static str, Policy)> {
    struct Collect<'a>(&'a Settings, Vec<(&'static str, Policy)>);
    impl KindVisitor for Collect<'_> {
        fn visit<J: Job<Context = JobContext>>(&mut self) {
            if self.0.consumes(J::KIND) {
                self.1
                    .push((J::KIND, J::POLICY.resolved(J::KIND, &self.0.kinds)));
            }
        }
    }
    let mut c = Collect(settings, vec![]);
    for_each_kind(&mut c);
    c.1
}

pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let signal = shutdown_signal();
    let pool = connect(&settings).await?;
    let settings = Arc::new(settings);
    let kinds = consumed_kinds(&settings);
    let rt = Runtime::start(pool.clone(), Arc::new(settings.engine()), &kinds).await?;
    // Every marketplace request of this process takes its budget from the fleet-wide limiter.
    let limits = Arc::new(jobs::limits::Limits::new(
        pool.clone(),
        &settings.limits,
        &settings.marketplaces.etsy.keystring,
        &settings.marketplaces.ebay.client_id,
    ));
    jobs::limits::install(limits);
    let metrics_server = serve_metrics(&rt).await?;
    let market = Arc::new(jobs::context::Marketplaces::new(
        &settings.marketplaces.ebay,
        &settings.marketplaces.etsy,
        &settings.security,
    )?);
    let ctx = JobContext {
        pool,
        settings: settings.clone(),
        market,
    };

    struct Register<'a> {
        monitor: Option<Monitor>,
        rt: &'a Arc<Runtime>,
        ctx: &'a JobContext,
    }
    impl KindVisitor for Register<'_> {
        fn visit<J: Job<Context = JobContext>>(&mut self) {
            if self.ctx.settings.consumes(J::KIND) {
                let m = self.monitor.take().expect("monitor");
                self.monitor = Some(engine::backend::register::<J>(m, self.rt, self.ctx));
            }
        }
    }
    let mut reg = Register {
        monitor: Some(Monitor::new().shutdown_timeout(settings.worker.shutdown_timeout())),
        rt: &rt,
        ctx: &ctx,
    };
    for_each_kind(&mut reg);
    let monitor = reg.monitor.expect("monitor");

    let signal_rt = rt.clone();
    let result = monitor
        .run_with_signal(async move {
            signal.await;
            tracing::info!(
                "shutdown requested: no new jobs are fetched; in-flight jobs are finishing"
            );
            signal_rt.stop_fetching();
            Ok(())
        })
        .await;
    rt.stop().await.context("deregistering the worker")?;
    if let Some(h) = metrics_server {
        h.abort();
    }
    result.context("monitor")?;
    tracing::info!("worker stopped");
    Ok(())
}

pub use engine::shutdown_signal;

/// Serves this process's Prometheus metrics at `worker.metrics_bind` and records the URL in its
/// workers row, so scrapers and the dashboard can find every worker process.
async fn serve_metrics(rt: &Arc<Runtime>) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    use poem::listener::{Acceptor, Listener, TcpListener};
    let bind = rt.settings.worker.metrics_bind.clone();
    if bind.is_empty() {
        return Ok(None);
    }
    let acceptor = TcpListener::bind(bind.clone())
        .into_acceptor()
        .await
        .with_context(|| format!("worker.metrics_bind {bind:?}"))?;
    let addr = acceptor
        .local_addr()
        .first()
        .and_then(|a| a.as_socket_addr().copied())
        .context("metrics listener has no address")?;
    let url = format!("http://{addr}/metrics");
    rt.set_metrics_url(&url).await?;
    tracing::info!(%url, "metrics");
    let app = poem::Route::new().at(
        "/metrics",
        poem::get(poem::endpoint::make_sync(|_| {
            let text = jobs::render_metrics();
            poem::Response::builder()
                .content_type(engine::metrics::CONTENT_TYPE)
                .body(engine::metrics::finish(text))
        })),
    );
    Ok(Some(tokio::spawn(async move {
        if let Err(e) = poem::Server::new_with_acceptor(acceptor).run(app).await {
            tracing::warn!(error = %e, "metrics server stopped");
        }
    })))
}
