//! In-process emulators of the three systems vlab-courses talks to (spec/integrations.md),
//! used by the integration tests and by `vlab-dev`. Each is a loopback server on its own
//! tokio tasks, controlled through a cheap `Clone` handle:
//!
//! * [`KeycloakEmulator`]: one realm and one confidential client. The token endpoint
//!   (`client_credentials`, `password`, `refresh_token`), the JWKS (with an extra `use: enc`
//!   key that verifiers must skip), userinfo with **live** group paths, discovery, and the
//!   admin API calls of §2.6 (groups, members, memberships, users), with Keycloak's paths,
//!   status codes, `Location` headers and JSON shapes. RS256 tokens with real RSA keys.
//! * [`AccountingEmulator`]: the credit ledger of §3 (lab and project accounts, grant,
//!   deplete, top-up, assign, reverse) with exact decimals and the service's error format.
//! * [`SmtpCapture`]: an SMTP sink (EHLO, AUTH, MAIL, RCPT, DATA with dot-unstuffing, RSET,
//!   NOOP, QUIT) that keeps each message and lists them over HTTP (`GET /messages`).
//!
//! Every emulator logs the calls of its named operations ([`CallRecord`]), can fail them on
//! purpose ([`Fault`], [`FaultAction`]: an error status, a stall, or a connection closed
//! without an answer, before or after the operation is performed) and can delay them. The
//! HTTP ones also take faults over HTTP: `POST /_dev/faults` `{"operation", "mode": "error" |
//! "timeout", "times"}` (error = 500, or 451 for SMTP; timeout = a 120 s stall, not performed),
//! `DELETE /_dev/faults`, and `GET /_dev/calls`.
//!
//! # Where they deliberately differ from the real systems
//!
//! * Keycloak: one realm and one client; no browser login, no logout endpoint, no token
//!   introspection, no roles beyond the service account's `realm-management` roles. Refresh
//!   tokens are RS256 (Keycloak uses HS512). Password-grant tokens live one hour (Keycloak: 5
//!   min). Sessions are not persisted, so `revoke_user_sessions` lasts until a restart.
//!   `x5c` is not listed in the JWKS. Group names are unique only among siblings, as in
//!   Keycloak; there is no group attribute or role mapping.
//! * Keycloak userinfo accepts a token whose `sid` it does not know (e.g. one made with
//!   `mint_token_with_claims`, or from before a restart) as long as its user exists.
//! * Accounting: no balance, report or job endpoints; the bearer token is only checked to be
//!   present (not verified against Keycloak). The system account's balance is kept (it goes
//!   negative as credits are created) and shown in `/_dev/balances`.
//! * SMTP: no TLS, no STARTTLS, any credentials are accepted, no PIPELINING advertised, one
//!   message size limit; messages are never relayed.
//! * Faults: after a `Timeout*` stall the connection is closed without an answer (a late
//!   answer would blur "not performed" and "performed"); a dropped or stalled call is logged
//!   with status 0. Only HTTP/1.1 is served.

pub mod accounting;
pub mod faults;
pub mod keycloak;
mod persist;
mod server;
pub mod smtp;

pub use accounting::{AccountInfo, AccountingEmulator, AccountingOptions};
pub use faults::{CallRecord, Fault, FaultAction};
pub use keycloak::{GroupInfo, KeycloakEmulator, KeycloakOptions, UserSpec};
pub use smtp::{CapturedMessage, SmtpCapture, SmtpOptions};
