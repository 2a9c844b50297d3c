//! Starting and stopping the platform's binaries as real child processes.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Path of a binary of this workspace built with the same profile as the running program
/// (they share a target folder).
pub fn bin(name: &str) -> PathBuf {
    let me = std::env::current_exe().expect("current exe");
    // Test binaries live in target/<profile>/deps; programs in target/<profile>.
    let mut dir = me.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join(name)
}

/// Spawns `name` with `args` and environment overrides, output inherited or captured to a file.
pub fn spawn(
    name: &str,
    args: &[&str],
    env: &[(&str, String)],
    log: Option<&std::path::Path>,
) -> std::io::Result<Child> {
    let path = bin(name);
    if !path.exists() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "{} is not built; run `cargo build --bins` first",
                path.display()
            ),
        ));
    }
    let mut cmd = Command::new(path);
    cmd.args(args).stdin(Stdio::null());
    // STOFLOW_SIM_* configure the simulators; the platform's processes refuse unknown
    // STOFLOW_ settings, so only stoflow-sim inherits them.
    if name != "stoflow-sim" {
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("STOFLOW_SIM_")) {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    if let Some(log) = log {
        let f = std::fs::File::create(log)?;
        cmd.stdout(f.try_clone()?).stderr(f);
    }
    cmd.spawn()
}

/// Sends a signal by name (TERM, KILL, INT) with the system `kill`.
pub fn signal(child: &Child, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status();
}

/// SIGTERM, then SIGKILL after `grace`. Returns the exit status.
pub fn terminate(child: &mut Child, grace: Duration) -> Option<std::process::ExitStatus> {
    if let Ok(Some(s)) = child.try_wait() {
        return Some(s);
    }
    signal(child, "TERM");
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait().ok()
}
