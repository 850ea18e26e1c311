//! `sluice demo`: a ready-made demonstration of seed 002's scenario on the embedded store.
//!
//! It builds the `acme` sample database as a SQLite file (always) and, when the local PostgreSQL
//! and MariaDB/MySQL servers answer, as databases there too with three service accounts
//! (analysts, sales reps, executives). It then creates the company, its users and one app per
//! audience, starts the gateway and prints tokens and ready-to-paste curl lines.

use anyhow::Context;
use chrono::Utc;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::app::Application;
use crate::audit::{AuditRecord, Outcome};
use crate::config::Config;
use crate::datasource::tls::TlsMode;
use crate::fixtures::{self, AcmeAccounts};
use crate::identity::mint;
use crate::model::*;
use crate::store::{
    App, Change, Company, ConnectionSettings, Datasource, Integration, SealedSecrets, StoredTls,
    User, build_spec,
};

/// A file that marks a data directory as the demo's own, so the demo never wipes a real one.
const MARKER: &str = "SLUICE_DEMO";
const PG_DB: &str = "sluice_demo_acme";
const MYSQL_DB: &str = "sluice_demo_acme";
/// The TLS mode of the demo's PostgreSQL and MySQL datasources, stated rather than defaulted:
/// the local servers it loads speak plain TCP (MariaDB, the docker-compose images) or show a
/// self-signed certificate (Debian's PostgreSQL), which the default `verify-full` rightly refuses.
const DEMO_TLS: TlsMode = TlsMode::Disable;

/// The three audiences of seed 002: who they are, which tables their service account reaches.
struct Audience {
    key: &'static str,
    app: &'static str,
    email: &'static str,
    /// SQLite has no accounts: its datasources emulate the grants with `allowed_tables`.
    sqlite_tables: &'static [&'static str],
}

const AUDIENCES: [Audience; 3] = [
    Audience {
        key: "analysts",
        app: "Analysts",
        email: "analyst@acme.example",
        sqlite_tables: &[
            "main.customers",
            "main.products",
            "main.orders",
            "main.order_items",
            "main.invoices",
            "main.financial_summary",
        ],
    },
    Audience {
        key: "sales",
        app: "Sales reps",
        email: "sales@acme.example",
        sqlite_tables: &["main.customers", "main.orders", "main.order_items"],
    },
    Audience {
        key: "executives",
        app: "Executives",
        email: "exec@acme.example",
        sqlite_tables: &["main.financial_summary"],
    },
];

fn random_password() -> String {
    let bytes: [u8; 12] = rand::random();
    format!("demo_{}", hex::encode(bytes))
}

/// Prepares the demo data directory: created fresh, or reset if it is a previous demo's.
fn prepare_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        if !dir.join(MARKER).exists() {
            anyhow::bail!(
                "{} is not empty and was not made by `sluice demo`; pass --data-dir with a new directory",
                dir.display()
            );
        }
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir.join("sqlite"))?;
    std::fs::write(dir.join(MARKER), "made by `sluice demo`; safe to delete\n")?;
    Ok(())
}

async fn pg_admin(url: &str) -> Option<tokio_postgres::Client> {
    let connect = tokio_postgres::connect(url, tokio_postgres::NoTls);
    let (client, conn) = tokio::time::timeout(Duration::from_secs(3), connect)
        .await
        .ok()?
        .ok()?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Some(client)
}

/// Loads acme into PostgreSQL with fresh service accounts; `None` when no server answers.
async fn setup_postgres(url: &str) -> anyhow::Result<Option<AcmeAccounts>> {
    let Some(admin) = pg_admin(url).await else {
        return Ok(None);
    };
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)"))
        .await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {PG_DB}"))
        .await?;
    let db_url = match url.rsplit_once('/') {
        Some((base, _))
            if base.contains("://") && base.len() > base.find("://").unwrap_or(0) + 3 =>
        {
            format!("{base}/{PG_DB}")
        }
        _ => format!("{url}/{PG_DB}"),
    };
    let db = pg_admin(&db_url)
        .await
        .context("connect to the demo PostgreSQL database")?;
    fixtures::load_postgres(&db).await?;
    let accounts = AcmeAccounts {
        analyst: ("sluice_demo_analyst".into(), random_password()),
        sales: ("sluice_demo_sales".into(), random_password()),
        executive: ("sluice_demo_executive".into(), random_password()),
    };
    fixtures::create_postgres_accounts(&db, PG_DB, &accounts).await?;
    Ok(Some(accounts))
}

