//! The queue engine on its own (the `engine` crate): its example program on an empty database,
//! and its tables equal to the ones Stoflow's own migration history built.

use integration::TestDb;
use serde_json::{Value, json};

/// `engine/examples/greet.rs`, built with the test's profile.
fn greet_example() -> std::path::PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = dev::workspace_root();
    let status = std::process::Command::new(cargo)
        .args(["build", "--quiet", "-p", "engine", "--example", "greet"])
        .current_dir(&root)
        .status()
        .expect("run cargo build");
    assert!(status.success(), "building the engine example failed");
    root.join("target/debug/examples/greet")
}

#[tokio::test]
async fn the_engine_example_migrates_an_empty_database_runs_its_jobs_and_exits() {
    let db = TestDb::empty().await;
    let out = tokio::process::Command::new(greet_example())
        .env("DATABASE_URL", &db.url)
        .output()
        .await
        .expect("run the example");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(
        lines[0].starts_with("job 1 done: ") && lines[0].contains("hello, Ada"),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("job 2 done: ") && lines[1].contains("hello, Grace"),
        "{stdout}"
    );
    assert!(
        lines[2].starts_with("job 3 dead: ") && lines[2].contains("nobody to greet"),
        "{stdout}"
    );
    // The rows say the same, and the process deregistered on its way out.
    let rows: Vec<(String, String, i32)> =
        sqlx::query_as("SELECT kind, state, attempt FROM jobs ORDER BY id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        rows,
        vec![
            ("greet".into(), "done".into(), 1),
            ("greet".into(), "done".into(), 1),
            ("greet".into(), "dead".into(), 1),
        ]
    );
    let live: i64 = sqlx::query_scalar("SELECT count(*) FROM workers WHERE stopped_at IS NULL")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(live, 0);
    // Only the engine's tables: it knows nothing of products or marketplaces.
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        tables,
        ["_sqlx_migrations", "jobs", "kind_controls", "workers"]
    );
}

/// Columns, constraints, indexes and statistics of the engine's tables in one database.
async fn engine_schema(pool: &sqlx::PgPool) -> Value {
    let q = |sql: &'static str| async move {
        sqlx::query_scalar::<_, Value>(sql)
            .fetch_one(pool)
            .await
            .unwrap()
    };
    json!({
        "columns": q("SELECT jsonb_agg(jsonb_build_array(table_name, column_name, data_type, is_nullable,
                         column_default, is_identity) ORDER BY table_name, column_name)
                        FROM information_schema.columns
                       WHERE table_schema = 'public' AND table_name IN ('jobs', 'workers', 'kind_controls')").await,
        "constraints": q("SELECT jsonb_agg(jsonb_build_array(conrelid::regclass::text, conname,
                             pg_get_constraintdef(oid)) ORDER BY conrelid::regclass::text, conname)
                            FROM pg_constraint
                           WHERE conrelid IN ('jobs'::regclass, 'workers'::regclass, 'kind_controls'::regclass)").await,
        "indexes": q("SELECT jsonb_agg(jsonb_build_array(tablename, indexname, indexdef) ORDER BY tablename, indexname)
                        FROM pg_indexes
                       WHERE schemaname = 'public' AND tablename IN ('jobs', 'workers', 'kind_controls')").await,
        "statistics": q("SELECT coalesce(jsonb_agg(stxname ORDER BY stxname), '[]')
                           FROM pg_statistic_ext WHERE stxrelid = 'jobs'::regclass").await,
    })
}

#[tokio::test]
async fn the_engines_tables_are_the_ones_stoflows_migration_history_built() {
    let stoflow = TestDb::new().await;
    let alone = TestDb::empty().await;
    engine::db::MIGRATOR.run(&alone.pool).await.unwrap();
    let (ours, theirs) = (
        engine_schema(&stoflow.pool).await,
        engine_schema(&alone.pool).await,
    );
    for part in ["columns", "constraints", "indexes", "statistics"] {
        assert_eq!(ours[part], theirs[part], "{part} differ");
    }
    assert!(
        ours["columns"].as_array().unwrap().len() >= 30,
        "{}",
        ours["columns"]
    );
    // Run again, the engine's migration changes nothing on Stoflow's database.
    jobs::db::migrate(&stoflow.pool).await.unwrap();
    assert_eq!(engine_schema(&stoflow.pool).await, ours);
}
