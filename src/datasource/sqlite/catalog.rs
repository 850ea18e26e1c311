//! Reads what the SQL policy needs to know from a SQLite file (see `policy::catalog`): the
//! built-in functions and table-valued modules this build has, virtual tables and what they read,
//! their shadow tables, the tables views read, the tables triggers sit on, and the foreign keys
//! whose actions write other tables.
//!
//! Every relation key is lower case in the `main` schema: SQLite names ignore (ASCII) case, and
//! the policy lower-cases SQLite names before it looks them up.
//!
//! Foreign keys: rusqlite's bundled SQLite is built with `SQLITE_DEFAULT_FOREIGN_KEYS=1`, so
//! every datasource connection enforces them, and `ON DELETE/UPDATE CASCADE | SET NULL | SET
//! DEFAULT` write the referencing table. Those are listed as cascades.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;

use rusqlite::Connection;
use sqlparser::ast::{ObjectName, Query, Statement, TableFactor, Visit, Visitor};
use sqlparser::dialect::SQLiteDialect;
use sqlparser::parser::Parser;

use crate::model::DatasourceKind;
use crate::policy::catalog::{Catalog, RelName, Relation, RelationKind};

/// The only schema a datasource connection has (ATTACH is off; `temp` is per connection).
const MAIN: &str = "main";

/// Objects of the file, SQLite's own tables left out.
const SCHEMA: &str = "SELECT type, name, tbl_name, sql FROM main.sqlite_schema \
     WHERE type IN ('table', 'view', 'trigger') AND name NOT LIKE 'sqlite!_%' ESCAPE '!'";

/// Tables the virtual table modules of this build call their own (SQLite 3.37 and later).
const SHADOWS: &str =
    "SELECT name FROM pragma_table_list WHERE schema = 'main' AND type = 'shadow'";

const FUNCTIONS: &str = "SELECT DISTINCT name FROM pragma_function_list";

const MODULES: &str = "SELECT name FROM pragma_module_list";

/// Table-valued functions SQLite registers only on first use, so `pragma_module_list` misses
/// them until then.
const LAZY_MODULES: &[&str] = &["json_each", "json_tree", "jsonb_each", "jsonb_tree"];

/// Foreign keys of ordinary tables (a virtual table has none, and asking may need its module).
const FOREIGN_KEYS: &str = "SELECT m.name, f.\"table\", f.on_update, f.on_delete \
     FROM main.sqlite_schema AS m JOIN pragma_foreign_key_list(m.name, 'main') AS f \
     WHERE m.type = 'table' AND m.sql NOT LIKE 'CREATE VIRTUAL%' \
       AND m.name NOT LIKE 'sqlite!_%' ESCAPE '!'";

/// Shadow table suffixes of the modules that create them.
const FTS3_SHADOWS: &[&str] = &["content", "segments", "segdir", "docsize", "stat"];
const FTS5_SHADOWS: &[&str] = &["data", "idx", "content", "docsize", "config"];
const RTREE_SHADOWS: &[&str] = &["node", "parent", "rowid"];

fn rel(name: &str) -> RelName {
    RelName::new(MAIN, name.to_ascii_lowercase())
}

