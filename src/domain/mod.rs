//! Pure rules with no I/O: value formats, date checks, the recovery rule, group names.

pub mod datetime;
pub mod email;
pub mod groups;
