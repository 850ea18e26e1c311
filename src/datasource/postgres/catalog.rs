//! Reads what the SQL policy needs to know from a PostgreSQL server's catalogue (see
//! `policy::catalog`): the built-in functions and `pg_catalog` relations this version has,
//! inheritance and partitions, what views and rules reach, the user code views, row-level
//! security, triggers, defaults and checks run, cascading foreign keys, user-defined casts, and
//! the installed extensions with everything that shares their schemas.
//!
//! Every name in these queries is qualified with `pg_catalog`: they run on the service account's
//! own session, whose search path could otherwise put a user object in their way.

use std::collections::BTreeMap;

use crate::model::DatasourceKind;
use crate::policy::catalog::{Catalog, Extension, RelName, Relation, RelationKind, SchemaObjects};

/// Functions of `pg_catalog` (the built-ins of this version).
const BUILTINS: &str = "SELECT DISTINCT p.proname::text FROM pg_catalog.pg_proc p \
     WHERE p.pronamespace = 'pg_catalog'::pg_catalog.regnamespace";

/// Relations of `pg_catalog`, where an unqualified name resolves first.
const SYSTEM_RELATIONS: &str = "SELECT c.relname::text FROM pg_catalog.pg_class c \
     WHERE c.relnamespace = 'pg_catalog'::pg_catalog.regnamespace \
       AND c.relkind OPERATOR(pg_catalog.=) ANY (ARRAY['r','v','m','f','p']::\"char\"[])";

/// Inheritance children and partitions, with the parent's kind.
const CHILDREN: &str = "SELECT pn.nspname::text, p.relname::text, p.relkind::text, \
       cn.nspname::text, c.relname::text \
     FROM pg_catalog.pg_inherits i \
     JOIN pg_catalog.pg_class p ON p.oid OPERATOR(pg_catalog.=) i.inhparent \
     JOIN pg_catalog.pg_namespace pn ON pn.oid OPERATOR(pg_catalog.=) p.relnamespace \
     JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) i.inhrelid \
     JOIN pg_catalog.pg_namespace cn ON cn.oid OPERATOR(pg_catalog.=) c.relnamespace \
     WHERE p.relkind OPERATOR(pg_catalog.=) ANY (ARRAY['r','p','f']::\"char\"[])";

/// Relations a view, materialized view or rule refers to (rules: where `INSERT`/`UPDATE`/
/// `DELETE` on a table also act), outside the system schemas.
const RULE_RELATIONS: &str = "SELECT DISTINCT vn.nspname::text, v.relname::text, v.relkind::text, \
       (r.rulename OPERATOR(pg_catalog.=) '_RETURN')::bool, dn.nspname::text, d.relname::text \
     FROM pg_catalog.pg_rewrite r \
     JOIN pg_catalog.pg_class v ON v.oid OPERATOR(pg_catalog.=) r.ev_class \
     JOIN pg_catalog.pg_namespace vn ON vn.oid OPERATOR(pg_catalog.=) v.relnamespace \
     JOIN pg_catalog.pg_depend dep ON dep.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_rewrite'::pg_catalog.regclass \
       AND dep.objid OPERATOR(pg_catalog.=) r.oid \
       AND dep.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass \
       AND dep.refobjid OPERATOR(pg_catalog.<>) v.oid \
     JOIN pg_catalog.pg_class d ON d.oid OPERATOR(pg_catalog.=) dep.refobjid \
     JOIN pg_catalog.pg_namespace dn ON dn.oid OPERATOR(pg_catalog.=) d.relnamespace \
     WHERE vn.nspname OPERATOR(pg_catalog.<>) ALL (ARRAY['pg_catalog','information_schema']::pg_catalog.name[]) \
       AND d.relkind OPERATOR(pg_catalog.=) ANY (ARRAY['r','p','v','m','f']::\"char\"[])";

