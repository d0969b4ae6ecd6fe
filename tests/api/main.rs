//! One integration-test binary (it links once): each module drives the real server over HTTP.

mod authn;
mod helpers;
mod institutions;
mod service;
