//! The command line: `sluice serve`, `sluice company create`, `sluice demo`.

use chrono::Utc;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

use crate::audit::{AuditRecord, Outcome};
use crate::config::{Config, LogFormat, Overrides, StoreOverrides, StoreUrl};
use crate::identity::mint;
use crate::model::*;
use crate::store::{Change, Company, User};

#[derive(Parser, Debug)]
#[command(name = "sluice", version, about = "A SQL datasource query gateway")]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Data directory (store, master key). Env: SLUICE_DATA_DIR.
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// A TOML configuration file.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// A shared PostgreSQL store, `postgres://user:pass@host/db?sslmode=verify-full`, instead of
    /// the embedded one in the data directory. Env: SLUICE_STORE__URL.
    #[arg(long, global = true)]
    pub store_url: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on (default 127.0.0.1:8080). Env: SLUICE_LISTEN.
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// Internal networks datasources may reach, comma-separated CIDRs. Env: SLUICE_ALLOW_NETWORKS.
    #[arg(long, value_delimiter = ',')]
    pub allow_networks: Option<Vec<ipnet::IpNet>>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the gateway.
    Serve(ServeArgs),
    /// Manage companies.
    Company {
        #[command(subcommand)]
        command: CompanyCommand,
    },
    /// Start a ready-made demonstration on the embedded store with the acme sample data.
    Demo(ServeArgs),
    /// Manage the control-plane store.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum StoreCommand {
    /// Copy a one-node installation (its SQLite store) into an empty PostgreSQL store for
    /// several replicas, in one transaction, and print the rows copied per table.
    ///
    /// Everything is copied: companies, users, tokens, groups, apps, datasources, sharing,
    /// integrations and the audit log. Datasource passwords and TLS client keys are copied
    /// sealed, as they are: every replica must run with this installation's master key, given
    /// as SLUICE_MASTER_KEY (the key the copy uses: SLUICE_MASTER_KEY if set, else
    /// <FROM>/master.key). A target that holds any row is refused. Stop the node first: what it
    /// writes after the copy's snapshot is not copied.
    Copy {
        /// The data directory of the installation (holding sluice.db and master.key).
        #[arg(long)]
        from: PathBuf,
        /// The PostgreSQL store, `postgres://user:pass@host:port/db?sslmode=...`.
        #[arg(long)]
        to: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum CompanyCommand {
    /// Create a company and its first owner; prints the owner's token as the last line.
    Create {
        name: String,
        #[arg(long)]
        owner_email: String,
    },
}

pub fn load_config(global: &Global, serve: Option<&ServeArgs>) -> anyhow::Result<Config> {
    let overrides = Overrides {
        listen: serve.and_then(|s| s.listen),
        data_dir: global.data_dir.clone(),
        allow_networks: serve.and_then(|s| s.allow_networks.clone()),
        store: global.store_url.clone().map(|url| StoreOverrides {
            url: StoreUrl::new(url),
        }),
    };
    Ok(Config::load(
        global.config.as_deref(),
        std::env::vars(),
        &overrides,
    )?)
}

pub fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match config.log.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let config = load_config(&cli.global, Some(&args))?;
            init_logging(&config);
            let app = crate::app::Application::build(config).await?;
            app.run(crate::app::shutdown_signal()).await
        }
        Command::Company {
            command: CompanyCommand::Create { name, owner_email },
        } => {
            let config = load_config(&cli.global, None)?;
            // Off the async threads: a PostgreSQL store's client blocks.
            let (n, e) = (name.clone(), owner_email.clone());
            let token =
                tokio::task::spawn_blocking(move || create_company(&config, &n, &e)).await??;
            println!("company {name:?} created; owner {owner_email}");
            println!("owner token (shown once, keep it safe):");
            println!("{token}");
            Ok(())
        }
        Command::Demo(args) => {
            let config = load_config(&cli.global, Some(&args))?;
            init_logging(&config);
            crate::demo::run(config).await
        }
        Command::Store {
            command: StoreCommand::Copy { from, to },
        } => store_copy(from, to).await,
    }
}

/// `sluice store copy`: the copy, then what was copied and what the replicas need.
async fn store_copy(from: PathBuf, to: String) -> anyhow::Result<()> {
    use crate::store::copy::{KeySource, copy};
    let url = crate::config::StoreUrl::new(to);
    let key = KeySource::find(std::env::var("SLUICE_MASTER_KEY").ok(), &from);
    let (u, k, f) = (url.clone(), key.clone(), from.clone());
    // Off the async threads: the PostgreSQL client blocks.
    let report = tokio::task::spawn_blocking(move || copy(&f, &u, &k)).await??;
    // The URL as its Debug form shows it: without the credentials.
    let shown = format!("{url:?}");
    let shown = shown
        .strip_prefix("StoreUrl(")
        .and_then(|s| s.strip_suffix(')'))
        .unwrap_or(&shown);
    println!(
        "copied {} into {shown} in one transaction:",
        from.join("sluice.db").display()
    );
    for t in &report.tables {
        let detail = if t.sources.len() > 1 {
            let parts: Vec<String> = t
                .sources
                .iter()
                .map(|(s, n)| format!("{n} from {s}"))
                .collect();
            format!("  ({})", parts.join(", "))
        } else {
            String::new()
        };
        println!("  {:<16} {:>9}{detail}", t.table, t.rows);
    }
    println!(
        "{} datasource secret(s) (passwords, TLS client keys) were copied sealed with the master \
         key from {key}.",
        report.sealed_secrets
    );
    match &key {
        KeySource::Env(_) => println!(
            "Start every replica with this same SLUICE_MASTER_KEY and --store-url (or \
             SLUICE_STORE__URL)."
        ),
        KeySource::File(p) => println!(
            "Start every replica with SLUICE_MASTER_KEY=\"$(cat {})\" and --store-url (or \
             SLUICE_STORE__URL): a replica with another key cannot open them.",
            p.display()
        ),
    }
    Ok(())
}

/// Creates a company with its first owner and returns the owner's token.
pub fn create_company(config: &Config, name: &str, owner_email: &str) -> anyhow::Result<String> {
    let name = name.trim();
    if name.is_empty() || name.len() > 200 {
        anyhow::bail!("the company name must be 1 to 200 characters");
    }
    if !owner_email.contains('@') {
        anyhow::bail!("--owner-email must be an email address");
    }
    let store = crate::app::open_store(config)?;
    let now = Utc::now();
    let company = Company {
        id: CompanyId::generate(),
        name: name.to_owned(),
        redact_private_audit: true,
        created_at: now,
    };
    let owner = User {
        id: UserId::generate(),
        company_id: company.id.clone(),
        kind: UserKind::Person,
        email: Some(owner_email.trim().to_owned()),
        name: owner_email.trim().to_owned(),
        role: CompanyRole::Owner,
        created_at: now,
    };
    let minted = mint(&owner.id, &company.id, Some("owner".to_owned()), now, None);
    let mut rec = AuditRecord::new(company.id.clone(), None, "company.create", Outcome::Allowed);
    rec.target_id = Some(company.id.to_string());
    rec.detail = Some(serde_json::json!({"name": company.name, "owner_id": owner.id}));
    store
        .apply(
            &company.id,
            vec![
                Change::CreateCompany(company.clone()),
                Change::CreateUser(owner),
                Change::CreateToken(minted.token),
            ],
            vec![rec],
        )
        .map_err(|e| match e {
            crate::store::StoreError::Conflict(_) => {
                anyhow::anyhow!("a company named {name:?} already exists")
            }
            other => other.into(),
        })?;
    Ok(minted.plain)
}
