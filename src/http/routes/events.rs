//! The audit log of a course (tier SC): `GET /courses/{course_id}/events`, filtered and paged,
//! and `GET /courses/{course_id}/enrolments/{enrolment_id}/timeline`, one student's events with
//! a credit summary.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::schema::{Array, Object};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::domain::audit::EventType;
use crate::domain::datetime::serde_utc;
use crate::http::error::ApiError;
use crate::http::extract::{EnrolmentId, EnrolmentPath, Query};
use crate::http::fields::{self, Fields, FromFields};
use crate::http::gates::CourseSupport;
use crate::http::payloads::{EnrolmentOut, Envelope};
use crate::http::routes::virtual_labs::{DIRECTIONS, Page, direction_schema};
use crate::http::state::AppState;
use crate::repo::events::{CourseEvent, EventQuery};
use crate::usecases::events::read::{self, Credits, Timeline};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_events))
        .routes(routes!(enrolment_timeline))
}

/// The roles an event records.
const ROLES: &[&str] = &["service_admin", "course_admin", "student", "system"];

fn role_schema() -> Object {
    fields::string_enum(ROLES)
}

fn event_type_schema() -> Object {
    fields::string_enum(EventType::NAMES)
}

fn event_types_schema() -> Array {
    fields::string_enum_list(EventType::NAMES)
}

/// Who made the change.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActorOut {
    #[schema(schema_with = role_schema)]
    role: String,
    /// Null for the system.
    id: Option<Uuid>,
    /// The caller's token e-mail; null for the system.
    email: Option<String>,
}

/// CourseEventOut: one event of the audit log.
#[derive(Debug, Serialize, ToSchema)]
pub struct CourseEventOut {
    /// Insertion order (the one integer id of this API).
    id: i64,
    course_id: Uuid,
    #[schema(schema_with = event_type_schema)]
    event_type: String,
    #[serde(serialize_with = "serde_utc::serialize")]
    occurred_at: DateTime<Utc>,
    actor: ActorOut,
    enrolment_id: Option<Uuid>,
    seat_id: Option<Uuid>,
    project_id: Option<Uuid>,
    student_id: Option<String>,
    amount: Option<f64>,
    #[schema(value_type = Option<Object>)]
    before: Option<Value>,
    #[schema(value_type = Option<Object>)]
    after: Option<Value>,
    #[schema(value_type = Object)]
    data: Value,
    request_id: Option<String>,
}

fn float(amount: Decimal) -> f64 {
    amount.to_f64().unwrap_or_default()
}

impl From<CourseEvent> for CourseEventOut {
    fn from(e: CourseEvent) -> Self {
        Self {
            id: e.id,
            course_id: e.course_id,
            event_type: e.event_type,
            occurred_at: e.occurred_at,
            actor: ActorOut {
                role: e.actor_role,
                id: e.actor_id,
                email: e.actor_email,
            },
            enrolment_id: e.enrolment_id,
            seat_id: e.seat_id,
            project_id: e.project_id,
            student_id: e.student_id,
            amount: e.amount.map(float),
            before: e.before_values,
            after: e.after_values,
            data: e.data,
            request_id: e.request_id,
        }
    }
}

/// The query of `GET /courses/{course_id}/events`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventListQuery {
    /// ≥ 1, default 1.
    #[param(minimum = 1)]
    page: Option<i64>,
    /// 1..100, default 20.
    #[param(minimum = 1, maximum = 100)]
    page_size: Option<i64>,
    /// Only the events of this enrolment.
    enrolment_id: Option<Uuid>,
    /// Only the events of this seat.
    seat_id: Option<Uuid>,
    /// Only these event types; repeatable or comma-separated.
    #[param(schema_with = event_types_schema, required = false)]
    event_type: Vec<String>,
    /// `occurred_at` ≥ this datetime.
    occurred_after: Option<DateTime<Utc>>,
    /// `occurred_at` ≤ this datetime.
    occurred_before: Option<DateTime<Utc>>,
    /// `asc` or `desc` (default): applies to `occurred_at` and then to `id`.
    #[param(schema_with = direction_schema, required = false)]
    order_direction: Option<String>,
}

impl FromFields for EventListQuery {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        Some(Self {
            page: f.optional("page", &fields::integer_at_least(1)),
            page_size: f.optional("page_size", &fields::integer_between(1, 100)),
            enrolment_id: f.optional("enrolment_id", &fields::uuid),
            seat_id: f.optional("seat_id", &fields::uuid),
            event_type: f.list("event_type", EventType::NAMES),
            occurred_after: f.optional("occurred_after", &fields::datetime_value),
            occurred_before: f.optional("occurred_before", &fields::datetime_value),
            order_direction: f.optional("order_direction", &fields::one_of(DIRECTIONS)),
        })
    }
}

