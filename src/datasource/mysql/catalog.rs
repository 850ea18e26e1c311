//! Reads what the SQL policy needs to know from a MySQL/MariaDB server (see `policy::catalog`):
//! the built-in functions this server really has, what views and MERGE tables read, which tables
//! have triggers, and which foreign keys cascade. Every database the service account can see is
//! read (the system schemas aside): a view in the datasource's database may read any of them.
//!
//! Limits, each the database grants' job rather than ours:
//! * MariaDB hides a view's definition from an account without SHOW VIEW: such a view is
//!   `opaque_reads` (the policy refuses it where the scope restricts tables).
//! * MariaDB 10.11 lists a table's triggers, and the rules of the foreign keys of a referencing
//!   table (`REFERENTIAL_CONSTRAINTS`), only to accounts holding some privilege other than SELECT
//!   on that table (checked). Triggers are thus visible to every account that can fire them. A
//!   foreign key into a table the account may only read still shows in `KEY_COLUMN_USAGE`, and
//!   its rules are then read from that table's `SHOW CREATE TABLE`. A cascade into a table the
//!   account has no privilege on at all is invisible, although a DELETE or UPDATE of the parent
//!   runs it: grant nothing on a table a writable parent cascades into that you would not have
//!   the policy see.
//! * Stored functions cannot appear in column defaults, generated columns or CHECK constraints on
//!   either server, so there are no `write_functions` to list.
//!
//! Every query names its schema (`information_schema.…`, `` `db`.`t` ``): connections have no
//! default database.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row, Value};
use sqlparser::ast::{Expr, ObjectName, Query, Statement, Visit, Visitor};
use sqlparser::dialect::MySqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

use crate::model::DatasourceKind;
use crate::policy::catalog::{Catalog, RelName, Relation, RelationKind};

/// Schemas that belong to the server, never to a datasource.
const SYSTEM_SCHEMAS: &str = "('information_schema', 'mysql', 'performance_schema', 'sys')";

/// MariaDB's own list of its native functions (upper case). Grammar constructs (IF, LEFT, COUNT…)
/// are not in it; the policy exempts those itself.
const SQL_FUNCTIONS: &str = "SELECT LOWER(FUNCTION) FROM information_schema.SQL_FUNCTIONS";

/// MariaDB error 1109: unknown table (a server without `SQL_FUNCTIONS`).
const UNKNOWN_TABLE: u16 = 1109;

/// How deep a view definition may nest before it is treated as unreadable.
const VIEW_RECURSION_LIMIT: usize = 50;

fn views_sql() -> String {
    format!(
        "SELECT TABLE_SCHEMA, TABLE_NAME, VIEW_DEFINITION FROM information_schema.VIEWS \
         WHERE TABLE_SCHEMA NOT IN {SYSTEM_SCHEMAS}"
    )
}

fn merge_tables_sql() -> String {
    format!(
        "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES \
         WHERE UPPER(ENGINE) = 'MRG_MYISAM' AND TABLE_SCHEMA NOT IN {SYSTEM_SCHEMAS}"
    )
}

fn triggers_sql() -> String {
    format!(
        "SELECT DISTINCT EVENT_OBJECT_SCHEMA, EVENT_OBJECT_TABLE FROM information_schema.TRIGGERS \
         WHERE EVENT_OBJECT_SCHEMA NOT IN {SYSTEM_SCHEMAS}"
    )
}

/// Foreign keys with their rules, where the account may see them: the parent
/// (`UNIQUE_CONSTRAINT_SCHEMA` is the referenced table's schema), the child, the constraint, and
/// whether its ON DELETE or ON UPDATE writes the child.
fn rules_sql() -> String {
    format!(
        "SELECT UNIQUE_CONSTRAINT_SCHEMA, REFERENCED_TABLE_NAME, CONSTRAINT_SCHEMA, TABLE_NAME, \
           CONSTRAINT_NAME, \
           (DELETE_RULE IN ('CASCADE', 'SET NULL', 'SET DEFAULT') \
             OR UPDATE_RULE IN ('CASCADE', 'SET NULL', 'SET DEFAULT')) \
         FROM information_schema.REFERENTIAL_CONSTRAINTS \
         WHERE CONSTRAINT_SCHEMA NOT IN {SYSTEM_SCHEMAS}"
    )
}

