//! `/seats/…` (api.md §4.6): provision, batches, transfer (SA); a course's seats, assignment
//! and the faculty drop (CA).

use std::collections::HashSet;

use axum::Json;
use axum::extract::State;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::schema::{
    Array, ArrayBuilder, KnownFormat, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, Type,
};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::domain::audit::Actor;
use crate::http::error::ApiError;
use crate::http::extract::{Body, PathUuid, Query, ServiceAdmin};
use crate::http::fields::{self, Fields, FromFields, parse_uuid};
use crate::http::gates::CourseAdmin;
use crate::http::idempotency::{self, IdempotencyKeyHeader};
use crate::http::payloads::{
    EnrolmentSummary, Envelope, InstitutionOut, SeatBatchCourseOut, SeatBatchOut,
    SeatBatchSearchResponse, SeatDetailOut, SeatDropResult, SeatOut,
};
use crate::http::state::AppState;
use crate::repo::seats::SeatSearch;
use crate::usecases::drops::faculty;
use crate::usecases::idempotency::{Keyed, Operation};
use crate::usecases::seats::assign::{self, Student, StudentResult};
use crate::usecases::seats::batches::{self, BatchSearch};
use crate::usecases::seats::transfer::{self, Amount};
use crate::usecases::seats::{list, provision};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(provision_seats))
        .routes(routes!(search_batches))
        .routes(routes!(get_batch))
        .routes(routes!(transfer_seats))
        .routes(routes!(list_seats))
        .routes(routes!(assign_seats))
        .routes(routes!(drop_seats))
}

/// The largest assign request (README §5.1).
const MAX_STUDENTS: usize = 1000;
/// The largest drop request.
const MAX_SEATS: usize = 1000;

// ---- provision ------------------------------------------------------------------------------

/// The body of `POST /seats/provision`.
#[derive(Debug, ToSchema)]
#[schema(example = json!({"course_id": "3f6c2b1a-9d8e-4f7a-b6c5-d4e3f2a1b0c9", "number_of_seats": 10}))]
pub struct ProvisionRequest {
    pub course_id: Uuid,
    /// 1..100.
    #[schema(value_type = i64, minimum = 1, maximum = 100)]
    pub number_of_seats: usize,
}

impl FromFields for ProvisionRequest {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        let course_id = f.required("course_id", &fields::uuid);
        let number_of_seats = f.required("number_of_seats", &|v: &Value| {
            // Within 1..=100, so it fits.
            fields::integer_between(1, 100)(v).map(|n| n.unsigned_abs() as usize)
        });
        Some(Self {
            course_id: course_id?,
            number_of_seats: number_of_seats?,
        })
    }
}

#[derive(Serialize, ToSchema)]
pub struct ProvisionedSeats {
    seats: Vec<SeatOut>,
}

#[derive(Serialize, ToSchema)]
pub struct ProvisionEnvelope {
    message: String,
    data: ProvisionedSeats,
}

/// Provision seats for an active course; all share one new batch.
#[utoipa::path(post, path = "/seats/provision", tag = "seats", security(("bearer" = [])),
    request_body = ProvisionRequest,
    responses((status = 200, body = ProvisionEnvelope), (status = 401), (status = 403), (status = 404),
        (status = 409), (status = 422)))]
async fn provision_seats(
    State(state): State<AppState>,
    ServiceAdmin(caller): ServiceAdmin,
    Body(body): Body<ProvisionRequest>,
) -> Result<Json<Envelope<ProvisionedSeats>>, ApiError> {
    let actor = Actor::service_admin(&caller);
    let seats = provision::provision(
        &state.services,
        &actor,
        body.course_id,
        body.number_of_seats,
    )
    .await?;
    Ok(Envelope::new(
        format!("Successfully provisioned {} seats", seats.len()),
        ProvisionedSeats {
            seats: seats.iter().map(SeatOut::from).collect(),
        },
    ))
}

// ---- batches --------------------------------------------------------------------------------