/// A course's audit events, newest first unless asked otherwise. A service admin may read
/// the events of a deleted course.
#[utoipa::path(get, path = "/courses/{course_id}/events", tag = "events", security(("bearer" = [])),
    params(("course_id" = Uuid, Path, description = "Course id"), EventListQuery),
    responses((status = 200, body = Page<CourseEventOut>), (status = 401), (status = 403),
        (status = 404), (status = 422)))]
async fn list_events(
    State(state): State<AppState>,
    gate: CourseSupport,
    Query(query): Query<EventListQuery>,
) -> Result<Json<Page<CourseEventOut>>, ApiError> {
    let page = query.page.unwrap_or(1);
    let listing = EventQuery {
        course_id: gate.course_id,
        enrolment_id: query.enrolment_id,
        seat_id: query.seat_id,
        event_types: query.event_type,
        occurred_after: query.occurred_after,
        occurred_before: query.occurred_before,
        descending: query.order_direction.as_deref() != Some("asc"),
        page,
        page_size: query.page_size.unwrap_or(20),
    };
    let (events, total) = read::list(&state.services, gate.course.as_ref(), &listing).await?;
    let data = events.into_iter().map(CourseEventOut::from).collect();
    Ok(Json(Page::new(data, page, total)))
}

/// The query of the timeline.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TimelineQuery {
    /// Read the project's current balance from the accounting service (not for dropped
    /// enrolments).
    include_balance: Option<bool>,
}

impl FromFields for TimelineQuery {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        Some(Self {
            include_balance: f.optional("include_balance", &fields::query_boolean),
        })
    }
}

/// The credit summary of the timeline.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreditsOut {
    /// The course's credits per seat, granted at assignment.
    granted: f64,
    topped_up: f64,
    top_ups_in_doubt: f64,
    /// What the drop's deplete moved back, once the drop settled.
    depleted: Option<f64>,
    /// With `include_balance=true` on an enrolment that is not dropped.
    current_balance: Option<f64>,
    spent: Option<f64>,
    /// Set when the balance read failed (the answer is still 200).
    balance_error: Option<String>,
}

impl From<Credits> for CreditsOut {
    fn from(c: Credits) -> Self {
        Self {
            granted: float(c.granted),
            topped_up: float(c.topped_up),
            top_ups_in_doubt: float(c.top_ups_in_doubt),
            depleted: c.depleted.map(float),
            current_balance: c.current_balance.map(float),
            spent: c.spent.map(float),
            balance_error: c.balance_error.map(str::to_owned),
        }
    }
}

/// The data of the timeline envelope.
#[derive(Debug, Serialize, ToSchema)]
pub struct TimelineOut {
    enrolment: EnrolmentOut,
    credits: CreditsOut,
    /// Every event of the enrolment, oldest first.
    events: Vec<CourseEventOut>,
}

impl From<Timeline> for TimelineOut {
    fn from(t: Timeline) -> Self {
        Self {
            enrolment: EnrolmentOut::new(
                &t.enrolment.enrolment,
                t.seat.as_ref(),
                t.enrolment.drop_state,
                t.claim_email.as_ref(),
            ),
            credits: t.credits.into(),
            events: t.events.into_iter().map(CourseEventOut::from).collect(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct TimelineEnvelope {
    message: String,
    data: TimelineOut,
}

/// One enrolment's audit events, oldest first, with its credit summary.
#[utoipa::path(get, path = "/courses/{course_id}/enrolments/{enrolment_id}/timeline",
    tag = "events", security(("bearer" = [])),
    params(EnrolmentPath, TimelineQuery),
    responses((status = 200, body = TimelineEnvelope), (status = 401), (status = 403),
        (status = 404), (status = 422)))]
async fn enrolment_timeline(
    State(state): State<AppState>,
    gate: CourseSupport,
    EnrolmentId(enrolment_id): EnrolmentId,
    Query(query): Query<TimelineQuery>,
) -> Result<Json<Envelope<TimelineOut>>, ApiError> {
    let timeline = read::timeline(
        &state.services,
        gate.course_id,
        gate.course.as_ref(),
        enrolment_id,
        query.include_balance.unwrap_or(false),
    )
    .await?;
    Ok(Envelope::new("Enrolment timeline", timeline.into()))
}
