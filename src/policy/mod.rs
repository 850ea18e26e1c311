//! The SQL policy: decides from the SQL text alone whether a statement may run on a datasource,
//! and produces the exact text to send.
//!
//! Pure functions, no I/O. The steps, each refusing on its own: length cap; tokenizing with the
//! datasource's dialect (comments, quoted identifiers, variables — `lex`); parsing with a
//! recursion limit; exactly one statement; a walk over the whole tree for the statement class,
//! tables, functions, operators and placeholders (`walk`); and rendering the checked tree back
//! to text, which must parse again to the same tree (`render`). See docs/sql-policy.md.

pub mod cache;
pub mod catalog;
mod functions;
mod lex;
mod names;
mod only;
mod reach;
mod render;
mod walk;

#[cfg(test)]
mod catalog_tests;
#[cfg(test)]
mod tests;

pub use catalog::Catalog;
pub use functions::{builtin_names, is_builtin, mysql_builtins, parse_version};

use crate::model::{DatasourceKind, ScopePolicy};
use sqlparser::ast::Statement;
use sqlparser::dialect::{Dialect, MySqlDialect, PostgreSqlDialect, SQLiteDialect};
use sqlparser::parser::Parser;
use std::sync::Arc;

/// How deep the parser may recurse (nested parentheses, subqueries); deeper input is an error.
pub const RECURSION_LIMIT: usize = 50;

/// The stack the whole check runs on. Derived recursion over the tree (equality, visiting,
/// dropping) is not protected by sqlparser's `recursive-protection`; with the nesting caps in
/// `walk` and `lex` this leaves a wide margin even in debug builds.
pub const CHECK_STACK_BYTES: usize = 64 * 1024 * 1024;
/// A check runs on the current stack when at least this much is left, and on a freshly allocated
/// `CHECK_STACK_BYTES` stack otherwise. Allocating that stack costs more than the check itself (an
/// mmap and munmap per call), so the server's runtime threads are built with
/// [`RUNTIME_THREAD_STACK_BYTES`] and never need it.
const RED_ZONE_BYTES: usize = 48 * 1024 * 1024;

/// Stack size for the threads that run checks (the runtime's workers and blocking pool). Only the
/// pages a deep statement touches are ever committed.
pub const RUNTIME_THREAD_STACK_BYTES: usize = CHECK_STACK_BYTES + 2 * 1024 * 1024;

/// The datasource a statement is checked for.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub kind: DatasourceKind,
    /// Unqualified relation names resolve here (after PostgreSQL's `pg_catalog`): the scope's
    /// `default_schema`, else the catalog's (see [`default_schema`]).
    pub default_schema: &'a str,
    pub max_sql_bytes: usize,
    /// What the server behind the datasource holds, read from it.
    pub catalog: &'a Catalog,
}

/// Where a datasource's unqualified relation names resolve: the scope's `default_schema`
/// (PostgreSQL), else what the catalog read from the server (the service account's search path,
/// the MySQL database, SQLite's `main`).
pub fn default_schema<'a>(
    kind: DatasourceKind,
    scope: &'a ScopePolicy,
    catalog: &'a Catalog,
) -> &'a str {
    match (kind, scope.default_schema.as_deref()) {
        (DatasourceKind::Postgres, Some(s)) if !s.is_empty() => s,
        _ => &catalog.default_schema,
    }
}

/// What kind of statement was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatementClass {
    Query,
    Insert,
    Update,
    Delete,
}

/// An accepted statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The SQL to send: rendered from the checked AST, re-parsed and verified identical,
    /// exactly one statement.
    pub sql: String,
    pub class: StatementClass,
    /// Normalised `schema.table` names the statement touches.
    pub tables: Vec<String>,
    /// Normalised names of the functions it calls (table functions included), and the user
    /// functions the server runs for it (a view's, a trigger's) as `schema.name`.
    pub functions: Vec<String>,
    /// It runs user code: a function outside the built-in list (one an admin allowed), or a
    /// view, trigger, default or policy that calls one. Its body may change session state the
    /// policy cannot see.
    pub calls_user_functions: bool,
    /// Number of distinct placeholders (`$1..$n` on postgres, `?` on mysql and sqlite).
    pub param_count: usize,
}

