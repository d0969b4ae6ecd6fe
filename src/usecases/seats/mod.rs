//! Seats and enrolments (rules.md §4.9–§4.13): provision, batches, transfer, listings,
//! assignment, claim and activation. Drops live in `usecases::drops`.

pub mod activate;
pub mod assign;
pub mod batches;
pub mod claim;
pub mod enrolments;
mod error;
pub mod list;
pub mod provision;
pub mod roster_import;
pub mod transfer;

pub use error::{AssignError, ClaimError, SeatError};
