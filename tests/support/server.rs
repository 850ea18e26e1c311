//! The one way the tests start the gateway in-process: a fresh data directory, companies created
//! with the CLI's own function before the server starts (so no wait for the store's poll), and
//! the real application on 127.0.0.1:0. `TestApp` and `Gateway` are helpers over it.

use sluice::app::Application;
use sluice::config::Config;
use std::path::{Path, PathBuf};

pub struct Server {
    pub base: String,
    /// The data directory (`<tempdir>/data`); its `sqlite/` is the default SQLite root.
    pub data_dir: PathBuf,
    /// The owner token of each company, in the order given to [`Server::start`].
    pub owners: Vec<String>,
    config: Config,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts a server with these companies (name, owner e-mail) and a configuration adjusted
    /// by `tweak`.
    pub async fn start(companies: &[(&str, &str)], tweak: impl FnOnce(&mut Config)) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().join("data");
        let mut config = Config {
            listen: "127.0.0.1:0".parse().expect("addr"),
            data_dir: data_dir.clone(),
            ..Config::default()
        };
        tweak(&mut config);
        let owners = companies
            .iter()
            .map(|(name, email)| {
                sluice::cli::create_company(&config, name, email).expect("create company")
            })
            .collect();
        std::fs::create_dir_all(data_dir.join("sqlite")).expect("sqlite root");
        let (base, stop, task) = Self::run(config.clone()).await;
        Server {
            base,
            data_dir,
            owners,
            config,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        }
    }

    #[allow(clippy::type_complexity)]
    async fn run(
        config: Config,
    ) -> (
        String,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    ) {
        let app = Application::build(config).await.expect("build the gateway");
        let addr = app.local_addr().expect("local addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.run(async move {
            let _ = rx.await;
        }));
        (format!("http://{addr}"), tx, task)
    }

    /// Stops the server gracefully, runs `offline` on its data directory (what an operator, or
    /// an older version, might do while it is down), and starts it again there with the same
    /// configuration. `base` changes: the new server has a new port.
    pub async fn restart(&mut self, offline: impl FnOnce(&Path)) {
        self.shut_down().await;
        offline(&self.data_dir);
        let (base, stop, task) = Self::run(self.config.clone()).await;
        self.base = base;
        self.stop = Some(stop);
        self.task = Some(task);
    }

    async fn shut_down(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("server run");
        }
    }

    /// Stops the server gracefully and checks it ended without error.
    pub async fn stop(mut self) {
        self.shut_down().await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}
