//! Throwaway MariaDB servers for tests that need a server configured their way (TLS with the
//! test's own certificates, `require_secure_transport=ON`, or no TLS at all): `mariadb-install-db`
//! into a temporary directory, then `mariadbd` on a spare loopback port, killed on drop, so the
//! shared server the other tests use is never reconfigured.
//!
//! The admin connection goes through the server's Unix socket as `root` (no password), which
//! `require_secure_transport` counts as secure. Startup is kept short: no name resolution, a
//! small InnoDB, no durability. A missing binary fails the test saying what to install; nothing
//! is skipped.
//!
//! ```ignore
//! let server = ThrowawayMariadb::builder()
//!     .tls(&server_cert.cert_pem, &server_cert.key_pem, Some(&ca.cert_pem))
//!     .require_secure_transport()
//!     .start();
//! server.admin_sql(&["CREATE DATABASE d"]).await;
//! ```

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;

use super::throwaway::spare_port;

/// How long the server may take to say it is ready (seconds on an idle machine).
const START_LIMIT: Duration = Duration::from_secs(60);

/// A private MariaDB server; killed and deleted on drop.
pub struct ThrowawayMariadb {
    pub port: u16,
    /// Whether it was given a certificate: it must then serve TLS.
    tls: bool,
    socket: PathBuf,
    log: PathBuf,
    child: Child,
    dir: tempfile::TempDir,
}

/// `mariadbd`: `SLUICE_TEST_MARIADBD`, else Debian's path, else the first on `PATH`.
fn mariadbd() -> PathBuf {
    if let Ok(path) = std::env::var("SLUICE_TEST_MARIADBD") {
        return PathBuf::from(path);
    }
    let debian = Path::new("/usr/sbin/mariadbd");
    if debian.exists() {
        return debian.to_owned();
    }
    which("mariadbd").unwrap_or_else(|| {
        panic!(
            "no mariadbd binary (looked at /usr/sbin/mariadbd and PATH): install the MariaDB \
             server (`apt-get install -y mariadb-server`) or set SLUICE_TEST_MARIADBD to it"
        )
    })
}