/// The same from each view's query tree: PostgreSQL records no dependency on pinned objects
/// (the system catalogues), so a view over `pg_authid` has no `pg_depend` row for it, but its
/// range table names it (`:relid <oid>` in `ev_action`).
const RULE_RELIDS: &str = "SELECT DISTINCT vn.nspname::pg_catalog.text, v.relname::pg_catalog.text, \
       v.relkind::pg_catalog.text, (r.rulename OPERATOR(pg_catalog.=) '_RETURN')::pg_catalog.bool, \
       dn.nspname::pg_catalog.text, d.relname::pg_catalog.text \
     FROM pg_catalog.pg_rewrite r \
     JOIN pg_catalog.pg_class v ON v.oid OPERATOR(pg_catalog.=) r.ev_class \
     JOIN pg_catalog.pg_namespace vn ON vn.oid OPERATOR(pg_catalog.=) v.relnamespace \
     CROSS JOIN LATERAL pg_catalog.regexp_matches(r.ev_action::pg_catalog.text, ':relid ([0-9]+)', 'g') AS m(x) \
     JOIN pg_catalog.pg_class d ON d.oid OPERATOR(pg_catalog.=) (m.x[1])::pg_catalog.oid \
     JOIN pg_catalog.pg_namespace dn ON dn.oid OPERATOR(pg_catalog.=) d.relnamespace \
     WHERE vn.nspname OPERATOR(pg_catalog.<>) ALL (ARRAY['pg_catalog','information_schema']::pg_catalog.name[]) \
       AND d.oid OPERATOR(pg_catalog.<>) v.oid \
       AND d.relkind OPERATOR(pg_catalog.=) ANY (ARRAY['r','p','v','m','f']::pg_catalog.\"char\"[])";

/// Whether a function belongs to no extension at all (a plain user function).
const NOT_EXTENSION_MEMBER: &str = "NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend e \
       WHERE e.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass \
       AND e.objid OPERATOR(pg_catalog.=) f.oid AND e.deptype OPERATOR(pg_catalog.=) 'e')";

/// User functions the server runs for a relation: `source` is a catalogue table whose rows
/// depend on functions (`pg_rewrite`, `pg_policy`, `pg_attrdef`, `pg_constraint`) and `rel` the
/// expression giving the relation's oid from that row `o`.
fn code_query(source: &str, rel: &str, extra_where: &str) -> String {
    format!(
        "SELECT DISTINCT tn.nspname::text, t.relname::text, t.relkind::text, \
           fn.nspname::text, f.proname::text \
         FROM pg_catalog.{source} o \
         JOIN pg_catalog.pg_class t ON t.oid OPERATOR(pg_catalog.=) {rel} \
         JOIN pg_catalog.pg_namespace tn ON tn.oid OPERATOR(pg_catalog.=) t.relnamespace \
         JOIN pg_catalog.pg_depend dep ON dep.classid OPERATOR(pg_catalog.=) 'pg_catalog.{source}'::pg_catalog.regclass \
           AND dep.objid OPERATOR(pg_catalog.=) o.oid \
           AND dep.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass \
         JOIN pg_catalog.pg_proc f ON f.oid OPERATOR(pg_catalog.=) dep.refobjid \
         JOIN pg_catalog.pg_namespace fn ON fn.oid OPERATOR(pg_catalog.=) f.pronamespace \
         WHERE fn.nspname OPERATOR(pg_catalog.<>) 'pg_catalog' \
           AND tn.nspname OPERATOR(pg_catalog.<>) ALL (ARRAY['pg_catalog','information_schema']::pg_catalog.name[]) \
           AND {NOT_EXTENSION_MEMBER} {extra_where}"
    )
}

/// Trigger functions (user triggers that are enabled).
const TRIGGERS: &str = "SELECT DISTINCT tn.nspname::text, t.relname::text, t.relkind::text, \
       fn.nspname::text, f.proname::text \
     FROM pg_catalog.pg_trigger tg \
     JOIN pg_catalog.pg_class t ON t.oid OPERATOR(pg_catalog.=) tg.tgrelid \
     JOIN pg_catalog.pg_namespace tn ON tn.oid OPERATOR(pg_catalog.=) t.relnamespace \
     JOIN pg_catalog.pg_proc f ON f.oid OPERATOR(pg_catalog.=) tg.tgfoid \
     JOIN pg_catalog.pg_namespace fn ON fn.oid OPERATOR(pg_catalog.=) f.pronamespace \
     WHERE NOT tg.tgisinternal AND tg.tgenabled OPERATOR(pg_catalog.<>) 'D' \
       AND fn.nspname OPERATOR(pg_catalog.<>) 'pg_catalog'";

