//! The TypeScript client (`clients/typescript/`): its committed document and generated types
//! match what the API serves (no drift), it type-checks, and its example logs in, enqueues a
//! `noop` job and follows it over `GET /v1/events` to `done` against a real API and worker.
//! `UPDATE_TS_CLIENT=1` rewrites the committed files from the running API instead.

use std::path::Path;
use std::process::{Command, Output};

use integration::{Api, TestDb, worker};

/// Runs a command to completion off the async runtime.
async fn run(mut cmd: Command) -> Output {
    let what = format!("{cmd:?}");
    tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{what}: {e} (Node.js and npm are needed: scripts/ensure-deps)"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn typescript_client_matches_the_document_and_follows_a_job_over_sse() {
    let root = dev::workspace_root();
    let dir = root.join("clients/typescript");
    if !dir.join("node_modules/.bin/tsc").exists() {
        let mut npm = Command::new("npm");
        npm.args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir);
        let out = run(npm).await;
        assert!(out.status.success(), "npm ci failed: {}", text(&out));
    }
    let db = TestDb::new().await;
    let api = Api::spawn(&db, &[]).await;
    let _w = worker(&db, &[]);

    // Drift: the committed document is the served one, and the committed types are what the
    // generator makes of it, without a warning.
    let served = api.get_text(&api.anon, "/openapi.json").await;
    let scratch = root.join(format!("target/ts-client-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let doc = scratch.join("openapi.json");
    std::fs::write(&doc, &served).unwrap();
    let fresh = scratch.join("schema.ts");
    let mut gen_cmd = Command::new(dir.join("node_modules/.bin/openapi-typescript"));
    gen_cmd.arg(&doc).arg("-o").arg(&fresh).current_dir(&dir);
    let out = run(gen_cmd).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "openapi-typescript failed: {}",
        text(&out)
    );
    assert!(
        stderr.trim().is_empty(),
        "openapi-typescript warned on the document:\n{stderr}"
    );
    let fresh = std::fs::read_to_string(&fresh).unwrap();
    if std::env::var_os("UPDATE_TS_CLIENT").is_some() {
        std::fs::write(dir.join("openapi.json"), &served).unwrap();
        std::fs::write(dir.join("src/schema.ts"), &fresh).unwrap();
    }
    let stale = "clients/typescript is stale: regenerate it with \
                 UPDATE_TS_CLIENT=1 cargo test -p integration --test it -- ts_client";
    assert!(
        committed(&dir.join("openapi.json")) == served,
        "{stale} (openapi.json differs from the served /openapi.json)"
    );
    assert!(
        committed(&dir.join("src/schema.ts")) == fresh,
        "{stale} (src/schema.ts differs from what openapi-typescript generates)"
    );

    // Type-check the client and the example, and compile them for node.
    let mut tsc = Command::new(dir.join("node_modules/.bin/tsc"));
    tsc.current_dir(&dir);
    let out = run(tsc).await;
    assert!(out.status.success(), "tsc failed:\n{}", text(&out));

    let mut node = Command::new("node");
    node.arg("dist/examples/follow-job.js")
        .current_dir(&dir)
        .env("STOFLOW_API", &api.base)
        .env("STOFLOW_EMAIL", integration::SELLER_EMAIL)
        .env("STOFLOW_PASSWORD", integration::TEST_PASSWORD);
    let out = run(node).await;
    let log = text(&out);
    println!("{log}");
    assert!(out.status.success(), "the example failed:\n{log}");
    let id: i64 = log
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("job "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no job id in the example's output:\n{log}"));
    // It saw the job finish over SSE, and the job did finish.
    assert!(
        log.contains(&format!("job {id} done (attempt 1)")),
        "the example did not follow job {id} to done:\n{log}"
    );
    assert_eq!(api.job(id).await["state"], "done");
    assert_eq!(api.job(id).await["kind"], "noop");
    let _ = std::fs::remove_dir_all(&scratch);
}

fn committed(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}
