//! Plain data shared by every layer: ids, roles, datasource kinds and scope policy.
//!
//! Nothing here does I/O. Types that must be valid are built through `parse` at the edge
//! (HTTP, CLI, store) so the inner layers never see an unknown role or kind.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Declares an opaque string id with a fixed prefix (`app_…`, `ds_…`), so ids of different
/// objects cannot be mixed up in signatures and are recognisable in logs.
macro_rules! id_type {
    ($name:ident, $prefix:literal) => {
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A fresh random id (UUID v7: time-ordered, so store indexes stay compact).
            pub fn generate() -> Self {
                Self(format!("{}_{}", $prefix, uuid::Uuid::now_v7().simple()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }
    };
}

id_type!(CompanyId, "co");
id_type!(UserId, "usr");
id_type!(GroupId, "grp");
id_type!(AppId, "app");
id_type!(DatasourceId, "ds");
id_type!(TokenId, "tok");
id_type!(AuditId, "aud");

/// A principal that can hold a role on an app or datasource: a user (person or API) or a group.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalId {
    User(UserId),
    Group(GroupId),
}

impl PrincipalId {
    pub fn as_str(&self) -> &str {
        match self {
            PrincipalId::User(u) => u.as_str(),
            PrincipalId::Group(g) => g.as_str(),
        }
    }
    pub fn kind_str(&self) -> &'static str {
        match self {
            PrincipalId::User(_) => "user",
            PrincipalId::Group(_) => "group",
        }
    }
}

/// Declares a closed string enum with `as_str`, `FromStr` and serde in snake_case.
macro_rules! str_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident => $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $s),+ }
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($s => Ok($name::$variant),)+
                    _ => Err(UnknownValue { what: stringify!($name), value: s.to_owned() }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// A string that is not one of an enum's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?}")]
pub struct UnknownValue {
    pub what: &'static str,
    pub value: String,
}

str_enum!(
    /// A person's role in the company. Ordered: consumer < creator < admin < owner.
    CompanyRole { Consumer => "consumer", Creator => "creator", Admin => "admin", Owner => "owner" }
);

str_enum!(
    /// Person users log in; API users are service identities for external programs.
    UserKind { Person => "person", Api => "api" }
);

str_enum!(
    /// A role on one app or datasource. Ordered: viewer < editor < owner.
    ObjectRole { Viewer => "viewer", Editor => "editor", Owner => "owner" }
);

str_enum!(
    /// Public makes every person user of the company an effective viewer.
    Visibility { Private => "private", Public => "public" }
);

str_enum!(
    /// The kind of database behind a datasource; also the name of its integration.
    DatasourceKind { Postgres => "postgres", Mysql => "mysql", Sqlite => "sqlite" }
);

str_enum!(
    /// What a datasource's scope lets statements do.
    Access { ReadOnly => "read_only", ReadWrite => "read_write" }
);

/// The scope policy of a datasource ("configure scope"), as stored and as the SQL policy reads it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScopePolicy {
    #[serde(default = "default_access")]
    pub access: Access,
    /// `schema.table` or `schema.*`; `None` means every table the service account can reach.
    #[serde(default)]
    pub allowed_tables: Option<Vec<String>>,
    #[serde(default)]
    pub denied_tables: Vec<String>,
    /// Functions allowed on top of the built-in safe list of the datasource's dialect: user
    /// functions, written `schema.name` (or `name` for the default schema). Also the functions a
    /// view, trigger, default or row-level security policy may run on the statement's behalf.
    #[serde(default)]
    pub extra_functions: Vec<String>,
    /// PostgreSQL: the schema unqualified table names resolve in. Filled from the service
    /// account's own `search_path` when the datasource is checked and none was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_schema: Option<String>,
    /// PostgreSQL: extensions whose functions, operators and types statements may use by name
    /// (`["vector", "postgis", "pg_trgm"]`). Their schemas follow `pg_catalog` on the session's
    /// search path; nothing else in those schemas is reachable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<String>,
    #[serde(default = "default_max_rows")]
    pub max_rows: u64,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_access() -> Access {
    Access::ReadOnly
}
pub const DEFAULT_MAX_ROWS: u64 = 10_000;
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
fn default_max_rows() -> u64 {
    DEFAULT_MAX_ROWS
}
fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}

impl Default for ScopePolicy {
    fn default() -> Self {
        ScopePolicy {
            access: Access::ReadOnly,
            allowed_tables: None,
            denied_tables: Vec::new(),
            extra_functions: Vec::new(),
            default_schema: None,
            extensions: Vec::new(),
            max_rows: DEFAULT_MAX_ROWS,
            timeout_ms: DEFAULT_TIMEOUT_MS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_from_least_to_most_power() {
        assert!(CompanyRole::Consumer < CompanyRole::Creator);
        assert!(CompanyRole::Creator < CompanyRole::Admin);
        assert!(CompanyRole::Admin < CompanyRole::Owner);
        assert!(ObjectRole::Viewer < ObjectRole::Editor);
        assert!(ObjectRole::Editor < ObjectRole::Owner);
    }

    #[test]
    fn enums_round_trip_through_their_names_and_refuse_unknown_ones() {
        for k in DatasourceKind::ALL {
            assert_eq!(k.as_str().parse::<DatasourceKind>().unwrap(), *k);
        }
        assert!("oracle".parse::<DatasourceKind>().is_err());
        assert!(
            "Owner".parse::<CompanyRole>().is_err(),
            "names are case-sensitive"
        );
    }

    #[test]
    fn generated_ids_carry_their_prefix_and_differ() {
        let a = AppId::generate();
        let b = AppId::generate();
        assert!(a.as_str().starts_with("app_"));
        assert_ne!(a, b);
    }

    #[test]
    fn scope_policy_defaults_to_read_only_and_rejects_unknown_fields() {
        let p: ScopePolicy = serde_json::from_str("{}").unwrap();
        assert_eq!(p, ScopePolicy::default());
        assert!(serde_json::from_str::<ScopePolicy>(r#"{"acess":"read_write"}"#).is_err());
    }
}
