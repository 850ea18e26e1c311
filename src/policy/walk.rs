//! The walk over one parsed statement: its class, and every table, function, operator and
//! placeholder it holds, wherever it sits.
//!
//! sqlparser's derived visitor reaches every node, so a table or function inside a CTE, a
//! subquery in any clause, a function argument, a set operation or a VALUES row cannot hide.
//! The visitor only adds the scoping of CTE names, which it does not know about.

use super::names::{check_table, idents, normalise_ident, resolve_table};
use super::{PolicyError, StatementClass, functions};
use crate::model::{Access, DatasourceKind, ScopePolicy};
use sqlparser::ast::{
    BinaryOperator, Expr, ObjectName, Query, Select, SetExpr, Statement, TableFactor,
    UnaryOperator, Value, ValueWithSpan, Visit, Visitor,
};
use std::collections::BTreeSet;
use std::ops::ControlFlow;

/// Expressions and queries nested deeper than this are refused before anything recurses over the
/// whole tree (the derived `PartialEq` used by the render check needs kilobytes of stack per level).
pub const MAX_NESTING: usize = 1_000;
/// SELECTs per statement; a long UNION chain nests as deep as it is long.
pub const MAX_SELECTS: usize = 1_000;

/// What the walk learned about an accepted statement.
#[derive(Debug)]
pub struct Facts {
    pub class: StatementClass,
    pub tables: Vec<String>,
    pub functions: Vec<String>,
    /// Some call is to a function outside the built-in list.
    pub calls_user_functions: bool,
    pub param_count: usize,
}

pub fn inspect(
    statement: &Statement,
    kind: DatasourceKind,
    default_schema: &str,
    scope: &ScopePolicy,
) -> Result<Facts, PolicyError> {
    let mut walker = Walker {
        kind,
        default_schema,
        scope,
        class: None,
        nesting: 0,
        selects: 0,
        frames: Vec::new(),
        table_functions: Vec::new(),
        tables: Vec::new(),
        functions: Vec::new(),
        calls_user_functions: false,
        positional: 0,
        numbered: BTreeSet::new(),
    };
    if let ControlFlow::Break(e) = statement.visit(&mut walker) {
        return Err(e);
    }
    let param_count = match kind {
        DatasourceKind::Postgres => {
            // $n are bound by position: a gap leaves a parameter whose type the server cannot
            // infer, so require $1..$n.
            let n = walker.numbered.len();
            if walker.numbered.iter().copied().ne(1..=n as u64) {
                return Err(PolicyError::Parse(
                    "placeholders must be numbered $1..$n without gaps".into(),
                ));
            }
            n
        }
        DatasourceKind::Mysql | DatasourceKind::Sqlite => walker.positional,
    };
    let class = walker
        .class
        .ok_or_else(|| PolicyError::Parse("no statement".into()))?;
    Ok(Facts {
        class,
        tables: walker.tables,
        functions: walker.functions,
        calls_user_functions: walker.calls_user_functions,
        param_count,
    })
}

/// The CTE names one WITH clause introduces, and which of its bodies is being walked.
struct CteFrame {
    owner: *const Query,
    names: Vec<String>,
    bodies: Vec<*const Query>,
    recursive: bool,
    /// While CTE body `i` is walked, only the names before it (and itself when RECURSIVE) are
    /// CTEs; a later or own name there is the real table.
    active: Option<usize>,
}

impl CteFrame {
    fn visible(&self, name: &str) -> bool {
        let upto = match self.active {
            None => self.names.len(),
            Some(i) if self.recursive => i + 1,
            Some(i) => i,
        };
        self.names[..upto].iter().any(|n| n == name)
    }
}

struct Walker<'a> {
    kind: DatasourceKind,
    default_schema: &'a str,
    scope: &'a ScopePolicy,
    class: Option<StatementClass>,
    nesting: usize,
    selects: usize,
    frames: Vec<CteFrame>,
    /// Names in FROM that are table functions, not tables (`generate_series(…)`).
    table_functions: Vec<*const ObjectName>,
    tables: Vec<String>,
    functions: Vec<String>,
    calls_user_functions: bool,
    positional: usize,
    numbered: BTreeSet<u64>,
}