async fn setup_mysql(url: &str) -> anyhow::Result<Option<AcmeAccounts>> {
    use mysql_async::prelude::Queryable;
    let Ok(opts) = mysql_async::Opts::from_url(url) else {
        return Ok(None);
    };
    let Ok(Ok(mut admin)) =
        tokio::time::timeout(Duration::from_secs(3), mysql_async::Conn::new(opts)).await
    else {
        return Ok(None);
    };
    admin
        .query_drop(format!(
            "DROP DATABASE IF EXISTS {MYSQL_DB}; CREATE DATABASE {MYSQL_DB}; USE {MYSQL_DB}"
        ))
        .await?;
    fixtures::load_mysql(&mut admin).await?;
    let accounts = AcmeAccounts {
        analyst: ("sluice_demo_analyst".into(), random_password()),
        sales: ("sluice_demo_sales".into(), random_password()),
        executive: ("sluice_demo_executive".into(), random_password()),
    };
    fixtures::create_mysql_accounts(&mut admin, MYSQL_DB, &accounts).await?;
    let _ = admin.disconnect().await;
    Ok(Some(accounts))
}

fn account<'a>(accounts: &'a AcmeAccounts, audience: &str) -> &'a (String, String) {
    match audience {
        "analysts" => &accounts.analyst,
        "sales" => &accounts.sales,
        _ => &accounts.executive,
    }
}

/// What the demo created, for the printout.
pub struct DemoSetup {
    pub owner_token: String,
    /// (audience key, app id, app name, user email, user token, datasource names)
    pub audiences: Vec<(String, AppId, String, String, String, Vec<String>)>,
    pub kinds: Vec<DatasourceKind>,
}

