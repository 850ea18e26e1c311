//! sluice: a SQL datasource query gateway.
//!
//! The path of a query is readable from the modules: `http` (routes, extractors, the one place
//! that picks status codes) → `identity` (bearer tokens) → `query` (the transport-independent
//! query service: resolve → `permission` → limits → `policy` → `datasource` → `encode` →
//! `audit`, finished in one place). `code` holds the stable error codes every layer's error
//! names. `store` holds the control plane and its in-memory view; `config` the typed
//! configuration; `app` builds and runs the server; `cli` is the command line.

pub mod app;
pub mod audit;
pub mod cli;
pub mod code;
pub mod config;
pub mod datasource;
pub mod demo;
pub mod encode;
pub mod fixtures;
pub mod http;
pub mod identity;
pub mod limits;
pub mod metrics;
pub mod model;
pub mod permission;
pub mod policy;
pub mod query;
pub mod store;
pub mod sync;
pub mod tls;