/// Reads the catalogue over one of the pool's read-only connections.
pub fn read(conn: &Connection) -> rusqlite::Result<Catalog> {
    let version: String = conn.query_row("SELECT sqlite_version()", [], |r| r.get(0))?;
    let mut c = Catalog {
        kind: Some(DatasourceKind::Sqlite),
        server_version: format!("SQLite {version}"),
        default_schema: MAIN.into(),
        ..Catalog::default()
    };
    let texts = |sql: &str| -> rusqlite::Result<Vec<String>> {
        let mut stmt = conn.prepare(sql)?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.collect()
    };
    // Preparing a statement that names one registers it (when this build has it).
    for m in LAZY_MODULES {
        let _ = conn.prepare(&format!("SELECT 1 FROM {m}('[]')"));
    }
    c.builtin_functions = texts(FUNCTIONS)?
        .into_iter()
        .chain(texts(MODULES)?)
        .map(|n| n.to_ascii_lowercase())
        .collect();
    let modules: BTreeSet<String> = texts(MODULES)?
        .into_iter()
        .map(|n| n.to_ascii_lowercase())
        .collect();

    let objects: Vec<(String, String, String, Option<String>)> = {
        let mut stmt = conn.prepare(SCHEMA)?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let mut rels: BTreeMap<RelName, Relation> = BTreeMap::new();
    // Virtual tables by lower-case name, with their module (lower case).
    let mut virtuals: BTreeMap<String, String> = BTreeMap::new();
    let mut tables: Vec<String> = Vec::new();
    for (kind, name, _, sql) in &objects {
        let sql = sql.as_deref().unwrap_or("");
        match kind.as_str() {
            "table" => match virtual_table(sql) {
                Some(vt) => {
                    let e = rels.entry(rel(name)).or_default();
                    e.kind = RelationKind::Virtual;
                    describe_virtual(e, &vt);
                    virtuals.insert(name.to_ascii_lowercase(), vt.module);
                }
                None if starts_with_words(sql, &["CREATE", "VIRTUAL"]) => {
                    // A virtual table whose definition we could not read: assume the worst.
                    let e = rels.entry(rel(name)).or_default();
                    e.kind = RelationKind::Virtual;
                    e.opaque_reads = true;
                    e.opaque_writes = true;
                    virtuals.insert(name.to_ascii_lowercase(), String::new());
                }
                None => tables.push(name.to_ascii_lowercase()),
            },
            "view" => {
                let e = rels.entry(rel(name)).or_default();
                e.kind = RelationKind::View;
                match view_reads(sql, &modules) {
                    Some(reads) => {
                        for r in reads {
                            if !e.reads.contains(&r) {
                                e.reads.push(r);
                            }
                        }
                    }
                    None => e.opaque_reads = true,
                }
            }
            _ => {}
        }
    }
    // Triggers run SQL of their own on a write to the table (or view) they are on.
    for (kind, _, table, _) in &objects {
        if kind == "trigger" {
            rels.entry(rel(table)).or_default().opaque_writes = true;
        }
    }

    // Shadow tables: those the modules name, and the known suffixes of the known modules (for a
    // module this build lacks, any of them).
    let mut shadows: BTreeSet<String> = match texts(SHADOWS) {
        Ok(names) => names.into_iter().map(|n| n.to_ascii_lowercase()).collect(),
        // Older SQLite without pragma_table_list: the suffixes below still apply.
        Err(_) => BTreeSet::new(),
    };
    for t in &tables {
        if let Some((owner, suffix)) = owner_of(&virtuals, t) {
            let module = virtuals.get(owner).map(String::as_str).unwrap_or("");
            if known_suffixes(module).contains(&suffix) {
                shadows.insert(t.clone());
            }
        }
    }
    for s in shadows {
        if let Some((owner, _)) = owner_of(&virtuals, &s) {
            let owner = rel(owner);
            let e = rels.entry(rel(&s)).or_default();
            e.kind = RelationKind::Shadow;
            e.shadow_of = Some(owner);
        }
    }

    let keys: Vec<(String, String, String, String)> = {
        let mut stmt = conn.prepare(FOREIGN_KEYS)?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    for (child, parent, on_update, on_delete) in keys {
        if writes(&on_update) || writes(&on_delete) {
            let child = rel(&child);
            let e = rels.entry(rel(&parent)).or_default();
            if !e.cascades.contains(&child) {
                e.cascades.push(child);
            }
        }
    }
    c.relations = rels;
    Ok(c)
}

/// Whether a foreign key action writes the referencing table.
fn writes(action: &str) -> bool {
    matches!(
        action.to_ascii_uppercase().as_str(),
        "CASCADE" | "SET NULL" | "SET DEFAULT"
    )
}

fn known_suffixes(module: &str) -> Vec<&'static str> {
    match module {
        "fts3" | "fts4" => FTS3_SHADOWS.to_vec(),
        "fts5" => FTS5_SHADOWS.to_vec(),
        "rtree" | "rtree_i32" | "geopoly" => RTREE_SHADOWS.to_vec(),
        // Modules that keep no tables of their own.
        "fts5vocab" | "fts4aux" | "fts3tokenize" | "dbstat" => Vec::new(),
        // A module this build lacks: it may have made any of them.
        _ => [FTS3_SHADOWS, FTS5_SHADOWS, RTREE_SHADOWS].concat(),
    }
}

/// The virtual table a table named `v_…` belongs to: the longest such `v` (so `a_b_data` is
/// `a_b`'s when both `a` and `a_b` exist), with the rest of the name.
fn owner_of<'a, 'n>(
    virtuals: &'a BTreeMap<String, String>,
    name: &'n str,
) -> Option<(&'a str, &'n str)> {
    virtuals
        .keys()
        .filter_map(|v| {
            let rest = name.strip_prefix(v.as_str())?.strip_prefix('_')?;
            Some((v.as_str(), rest))
        })
        .max_by_key(|(v, _)| v.len())
}

/// A virtual table's module (lower case) and its arguments as written.
#[derive(Debug, PartialEq, Eq)]
struct VirtualTable {
    module: String,
    args: Vec<String>,
}

/// What reading a virtual table reaches besides its own shadow tables.
fn describe_virtual(e: &mut Relation, vt: &VirtualTable) {
    match vt.module.as_str() {
        // `content=tbl`: an external content table, whose rows the FTS table returns.
        "fts3" | "fts4" | "fts5" => {
            for a in &vt.args {
                if let Some((key, value)) = a.split_once('=')
                    && key.trim().eq_ignore_ascii_case("content")
                {
                    let table = dequote(value.trim());
                    if !table.is_empty() {
                        e.reads.push(rel(&table));
                    }
                }
            }
        }
        // The terms (and positions) of another full-text table: `fts5vocab([schema,] table,
        // type)`, `fts4aux([schema,] table)`.
        "fts5vocab" | "fts4aux" => {
            let names: Vec<String> = vt.args.iter().map(|a| dequote(a.trim())).collect();
            let (schema, table) = match (vt.module.as_str(), names.as_slice()) {
                ("fts5vocab", [s, t, _]) | ("fts4aux", [s, t]) => (s.clone(), t.clone()),
                ("fts5vocab", [t, _]) | ("fts4aux", [t]) => (MAIN.to_owned(), t.clone()),
                _ => {
                    e.opaque_reads = true;
                    return;
                }
            };
            e.reads.push(RelName::new(
                schema.to_ascii_lowercase(),
                table.to_ascii_lowercase(),
            ));
        }
        // Their data lives in their shadow tables only.
        "rtree" | "rtree_i32" | "geopoly" | "fts3tokenize" => {}
        // Anything else (dbstat shows every table's pages; a module this build lacks may do
        // anything): what it reads and writes cannot be listed.
        _ => {
            e.opaque_reads = true;
            e.opaque_writes = true;
        }
    }
}

/// Removes one level of SQL quoting (`'x'`, `"x"`, `` `x` ``, `[x]`), undoubling the quote.
fn dequote(s: &str) -> String {
    let mut chars = s.chars();
    let (Some(first), Some(last)) = (chars.next(), s.chars().last()) else {
        return s.to_owned();
    };
    let close = match first {
        '\'' | '"' | '`' => first,
        '[' => ']',
        _ => return s.to_owned(),
    };
    if s.len() < 2 || last != close {
        return s.to_owned();
    }
    let inner = &s[1..s.len() - 1];
    if first == '[' {
        inner.to_owned()
    } else {
        inner.replace(&format!("{first}{first}"), &first.to_string())
    }
}

/// SQL split into tokens: words, quoted names or strings (as written), and punctuation.
/// Comments and whitespace are dropped. Each token keeps its byte offset.
fn tokens(sql: &str) -> Vec<(usize, &str)> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c == b'-' && b.get(i + 1) == Some(&b'-') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if c == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                i += 1;
            }
            i = (i + 2).min(b.len());
            continue;
        }
        match c {
            b'\'' | b'"' | b'`' | b'[' => {
                let close = if c == b'[' { b']' } else { c };
                i += 1;
                loop {
                    match b.get(i) {
                        None => break,
                        Some(&x) if x == close => {
                            // A doubled quote stands for itself (not inside brackets).
                            if c != b'[' && b.get(i + 1) == Some(&close) {
                                i += 2;
                                continue;
                            }
                            i += 1;
                            break;
                        }
                        Some(_) => i += 1,
                    }
                }
            }
            _ if c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80 => {
                while i < b.len()
                    && (b[i].is_ascii_alphanumeric()
                        || b[i] == b'_'
                        || b[i] == b'$'
                        || b[i] >= 0x80)
                {
                    i += 1;
                }
            }
            _ => i += 1,
        }
        out.push((start, &sql[start..i]));
    }
    out
}

