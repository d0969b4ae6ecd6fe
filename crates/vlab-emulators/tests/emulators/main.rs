//! Drives each emulator over real HTTP and SMTP. One binary, so the suite links once.

mod accounting;
mod faults;
mod keycloak;
mod smtp;
mod support;
