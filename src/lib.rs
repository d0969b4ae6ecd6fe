//! vlab-courses: education plans on the virtual-lab platform.
//!
//! Layers, outermost first: [`http`] (routes, extractors, auth gates; no SQL) → [`usecases`]
//! (one module per use case; the ledger and the transaction boundaries live there) →
//! [`repo`] (SQL) and [`clients`] (Keycloak, accounting, SMTP). [`domain`] holds pure rules.

pub mod app;
pub mod auth;
pub mod clients;
pub mod config;
pub mod db;
pub mod domain;
pub mod expiry;
pub mod http;
pub mod ledger;
pub mod metrics;
pub mod repo;
pub mod request_context;
pub mod tasks;
pub mod telemetry;
pub mod usecases;
pub mod worker;
