//! vlab-courses: education plans on the virtual-lab platform.
//!
//! Layers, outermost first: [`http`] (routes, extractors, caller auth and gates; no SQL) →
//! [`usecases`] (one module per use case; the ledger and the transaction boundaries live there)
//! → [`repo`] (SQL) and [`clients`] (Keycloak, accounting, SMTP). [`domain`] holds pure rules.
//! [`jobs`] are the background worker and the expiry job, built on the use cases; [`app`] wires
//! configuration, clients, HTTP and jobs together at start-up. A module never imports one of a
//! layer above it.

pub mod app;
pub mod clients;
pub mod config;
pub mod domain;
pub mod http;
pub mod jobs;
pub mod repo;
pub mod usecases;