/// Creates the company, users, datasources and apps directly in the store.
pub fn create_company(
    store: &crate::store::Store,
    config: &Config,
    sqlite_file: &Path,
    pg: Option<&AcmeAccounts>,
    mysql: Option<&AcmeAccounts>,
) -> anyhow::Result<DemoSetup> {
    let now = Utc::now();
    let company = Company {
        id: CompanyId::generate(),
        name: "Acme".into(),
        redact_private_audit: true,
        created_at: now,
    };
    let cid = company.id.clone();
    let owner = User {
        id: UserId::generate(),
        company_id: cid.clone(),
        kind: UserKind::Person,
        email: Some("owner@acme.example".into()),
        name: "Acme owner".into(),
        role: CompanyRole::Owner,
        created_at: now,
    };
    let owner_tok = mint(&owner.id, &cid, Some("demo".into()), now, None);
    let mut changes = vec![
        Change::CreateCompany(company),
        Change::CreateUser(owner.clone()),
        Change::CreateToken(owner_tok.token),
    ];
    let mut kinds = vec![DatasourceKind::Sqlite];
    if pg.is_some() {
        kinds.push(DatasourceKind::Postgres);
    }
    if mysql.is_some() {
        kinds.push(DatasourceKind::Mysql);
    }
    for k in &kinds {
        changes.push(Change::SetIntegration(Integration {
            kind: *k,
            enabled: true,
            creators_can_register: true,
        }));
    }
    let mut audiences = Vec::new();
    for a in &AUDIENCES {
        let user = User {
            id: UserId::generate(),
            company_id: cid.clone(),
            kind: UserKind::Person,
            email: Some(a.email.into()),
            name: a.app.into(),
            role: CompanyRole::Consumer,
            created_at: now,
        };
        let tok = mint(&user.id, &cid, Some("demo".into()), now, None);
        changes.push(Change::CreateUser(user.clone()));
        changes.push(Change::CreateToken(tok.token));
        let app = App {
            id: AppId::generate(),
            company_id: cid.clone(),
            name: a.app.into(),
            description: format!("seed 002: the {} audience", a.key),
            visibility: Visibility::Private,
            owner_id: owner.id.clone(),
            members: Vec::new(),
            datasources: Vec::new(),
            created_at: now,
            updated_at: now,
        };
        changes.push(Change::PutApp {
            app: app.clone(),
            is_new: true,
        });
        changes.push(Change::SetMember {
            object_id: app.id.to_string(),
            principal: PrincipalId::User(user.id.clone()),
            role: ObjectRole::Viewer,
        });
        let mut ds_names = Vec::new();
        for kind in &kinds {
            let id = DatasourceId::generate();
            let name = format!("acme-{}-{}", kind, a.key);
            let (connection, password, policy) = match kind {
                DatasourceKind::Sqlite => (
                    ConnectionSettings {
                        path: Some(sqlite_file.display().to_string()),
                        ..Default::default()
                    },
                    None,
                    ScopePolicy {
                        allowed_tables: Some(
                            a.sqlite_tables.iter().map(|s| s.to_string()).collect(),
                        ),
                        max_rows: 1000,
                        ..Default::default()
                    },
                ),
                _ => {
                    let (accounts, port, db) = match kind {
                        DatasourceKind::Postgres => (pg, 5432, PG_DB),
                        _ => (mysql, 3306, MYSQL_DB),
                    };
                    let Some(accounts) = accounts else { continue };
                    let (user, pw) = account(accounts, a.key);
                    (
                        ConnectionSettings {
                            host: Some("127.0.0.1".into()),
                            port: Some(port),
                            database: Some(db.into()),
                            user: Some(user.clone()),
                            tls: Some(StoredTls {
                                mode: DEMO_TLS,
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                        Some(pw.clone()),
                        ScopePolicy {
                            max_rows: 1000,
                            ..Default::default()
                        },
                    )
                }
            };
            let password_enc = password.as_deref().map(|p| store.seal_password(&id, p));
            let pool_max_size = config.pools.default_size;
            let sealed = SealedSecrets {
                password: password_enc.as_deref(),
                tls_client_key: None,
            };
            let spec = build_spec(
                &id,
                *kind,
                &connection,
                sealed,
                pool_max_size,
                1,
                store.key(),
            );
            changes.push(Change::PutDatasource {
                ds: Box::new(Datasource {
                    id: id.clone(),
                    company_id: cid.clone(),
                    name: name.clone(),
                    description: format!("acme on {kind} as the {} service account", a.key),
                    kind: *kind,
                    visibility: Visibility::Private,
                    owner_id: owner.id.clone(),
                    connection,
                    password_enc,
                    tls_client_key_enc: None,
                    policy,
                    pool_max_size,
                    generation: 1,
                    members: Vec::new(),
                    created_at: now,
                    updated_at: now,
                    spec: Arc::new(spec),
                }),
                is_new: true,
            });
            changes.push(Change::Attach {
                app_id: app.id.clone(),
                datasource_id: id,
                by: owner.id.clone(),
            });
            ds_names.push(name);
        }
        audiences.push((
            a.key.to_owned(),
            app.id.clone(),
            a.app.to_owned(),
            a.email.to_owned(),
            tok.plain,
            ds_names,
        ));
    }
    let rec = AuditRecord::new(cid.clone(), None, "company.create", Outcome::Allowed);
    store.apply(&cid, changes, vec![rec])?;
    Ok(DemoSetup {
        owner_token: owner_tok.plain,
        audiences,
        kinds,
    })
}

pub async fn run(mut config: Config) -> anyhow::Result<()> {
    if config.data_dir == Config::default().data_dir {
        config.data_dir = PathBuf::from("sluice-demo");
    }
    prepare_dir(&config.data_dir)?;
    if config.allow_networks.is_empty() {
        // The demo's databases are on this machine: open loopback on purpose.
        config.allow_networks = vec!["127.0.0.0/8".parse()?, "::1/128".parse()?];
    }
    let sqlite_file = config.data_dir.join("sqlite").join("acme.sqlite");
    fixtures::create_sqlite(&sqlite_file)?;
    let sqlite_file = sqlite_file.canonicalize()?;
    let pg_url = std::env::var("SLUICE_DEMO_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let my_url = std::env::var("SLUICE_DEMO_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into());
    let pg = match setup_postgres(&pg_url).await {
        Ok(a) => a,
        Err(e) => {
            eprintln!("PostgreSQL found but the acme fixture could not be loaded: {e:#}");
            None
        }
    };
    let mysql = match setup_mysql(&my_url).await {
        Ok(a) => a,
        Err(e) => {
            eprintln!("MySQL/MariaDB found but the acme fixture could not be loaded: {e:#}");
            None
        }
    };
    let app = Application::build(config.clone()).await?;
    let setup = create_company(
        &app.state.store,
        &config,
        &sqlite_file,
        pg.as_ref(),
        mysql.as_ref(),
    )?;
    let addr = app.local_addr()?;
    print_guide(&setup, &addr.to_string());
    app.run(crate::app::shutdown_signal()).await
}

fn print_guide(s: &DemoSetup, addr: &str) {
    let kinds: Vec<&str> = s.kinds.iter().map(|k| k.as_str()).collect();
    println!("\nsluice demo is running on http://{addr} (Ctrl-C stops it)");
    println!("acme is loaded on: {}", kinds.join(", "));
    if s.kinds.len() == 1 {
        println!(
            "(no PostgreSQL/MySQL server answered on 127.0.0.1: only the SQLite datasources exist)"
        );
    } else {
        println!(
            "TLS to the databases: mode {DEMO_TLS} (plain TCP to the local servers); a datasource \
             you register defaults to verify-full"
        );
    }
    println!("\nconsole: http://{addr}/ (open it in a browser)");
    println!(
        "  sign in with the owner token to see every screen, or with an audience's token below"
    );
    println!("  to see what that user is offered");
    println!("\nowner token: {}", s.owner_token);
    for (key, app_id, app, email, token, ds) in &s.audiences {
        println!("\n== {app} app ({key}); user {email}");
        println!("   token: {token}");
        println!("   datasources: {}", ds.join(", "));
        println!("   MCP (for AI assistants): http://{addr}/v1/apps/{app_id}/mcp");
        let ds0 = ds.first().map(String::as_str).unwrap_or("");
        let sql = match key.as_str() {
            "executives" => {
                "SELECT month, revenue, cost FROM financial_summary ORDER BY month DESC LIMIT 3"
            }
            "sales" => "SELECT id, name, country FROM customers ORDER BY id LIMIT 3",
            _ => "SELECT status, count(*) AS orders FROM orders GROUP BY status ORDER BY status",
        };
        println!(
            "   curl -s http://{addr}/v1/apps/{app_id}/query -H 'authorization: Bearer {token}' \\\n     -H 'content-type: application/json' -d '{{\"datasource\": \"{ds0}\", \"sql\": \"{sql}\"}}'"
        );
    }
    println!(
        "\nAI assistants: point an MCP client (streamable HTTP) at an app's MCP URL above with\n  \
         the header 'Authorization: Bearer <that audience's token>' (README: \"Use sluice from an AI assistant\")"
    );
    if let Some((_, app_id, _, _, token, ds)) = s.audiences.iter().find(|a| a.0 == "sales") {
        println!("\n== refused: the sales reps' app may not read the financial summary");
        println!(
            "   curl -s http://{addr}/v1/apps/{app_id}/query -H 'authorization: Bearer {token}' \\\n     -H 'content-type: application/json' -d '{{\"datasource\": \"{}\", \"sql\": \"SELECT * FROM financial_summary\"}}'",
            ds.first().map(String::as_str).unwrap_or("")
        );
    }
    println!();
}