fn not_allowed(what: impl std::fmt::Display) -> ControlFlow<PolicyError> {
    ControlFlow::Break(PolicyError::StatementNotAllowed(format!(
        "{what} is not allowed"
    )))
}

impl Walker<'_> {
    fn deeper(&mut self) -> ControlFlow<PolicyError> {
        self.nesting += 1;
        if self.nesting > MAX_NESTING {
            return ControlFlow::Break(PolicyError::Parse(format!(
                "statement too deeply nested (more than {MAX_NESTING} levels)"
            )));
        }
        ControlFlow::Continue(())
    }

    fn classify(&mut self, statement: &Statement) -> ControlFlow<PolicyError> {
        let read_write = self.scope.access == Access::ReadWrite;
        let (class, verb) = match statement {
            Statement::Query(_) => {
                self.class = Some(StatementClass::Query);
                return ControlFlow::Continue(());
            }
            Statement::Insert(insert) => {
                if insert.replace_into {
                    return not_allowed("REPLACE");
                }
                if insert.or.is_some() {
                    return not_allowed("INSERT OR …");
                }
                if insert.overwrite
                    || insert.partitioned.is_some()
                    || insert.output.is_some()
                    || insert.settings.is_some()
                    || insert.format_clause.is_some()
                    || insert.multi_table_insert_type.is_some()
                    || !insert.multi_table_into_clauses.is_empty()
                    || !insert.multi_table_when_clauses.is_empty()
                    || matches!(insert.table, sqlparser::ast::TableObject::TableFunction(_))
                {
                    return not_allowed("this form of INSERT");
                }
                if !insert.optimizer_hints.is_empty() {
                    return not_allowed("an optimizer hint");
                }
                (StatementClass::Insert, "INSERT")
            }
            Statement::Update(update) => {
                if update.or.is_some() {
                    return not_allowed("UPDATE OR …");
                }
                if update.output.is_some() {
                    return not_allowed("this form of UPDATE");
                }
                if !update.optimizer_hints.is_empty() {
                    return not_allowed("an optimizer hint");
                }
                (StatementClass::Update, "UPDATE")
            }
            Statement::Delete(delete) => {
                if delete.output.is_some() {
                    return not_allowed("this form of DELETE");
                }
                if !delete.optimizer_hints.is_empty() {
                    return not_allowed("an optimizer hint");
                }
                // MySQL's `DELETE t1, t2 FROM …` names its targets outside FROM: check them too
                // (an alias checked as a table can only over-refuse).
                for name in &delete.tables {
                    self.table(name)?;
                }
                (StatementClass::Delete, "DELETE")
            }
            other => return not_allowed(statement_keyword(other)),
        };
        if !read_write {
            return ControlFlow::Break(PolicyError::StatementNotAllowed(format!(
                "{verb} is not allowed on a read-only datasource"
            )));
        }
        self.class = Some(class);
        ControlFlow::Continue(())
    }

    fn cte_shadows(&self, name: &ObjectName) -> bool {
        let Some(parts) = idents(name) else {
            return false;
        };
        let [single] = parts.as_slice() else {
            return false;
        };
        // Compared exactly after the dialect's folding: where the server ignores case a
        // differently-cased reference is then checked as a table, which can only over-refuse.
        let normalised = normalise_ident(self.kind, single);
        self.frames.iter().rev().any(|f| f.visible(&normalised))
    }

    fn table(&mut self, name: &ObjectName) -> ControlFlow<PolicyError> {
        let resolved = match resolve_table(self.kind, self.default_schema, name) {
            Ok(t) => t,
            Err(e) => return ControlFlow::Break(e),
        };
        if let Err(e) = check_table(self.kind, self.default_schema, self.scope, &resolved) {
            return ControlFlow::Break(e);
        }
        let q = resolved.qualified();
        if !self.tables.contains(&q) {
            self.tables.push(q);
        }
        ControlFlow::Continue(())
    }

    fn function(&mut self, name: &ObjectName) -> ControlFlow<PolicyError> {
        let refused = |what: String| {
            ControlFlow::Break(PolicyError::FunctionNotAllowed(format!(
                "function {what} is not allowed"
            )))
        };
        let Some(parts) = idents(name) else {
            return refused(name.to_string());
        };
        let (qualifier, last) = match parts.as_slice() {
            [last] => (None, *last),
            [schema, last] => (Some(normalise_ident(self.kind, schema)), *last),
            _ => return refused(name.to_string()),
        };
        let base = match self.kind {
            DatasourceKind::Postgres => normalise_ident(self.kind, last),
            // MySQL and SQLite function names ignore case, quoted or not.
            DatasourceKind::Mysql | DatasourceKind::Sqlite => last.value.to_ascii_lowercase(),
        };
        if let Some(schema) = &qualifier {
            let ok = match self.kind {
                DatasourceKind::Postgres => schema == "pg_catalog" || schema == self.default_schema,
                DatasourceKind::Mysql => schema == self.default_schema,
                DatasourceKind::Sqlite => false,
            };
            if !ok {
                return refused(format!("{schema}.{base}"));
            }
        }
        let extra = self.scope.extra_functions.iter().any(|f| {
            let f = f.rsplit('.').next().unwrap_or(f).trim();
            match self.kind {
                DatasourceKind::Postgres => f == base,
                DatasourceKind::Mysql | DatasourceKind::Sqlite => f.eq_ignore_ascii_case(&base),
            }
        });
        // A built-in is reached by its bare name (or through `pg_catalog`). Qualified with the
        // datasource's own schema, a built-in's name calls a user-defined function of that name
        // instead (MySQL, and PostgreSQL when one exists there), which only the extra list admits.
        let builtin = functions::is_builtin(self.kind, &base)
            && qualifier
                .as_deref()
                .is_none_or(|q| self.kind == DatasourceKind::Postgres && q == "pg_catalog");
        if !builtin && !extra {
            return refused(match &qualifier {
                Some(q) => format!("{q}.{base}"),
                None => base,
            });
        }
        self.calls_user_functions |= !builtin;
        // Recorded so that a user-defined function never passes for the built-in it shadows.
        let recorded = match qualifier {
            Some(q) if !builtin => format!("{q}.{base}"),
            _ => base,
        };
        if !self.functions.contains(&recorded) {
            self.functions.push(recorded);
        }
        ControlFlow::Continue(())
    }

    fn binary_operator(&self, op: &BinaryOperator) -> ControlFlow<PolicyError> {
        use BinaryOperator as B;
        let ok = match op {
            B::Plus
            | B::Minus
            | B::Multiply
            | B::Divide
            | B::Modulo
            | B::Gt
            | B::Lt
            | B::GtEq
            | B::LtEq
            | B::Eq
            | B::NotEq
            | B::And
            | B::Or
            | B::BitwiseOr
            | B::BitwiseAnd
            | B::BitwiseXor
            | B::PGBitwiseShiftLeft
            | B::PGBitwiseShiftRight
            | B::Overlaps => true,
            // MySQL reads `||` as OR unless sql_mode has PIPES_AS_CONCAT, but sqlparser's MySQL
            // dialect parses it as concatenation: refuse rather than check a different tree.
            B::StringConcat => self.kind != DatasourceKind::Mysql,
            B::Spaceship | B::Xor | B::MyIntegerDivide | B::Regexp => {
                self.kind == DatasourceKind::Mysql
            }
            B::Glob | B::Match => self.kind == DatasourceKind::Sqlite,
            B::PGBitwiseXor
            | B::PGExp
            | B::PGOverlap
            | B::PGRegexMatch
            | B::PGRegexIMatch
            | B::PGRegexNotMatch
            | B::PGRegexNotIMatch
            | B::PGLikeMatch
            | B::PGILikeMatch
            | B::PGNotLikeMatch
            | B::PGNotILikeMatch
            | B::PGStartsWith
            | B::HashArrow
            | B::HashLongArrow
            | B::AtAt
            | B::AtArrow
            | B::ArrowAt
            | B::HashMinus
            | B::AtQuestion
            | B::Question
            | B::QuestionAnd
            | B::QuestionPipe => self.kind == DatasourceKind::Postgres,
            // JSON extraction: Postgres, MySQL and SQLite all have -> and ->>.
            B::Arrow | B::LongArrow => true,
            _ => false,
        };
        if ok {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(PolicyError::FunctionNotAllowed(format!(
                "operator {op} is not allowed"
            )))
        }
    }

    fn unary_operator(&self, op: &UnaryOperator) -> ControlFlow<PolicyError> {
        use UnaryOperator as U;
        let ok = match op {
            U::Plus | U::Minus | U::Not | U::BitwiseNot => true,
            U::BangNot => self.kind == DatasourceKind::Mysql,
            U::PGSquareRoot
            | U::PGCubeRoot
            | U::PGPostfixFactorial
            | U::PGPrefixFactorial
            | U::PGAbs => self.kind == DatasourceKind::Postgres,
            _ => false,
        };
        if ok {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(PolicyError::FunctionNotAllowed(format!(
                "operator {op} is not allowed"
            )))
        }
    }

    fn placeholder(&mut self, text: &str) -> ControlFlow<PolicyError> {
        let bad = || {
            ControlFlow::Break(PolicyError::Parse(format!(
                "placeholder {text} is not supported: use {}",
                match self.kind {
                    DatasourceKind::Postgres => "$1, $2, …",
                    DatasourceKind::Mysql | DatasourceKind::Sqlite => "?",
                }
            )))
        };
        match self.kind {
            DatasourceKind::Postgres => {
                let Some(digits) = text.strip_prefix('$') else {
                    return bad();
                };
                match digits.parse::<u64>() {
                    Ok(n) if n >= 1 && digits.bytes().all(|b| b.is_ascii_digit()) => {
                        self.numbered.insert(n);
                        ControlFlow::Continue(())
                    }
                    _ => bad(),
                }
            }
            DatasourceKind::Mysql | DatasourceKind::Sqlite => {
                if text == "?" {
                    self.positional += 1;
                    ControlFlow::Continue(())
                } else {
                    bad()
                }
            }
        }
    }
}

