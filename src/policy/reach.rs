//! What a relation's name reaches on the server, checked like the name itself.
//!
//! A name is not always one table: a parent returns its inheritance children and partitions, a
//! view or materialized view returns its tables' rows, an FTS table its content table's, a
//! MERGE table its members'; a write also reaches cascading foreign keys and rule actions, and
//! runs triggers and defaults. The [`Catalog`] lists these per relation; here every relation a
//! reference reaches, however indirectly, must pass the scope's rules:
//!
//! * a denied table refuses every name that reaches it;
//! * with an allow-list, what a name reaches must be allowed too, unless the admin listed that
//!   very name (`schema.table`, not `schema.*`): then they chose what it shows;
//! * system catalogue relations reached by a user view are refused as if named;
//! * code the server runs on the statement's behalf (view bodies, row-level security, triggers,
//!   defaults) must be on `extra_functions`, like a call written in the statement;
//! * effects the catalog could not list (a view whose text the account may not read, triggers
//!   with inline bodies) are refused whenever the scope limits tables.
//!
//! `ONLY t` leaves out `t`'s own children, nothing else.

use std::collections::{HashSet, VecDeque};

use super::PolicyError;
use super::catalog::{Catalog, RelName, RelationKind};
use super::names::{
    TableRef, check_table, is_catalog, is_denied, is_side_channel, named_exactly,
    scope_restricts_tables,
};
use super::walk::Facts;
use crate::model::{DatasourceKind, ScopePolicy};

/// How many relations one reference may reach before the statement is refused: bounds the work
/// on pathological catalogues (thousands of partitions behind one name are still fine).
pub const MAX_REACHED: usize = 100_000;

/// What the checks found beyond refusals.
#[derive(Debug, Default)]
pub struct Reached {
    /// User functions the server will run for the statement (allowed by `extra_functions`).
    pub functions: Vec<String>,
    /// Some of them, or a trigger, may run: the session may change under the statement.
    pub runs_user_code: bool,
}

pub struct Scope<'a> {
    pub kind: DatasourceKind,
    pub default_schema: &'a str,
    pub scope: &'a ScopePolicy,
    pub catalog: &'a Catalog,
}

