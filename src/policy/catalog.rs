//! What the policy knows about the server behind one datasource, read from that server.
//!
//! The policy is only as sound as its model of the server: whatever the database decides at run
//! time (which schema an unqualified name means, which children a parent returns, what a view
//! reads, which functions exist) is read from the server by the driver (`introspect`) and handed
//! to the checker as this plain data. Nothing here does I/O.
//!
//! Only relations with something behind their name are listed: plain tables need no entry, so the
//! catalog's size follows the number of views, parents, virtual tables and the like, not tables.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};

use crate::model::DatasourceKind;

/// A relation as the server names it: schema (database on MySQL, `main` on SQLite) and name,
/// both in the catalog's own spelling.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelName {
    pub schema: String,
    pub name: String,
}

impl RelName {
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        RelName {
            schema: schema.into(),
            name: name.into(),
        }
    }

    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}

impl std::fmt::Display for RelName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// What kind of relation a name stands for, where that matters to the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum RelationKind {
    #[default]
    Table,
    /// A partitioned table (PostgreSQL): it holds no rows, its partitions do.
    Partitioned,
    View,
    MaterializedView,
    /// A foreign table (PostgreSQL): its rows come from elsewhere.
    Foreign,
    /// A virtual table (SQLite FTS, R*Tree, …).
    Virtual,
    /// A table that holds a virtual table's data (`notes_fts_content`).
    Shadow,
    /// A MERGE / MRG_MyISAM table (MariaDB): a union of other tables.
    Merge,
}

/// What the server does behind one relation's name that the statement's text does not show.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Relation {
    pub kind: RelationKind,
    /// Inheritance children and partitions (direct ones): a read, UPDATE or DELETE of the parent
    /// reaches them unless the statement says `ONLY`.
    pub children: Vec<RelName>,
    /// Relations whose rows reading this one returns (direct ones): a view's or materialized
    /// view's tables, a MERGE table's members, an FTS table's external content table. A write
    /// through an updatable view reaches them too.
    pub reads: Vec<RelName>,
    /// The virtual table whose data this shadow table holds.
    pub shadow_of: Option<RelName>,
    /// Relations a write to this one also changes: foreign keys that cascade (ON DELETE/UPDATE
    /// CASCADE, SET NULL, SET DEFAULT) and rule actions.
    pub cascades: Vec<RelName>,
    /// User functions (not built-ins, not trusted extensions) the server runs when this relation
    /// is read: view bodies, row-level security policies. `schema.name`.
    pub read_functions: Vec<String>,
    /// User functions run when it is written: trigger functions, column defaults and generated
    /// columns, domain checks. `schema.name`.
    pub write_functions: Vec<String>,
    /// Reading it may reach relations the catalog could not list (a view whose definition the
    /// service account may not see).
    pub opaque_reads: bool,
    /// Writing it runs code whose effects could not be listed (triggers with inline bodies).
    pub opaque_writes: bool,
    /// Its row type has a user-defined cast: a whole-row reference (`t`, `t::text`) can run user
    /// code.
    pub row_cast: bool,
    /// Columns whose type has a user-defined cast.
    pub cast_columns: Vec<String>,
}

/// One installed PostgreSQL extension, as far as the policy cares.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Extension {
    /// The schema its objects live in.
    pub schema: String,
    /// Functions it provides whose every overload is IMMUTABLE or STABLE: callable by name once
    /// the datasource trusts the extension.
    pub functions: BTreeSet<String>,
    /// Functions with a VOLATILE overload (`set_limit`): user functions as far as the policy goes.
    pub volatile_functions: BTreeSet<String>,
    /// Operator symbols it provides (`<->`, `%`, `&&`).
    pub operators: BTreeSet<String>,
    /// Type names it provides (`geometry`, `vector`, `hstore`).
    pub types: BTreeSet<String>,
}

/// Who provides the objects of one name in one schema: the extensions, plus `None` when some
/// object of that name belongs to no extension at all.
pub type Providers = BTreeSet<Option<String>>;

/// The function, operator and type names of one schema that hosts an installed extension, with
/// who provides each. Once that schema is on the session's search path (to reach a trusted
/// extension), any of these names can resolve to an object there: a name some untrusted object
/// provides is refused.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SchemaObjects {
    pub functions: BTreeMap<String, Providers>,
    pub operators: BTreeMap<String, Providers>,
    pub types: BTreeMap<String, Providers>,
}

/// Everything the policy knows about one datasource's server.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Catalog {
    pub kind: Option<DatasourceKind>,
    /// As the server reports it (`PostgreSQL 15.20 …`, `10.11.19-MariaDB…`, `SQLite 3.50.1`).
    pub server_version: String,
    /// Where unqualified relation names resolve unless the scope names a `default_schema`:
    /// PostgreSQL, the first existing schema of the service account's own `search_path`; MySQL,
    /// the datasource's database; SQLite, `main`.
    pub default_schema: String,
    /// The built-in function names this server really provides, lower case (PostgreSQL: the
    /// functions of `pg_catalog`; MySQL: the built-ins of this server's flavour and version;
    /// SQLite: `pragma_function_list`). The static allow-lists are cut down to these.
    pub builtin_functions: BTreeSet<String>,
    /// PostgreSQL: the relations of `pg_catalog`, where an unqualified name resolves first.
    pub system_relations: BTreeSet<String>,
    /// Relations with something behind their name.
    pub relations: BTreeMap<RelName, Relation>,
    /// PostgreSQL: installed extensions by name.
    pub extensions: BTreeMap<String, Extension>,
    /// PostgreSQL: the objects of every schema that hosts an installed extension.
    pub extension_schemas: BTreeMap<String, SchemaObjects>,
}

