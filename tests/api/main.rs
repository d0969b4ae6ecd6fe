//! One integration-test binary (it links once): each module drives the real server over HTTP.

mod assign;
mod authn;
mod authn_challenge;
mod claim_activate;
mod claim_emails;
mod claim_links;
mod courses;
mod drop_preview;
mod drops;
mod email_outbox;
mod events;
mod expiry;
mod expiry_runs;
mod fixtures;
mod helpers;
mod institutions;
mod invites;
mod labs;
mod lifecycle;
mod openapi_document;
mod projects;
mod roster_import;
mod seats;
mod service;
mod void_delete;
mod waitlist;