/// Every foreign key the account can see at all, rules or not: MariaDB lists a foreign key here
/// for an account that may only read the child table, where `REFERENTIAL_CONSTRAINTS` hides it.
fn foreign_keys_sql() -> String {
    format!(
        "SELECT DISTINCT REFERENCED_TABLE_SCHEMA, REFERENCED_TABLE_NAME, TABLE_SCHEMA, TABLE_NAME, \
           CONSTRAINT_NAME \
         FROM information_schema.KEY_COLUMN_USAGE \
         WHERE REFERENCED_TABLE_NAME IS NOT NULL AND TABLE_SCHEMA NOT IN {SYSTEM_SCHEMAS}"
    )
}

/// A MySQL identifier in backquotes.
fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Reads the catalogue over `conn` (inside the caller's read-only transaction, under its
/// statement timeout). `default_schema` is the datasource's database.
pub(super) async fn read(
    conn: &mut Conn,
    mariadb: bool,
    server_version: String,
    default_schema: String,
) -> Result<Catalog, mysql_async::Error> {
    let builtin_functions = if mariadb {
        match conn.query::<Row, _>(SQL_FUNCTIONS).await {
            Ok(rows) => rows.iter().filter_map(|r| text(r, 0)).collect(),
            Err(mysql_async::Error::Server(e)) if e.code == UNKNOWN_TABLE => {
                crate::policy::mysql_builtins(&server_version)
            }
            Err(e) => return Err(e),
        }
    } else {
        crate::policy::mysql_builtins(&server_version)
    };
    // Names an unquoted, unqualified call in a view definition may use for a built-in: this
    // server's list plus the grammar-level names no catalogue lists (IF, LEFT, COUNT…).
    let known: BTreeSet<String> = builtin_functions
        .iter()
        .cloned()
        .chain(crate::policy::mysql_builtins("255.0.0"))
        .collect();

    let mut rels: BTreeMap<RelName, Relation> = BTreeMap::new();
    for row in conn.query::<Row, _>(views_sql()).await? {
        let (Some(schema), Some(name)) = (text(&row, 0), text(&row, 1)) else {
            continue;
        };
        let definition = text(&row, 2);
        let e = rels.entry(RelName::new(schema.clone(), name)).or_default();
        e.kind = RelationKind::View;
        match definition.as_deref().map(str::trim) {
            Some(def) if !def.is_empty() => match view_reaches(def, &schema, &known) {
                Some((reads, functions)) => {
                    e.reads = reads;
                    e.read_functions = functions;
                }
                None => e.opaque_reads = true,
            },
            // Hidden without SHOW VIEW.
            _ => e.opaque_reads = true,
        }
    }

    for row in conn.query::<Row, _>(merge_tables_sql()).await? {
        let (Some(schema), Some(name)) = (text(&row, 0), text(&row, 1)) else {
            continue;
        };
        let show = format!("SHOW CREATE TABLE {}.{}", quote(&schema), quote(&name));
        let create = match conn.query_first::<Row, _>(show).await {
            Ok(row) => row.and_then(|r| text(&r, 1)),
            Err(mysql_async::Error::Server(_)) => None,
            Err(e) => return Err(e),
        };
        let e = rels.entry(RelName::new(schema.clone(), name)).or_default();
        e.kind = RelationKind::Merge;
        match create.and_then(|sql| merge_union(&sql, &schema)) {
            Some(members) => e.reads = members,
            None => e.opaque_reads = true,
        }
    }

    for row in conn.query::<Row, _>(triggers_sql()).await? {
        let (Some(schema), Some(name)) = (text(&row, 0), text(&row, 1)) else {
            continue;
        };
        // A trigger body may write anything the definer may: its effects are not listed.
        rels.entry(RelName::new(schema, name))
            .or_default()
            .opaque_writes = true;
    }

    // Cascading foreign keys: the rules where the server shows them, else read from the child's
    // `SHOW CREATE TABLE` (which SELECT on it allows), else assumed to cascade.
    let mut cascades: BTreeSet<(RelName, RelName)> = BTreeSet::new();
    let mut ruled: BTreeSet<(String, String, String)> = BTreeSet::new();
    for row in conn.query::<Row, _>(rules_sql()).await? {
        let parts = (text(&row, 0), text(&row, 1), text(&row, 2), text(&row, 3));
        let (Some(ps), Some(p), Some(cs), Some(c)) = parts else {
            continue;
        };
        ruled.insert((cs.clone(), c.clone(), text(&row, 4).unwrap_or_default()));
        if text(&row, 5).as_deref() != Some("0") {
            cascades.insert((RelName::new(ps, p), RelName::new(cs, c)));
        }
    }
    let mut unruled: BTreeMap<RelName, Vec<RelName>> = BTreeMap::new();
    for row in conn.query::<Row, _>(foreign_keys_sql()).await? {
        let parts = (text(&row, 0), text(&row, 1), text(&row, 2), text(&row, 3));
        let (Some(ps), Some(p), Some(cs), Some(c)) = parts else {
            continue;
        };
        let key = (cs.clone(), c.clone(), text(&row, 4).unwrap_or_default());
        if !ruled.contains(&key) {
            let parents = unruled.entry(RelName::new(cs, c)).or_default();
            let parent = RelName::new(ps, p);
            if !parents.contains(&parent) {
                parents.push(parent);
            }
        }
    }
    for (child, parents) in unruled {
        let show = format!(
            "SHOW CREATE TABLE {}.{}",
            quote(&child.schema),
            quote(&child.name)
        );
        let create = match conn.query_first::<Row, _>(show).await {
            Ok(row) => row.and_then(|r| text(&r, 1)),
            Err(mysql_async::Error::Server(_)) => None,
            Err(e) => return Err(e),
        };
        match create.and_then(|sql| foreign_key_rules(&sql, &child.schema)) {
            Some(keys) => {
                for (parent, cascading) in keys {
                    if cascading {
                        cascades.insert((parent, child.clone()));
                    }
                }
            }
            None => {
                for parent in parents {
                    cascades.insert((parent, child.clone()));
                }
            }
        }
    }
    for (parent, child) in cascades {
        let e = rels.entry(parent).or_default();
        if !e.cascades.contains(&child) {
            e.cascades.push(child);
        }
    }

    Ok(Catalog {
        kind: Some(DatasourceKind::Mysql),
        server_version,
        default_schema,
        builtin_functions,
        relations: rels,
        ..Catalog::default()
    })
}

/// A text column (NULL: `None`). Read by hand: mysql_async's typed rows panic on a value that does
/// not convert.
fn text(row: &Row, i: usize) -> Option<String> {
    match row.as_ref(i)? {
        Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::NULL => None,
        other => Some(other.as_sql(true).trim_matches('\'').to_owned()),
    }
}

/// What a view definition (as the server stores it) reads: the tables and views it names,
/// qualified with the view's schema where unqualified, leaving out its own CTE names; and the
/// user functions it calls, as `schema.name`. `None` when it does not parse as one query.
///
/// Both servers write a stored function's name in backquotes (MariaDB leaves out the schema when
/// it is the view's own: `` `f`(…) ``) and built-ins bare (`count(0)`, `left(…)`): a quoted or
/// qualified call is a user function, and so is a bare one that is no built-in this server knows.
fn view_reaches(
    definition: &str,
    schema: &str,
    known_builtins: &BTreeSet<String>,
) -> Option<(Vec<RelName>, Vec<String>)> {
    let dialect = MySqlDialect {};
    let tokens = Tokenizer::new(&dialect, definition)
        .tokenize_with_location()
        .ok()?;
    let mut statements = Parser::new(&dialect)
        .with_recursion_limit(VIEW_RECURSION_LIMIT)
        .with_tokens_with_locations(normalise(tokens))
        .parse_statements()
        .ok()?;
    if statements.len() != 1 {
        return None;
    }
    let statement = statements.remove(0);
    if !matches!(statement, Statement::Query(_)) {
        return None;
    }
    let mut seen = Seen::default();
    let _ = statement.visit(&mut seen);

    let mut reads: Vec<RelName> = Vec::new();
    for name in &seen.relations {
        let parts = idents(name)?;
        let rel = match parts.as_slice() {
            [(table, _)] => {
                // Only an unqualified name can mean a CTE.
                if seen.ctes.contains(table) {
                    continue;
                }
                RelName::new(schema, table.as_str())
            }
            [(db, _), (table, _)] => RelName::new(db.as_str(), table.as_str()),
            _ => return None,
        };
        if !reads.contains(&rel) {
            reads.push(rel);
        }
    }

    let mut functions: Vec<String> = Vec::new();
    for name in &seen.functions {
        let parts = idents(name)?;
        let qualified = match parts.as_slice() {
            [(f, quoted)] => {
                if !quoted && known_builtins.contains(&f.to_lowercase()) {
                    continue;
                }
                format!("{schema}.{f}")
            }
            [(db, _), (f, _)] => format!("{db}.{f}"),
            _ => return None,
        };
        if !functions.contains(&qualified) {
            functions.push(qualified);
        }
    }
    Some((reads, functions))
}

/// Rewrites the two spellings the server uses in stored view definitions that sqlparser 0.63
/// does not parse, neither of which can name a table or call a function: a cast's character set
/// (`cast(x as char charset utf8mb3)`, `character set …`) is dropped, and the infix `MOD`
/// operator becomes `%`. Anything else it cannot parse leaves the view opaque.
fn normalise(tokens: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
    let significant = |t: &TokenWithSpan| !matches!(t.token, Token::Whitespace(_));
    let keyword = |t: &TokenWithSpan| match &t.token {
        Token::Word(w) if w.quote_style.is_none() => Some(w.keyword),
        _ => None,
    };
    let next = |from: usize| (from..tokens.len()).find(|&j| significant(&tokens[j]));
    let is_word = |j: Option<usize>| j.is_some_and(|j| matches!(tokens[j].token, Token::Word(_)));
    let mut out: Vec<TokenWithSpan> = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        match keyword(&tokens[i]) {
            Some(Keyword::CHARSET) if is_word(next(i + 1)) => {
                i = next(i + 1).map_or(tokens.len(), |j| j + 1);
                continue;
            }
            Some(Keyword::CHARACTER)
                if next(i + 1).is_some_and(|j| keyword(&tokens[j]) == Some(Keyword::SET))
                    && is_word(next(i + 1).and_then(|j| next(j + 1))) =>
            {
                i = next(i + 1)
                    .and_then(|j| next(j + 1))
                    .map_or(tokens.len(), |k| k + 1);
                continue;
            }
            Some(Keyword::MOD) => {
                // Infix only after an operand; `mod(a, b)` is a function call and stays.
                let infix = out.iter().rev().find(|t| significant(t)).is_some_and(|t| {
                    matches!(
                        t.token,
                        Token::Word(_)
                            | Token::Number(..)
                            | Token::RParen
                            | Token::SingleQuotedString(_)
                    )
                });
                if infix {
                    out.push(TokenWithSpan {
                        token: Token::Mod,
                        span: tokens[i].span,
                    });
                    i += 1;
                    continue;
                }
            }
            _ => {}
        }
        out.push(tokens[i].clone());
        i += 1;
    }
    out
}