/// One batch, wherever its seats are now.
#[utoipa::path(get, path = "/seats/batches/{batch_id}", tag = "seats", security(("bearer" = [])),
    params(("batch_id" = Uuid, Path, description = "Batch id")),
    responses((status = 200, body = SeatBatchSearchResponse), (status = 401), (status = 403),
        (status = 404), (status = 422)))]
async fn get_batch(
    State(state): State<AppState>,
    ServiceAdmin(_caller): ServiceAdmin,
    PathUuid(batch_id): PathUuid,
) -> Result<Json<SeatBatchSearchResponse>, ApiError> {
    let found = batches::get_batch(&state.services, batch_id).await?;
    Ok(Json(batch_response(found)))
}

/// The query of `GET /seats/batches`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BatchSearchQuery {
    /// The seat's current course.
    pub course_id: Option<Uuid>,
    /// The seat's institution.
    pub institution_id: Option<Uuid>,
    /// Substring of the current course's lab name.
    #[param(pattern = r"^[^\u0000]*$")]
    pub vlab_name: Option<String>,
    /// Substring of the institution's name.
    #[param(pattern = r"^[^\u0000]*$")]
    pub institution_name: Option<String>,
    /// `created_at` ≥ this datetime.
    pub created_after: Option<DateTime<Utc>>,
    /// `created_at` ≤ this datetime.
    pub created_before: Option<DateTime<Utc>>,
}

impl FromFields for BatchSearchQuery {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        Some(Self {
            course_id: f.optional("course_id", &fields::uuid),
            institution_id: f.optional("institution_id", &fields::uuid),
            vlab_name: f.optional("vlab_name", &fields::any_string),
            institution_name: f.optional("institution_name", &fields::any_string),
            created_after: f.optional("created_after", &fields::datetime_value),
            created_before: f.optional("created_before", &fields::datetime_value),
        })
    }
}

/// Search seats and group them by batch; only matching seats are returned.
#[utoipa::path(get, path = "/seats/batches", tag = "seats", security(("bearer" = [])),
    params(BatchSearchQuery),
    responses((status = 200, body = SeatBatchSearchResponse), (status = 401), (status = 403),
        (status = 404), (status = 422)))]
async fn search_batches(
    State(state): State<AppState>,
    ServiceAdmin(_caller): ServiceAdmin,
    Query(query): Query<BatchSearchQuery>,
) -> Result<Json<SeatBatchSearchResponse>, ApiError> {
    let filters = SeatSearch {
        course_id: query.course_id,
        institution_id: query.institution_id,
        vlab_name: query.vlab_name,
        institution_name: query.institution_name,
        created_after: query.created_after,
        created_before: query.created_before,
    };
    let found = batches::search(&state.services, &filters).await?;
    Ok(Json(batch_response(found)))
}

fn batch_response(found: BatchSearch) -> SeatBatchSearchResponse {
    SeatBatchSearchResponse {
        institution: InstitutionOut::from(found.institution),
        course: SeatBatchCourseOut::from(&found.course),
        batches: found
            .batches
            .iter()
            .filter_map(|(batch_id, seats)| SeatBatchOut::new(*batch_id, seats))
            .collect(),
    }
}

// ---- transfer -------------------------------------------------------------------------------

/// The body of `POST /seats/transfer`.
#[derive(Debug, ToSchema)]
#[schema(example = json!({
    "source_course_id": "3f6c2b1a-9d8e-4f7a-b6c5-d4e3f2a1b0c9",
    "target_course_id": "8a7b6c5d-4e3f-4a1b-9c8d-7e6f5a4b3c2d",
    "amount": "all"
}))]
pub struct TransferRequest {
    pub source_course_id: Uuid,
    /// Must differ from the source.
    pub target_course_id: Uuid,
    /// A positive integer, or exactly `"all"`.
    #[schema(schema_with = amount_schema)]
    pub amount: Amount,
}

fn amount_schema() -> Schema {
    Schema::OneOf(
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(1)),
            )
            .item(fields::string_enum(&["all"]))
            .build(),
    )
}