impl Catalog {
    /// A fingerprint of the whole content: equal catalogs give equal fingerprints, so a refresh
    /// that found nothing new keeps every cached policy decision.
    pub fn fingerprint(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.hash(&mut h);
        h.finish()
    }

    pub fn relation(&self, name: &RelName) -> Option<&Relation> {
        self.relations.get(name)
    }

    /// The schemas put after `pg_catalog` on the session's search path so the trusted
    /// extensions' functions, operators and types resolve by name, in the order the scope lists
    /// the extensions (untrusted or absent extensions are left out).
    pub fn trusted_schemas(&self, trusted: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for name in trusted {
            if let Some(e) = self.extensions.get(name.as_str())
                && e.schema != "pg_catalog"
                && !out.contains(&e.schema)
            {
                out.push(e.schema.clone());
            }
        }
        out
    }

    /// The PostgreSQL session search path for a scope trusting these extensions.
    pub fn search_path(&self, trusted: &[String]) -> String {
        let mut parts = vec!["pg_catalog".to_owned()];
        parts.extend(self.trusted_schemas(trusted).into_iter().map(quote_pg));
        // pg_temp last: otherwise it is searched first for relations and types.
        parts.push("pg_temp".to_owned());
        parts.join(", ")
    }
}

/// A catalogue with its fingerprint, computed once when it was read.
#[derive(Clone, Debug)]
pub struct Known {
    pub catalog: std::sync::Arc<Catalog>,
    pub fingerprint: u64,
}

impl Known {
    pub fn new(catalog: Catalog) -> Self {
        Known {
            fingerprint: catalog.fingerprint(),
            catalog: std::sync::Arc::new(catalog),
        }
    }
}

/// A PostgreSQL identifier, quoted.
pub fn quote_pg(name: String) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Which kind of object name [`Catalog`] lookups are about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectKind {
    Function,
    Operator,
    Type,
}

impl Catalog {
    /// Whether `name` is provided by one of the trusted extensions (for functions: by a
    /// non-volatile function).
    pub fn from_trusted_extension(&self, trusted: &[String], what: ObjectKind, name: &str) -> bool {
        trusted.iter().any(|t| {
            self.extensions.get(t.as_str()).is_some_and(|e| match what {
                ObjectKind::Function => e.functions.contains(name),
                ObjectKind::Operator => e.operators.contains(name),
                ObjectKind::Type => e.types.contains(name),
            })
        })
    }

    /// The schema of the trusted search path where an object called `name` exists that no trusted
    /// extension provides: naming it could run that object instead of the one meant.
    pub fn planted(&self, trusted: &[String], what: ObjectKind, name: &str) -> Option<&str> {
        let trusted_ext = |p: &Option<String>| p.as_ref().is_some_and(|e| trusted.contains(e));
        for schema in self.trusted_schemas(trusted) {
            let Some((key, objects)) = self.extension_schemas.get_key_value(schema.as_str()) else {
                continue;
            };
            let map = match what {
                ObjectKind::Function => &objects.functions,
                ObjectKind::Operator => &objects.operators,
                ObjectKind::Type => &objects.types,
            };
            if map
                .get(name)
                .is_some_and(|providers| providers.iter().any(|p| !trusted_ext(p)))
            {
                return Some(key.as_str());
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_trgm_in_public() -> Catalog {
        let mut c = Catalog::default();
        c.extensions.insert(
            "pg_trgm".into(),
            Extension {
                schema: "public".into(),
                functions: ["similarity".to_owned()].into(),
                volatile_functions: ["set_limit".to_owned()].into(),
                operators: ["%".to_owned()].into(),
                types: ["gtrgm".to_owned()].into(),
            },
        );
        let mut objects = SchemaObjects::default();
        objects
            .functions
            .insert("similarity".into(), [Some("pg_trgm".to_owned())].into());
        objects.functions.insert("lower".into(), [None].into());
        objects
            .operators
            .insert("%".into(), [Some("pg_trgm".to_owned())].into());
        c.extension_schemas.insert("public".into(), objects);
        c
    }

    #[test]
    fn trusted_extension_schemas_follow_pg_catalog_and_pg_temp_comes_last() {
        let c = with_trgm_in_public();
        assert_eq!(c.search_path(&[]), "pg_catalog, pg_temp");
        assert_eq!(
            c.search_path(&["pg_trgm".into(), "absent".into()]),
            "pg_catalog, \"public\", pg_temp"
        );
    }

    #[test]
    fn a_name_no_trusted_extension_provides_in_a_trusted_schema_is_planted() {
        let c = with_trgm_in_public();
        let t = vec!["pg_trgm".to_owned()];
        assert_eq!(c.planted(&t, ObjectKind::Function, "lower"), Some("public"));
        assert_eq!(c.planted(&t, ObjectKind::Function, "similarity"), None);
        assert_eq!(c.planted(&t, ObjectKind::Operator, "%"), None);
        // Nothing trusted: the schema is not on the path, nothing there can be reached.
        assert_eq!(c.planted(&[], ObjectKind::Function, "lower"), None);
        assert!(c.from_trusted_extension(&t, ObjectKind::Function, "similarity"));
        assert!(!c.from_trusted_extension(&t, ObjectKind::Function, "set_limit"));
        assert!(!c.from_trusted_extension(&[], ObjectKind::Function, "similarity"));
    }

    #[test]
    fn equal_catalogs_share_a_fingerprint_and_a_change_moves_it() {
        let a = with_trgm_in_public();
        let mut b = with_trgm_in_public();
        assert_eq!(a.fingerprint(), b.fingerprint());
        b.relations.insert(
            RelName::new("lib", "v"),
            Relation {
                kind: RelationKind::View,
                ..Relation::default()
            },
        );
        assert_ne!(a.fingerprint(), b.fingerprint());
    }
}
