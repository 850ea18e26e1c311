//! Names as each database reads them, and the table rules of a scope policy.
//!
//! A name is compared in the form the server resolves it to, or the policy checks a different
//! table than the one that runs: Postgres folds unquoted names to lower case and truncates them
//! to 63 bytes; SQLite compares names case-insensitively; MySQL's case rules depend on the
//! server (`lower_case_table_names`), so allowing is exact and denying case-insensitive.

use super::PolicyError;
use super::catalog::{Catalog, RelName};
use crate::model::{DatasourceKind, ScopePolicy};
use sqlparser::ast::{Ident, ObjectName};

/// Postgres keeps at most NAMEDATALEN - 1 bytes of an identifier and silently drops the rest.
const PG_MAX_IDENT_BYTES: usize = 63;

/// One identifier in the form the server resolves it to.
pub fn normalise_ident(kind: DatasourceKind, ident: &Ident) -> String {
    match kind {
        DatasourceKind::Postgres => {
            let folded = if ident.quote_style.is_some() {
                ident.value.clone()
            } else {
                // Postgres folds only ASCII letters in a UTF-8 database.
                ident.value.to_ascii_lowercase()
            };
            truncate_at_char_boundary(folded, PG_MAX_IDENT_BYTES)
        }
        // MySQL keeps the spelling; comparisons decide how case counts.
        DatasourceKind::Mysql => ident.value.clone(),
        DatasourceKind::Sqlite => ident.value.to_ascii_lowercase(),
    }
}

fn truncate_at_char_boundary(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// The identifiers of a name, or `None` when a part is not a plain identifier.
pub fn idents(name: &ObjectName) -> Option<Vec<&Ident>> {
    name.0.iter().map(|part| part.as_ident()).collect()
}

/// A table reference resolved to the schema it lives in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRef {
    pub schema: String,
    pub table: String,
}

impl TableRef {
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }

    pub fn rel(&self) -> RelName {
        RelName::new(self.schema.clone(), self.table.clone())
    }

    pub fn from_rel(r: &RelName) -> Self {
        TableRef {
            schema: r.schema.clone(),
            table: r.name.clone(),
        }
    }
}

/// Resolves a table name as written to `schema.table`, as the server does: an unqualified
/// PostgreSQL name is a `pg_catalog` relation when the server has one of that name (pg_catalog
/// is searched first), otherwise a relation of `default_schema`; elsewhere an unqualified name
/// lives in `default_schema`.
pub fn resolve_table(
    kind: DatasourceKind,
    default_schema: &str,
    catalog: &Catalog,
    name: &ObjectName,
) -> Result<TableRef, PolicyError> {
    let parts = idents(name)
        .ok_or_else(|| PolicyError::TableNotAllowed(format!("table {name} is not allowed")))?;
    match parts.as_slice() {
        [table] => {
            let table = normalise_ident(kind, table);
            let schema =
                if kind == DatasourceKind::Postgres && catalog.system_relations.contains(&table) {
                    "pg_catalog".to_owned()
                } else {
                    default_schema.to_owned()
                };
            Ok(TableRef { schema, table })
        }
        [schema, table] => Ok(TableRef {
            schema: normalise_ident(kind, schema),
            table: normalise_ident(kind, table),
        }),
        _ => Err(PolicyError::TableNotAllowed(format!(
            "table {name} is not allowed: names with more than two parts are not supported"
        ))),
    }
}

/// Catalogue relations that show other tables' data or other sessions' statements: refused
/// even where the allow-list opens their schema (`pg_catalog.*`).
///
/// PostgreSQL: column statistics (`pg_stats`, `pg_statistic*`: histograms and most common
/// values), every `pg_stat*` view (query texts in `pg_stat_activity`, `pg_stat_statements`),
/// large objects, password hashes, user mappings, server settings and their files. MySQL: the
/// server's own schemas, the process list, InnoDB internals (full-text index words), statistics
/// and MariaDB's query cache. SQLite: `sqlite_stat3`/`sqlite_stat4`, which keep sample rows.
pub fn is_side_channel(kind: DatasourceKind, t: &TableRef) -> bool {
    let schema = t.schema.to_ascii_lowercase();
    let table = t.table.to_ascii_lowercase();
    match kind {
        DatasourceKind::Postgres => {
            // The extension's views live wherever pg_stat_statements was installed.
            table.starts_with("pg_stat_statements")
                || (schema == "pg_catalog"
                    && (table.starts_with("pg_stat")
                        || table.starts_with("pg_largeobject")
                        || matches!(
                            table.as_str(),
                            "pg_authid"
                                | "pg_shadow"
                                | "pg_user_mapping"
                                | "pg_user_mappings"
                                | "pg_file_settings"
                                | "pg_hba_file_rules"
                                | "pg_ident_file_mappings"
                                | "pg_settings"
                                | "pg_db_role_setting"
                                | "pg_prepared_xacts"
                                | "pg_replication_origin_status"
                        )))
        }
        DatasourceKind::Mysql => {
            matches!(schema.as_str(), "mysql" | "performance_schema" | "sys")
                || (schema == "information_schema"
                    && (table.starts_with("innodb_")
                        || table.ends_with("_statistics")
                        || matches!(
                            table.as_str(),
                            "processlist"
                                | "optimizer_trace"
                                | "query_cache_info"
                                | "user_variables"
                        )))
        }
        DatasourceKind::Sqlite => matches!(table.as_str(), "sqlite_stat3" | "sqlite_stat4"),
    }
}