/// The parts of a name with whether each was quoted; `None` for a computed part.
fn idents(name: &ObjectName) -> Option<Vec<(String, bool)>> {
    name.0
        .iter()
        .map(|p| {
            p.as_ident()
                .map(|i| (i.value.clone(), i.quote_style.is_some()))
        })
        .collect()
}

/// Every relation name, function call and CTE name in a statement.
#[derive(Default)]
struct Seen {
    relations: Vec<ObjectName>,
    functions: Vec<ObjectName>,
    ctes: BTreeSet<String>,
}

impl Visitor for Seen {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                self.ctes.insert(cte.alias.name.value.clone());
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        self.relations.push(relation.clone());
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        if let Expr::Function(f) = expr {
            self.functions.push(f.name.clone());
        }
        ControlFlow::Continue(())
    }
}

/// The members of a MERGE table from its `SHOW CREATE TABLE` text (`` UNION=(`a`,`db`.`b`) ``),
/// qualified with the table's own schema where the server left it out. `None` when the clause
/// cannot be read. Only an unquoted `UNION=(` outside the column list counts: a comment or
/// default holding the same text is inside quotes or parentheses.
fn merge_union(create: &str, schema: &str) -> Option<Vec<RelName>> {
    let start = top_level(create, "UNION=(")? + "UNION=(".len();
    let mut members = Vec::new();
    let mut parts: Vec<String> = Vec::new();
    let mut chars = create[start..].chars().peekable();
    loop {
        match chars.next()? {
            '`' => {
                let mut ident = String::new();
                loop {
                    match chars.next()? {
                        '`' if chars.peek() == Some(&'`') => {
                            chars.next();
                            ident.push('`');
                        }
                        '`' => break,
                        c => ident.push(c),
                    }
                }
                parts.push(ident);
            }
            '.' | ' ' => {}
            c @ (',' | ')') => {
                let rel = match parts.as_slice() {
                    [t] => RelName::new(schema, t.as_str()),
                    [db, t] => RelName::new(db.as_str(), t.as_str()),
                    [] if c == ')' && members.is_empty() => return Some(members),
                    _ => return None,
                };
                parts.clear();
                members.push(rel);
                if c == ')' {
                    return Some(members);
                }
            }
            // The server always quotes here; anything else is a form this reader does not know.
            _ => return None,
        }
    }
}

