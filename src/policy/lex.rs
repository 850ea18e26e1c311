//! Checks made on the token stream, where comments and quoting are still visible.
//!
//! The tokenizer of the target's dialect decides what is a string, an identifier or a comment, so
//! text inside a string literal never trips these checks. The tokens are then handed to the
//! parser as they are, so the statement checked is the one these tokens make.

use super::PolicyError;
use crate::model::DatasourceKind;
use sqlparser::dialect::Dialect;
use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer, Whitespace};

/// Tokens that can deepen the syntax tree without a matching recursion in the parser (infix
/// operators and keywords chain left-deep: `1+1+1…`, `a OR b OR c…`, `x::t::t…`). Capping them
/// bounds the depth of every tree the parser can build, whatever the configured SQL length.
pub const MAX_OPERATOR_TOKENS: usize = 10_000;

/// Tokenizes `sql` with `dialect` and refuses what must never reach the parser. On PostgreSQL
/// the relation keyword `ONLY` is taken out (see `only`); the returned locations are where the
/// names it stood before start.
pub fn scan(
    sql: &str,
    kind: DatasourceKind,
    dialect: &dyn Dialect,
) -> Result<(Vec<TokenWithSpan>, Vec<Location>), PolicyError> {
    let tokens = Tokenizer::new(dialect, sql)
        .tokenize_with_location()
        .map_err(|e| PolicyError::Parse(e.to_string()))?;
    let mut offsets = LineOffsets::new(sql);
    let mut operators = 0usize;
    for t in &tokens {
        // MySqlDialect replaces `/*! … */` by the tokens inside it, each placed at the comment's
        // start: a token whose source text begins with `/*` came out of an executable comment.
        if kind == DatasourceKind::Mysql
            && !matches!(t.token, Token::Whitespace(Whitespace::MultiLineComment(_)))
            && offsets
                .slice_from(t.span.start)
                .is_some_and(|rest| rest.starts_with("/*"))
        {
            return Err(executable_comment());
        }
        match &t.token {
            Token::Whitespace(Whitespace::MultiLineComment(body)) => check_block_comment(body)?,
            Token::Whitespace(Whitespace::SingleLineComment { comment, .. }) => {
                if comment.starts_with('+') {
                    return Err(hint());
                }
                // MySQL ends `--` comments only before an ASCII space or control character;
                // sqlparser accepts any Unicode space. Refuse where the two could disagree.
                if kind == DatasourceKind::Mysql
                    && comment
                        .chars()
                        .next()
                        .is_some_and(|c| !c.is_ascii() && c.is_whitespace())
                {
                    return Err(PolicyError::Parse(
                        "a -- comment followed by a non-ASCII space is ambiguous".into(),
                    ));
                }
            }
            Token::Whitespace(_) => {}
            Token::Word(w) => {
                if w.quote_style.is_some() && w.value.contains('\\') {
                    return Err(PolicyError::StatementNotAllowed(format!(
                        "identifier {:?} is not allowed: identifiers may not contain a backslash",
                        w.value
                    )));
                }
                if kind != DatasourceKind::Postgres
                    && w.quote_style.is_none()
                    && w.value.starts_with('@')
                {
                    return Err(variable(&w.value));
                }
                if w.keyword != Keyword::NoKeyword {
                    operators += 1;
                }
            }
            Token::AtSign if kind != DatasourceKind::Postgres => return Err(variable("@")),
            Token::Number(..)
            | Token::Char(_)
            | Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::NationalStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::HexStringLiteral(_)
            | Token::DollarQuotedString(_)
            | Token::Placeholder(_)
            | Token::Comma
            | Token::Period
            | Token::LParen
            | Token::RParen
            | Token::SemiColon
            | Token::EOF => {}
            _ => operators += 1,
        }
        if operators > MAX_OPERATOR_TOKENS {
            return Err(PolicyError::Parse(format!(
                "statement too complex: more than {MAX_OPERATOR_TOKENS} operators and keywords"
            )));
        }
    }
    let mut tokens = tokens;
    let only = if kind == DatasourceKind::Postgres {
        super::only::strip(&mut tokens)?
    } else {
        Vec::new()
    };
    Ok((tokens, only))
}

fn check_block_comment(body: &str) -> Result<(), PolicyError> {
    // `/*!…*/` and `/*!50000…*/` run on MySQL, `/*M!…*/` on MariaDB; `/*+…*/` is an optimizer
    // hint (MySQL can lift max_execution_time with one; pg_hint_plan reads the same form).
    if body.starts_with('!') || body.starts_with("M!") {
        return Err(executable_comment());
    }
    if body.starts_with('+') {
        return Err(hint());
    }
    Ok(())
}

fn executable_comment() -> PolicyError {
    PolicyError::StatementNotAllowed(
        "executable comments (/*! … */, /*M! … */) are not allowed".into(),
    )
}

fn hint() -> PolicyError {
    PolicyError::StatementNotAllowed("optimizer hints (/*+ … */) are not allowed".into())
}

fn variable(name: &str) -> PolicyError {
    PolicyError::StatementNotAllowed(format!(
        "variable {name} is not allowed: user and system variables (@a, @@a) are refused"
    ))
}

/// Maps the tokenizer's line/column locations (1-based, columns in characters) to byte offsets.
/// Token locations only move forward, so a cursor makes the whole scan linear.
struct LineOffsets<'a> {
    sql: &'a str,
    byte: usize,
    line: u64,
    column: u64,
}

impl<'a> LineOffsets<'a> {
    fn new(sql: &'a str) -> Self {
        LineOffsets {
            sql,
            byte: 0,
            line: 1,
            column: 1,
        }
    }

    fn slice_from(&mut self, loc: Location) -> Option<&'a str> {
        if (loc.line, loc.column) < (self.line, self.column) {
            // Not expected from the tokenizer; start over rather than answer wrongly.
            *self = LineOffsets::new(self.sql);
        }
        while (self.line, self.column) < (loc.line, loc.column) {
            let ch = self.sql[self.byte..].chars().next()?;
            if ch == '\n' {
                self.line += 1;
                self.column = 1;
            } else {
                self.column += 1;
            }
            self.byte += ch.len_utf8();
        }
        Some(&self.sql[self.byte..])
    }
}