impl FromFields for TransferRequest {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        let source = f.required("source_course_id", &fields::uuid);
        let target = f.required("target_course_id", &fields::uuid);
        if source.is_some() && source == target {
            f.error(
                "target_course_id",
                "source_course_id and target_course_id must be different",
            );
        }
        let amount = f.required("amount", &transfer_amount);
        Some(Self {
            source_course_id: source?,
            target_course_id: target?,
            amount: amount?,
        })
    }
}

#[derive(Serialize, ToSchema)]
pub struct TransferredSeats {
    transferred_count: usize,
    transferred_seats: Vec<SeatOut>,
}

#[derive(Serialize, ToSchema)]
pub struct TransferEnvelope {
    message: String,
    data: TransferredSeats,
}

/// Move available seats from a course past its drop window to one before it.
#[utoipa::path(post, path = "/seats/transfer", tag = "seats", security(("bearer" = [])),
    request_body = TransferRequest,
    responses((status = 200, body = TransferEnvelope), (status = 401), (status = 403), (status = 404),
        (status = 409), (status = 422)))]
async fn transfer_seats(
    State(state): State<AppState>,
    ServiceAdmin(caller): ServiceAdmin,
    Body(body): Body<TransferRequest>,
) -> Result<Json<Envelope<TransferredSeats>>, ApiError> {
    let moved = transfer::transfer(
        &state.services,
        &Actor::service_admin(&caller),
        body.source_course_id,
        body.target_course_id,
        body.amount,
    )
    .await?;
    Ok(Envelope::new(
        "Successfully transferred seats",
        TransferredSeats {
            transferred_count: moved.len(),
            transferred_seats: moved.iter().map(SeatOut::from).collect(),
        },
    ))
}

/// An integer ≥ 1 under the integer rules of api.md §0.2, or exactly `"all"`.
fn transfer_amount(value: &Value) -> Result<Amount, String> {
    if value.as_str() == Some("all") {
        return Ok(Amount::All);
    }
    match fields::integer(value) {
        Ok(n) if n >= 1 => Ok(Amount::Exactly(n)),
        _ => Err("Must be a positive integer or \"all\"".to_owned()),
    }
}

// ---- a course's seats -----------------------------------------------------------------------

#[derive(Serialize, ToSchema)]
pub struct SeatPagination {
    page: i64,
    page_size: usize,
    total_items: usize,
}

/// The list page of api.md §0.3, with every seat on page 1.
#[derive(Serialize, ToSchema)]
pub struct SeatListPage {
    data: Vec<SeatDetailOut>,
    pagination: SeatPagination,
}

/// Every seat now in the course, in every state.
#[utoipa::path(get, path = "/seats/courses/{course_id}", tag = "seats", security(("bearer" = [])),
    params(("course_id" = Uuid, Path, description = "Course id")),
    responses((status = 200, body = SeatListPage), (status = 401), (status = 403)))]
async fn list_seats(
    State(state): State<AppState>,
    gate: CourseAdmin,
) -> Result<Json<SeatListPage>, ApiError> {
    let seats = list::list_course_seats(&state.services, gate.course.id).await?;
    let data: Vec<SeatDetailOut> = seats
        .iter()
        .map(|(seat, enrolment)| SeatDetailOut {
            seat: SeatOut::from(seat),
            enrolment: enrolment.as_ref().map(EnrolmentSummary::from),
        })
        .collect();
    Ok(Json(SeatListPage {
        pagination: SeatPagination {
            page: 1,
            page_size: data.len(),
            total_items: data.len(),
        },
        data,
    }))
}

// ---- assign ---------------------------------------------------------------------------------

/// One student of an assign request.
#[derive(Debug, Clone, PartialEq, Eq, ToSchema)]
pub struct StudentIn {
    /// Trimmed, 1..250; unique within the request.
    #[schema(
        min_length = 1,
        max_length = 250,
        pattern = r"^[^\u0000]*[^\s\u0000][^\u0000]*$"
    )]
    pub student_id: String,
    /// Trimmed; unique within the request, case-insensitively.
    #[schema(format = Email)]
    pub email: String,
}

