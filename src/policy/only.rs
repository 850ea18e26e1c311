//! PostgreSQL's `ONLY t`: the table without its inheritance children or partitions.
//!
//! sqlparser 0.63 does not know the keyword in FROM, UPDATE or DELETE: it reads `FROM ONLY t` as
//! a table named `ONLY` with the alias `t`, and `FROM ONLY (t)` as a call of a function `ONLY`.
//! So the keyword (and the parentheses of the second form) is taken out of the token stream
//! before parsing, and the start of the name it stood before is remembered. After the walk the
//! marked relation is printed with the keyword again ([`display_only`]); the render check parses
//! that text the same way, so what is sent is still exactly what was checked.

use sqlparser::ast::{Ident, ObjectName, ObjectNamePart, Statement, Visit, Visitor};
use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::{Location, Token, TokenWithSpan};
use std::collections::HashSet;
use std::ops::ControlFlow;

use super::PolicyError;

fn bad() -> PolicyError {
    PolicyError::Parse("ONLY must stand before a table name".into())
}

fn is_word(t: &Token) -> bool {
    matches!(t, Token::Word(_))
}

/// Removes every relation `ONLY` from PostgreSQL tokens; returns where the names it marked start.
/// `ONLY` after `ROW`/`ROWS` (`FETCH FIRST n ROWS ONLY`) is left alone.
pub fn strip(tokens: &mut Vec<TokenWithSpan>) -> Result<Vec<Location>, PolicyError> {
    let mut marks = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let is_only = matches!(&tokens[i].token,
            Token::Word(w) if w.quote_style.is_none() && w.keyword == Keyword::ONLY);
        if !is_only {
            i += 1;
            continue;
        }
        let prev = tokens[..i]
            .iter()
            .rev()
            .find(|t| !matches!(t.token, Token::Whitespace(_)));
        if matches!(prev.map(|t| &t.token),
            Some(Token::Word(w)) if matches!(w.keyword, Keyword::ROW | Keyword::ROWS))
        {
            i += 1;
            continue;
        }
        let next = next_significant(tokens, i + 1).ok_or_else(bad)?;
        if matches!(tokens[next].token, Token::LParen) {
            // ONLY ( name [. name] ): drop the parentheses too.
            let mut j = next_significant(tokens, next + 1).ok_or_else(bad)?;
            let start = j;
            loop {
                if !is_word(&tokens[j].token) {
                    return Err(bad());
                }
                let after = next_significant(tokens, j + 1).ok_or_else(bad)?;
                match tokens[after].token {
                    Token::Period => j = next_significant(tokens, after + 1).ok_or_else(bad)?,
                    Token::RParen => {
                        marks.push(tokens[start].span.start);
                        tokens.remove(after);
                        tokens.remove(next);
                        break;
                    }
                    _ => return Err(bad()),
                }
            }
        } else if is_word(&tokens[next].token) {
            marks.push(tokens[next].span.start);
        } else {
            return Err(bad());
        }
        tokens.remove(i);
    }
    Ok(marks)
}

fn next_significant(tokens: &[TokenWithSpan], from: usize) -> Option<usize> {
    (from..tokens.len()).find(|&k| !matches!(tokens[k].token, Token::Whitespace(_) | Token::EOF))
}

/// The relations of `statement` whose name starts at one of `marks`. Every mark must be the
/// start of a relation: `ONLY` anywhere else is refused.
pub fn marked(
    statement: &Statement,
    marks: &[Location],
) -> Result<HashSet<*const ObjectName>, PolicyError> {
    if marks.is_empty() {
        return Ok(HashSet::new());
    }
    struct Find<'a> {
        marks: &'a [Location],
        found: HashSet<*const ObjectName>,
        hit: Vec<bool>,
    }
    impl Visitor for Find<'_> {
        type Break = ();
        fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
            let start = relation
                .0
                .first()
                .and_then(ObjectNamePart::as_ident)
                .map(|i| i.span.start);
            if let Some(pos) = start.and_then(|s| self.marks.iter().position(|m| *m == s)) {
                self.hit[pos] = true;
                self.found.insert(relation as *const ObjectName);
            }
            ControlFlow::Continue(())
        }
    }
    let mut find = Find {
        marks,
        found: HashSet::new(),
        hit: vec![false; marks.len()],
    };
    let _ = statement.visit(&mut find);
    if find.hit.iter().all(|h| *h) {
        Ok(find.found)
    } else {
        Err(bad())
    }
}

/// Makes `name` print as `ONLY name`: its first part becomes an unquoted word holding the
/// keyword and the part as printed. Only ever done to the tree about to be rendered (and to the
/// re-parsed tree it is compared with).
pub fn display_only(name: &mut ObjectName) {
    if let Some(first) = name.0.first_mut()
        && let Some(ident) = first.as_ident()
    {
        let printed = format!("ONLY {ident}");
        *first = ObjectNamePart::Identifier(Ident::new(printed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::tokenizer::Tokenizer;

    fn stripped(sql: &str) -> Result<(String, usize), PolicyError> {
        let mut tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
            .tokenize_with_location()
            .unwrap();
        let marks = strip(&mut tokens)?;
        let text: String = tokens.iter().map(|t| t.token.to_string()).collect();
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        Ok((text, marks.len()))
    }

    #[test]
    fn only_is_taken_out_before_a_name_and_its_parentheses_with_it() {
        assert_eq!(
            stripped("SELECT * FROM ONLY lib.t").unwrap(),
            ("SELECT * FROM lib.t".into(), 1)
        );
        assert_eq!(
            stripped("SELECT * FROM ONLY (lib.t) x").unwrap(),
            ("SELECT * FROM lib.t x".into(), 1)
        );
        assert_eq!(
            stripped("UPDATE only t SET a = 1").unwrap(),
            ("UPDATE t SET a = 1".into(), 1)
        );
        // FETCH … ROWS ONLY is another ONLY.
        assert_eq!(
            stripped("SELECT 1 FETCH FIRST 1 ROWS ONLY").unwrap(),
            ("SELECT 1 FETCH FIRST 1 ROWS ONLY".into(), 0)
        );
        // Quoted, it is a name.
        assert_eq!(
            stripped("SELECT * FROM \"ONLY\" t").unwrap(),
            ("SELECT * FROM \"ONLY\" t".into(), 0)
        );
        for sql in [
            "SELECT ONLY",
            "SELECT * FROM ONLY (1)",
            "SELECT * FROM ONLY (t",
            "SELECT 1 ONLY",
        ] {
            assert!(stripped(sql).is_err(), "{sql}");
        }
    }
}
