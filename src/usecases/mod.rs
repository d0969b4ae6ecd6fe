//! Use cases: one module per use case. Each reads like its flow in spec/rules.md — external
//! steps with their undo pushed on a [`ledger::Ledger`], then one short transaction — and
//! returns a typed [`UseCaseError`], which the HTTP layer maps to a response in one place.

pub mod access;
pub mod claim_emails;
pub mod corrections;
pub mod courses;
pub mod drops;
pub mod email_outbox;
pub mod enrolment_checks;
pub mod error;
pub mod events;
pub mod expiry_runs;
pub mod fault;
pub mod idempotency;
pub mod institutions;
pub mod invites;
pub mod labs;
pub mod ledger;
pub mod notices;
pub mod projects;
pub mod provisioning;
pub mod revocations;
pub mod saga;
pub mod seats;
mod services;
pub mod tasks;
pub mod top_ups;

pub use error::UseCaseError;
pub use services::Services;
