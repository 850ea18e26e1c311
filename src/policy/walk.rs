//! The walk over one parsed statement: its class, and every table, function, operator, type and
//! placeholder it holds, wherever it sits.
//!
//! sqlparser's derived visitor reaches every node, so a table or function inside a CTE, a
//! subquery in any clause, a function argument, a set operation or a VALUES row cannot hide.
//! The visitor only adds the scoping of CTE names, which it does not know about.
//!
//! Names are resolved against the server's [`Catalog`], never guessed: an unqualified relation
//! is a `pg_catalog` relation when the server has one of that name and otherwise one of the
//! default schema; a built-in function counts only when this server provides it. The walk also
//! notes what the renderer must make explicit (`qualify`: every relation fully qualified, every
//! user function with its schema), so no name is left for the server's search path to decide.

use super::catalog::{Catalog, ObjectKind};
use super::names::{TableRef, check_table, idents, normalise_ident, resolve_table};
use super::{PolicyError, StatementClass, functions};
use crate::model::{Access, DatasourceKind, ScopePolicy};
use sqlparser::ast::{
    BinaryOperator, DataType, Expr, FromTable, Ident, ObjectName, Query, Select, SetExpr,
    Statement, TableFactor, TableObject, TableWithJoins, UnaryOperator, UpdateTableFromKind, Value,
    ValueWithSpan, Visit, Visitor,
};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::ops::ControlFlow;

/// Expressions and queries nested deeper than this are refused before anything recurses over the
/// whole tree (the derived `PartialEq` used by the render check needs kilobytes of stack per level).
/// A chain of one associative operator (`a OR b OR c …`, which BI tools write by the thousand)
/// counts as one level: the token cap in `lex` bounds how long it can be.
pub const MAX_NESTING: usize = 1_000;
/// SELECTs per statement; a long UNION chain nests as deep as it is long.
pub const MAX_SELECTS: usize = 1_000;

/// One relation the statement names, as the server resolves it.
#[derive(Debug, Clone)]
pub struct Reference {
    pub table: TableRef,
    /// The statement writes it (INSERT, UPDATE or DELETE target).
    pub write: bool,
    /// Written `ONLY t`: without its inheritance children.
    pub only: bool,
    /// The name that stands for its rows in expressions (the alias, or the table's own name).
    pub exposed: String,
}

/// What the walk learned about an accepted statement.
#[derive(Debug)]
pub struct Facts {
    pub class: StatementClass,
    pub tables: Vec<String>,
    pub functions: Vec<String>,
    /// Some call is to a function outside the built-in list.
    pub calls_user_functions: bool,
    pub param_count: usize,
    pub references: Vec<Reference>,
    /// Names to put in front of relations and function names before rendering, by node.
    pub qualify: HashMap<*const ObjectName, Ident>,
    /// Unqualified identifiers used as values (a column, or a whole-row reference).
    pub bare_identifiers: HashSet<String>,
    /// Every part of a compound identifier (`t.c`, `s.t.c`) used as a value.
    pub identifier_parts: HashSet<String>,
}

pub struct Walk<'a> {
    pub kind: DatasourceKind,
    pub default_schema: &'a str,
    pub scope: &'a ScopePolicy,
    pub catalog: &'a Catalog,
    /// Relations written `ONLY t`.
    pub only: &'a HashSet<*const ObjectName>,
}

