//! sluice: a SQL datasource query gateway.
//!
//! The path of a query is readable from the modules: `http` (routes, extractors, errors) →
//! `identity` (bearer tokens) → `permission` (who may use which app) → `policy` (what SQL may run)
//! → `datasource` (pools and drivers) → `encode` (typed JSON / NDJSON) → `audit`.
//! `store` holds the control plane and its in-memory view; `config` the typed configuration.

pub mod model;
pub mod policy;