/// The statement's leading keywords, for the refusal message (`DROP TABLE is not allowed`).
fn statement_keyword(statement: &Statement) -> String {
    let text = statement.to_string();
    let words: Vec<&str> = text
        .split_whitespace()
        .take(2)
        .filter(|w| w.chars().all(|c| c.is_ascii_alphabetic() || c == '_'))
        .filter(|w| w.chars().all(|c| !c.is_ascii_lowercase()))
        .collect();
    if words.is_empty() {
        "this statement".into()
    } else {
        words.join(" ")
    }
}

/// Whether an unquoted name is a function the server calls without parentheses (SQL's niladic
/// keyword functions) but sqlparser parses as a column in this dialect: `current_role` and
/// `current_schema` on Postgres (sqlparser only knows `current_user`, `session_user`, `user`
/// and `current_catalog` there), `current_user` and `current_role` on MySQL/MariaDB, where they
/// are reserved words and so never columns. They go through the function list like any call;
/// none of them is on it (identity and server information).
fn is_bare_keyword_function(kind: DatasourceKind, ident: &sqlparser::ast::Ident) -> bool {
    if ident.quote_style.is_some() {
        return false;
    }
    let name = ident.value.to_ascii_lowercase();
    match kind {
        DatasourceKind::Postgres => {
            matches!(
                name.as_str(),
                "current_role" | "current_schema" | "system_user"
            )
        }
        DatasourceKind::Mysql => matches!(name.as_str(), "current_user" | "current_role"),
        DatasourceKind::Sqlite => false,
    }
}