/// Functions in the CHECK constraints of the domains a table's columns have.
const DOMAIN_CHECKS: &str = "SELECT DISTINCT tn.nspname::text, t.relname::text, t.relkind::text, \
       fn.nspname::text, f.proname::text \
     FROM pg_catalog.pg_attribute a \
     JOIN pg_catalog.pg_class t ON t.oid OPERATOR(pg_catalog.=) a.attrelid \
     JOIN pg_catalog.pg_namespace tn ON tn.oid OPERATOR(pg_catalog.=) t.relnamespace \
     JOIN pg_catalog.pg_type ty ON ty.oid OPERATOR(pg_catalog.=) a.atttypid \
     JOIN pg_catalog.pg_constraint con ON con.contypid OPERATOR(pg_catalog.=) ty.oid \
     JOIN pg_catalog.pg_depend dep ON dep.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_constraint'::pg_catalog.regclass \
       AND dep.objid OPERATOR(pg_catalog.=) con.oid \
       AND dep.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass \
     JOIN pg_catalog.pg_proc f ON f.oid OPERATOR(pg_catalog.=) dep.refobjid \
     JOIN pg_catalog.pg_namespace fn ON fn.oid OPERATOR(pg_catalog.=) f.pronamespace \
     WHERE a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped \
       AND t.relkind OPERATOR(pg_catalog.=) ANY (ARRAY['r','p','f']::\"char\"[]) \
       AND fn.nspname OPERATOR(pg_catalog.<>) 'pg_catalog'";

/// Foreign keys whose ON DELETE or ON UPDATE writes the referencing table.
const CASCADES: &str = "SELECT DISTINCT pn.nspname::text, p.relname::text, cn.nspname::text, c.relname::text \
     FROM pg_catalog.pg_constraint con \
     JOIN pg_catalog.pg_class p ON p.oid OPERATOR(pg_catalog.=) con.confrelid \
     JOIN pg_catalog.pg_namespace pn ON pn.oid OPERATOR(pg_catalog.=) p.relnamespace \
     JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) con.conrelid \
     JOIN pg_catalog.pg_namespace cn ON cn.oid OPERATOR(pg_catalog.=) c.relnamespace \
     WHERE con.contype OPERATOR(pg_catalog.=) 'f' \
       AND (con.confdeltype OPERATOR(pg_catalog.=) ANY (ARRAY['c','n','d']::\"char\"[]) \
         OR con.confupdtype OPERATOR(pg_catalog.=) ANY (ARRAY['c','n','d']::\"char\"[]))";

/// Types a user-defined cast (one whose function is a plain user function) can be triggered
/// from: its source, and its target when that is a user type (a value assigned to a column of
/// it, or cast to it), with their array types and the domains over them. Built-in types are
/// left out: a cast from `lib.members` to `text` is run by members values, never by text ones.
/// 16384 is FirstNormalObjectId, the first oid of an object created after initdb.
const CAST_TYPES: &str = "WITH RECURSIVE hazard(oid) AS ( \
       SELECT t.oid FROM pg_catalog.pg_cast c JOIN pg_catalog.pg_proc f ON f.oid OPERATOR(pg_catalog.=) c.castfunc \
         JOIN pg_catalog.pg_namespace fn ON fn.oid OPERATOR(pg_catalog.=) f.pronamespace \
         CROSS JOIN LATERAL (VALUES (c.castsource), (c.casttarget)) AS t(oid) \
         WHERE fn.nspname OPERATOR(pg_catalog.<>) 'pg_catalog' AND NOT_EXTENSION_MEMBER \
           AND t.oid OPERATOR(pg_catalog.>=) 16384::pg_catalog.oid \
       UNION SELECT ty.oid FROM pg_catalog.pg_type ty JOIN hazard h \
         ON ty.typelem OPERATOR(pg_catalog.=) h.oid OR ty.typbasetype OPERATOR(pg_catalog.=) h.oid \
     ) SELECT oid FROM hazard";

/// The tables whose row type (column NULL), and the columns whose type, is one of `$1`.
const CAST_USES: &str = "SELECT n.nspname::text, c.relname::text, NULL::text \
       FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace \
       WHERE c.reltype OPERATOR(pg_catalog.=) ANY ($1) \
     UNION ALL \
     SELECT n.nspname::text, c.relname::text, a.attname::text \
       FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) a.attrelid \
       JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace \
       WHERE a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped \
         AND a.atttypid OPERATOR(pg_catalog.=) ANY ($1) \
         AND c.relkind OPERATOR(pg_catalog.=) ANY (ARRAY['r','p','v','m','f']::\"char\"[])";

/// Installed extensions and their schemas.
const EXTENSIONS: &str = "SELECT e.extname::text, n.nspname::text FROM pg_catalog.pg_extension e \
     JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) e.extnamespace";