fn starts_with_words(sql: &str, words: &[&str]) -> bool {
    let t = tokens(sql);
    t.len() >= words.len()
        && t.iter()
            .zip(words)
            .all(|((_, tok), w)| tok.eq_ignore_ascii_case(w))
}

/// Reads `CREATE VIRTUAL TABLE [IF NOT EXISTS] [schema.]name USING module[(args)]`.
fn virtual_table(sql: &str) -> Option<VirtualTable> {
    if !starts_with_words(sql, &["CREATE", "VIRTUAL", "TABLE"]) {
        return None;
    }
    let t = tokens(sql);
    // The first bare USING: a name spelled "using" would be quoted.
    let at = t
        .iter()
        .position(|(_, w)| w.eq_ignore_ascii_case("USING"))?;
    let module = dequote(t.get(at + 1)?.1).to_ascii_lowercase();
    let Some(&(open, "(")) = t.get(at + 2) else {
        return Some(VirtualTable {
            module,
            args: Vec::new(),
        });
    };
    // Arguments: the text between the parentheses, split at top-level commas.
    let mut args = Vec::new();
    let mut depth = 0usize;
    let mut from = open + 1;
    for &(pos, tok) in &t[at + 2..] {
        match tok {
            "(" => depth += 1,
            ")" => {
                depth -= 1;
                if depth == 0 {
                    let last = sql[from..pos].trim();
                    if !last.is_empty() || !args.is_empty() {
                        args.push(last.to_owned());
                    }
                    return Some(VirtualTable { module, args });
                }
            }
            "," if depth == 1 => {
                args.push(sql[from..pos].trim().to_owned());
                from = pos + 1;
            }
            _ => {}
        }
    }
    // No closing parenthesis: not something SQLite would have stored.
    None
}