/// Catalog and system tables, refused unless the allow-list names them.
pub fn is_catalog(kind: DatasourceKind, t: &TableRef) -> bool {
    match kind {
        DatasourceKind::Postgres => {
            t.schema == "information_schema" || t.schema.to_ascii_lowercase().starts_with("pg_")
        }
        DatasourceKind::Mysql => matches!(
            t.schema.to_ascii_lowercase().as_str(),
            "information_schema" | "mysql" | "performance_schema" | "sys"
        ),
        DatasourceKind::Sqlite => {
            // Besides sqlite_*, SQLite answers eponymous virtual tables by name alone, with no
            // arguments and so no function call for the policy to see: `pragma_*` (the file
            // path, every table's columns, compile options) and `dbstat` (every table's name
            // and size). They show denied tables too, so they count as catalog.
            let table = t.table.to_ascii_lowercase();
            table.starts_with("sqlite_") || table.starts_with("pragma_") || table == "dbstat"
        }
    }
}

/// One `allowed_tables` / `denied_tables` entry: `schema.table`, `schema.*`, or `table`.
struct Entry<'a> {
    schema: &'a str,
    /// `None` for `schema.*`.
    table: Option<&'a str>,
}

fn parse_entry<'a>(entry: &'a str, default_schema: &'a str) -> Entry<'a> {
    let entry = entry.trim();
    let (schema, table) = match entry.split_once('.') {
        Some((schema, table)) => (schema, table),
        None => (default_schema, entry),
    };
    Entry {
        schema,
        table: (table != "*").then_some(table),
    }
}

fn entry_matches(entry: &Entry, t: &TableRef, exact: bool) -> bool {
    let eq = |a: &str, b: &str| {
        if exact {
            a == b
        } else {
            a.eq_ignore_ascii_case(b)
        }
    };
    eq(entry.schema, &t.schema) && entry.table.is_none_or(|table| eq(table, &t.table))
}

/// Applies the scope's table rules to one resolved table.
pub fn check_table(
    kind: DatasourceKind,
    default_schema: &str,
    scope: &ScopePolicy,
    t: &TableRef,
) -> Result<(), PolicyError> {
    let refused =
        || PolicyError::TableNotAllowed(format!("table {} is not allowed", t.qualified()));
    if is_side_channel(kind, t) {
        return Err(PolicyError::TableNotAllowed(format!(
            "table {} is not allowed: it shows other tables' data or other sessions' statements",
            t.qualified()
        )));
    }
    if is_denied(default_schema, scope, t) {
        return Err(refused());
    }
    match allowed_by_list(kind, default_schema, scope, t) {
        Some(true) => Ok(()),
        Some(false) => Err(refused()),
        None if is_catalog(kind, t) => Err(refused()),
        None => Ok(()),
    }
}

/// Whether a `denied_tables` entry matches. Denying compares case-insensitively everywhere:
/// refusing a differently-cased twin is the safe mistake.
pub fn is_denied(default_schema: &str, scope: &ScopePolicy, t: &TableRef) -> bool {
    scope
        .denied_tables
        .iter()
        .any(|e| entry_matches(&parse_entry(e, default_schema), t, false))
}

/// `None` without an allow-list, else whether an entry matches. Allowing is exact where the
/// server may tell cases apart (Postgres quoted names, MySQL on a case-sensitive file system);
/// SQLite never does.
fn allowed_by_list(
    kind: DatasourceKind,
    default_schema: &str,
    scope: &ScopePolicy,
    t: &TableRef,
) -> Option<bool> {
    let exact = kind != DatasourceKind::Sqlite;
    scope.allowed_tables.as_ref().map(|list| {
        list.iter()
            .any(|e| entry_matches(&parse_entry(e, default_schema), t, exact))
    })
}

/// Whether the allow-list names this very relation (`schema.table` or `table`), not merely its
/// schema (`schema.*`): the admin chose it, so what it reads (a view's tables, a parent's
/// partitions) need not be listed as well. Denied tables stay denied however they are reached.
pub fn named_exactly(
    kind: DatasourceKind,
    default_schema: &str,
    scope: &ScopePolicy,
    t: &TableRef,
) -> bool {
    let exact = kind != DatasourceKind::Sqlite;
    scope.allowed_tables.as_ref().is_some_and(|list| {
        list.iter().any(|e| {
            let entry = parse_entry(e, default_schema);
            entry.table.is_some() && entry_matches(&entry, t, exact)
        })
    })
}

