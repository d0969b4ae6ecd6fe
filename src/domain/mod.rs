//! Pure rules with no I/O: value formats, date checks, the recovery rule, group names, the caller and its roles.

pub mod access;
pub mod audit;
pub mod backoff;
pub mod caller;
pub mod claim_limit;
pub mod course_dates;
pub mod datetime;
pub mod email;
pub mod groups;
pub mod idempotency_key;
pub mod invite_token;
pub mod recovery;
pub mod roles;