/// Why a statement was refused. Every message names what was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("sql is longer than {max} bytes")]
    TooLong { max: usize },
    #[error("{0}")]
    Parse(String),
    #[error("{0}")]
    StatementNotAllowed(String),
    #[error("{0}")]
    TableNotAllowed(String),
    #[error("{0}")]
    FunctionNotAllowed(String),
    #[error("the statement does not survive rendering unchanged")]
    RenderMismatch,
}

impl crate::code::Coded for PolicyError {
    fn code(&self) -> crate::code::Code {
        use crate::code::Code;
        match self {
            PolicyError::TooLong { .. } | PolicyError::Parse(_) | PolicyError::RenderMismatch => {
                Code::SqlParseError
            }
            PolicyError::StatementNotAllowed(_) => Code::StatementNotAllowed,
            PolicyError::TableNotAllowed(_) => Code::TableNotAllowed,
            PolicyError::FunctionNotAllowed(_) => Code::FunctionNotAllowed,
        }
    }

    fn message(&self) -> String {
        self.to_string()
    }
}

/// The sqlparser dialect that reads SQL the way `kind`'s server does.
pub fn dialect(kind: DatasourceKind) -> &'static dyn Dialect {
    static POSTGRES: PostgreSqlDialect = PostgreSqlDialect {};
    static MYSQL: MySqlDialect = MySqlDialect {};
    static SQLITE: SQLiteDialect = SQLiteDialect {};
    match kind {
        DatasourceKind::Postgres => &POSTGRES,
        DatasourceKind::Mysql => &MYSQL,
        DatasourceKind::Sqlite => &SQLITE,
    }
}

/// Checks `sql` against the datasource's scope and returns the text to send.
pub fn check(sql: &str, target: &Target, scope: &ScopePolicy) -> Result<Checked, PolicyError> {
    if sql.len() > target.max_sql_bytes {
        return Err(PolicyError::TooLong {
            max: target.max_sql_bytes,
        });
    }
    stacker::maybe_grow(RED_ZONE_BYTES, CHECK_STACK_BYTES, || {
        check_on_big_stack(sql, target, scope)
    })
}

fn check_on_big_stack(
    sql: &str,
    target: &Target,
    scope: &ScopePolicy,
) -> Result<Checked, PolicyError> {
    let dialect = dialect(target.kind);
    let (mut statement, marks) = parse_one(sql, target.kind, dialect)?;
    let only = only::marked(&statement, &marks)?;
    let walk = walk::Walk {
        kind: target.kind,
        default_schema: target.default_schema,
        scope,
        catalog: target.catalog,
        only: &only,
    };
    let mut facts = walk::inspect(&statement, &walk)?;
    let reached = reach::check(
        &reach::Scope {
            kind: target.kind,
            default_schema: target.default_schema,
            scope,
            catalog: target.catalog,
        },
        &facts,
    )?;
    let qualified = render::make_explicit(&mut statement, &facts.qualify, &only);
    let sql = render::render_verified(&statement, target.kind, dialect, sql, qualified)?;
    for f in reached.functions {
        if !facts.functions.contains(&f) {
            facts.functions.push(f);
        }
    }
    Ok(Checked {
        sql,
        class: facts.class,
        tables: facts.tables,
        functions: facts.functions,
        calls_user_functions: facts.calls_user_functions || reached.runs_user_code,
        param_count: facts.param_count,
    })
}

/// The lexical checks, then sqlparser with `dialect` and [`RECURSION_LIMIT`]: exactly one
/// statement, and where PostgreSQL's `ONLY` stood. [`render`] relies on this being the parser's
/// default options on the whole text.
fn parse_one(
    sql: &str,
    kind: DatasourceKind,
    dialect: &dyn Dialect,
) -> Result<(Statement, Vec<sqlparser::tokenizer::Location>), PolicyError> {
    let (tokens, only) = lex::scan(sql, kind, dialect)?;
    let mut statements = Parser::new(dialect)
        .with_recursion_limit(RECURSION_LIMIT)
        .with_tokens_with_locations(tokens)
        .parse_statements()
        .map_err(|e| PolicyError::Parse(e.to_string()))?;
    match statements.len() {
        0 => Err(PolicyError::Parse("no statement".into())),
        1 => Ok((statements.remove(0), only)),
        n => Err(PolicyError::StatementNotAllowed(format!(
            "{n} statements are not allowed: send exactly one"
        ))),
    }
}