/// The foreign keys of a table from its `SHOW CREATE TABLE` text: each referenced table
/// (qualified with the table's own schema where the server left it out) and whether its ON DELETE
/// or ON UPDATE writes this table. `None` when a foreign key line cannot be read.
fn foreign_key_rules(create: &str, schema: &str) -> Option<Vec<(RelName, bool)>> {
    let mut out = Vec::new();
    // The server writes each constraint on a line of its own; a column line starts with its
    // quoted name, and strings never hold a raw newline.
    for line in create.lines().map(str::trim) {
        if !line.starts_with("CONSTRAINT ") || !line.contains(" FOREIGN KEY ") {
            continue;
        }
        let tokens = line_tokens(line)?;
        if !tokens.iter().any(|t| *t == Tok::Word("FOREIGN".into())) {
            continue;
        }
        let at = tokens
            .iter()
            .position(|t| *t == Tok::Word("REFERENCES".into()))?;
        let mut rest = tokens[at + 1..].iter();
        let parent = match (rest.next(), rest.clone().next()) {
            (Some(Tok::Ident(db)), Some(Tok::Punct('.'))) => {
                rest.next();
                match rest.next() {
                    Some(Tok::Ident(t)) => RelName::new(db.as_str(), t.as_str()),
                    _ => return None,
                }
            }
            (Some(Tok::Ident(t)), _) => RelName::new(schema, t.as_str()),
            _ => return None,
        };
        if rest.next() != Some(&Tok::Punct('(')) {
            return None;
        }
        rest.by_ref().find(|t| **t == Tok::Punct(')'))?;
        let rules: Vec<&str> = rest
            .filter_map(|t| match t {
                Tok::Word(w) => Some(w.as_str()),
                _ => None,
            })
            .collect();
        let rules = rules.join(" ");
        let cascading = ["CASCADE", "SET NULL", "SET DEFAULT"].iter().any(|r| {
            rules.contains(&format!("ON DELETE {r}")) || rules.contains(&format!("ON UPDATE {r}"))
        });
        out.push((parent, cascading));
    }
    Some(out)
}