/// Whether the scope limits which tables statements reach at all.
pub fn scope_restricts_tables(scope: &ScopePolicy) -> bool {
    scope.allowed_tables.is_some() || !scope.denied_tables.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(schema: &str, table: &str) -> TableRef {
        TableRef {
            schema: schema.into(),
            table: table.into(),
        }
    }

    fn scope(allowed: Option<&[&str]>, denied: &[&str]) -> ScopePolicy {
        ScopePolicy {
            allowed_tables: allowed.map(|a| a.iter().map(|s| s.to_string()).collect()),
            denied_tables: denied.iter().map(|s| s.to_string()).collect(),
            ..ScopePolicy::default()
        }
    }

    #[test]
    fn postgres_folds_unquoted_names_and_truncates_them_to_63_bytes() {
        let pg = DatasourceKind::Postgres;
        assert_eq!(normalise_ident(pg, &Ident::new("Invoices")), "invoices");
        assert_eq!(
            normalise_ident(pg, &Ident::with_quote('"', "Invoices")),
            "Invoices"
        );
        let long = format!("{}tail", "s".repeat(63));
        assert_eq!(normalise_ident(pg, &Ident::new(long)), "s".repeat(63));
        // A multi-byte character straddling byte 63 is dropped whole.
        let long = format!("{}é", "s".repeat(62));
        assert_eq!(normalise_ident(pg, &Ident::new(long)), "s".repeat(62));
    }

    #[test]
    fn entries_without_a_dot_live_in_the_default_schema_and_star_covers_a_schema() {
        let s = scope(Some(&["orders", "sales.*"]), &[]);
        let pg = DatasourceKind::Postgres;
        assert!(check_table(pg, "public", &s, &t("public", "orders")).is_ok());
        assert!(check_table(pg, "public", &s, &t("sales", "anything")).is_ok());
        assert!(check_table(pg, "public", &s, &t("public", "invoices")).is_err());
        assert!(check_table(pg, "public", &s, &t("other", "orders")).is_err());
    }

    #[test]
    fn a_denied_entry_wins_over_an_allowed_one_and_ignores_case() {
        let s = scope(Some(&["public.*"]), &["public.secret"]);
        let pg = DatasourceKind::Postgres;
        assert!(check_table(pg, "public", &s, &t("public", "secret")).is_err());
        assert!(check_table(pg, "public", &s, &t("public", "Secret")).is_err());
        assert!(check_table(pg, "public", &s, &t("public", "open")).is_ok());
    }

    #[test]
    fn catalogs_are_refused_unless_the_allow_list_names_them() {
        let open = scope(None, &[]);
        for (kind, table) in [
            (DatasourceKind::Postgres, t("pg_catalog", "pg_class")),
            (DatasourceKind::Postgres, t("information_schema", "tables")),
            (DatasourceKind::Postgres, t("pg_toast", "x")),
            (DatasourceKind::Mysql, t("mysql", "user")),
            (DatasourceKind::Mysql, t("Performance_Schema", "threads")),
            (DatasourceKind::Mysql, t("sys", "x")),
            (DatasourceKind::Mysql, t("INFORMATION_SCHEMA", "TABLES")),
            (DatasourceKind::Sqlite, t("main", "sqlite_master")),
            (DatasourceKind::Sqlite, t("temp", "sqlite_temp_schema")),
            (DatasourceKind::Sqlite, t("main", "pragma_database_list")),
            (DatasourceKind::Sqlite, t("main", "PRAGMA_TABLE_INFO")),
            (DatasourceKind::Sqlite, t("temp", "dbstat")),
        ] {
            assert!(
                check_table(kind, "main", &open, &table).is_err(),
                "{table:?} on {kind}"
            );
        }
        let explicit = scope(Some(&["pg_catalog.pg_class"]), &[]);
        let pg = DatasourceKind::Postgres;
        assert!(check_table(pg, "public", &explicit, &t("pg_catalog", "pg_class")).is_ok());
        assert!(check_table(pg, "public", &explicit, &t("pg_catalog", "pg_authid")).is_err());
        let sq = DatasourceKind::Sqlite;
        let pragma = scope(Some(&["main.pragma_table_info"]), &[]);
        assert!(check_table(sq, "main", &pragma, &t("main", "pragma_table_info")).is_ok());
        // An ordinary table whose name merely contains the word stays an ordinary table.
        assert!(check_table(sq, "main", &open, &t("main", "my_pragma_notes")).is_ok());
    }

    #[test]
    fn allowing_is_exact_on_postgres_and_mysql_but_not_on_sqlite() {
        let s = scope(Some(&["shop.orders"]), &[]);
        assert!(check_table(DatasourceKind::Mysql, "shop", &s, &t("shop", "Orders")).is_err());
        assert!(check_table(DatasourceKind::Postgres, "shop", &s, &t("shop", "Orders")).is_err());
        assert!(check_table(DatasourceKind::Sqlite, "shop", &s, &t("shop", "Orders")).is_ok());
    }
}
