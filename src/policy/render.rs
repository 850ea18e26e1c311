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

use super::{PolicyError, RECURSION_LIMIT};
use sqlparser::ast::Statement;
use sqlparser::dialect::Dialect;
use sqlparser::parser::Parser;

/// The text to send for `statement`, which was parsed from `input` (one statement, the
/// parser's default options, [`RECURSION_LIMIT`]).
pub fn render_verified(
    statement: &Statement,
    dialect: &dyn Dialect,
    input: &str,
) -> Result<String, PolicyError> {
    let sql = statement.to_string();
    if sql == input || reparses_to(&sql, statement, dialect) {
        Ok(sql)
    } else {
        Err(PolicyError::RenderMismatch)
    }
}

/// True if `sql` parses, with `dialect`, to exactly one statement equal to `statement`.
fn reparses_to(sql: &str, statement: &Statement, dialect: &dyn Dialect) -> bool {
    Parser::new(dialect)
        .with_recursion_limit(RECURSION_LIMIT)
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_statements())
        .is_ok_and(|again| matches!(again.as_slice(), [one] if one == statement))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DatasourceKind;
    use crate::policy::{dialect, parse_one};

    /// The first parse, as `check` does it.
    fn first_parse(sql: &str, kind: DatasourceKind) -> Statement {
        parse_one(sql, kind, dialect(kind)).expect("one statement")
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
                reparses_to(&printed, &statement, dialect(kind)),
                "{kind:?}: {input}"
            );
            assert_eq!(
                render_verified(&statement, dialect(kind), input).as_deref(),
                Ok(input)
            );
        }
    }

    #[test]
    fn text_that_prints_differently_still_needs_the_reparse() {
        // Lower case, comments and line breaks print differently: the re-parse runs and agrees.
        let input = "select id\n  from customers -- who\n where id = $1";
        let statement = first_parse(input, DatasourceKind::Postgres);
        assert_eq!(
            render_verified(&statement, dialect(DatasourceKind::Postgres), input).as_deref(),
            Ok("SELECT id FROM customers WHERE id = $1")
        );
        // An unfaithful rendering never equals its input (it dropped a quote) and is refused.
        let input = "SELECT '\\'' ; DROP TABLE t; --'";
        let statement = first_parse(input, DatasourceKind::Postgres);
        assert_ne!(statement.to_string(), input);
        assert_eq!(
            render_verified(&statement, dialect(DatasourceKind::Postgres), input),
            Err(PolicyError::RenderMismatch)
        );
    }
}
