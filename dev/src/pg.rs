//! A private Postgres cluster in a project folder, for the run command, the tests and the
//! benchmarks when `DATABASE_URL` is not set. Durable settings (fsync and synchronous_commit
//! stay on); listens on 127.0.0.1 only; trust auth, because nothing outside this machine can
//! reach it. Started as the `postgres` user when we are root (initdb refuses root).

use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error(
        "no Postgres server binaries found (looked for pg_ctl on PATH and in /usr/lib/postgresql/*/bin); \
         install them, e.g. `apt-get install postgresql` on Debian/Ubuntu, or set DATABASE_URL"
    )]
    NotInstalled,
    #[error("{step} failed: {detail}")]
    Command { step: String, detail: String },
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

pub struct Cluster {
    pub data_dir: PathBuf,
    pub port: u16,
    bin: PathBuf,
}

/// The folder holding `pg_ctl`, `initdb`, `postgres`: the newest of /usr/lib/postgresql/*/bin, or PATH.
pub fn find_bin_dir() -> Result<PathBuf, PgError> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .find(|d| d.join("initdb").exists() && d.join("pg_ctl").exists())
        .ok_or(PgError::NotInstalled)
}

pub fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

impl Cluster {
    /// Starts the cluster in `data_dir` (creating it on first use), or reuses it if it is already
    /// running. It listens on `port` when that is free, otherwise on any free port; the port is
    /// remembered in the data folder (`stoflow.port`).
    pub fn ensure(data_dir: &Path, port: u16) -> Result<Self, PgError> {
        let bin = find_bin_dir()?;
        std::fs::create_dir_all(data_dir)?;
        let data_dir = data_dir.canonicalize()?;
        let port_file = data_dir.join("stoflow.port");
        let remembered = std::fs::read_to_string(&port_file)
            .ok()
            .and_then(|p| p.trim().parse::<u16>().ok());
        let mut c = Self {
            data_dir,
            port: remembered.unwrap_or(port),
            bin,
        };
        let root = running_as_root();
        if root {
            c.run(
                "chown",
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(&c.data_dir),
            )?;
        }
        if !c.data_dir.join("PG_VERSION").exists() {
            c.pg(
                "initdb",
                &[
                    "-D",
                    &c.dir(),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-instructions",
                ],
            )?;
            let conf = format!(
                "\n# stoflow private cluster (port: see stoflow.port)\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{dir}'\n\
                 max_connections = 300\nshared_buffers = 256MB\nfsync = on\nsynchronous_commit = on\n",
                dir = c.dir()
            );
            let path = c.data_dir.join("postgresql.conf");
            let mut text = std::fs::read_to_string(&path)?;
            text.push_str(&conf);
            std::fs::write(&path, text)?;
        }
        if !c.is_running() {
            if std::net::TcpListener::bind(("127.0.0.1", c.port)).is_err() {
                // Taken by another program (or another checkout's cluster): any free port will do.
                c.port = std::net::TcpListener::bind("127.0.0.1:0")?
                    .local_addr()?
                    .port();
            }
            std::fs::write(&port_file, c.port.to_string())?;
            c.start()?;
        }
        Ok(c)
    }

    fn dir(&self) -> String {
        self.data_dir.to_string_lossy().into_owned()
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    pub fn is_running(&self) -> bool {
        self.pg("pg_ctl status", &["-D", &self.dir(), "status"])
            .is_ok()
    }

    pub fn stop(&self) -> Result<(), PgError> {
        self.stop_with("fast")
    }

    /// Stops the server with a `pg_ctl` shutdown mode: smart, fast or immediate (a crash).
    pub fn stop_with(&self, mode: &str) -> Result<(), PgError> {
        self.pg(
            "pg_ctl stop",
            &["-D", &self.dir(), "-m", mode, "-w", "stop"],
        )
        .map(|_| ())
    }

    /// Starts the stopped server again on its port.
    pub fn start(&self) -> Result<(), PgError> {
        let log = self.data_dir.join("server.log");
        let opts = format!("-p {}", self.port);
        self.pg(
            "pg_ctl start",
            &[
                "-D",
                &self.dir(),
                "-o",
                &opts,
                "-l",
                &log.to_string_lossy(),
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
        .map(|_| ())
        .map_err(|e| PgError::Command {
            step: "pg_ctl start".into(),
            detail: format!("{e}; see {}", log.display()),
        })
    }

    /// Runs a server binary, as `postgres` when we are root.
    fn pg(&self, step: &str, args: &[&str]) -> Result<String, PgError> {
        let tool = self.bin.join(step.split(' ').next().unwrap_or(step));
        let mut cmd = if running_as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(tool);
            c
        } else {
            Command::new(tool)
        };
        cmd.args(args).current_dir("/");
        self.run(step, &mut cmd)
    }

    fn run(&self, step: &str, cmd: &mut Command) -> Result<String, PgError> {
        let out = cmd.output()?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(PgError::Command {
                step: step.into(),
                detail: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            })
        }
    }
}
