//! Live job status: one LISTEN connection per API process fans job-change notifications out to
//! every open event stream (no polling loop per client).

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::broadcast;

use jobs::queue::EVENTS_CHANNEL;

/// Starts the listener; subscribe to the returned sender for the ids of changed jobs.
pub fn spawn_listener(pool: PgPool) -> broadcast::Sender<i64> {
    let (tx, _) = broadcast::channel(8192);
    let out = tx.clone();
    tokio::spawn(async move {
        loop {
            if let Err(e) = listen(&pool, &tx).await {
                tracing::warn!(error = %e, "job events listener lost; reconnecting");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    out
}

async fn listen(pool: &PgPool, tx: &broadcast::Sender<i64>) -> Result<(), sqlx::Error> {
    let mut l = PgListener::connect_with(pool).await?;
    l.listen(EVENTS_CHANNEL).await?;
    loop {
        let n = l.recv().await?;
        for id in n.payload().split(',').filter_map(|s| s.parse::<i64>().ok()) {
            // No subscriber is fine: nobody is watching.
            let _ = tx.send(id);
        }
    }
}
