//! What runs is what was checked: the checked tree is rendered to text, and that text must parse
//! back, with the same dialect, to exactly one statement equal to the checked one.
//!
//! sqlparser's rendering is not always faithful (a quote after a backslash is left undoubled, so
//! `SELECT '\'' ; DROP TABLE t; --'` renders into two statements on Postgres); such statements
//! are refused rather than sent.
//!
//! When the rendering is the caller's text itself, byte for byte, the re-parse is skipped: it
//! would tokenize and parse the very text the checked tree came from, with the same dialect,
//! options and recursion limit, and sqlparser is deterministic, so it could only return the
//! checked tree again. Statements written the way sqlparser prints them (upper-case keywords,
//! single spaces, no comments) then cost one parse instead of two.

use super::{PolicyError, only, parse_one};
use crate::model::DatasourceKind;
use sqlparser::ast::{
    Expr, Ident, ObjectName, ObjectNamePart, Statement, TableFactor, VisitMut, VisitorMut,
};
use sqlparser::dialect::Dialect;
use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;

/// Makes every name explicit before rendering: the schema the walk resolved goes in front of
/// each unqualified relation and admin-allowed user function, and `ONLY` back in front of the
/// relations it marked. Returns whether any name was qualified.
pub fn make_explicit(
    statement: &mut Statement,
    qualify: &HashMap<*const ObjectName, Ident>,
    only: &HashSet<*const ObjectName>,
) -> bool {
    if qualify.is_empty() && only.is_empty() {
        return false;
    }
    struct Explicit<'a> {
        qualify: HashMap<*const ObjectName, Ident>,
        only: &'a HashSet<*const ObjectName>,
    }
    impl Explicit<'_> {
        fn name(&mut self, name: &mut ObjectName) {
            let ptr: *const ObjectName = name;
            if let Some(schema) = self.qualify.remove(&ptr) {
                name.0.insert(0, ObjectNamePart::Identifier(schema));
            }
            if self.only.contains(&ptr) {
                only::display_only(name);
            }
        }
    }
    impl VisitorMut for Explicit<'_> {
        type Break = ();
        fn pre_visit_statement(&mut self, s: &mut Statement) -> ControlFlow<()> {
            // MySQL's multi-table DELETE names its targets outside FROM.
            if let Statement::Delete(d) = s {
                for name in &mut d.tables {
                    self.name(name);
                }
            }
            ControlFlow::Continue(())
        }
        fn pre_visit_relation(&mut self, r: &mut ObjectName) -> ControlFlow<()> {
            self.name(r);
            ControlFlow::Continue(())
        }
        fn pre_visit_table_factor(&mut self, f: &mut TableFactor) -> ControlFlow<()> {
            if let TableFactor::Function { name, .. } = f {
                self.name(name);
            }
            ControlFlow::Continue(())
        }
        fn pre_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
            if let Expr::Function(f) = e {
                self.name(&mut f.name);
            }
            ControlFlow::Continue(())
        }
    }
    let qualified = !qualify.is_empty();
    let _ = statement.visit(&mut Explicit {
        qualify: qualify.clone(),
        only,
    });
    qualified
}

/// The text to send for `statement`, which was parsed from `input` (one statement, the
/// parser's default options, [`super::RECURSION_LIMIT`]) and then made explicit (`qualified`
/// says whether names were added).
pub fn render_verified(
    statement: &Statement,
    kind: DatasourceKind,
    dialect: &dyn Dialect,
    input: &str,
    qualified: bool,
) -> Result<String, PolicyError> {
    let sql = statement.to_string();
    // Text that prints as itself was parsed by exactly the pipeline the re-parse would run; a
    // tree the walk added names to is not what that text parses to, so it is always re-parsed.
    if (!qualified && sql == input) || reparses_to(&sql, statement, kind, dialect) {
        Ok(sql)
    } else {
        Err(PolicyError::RenderMismatch)
    }
}

/// True if `sql` parses, the way `check` parses, to exactly one statement equal to `statement`.
fn reparses_to(
    sql: &str,
    statement: &Statement,
    kind: DatasourceKind,
    dialect: &dyn Dialect,
) -> bool {
    let Ok((mut again, marks)) = parse_one(sql, kind, dialect) else {
        return false;
    };
    let Ok(marked) = only::marked(&again, &marks) else {
        return false;
    };
    make_explicit(&mut again, &HashMap::new(), &marked);
    again == *statement
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::dialect;

    /// The first parse, as `check` does it.
    fn first_parse(sql: &str, kind: DatasourceKind) -> Statement {
        parse_one(sql, kind, dialect(kind))
            .expect("one statement")
            .0
    }

    /// The shortcut is sound only if the full re-parse would have agreed. Every statement here
    /// prints as itself; for each, the re-parse of that text is checked to return the same tree.
    #[test]
    fn text_that_prints_as_itself_reparses_to_the_same_tree() {
        use DatasourceKind::*;
        let cases = [
            (
                Postgres,
                "SELECT id, name, email, country FROM customers WHERE id = $1",
            ),
            (
                Postgres,
                "SELECT * FROM orders WHERE id > $1 ORDER BY id LIMIT 100",
            ),
            (
                Postgres,
                "SELECT 'it''s', E'a\\nb', $$x$$, U&'dat', 1.5e3, -2::INT8",
            ),
            (
                Postgres,
                "WITH t AS (SELECT 1 AS a) SELECT sum(a) OVER (ORDER BY a) FROM t",
            ),
            (
                Postgres,
                "SELECT \"Quoted\".\"Col\" FROM \"Quoted\" WHERE x IN (1, 2) AND y IS NULL",
            ),
            (Mysql, "SELECT `a`, 'x''y' FROM t WHERE id = ? LIMIT 10"),
            (
                Mysql,
                "SELECT * FROM t1 JOIN t2 ON t1.id = t2.id WHERE t1.v LIKE 'a%'",
            ),
            (Sqlite, "SELECT [a], \"b\", 'c' FROM t WHERE id = ?1"),
        ];
        for (kind, input) in cases {
            let statement = first_parse(input, kind);
            let printed = statement.to_string();
            assert_eq!(printed, input, "not a case for the shortcut");
            assert!(
                reparses_to(&printed, &statement, kind, dialect(kind)),
                "{kind:?}: {input}"
            );
            assert_eq!(
                render_verified(&statement, kind, dialect(kind), input, false).as_deref(),
                Ok(input)
            );
        }
    }

    #[test]
    fn text_that_prints_differently_still_needs_the_reparse() {
        // Lower case, comments and line breaks print differently: the re-parse runs and agrees.
        const PG: DatasourceKind = DatasourceKind::Postgres;
        let input = "select id\n  from customers -- who\n where id = $1";
        let statement = first_parse(input, PG);
        assert_eq!(
            render_verified(&statement, PG, dialect(PG), input, false).as_deref(),
            Ok("SELECT id FROM customers WHERE id = $1")
        );
        // An unfaithful rendering never equals its input (it dropped a quote) and is refused.
        let input = "SELECT '\\'' ; DROP TABLE t; --'";
        let statement = first_parse(input, PG);
        assert_ne!(statement.to_string(), input);
        assert_eq!(
            render_verified(&statement, PG, dialect(PG), input, false),
            Err(PolicyError::RenderMismatch)
        );
    }
}
