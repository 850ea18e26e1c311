//! Helpers shared by the integration tests (each test file does `mod support;`).
#![allow(dead_code)]

pub mod app;
pub mod certs;
pub mod client;
pub mod db;
pub mod gateway;
pub mod relay;
pub mod server;
pub mod throwaway;
pub mod throwaway_mysql;
