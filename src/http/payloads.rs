//! Shared response shapes of api.md §3 and the envelope of §0.3.

use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::repo::institutions::Institution;

/// `{"message", "data"}`; `data` is always present.
#[derive(Debug, Serialize)]
pub struct Envelope<T: Serialize> {
    pub message: String,
    pub data: T,
}

impl<T: Serialize> Envelope<T> {
    pub fn new(message: impl Into<String>, data: T) -> axum::Json<Self> {
        axum::Json(Self {
            message: message.into(),
            data,
        })
    }
}

/// InstitutionOut (api.md §3.1).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InstitutionOut {
    pub id: Uuid,
    pub name: String,
    pub contact_email: String,
}

impl From<Institution> for InstitutionOut {
    fn from(i: Institution) -> Self {
        Self {
            id: i.id,
            name: i.name,
            contact_email: i.contact_email,
        }
    }
}
