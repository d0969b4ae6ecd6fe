//! Outbound clients: Keycloak admin API, accounting service and SMTP (integrations.md).
//!
//! Each client sits behind a trait so that use cases depend on behaviour, not on transport.
//! Every failure is classified as *definite* (the peer did not act) or *uncertain* (it may have
//! acted), because the compensation ledger decides what to undo from that class.

pub mod accounting;
pub mod http;
pub mod keycloak;
pub mod mail;
pub mod request_context;
pub mod service_token;

use async_trait::async_trait;
use rust_decimal::Decimal;
use uuid::Uuid;

pub use mail::{Email, MailError};

/// The outcome class of a failed call (integrations.md §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// The request was not acted on: a non-2xx answer, or the connection never opened.
    Definite,
    /// The peer may have acted: a timeout or broken connection after sending, or a 2xx whose
    /// body could not be read.
    Uncertain,
}

/// A failed Keycloak or accounting call, after its retries.
///
/// The `Display` text is for logs only; it may contain upstream bodies and is never sent to
/// API clients.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{operation}: could not connect: {message}")]
    Connect {
        operation: &'static str,
        message: String,
    },
    #[error("{operation}: timed out")]
    Timeout { operation: &'static str },
    #[error("{operation}: connection broken after the request was sent: {message}")]
    Broken {
        operation: &'static str,
        message: String,
    },
    #[error("{operation}: unexpected status {status}: {body}")]
    Status {
        operation: &'static str,
        status: u16,
        body: String,
    },
    /// The accounting service answered with its error body (integrations.md §3.1).
    #[error("{operation}: accounting error {status} {error_code}: {message}")]
    Accounting {
        operation: &'static str,
        status: u16,
        error_code: String,
        message: String,
    },
    #[error("{operation}: not found")]
    NotFound { operation: &'static str },
    #[error("{operation}: conflict")]
    Conflict { operation: &'static str },
    #[error("{operation}: could not decode the response: {message}")]
    Decode {
        operation: &'static str,
        message: String,
    },
    /// The service token could not be obtained, so the call was never sent.
    #[error("{operation}: no service token: {message}")]
    Token {
        operation: &'static str,
        message: String,
    },
}

impl ClientError {
    pub fn class(&self) -> FailureClass {
        match self {
            ClientError::Timeout { .. }
            | ClientError::Broken { .. }
            | ClientError::Decode { .. } => FailureClass::Uncertain,
            ClientError::Connect { .. }
            | ClientError::Status { .. }
            | ClientError::Accounting { .. }
            | ClientError::NotFound { .. }
            | ClientError::Conflict { .. }
            | ClientError::Token { .. } => FailureClass::Definite,
        }
    }

    pub fn is_uncertain(&self) -> bool {
        self.class() == FailureClass::Uncertain
    }

    /// A 404: the entity (group, user, accounting account) does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            ClientError::NotFound { .. } | ClientError::Accounting { status: 404, .. }
        )
    }

    pub fn operation(&self) -> &'static str {
        match self {
            ClientError::Connect { operation, .. }
            | ClientError::Timeout { operation }
            | ClientError::Broken { operation, .. }
            | ClientError::Status { operation, .. }
            | ClientError::Accounting { operation, .. }
            | ClientError::NotFound { operation }
            | ClientError::Conflict { operation }
            | ClientError::Decode { operation, .. }
            | ClientError::Token { operation, .. } => operation,
        }
    }
}

/// A member of a Keycloak group (`kc_list_members`); only `id` is guaranteed. Keycloak leaves
/// `email` out of the brief representation of a user who has none.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct GroupMember {
    pub id: Uuid,
    #[serde(default)]
    pub email: Option<String>,
}

/// A Keycloak user (`kc_get_user`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeycloakUser {
    pub id: Option<Uuid>,
    pub username: Option<String>,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    /// Epoch milliseconds.
    pub created_timestamp: Option<i64>,
}

