//! The dashboard in real headless Chromium: `browser-tests/run.mjs` (playwright-core driving
//! Debian's chromium) against a real API and worker on a fresh database. Screenshots of every
//! page land in target/screenshots/. `scripts/ensure-deps` installs chromium and the npm package.

use std::process::Command;

use integration::{Api, TestDb, worker};

#[tokio::test]
async fn dashboard_pages_work_in_headless_chromium() {
    let root = dev::workspace_root();
    let dir = root.join("browser-tests");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} not found: run scripts/ensure-deps (as root it installs Debian's chromium)"
    );
    if !dir.join("node_modules/playwright-core").exists() {
        let st = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .expect("npm (Node.js) is needed for the browser tests");
        assert!(st.success(), "npm ci in browser-tests failed");
    }
    let db = TestDb::new().await;
    let api = Api::spawn(&db, &[]).await;
    let _w = worker(&db, &[]);
    let base = api.base.clone();
    let shots = root.join("target/screenshots");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("run.mjs")
            .current_dir(&dir)
            .env("STOFLOW_API", base)
            .env("SCREENSHOT_DIR", shots)
            .env("CHROMIUM", chromium)
            .output()
            .expect("run node")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "browser tests failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for page in [
        "overview",
        "workers",
        "jobs",
        "job-detail-dead",
        "marketplaces",
        "audit",
    ] {
        assert!(
            root.join(format!("target/screenshots/{page}.png")).exists(),
            "no screenshot of {page}"
        );
    }
}
