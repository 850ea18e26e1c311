//! Fuzzes `sluice::policy::check`: arbitrary SQL under every dialect and a handful of scopes, with
//! the properties an accepted statement must have asserted (a violation panics, which libFuzzer
//! reports as a crash).
//!
//! Input: the first byte picks the configuration, the rest (lossily decoded as UTF-8) is the SQL.
//! Of the first byte, bits 0-1 pick the dialect (0 postgres, 1 mysql, 2 sqlite, 3 postgres),
//! bit 2 the access (read_only, read_write), bits 3-4 the table rules (none, a deny-list, an
//! allow-list, both). Bytes `@` to `_` (0x40-0x5f) cover every configuration, so the seed corpus
//! stays plain text.
//!
//! Properties of every accepted statement:
//! (a) `check` never panics (on any input);
//! (b) its `sql`, checked again with the same target and scope, is accepted with the same text,
//!     class, tables, functions and placeholder count (a fixpoint);
//! (c) under read_only its class is `Query`;
//! (d) its `sql` parses with sqlparser in the same dialect to exactly one statement;
//! (e) every table in `tables` satisfies the scope: not denied, on the allow-list when there is
//!     one, and not a catalog table when there is none (an oracle written independently of
//!     `policy::names`);
//! (f) every function in `functions` is on the dialect's built-in list (no scope here adds any).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::model::{Access, DatasourceKind, ScopePolicy};
use sluice::policy::{self, StatementClass, Target};

/// Large enough that no fuzz input (or its rendering) hits the length cap.
const MAX_SQL_BYTES: usize = 1 << 20;

struct Config {
    kind: DatasourceKind,
    default_schema: &'static str,
    scope: ScopePolicy,
}

fn config(byte: u8) -> Config {
    let (kind, default_schema) = match byte & 3 {
        1 => (DatasourceKind::Mysql, "shop"),
        2 => (DatasourceKind::Sqlite, "main"),
        _ => (DatasourceKind::Postgres, "public"),
    };
    let access = if byte & 4 == 0 {
        Access::ReadOnly
    } else {
        Access::ReadWrite
    };
    let owned = |list: &[&str]| -> Vec<String> {
        list.iter()
            .map(|e| e.replace("{d}", default_schema))
            .collect()
    };
    // Names the seed corpus uses (orders, customers, sales_reps, invoices) in every entry form:
    // `table`, `schema.table`, `schema.*`.
    let (allowed_tables, denied_tables) = match (byte >> 3) & 3 {
        0 => (None, Vec::new()),
        1 => (None, owned(&["sales_reps", "{d}.invoices", "hidden.*"])),
        2 => (
            Some(owned(&["orders", "{d}.customers", "sales.*"])),
            Vec::new(),
        ),
        _ => (
            Some(owned(&["orders", "customers", "sales.*", "{d}.invoices"])),
            owned(&["sales.secrets", "{d}.customers"]),
        ),
    };
    Config {
        kind,
        default_schema,
        scope: ScopePolicy {
            access,
            allowed_tables,
            denied_tables,
            ..ScopePolicy::default()
        },
    }
}

/// An entry of a table list as (schema, table), `None` for `schema.*`.
fn entry<'a>(e: &'a str, default_schema: &'a str) -> (&'a str, Option<&'a str>) {
    let (schema, table) = e.split_once('.').unwrap_or((default_schema, e));
    (schema, (table != "*").then_some(table))
}

fn listed(list: &[String], d: &str, schema: &str, table: &str, exact: bool) -> bool {
    let eq = |a: &str, b: &str| {
        if exact {
            a == b
        } else {
            a.eq_ignore_ascii_case(b)
        }
    };
    list.iter().any(|e| {
        let (s, t) = entry(e, d);
        eq(s, schema) && t.is_none_or(|t| eq(t, table))
    })
}

