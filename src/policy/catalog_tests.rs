//! Dense tests of what the catalogue changes: names resolved as the server resolves them and
//! sent explicit, everything a name reaches checked like the name, code the server would run
//! on the statement's behalf, extensions, and the built-ins this server really has.

use super::catalog::{Catalog, Extension, RelName, Relation, RelationKind, SchemaObjects};
use super::*;
use crate::model::Access;

const PG: DatasourceKind = DatasourceKind::Postgres;
const MY: DatasourceKind = DatasourceKind::Mysql;
const LITE: DatasourceKind = DatasourceKind::Sqlite;

fn rel(s: &str) -> RelName {
    let (schema, name) = s.split_once('.').expect("schema.name");
    RelName::new(schema, name)
}

fn rels(list: &[&str]) -> Vec<RelName> {
    list.iter().map(|s| rel(s)).collect()
}

/// A PostgreSQL server whose service account has `search_path = lib`, with the objects the
/// issue's attacks used.
fn lib_server() -> Catalog {
    let mut c = Catalog {
        kind: Some(PG),
        server_version: "PostgreSQL 15.20 (Debian)".into(),
        default_schema: "lib".into(),
        builtin_functions: [
            "lower",
            "upper",
            "count",
            "sum",
            "now",
            "date_trunc",
            "length",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        system_relations: ["pg_class", "pg_stats", "pg_namespace"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        ..Catalog::default()
    };
    let mut put = |name: &str, r: Relation| {
        c.relations.insert(rel(name), r);
    };
    put(
        "lib.ev_parent",
        Relation {
            children: rels(&["lib.ev_open", "lib.ev_secret"]),
            ..Relation::default()
        },
    );
    put(
        "lib.pay",
        Relation {
            kind: RelationKind::Partitioned,
            children: rels(&["lib.pay_2024", "lib.pay_secret"]),
            ..Relation::default()
        },
    );
    // A partition that is partitioned again: the grandchild is reached too.
    put(
        "lib.pay_2024",
        Relation {
            kind: RelationKind::Partitioned,
            children: rels(&["lib.pay_2024_q1"]),
            ..Relation::default()
        },
    );
    put(
        "lib.v_secrets",
        Relation {
            kind: RelationKind::View,
            reads: rels(&["lib.secrets"]),
            ..Relation::default()
        },
    );
    put(
        "lib.v_nested",
        Relation {
            kind: RelationKind::View,
            reads: rels(&["lib.v_secrets", "lib.members"]),
            ..Relation::default()
        },
    );
    put(
        "lib.mv_secrets",
        Relation {
            kind: RelationKind::MaterializedView,
            reads: rels(&["lib.secrets"]),
            ..Relation::default()
        },
    );
    put(
        "lib.v_members",
        Relation {
            kind: RelationKind::View,
            reads: rels(&["lib.members"]),
            ..Relation::default()
        },
    );
    put(
        "lib.v_calls",
        Relation {
            kind: RelationKind::View,
            reads: rels(&["lib.members"]),
            read_functions: vec!["lib.unlock".into()],
            ..Relation::default()
        },
    );
    put(
        "lib.customers",
        Relation {
            cascades: rels(&["lib.secrets"]),
            write_functions: vec!["lib.audit_trigger".into()],
            ..Relation::default()
        },
    );
    put(
        "lib.members",
        Relation {
            row_cast: true,
            cast_columns: vec!["mood".into()],
            ..Relation::default()
        },
    );
    put(
        "lib.v_pg",
        Relation {
            kind: RelationKind::View,
            reads: rels(&["pg_catalog.pg_class"]),
            ..Relation::default()
        },
    );
    put(
        "lib.v_hidden",
        Relation {
            kind: RelationKind::View,
            opaque_reads: true,
            ..Relation::default()
        },
    );
    put(
        "lib.triggered",
        Relation {
            opaque_writes: true,
            ..Relation::default()
        },
    );
    c
}

fn scope(f: impl FnOnce(&mut ScopePolicy)) -> ScopePolicy {
    let mut s = ScopePolicy::default();
    f(&mut s);
    s
}

fn deny(tables: &[&str]) -> ScopePolicy {
    scope(|s| s.denied_tables = tables.iter().map(|t| t.to_string()).collect())
}

fn allow(tables: &[&str]) -> ScopePolicy {
    scope(|s| s.allowed_tables = Some(tables.iter().map(|t| t.to_string()).collect()))
}

fn rw(mut s: ScopePolicy) -> ScopePolicy {
    s.access = Access::ReadWrite;
    s
}

fn run(
    kind: DatasourceKind,
    cat: &Catalog,
    sql: &str,
    s: &ScopePolicy,
) -> Result<Checked, PolicyError> {
    let target = Target {
        kind,
        default_schema: default_schema(kind, s, cat),
        max_sql_bytes: 1 << 20,
        catalog: cat,
    };
    check(sql, &target, s)
}

#[track_caller]
fn ok(kind: DatasourceKind, cat: &Catalog, sql: &str, s: &ScopePolicy) -> Checked {
    let c = run(kind, cat, sql, s).unwrap_or_else(|e| panic!("{kind} refused {sql:?}: {e:?}"));
    // What is sent checks again to itself: the names made explicit are not made explicit twice.
    let again = run(kind, cat, &c.sql, s)
        .unwrap_or_else(|e| panic!("{kind} refused its own rendering {:?}: {e:?}", c.sql));
    assert_eq!(again.sql, c.sql, "{kind} {sql:?}");
    assert_eq!(again.tables, c.tables, "{kind} {sql:?}");
    c
}

#[track_caller]
fn no(
    kind: DatasourceKind,
    cat: &Catalog,
    sql: &str,
    s: &ScopePolicy,
    needle: &str,
) -> PolicyError {
    match run(kind, cat, sql, s) {
        Ok(c) => panic!("{kind} accepted {sql:?} as {:?}", c.sql),
        Err(e) => {
            assert!(
                e.to_string()
                    .to_lowercase()
                    .contains(&needle.to_lowercase()),
                "{kind} {sql:?}: {e} does not name {needle}"
            );
            e
        }
    }
}

fn table_refusal(e: &PolicyError) -> bool {
    matches!(e, PolicyError::TableNotAllowed(_))
}

fn function_refusal(e: &PolicyError) -> bool {
    matches!(e, PolicyError::FunctionNotAllowed(_))
}

// ---------------------------------------------------------------- resolution and explicit names

#[test]
fn unqualified_names_resolve_in_the_accounts_own_schema_not_public() {
    let cat = lib_server();
    let denied = deny(&["lib.secrets"]);
    for sql in [
        "SELECT * FROM secrets",
        "SELECT s.* FROM members m JOIN secrets s ON s.id = m.id",
        "WITH x AS (SELECT * FROM secrets) SELECT * FROM x",
        "SELECT (SELECT count(*) FROM secrets)",
        "SELECT 1 UNION SELECT id FROM SECRETS",
        "SELECT * FROM members WHERE id IN (SELECT id FROM secrets)",
    ] {
        assert!(table_refusal(&no(PG, &cat, sql, &denied, "lib.secrets")));
    }
    // public.secrets is another table, and allowed.
    ok(PG, &cat, "SELECT * FROM public.secrets", &denied);
    // The reverse: only lib.members allowed, and the unqualified name is that table.
    let c = ok(
        PG,
        &cat,
        "SELECT count(*) FROM members",
        &allow(&["lib.members"]),
    );
    assert_eq!(c.sql, "SELECT count(*) FROM \"lib\".members");
    assert_eq!(c.tables, vec!["lib.members"]);
}

#[test]
fn the_scope_can_name_the_default_schema_and_the_server_only_fills_the_gap() {
    let cat = lib_server();
    let s = scope(|s| {
        s.default_schema = Some("sales".into());
        s.denied_tables = vec!["sales.secrets".into()];
    });
    no(PG, &cat, "SELECT * FROM secrets", &s, "sales.secrets");
    let c = ok(PG, &cat, "SELECT * FROM orders", &s);
    assert_eq!(c.tables, vec!["sales.orders"]);
    // An empty default schema in the scope means "not set".
    let empty = scope(|s| s.default_schema = Some(String::new()));
    assert_eq!(
        ok(PG, &cat, "SELECT * FROM orders", &empty).tables,
        vec!["lib.orders"]
    );
}

#[test]
fn with_no_usable_schema_on_the_search_path_an_unqualified_name_is_refused_clearly() {
    let mut cat = lib_server();
    cat.default_schema = String::new();
    no(
        PG,
        &cat,
        "SELECT * FROM orders",
        &ScopePolicy::default(),
        "has no schema",
    );
    ok(
        PG,
        &cat,
        "SELECT * FROM lib.orders",
        &ScopePolicy::default(),
    );
    ok(
        PG,
        &cat,
        "SELECT relname FROM pg_class",
        &allow(&["pg_catalog.pg_class"]),
    );
}

#[test]
fn a_pg_name_is_a_catalogue_relation_only_when_the_server_has_one() {
    let cat = lib_server();
    // pg_notes is no pg_catalog relation on this server: it is lib's.
    let c = ok(PG, &cat, "SELECT * FROM pg_notes", &ScopePolicy::default());
    assert_eq!(c.tables, vec!["lib.pg_notes"]);
    assert_eq!(c.sql, "SELECT * FROM \"lib\".pg_notes");
    no(
        PG,
        &cat,
        "SELECT * FROM pg_notes",
        &deny(&["lib.pg_notes"]),
        "lib.pg_notes",
    );
    // pg_class is, and is sent as pg_catalog's.
    let c = ok(
        PG,
        &cat,
        "SELECT relname FROM pg_class",
        &allow(&["pg_catalog.pg_class"]),
    );
    assert_eq!(c.sql, "SELECT relname FROM \"pg_catalog\".pg_class");
}

#[test]
fn every_relation_is_sent_qualified_wherever_it_sits_and_cte_names_are_left_alone() {
    let cat = lib_server();
    let s = rw(ScopePolicy::default());
    for (sql, sent) in [
        (
            "WITH t AS (SELECT id FROM members) SELECT * FROM t JOIN orders o ON o.id = t.id",
            "WITH t AS (SELECT id FROM \"lib\".members) SELECT * FROM t JOIN \"lib\".orders o ON o.id = t.id",
        ),
        (
            "INSERT INTO log (n) SELECT count(*) FROM members",
            "INSERT INTO \"lib\".log (n) SELECT count(*) FROM \"lib\".members",
        ),
        (
            "UPDATE orders SET total = 0 FROM members WHERE members.id = orders.id",
            "UPDATE \"lib\".orders SET total = 0 FROM \"lib\".members WHERE members.id = orders.id",
        ),
        (
            "DELETE FROM orders USING members WHERE members.id = orders.id",
            "DELETE FROM \"lib\".orders USING \"lib\".members WHERE members.id = orders.id",
        ),
    ] {
        assert_eq!(ok(PG, &cat, sql, &s).sql, sent, "{sql}");
    }
    // Quoted names keep their spelling; the schema is quoted as the server stores it.
    let c = ok(
        PG,
        &cat,
        "SELECT * FROM \"Mixed Case\"",
        &ScopePolicy::default(),
    );
    assert_eq!(c.sql, "SELECT * FROM \"lib\".\"Mixed Case\"");
}

#[test]
fn mysql_tables_and_stored_functions_carry_the_database_and_dual_is_no_table() {
    let cat = Catalog {
        default_schema: "shop".into(),
        ..Catalog::default()
    };
    let c = ok(
        MY,
        &cat,
        "SELECT o.id FROM orders o JOIN `Items` i ON i.id = o.id",
        &ScopePolicy::default(),
    );
    assert_eq!(
        c.sql,
        "SELECT o.id FROM `shop`.orders o JOIN `shop`.`Items` i ON i.id = o.id"
    );
    // The targets of a multi-table DELETE are named outside FROM: qualified too (with no
    // default database the server could not find them otherwise).
    let c = ok(
        MY,
        &cat,
        "DELETE orders FROM orders JOIN items ON items.id = orders.id",
        &rw(ScopePolicy::default()),
    );
    assert_eq!(
        c.sql,
        "DELETE `shop`.orders FROM `shop`.orders JOIN `shop`.items ON items.id = orders.id"
    );
    // An alias as the target: the server could not resolve it with no default database.
    let e = no(
        MY,
        &cat,
        "DELETE p FROM orders p JOIN items i ON i.id = p.id",
        &rw(ScopePolicy::default()),
        "alias",
    );
    assert!(matches!(e, PolicyError::StatementNotAllowed(_)));
    // FROM DUAL reads no table, whatever the allow-list says.
    let c = ok(MY, &cat, "SELECT 1 FROM DUAL", &allow(&["shop.orders"]));
    assert!(c.tables.is_empty());
    assert_eq!(c.sql, "SELECT 1 FROM DUAL");
    // Quoted, it is a table name like any other.
    no(
        MY,
        &cat,
        "SELECT 1 FROM `dual`",
        &allow(&["shop.orders"]),
        "dual",
    );
}

// ---------------------------------------------------------------- what a name reaches

#[test]
fn a_parent_is_refused_when_a_child_or_partition_is_denied_unless_the_statement_says_only() {
    let cat = lib_server();
    let s = deny(&["lib.ev_secret", "lib.pay_secret"]);
    for sql in [
        "SELECT * FROM lib.ev_parent",
        "SELECT * FROM ev_parent",
        "SELECT count(*) FROM (SELECT * FROM ev_parent) x",
        "SELECT * FROM pay",
    ] {
        assert!(table_refusal(&no(PG, &cat, sql, &s, "not allowed")));
    }
    let c = ok(PG, &cat, "SELECT * FROM ONLY ev_parent", &s);
    assert_eq!(c.sql, "SELECT * FROM ONLY \"lib\".ev_parent");
    ok(
        PG,
        &cat,
        "SELECT * FROM ONLY (lib.ev_parent) AS e WHERE e.id > 0",
        &s,
    );
    // Writes through the parent reach the children as well.
    let w = rw(s.clone());
    no(PG, &cat, "UPDATE ev_parent SET x = 1", &w, "lib.ev_secret");
    no(PG, &cat, "DELETE FROM pay", &w, "lib.pay_secret");
    let c = ok(PG, &cat, "DELETE FROM ONLY ev_parent WHERE id = 1", &w);
    assert_eq!(c.sql, "DELETE FROM ONLY \"lib\".ev_parent WHERE id = 1");
    ok(PG, &cat, "UPDATE ONLY ev_parent SET x = 1", &w);
    // ONLY leaves out the parent's own children only: a grandchild behind an ONLY-less
    // partition is still reached.
    let grand = deny(&["lib.pay_2024_q1"]);
    no(PG, &cat, "SELECT * FROM pay", &grand, "lib.pay_2024_q1");
    no(
        PG,
        &cat,
        "SELECT * FROM pay_2024",
        &grand,
        "lib.pay_2024_q1",
    );
    ok(PG, &cat, "SELECT * FROM ONLY pay_2024", &grand);
}

#[test]
fn an_allowed_parent_stands_for_its_partitions_only_when_the_admin_named_it() {
    let cat = lib_server();
    // Named exactly: the admin chose the parent, its partitions come with it.
    ok(PG, &cat, "SELECT * FROM pay", &allow(&["lib.pay"]));
    // Reached through a wildcard of another schema's entry: every partition must be allowed.
    let wide = allow(&["lib.pay", "lib.pay_2024"]);
    ok(PG, &cat, "SELECT * FROM pay", &wide);
    let partial = scope(|s| {
        s.allowed_tables = Some(vec!["lib.*".into()]);
        s.denied_tables = vec!["lib.pay_2024_q1".into()];
    });
    // Denied stays denied however it is reached, named exactly or not.
    no(PG, &cat, "SELECT * FROM pay", &partial, "lib.pay_2024_q1");
    let named_but_denied = scope(|s| {
        s.allowed_tables = Some(vec!["lib.pay".into()]);
        s.denied_tables = vec!["lib.pay_secret".into()];
    });
    no(
        PG,
        &cat,
        "SELECT * FROM pay",
        &named_but_denied,
        "lib.pay_secret",
    );
}

#[test]
fn a_view_that_reads_a_denied_table_is_denied_however_deep_it_hides_it() {
    let cat = lib_server();
    let s = deny(&["lib.secrets"]);
    for sql in [
        "SELECT * FROM v_secrets",
        "SELECT * FROM lib.v_nested",
        "SELECT * FROM mv_secrets",
        "WITH a AS (SELECT * FROM v_nested) SELECT count(*) FROM a",
    ] {
        assert!(table_refusal(&no(PG, &cat, sql, &s, "lib.secrets")));
    }
    ok(PG, &cat, "SELECT * FROM v_members", &s);
    // With an allow-list: a view named exactly is the admin's choice; reached through a
    // schema wildcard, its tables must be allowed too.
    ok(
        PG,
        &cat,
        "SELECT * FROM v_members",
        &allow(&["lib.v_members"]),
    );
    no(
        PG,
        &cat,
        "SELECT * FROM v_secrets",
        &allow(&["lib.v_*", "lib.v_secrets2"]),
        "not allowed",
    );
    let wildcard = allow(&["lib.*"]);
    ok(PG, &cat, "SELECT * FROM v_members", &wildcard);
    let only_views =
        scope(|s| s.allowed_tables = Some(vec!["other.*".into(), "lib.v_members".into()]));
    ok(PG, &cat, "SELECT * FROM v_members", &only_views);
    // A user view over the system catalogue is the catalogue.
    no(
        PG,
        &cat,
        "SELECT * FROM v_pg",
        &ScopePolicy::default(),
        "pg_catalog.pg_class",
    );
    // A view the account may not read the definition of: refused once tables are limited.
    ok(PG, &cat, "SELECT * FROM v_hidden", &ScopePolicy::default());
    no(PG, &cat, "SELECT * FROM v_hidden", &s, "cannot see");
    ok(
        PG,
        &cat,
        "SELECT * FROM v_hidden",
        &allow(&["lib.v_hidden"]),
    );
}

#[test]
fn a_shadow_table_is_checked_as_its_virtual_table() {
    let mut cat = Catalog {
        default_schema: "main".into(),
        ..Catalog::default()
    };
    cat.relations.insert(
        rel("main.notes_fts"),
        Relation {
            kind: RelationKind::Virtual,
            ..Relation::default()
        },
    );
    for shadow in ["notes_fts_content", "notes_fts_data", "notes_fts_idx"] {
        cat.relations.insert(
            rel(&format!("main.{shadow}")),
            Relation {
                kind: RelationKind::Shadow,
                shadow_of: Some(rel("main.notes_fts")),
                ..Relation::default()
            },
        );
    }
    cat.relations.insert(
        rel("main.docs_fts"),
        Relation {
            kind: RelationKind::Virtual,
            reads: rels(&["main.docs"]),
            ..Relation::default()
        },
    );
    let s = deny(&["main.notes_fts", "main.docs"]);
    for sql in [
        "SELECT * FROM notes_fts_content",
        "SELECT * FROM NOTES_FTS_DATA",
        "SELECT c0 FROM main.notes_fts_idx",
        "SELECT * FROM notes_fts",
        // External content: the FTS table returns the content table's text.
        "SELECT * FROM docs_fts WHERE docs_fts MATCH 'x'",
    ] {
        assert!(
            table_refusal(&no(LITE, &cat, sql, &s, "not allowed")),
            "{sql}"
        );
    }
    // A view over a shadow table reads the virtual table's data.
    cat.relations.insert(
        rel("main.v_content"),
        Relation {
            kind: RelationKind::View,
            reads: rels(&["main.notes_fts_content"]),
            ..Relation::default()
        },
    );
    no(
        LITE,
        &cat,
        "SELECT * FROM v_content",
        &deny(&["main.notes_fts"]),
        "main.notes_fts",
    );
    // Allowed by list: the shadow's virtual table must be allowed too.
    no(
        LITE,
        &cat,
        "SELECT * FROM notes_fts_content",
        &allow(&["main.notes_fts_content"]),
        "main.notes_fts",
    );
    ok(
        LITE,
        &cat,
        "SELECT * FROM notes_fts_content",
        &allow(&["main.notes_fts_content", "main.notes_fts"]),
    );
}

#[test]
fn a_write_is_refused_when_a_cascade_or_rule_reaches_a_denied_table() {
    let cat = lib_server();
    let s = rw(scope(|s| {
        s.denied_tables = vec!["lib.secrets".into()];
        s.extra_functions = vec!["lib.audit_trigger".into()];
    }));
    no(
        PG,
        &cat,
        "DELETE FROM customers WHERE id = 1",
        &s,
        "lib.secrets",
    );
    no(
        PG,
        &cat,
        "UPDATE customers SET id = 2 WHERE id = 1",
        &s,
        "cascades",
    );
    // Reading it cascades nowhere.
    ok(PG, &cat, "SELECT * FROM customers", &s);
}

#[test]
fn code_the_server_runs_for_a_statement_must_be_allowed_like_a_call() {
    let cat = lib_server();
    // A view calling a user function.
    let e = no(
        PG,
        &cat,
        "SELECT * FROM v_calls",
        &ScopePolicy::default(),
        "lib.unlock",
    );
    assert!(function_refusal(&e));
    let allowed = scope(|s| s.extra_functions = vec!["lib.unlock".into()]);
    let c = ok(PG, &cat, "SELECT * FROM v_calls", &allowed);
    assert!(c.calls_user_functions, "the session may change under it");
    assert!(c.functions.contains(&"lib.unlock".to_string()));
    // An unqualified entry means the default schema.
    ok(
        PG,
        &cat,
        "SELECT * FROM v_calls",
        &scope(|s| s.extra_functions = vec!["unlock".into()]),
    );
    // A trigger function runs on writes only.
    let w = rw(ScopePolicy::default());
    ok(PG, &cat, "SELECT * FROM customers", &w);
    no(
        PG,
        &cat,
        "INSERT INTO customers (id) VALUES (1)",
        &w,
        "lib.audit_trigger",
    );
    let with_trigger = rw(scope(|s| {
        s.extra_functions = vec!["lib.audit_trigger".into()]
    }));
    let c = ok(
        PG,
        &cat,
        "INSERT INTO customers (id) VALUES (1)",
        &with_trigger,
    );
    assert!(c.calls_user_functions);
}

#[test]
fn writes_whose_triggers_cannot_be_read_are_refused_once_tables_are_limited() {
    let cat = lib_server();
    let open = rw(ScopePolicy::default());
    let c = ok(PG, &cat, "INSERT INTO triggered VALUES (1)", &open);
    assert!(c.calls_user_functions);
    let limited = rw(deny(&["lib.secrets"]));
    no(
        PG,
        &cat,
        "INSERT INTO triggered VALUES (1)",
        &limited,
        "triggers",
    );
    ok(PG, &cat, "SELECT * FROM triggered", &limited);
}

#[test]
fn whole_rows_and_columns_whose_types_have_user_casts_are_refused() {
    let cat = lib_server();
    let s = ScopePolicy::default();
    for sql in [
        "SELECT m::text FROM lib.members m",
        "SELECT CAST(m AS text) FROM members m",
        "SELECT members FROM members",
        "SELECT length(m) FROM members AS m",
        "SELECT m.lower FROM members m",
        "SELECT mood::text FROM members",
        "SELECT m.mood FROM members m",
    ] {
        assert!(
            function_refusal(&no(PG, &cat, sql, &s, "user-defined cast")),
            "{sql}"
        );
    }
    ok(PG, &cat, "SELECT m.id, m.name FROM members m", &s);
    ok(PG, &cat, "SELECT * FROM members", &s);
}

// ---------------------------------------------------------------- functions and operators

#[test]
fn a_built_in_the_server_does_not_have_is_refused_as_absent() {
    let cat = lib_server();
    let s = ScopePolicy::default();
    for name in ["uuidv7", "any_value", "gen_random_uuid"] {
        let sql = format!("SELECT {name}()");
        no(PG, &cat, &sql, &s, "does not provide");
    }
    // Grammar constructs are no functions the catalogue lists, and no user function can stand
    // in for them.
    ok(
        PG,
        &cat,
        "SELECT coalesce(NULL, 1), nullif(1, 2), greatest(1, 2)",
        &s,
    );
    ok(PG, &cat, "SELECT lower('A')", &s);
    // The same on MariaDB, whose built-ins come from information_schema.SQL_FUNCTIONS.
    let maria = Catalog {
        default_schema: "shop".into(),
        builtin_functions: ["lower", "mid", "bit_count", "inet_aton", "nvl", "count"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        ..Catalog::default()
    };
    for sql in ["SELECT any_value(1)", "SELECT regexp_like('a', 'a')"] {
        no(MY, &maria, sql, &s, "does not provide");
    }
    ok(
        MY,
        &maria,
        "SELECT MID('abc', 1, 1), BIT_COUNT(3), INET_ATON('1.2.3.4'), NVL(NULL, 1)",
        &s,
    );
    ok(
        MY,
        &maria,
        "SELECT IF(1, 2, 3), LEFT('ab', 1), DATE('2024-01-02')",
        &s,
    );
}

#[test]
fn an_allowed_name_for_a_built_in_not_on_the_list_calls_the_built_in() {
    let mut cat = lib_server();
    cat.builtin_functions.insert("current_setting".into());
    let s = scope(|s| s.extra_functions = vec!["current_setting".into()]);
    let c = ok(PG, &cat, "SELECT current_setting('TimeZone')", &s);
    assert_eq!(c.sql, "SELECT current_setting('TimeZone')");
    // Off the list, the policy cannot tell a harmless built-in from one that changes the session
    // (`set_config`, below): both count as user code, so the driver resets the session after.
    assert!(c.calls_user_functions);
    cat.builtin_functions.insert("set_config".into());
    let s = scope(|s| s.extra_functions = vec!["set_config".into()]);
    let c = ok(PG, &cat, "SELECT set_config('app.tenant', 'x', false)", &s);
    assert_eq!(c.functions, vec!["set_config"]);
    assert!(c.calls_user_functions, "the session may change under it");
    // Built-ins on the list stay session-neutral, whatever else the scope allows.
    let c = ok(PG, &cat, "SELECT lower('A'), upper('b')", &s);
    assert!(!c.calls_user_functions);
    // A user function of the admin's list is sent with its schema.
    let s = scope(|s| s.extra_functions = vec!["lib.score".into()]);
    let c = ok(PG, &cat, "SELECT score(1)", &s);
    assert_eq!(c.sql, "SELECT \"lib\".score(1)");
    assert!(c.calls_user_functions);
    no(PG, &cat, "SELECT other.score(1)", &s, "other.score");
}

fn with_extensions() -> Catalog {
    let mut c = lib_server();
    c.default_schema = "public".into();
    c.extensions.insert(
        "pg_trgm".into(),
        Extension {
            schema: "public".into(),
            functions: ["similarity", "word_similarity"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            volatile_functions: ["set_limit".to_string()].into(),
            operators: ["%", "<->", "<<->"].iter().map(|s| s.to_string()).collect(),
            types: ["gtrgm".to_string()].into(),
        },
    );
    c.extensions.insert(
        "postgis".into(),
        Extension {
            schema: "public".into(),
            functions: ["st_area", "st_makepoint"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            operators: ["&&", "~="].iter().map(|s| s.to_string()).collect(),
            types: ["geometry".to_string()].into(),
            ..Extension::default()
        },
    );
    let mut objects = SchemaObjects::default();
    let ext = |e: &str| [Some(e.to_owned())].into_iter().collect();
    for f in ["similarity", "word_similarity", "set_limit"] {
        objects.functions.insert(f.into(), ext("pg_trgm"));
    }
    for f in ["st_area", "st_makepoint"] {
        objects.functions.insert(f.into(), ext("postgis"));
    }
    for o in ["%", "<->", "<<->"] {
        objects.operators.insert(o.into(), ext("pg_trgm"));
    }
    objects.operators.insert("&&".into(), ext("postgis"));
    objects.types.insert("geometry".into(), ext("postgis"));
    // What a user planted beside them in public.
    objects
        .functions
        .insert("lower".into(), [None].into_iter().collect());
    objects
        .functions
        .insert("member_marker".into(), [None].into_iter().collect());
    objects
        .types
        .insert("plant".into(), [None].into_iter().collect());
    c.extension_schemas.insert("public".into(), objects);
    c
}

#[test]
fn a_trusted_extensions_functions_operators_and_types_are_usable_by_name() {
    let cat = with_extensions();
    let trusting = scope(|s| s.extensions = vec!["pg_trgm".into(), "postgis".into()]);
    let c = ok(
        PG,
        &cat,
        "SELECT similarity(a, b), a % b, a <-> b, st_area(g), g::geometry FROM t WHERE g && g",
        &trusting,
    );
    assert!(!c.calls_user_functions);
    assert_eq!(
        cat.search_path(&trusting.extensions),
        "pg_catalog, \"public\", pg_temp"
    );
    // Untrusted, the same names are user code.
    let plain = ScopePolicy::default();
    no(
        PG,
        &cat,
        "SELECT similarity('a', 'b')",
        &plain,
        "similarity",
    );
    no(PG, &cat, "SELECT a <-> b FROM t", &plain, "<->");
    // A volatile function of a trusted extension changes state: it is a user function.
    no(PG, &cat, "SELECT set_limit(0.5)", &trusting, "set_limit");
    // Only trusting pg_trgm: postgis's objects in the same schema are planted ones.
    let trgm = scope(|s| s.extensions = vec!["pg_trgm".into()]);
    no(PG, &cat, "SELECT st_area(g) FROM t", &trgm, "st_area");
}

#[test]
fn a_name_an_untrusted_object_shares_on_the_search_path_is_refused() {
    let cat = with_extensions();
    let trusting = scope(|s| s.extensions = vec!["pg_trgm".into(), "postgis".into()]);
    // lower(varchar) planted in public would beat pg_catalog.lower(text) once public is on
    // the path.
    for sql in [
        "SELECT lower('ABC'::varchar)",
        "SELECT pg_catalog.upper(x), lower(x) FROM t",
        // Attribute notation: m.member_marker calls member_marker(m).
        "SELECT m.member_marker FROM members2 m",
        "SELECT 'x'::plant",
    ] {
        assert!(
            function_refusal(&no(PG, &cat, sql, &trusting, "no trusted extension")),
            "{sql}"
        );
    }
    // Qualified with pg_catalog, the built-in is meant and nothing else is considered.
    ok(
        PG,
        &cat,
        "SELECT pg_catalog.lower('ABC'::varchar)",
        &trusting,
    );
    // Without trusted extensions the schema is not on the path at all.
    ok(
        PG,
        &cat,
        "SELECT lower('ABC'::varchar)",
        &ScopePolicy::default(),
    );
}

#[test]
fn a_planted_operator_is_refused_even_where_the_statement_shows_none() {
    let mut cat = with_extensions();
    if let Some(o) = cat.extension_schemas.get_mut("public") {
        o.operators.insert("=".into(), [None].into_iter().collect());
        o.operators
            .insert("~~".into(), [None].into_iter().collect());
    }
    let trusting = scope(|s| s.extensions = vec!["pg_trgm".into()]);
    for sql in [
        "SELECT 1 WHERE 1 = 1",
        // IN, CASE and IS DISTINCT FROM compare with = too.
        "SELECT x IN (1, 2) FROM t",
        "SELECT name LIKE 'a%' FROM t",
    ] {
        assert!(
            function_refusal(&no(PG, &cat, sql, &trusting, "operator")),
            "{sql}"
        );
    }
}

#[test]
fn operators_no_list_and_no_trusted_extension_knows_are_refused() {
    let cat = with_extensions();
    let s = ScopePolicy::default();
    for sql in [
        "SELECT a <<-> b FROM t",
        "SELECT a OPERATOR(public.+) b FROM t",
    ] {
        assert!(
            function_refusal(&no(PG, &cat, sql, &s, "operator")),
            "{sql}"
        );
    }
}

#[test]
fn casts_that_look_objects_up_by_name_are_refused_in_every_spelling() {
    let cat = lib_server();
    let s = allow(&["pg_catalog.*", "lib.*"]);
    for sql in [
        "SELECT 'other.hidden'::regclass",
        "SELECT oid::regclass FROM pg_class",
        "SELECT CAST(10 AS regrole)",
        "SELECT regclass 'orders'",
        "SELECT 'int4'::pg_catalog.regtype",
        "SELECT '{}'::regnamespace[]",
        "SELECT x::REGPROCEDURE FROM t",
    ] {
        assert!(
            function_refusal(&no(PG, &cat, sql, &s, "casts to")),
            "{sql}"
        );
    }
    // `regproc 'lower'` (PostgreSQL's `type 'literal'`) is read by sqlparser as a column with a
    // string alias and sent as `regproc AS 'lower'`, which the server refuses as a syntax error.
    let c = ok(PG, &cat, "SELECT regproc 'lower'", &ScopePolicy::default());
    assert_eq!(c.sql, "SELECT regproc AS 'lower'");
    // A user type in another schema can run user code (input function, domain check).
    no(PG, &cat, "SELECT 'x'::lib.mood", &s, "type lib.mood");
    ok(
        PG,
        &cat,
        "SELECT '1'::int4, 'x'::text, '2024-01-01'::date",
        &s,
    );
}

#[test]
fn catalogue_views_that_show_other_tables_data_stay_refused_when_their_schema_is_allowed() {
    let cat = lib_server();
    let s = allow(&["pg_catalog.*"]);
    for sql in [
        "SELECT most_common_vals FROM pg_stats",
        "SELECT * FROM pg_catalog.pg_statistic",
        "SELECT query FROM pg_catalog.pg_stat_activity",
        "SELECT * FROM pg_catalog.pg_authid",
        "SELECT * FROM pg_catalog.pg_largeobject",
        "SELECT setting FROM pg_catalog.pg_settings",
    ] {
        assert!(table_refusal(&no(PG, &cat, sql, &s, "other")), "{sql}");
    }
    no(
        PG,
        &cat,
        "SELECT * FROM public.pg_stat_statements",
        &allow(&["public.*"]),
        "other",
    );
    ok(PG, &cat, "SELECT relname FROM pg_class", &s);
    let my = Catalog::default();
    no(
        MY,
        &my,
        "SELECT * FROM information_schema.processlist",
        &allow(&["information_schema.*"]),
        "other",
    );
    no(
        MY,
        &my,
        "SELECT * FROM mysql.user",
        &allow(&["mysql.*"]),
        "other",
    );
    ok(
        MY,
        &my,
        "SELECT * FROM information_schema.tables",
        &allow(&["information_schema.*"]),
    );
    let lite = Catalog {
        default_schema: "main".into(),
        ..Catalog::default()
    };
    no(
        LITE,
        &lite,
        "SELECT * FROM sqlite_stat4",
        &allow(&["main.*"]),
        "other",
    );
}

// ---------------------------------------------------------------- false positives fixed

#[test]
fn long_or_chains_and_in_lists_from_bi_tools_are_accepted() {
    let cat = lib_server();
    let s = ScopePolicy::default();
    let terms: Vec<String> = (0..1_500).map(|i| format!("id = {i}")).collect();
    let sql = format!("SELECT count(*) FROM orders WHERE {}", terms.join(" OR "));
    ok(PG, &cat, &sql, &s);
    let sql = format!("SELECT count(*) FROM orders WHERE {}", terms.join(" AND "));
    ok(PG, &cat, &sql, &s);
    // Chains inside chains and in parentheses.
    let sql = format!(
        "SELECT 1 FROM orders WHERE ({}) AND ({})",
        terms[..700].join(" OR "),
        terms[700..].join(" OR ")
    );
    ok(PG, &cat, &sql, &s);
    let ids: Vec<String> = (0..20_000).map(|i| i.to_string()).collect();
    ok(
        PG,
        &cat,
        &format!("SELECT 1 FROM orders WHERE id IN ({})", ids.join(", ")),
        &s,
    );
    // Past the token cap, however flat.
    let terms: Vec<String> = (0..6_000).map(|i| format!("id = {i}")).collect();
    let sql = format!("SELECT 1 FROM orders WHERE {}", terms.join(" OR "));
    assert!(matches!(
        run(PG, &cat, &sql, &s),
        Err(PolicyError::Parse(_))
    ));
    // A chain of another operator still nests one level per term.
    let sql = format!("SELECT 1{}", " + 1".repeat(walk::MAX_NESTING + 10));
    assert!(matches!(
        run(PG, &cat, &sql, &s),
        Err(PolicyError::Parse(_))
    ));
}

#[test]
fn the_longest_flat_chain_is_checked_on_a_runtime_sized_stack_without_growing_it() {
    let worker = std::thread::Builder::new()
        .stack_size(RUNTIME_THREAD_STACK_BYTES)
        .spawn(|| {
            let cat = lib_server();
            // As many terms as the token cap lets through (two tokens per term).
            let terms: Vec<String> = (0..4_990).map(|i| format!("a = {i}")).collect();
            let sql = format!("SELECT 1 FROM t WHERE {}", terms.join(" OR "));
            run(PG, &cat, &sql, &ScopePolicy::default()).is_ok()
        })
        .expect("spawn");
    assert_eq!(
        worker.join().ok(),
        Some(true),
        "checked without overflowing"
    );
}

#[test]
fn everyday_functions_that_were_refused_are_accepted() {
    let cat = Catalog {
        default_schema: "public".into(),
        ..Catalog::default()
    };
    let s = ScopePolicy::default();
    for sql in [
        "SELECT date(now())",
        "SELECT int4range(1, 10), daterange('2024-01-01', '2024-02-01'), numrange(1, 2)",
        "SELECT pg_size_pretty(1024::bigint)",
        "SELECT host('10.0.0.1/24'::inet), masklen('10.0.0.1/24'::inet)",
    ] {
        ok(PG, &cat, sql, &s);
    }
}

#[test]
fn only_is_refused_where_it_stands_before_no_table() {
    let cat = lib_server();
    let s = ScopePolicy::default();
    for sql in [
        "SELECT ONLY FROM t",
        "SELECT 1 FROM t ONLY",
        "SELECT * FROM ONLY (1)",
    ] {
        assert!(run(PG, &cat, sql, &s).is_err(), "{sql}");
    }
    // FETCH … ROWS ONLY is not the relation keyword.
    ok(
        PG,
        &cat,
        "SELECT id FROM orders ORDER BY id FETCH FIRST 3 ROWS ONLY",
        &s,
    );
    // On MySQL, ONLY is an ordinary name.
    let my = Catalog {
        default_schema: "shop".into(),
        ..Catalog::default()
    };
    let c = ok(MY, &my, "SELECT * FROM ONLY", &s);
    assert_eq!(c.tables, vec!["shop.ONLY"]);
}
