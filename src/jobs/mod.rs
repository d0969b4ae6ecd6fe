//! Work that runs without a request: the background worker of every server process and the
//! daily expiry job. Both drive the use cases; neither has routes of its own.

pub mod expiry;
pub mod worker;
