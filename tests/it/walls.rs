//! Safe defaults and HTTP hardening: what an attacker or a careless deployment would try.

use std::time::Duration;

use integration::{Proc, TestDb, test_env};

/// Without an explicit development mode, the published development keys stop every process
/// from starting, with a message naming the settings to set.
#[tokio::test]
async fn processes_refuse_to_start_with_the_published_keys_outside_development() {
    let db = TestDb::new().await;
    let env: Vec<_> = test_env(&db)
        .into_iter()
        .filter(|(k, _)| *k != "STOFLOW_ENV")
        .collect();
    for (bin, args) in [
        ("api", vec![]),
        ("worker", vec!["run"]),
        ("worker", vec!["scheduler"]),
    ] {
        let mut p = Proc::spawn(bin, &args, &env);
        let status = p
            .wait_exit(Duration::from_secs(20))
            .unwrap_or_else(|| panic!("{bin} {args:?} started with the development keys"));
        assert!(!status.success());
        let log = p.log_text();
        for setting in [
            "STOFLOW_SECURITY__TOKEN_KEYS",
            "STOFLOW_AUTH__SIGNING_KEYS",
            "STOFLOW_ENV=development",
        ] {
            assert!(log.contains(setting), "{bin}: {setting} not named:\n{log}");
        }
    }
    // Nothing was registered or served.
    let workers: i64 = sqlx::query_scalar("SELECT count(*) FROM workers")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(workers, 0);
}