#[derive(Debug, PartialEq, Eq)]
enum Tok {
    Ident(String),
    Word(String),
    Punct(char),
}

/// One `SHOW CREATE TABLE` line as backquoted identifiers, bare words and punctuation. `None` for
/// anything else (a string), which a constraint line does not hold.
fn line_tokens(line: &str) -> Option<Vec<Tok>> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '`' => {
                let mut ident = String::new();
                loop {
                    match chars.next()? {
                        '`' if chars.peek() == Some(&'`') => {
                            chars.next();
                            ident.push('`');
                        }
                        '`' => break,
                        c => ident.push(c),
                    }
                }
                out.push(Tok::Ident(ident));
            }
            c if c.is_ascii_alphanumeric() || c == '_' => {
                let mut word = c.to_string();
                while let Some(&n) = chars.peek() {
                    if !(n.is_ascii_alphanumeric() || n == '_') {
                        break;
                    }
                    word.push(n);
                    chars.next();
                }
                out.push(Tok::Word(word.to_ascii_uppercase()));
            }
            c if c.is_whitespace() => {}
            '(' | ')' | ',' | '.' => out.push(Tok::Punct(c)),
            _ => return None,
        }
    }
    Some(out)
}

/// Where `needle` first occurs in `sql` outside quotes, backquotes and parentheses.
fn top_level(sql: &str, needle: &str) -> Option<usize> {
    let bytes = sql.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            q @ (b'\'' | b'"' | b'`') => {
                i += 1;
                while i < bytes.len() {
                    if bytes[i] == b'\\' && q != b'`' {
                        i += 2;
                        continue;
                    }
                    if bytes[i] == q {
                        // A doubled quote stands for itself.
                        if bytes.get(i + 1) == Some(&q) {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
            }
            b'(' => depth += 1,
            b')' => depth = depth.saturating_sub(1),
            _ if depth == 0 && bytes[i..].starts_with(needle.as_bytes()) => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> BTreeSet<String> {
        ["concat", "json_value", "current_timestamp"]
            .iter()
            .map(|s| s.to_string())
            .chain(crate::policy::mysql_builtins("255.0.0"))
            .collect()
    }

    #[test]
    fn a_mariadb_view_definition_yields_its_tables_and_stored_functions_but_not_its_ctes() {
        // As MariaDB 10.11 stores it: its own database's stored function unqualified but quoted.
        let def = "with c as (select `pv`.`t`.`a` AS `a` from `pv`.`t`)select `f`(`c`.`a`) AS `fa`,\
                   count(0) AS `n`,if(1,2,3) AS `i`,left('a',1) AS `l`,current_timestamp() AS `nw`,\
                   cast(`c`.`a` as char charset utf8mb3) AS `ca`,\
                   (select max(`pv2`.`o`.`a`) from `pv2`.`o`) AS `m` from `c` group by `c`.`a`";
        let (reads, functions) = view_reaches(def, "pv", &known()).expect("parses");
        assert_eq!(
            reads,
            vec![RelName::new("pv", "t"), RelName::new("pv2", "o")]
        );
        assert_eq!(functions, vec!["pv.f".to_owned()]);
    }

    #[test]
    fn joins_subqueries_and_views_over_views_are_all_listed() {
        let def = "select `pv`.`t`.`a` AS `a`,row_number() over ( order by `pv`.`t`.`a`) AS `rn`,\
                   json_value('{}','$.a') AS `j`,`pv`.`t`.`b` MOD 2 AS `mm`,`pv`.`t`.`a` DIV 2 AS `dd` \
                   from (`pv`.`t` join `pv2`.`o` on(`pv`.`t`.`a` = `pv2`.`o`.`a`)) \
                   where `pv`.`t`.`a` in (select `pv2`.`o`.`a` from `other`.`v1`) and exists(select 1 limit 1)";
        let (reads, functions) = view_reaches(def, "pv", &known()).expect("parses");
        assert_eq!(
            reads,
            vec![
                RelName::new("pv", "t"),
                RelName::new("pv2", "o"),
                RelName::new("other", "v1")
            ]
        );
        assert!(functions.is_empty(), "{functions:?}");
    }

    #[test]
    fn a_bare_call_no_builtin_list_knows_and_a_qualified_one_are_user_functions() {
        let def = "select any_value(1) AS `a`,`lib`.`g`(2) AS `b` from `pv`.`t`";
        let no_any_value: BTreeSet<String> = ["concat".to_owned()].into();
        let (_, functions) = view_reaches(def, "pv", &no_any_value).expect("parses");
        assert_eq!(
            functions,
            vec!["pv.any_value".to_owned(), "lib.g".to_owned()]
        );
    }

    #[test]
    fn the_servers_cast_character_sets_and_infix_mod_are_read_and_mod_calls_stay_calls() {
        let def = "select cast(`pv`.`t`.`a` as char character set latin1) AS `x`,\
                   `pv`.`t`.`a` MOD 3 AS `y`,mod(`pv`.`t`.`a`,3) AS `z`,`mod`(1) AS `w` \
                   from `pv`.`t`";
        let (reads, functions) = view_reaches(def, "pv", &known()).expect("parses");
        assert_eq!(reads, vec![RelName::new("pv", "t")]);
        // `mod(…)` is the built-in; a quoted `mod` is a stored function of that name.
        assert_eq!(functions, vec!["pv.mod".to_owned()]);
    }

    #[test]
    fn foreign_key_rules_are_read_from_show_create_table() {
        let create = "CREATE TABLE `c2` (\n  `id` int(11) DEFAULT NULL COMMENT 'x',\n  \
                      `pid` int(11) DEFAULT NULL,\n  KEY `we``ird` (`pid`),\n  \
                      CONSTRAINT `c2_ibfk_1` FOREIGN KEY (`pid2`) REFERENCES `fkv`.`p` (`id`),\n  \
                      CONSTRAINT `we``ird REFERENCES x` FOREIGN KEY (`pid`) REFERENCES `p` (`id`) \
                      ON UPDATE SET NULL,\n  \
                      CONSTRAINT `c3` FOREIGN KEY (`a`, `b`) REFERENCES `q` (`a`, `b`) ON DELETE CASCADE,\n  \
                      CONSTRAINT `chk` CHECK (`id` > 0)\n\
                      ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4";
        assert_eq!(
            foreign_key_rules(create, "db"),
            Some(vec![
                (RelName::new("fkv", "p"), false),
                (RelName::new("db", "p"), true),
                (RelName::new("db", "q"), true),
            ])
        );
        // A constraint line this reader does not understand makes the whole table unreadable.
        assert_eq!(
            foreign_key_rules(
                "  CONSTRAINT `x` FOREIGN KEY (`a`) REFERENCES 'p' (`a`)",
                "db"
            ),
            None
        );
    }

    #[test]
    fn a_definition_that_is_not_one_query_is_unreadable() {
        assert!(view_reaches("this is not sql", "pv", &known()).is_none());
        assert!(view_reaches("select 1; select 2", "pv", &known()).is_none());
        assert!(view_reaches("delete from `pv`.`t`", "pv", &known()).is_none());
    }

    #[test]
    fn merge_members_are_read_from_the_union_clause() {
        let create = "CREATE TABLE `mm` (\n  `a` int(11) DEFAULT NULL COMMENT 'UNION=(`x`)'\n) \
                      ENGINE=MRG_MyISAM DEFAULT CHARSET=utf8mb4 INSERT_METHOD=LAST \
                      UNION=(`m1`,`pv2`.`m2`,`we``ird`) COMMENT='it''s UNION=(`y`) \\' UNION=(`z`)'";
        assert_eq!(
            merge_union(create, "pv"),
            Some(vec![
                RelName::new("pv", "m1"),
                RelName::new("pv2", "m2"),
                RelName::new("pv", "we`ird")
            ])
        );
        assert_eq!(
            merge_union(
                "CREATE TABLE `e` (`a` int) ENGINE=MRG_MyISAM UNION=()",
                "pv"
            ),
            Some(vec![])
        );
        assert_eq!(
            merge_union("CREATE TABLE `e` (`a` int) ENGINE=MRG_MyISAM", "pv"),
            None
        );
        assert_eq!(merge_union("x UNION=(`a` junk)", "pv"), None);
    }
}