pub fn inspect(statement: &Statement, walk: &Walk) -> Result<Facts, PolicyError> {
    let mut walker = Walker {
        w: walk,
        class: None,
        nesting: 0,
        selects: 0,
        frames: Vec::new(),
        table_functions: Vec::new(),
        write_targets: HashSet::new(),
        aliases: HashMap::new(),
        flat: HashSet::new(),
        tables: Vec::new(),
        functions: Vec::new(),
        calls_user_functions: false,
        positional: 0,
        numbered: BTreeSet::new(),
        references: Vec::new(),
        qualify: HashMap::new(),
        bare_identifiers: HashSet::new(),
        identifier_parts: HashSet::new(),
        operators: BTreeSet::new(),
    };
    if let ControlFlow::Break(e) = statement.visit(&mut walker) {
        return Err(e);
    }
    walker.check_operators()?;
    let param_count = match walk.kind {
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
        references: walker.references,
        qualify: walker.qualify,
        bare_identifiers: walker.bare_identifiers,
        identifier_parts: walker.identifier_parts,
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
    w: &'a Walk<'a>,
    class: Option<StatementClass>,
    nesting: usize,
    selects: usize,
    frames: Vec<CteFrame>,
    /// Names in FROM that are table functions, not tables (`generate_series(…)`).
    table_functions: Vec<*const ObjectName>,
    /// Relations the statement writes (INSERT, UPDATE and DELETE targets).
    write_targets: HashSet<*const ObjectName>,
    /// The alias each FROM item's name carries.
    aliases: HashMap<*const ObjectName, String>,
    /// Operands of an AND/OR chain that continue the chain: no deeper than their parent.
    flat: HashSet<*const Expr>,
    tables: Vec<String>,
    functions: Vec<String>,
    calls_user_functions: bool,
    positional: usize,
    numbered: BTreeSet<u64>,
    references: Vec<Reference>,
    qualify: HashMap<*const ObjectName, Ident>,
    bare_identifiers: HashSet<String>,
    identifier_parts: HashSet<String>,
    /// PostgreSQL operator names the statement makes the server look up by name.
    operators: BTreeSet<String>,
}

fn not_allowed(what: impl std::fmt::Display) -> ControlFlow<PolicyError> {
    ControlFlow::Break(PolicyError::StatementNotAllowed(format!(
        "{what} is not allowed"
    )))
}

fn function_refused(what: impl std::fmt::Display) -> ControlFlow<PolicyError> {
    ControlFlow::Break(PolicyError::FunctionNotAllowed(format!(
        "function {what} is not allowed"
    )))
}

/// The names of the plain tables in a FROM item (for the targets of UPDATE and DELETE).
fn table_names(twj: &TableWithJoins, out: &mut Vec<*const ObjectName>) {
    fn factor(f: &TableFactor, out: &mut Vec<*const ObjectName>) {
        match f {
            TableFactor::Table {
                name, args: None, ..
            } => out.push(name),
            TableFactor::NestedJoin {
                table_with_joins, ..
            } => table_names(table_with_joins, out),
            _ => {}
        }
    }
    factor(&twj.relation, out);
    for j in &twj.joins {
        factor(&j.relation, out);
    }
}

/// The aliases of the plain tables in a FROM item.
fn table_aliases(twj: &TableWithJoins, out: &mut Vec<Ident>) {
    fn factor(f: &TableFactor, out: &mut Vec<Ident>) {
        match f {
            TableFactor::Table { alias: Some(a), .. } => out.push(a.name.clone()),
            TableFactor::NestedJoin {
                table_with_joins, ..
            } => table_aliases(table_with_joins, out),
            _ => {}
        }
    }
    factor(&twj.relation, out);
    for j in &twj.joins {
        factor(&j.relation, out);
    }
}

/// The quoted identifier of a schema, as the renderer puts it in front of a name.
fn schema_ident(kind: DatasourceKind, schema: &str) -> Ident {
    match kind {
        DatasourceKind::Mysql => Ident::with_quote('`', schema),
        DatasourceKind::Postgres | DatasourceKind::Sqlite => Ident::with_quote('"', schema),
    }
}

/// PostgreSQL casts to these look objects up by name in the catalogue, tables the scope hides
/// included (`'other.hidden'::regclass`, `oid::regclass`).
const OBJECT_IDENTIFIER_TYPES: &[&str] = &[
    "regclass",
    "regcollation",
    "regconfig",
    "regdictionary",
    "regnamespace",
    "regoper",
    "regoperator",
    "regproc",
    "regprocedure",
    "regrole",
    "regtype",
];

/// The comparison operators the server looks up by name for syntax that shows none (`IN`,
/// `BETWEEN`, `CASE x WHEN`, `NULLIF`, `IS DISTINCT FROM`, `JOIN … USING`, `= ANY`).
const IMPLICIT_COMPARISONS: &[&str] = &["=", "<>", "<", ">", "<=", ">="];

impl Walker<'_> {
    fn kind(&self) -> DatasourceKind {
        self.w.kind
    }

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
        let read_write = self.w.scope.access == Access::ReadWrite;
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
                    || matches!(insert.table, TableObject::TableFunction(_))
                {
                    return not_allowed("this form of INSERT");
                }
                if !insert.optimizer_hints.is_empty() {
                    return not_allowed("an optimizer hint");
                }
                if let TableObject::TableName(name) = &insert.table {
                    self.write_targets.insert(name);
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
                if matches!(update.from, Some(UpdateTableFromKind::BeforeSet(_))) {
                    return not_allowed("this form of UPDATE");
                }
                // Every table of a multi-table UPDATE (MySQL) may be assigned to.
                let mut targets = Vec::new();
                table_names(&update.table, &mut targets);
                self.write_targets.extend(targets);
                (StatementClass::Update, "UPDATE")
            }
            Statement::Delete(delete) => {
                if delete.output.is_some() {
                    return not_allowed("this form of DELETE");
                }
                if !delete.optimizer_hints.is_empty() {
                    return not_allowed("an optimizer hint");
                }
                let from = match &delete.from {
                    FromTable::WithFromKeyword(f) | FromTable::WithoutKeyword(f) => f,
                };
                let mut targets = Vec::new();
                for twj in from {
                    table_names(twj, &mut targets);
                }
                self.write_targets.extend(targets);
                // MySQL's `DELETE t1, t2 FROM …` names its targets outside FROM: check them too.
                // With no default database the server resolves a target only by its qualified
                // table name, never by an alias: say so rather than send what cannot run.
                let aliased = |name: &ObjectName| {
                    let mut aliases = Vec::new();
                    for twj in from {
                        table_aliases(twj, &mut aliases);
                    }
                    idents(name).is_some_and(|parts| {
                        matches!(parts.as_slice(), [one] if aliases.iter().any(|a| a.value.eq_ignore_ascii_case(&one.value)))
                    })
                };
                for name in &delete.tables {
                    if aliased(name) {
                        return not_allowed(format!(
                            "an alias ({name}) as the target of a multi-table DELETE (name the \
                             table itself)"
                        ));
                    }
                    self.table(name, true)?;
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
        let normalised = normalise_ident(self.kind(), single);
        self.frames.iter().rev().any(|f| f.visible(&normalised))
    }

    /// One relation: resolved as the server resolves it, checked, remembered for the checks on
    /// what it reaches, and marked to be qualified when written without its schema.
    fn table(&mut self, name: &ObjectName, write: bool) -> ControlFlow<PolicyError> {
        let w = self.w;
        let resolved = match resolve_table(w.kind, w.default_schema, w.catalog, name) {
            Ok(t) => t,
            Err(e) => return ControlFlow::Break(e),
        };
        if let Err(e) = check_table(w.kind, w.default_schema, w.scope, &resolved) {
            return ControlFlow::Break(e);
        }
        let ptr: *const ObjectName = name;
        let single = name.0.len() == 1;
        if resolved.schema.is_empty() {
            // The account's search path names no schema it can use: the server would find no
            // table by this name either.
            return ControlFlow::Break(PolicyError::TableNotAllowed(format!(
                "table {} has no schema: the service account's search path names none it may \
                 use; write the schema, or set the datasource's policy.default_schema",
                resolved.table
            )));
        }
        if single && w.kind != DatasourceKind::Sqlite {
            self.qualify
                .insert(ptr, schema_ident(w.kind, &resolved.schema));
        }
        let exposed = self
            .aliases
            .get(&ptr)
            .cloned()
            .unwrap_or_else(|| resolved.table.clone());
        self.references.push(Reference {
            table: resolved.clone(),
            write,
            only: w.only.contains(&ptr),
            exposed,
        });
        let q = resolved.qualified();
        if !self.tables.contains(&q) {
            self.tables.push(q);
        }
        ControlFlow::Continue(())
    }

    /// The schema an admin-allowed user function lives in, if `extra_functions` admits this call.
    /// An unqualified entry means the default schema; a qualified call must match its schema.
    fn extra_function(&self, qualifier: Option<&str>, base: &str) -> Option<String> {
        let w = self.w;
        w.scope.extra_functions.iter().find_map(|entry| {
            let entry = entry.trim();
            let (schema, name) = match entry.rsplit_once('.') {
                Some((s, n)) => (Some(s), n),
                None => (None, entry),
            };
            let same_name = match w.kind {
                DatasourceKind::Postgres => name == base,
                DatasourceKind::Mysql | DatasourceKind::Sqlite => name.eq_ignore_ascii_case(base),
            };
            if !same_name {
                return None;
            }
            let schema = schema.unwrap_or(w.default_schema);
            match qualifier {
                None => Some(schema.to_owned()),
                Some(q) if q == schema => Some(q.to_owned()),
                Some(_) => None,
            }
        })
    }

    /// Whether `extra_functions` lists this name without a schema: the admin allowed the
    /// built-in of that name, if the server has one.
    fn extra_builtin(&self, base: &str) -> bool {
        self.w.scope.extra_functions.iter().any(|e| {
            let e = e.trim();
            !e.contains('.')
                && match self.w.kind {
                    DatasourceKind::Postgres => e == base,
                    _ => e.eq_ignore_ascii_case(base),
                }
        })
    }

    fn record_function(&mut self, recorded: String, user: bool) {
        self.calls_user_functions |= user;
        if !self.functions.contains(&recorded) {
            self.functions.push(recorded);
        }
    }

    fn function(&mut self, name: &ObjectName) -> ControlFlow<PolicyError> {
        let w = self.w;
        let Some(parts) = idents(name) else {
            return function_refused(name);
        };
        let (qualifier, last) = match parts.as_slice() {
            [last] => (None, *last),
            [schema, last] => (Some(normalise_ident(w.kind, schema)), *last),
            _ => return function_refused(name),
        };
        let base = match w.kind {
            DatasourceKind::Postgres => normalise_ident(w.kind, last),
            // MySQL and SQLite function names ignore case, quoted or not.
            DatasourceKind::Mysql | DatasourceKind::Sqlite => last.value.to_ascii_lowercase(),
        };
        let ptr: *const ObjectName = name;
        let shown = |q: &Option<String>| match q {
            Some(q) => format!("{q}.{base}"),
            None => base.clone(),
        };
        if w.kind == DatasourceKind::Sqlite && qualifier.is_some() {
            return function_refused(shown(&qualifier));
        }
        // 1. A built-in, by its bare name (or through pg_catalog), that this server provides.
        let builtin_call = match (&qualifier, w.kind) {
            (None, _) => true,
            (Some(q), DatasourceKind::Postgres) => q == "pg_catalog",
            _ => false,
        };
        if builtin_call {
            let on_list = functions::is_builtin(w.kind, &base);
            let listed = on_list
                || (self.extra_builtin(&base)
                    && functions::is_server_builtin(w.kind, w.catalog, &base));
            if listed {
                if !functions::server_has(w.kind, w.catalog, &base) {
                    return ControlFlow::Break(PolicyError::FunctionNotAllowed(format!(
                        "function {base} is not allowed: this server ({}) does not provide it",
                        short_version(&w.catalog.server_version)
                    )));
                }
                if let Some(schema) =
                    (qualifier.is_none()).then(|| self.planted(ObjectKind::Function, &base))
                    && let Some(schema) = schema
                {
                    return planted_refusal("function", &base, &schema);
                }
                // A built-in off the list, allowed by the admin, is as opaque to the policy as
                // a user function: `set_config` can leave any setting (a custom one an RLS
                // policy reads, say) in the session for the next caller.
                self.record_function(base, !on_list);
                return ControlFlow::Continue(());
            }
        }
        // 2. A function of an extension the datasource trusts (PostgreSQL).
        if w.kind == DatasourceKind::Postgres {
            let trusted = &w.scope.extensions;
            let from_extension =
                w.catalog
                    .from_trusted_extension(trusted, ObjectKind::Function, &base);
            let schema_ok = match &qualifier {
                None => true,
                Some(q) => w.catalog.trusted_schemas(trusted).contains(q),
            };
            if from_extension && schema_ok {
                if let Some(schema) = self.planted(ObjectKind::Function, &base) {
                    return planted_refusal("function", &base, &schema);
                }
                self.record_function(base, false);
                return ControlFlow::Continue(());
            }
        }
        // 3. A user function the admin allowed: always sent with its schema (SQLite has none:
        //    its extra functions are built-ins left off the list).
        if let Some(schema) = self.extra_function(qualifier.as_deref(), &base) {
            if w.kind == DatasourceKind::Sqlite {
                self.record_function(base, true);
                return ControlFlow::Continue(());
            }
            if qualifier.is_none() {
                self.qualify.insert(ptr, schema_ident(w.kind, &schema));
            }
            self.record_function(format!("{schema}.{base}"), true);
            return ControlFlow::Continue(());
        }
        function_refused(shown(&qualifier))
    }

    /// Where, on the session's search path, an object of this name exists that no trusted
    /// extension provides (PostgreSQL only).
    fn planted(&self, what: ObjectKind, name: &str) -> Option<String> {
        if self.kind() != DatasourceKind::Postgres {
            return None;
        }
        // An admin-allowed user function of that name may be what runs.
        if what == ObjectKind::Function && self.extra_function(None, name).is_some() {
            return None;
        }
        self.w
            .catalog
            .planted(&self.w.scope.extensions, what, name)
            .map(str::to_owned)
    }

    /// A data type named in a cast or a typed literal.
    fn data_type(&mut self, ty: &DataType) -> ControlFlow<PolicyError> {
        match ty {
            DataType::Regclass => reg_cast_refused("regclass"),
            DataType::Array(sqlparser::ast::ArrayElemTypeDef::AngleBracket(inner))
            | DataType::Array(sqlparser::ast::ArrayElemTypeDef::SquareBracket(inner, _))
            | DataType::Array(sqlparser::ast::ArrayElemTypeDef::Parenthesis(inner)) => {
                self.data_type(inner)
            }
            DataType::Custom(name, _) if self.kind() == DatasourceKind::Postgres => {
                self.custom_type(name)
            }
            _ => ControlFlow::Continue(()),
        }
    }

    /// A type name sqlparser does not know: a PostgreSQL built-in, an extension's, or a user
    /// type (whose input function or domain check is user code).
    fn custom_type(&mut self, name: &ObjectName) -> ControlFlow<PolicyError> {
        let w = self.w;
        let Some(parts) = idents(name) else {
            return not_allowed(format!("type {name}"));
        };
        let (qualifier, last) = match parts.as_slice() {
            [last] => (None, normalise_ident(w.kind, last)),
            [schema, last] => (
                Some(normalise_ident(w.kind, schema)),
                normalise_ident(w.kind, last),
            ),
            _ => return not_allowed(format!("type {name}")),
        };
        if OBJECT_IDENTIFIER_TYPES.contains(&last.as_str())
            && qualifier.as_deref().is_none_or(|q| q == "pg_catalog")
        {
            return reg_cast_refused(&last);
        }
        let trusted = &w.scope.extensions;
        match qualifier.as_deref() {
            None | Some("pg_catalog") => {
                if qualifier.is_none()
                    && let Some(schema) = self.planted(ObjectKind::Type, &last)
                {
                    return planted_refusal("type", &last, &schema);
                }
                ControlFlow::Continue(())
            }
            Some(q)
                if w.catalog.trusted_schemas(trusted).iter().any(|s| s == q)
                    && w.catalog
                        .from_trusted_extension(trusted, ObjectKind::Type, &last) =>
            {
                match self.planted(ObjectKind::Type, &last) {
                    Some(schema) => planted_refusal("type", &last, &schema),
                    None => ControlFlow::Continue(()),
                }
            }
            Some(q) => not_allowed(format!(
                "type {q}.{last} (a type outside pg_catalog and the trusted extensions can run \
                 user code)"
            )),
        }
    }

    fn binary_operator(&mut self, op: &BinaryOperator) -> ControlFlow<PolicyError> {
        use BinaryOperator as B;
        let kind = self.kind();
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
            B::StringConcat => kind != DatasourceKind::Mysql,
            B::Spaceship | B::Xor | B::MyIntegerDivide | B::Regexp => kind == DatasourceKind::Mysql,
            B::Glob | B::Match => kind == DatasourceKind::Sqlite,
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
            | B::QuestionPipe => kind == DatasourceKind::Postgres,
            // JSON extraction: Postgres, MySQL and SQLite all have -> and ->>.
            B::Arrow | B::LongArrow => true,
            // Anything else on PostgreSQL is an operator some extension may provide (`<->`,
            // `<<->`, `~=`): allowed when a trusted extension does. `OPERATOR(schema.op)` names
            // a schema and is never allowed.
            B::PGCustomBinaryOperator(_) => false,
            other => {
                kind == DatasourceKind::Postgres && {
                    let symbol = other.to_string();
                    self.w.catalog.from_trusted_extension(
                        &self.w.scope.extensions,
                        ObjectKind::Operator,
                        &symbol,
                    )
                }
            }
        };
        if !ok {
            return ControlFlow::Break(PolicyError::FunctionNotAllowed(format!(
                "operator {op} is not allowed"
            )));
        }
        if kind == DatasourceKind::Postgres
            && let Some(name) = pg_operator_name(op)
        {
            self.operators.insert(name);
        }
        ControlFlow::Continue(())
    }

    fn unary_operator(&mut self, op: &UnaryOperator) -> ControlFlow<PolicyError> {
        use UnaryOperator as U;
        let kind = self.kind();
        let ok = match op {
            U::Plus | U::Minus | U::Not | U::BitwiseNot => true,
            U::BangNot => kind == DatasourceKind::Mysql,
            U::PGSquareRoot
            | U::PGCubeRoot
            | U::PGPostfixFactorial
            | U::PGPrefixFactorial
            | U::PGAbs => kind == DatasourceKind::Postgres,
            _ => false,
        };
        if !ok {
            return ControlFlow::Break(PolicyError::FunctionNotAllowed(format!(
                "operator {op} is not allowed"
            )));
        }
        if kind == DatasourceKind::Postgres && !matches!(op, U::Not) {
            self.operators.insert(op.to_string());
        }
        ControlFlow::Continue(())
    }

    /// Operators are looked up by name on the session's search path: refuse any that an
    /// untrusted object of a trusted extension's schema also answers to.
    fn check_operators(&mut self) -> Result<(), PolicyError> {
        if self.kind() != DatasourceKind::Postgres || self.w.scope.extensions.is_empty() {
            return Ok(());
        }
        let implicit = IMPLICIT_COMPARISONS.iter().map(|s| s.to_string());
        let all: Vec<String> = self.operators.iter().cloned().chain(implicit).collect();
        for name in all {
            if let Some(schema) = self.planted(ObjectKind::Operator, &name) {
                return Err(PolicyError::FunctionNotAllowed(format!(
                    "operator {name} is not allowed: schema {schema} holds an operator of that \
                     name that no trusted extension provides"
                )));
            }
        }
        Ok(())
    }

    fn placeholder(&mut self, text: &str) -> ControlFlow<PolicyError> {
        let kind = self.kind();
        let bad = || {
            ControlFlow::Break(PolicyError::Parse(format!(
                "placeholder {text} is not supported: use {}",
                match kind {
                    DatasourceKind::Postgres => "$1, $2, …",
                    DatasourceKind::Mysql | DatasourceKind::Sqlite => "?",
                }
            )))
        };
        match kind {
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

    /// An identifier used as a value: remembered for the cast checks, and on PostgreSQL checked
    /// against attribute notation (`t.f` calls `f(t)` when `t` has no column `f`).
    fn identifier_value(&mut self, parts: &[Ident]) -> ControlFlow<PolicyError> {
        let kind = self.kind();
        match parts {
            [one] => {
                self.bare_identifiers.insert(normalise_ident(kind, one));
            }
            many => {
                for (i, p) in many.iter().enumerate() {
                    let n = normalise_ident(kind, p);
                    if i > 0
                        && let Some(schema) = self.planted(ObjectKind::Function, &n)
                    {
                        return planted_refusal("function", &n, &schema);
                    }
                    self.identifier_parts.insert(n);
                }
            }
        }
        ControlFlow::Continue(())
    }
}

fn planted_refusal(what: &str, name: &str, schema: &str) -> ControlFlow<PolicyError> {
    ControlFlow::Break(PolicyError::FunctionNotAllowed(format!(
        "{what} {name} is not allowed: schema {schema} holds a {what} of that name that no \
         trusted extension provides"
    )))
}

fn reg_cast_refused(ty: &str) -> ControlFlow<PolicyError> {
    ControlFlow::Break(PolicyError::FunctionNotAllowed(format!(
        "casts to {ty} are not allowed: they look objects up in the catalogue by name"
    )))
}

/// `PostgreSQL 15.20 (Debian …) on x86_64…` → `PostgreSQL 15.20`.
fn short_version(v: &str) -> String {
    let words: Vec<&str> = v.split_whitespace().take(2).collect();
    if words.is_empty() {
        "unknown version".into()
    } else {
        words.join(" ")
    }
}

/// The name PostgreSQL looks an operator up by (`LIKE` is `~~`, `AND` none at all).
fn pg_operator_name(op: &BinaryOperator) -> Option<String> {
    use BinaryOperator as B;
    match op {
        B::And | B::Or | B::Xor | B::Overlaps => None,
        B::PGLikeMatch => Some("~~".into()),
        B::PGILikeMatch => Some("~~*".into()),
        B::PGNotLikeMatch => Some("!~~".into()),
        B::PGNotILikeMatch => Some("!~~*".into()),
        other => Some(other.to_string()),
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
fn is_bare_keyword_function(kind: DatasourceKind, ident: &Ident) -> bool {
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

/// MySQL's `FROM DUAL`: no table at all.
fn is_dual(kind: DatasourceKind, name: &ObjectName) -> bool {
    kind == DatasourceKind::Mysql
        && matches!(idents(name).as_deref(),
            Some([one]) if one.quote_style.is_none() && one.value.eq_ignore_ascii_case("dual"))
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
            let kind = self.kind();
            self.frames.push(CteFrame {
                owner: ptr,
                names: with
                    .cte_tables
                    .iter()
                    .map(|c| normalise_ident(kind, &c.alias.name))
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
        if self.table_functions.contains(&ptr)
            || self.cte_shadows(relation)
            || is_dual(self.kind(), relation)
        {
            return ControlFlow::Continue(());
        }
        let write = self.write_targets.contains(&ptr);
        self.table(relation, write)
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<PolicyError> {
        match factor {
            TableFactor::Table {
                name,
                alias,
                args,
                with_hints,
                json_path,
                ..
            } => {
                if !with_hints.is_empty() || json_path.is_some() {
                    return not_allowed(format!("this form of table reference {name}"));
                }
                if let Some(alias) = alias {
                    let kind = self.kind();
                    self.aliases.insert(
                        name as *const ObjectName,
                        normalise_ident(kind, &alias.name),
                    );
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
        let ptr: *const Expr = expr;
        if !self.flat.contains(&ptr) {
            self.deeper()?;
        }
        match expr {
            Expr::Function(f) => self.function(&f.name),
            // The server calls a function here; the parser read a column name.
            Expr::Identifier(ident) if is_bare_keyword_function(self.kind(), ident) => {
                self.function(&ObjectName::from(vec![ident.clone()]))
            }
            Expr::BinaryOp { op, left, .. } => {
                // `a OR b OR c`: the left operand continues the chain at the same depth.
                if matches!(op, BinaryOperator::And | BinaryOperator::Or)
                    && matches!(&**left, Expr::BinaryOp { op: inner, .. } if inner == op)
                {
                    self.flat.insert(&**left as *const Expr);
                }
                self.binary_operator(op)
            }
            Expr::AnyOp { compare_op, .. } | Expr::AllOp { compare_op, .. } => {
                self.binary_operator(compare_op)
            }
            Expr::UnaryOp { op, .. } => self.unary_operator(op),
            Expr::Identifier(ident) => {
                if self.kind() != DatasourceKind::Postgres
                    && ident.quote_style.is_none()
                    && ident.value.starts_with('@')
                {
                    return not_allowed(format!("variable {}", ident.value));
                }
                self.identifier_value(std::slice::from_ref(ident))
            }
            Expr::CompoundIdentifier(parts) => self.identifier_value(parts),
            Expr::Cast { data_type, .. } => self.data_type(data_type),
            Expr::TypedString(ts) => self.data_type(&ts.data_type),
            Expr::Convert { data_type, .. } => match data_type {
                Some(t) => self.data_type(t),
                None => ControlFlow::Continue(()),
            },
            Expr::Like { .. } | Expr::ILike { .. } => {
                if self.kind() == DatasourceKind::Postgres {
                    let names = ["~~", "!~~", "~~*", "!~~*"];
                    self.operators.extend(names.iter().map(|s| s.to_string()));
                }
                ControlFlow::Continue(())
            }
            Expr::SimilarTo { .. } => {
                if self.kind() == DatasourceKind::Postgres {
                    self.operators
                        .extend(["~", "!~"].iter().map(|s| s.to_string()));
                }
                ControlFlow::Continue(())
            }
            Expr::CompoundFieldAccess { .. }
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
            | Expr::RLike { .. }
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

    fn post_visit_expr(&mut self, expr: &Expr) -> ControlFlow<PolicyError> {
        let ptr: *const Expr = expr;
        if !self.flat.remove(&ptr) {
            self.nesting = self.nesting.saturating_sub(1);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_value(&mut self, value: &ValueWithSpan) -> ControlFlow<PolicyError> {
        if let Value::Placeholder(text) = &value.value {
            return self.placeholder(text);
        }
        ControlFlow::Continue(())
    }
}