impl From<StudentIn> for Student {
    fn from(s: StudentIn) -> Self {
        Student {
            student_id: s.student_id,
            email: s.email,
        }
    }
}

/// The body of `POST /seats/courses/{course_id}/assign`.
#[derive(Debug, ToSchema)]
#[schema(example = json!({"students": [
    {"student_id": "s-1001", "email": "ada@students.unige.ch"},
    {"student_id": "s-1002", "email": "alan@students.unige.ch"}
]}))]
pub struct AssignRequest {
    /// 1..1000 students.
    #[schema(min_items = 1, max_items = 1000)]
    pub students: Vec<StudentIn>,
}

impl FromFields for AssignRequest {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        let students = f.required("students", &students);
        Some(Self {
            students: students?,
        })
    }
}

/// SeatAssignmentResult (api.md §3.13).
#[derive(Serialize, ToSchema)]
pub struct SeatAssignmentResult {
    student_id: String,
    email: String,
    assignment_successful: bool,
    seat_id: Option<Uuid>,
    enrolment_id: Option<Uuid>,
    project_id: Option<Uuid>,
    credit_transferred_amount: f64,
    email_sent: bool,
    error: Option<String>,
}

impl From<StudentResult> for SeatAssignmentResult {
    fn from(r: StudentResult) -> Self {
        let (enrolled, error) = match r.outcome {
            Ok(enrolled) => (Some(enrolled), None),
            Err(failure) => (None, Some(failure.to_string())),
        };
        Self {
            student_id: r.student.student_id,
            email: r.student.email,
            assignment_successful: enrolled.is_some(),
            seat_id: Some(r.seat_id),
            enrolment_id: enrolled.as_ref().map(|e| e.enrolment_id),
            project_id: enrolled.as_ref().map(|e| e.project_id),
            credit_transferred_amount: enrolled.as_ref().map_or(0.0, |e| f64::from(e.credits)),
            email_sent: enrolled.is_some_and(|e| e.email_sent),
            error,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct AssignResponse {
    results: Vec<SeatAssignmentResult>,
}

/// Assign a seat to each student: a project, its funding, an enrolment and a claim e-mail.
///
/// A 409 `ENTITY_ALREADY_EXISTS` lists the requested students already enrolled in the course
/// ("Students already enrolled in this course: …") and, in a sentence of its own, those being
/// enrolled by a request in progress ("Students being enrolled by a request in progress: …").
#[utoipa::path(post, path = "/seats/courses/{course_id}/assign", tag = "seats", security(("bearer" = [])),
    params(("course_id" = Uuid, Path, description = "Course id"),
        ("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = r"^[!#-\[\]-~]+$", min_length = 1, max_length = 255, description = idempotency::DESCRIPTION)),
    request_body = AssignRequest,
    responses((status = 200, body = AssignResponse), (status = 401), (status = 403), (status = 409),
        (status = 422)))]
async fn assign_seats(
    State(state): State<AppState>,
    gate: CourseAdmin,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    Body(body): Body<AssignRequest>,
) -> Result<Response, ApiError> {
    let students: Vec<Student> = body.students.into_iter().map(Student::from).collect();
    let keyed = key.map(|key| Keyed {
        caller: gate.caller.sub,
        operation: Operation::Assign,
        course_id: gate.course.id,
        key,
        request_hash: assign::request_hash(&students),
    });
    let services = state.services.clone();
    idempotency::answer(&state, keyed, move |attempt| async move {
        let results =
            assign::assign(&services, &gate.caller, gate.course.id, students, attempt).await?;
        Ok(AssignResponse {
            results: results
                .into_iter()
                .map(SeatAssignmentResult::from)
                .collect(),
        })
    })
    .await
}

/// The `students` list: 1..1000 valid items, then unique student ids, then unique e-mails.
/// The first problem found is the message (api.md §2.2).
fn students(value: &Value) -> Result<Vec<StudentIn>, String> {
    let items = value
        .as_array()
        .ok_or_else(|| "Must be a list".to_owned())?;
    if items.is_empty() {
        return Err("Must contain at least 1 item".to_owned());
    }
    if items.len() > MAX_STUDENTS {
        return Err(format!("Must contain at most {MAX_STUDENTS} items"));
    }
    let students = items
        .iter()
        .enumerate()
        .map(|(i, item)| student(i, item))
        .collect::<Result<Vec<_>, _>>()?;
    let mut ids = std::collections::HashSet::new();
    if let Some(dup) = students.iter().find(|s| !ids.insert(s.student_id.as_str())) {
        return Err(format!(
            "Duplicate student_id in request: {}",
            dup.student_id
        ));
    }
    let mut emails = std::collections::HashSet::new();
    if let Some(dup) = students
        .iter()
        .find(|s| !emails.insert(s.email.to_lowercase()))
    {
        return Err(format!("Duplicate email in request: {}", dup.email));
    }
    Ok(students)
}

fn student(i: usize, item: &Value) -> Result<StudentIn, String> {
    let Some(item) = item.as_object() else {
        return Err(format!("students[{i}]: Must be an object"));
    };
    let field = |key: &str, parse: &dyn Fn(&Value) -> Result<String, String>| match item.get(key) {
        None => Err(format!("students[{i}].{key}: Field required")),
        Some(Value::Null) => Err(format!("students[{i}].{key}: Must not be null")),
        Some(value) => parse(value).map_err(|m| format!("students[{i}].{key}: {m}")),
    };
    let student_id = field("student_id", &fields::text(1, 250))?;
    let email = field("email", &|v| fields::email(v).map(|e| e.into_string()))?;
    Ok(StudentIn { student_id, email })
}

// ---- faculty drop ---------------------------------------------------------------------------

#[derive(Serialize, ToSchema)]
pub struct SeatDropResults {
    results: Vec<SeatDropResult>,
}

/// The body of `POST /seats/courses/{course_id}/drop`.
#[derive(Debug, ToSchema)]
#[schema(example = json!({"seat_ids": ["9e8d7c6b-0000-4000-8000-000000000001"]}))]
pub struct SeatDropRequest {
    /// 1..1000 distinct seat ids.
    #[schema(schema_with = seat_ids_schema)]
    pub seat_ids: Vec<Uuid>,
}

impl FromFields for SeatDropRequest {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        let seat_ids = f.required("seat_ids", &seat_id_list);
        Some(Self {
            seat_ids: seat_ids?,
        })
    }
}

/// Drop the students on these seats: one result per seat, in request order.
#[utoipa::path(post, path = "/seats/courses/{course_id}/drop", tag = "seats", security(("bearer" = [])),
    params(("course_id" = Uuid, Path, description = "Course id")),
    request_body = SeatDropRequest,
    responses((status = 200, body = SeatDropResults), (status = 401), (status = 403), (status = 422)))]
async fn drop_seats(
    State(state): State<AppState>,
    gate: CourseAdmin,
    Body(body): Body<SeatDropRequest>,
) -> Result<Json<SeatDropResults>, ApiError> {
    let drops = faculty::drop_seats(
        &state.services,
        gate.course.id,
        Actor::staff(&gate.caller),
        body.seat_ids,
    )
    .await?;
    Ok(Json(SeatDropResults {
        results: drops.iter().map(SeatDropResult::from).collect(),
    }))
}

fn seat_ids_schema() -> Array {
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid))),
        )
        .min_items(Some(1))
        .max_items(Some(MAX_SEATS))
        .unique_items(true)
        .build()
}