/// At most 60 characters of `text`, for messages.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

/// The SELECTs and `TABLE t` forms directly in a query body (nested queries are visited on
/// their own).
fn check_set_expr(body: &SetExpr) -> ControlFlow<PolicyError> {
    match body {
        SetExpr::SetOperation { left, right, .. } => {
            check_set_expr(left)?;
            check_set_expr(right)
        }
        SetExpr::Table(_) => not_allowed("the TABLE t shorthand (write SELECT * FROM t)"),
        _ => ControlFlow::Continue(()),
    }
}

impl Visitor for Walker<'_> {
    type Break = PolicyError;

    fn pre_visit_statement(&mut self, statement: &Statement) -> ControlFlow<PolicyError> {
        if self.class.is_some() {
            // A statement inside the statement: WITH d AS (DELETE …), (INSERT … RETURNING) …
            return ControlFlow::Break(PolicyError::StatementNotAllowed(format!(
                "{} inside a query (data-modifying CTE or subquery) is not allowed",
                statement_keyword(statement)
            )));
        }
        self.classify(statement)
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<PolicyError> {
        self.deeper()?;
        if let Some(lock) = query.locks.first() {
            return not_allowed(format!("locking clause {lock}"));
        }
        if query.for_clause.is_some()
            || query.settings.is_some()
            || query.format_clause.is_some()
            || !query.pipe_operators.is_empty()
        {
            return not_allowed("this query clause");
        }
        check_set_expr(&query.body)?;
        let ptr: *const Query = query;
        if let Some(frame) = self.frames.last_mut()
            && let Some(i) = frame.bodies.iter().position(|b| *b == ptr)
        {
            frame.active = Some(i);
        }
        if let Some(with) = &query.with {
            self.frames.push(CteFrame {
                owner: ptr,
                names: with
                    .cte_tables
                    .iter()
                    .map(|c| normalise_ident(self.kind, &c.alias.name))
                    .collect(),
                bodies: with
                    .cte_tables
                    .iter()
                    .map(|c| &*c.query as *const Query)
                    .collect(),
                recursive: with.recursive,
                active: None,
            });
        }
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, query: &Query) -> ControlFlow<PolicyError> {
        self.nesting = self.nesting.saturating_sub(1);
        let ptr: *const Query = query;
        if self.frames.last().is_some_and(|f| f.owner == ptr) {
            self.frames.pop();
        }
        if let Some(frame) = self.frames.last_mut()
            && frame.active.is_some_and(|i| frame.bodies[i] == ptr)
        {
            frame.active = None;
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, select: &Select) -> ControlFlow<PolicyError> {
        self.selects += 1;
        if self.selects > MAX_SELECTS {
            return ControlFlow::Break(PolicyError::Parse(format!(
                "statement too complex (more than {MAX_SELECTS} SELECTs)"
            )));
        }
        if select.into.is_some() {
            return not_allowed("SELECT … INTO");
        }
        if !select.optimizer_hints.is_empty() {
            return not_allowed("an optimizer hint");
        }
        if !select.lateral_views.is_empty() || !select.connect_by.is_empty() {
            return not_allowed("this SELECT clause");
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<PolicyError> {
        let ptr: *const ObjectName = relation;
        if self.table_functions.contains(&ptr) || self.cte_shadows(relation) {
            return ControlFlow::Continue(());
        }
        self.table(relation)
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<PolicyError> {
        match factor {
            TableFactor::Table {
                name,
                args,
                with_hints,
                json_path,
                ..
            } => {
                if !with_hints.is_empty() || json_path.is_some() {
                    return not_allowed(format!("this form of table reference {name}"));
                }
                if args.is_some() {
                    self.table_functions.push(name);
                    self.function(name)?;
                }
                ControlFlow::Continue(())
            }
            TableFactor::Derived { .. } | TableFactor::NestedJoin { .. } => {
                ControlFlow::Continue(())
            }
            TableFactor::Function { name, .. } => self.function(name),
            TableFactor::TableFunction { .. } => ControlFlow::Continue(()),
            TableFactor::UNNEST { .. } => self.function(&ObjectName::from(vec!["unnest".into()])),
            TableFactor::JsonTable { .. } => {
                self.function(&ObjectName::from(vec!["json_table".into()]))
            }
            _ => not_allowed("this FROM item"),
        }
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<PolicyError> {
        self.deeper()?;
        match expr {
            Expr::Function(f) => self.function(&f.name),
            // The server calls a function here; the parser read a column name.
            Expr::Identifier(ident) if is_bare_keyword_function(self.kind, ident) => {
                self.function(&ObjectName::from(vec![ident.clone()]))
            }
            Expr::BinaryOp { op, .. } => self.binary_operator(op),
            Expr::AnyOp { compare_op, .. } | Expr::AllOp { compare_op, .. } => {
                self.binary_operator(compare_op)
            }
            Expr::UnaryOp { op, .. } => self.unary_operator(op),
            Expr::Identifier(ident) if self.kind != DatasourceKind::Postgres => {
                if ident.quote_style.is_none() && ident.value.starts_with('@') {
                    not_allowed(format!("variable {}", ident.value))
                } else {
                    ControlFlow::Continue(())
                }
            }
            Expr::Identifier(_)
            | Expr::CompoundIdentifier(_)
            | Expr::CompoundFieldAccess { .. }
            | Expr::JsonAccess { .. }
            | Expr::IsFalse(_)
            | Expr::IsNotFalse(_)
            | Expr::IsTrue(_)
            | Expr::IsNotTrue(_)
            | Expr::IsNull(_)
            | Expr::IsNotNull(_)
            | Expr::IsUnknown(_)
            | Expr::IsNotUnknown(_)
            | Expr::IsDistinctFrom(..)
            | Expr::IsNotDistinctFrom(..)
            | Expr::IsNormalized { .. }
            | Expr::InList { .. }
            | Expr::InSubquery { .. }
            | Expr::Between { .. }
            | Expr::Like { .. }
            | Expr::ILike { .. }
            | Expr::SimilarTo { .. }
            | Expr::RLike { .. }
            | Expr::Convert { .. }
            | Expr::Cast { .. }
            | Expr::AtTimeZone { .. }
            | Expr::Extract { .. }
            | Expr::Ceil { .. }
            | Expr::Floor { .. }
            | Expr::Position { .. }
            | Expr::Substring { .. }
            | Expr::Trim { .. }
            | Expr::Overlay { .. }
            | Expr::Collate { .. }
            | Expr::Nested(_)
            | Expr::Value(_)
            | Expr::Prefixed { .. }
            | Expr::TypedString(_)
            | Expr::Case { .. }
            | Expr::Exists { .. }
            | Expr::Subquery(_)
            | Expr::GroupingSets(_)
            | Expr::Cube(_)
            | Expr::Rollup(_)
            | Expr::Tuple(_)
            | Expr::Array(_)
            | Expr::Interval(_)
            | Expr::MatchAgainst { .. }
            | Expr::Wildcard(_)
            | Expr::QualifiedWildcard(..)
            | Expr::MemberOf(_) => ControlFlow::Continue(()),
            _ => not_allowed(format!("expression {}", shorten(&expr.to_string()))),
        }
    }

    fn post_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<PolicyError> {
        self.nesting = self.nesting.saturating_sub(1);
        ControlFlow::Continue(())
    }

    fn pre_visit_value(&mut self, value: &ValueWithSpan) -> ControlFlow<PolicyError> {
        if let Value::Placeholder(text) = &value.value {
            return self.placeholder(text);
        }
        ControlFlow::Continue(())
    }
}
