//! Throwaway database servers for tests that stop and restart a server or configure it in ways
//! the shared one must not be (TLS, `pg_hba.conf`): a PostgreSQL cluster made with `initdb` in a
//! temporary directory and run with `pg_ctl` on a spare loopback port, so the shared servers the
//! other tests use are never stopped or changed.
//!
//! `initdb` refuses to run as root, so when the tests run as root the cluster belongs to the
//! `postgres` system user and every server command runs through `runuser -u postgres`. Missing
//! binaries fail the test with a message saying what to install; nothing is skipped.

#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A private PostgreSQL server; stopped (immediately) and deleted on drop.
pub struct ThrowawayPg {
    pub port: u16,
    bin: PathBuf,
    data: PathBuf,
    log: PathBuf,
    /// `Some("postgres")` when the server runs as that user because we are root.
    run_as: Option<String>,
    _dir: tempfile::TempDir,
}

/// The newest installed `/usr/lib/postgresql/<version>/bin`, or `SLUICE_TEST_PG_BIN`.
fn pg_bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("SLUICE_TEST_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| {
                    let v = e.file_name().to_str()?.parse::<u32>().ok()?;
                    Some((v, e.path().join("bin")))
                })
                .filter(|(_, bin)| bin.join("initdb").exists() && bin.join("pg_ctl").exists())
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "no PostgreSQL server binaries (initdb, pg_ctl) under /usr/lib/postgresql/*/bin: \
             install the postgresql package or set SLUICE_TEST_PG_BIN to their directory"
        ),
    }
}

/// A loopback port nobody listens on right now.
pub fn spare_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a spare port");
    l.local_addr().expect("spare port").port()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn uid_gid(user: &str) -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, user])
            .output()
            .expect("run id");
        assert!(
            out.status.success(),
            "the tests run as root and initdb refuses root, but there is no `{user}` user to run \
             the throwaway PostgreSQL server as: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("numeric id")
    };
    (id("-u"), id("-g"))
}

/// What a [`ThrowawayPg`] gets besides the defaults: files in its data directory (certificates
/// and keys), lines appended to `postgresql.conf`, and a `pg_hba.conf` of its own.
#[derive(Default)]
pub struct ThrowawayPgBuilder {
    files: Vec<(String, String)>,
    conf: Vec<String>,
    hba: Option<String>,
}

impl ThrowawayPgBuilder {
    /// A file in the data directory (relative paths in `postgresql.conf` start there), owned by
    /// the server's user and readable by it alone, as PostgreSQL demands of a key file.
    pub fn file(mut self, name: &str, contents: &str) -> Self {
        self.files.push((name.to_owned(), contents.to_owned()));
        self
    }

    /// A line appended to `postgresql.conf`, e.g. `ssl = on`.
    pub fn conf(mut self, line: &str) -> Self {
        self.conf.push(line.to_owned());
        self
    }

    /// The whole `pg_hba.conf` (instead of initdb's trust-everything one). Keep a `local ...
    /// trust` line if the test uses [`ThrowawayPg::admin_local`].
    pub fn hba(mut self, contents: &str) -> Self {
        self.hba = Some(contents.to_owned());
        self
    }

    /// Creates the cluster (superuser `postgres`), applies the above and starts it.
    pub fn start(self) -> ThrowawayPg {
        let pg = ThrowawayPg::init();
        let owner = pg.run_as.as_deref().map(uid_gid);
        let place = |path: &Path, contents: &str, mode: u32| {
            std::fs::write(path, contents)
                .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(path, Some(uid), Some(gid))
                    .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
            }
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
        };
        for (name, contents) in &self.files {
            place(&pg.data.join(name), contents, 0o600);
        }
        if !self.conf.is_empty() {
            let path = pg.data.join("postgresql.conf");
            let mut text = std::fs::read_to_string(&path).expect("read postgresql.conf");
            text.push_str("\n# added by the test\n");
            for line in &self.conf {
                text.push_str(line);
                text.push('\n');
            }
            place(&path, &text, 0o600);
        }
        if let Some(hba) = &self.hba {
            place(&pg.data.join("pg_hba.conf"), hba, 0o600);
        }
        pg.start_server();
        pg
    }
}

impl ThrowawayPg {
    /// Creates a cluster (trust authentication, superuser `postgres`) and starts it.
    pub fn start() -> ThrowawayPg {
        ThrowawayPg::builder().start()
    }

    /// A cluster with files, settings or a `pg_hba.conf` of the test's own.
    pub fn builder() -> ThrowawayPgBuilder {
        ThrowawayPgBuilder::default()
    }

