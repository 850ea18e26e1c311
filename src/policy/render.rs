//! What runs is what was checked: the checked tree is rendered to text, and that text must parse
//! back, with the same dialect, to exactly one statement equal to the checked one.
//!
//! sqlparser's rendering is not always faithful (a quote after a backslash is left undoubled, so
//! `SELECT '\'' ; DROP TABLE t; --'` renders into two statements on Postgres); such statements
//! are refused rather than sent.

use super::{PolicyError, RECURSION_LIMIT};
use sqlparser::ast::Statement;
use sqlparser::dialect::Dialect;
use sqlparser::parser::Parser;

pub fn render_verified(
    statement: &Statement,
    dialect: &dyn Dialect,
) -> Result<String, PolicyError> {
    let sql = statement.to_string();
    let reparsed = Parser::new(dialect)
        .with_recursion_limit(RECURSION_LIMIT)
        .try_with_sql(&sql)
        .and_then(|mut p| p.parse_statements())
        .map_err(|_| PolicyError::RenderMismatch)?;
    match reparsed.as_slice() {
        [again] if again == statement => Ok(sql),
        _ => Err(PolicyError::RenderMismatch),
    }
}