/// The relations a view's query reads (not its own CTEs), or `None` when it does not parse.
fn view_reads(sql: &str, modules: &BTreeSet<String>) -> Option<Vec<RelName>> {
    let statements = Parser::parse_sql(&SQLiteDialect {}, sql).ok()?;
    let [Statement::CreateView(view)] = statements.as_slice() else {
        return None;
    };
    let mut c = Reads {
        modules,
        scopes: Vec::new(),
        table_functions: Vec::new(),
        out: Vec::new(),
        opaque: false,
    };
    let _ = view.query.visit(&mut c);
    (!c.opaque).then_some(c.out)
}

/// Collects the relations a query reads.
struct Reads<'a> {
    modules: &'a BTreeSet<String>,
    /// The CTE names visible in each enclosing query (SQLite lets every CTE of a WITH, and the
    /// query's body, see all of that WITH's names, earlier or later, and its own).
    scopes: Vec<BTreeSet<String>>,
    /// `name(args)` in FROM: a table-valued function (or a virtual table called like one).
    table_functions: Vec<*const ObjectName>,
    out: Vec<RelName>,
    opaque: bool,
}

impl Visitor for Reads<'_> {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        let mut names = self.scopes.last().cloned().unwrap_or_default();
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                names.insert(cte.alias.name.value.to_ascii_lowercase());
            }
        }
        self.scopes.push(names);
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
        self.scopes.pop();
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table {
            name,
            args: Some(_),
            ..
        } = factor
        {
            self.table_functions.push(name);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        let parts: Option<Vec<String>> = relation
            .0
            .iter()
            .map(|p| p.as_ident().map(|i| i.value.to_ascii_lowercase()))
            .collect();
        let (schema, name) = match parts.as_deref() {
            Some([name]) => (MAIN.to_owned(), name.clone()),
            Some([schema, name]) => (schema.clone(), name.clone()),
            _ => {
                self.opaque = true;
                return ControlFlow::Break(());
            }
        };
        let unqualified = relation.0.len() == 1;
        if unqualified && self.scopes.last().is_some_and(|ctes| ctes.contains(&name)) {
            return ControlFlow::Continue(());
        }
        // A built-in table-valued function (json_each) reads only its arguments; the catalogue
        // ones (pragma_*, dbstat, sqlite_*) are kept, so the policy sees them as catalog reads.
        let ptr: *const ObjectName = relation;
        if self.table_functions.contains(&ptr)
            && self.modules.contains(&name)
            && !(name.starts_with("pragma_") || name.starts_with("sqlite_") || name == "dbstat")
        {
            return ControlFlow::Continue(());
        }
        let r = RelName::new(schema, name);
        if !self.out.contains(&r) {
            self.out.push(r);
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: Option<Vec<RelName>>) -> Vec<String> {
        v.expect("parses")
            .into_iter()
            .map(|r| r.qualified())
            .collect()
    }

    #[test]
    fn virtual_table_definitions_give_their_module_and_arguments() {
        let vt = virtual_table(
            "CREATE VIRTUAL TABLE \"a USING b\" USING fts5(body, content = 'docs, \"x\"', \
             content_rowid=id, prefix='2 3')",
        )
        .unwrap();
        assert_eq!(vt.module, "fts5");
        assert_eq!(
            vt.args,
            [
                "body",
                "content = 'docs, \"x\"'",
                "content_rowid=id",
                "prefix='2 3'"
            ]
        );
        let vt = virtual_table("create virtual table if not exists main.r using RTREE").unwrap();
        assert_eq!(vt.module, "rtree");
        assert!(vt.args.is_empty());
        assert_eq!(virtual_table("CREATE TABLE t(x)"), None);
    }

    #[test]
    fn every_spelling_of_external_content_reaches_the_content_table() {
        for arg in [
            "content='Docs'",
            "content=\"docs\"",
            "CONTENT = docs",
            "content=[docs]",
        ] {
            let mut e = Relation::default();
            describe_virtual(
                &mut e,
                &VirtualTable {
                    module: "fts4".into(),
                    args: vec!["body".into(), arg.into()],
                },
            );
            assert_eq!(e.reads, [rel("docs")], "{arg}");
        }
        let mut e = Relation::default();
        describe_virtual(
            &mut e,
            &VirtualTable {
                module: "fts5".into(),
                args: vec!["body".into(), "content=''".into()],
            },
        );
        assert!(e.reads.is_empty(), "contentless");
    }

    #[test]
    fn vocabulary_tables_read_their_full_text_table_and_unknown_modules_are_opaque() {
        let mut e = Relation::default();
        describe_virtual(
            &mut e,
            &VirtualTable {
                module: "fts5vocab".into(),
                args: vec!["'main'".into(), "Notes".into(), "'row'".into()],
            },
        );
        assert_eq!(e.reads, [rel("notes")]);
        let mut e = Relation::default();
        describe_virtual(
            &mut e,
            &VirtualTable {
                module: "dbstat".into(),
                args: vec![],
            },
        );
        assert!(e.opaque_reads && e.opaque_writes);
    }

    #[test]
    fn the_longest_virtual_table_name_owns_a_shadow_table() {
        let v: BTreeMap<String, String> = [
            ("a".to_owned(), "fts5".to_owned()),
            ("a_b".into(), "fts5".into()),
        ]
        .into();
        assert_eq!(owner_of(&v, "a_b_data"), Some(("a_b", "data")));
        assert_eq!(owner_of(&v, "a_data"), Some(("a", "data")));
        assert_eq!(owner_of(&v, "ab_data"), None);
    }

    #[test]
    fn a_view_reads_every_table_it_names_but_not_its_own_ctes() {
        let modules: BTreeSet<String> = ["json_each".to_owned()].into();
        let reads = view_reads(
            "CREATE VIEW v AS WITH c AS (SELECT * FROM d), d AS (SELECT x FROM People) \
             SELECT * FROM c JOIN main.c ON 1 JOIN json_each('[1]') \
             WHERE EXISTS (SELECT 1 FROM (WITH s AS (SELECT 1) SELECT * FROM s) JOIN s)",
            &modules,
        );
        assert_eq!(names(reads), ["main.people", "main.c", "main.s"]);
        let reads = view_reads(
            "CREATE VIEW v AS SELECT * FROM pragma_table_info('t')",
            &modules,
        );
        assert_eq!(names(reads), ["main.pragma_table_info"]);
        assert_eq!(
            view_reads("CREATE VIEW v AS SELECT * FROM t INDEXED BY", &modules),
            None
        );
    }

    #[test]
    fn names_fold_ascii_case_only_as_sqlite_and_the_policy_do() {
        assert_eq!(rel("Notes_Ä").name, "notes_Ä");
    }

    #[test]
    fn quoted_names_lose_their_quotes() {
        assert_eq!(dequote("'it''s'"), "it's");
        assert_eq!(dequote("\"a\"\"b\""), "a\"b");
        assert_eq!(dequote("[x y]"), "x y");
        assert_eq!(dequote("plain"), "plain");
        assert_eq!(dequote("'"), "'");
    }
}