impl Scope<'_> {
    /// Looks a relation up: exactly, and on MySQL and SQLite (whose names may ignore case) also
    /// without regard to case.
    fn facts(&self, t: &TableRef) -> Option<(&RelName, &super::catalog::Relation)> {
        let key = t.rel();
        if let Some((k, v)) = self.catalog.relations.get_key_value(&key) {
            return Some((k, v));
        }
        if self.kind == DatasourceKind::Postgres {
            return None;
        }
        self.catalog.relations.iter().find(|(k, _)| {
            k.schema.eq_ignore_ascii_case(&key.schema) && k.name.eq_ignore_ascii_case(&key.name)
        })
    }

    /// Whether a user function the server runs for a statement is allowed: `extra_functions`
    /// lists it as `schema.name`, or as `name` when it lives in the default schema.
    fn function_allowed(&self, qualified: &str) -> bool {
        let (schema, name) = qualified.rsplit_once('.').unwrap_or(("", qualified));
        self.scope.extra_functions.iter().any(|e| {
            let e = e.trim();
            let (es, en) = e.rsplit_once('.').unwrap_or((self.default_schema, e));
            let same = |a: &str, b: &str| match self.kind {
                DatasourceKind::Postgres => a == b,
                _ => a.eq_ignore_ascii_case(b),
            };
            same(en, name) && same(es, schema)
        })
    }

    fn refusal(&self, named: &TableRef, reached: &TableRef, how: &str) -> PolicyError {
        PolicyError::TableNotAllowed(format!(
            "table {} is not allowed: {how} {}, which this datasource does not allow",
            named.qualified(),
            reached.qualified()
        ))
    }

    /// A relation reached from `named` (not named itself) under the scope's rules.
    fn check_reached(
        &self,
        named: &TableRef,
        explicit: bool,
        reached: &TableRef,
        how: &str,
    ) -> Result<(), PolicyError> {
        if is_side_channel(self.kind, reached)
            || is_denied(self.default_schema, self.scope, reached)
        {
            return Err(self.refusal(named, reached, how));
        }
        if explicit {
            return Ok(());
        }
        match &self.scope.allowed_tables {
            Some(_) => check_table(self.kind, self.default_schema, self.scope, reached)
                .map_err(|_| self.refusal(named, reached, how)),
            None if is_catalog(self.kind, reached) => Err(self.refusal(named, reached, how)),
            None => Ok(()),
        }
    }

    /// Every check for one reference of the statement.
    fn reference(
        &self,
        named: &TableRef,
        write: bool,
        only: bool,
        out: &mut Reached,
    ) -> Result<(), PolicyError> {
        let explicit = named_exactly(self.kind, self.default_schema, self.scope, named);
        let restricted = scope_restricts_tables(self.scope);
        // A shadow table is its virtual table's data: it is checked under that name too.
        if let Some((_, facts)) = self.facts(named)
            && let Some(owner) = &facts.shadow_of
        {
            let owner = TableRef::from_rel(owner);
            check_table(self.kind, self.default_schema, self.scope, &owner).map_err(|_| {
                PolicyError::TableNotAllowed(format!(
                    "table {} is not allowed: it holds the data of {}, which this datasource \
                     does not allow",
                    named.qualified(),
                    owner.qualified()
                ))
            })?;
        }
        let mut seen: HashSet<RelName> = HashSet::new();
        // (relation, reached by a write, is the named relation itself)
        let mut queue: VecDeque<(TableRef, bool, bool)> = VecDeque::new();
        queue.push_back((named.clone(), write, true));
        seen.insert(named.rel());
        while let Some((rel, writing, is_named)) = queue.pop_front() {
            if seen.len() > MAX_REACHED {
                return Err(PolicyError::TableNotAllowed(format!(
                    "table {} is not allowed: it reaches more than {MAX_REACHED} relations",
                    named.qualified()
                )));
            }
            let Some((_, facts)) = self.facts(&rel) else {
                continue;
            };
            let how = if writing {
                "a write to it reaches"
            } else {
                "it reads"
            };
            // What an unreadable view reads is unknown: with denied tables it may reach one,
            // whoever allowed it by name; with an allow-list only the admin naming it vouches.
            let vouched = is_named && explicit && self.scope.denied_tables.is_empty();
            if facts.opaque_reads && restricted && !vouched {
                return Err(PolicyError::TableNotAllowed(format!(
                    "table {} is not allowed: the service account cannot see what {} reads \
                     (grant it SHOW VIEW{})",
                    named.qualified(),
                    rel.qualified(),
                    if self.scope.denied_tables.is_empty() {
                        ", or allow this view by its exact name"
                    } else {
                        ""
                    }
                )));
            }
            if writing && facts.opaque_writes {
                out.runs_user_code = true;
                if restricted {
                    return Err(PolicyError::TableNotAllowed(format!(
                        "writing table {} is not allowed: {} has triggers whose effects the \
                         gateway cannot check, and this datasource limits the tables it reaches",
                        named.qualified(),
                        rel.qualified()
                    )));
                }
            }
            let mut functions: Vec<&String> = facts.read_functions.iter().collect();
            if writing {
                functions.extend(&facts.write_functions);
            }
            for f in functions {
                if !self.function_allowed(f) {
                    let role = if facts.kind == RelationKind::View
                        || facts.kind == RelationKind::MaterializedView
                    {
                        "its definition calls"
                    } else if writing {
                        "writing it runs"
                    } else {
                        "reading it runs"
                    };
                    return Err(PolicyError::FunctionNotAllowed(format!(
                        "function {f} is not allowed: {} is not usable here because {role} it \
                         (add it to extra_functions to allow it)",
                        rel.qualified()
                    )));
                }
                out.runs_user_code = true;
                if !out.functions.contains(f) {
                    out.functions.push(f.clone());
                }
            }
            let children = if is_named && only {
                &[][..]
            } else {
                &facts.children[..]
            };
            let cascades = if writing {
                &facts.cascades[..]
            } else {
                &[][..]
            };
            // A write through a view writes its table; the other bases of a view are read.
            // A shadow table reached on the way (a view over `notes_fts_content`) holds its
            // virtual table's data: that table is reached too.
            let next = children
                .iter()
                .map(|r| (r, writing, "it includes"))
                .chain(facts.reads.iter().map(|r| (r, writing, how)))
                .chain(
                    facts
                        .shadow_of
                        .iter()
                        .map(|r| (r, writing, "it holds the data of")),
                )
                .chain(
                    cascades
                        .iter()
                        .map(|r| (r, true, "a write to it cascades to")),
                );
            for (r, w, how) in next {
                if !seen.insert(r.clone()) {
                    continue;
                }
                let t = TableRef::from_rel(r);
                self.check_reached(named, explicit, &t, how)?;
                queue.push_back((t, w, false));
            }
        }
        Ok(())
    }
}

/// Runs the reach checks over every reference the walk found, and refuses whole-row references
/// and columns whose types carry user-defined casts.
pub fn check(s: &Scope, facts: &Facts) -> Result<Reached, PolicyError> {
    let mut out = Reached::default();
    for r in &facts.references {
        s.reference(&r.table, r.write, r.only, &mut out)?;
        check_casts(s, facts, &r.table, &r.exposed)?;
    }
    Ok(out)
}

/// A relation whose row type has a user-defined cast must not be used as a whole row (`t`,
/// `t::text`, `f(t)`), nor through attribute notation (`t.f`, a call of `f(t)`); a column whose
/// type has one must not be used at all.
fn check_casts(s: &Scope, facts: &Facts, t: &TableRef, exposed: &str) -> Result<(), PolicyError> {
    let Some((_, rel)) = s.facts(t) else {
        return Ok(());
    };
    let refused = |what: String| {
        Err(PolicyError::FunctionNotAllowed(format!(
            "{what} is not allowed: its type has a user-defined cast, which runs user code"
        )))
    };
    if rel.row_cast
        && (facts.bare_identifiers.contains(exposed)
            || facts.identifier_parts.contains(exposed)
                && facts
                    .identifier_parts
                    .iter()
                    .any(|p| s.catalog.builtin_functions.contains(p)))
    {
        return refused(format!("a whole-row reference to {}", t.qualified()));
    }
    for c in &rel.cast_columns {
        if facts.bare_identifiers.contains(c) || facts.identifier_parts.contains(c) {
            return refused(format!("column {c} of {}", t.qualified()));
        }
    }
    Ok(())
}
