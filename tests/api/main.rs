//! One integration-test binary (it links once): each module drives the real server over HTTP.

mod authn;
mod fixtures;
mod helpers;
mod institutions;
mod service;