fn catalog(kind: DatasourceKind, schema: &str, table: &str) -> bool {
    match kind {
        DatasourceKind::Postgres => {
            schema == "information_schema" || schema.to_ascii_lowercase().starts_with("pg_")
        }
        DatasourceKind::Mysql => ["information_schema", "mysql", "performance_schema", "sys"]
            .iter()
            .any(|s| s.eq_ignore_ascii_case(schema)),
        DatasourceKind::Sqlite => {
            let t = table.to_ascii_lowercase();
            t.starts_with("sqlite_") || t.starts_with("pragma_") || t == "dbstat"
        }
    }
}

/// Whether `schema.table` may be touched. Denying ignores case everywhere, allowing is exact
/// except on SQLite.
fn permitted(c: &Config, schema: &str, table: &str) -> bool {
    let d = c.default_schema;
    if listed(&c.scope.denied_tables, d, schema, table, false) {
        return false;
    }
    match &c.scope.allowed_tables {
        Some(list) => listed(list, d, schema, table, c.kind != DatasourceKind::Sqlite),
        None => !catalog(c.kind, schema, table),
    }
}

/// `tables` holds `schema.table` with the parts as the server reads them, which may contain dots
/// themselves (quoted names): the name passes when some split of it is permitted, so a quoted dot
/// can never make the oracle cry wolf, and an unambiguous name is judged exactly.
fn table_permitted(c: &Config, qualified: &str) -> bool {
    qualified
        .match_indices('.')
        .any(|(i, _)| permitted(c, &qualified[..i], &qualified[i + 1..]))
}

fn check(c: &Config, sql: &str) -> Result<policy::Checked, policy::PolicyError> {
    // A server with nothing behind any table name, whose built-ins are the static lists.
    let catalog = policy::Catalog {
        default_schema: c.default_schema.to_owned(),
        ..policy::Catalog::default()
    };
    let target = Target {
        kind: c.kind,
        default_schema: c.default_schema,
        max_sql_bytes: MAX_SQL_BYTES,
        catalog: &catalog,
    };
    policy::check(sql, &target, &c.scope)
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let c = config(first);
    let sql = String::from_utf8_lossy(rest);
    // (a): a panic inside check is a crash.
    let Ok(checked) = check(&c, &sql) else {
        return;
    };
    let kind = c.kind;
    let access = c.scope.access;

    // (b)
    match check(&c, &checked.sql) {
        Ok(again) => assert!(
            again == checked,
            "not a fixpoint on {kind} {access:?}: {sql:?} -> {checked:?} -> {again:?}"
        ),
        Err(e) => panic!(
            "the accepted rendering is refused on {kind} {access:?}: {sql:?} -> {:?}: {e:?}",
            checked.sql
        ),
    }

    // (c)
    if access == Access::ReadOnly {
        assert!(
            checked.class == StatementClass::Query,
            "read_only accepted a {:?} on {kind}: {sql:?} -> {:?}",
            checked.class,
            checked.sql
        );
    }

    // (d): on a large stack like check's, since dropping a deep tree recurses. Parsed the way
    // the policy parses (PostgreSQL's `ONLY` is its own addition to sqlparser).
    let parsed = stacker::maybe_grow(1 << 20, policy::CHECK_STACK_BYTES, || {
        policy::statement_count(kind, &checked.sql)
    });
    match parsed {
        Ok(1) => {}
        other => panic!(
            "accepted sql is not one statement on {kind}: {sql:?} -> {:?}: {other:?}",
            checked.sql
        ),
    }

    // (e)
    for table in &checked.tables {
        assert!(
            table_permitted(&c, table),
            "table {table:?} outside the scope {:?} accepted on {kind}: {sql:?} -> {:?}",
            c.scope,
            checked.sql
        );
    }

    // (f)
    for function in &checked.functions {
        assert!(
            policy::is_builtin(kind, function),
            "function {function:?} not on the {kind} list accepted: {sql:?} -> {:?}",
            checked.sql
        );
    }
});