/// How many statements `sql` holds, read the way [`check`] reads it (for the fuzzer's oracle).
pub fn statement_count(kind: DatasourceKind, sql: &str) -> Result<usize, PolicyError> {
    let (tokens, _) = lex::scan(sql, kind, dialect(kind))?;
    Parser::new(dialect(kind))
        .with_recursion_limit(RECURSION_LIMIT)
        .with_tokens_with_locations(tokens)
        .parse_statements()
        .map(|s| s.len())
        .map_err(|e| PolicyError::Parse(e.to_string()))
}

/// Runs [`check`] on tokio's blocking pool, so a slow or pathological parse never stalls a
/// runtime worker, and turns a panic into an error instead of a dead task.
pub async fn check_isolated(
    sql: String,
    kind: DatasourceKind,
    default_schema: String,
    max_sql_bytes: usize,
    scope: ScopePolicy,
    catalog: Arc<Catalog>,
) -> Result<Checked, PolicyError> {
    let joined = tokio::task::spawn_blocking(move || {
        std::panic::catch_unwind(|| {
            let target = Target {
                kind,
                default_schema: &default_schema,
                max_sql_bytes,
                catalog: &catalog,
            };
            check(&sql, &target, &scope)
        })
    })
    .await;
    match joined {
        Ok(Ok(result)) => result,
        Ok(Err(_)) | Err(_) => Err(PolicyError::Parse(
            "internal error while checking the statement".into(),
        )),
    }
}

/// Whether the scope lets statements read `schema.table` (for the schema listing, which shows
/// only what the policy allows): the table itself, and whatever it reads (a view's tables, a
/// parent's partitions, a shadow table's virtual table). Names are compared as the checker does.
pub fn table_visible(schema: &str, table: &str, target: &Target, scope: &ScopePolicy) -> bool {
    let t = names::TableRef {
        schema: schema.to_owned(),
        table: table.to_owned(),
    };
    if names::check_table(target.kind, target.default_schema, scope, &t).is_err() {
        return false;
    }
    let facts = walk::Facts {
        class: StatementClass::Query,
        tables: Vec::new(),
        functions: Vec::new(),
        calls_user_functions: false,
        param_count: 0,
        references: vec![walk::Reference {
            table: t.clone(),
            write: false,
            only: false,
            exposed: t.table.clone(),
        }],
        qualify: Default::default(),
        bare_identifiers: Default::default(),
        identifier_parts: Default::default(),
    };
    reach::check(
        &reach::Scope {
            kind: target.kind,
            default_schema: target.default_schema,
            scope,
            catalog: target.catalog,
        },
        &facts,
    )
    .is_ok()
}

#[cfg(test)]
mod visibility_tests {
    use super::*;
    use catalog::{RelName, Relation, RelationKind};

    #[test]
    fn the_schema_listing_follows_the_table_rules() {
        let scope = ScopePolicy {
            allowed_tables: Some(vec!["public.customers".into(), "sales.*".into()]),
            denied_tables: vec!["sales.secrets".into()],
            ..Default::default()
        };
        let k = DatasourceKind::Postgres;
        let mut catalog = Catalog::default();
        catalog.relations.insert(
            RelName::new("sales", "leaky"),
            Relation {
                kind: RelationKind::View,
                reads: vec![RelName::new("sales", "secrets")],
                ..Relation::default()
            },
        );
        let target = Target {
            kind: k,
            default_schema: "public",
            max_sql_bytes: 1 << 16,
            catalog: &catalog,
        };
        assert!(table_visible("public", "customers", &target, &scope));
        assert!(table_visible("sales", "orders", &target, &scope));
        assert!(!table_visible("sales", "secrets", &target, &scope));
        assert!(
            !table_visible("sales", "leaky", &target, &scope),
            "a view over a denied table"
        );
        assert!(!table_visible("public", "invoices", &target, &scope));
        let open = ScopePolicy::default();
        assert!(table_visible("public", "invoices", &target, &open));
        assert!(!table_visible("pg_catalog", "pg_authid", &target, &open));
    }
}