/// `seat_ids`: 1..1000 UUIDs, no duplicates (compared as UUIDs).
fn seat_id_list(value: &Value) -> Result<Vec<Uuid>, String> {
    let items = value
        .as_array()
        .ok_or_else(|| "Must be a list".to_owned())?;
    if items.is_empty() {
        return Err("Must contain at least 1 item".to_owned());
    }
    if items.len() > MAX_SEATS {
        return Err(format!("Must contain at most {MAX_SEATS} items"));
    }
    let mut ids = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let id = item
            .as_str()
            .and_then(parse_uuid)
            .ok_or_else(|| format!("seat_ids[{i}]: Must be a UUID"))?;
        ids.push(id);
    }
    let mut seen = HashSet::with_capacity(ids.len());
    if let Some(duplicate) = ids.iter().find(|id| !seen.insert(**id)) {
        return Err(format!("Duplicate seat_id in request: {duplicate}"));
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn students_are_trimmed_and_checked_in_order() {
        let ok = students(&json!([{"student_id": " s1 ", "email": " A@uni.org "}])).unwrap();
        assert_eq!(
            ok,
            [StudentIn {
                student_id: "s1".to_owned(),
                email: "A@uni.org".to_owned()
            }]
        );
        let cases = [
            (json!("x"), "Must be a list"),
            (json!([]), "Must contain at least 1 item"),
            (
                json!([{"student_id": "a", "email": "a@uni.org"}, {"student_id": "b", "email": "nope"}]),
                "students[1].email: Must be a valid e-mail address",
            ),
            (
                json!([{"email": "nope"}]),
                "students[0].student_id: Field required",
            ),
            (
                json!([{"student_id": null, "email": "a@uni.org"}]),
                "students[0].student_id: Must not be null",
            ),
            (json!([3]), "students[0]: Must be an object"),
            (
                json!([
                    {"student_id": "a", "email": "x@uni.org"},
                    {"student_id": "b", "email": "X@UNI.org"},
                    {"student_id": "a", "email": "y@uni.org"}
                ]),
                "Duplicate student_id in request: a",
            ),
            (
                json!([
                    {"student_id": "a", "email": "x@uni.org"},
                    {"student_id": "b", "email": "X@UNI.org"}
                ]),
                "Duplicate email in request: X@UNI.org",
            ),
        ];
        for (value, message) in cases {
            assert_eq!(students(&value).unwrap_err(), message, "{value}");
        }
        let many: Vec<Value> = (0..1001)
            .map(|i| json!({"student_id": format!("s{i}"), "email": format!("s{i}@uni.org")}))
            .collect();
        assert_eq!(
            students(&Value::Array(many)).unwrap_err(),
            "Must contain at most 1000 items"
        );
    }

    #[test]
    fn the_amount_is_a_positive_integer_or_all() {
        assert_eq!(transfer_amount(&json!("all")), Ok(Amount::All));
        assert_eq!(transfer_amount(&json!(3)), Ok(Amount::Exactly(3)));
        assert_eq!(transfer_amount(&json!("3")), Ok(Amount::Exactly(3)));
        assert_eq!(transfer_amount(&json!(3.0)), Ok(Amount::Exactly(3)));
        for bad in [
            json!("ALL"),
            json!(0),
            json!(-1),
            json!(true),
            json!(2.5),
            json!("x"),
        ] {
            assert_eq!(
                transfer_amount(&bad),
                Err("Must be a positive integer or \"all\"".to_owned()),
                "{bad}"
            );
        }
    }

    #[test]
    fn seat_ids_are_checked_for_count_syntax_and_duplicates() {
        let a = "9e8d7c6b-0000-4000-8000-000000000001";
        let b = "9e8d7c6b-0000-4000-8000-000000000002";
        assert_eq!(seat_id_list(&json!("x")), Err("Must be a list".to_owned()));
        assert_eq!(
            seat_id_list(&json!([])),
            Err("Must contain at least 1 item".to_owned())
        );
        let many: Vec<String> = (0..1001).map(|_| a.to_owned()).collect();
        assert_eq!(
            seat_id_list(&json!(many)),
            Err("Must contain at most 1000 items".to_owned())
        );
        assert_eq!(
            seat_id_list(&json!([a, 5])),
            Err("seat_ids[1]: Must be a UUID".to_owned())
        );
        assert_eq!(
            seat_id_list(&json!([a, b, a.to_uppercase()])),
            Err(format!("Duplicate seat_id in request: {a}"))
        );
        assert_eq!(seat_id_list(&json!([b, a])).map(|v| v.len()), Ok(2));
    }
}