fn install_db() -> PathBuf {
    which("mariadb-install-db").unwrap_or_else(|| {
        panic!(
            "no mariadb-install-db on PATH: install the MariaDB server \
             (`apt-get install -y mariadb-server`), which brings it"
        )
    })
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// What a [`ThrowawayMariadb`] gets besides the defaults.
#[derive(Default)]
pub struct ThrowawayMariadbBuilder {
    files: Vec<(String, String)>,
    args: Vec<String>,
    tls: bool,
}

impl ThrowawayMariadbBuilder {
    /// Serves TLS with this certificate and key (PEM). `client_ca_pem`: the CA that client
    /// certificates must chain to (the server asks for one; `REQUIRE X509` accounts need it).
    pub fn tls(mut self, cert_pem: &str, key_pem: &str, client_ca_pem: Option<&str>) -> Self {
        self.tls = true;
        self.files.push(("server-cert.pem".into(), cert_pem.into()));
        self.files.push(("server-key.pem".into(), key_pem.into()));
        self.args.push("--ssl-cert={dir}/server-cert.pem".into());
        self.args.push("--ssl-key={dir}/server-key.pem".into());
        if let Some(ca) = client_ca_pem {
            self.files.push(("client-ca.pem".into(), ca.into()));
            self.args.push("--ssl-ca={dir}/client-ca.pem".into());
        }
        self
    }

    /// Refuses every connection over TCP without TLS (`require_secure_transport=ON`).
    pub fn require_secure_transport(self) -> Self {
        self.arg("--require-secure-transport=ON")
    }

    /// Any other `mariadbd` option; `{dir}` stands for the server's directory (where the files
    /// are).
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_owned());
        self
    }

    /// Creates the data directory, starts the server and waits until it accepts connections.
    pub fn start(self) -> ThrowawayMariadb {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let log = dir.path().join("server.log");
        let socket = dir.path().join("mysqld.sock");
        for (name, contents) in &self.files {
            let path = dir.path().join(name);
            std::fs::write(&path, contents)
                .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        }
        // Settings both the bootstrap and the server must agree on, and what keeps them quick.
        // Its own temporary directory too: in the shared /tmp a bootstrap's internal temporary
        // table was once gone before it could drop it ("Could not remove temporary table …
        // error 2", then "Unknown table 'mysql.tmp_user_sys'") while other tests ran.
        let tmpdir = format!("--tmpdir={}", dir.path().display());
        let small = [
            "--innodb-buffer-pool-size=8M",
            "--innodb-log-file-size=4M",
            "--innodb-flush-log-at-trx-commit=0",
            "--innodb-doublewrite=0",
            "--skip-name-resolve",
            tmpdir.as_str(),
        ];
        let root = is_root();
        let install = install_db();
        let mut cmd = Command::new(&install);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            .args(small);
        if root {
            cmd.arg("--user=root");
        }
        let out = cmd
            .current_dir(dir.path())
            .output()
            .unwrap_or_else(|e| panic!("could not run {}: {e}", install.display()));
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );

        let port = spare_port();
        let mut cmd = Command::new(mariadbd());
        // `--no-defaults` must come first. The server moves into its data directory, so every
        // path it is given is absolute.
        let dir_text = dir.path().display().to_string();
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--log-error={}", log.display()))
            .arg(format!(
                "--pid-file={}",
                dir.path().join("mysqld.pid").display()
            ))
            .args(["--performance-schema=OFF", "--max-connections=60"])
            .args(small)
            .args(self.args.iter().map(|a| a.replace("{dir}", &dir_text)));
        if root {
            cmd.arg("--user=root");
        }
        let child = cmd
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("could not start mariadbd: {e}"));
        let mut server = ThrowawayMariadb {
            port,
            tls: self.tls,
            socket,
            log,
            child,
            dir,
        };
        server.wait_ready();
        server
    }
}

impl ThrowawayMariadb {
    /// A server with the defaults: no TLS, plain TCP accepted.
    pub fn start() -> ThrowawayMariadb {
        ThrowawayMariadb::builder().start()
    }

    pub fn builder() -> ThrowawayMariadbBuilder {
        ThrowawayMariadbBuilder::default()
    }

    /// Waits for "ready for connections" in the log (the port and the socket are open then).
    /// A server given a certificate it cannot use starts all the same, without TLS: that fails
    /// here, rather than as a test's puzzling "does not offer TLS".
    fn wait_ready(&mut self) {
        let started = Instant::now();
        loop {
            let log = self.server_log();
            if log.contains("ready for connections") {
                assert!(
                    !(self.tls && log.contains("SSL error")),
                    "the throwaway mariadbd could not use its certificate:\n{log}"
                );
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the throwaway mariadbd exited ({status}) before it was ready:\n{}",
                    self.server_log()
                );
            }
            assert!(
                started.elapsed() < START_LIMIT,
                "the throwaway mariadbd was not ready after {START_LIMIT:?}:\n{}",
                self.server_log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// An admin connection (`root`, no password) over the Unix socket.
    pub async fn admin(&self) -> mysql_async::Conn {
        let opts = mysql_async::OptsBuilder::default()
            .socket(Some(self.socket.to_string_lossy().into_owned()))
            .user(Some("root"));
        mysql_async::Conn::new(opts).await.unwrap_or_else(|e| {
            panic!(
                "the throwaway mariadbd refuses its admin: {e}\n{}",
                self.server_log()
            )
        })
    }

    /// Runs each statement as the admin.
    pub async fn admin_sql(&self, statements: &[&str]) {
        let mut admin = self.admin().await;
        for s in statements {
            admin
                .query_drop(*s)
                .await
                .unwrap_or_else(|e| panic!("{s}: {e}"));
        }
        admin.disconnect().await.expect("disconnect the admin");
    }

    pub fn server_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for ThrowawayMariadb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