/// Every function, operator and type in a schema that hosts an extension (other than
/// `pg_catalog`), with the extension that provides it (NULL: none) and whether it is volatile.
const SCHEMA_OBJECTS: &str = "WITH ext_schemas AS ( \
       SELECT DISTINCT extnamespace AS oid FROM pg_catalog.pg_extension \
       WHERE extnamespace OPERATOR(pg_catalog.<>) 'pg_catalog'::pg_catalog.regnamespace), \
     members AS ( \
       SELECT d.classid, d.objid, e.extname::text AS extname FROM pg_catalog.pg_depend d \
       JOIN pg_catalog.pg_extension e ON e.oid OPERATOR(pg_catalog.=) d.refobjid \
       WHERE d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass \
         AND d.deptype OPERATOR(pg_catalog.=) 'e') \
     SELECT n.nspname::text, 'f', p.proname::text, m.extname, p.provolatile OPERATOR(pg_catalog.=) 'v' \
       FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) p.pronamespace \
       LEFT JOIN members m ON m.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass AND m.objid OPERATOR(pg_catalog.=) p.oid \
       WHERE p.pronamespace OPERATOR(pg_catalog.=) ANY (SELECT oid FROM ext_schemas) \
     UNION ALL \
     SELECT n.nspname::text, 'o', o.oprname::text, m.extname, \
         COALESCE((SELECT f.provolatile OPERATOR(pg_catalog.=) 'v' FROM pg_catalog.pg_proc f WHERE f.oid OPERATOR(pg_catalog.=) o.oprcode), false) \
       FROM pg_catalog.pg_operator o JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) o.oprnamespace \
       LEFT JOIN members m ON m.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_operator'::pg_catalog.regclass AND m.objid OPERATOR(pg_catalog.=) o.oid \
       WHERE o.oprnamespace OPERATOR(pg_catalog.=) ANY (SELECT oid FROM ext_schemas) \
     UNION ALL \
     SELECT n.nspname::text, 't', t.typname::text, \
         COALESCE(m.extname, (SELECT me.extname FROM members me WHERE me.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_type'::pg_catalog.regclass AND me.objid OPERATOR(pg_catalog.=) t.typelem)), \
         false \
       FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) t.typnamespace \
       LEFT JOIN members m ON m.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_type'::pg_catalog.regclass AND m.objid OPERATOR(pg_catalog.=) t.oid \
       WHERE t.typnamespace OPERATOR(pg_catalog.=) ANY (SELECT oid FROM ext_schemas)";

/// The entry of a relation, created with its kind when first seen.
fn entry<'a>(
    rels: &'a mut BTreeMap<RelName, Relation>,
    schema: String,
    name: String,
    relkind: &str,
) -> &'a mut Relation {
    let e = rels.entry(RelName::new(schema, name)).or_default();
    e.kind = kind_of(relkind);
    e
}

fn kind_of(relkind: &str) -> RelationKind {
    match relkind {
        "v" => RelationKind::View,
        "m" => RelationKind::MaterializedView,
        "p" => RelationKind::Partitioned,
        "f" => RelationKind::Foreign,
        _ => RelationKind::Table,
    }
}

