//! The SQL policy: decides from the SQL text alone whether a statement may run on a datasource,
//! and produces the exact text to send.
//!
//! Pure functions, no I/O. The steps, each refusing on its own: length cap; tokenizing with the
//! datasource's dialect (comments, quoted identifiers, variables — `lex`); parsing with a
//! recursion limit; exactly one statement; a walk over the whole tree for the statement class,
//! tables, functions, operators and placeholders (`walk`); and rendering the checked tree back
//! to text, which must parse again to the same tree (`render`). See docs/sql-policy.md.

pub mod cache;
mod functions;
mod lex;
mod names;
mod render;
mod walk;

#[cfg(test)]
mod tests;

pub use functions::{builtin_names, is_builtin};

use crate::model::{DatasourceKind, ScopePolicy};
use sqlparser::ast::Statement;
use sqlparser::dialect::{Dialect, MySqlDialect, PostgreSqlDialect, SQLiteDialect};
use sqlparser::parser::Parser;

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
    /// Unqualified names resolve here: postgres "public", mysql the database name, sqlite "main".
    pub default_schema: &'a str,
    pub max_sql_bytes: usize,
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
    /// Normalised names of the functions it calls (table functions included).
    pub functions: Vec<String>,
    /// It calls a function outside the built-in list (one an admin allowed): its body may change
    /// session state the policy cannot see.
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
    let statement = parse_one(sql, target.kind, dialect)?;
    let facts = walk::inspect(&statement, target.kind, target.default_schema, scope)?;
    let sql = render::render_verified(&statement, dialect, sql)?;
    Ok(Checked {
        sql,
        class: facts.class,
        tables: facts.tables,
        functions: facts.functions,
        calls_user_functions: facts.calls_user_functions,
        param_count: facts.param_count,
    })
}

/// The lexical checks, then sqlparser with `dialect` and [`RECURSION_LIMIT`]: exactly one
/// statement. [`render`] relies on this being the parser's default options on the whole text.
fn parse_one(
    sql: &str,
    kind: DatasourceKind,
    dialect: &dyn Dialect,
) -> Result<Statement, PolicyError> {
    let tokens = lex::scan(sql, kind, dialect)?;
    let mut statements = Parser::new(dialect)
        .with_recursion_limit(RECURSION_LIMIT)
        .with_tokens_with_locations(tokens)
        .parse_statements()
        .map_err(|e| PolicyError::Parse(e.to_string()))?;
    match statements.len() {
        0 => Err(PolicyError::Parse("no statement".into())),
        1 => Ok(statements.remove(0)),
        n => Err(PolicyError::StatementNotAllowed(format!(
            "{n} statements are not allowed: send exactly one"
        ))),
    }
}

/// Runs [`check`] on tokio's blocking pool, so a slow or pathological parse never stalls a
/// runtime worker, and turns a panic into an error instead of a dead task.
pub async fn check_isolated(
    sql: String,
    kind: DatasourceKind,
    default_schema: String,
    max_sql_bytes: usize,
    scope: ScopePolicy,
) -> Result<Checked, PolicyError> {
    let joined = tokio::task::spawn_blocking(move || {
        std::panic::catch_unwind(|| {
            let target = Target {
                kind,
                default_schema: &default_schema,
                max_sql_bytes,
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

/// Whether the scope lets statements touch `schema.table` (for the schema listing, which shows
/// only what the policy allows). The name is normalised as the checker normalises names.
pub fn table_visible(
    schema: &str,
    table: &str,
    default_schema: &str,
    kind: DatasourceKind,
    scope: &ScopePolicy,
) -> bool {
    let t = names::TableRef {
        schema: schema.to_owned(),
        table: table.to_owned(),
    };
    names::check_table(kind, default_schema, scope, &t).is_ok()
}

#[cfg(test)]
mod visibility_tests {
    use super::*;

    #[test]
    fn the_schema_listing_follows_the_table_rules() {
        let scope = ScopePolicy {
            allowed_tables: Some(vec!["public.customers".into(), "sales.*".into()]),
            denied_tables: vec!["sales.secrets".into()],
            ..Default::default()
        };
        let k = DatasourceKind::Postgres;
        assert!(table_visible("public", "customers", "public", k, &scope));
        assert!(table_visible("sales", "orders", "public", k, &scope));
        assert!(!table_visible("sales", "secrets", "public", k, &scope));
        assert!(!table_visible("public", "invoices", "public", k, &scope));
        let open = ScopePolicy::default();
        assert!(table_visible("public", "invoices", "public", k, &open));
        assert!(!table_visible(
            "pg_catalog",
            "pg_authid",
            "public",
            k,
            &open
        ));
    }
}
