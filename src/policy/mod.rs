//! PLACEHOLDER (not committed): replaced by the policy branch at merge.
use crate::model::*;
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatementClass {
    Query,
    Insert,
    Update,
    Delete,
}
pub struct Checked {
    pub sql: String,
    pub class: StatementClass,
    pub tables: Vec<String>,
    pub functions: Vec<String>,
    pub param_count: usize,
}
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("too long")]
    TooLong { max: usize },
    #[error("{0}")]
    Parse(String),
    #[error("{0}")]
    StatementNotAllowed(String),
    #[error("{0}")]
    TableNotAllowed(String),
    #[error("{0}")]
    FunctionNotAllowed(String),
    #[error("render")]
    RenderMismatch,
}
pub async fn check_isolated(
    _sql: String,
    _k: DatasourceKind,
    _d: String,
    _m: usize,
    _s: ScopePolicy,
) -> Result<Checked, PolicyError> {
    Err(PolicyError::Parse("policy not merged".into()))
}
pub fn table_visible(_s: &str, _t: &str, _d: &str, _k: DatasourceKind, _p: &ScopePolicy) -> bool {
    true
}
