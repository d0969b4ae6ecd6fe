//! Shared response shapes of api.md §3 and the envelope of §0.3.

use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use chrono::{DateTime, Utc};

use crate::domain::datetime::serde_utc;
use crate::repo::courses::Course;
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

/// CourseOut (api.md §3.2): course create, update, activate and void.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CourseOut {
    pub id: Uuid,
    pub virtual_lab_id: Uuid,
    pub institution_id: Uuid,
    pub template_project_id: Uuid,
    /// `draft`, `active` or `voided`.
    pub status: String,
    pub credits_per_seat: i32,
    #[serde(serialize_with = "serde_utc::option::serialize")]
    pub start_date: Option<DateTime<Utc>>,
    #[serde(serialize_with = "serde_utc::option::serialize")]
    pub end_date: Option<DateTime<Utc>>,
    #[serde(serialize_with = "serde_utc::option::serialize")]
    pub last_drop_date: Option<DateTime<Utc>>,
    pub budget_depleted: bool,
}

impl From<&Course> for CourseOut {
    fn from(c: &Course) -> Self {
        Self {
            id: c.id,
            virtual_lab_id: c.virtual_lab_id,
            institution_id: c.institution_id,
            template_project_id: c.template_project_id,
            status: c.status.clone(),
            credits_per_seat: c.credits_per_seat,
            start_date: c.start_date,
            end_date: c.end_date,
            last_drop_date: c.last_drop_date,
            budget_depleted: c.budget_depleted,
        }
    }
}

/// VirtualLabCourseSummary (api.md §3.8): the `course` field of lab payloads.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VirtualLabCourseSummary {
    pub id: Uuid,
    pub virtual_lab_id: Uuid,
    pub template_project_id: Uuid,
    pub institution_id: Uuid,
    pub credits_per_seat: i32,
    #[serde(serialize_with = "serde_utc::option::serialize")]
    pub start_date: Option<DateTime<Utc>>,
    #[serde(serialize_with = "serde_utc::option::serialize")]
    pub end_date: Option<DateTime<Utc>>,
    #[serde(serialize_with = "serde_utc::option::serialize")]
    pub last_drop_date: Option<DateTime<Utc>>,
    pub status: String,
}

impl From<&Course> for VirtualLabCourseSummary {
    fn from(c: &Course) -> Self {
        Self {
            id: c.id,
            virtual_lab_id: c.virtual_lab_id,
            template_project_id: c.template_project_id,
            institution_id: c.institution_id,
            credits_per_seat: c.credits_per_seat,
            start_date: c.start_date,
            end_date: c.end_date,
            last_drop_date: c.last_drop_date,
            status: c.status.clone(),
        }
    }
}
