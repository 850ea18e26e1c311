//! Throwaway real databases for integration tests.
//!
//! Each test gets its own database (and may create its own roles) on the local PostgreSQL and
//! MariaDB servers, reached through `SLUICE_TEST_PG_URL` / `SLUICE_TEST_MYSQL_URL`. Nothing is
//! mocked and nothing is skipped: when a server is unreachable the test fails with the command
//! that starts it. The database is dropped when the guard is dropped.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};

pub const PG_START_HINT: &str = "PostgreSQL is not reachable. Start it with:\n  \
    pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start\n\
    or point SLUICE_TEST_PG_URL at a server (default postgres://postgres@127.0.0.1:5432/postgres), \
    or run `docker compose up -d` in the repository.";
pub const MYSQL_START_HINT: &str = "MariaDB/MySQL is not reachable. Start it with:\n  \
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd\n\
    or point SLUICE_TEST_MYSQL_URL at a server (default mysql://root@127.0.0.1:3306), \
    or run `docker compose up -d` in the repository.";

pub fn pg_admin_url() -> String {
    std::env::var("SLUICE_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

pub fn mysql_admin_url() -> String {
    std::env::var("SLUICE_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".to_owned())
}

/// A name unique to this process and call, safe to use unquoted in both databases.
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let salt: u32 = rand::random::<u32>() % 100_000;
    format!("{prefix}_{}_{}_{}", std::process::id(), n, salt)
}

/// Runs async cleanup from `Drop`, which may happen inside or outside a tokio runtime.
fn run_detached<F: std::future::Future<Output = ()> + Send + 'static>(f: F) {
    let _ = std::thread::spawn(move || {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            rt.block_on(f);
        }
    })
    .join();
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

pub struct PgTestDb {
    pub name: String,
    /// Roles created for this test with [`PgTestDb::create_role`]; dropped with the database.
    roles: std::sync::Mutex<Vec<String>>,
}

pub async fn pg_connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = match tokio_postgres::connect(url, tokio_postgres::NoTls).await {
        Ok(c) => c,
        Err(e) => panic!("{PG_START_HINT}\n(connecting to {url}: {e})"),
    };
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

impl PgTestDb {
    /// Creates a fresh, empty database owned by the admin user.
    pub async fn create() -> PgTestDb {
        let admin = pg_connect(&pg_admin_url()).await;
        let name = unique_name("sluice_t");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        PgTestDb {
            name,
            roles: Default::default(),
        }
    }

    /// The admin URL with this database selected.
    pub fn url(&self) -> String {
        replace_path(&pg_admin_url(), &self.name)
    }

    pub async fn admin_client(&self) -> tokio_postgres::Client {
        pg_connect(&self.url()).await
    }

    /// Creates a login role (cluster-wide, so its name is unique) that is dropped with the database.
    pub async fn create_role(&self, prefix: &str, password: &str) -> String {
        let role = unique_name(prefix);
        let admin = pg_connect(&pg_admin_url()).await;
        admin
            .batch_execute(&format!(
                "CREATE ROLE {role} LOGIN PASSWORD '{password}'; GRANT CONNECT ON DATABASE {} TO {role}",
                self.name
            ))
            .await
            .expect("create test role");
        self.roles.lock().unwrap().push(role.clone());
        role
    }
}

impl Drop for PgTestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let roles = std::mem::take(&mut *self.roles.lock().unwrap());
        run_detached(async move {
            if let Ok((client, conn)) =
                tokio_postgres::connect(&pg_admin_url(), tokio_postgres::NoTls).await
            {
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                let _ = client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await;
                for r in roles {
                    let _ = client
                        .batch_execute(&format!("DROP ROLE IF EXISTS {r}"))
                        .await;
                }
            }
        });
    }
}

// ---------------------------------------------------------------------------------------------
// MySQL / MariaDB

pub struct MysqlTestDb {
    pub name: String,
    users: std::sync::Mutex<Vec<String>>,
}

pub async fn mysql_connect(url: &str) -> mysql_async::Conn {
    let opts = match mysql_async::Opts::from_url(url) {
        Ok(o) => o,
        Err(e) => panic!("SLUICE_TEST_MYSQL_URL is not a valid URL: {e}"),
    };
    match mysql_async::Conn::new(opts).await {
        Ok(c) => c,
        // The URL may carry a password: never print it.
        Err(e) => panic!("{MYSQL_START_HINT}\n(error: {e})"),
    }
}

impl MysqlTestDb {
    pub async fn create() -> MysqlTestDb {
        use mysql_async::prelude::Queryable;
        let mut admin = mysql_connect(&mysql_admin_url()).await;
        let name = unique_name("sluice_t");
        admin
            .query_drop(format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        let _ = admin.disconnect().await;
        MysqlTestDb {
            name,
            users: Default::default(),
        }
    }

    pub fn url(&self) -> String {
        replace_path(&mysql_admin_url(), &self.name)
    }

    pub async fn admin_conn(&self) -> mysql_async::Conn {
        mysql_connect(&self.url()).await
    }

    /// Creates a user (`name`@`%` and `name`@`localhost`) dropped with the database.
    pub async fn create_user(&self, prefix: &str, password: &str) -> String {
        use mysql_async::prelude::Queryable;
        let user = unique_name(prefix);
        let mut admin = mysql_connect(&mysql_admin_url()).await;
        for host in ["%", "localhost"] {
            admin
                .query_drop(format!(
                    "CREATE USER '{user}'@'{host}' IDENTIFIED BY '{password}'"
                ))
                .await
                .expect("create test user");
        }
        let _ = admin.disconnect().await;
        self.users.lock().unwrap().push(user.clone());
        user
    }
}

impl Drop for MysqlTestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let users = std::mem::take(&mut *self.users.lock().unwrap());
        run_detached(async move {
            use mysql_async::prelude::Queryable;
            if let Ok(opts) = mysql_async::Opts::from_url(&mysql_admin_url())
                && let Ok(mut c) = mysql_async::Conn::new(opts).await
            {
                let _ = c
                    .query_drop(format!("DROP DATABASE IF EXISTS {name}"))
                    .await;
                for u in users {
                    for host in ["%", "localhost"] {
                        let _ = c
                            .query_drop(format!("DROP USER IF EXISTS '{u}'@'{host}'"))
                            .await;
                    }
                }
                let _ = c.disconnect().await;
            }
        });
    }
}

/// Replaces the database part (the path) of a `scheme://…/db` URL, keeping any query string.
fn replace_path(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_end = base[scheme_end..]
        .find('/')
        .map(|i| scheme_end + i)
        .unwrap_or(base.len());
    let mut out = format!("{}/{}", &base[..host_end], db);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}