    /// Runs initdb (trust authentication, superuser `postgres`); the server is not started.
    fn init() -> ThrowawayPg {
        let bin = pg_bin_dir();
        let dir = tempfile::tempdir().expect("tempdir");
        let run_as = is_root().then(|| "postgres".to_owned());
        if let Some(user) = &run_as {
            let (uid, gid) = uid_gid(user);
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown the tempdir");
        }
        let data = dir.path().join("data");
        let log = dir.path().join("server.log");
        let pg = ThrowawayPg {
            port: spare_port(),
            bin,
            data,
            log,
            run_as,
            _dir: dir,
        };
        let out = pg.run(
            "initdb",
            &[
                "-D".as_ref(),
                pg.data.as_os_str(),
                "-A".as_ref(),
                "trust".as_ref(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "--no-sync".as_ref(),
            ],
        );
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        pg
    }

    /// Runs one of the server binaries, as the cluster's user.
    fn run(&self, tool: &str, args: &[&std::ffi::OsStr]) -> Output {
        let exe = self.bin.join(tool);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        cmd.args(args)
            // The server inherits the test's working directory; it must be readable by `postgres`.
            .current_dir(self._dir.path())
            .output()
            .unwrap_or_else(|e| panic!("could not run {}: {e}", exe.display()))
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start_server(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=40",
            self.port,
            self._dir.path().display()
        );
        let out = self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                self.data.as_os_str(),
                "-l".as_ref(),
                self.log.as_os_str(),
                "-o".as_ref(),
                opts.as_ref(),
                "-w".as_ref(),
                "-t".as_ref(),
                "30".as_ref(),
                "start".as_ref(),
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.server_log()
        );
    }

    /// Stops the server. `fast` ends sessions with an admin-shutdown error, as a planned
    /// restart would; `immediate` kills them as a crash would.
    pub fn stop_server(&self, mode: &str) {
        let out = self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                self.data.as_os_str(),
                "-m".as_ref(),
                mode.as_ref(),
                "-w".as_ref(),
                "stop".as_ref(),
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl stop failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The admin URL (user `postgres`, trust) of database `db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// An admin client, retrying briefly while the server comes up.
    pub async fn admin(&self) -> tokio_postgres::Client {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls).await {
                Ok((client, conn)) => {
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                    return client;
                }
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "the throwaway PostgreSQL server does not accept connections: {e}\n{}",
                        self.server_log()
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// An admin client over the server's Unix socket (initdb's `local all all trust`), for
    /// clusters whose `pg_hba.conf` refuses plain TCP.
    pub async fn admin_local(&self) -> tokio_postgres::Client {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host_path(self._dir.path())
            .port(self.port)
            .user("postgres")
            .dbname("postgres");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match cfg.connect(tokio_postgres::NoTls).await {
                Ok((client, conn)) => {
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                    return client;
                }
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "the throwaway PostgreSQL server does not accept local connections: {e}\n{}",
                        self.server_log()
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    pub fn server_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ThrowawayPg {
    fn drop(&mut self) {
        // Best effort: the server may already be stopped.
        let _ = self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                self.data.as_os_str(),
                "-m".as_ref(),
                "immediate".as_ref(),
                "stop".as_ref(),
            ],
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The sluice binary as a separate process

/// A `sluice serve` process on port 0 with its own data directory, for tests that signal or
/// kill it. The data directory outlives the process so a restart finds the same store.
pub struct SluiceProcess {
    pub child: std::process::Child,
    pub base: String,
    pub logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl SluiceProcess {
    /// Starts `sluice serve --listen 127.0.0.1:0` on `data_dir` with extra `SLUICE_*` variables,
    /// and reads the bound address from the startup log line.
    pub fn start(bin: &str, data_dir: &Path, env: &[(&str, &str)]) -> SluiceProcess {
        use std::io::{BufRead, BufReader};
        let mut child = Command::new(bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env("SLUICE_LOG", "info")
            .env("SLUICE_ALLOW_NETWORKS", "127.0.0.0/8")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {bin}: {e}"));
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                    && v["message"] == "sluice listening"
                {
                    let _ = tx.send(v["addr"].as_str().unwrap_or_default().to_owned());
                }
                sink.lock().expect("log sink").push(line);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("sluice did not report its listening address");
        SluiceProcess {
            child,
            base: format!("http://{addr}"),
            logs,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`TERM`, `KILL`, …) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit; `None` if it is still running after `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every log line so far, joined (for failure messages).
    pub fn log_text(&self) -> String {
        self.logs.lock().expect("log sink").join("\n")
    }
}

impl Drop for SluiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