/// The Keycloak admin calls of integrations.md §2.6.
#[async_trait]
pub trait KeycloakAdmin: Send + Sync + 'static {
    /// `kc_create_group`: creates a top-level group and returns its id (from `Location`).
    /// A 409 is resolved by name with `find_group` and counts as success.
    async fn create_group(&self, name: &str) -> Result<String, ClientError>;
    /// `kc_find_group`: the id of the top-level group with exactly this name.
    async fn find_group(&self, name: &str) -> Result<Option<String>, ClientError>;
    /// `kc_delete_group`: 404 counts as success.
    async fn delete_group(&self, group_id: &str) -> Result<(), ClientError>;
    /// `kc_list_members`: every member, fetched page by page.
    async fn list_members(&self, group_id: &str) -> Result<Vec<GroupMember>, ClientError>;
    /// `kc_add_member`: idempotent.
    async fn add_member(&self, user_id: Uuid, group_id: &str) -> Result<(), ClientError>;
    /// `kc_remove_member`: idempotent; 404 counts as success.
    async fn remove_member(&self, user_id: Uuid, group_id: &str) -> Result<(), ClientError>;
    /// `kc_get_user`: `None` on 404.
    async fn get_user(&self, user_id: Uuid) -> Result<Option<KeycloakUser>, ClientError>;
}

/// The `Idempotency-Key` header of an accounting `POST` (round2.md §1.9): the accounting
/// service ignores it today, and this service never relies on it. Built only from ids, so it is
/// always a valid header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// The key of a journaled step: `<saga id>:<seq>`.
    pub fn saga_step(saga_id: Uuid, seq: u32) -> Self {
        Self(format!("{saga_id}:{seq}"))
    }

    /// The key of a credit top-up: its id.
    pub fn top_up(top_up_id: Uuid) -> Self {
        Self(top_up_id.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The accounting calls of integrations.md §3.2. The creating `POST`s take the
/// `Idempotency-Key` of the unit of work that sends them (`None`: no header).
#[async_trait]
pub trait Accounting: Send + Sync + 'static {
    async fn create_vlab_account(
        &self,
        vlab_id: Uuid,
        name: &str,
        key: Option<&IdempotencyKey>,
    ) -> Result<(), ClientError>;
    async fn create_project_account(
        &self,
        project_id: Uuid,
        vlab_id: Uuid,
        name: &str,
        key: Option<&IdempotencyKey>,
    ) -> Result<(), ClientError>;
    /// Creates `amount` new credits for the project.
    async fn grant(
        &self,
        project_id: Uuid,
        amount: i64,
        key: Option<&IdempotencyKey>,
    ) -> Result<(), ClientError>;
    /// Moves the project's whole balance back to the system; returns the amount moved.
    async fn deplete_project(&self, project_id: Uuid) -> Result<Decimal, ClientError>;
    /// Moves every balance of the lab and its projects back to the system; returns the amount
    /// moved when the answer states it readably (`None` is still a success).
    async fn deplete_vlab(&self, vlab_id: Uuid) -> Result<Option<Decimal>, ClientError>;
    /// `acc_project_balance`: what a project deplete would move, and what running jobs hold.
    async fn project_balance(&self, project_id: Uuid) -> Result<ProjectBalance, ClientError>;
    /// `acc_vlab_balance` with its projects: one read for a whole course's students.
    async fn vlab_balance(&self, vlab_id: Uuid) -> Result<VlabBalance, ClientError>;
}

/// A project's credits (`acc_project_balance`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProjectBalance {
    pub balance: Decimal,
    /// Credits held by running jobs; not moved by a deplete.
    pub reservation: Decimal,
}

/// A lab's credits and its projects' (`acc_vlab_balance?include_projects=true`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VlabBalance {
    pub balance: Decimal,
    pub projects: std::collections::HashMap<Uuid, ProjectBalance>,
}

/// Sends one e-mail over SMTP (integrations.md §4).
#[async_trait]
pub trait Mailer: Send + Sync + 'static {
    async fn send(&self, email: &Email) -> Result<(), MailError>;
}