/// Reads the catalogue over `client`, inside the caller's read-only transaction.
/// `default_schema` is the first schema of the service account's own search path, read when the
/// connection opened.
pub async fn read(
    client: &impl tokio_postgres::GenericClient,
    server_version: String,
    default_schema: String,
) -> Result<Catalog, tokio_postgres::Error> {
    let texts = |rows: Vec<tokio_postgres::Row>| -> Vec<String> {
        rows.iter().filter_map(|r| r.try_get(0).ok()).collect()
    };
    let mut c = Catalog {
        kind: Some(DatasourceKind::Postgres),
        server_version,
        default_schema,
        ..Catalog::default()
    };
    c.builtin_functions = texts(client.query(BUILTINS, &[]).await?)
        .into_iter()
        .collect();
    c.system_relations = texts(client.query(SYSTEM_RELATIONS, &[]).await?)
        .into_iter()
        .collect();

    let mut rels: BTreeMap<RelName, Relation> = BTreeMap::new();
    for r in client.query(CHILDREN, &[]).await? {
        let (ps, pn, pk, cs, cn): (String, String, String, String, String) =
            (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
        entry(&mut rels, ps, pn, &pk)
            .children
            .push(RelName::new(cs, cn));
    }
    let mut rule_rows = client.query(RULE_RELATIONS, &[]).await?;
    rule_rows.extend(client.query(RULE_RELIDS, &[]).await?);
    for r in rule_rows {
        let (vs, vn, vk, is_view, ds, dn): (String, String, String, bool, String, String) =
            (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5));
        let e = entry(&mut rels, vs, vn, &vk);
        let target = RelName::new(ds, dn);
        // A view's rule reads; a rule on a table is what an INSERT/UPDATE/DELETE on it also does.
        let list = if is_view {
            &mut e.reads
        } else {
            &mut e.cascades
        };
        if !list.contains(&target) {
            list.push(target);
        }
    }
    let code: [(String, bool); 6] = [
        // Views (their `_RETURN` rule) and table rules.
        (code_query("pg_rewrite", "o.ev_class", ""), false),
        // Row-level security policies, on tables that have it on.
        (
            code_query("pg_policy", "o.polrelid", "AND t.relrowsecurity"),
            false,
        ),
        // Column defaults and generated columns.
        (code_query("pg_attrdef", "o.adrelid", ""), true),
        // Table CHECK constraints.
        (
            code_query(
                "pg_constraint",
                "o.conrelid",
                "AND o.contype OPERATOR(pg_catalog.=) 'c'",
            ),
            true,
        ),
        (TRIGGERS.to_owned(), true),
        (DOMAIN_CHECKS.to_owned(), true),
    ];
    for (sql, on_write) in code {
        for r in client.query(&sql, &[]).await? {
            let (ts, tn, tk, fs, f): (String, String, String, String, String) =
                (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
            let e = entry(&mut rels, ts, tn, &tk);
            let name = format!("{fs}.{f}");
            let list = if on_write {
                &mut e.write_functions
            } else {
                &mut e.read_functions
            };
            if !list.contains(&name) {
                list.push(name);
            }
        }
    }
    for r in client.query(CASCADES, &[]).await? {
        let (ps, pn, cs, cn): (String, String, String, String) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        let e = rels.entry(RelName::new(ps, pn)).or_default();
        let child = RelName::new(cs, cn);
        if !e.cascades.contains(&child) {
            e.cascades.push(child);
        }
    }
    let casts = CAST_TYPES.replace("NOT_EXTENSION_MEMBER", NOT_EXTENSION_MEMBER);
    let hazard: Vec<tokio_postgres::types::Oid> = client
        .query(&casts, &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    // Usually none: then pg_attribute, which can hold millions of rows, is not scanned.
    let uses = if hazard.is_empty() {
        Vec::new()
    } else {
        client.query(CAST_USES, &[&hazard]).await?
    };
    for r in uses {
        let (s, n, column): (String, String, Option<String>) = (r.get(0), r.get(1), r.get(2));
        let e = rels.entry(RelName::new(s, n)).or_default();
        match column {
            None => e.row_cast = true,
            Some(col) => {
                if !e.cast_columns.contains(&col) {
                    e.cast_columns.push(col);
                }
            }
        }
    }
    c.relations = rels;

    for r in client.query(EXTENSIONS, &[]).await? {
        let (name, schema): (String, String) = (r.get(0), r.get(1));
        c.extensions.insert(
            name,
            Extension {
                schema,
                ..Extension::default()
            },
        );
    }
    let mut schemas: BTreeMap<String, SchemaObjects> = BTreeMap::new();
    for r in client.query(SCHEMA_OBJECTS, &[]).await? {
        let (schema, what, name, ext, volatile): (String, String, String, Option<String>, bool) =
            (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
        if let Some(e) = ext.as_ref().and_then(|x| c.extensions.get_mut(x)) {
            match what.as_str() {
                "f" if volatile => {
                    e.functions.remove(&name);
                    e.volatile_functions.insert(name.clone());
                }
                "f" if !e.volatile_functions.contains(&name) => {
                    e.functions.insert(name.clone());
                }
                "o" if !volatile => {
                    e.operators.insert(name.clone());
                }
                "t" => {
                    e.types.insert(name.clone());
                }
                _ => {}
            }
        }
        let objects = schemas.entry(schema).or_default();
        let map = match what.as_str() {
            "f" => &mut objects.functions,
            "o" => &mut objects.operators,
            _ => &mut objects.types,
        };
        map.entry(name).or_default().insert(ext);
    }
    c.extension_schemas = schemas;
    Ok(c)
}
