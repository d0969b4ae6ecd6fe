//! One integration-test binary (it links once): each module drives the real server over HTTP.

mod assign;
mod authn;
mod courses;
mod drops;
mod expiry;
mod fixtures;
mod helpers;
mod institutions;
mod invites;
mod labs;
mod lifecycle;
mod projects;
mod seats;
mod service;
mod void_delete;
