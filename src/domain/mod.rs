//! Pure rules with no I/O: value formats, date checks, the recovery rule, group names.

pub mod backoff;
pub mod course_dates;
pub mod datetime;
pub mod email;
pub mod groups;
pub mod invite_token;
pub mod recovery;
