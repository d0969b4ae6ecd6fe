//! `/seats/…` (api.md §4.6.1–§4.6.6): provision, batches, transfer (SA); a course's seats and
//! assignment (CA). The drop endpoint lives in `seat_drops`.

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use super::institutions::path_uuid;
use crate::domain::caller::Caller;
use crate::http::error::ApiError;
use crate::http::extract::{RawBody, RawQuery, ServiceAdmin};
use crate::http::fields::{self, Fields};
use crate::http::gates;
use crate::http::payloads::{
    EnrolmentSummary, Envelope, InstitutionOut, SeatBatchCourseOut, SeatBatchOut,
    SeatBatchSearchResponse, SeatDetailOut, SeatOut,
};
use crate::http::state::AppState;
use crate::repo::seats::SeatSearch;
use crate::usecases::seats::assign::{self, Student, StudentResult};
use crate::usecases::seats::batches::{self, BatchSearch};
use crate::usecases::seats::transfer::{self, Amount};
use crate::usecases::seats::{list, provision};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/seats/provision", post(provision_seats))
        .route("/seats/batches", get(search_batches))
        .route("/seats/batches/{batch_id}", get(get_batch))
        .route("/seats/transfer", post(transfer_seats))
        .route("/seats/courses/{course_id}", get(list_seats))
        .route("/seats/courses/{course_id}/assign", post(assign_seats))
}

/// The largest assign request (README §5.1).
const MAX_STUDENTS: usize = 1000;

// ---- provision ------------------------------------------------------------------------------

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ProvisionRequest {
    course_id: Uuid,
    /// 1..100.
    number_of_seats: i64,
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
    ServiceAdmin(_caller): ServiceAdmin,
    body: RawBody,
) -> Result<Json<Envelope<ProvisionedSeats>>, ApiError> {
    let body = body.object()?;
    let mut f = Fields::new(&body);
    let course_id = f.required("course_id", &fields::uuid);
    let n = f.required("number_of_seats", &fields::integer_between(1, 100));
    f.finish()?;
    let (Some(course_id), Some(n)) = (course_id, n) else {
        return Err(ApiError::internal());
    };
    let n = usize::try_from(n).map_err(|_| ApiError::internal())?;
    let seats = provision::provision(&state.services, course_id, n).await?;
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
    params(("batch_id" = String, Path, description = "Batch id (UUID)")),
    responses((status = 200, body = SeatBatchSearchResponse), (status = 401), (status = 403),
        (status = 404), (status = 422)))]
async fn get_batch(
    State(state): State<AppState>,
    ServiceAdmin(_caller): ServiceAdmin,
    Path(raw_id): Path<String>,
) -> Result<Json<SeatBatchSearchResponse>, ApiError> {
    let batch_id = path_uuid("batch_id", &raw_id)?;
    let found = batches::get_batch(&state.services, batch_id).await?;
    Ok(Json(batch_response(found)))
}

/// Search seats and group them by batch; only matching seats are returned.
#[utoipa::path(get, path = "/seats/batches", tag = "seats", security(("bearer" = [])),
    params(
        ("course_id" = Option<String>, Query, description = "The seat's current course"),
        ("institution_id" = Option<String>, Query, description = "The seat's institution"),
        ("vlab_name" = Option<String>, Query, description = "Substring of the current course's lab name"),
        ("institution_name" = Option<String>, Query, description = "Substring of the institution's name"),
        ("created_after" = Option<String>, Query, description = "created_at >= this datetime"),
        ("created_before" = Option<String>, Query, description = "created_at <= this datetime"),
    ),
    responses((status = 200, body = SeatBatchSearchResponse), (status = 401), (status = 403),
        (status = 404), (status = 422)))]
async fn search_batches(
    State(state): State<AppState>,
    ServiceAdmin(_caller): ServiceAdmin,
    query: RawQuery,
) -> Result<Json<SeatBatchSearchResponse>, ApiError> {
    let query = query.object();
    let mut f = Fields::new(&query);
    let filters = SeatSearch {
        course_id: f.optional("course_id", &fields::uuid),
        institution_id: f.optional("institution_id", &fields::uuid),
        vlab_name: f.optional("vlab_name", &fields::any_string),
        institution_name: f.optional("institution_name", &fields::any_string),
        created_after: f.optional("created_after", &fields::datetime_value),
        created_before: f.optional("created_before", &fields::datetime_value),
    };
    f.finish()?;
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

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TransferRequest {
    source_course_id: Uuid,
    /// Must differ from the source.
    target_course_id: Uuid,
    /// A positive integer, or exactly `"all"`.
    #[schema(value_type = Object)]
    amount: Value,
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
    ServiceAdmin(_caller): ServiceAdmin,
    body: RawBody,
) -> Result<Json<Envelope<TransferredSeats>>, ApiError> {
    let body = body.object()?;
    let mut f = Fields::new(&body);
    let source = f.required("source_course_id", &fields::uuid);
    let target = f.required("target_course_id", &fields::uuid);
    if source.is_some() && source == target {
        f.error(
            "target_course_id",
            "source_course_id and target_course_id must be different",
        );
    }
    let amount = f.required("amount", &transfer_amount);
    f.finish()?;
    let (Some(source), Some(target), Some(amount)) = (source, target, amount) else {
        return Err(ApiError::internal());
    };
    let moved = transfer::transfer(&state.services, source, target, amount).await?;
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
    params(("course_id" = String, Path, description = "Course id (UUID)")),
    responses((status = 200, body = SeatListPage), (status = 401), (status = 403)))]
async fn list_seats(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw_id): Path<String>,
) -> Result<Json<SeatListPage>, ApiError> {
    let course = gates::course_admin(&state, &caller, &raw_id).await?;
    let seats = list::list_course_seats(&state.services, course.id).await?;
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

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct StudentIn {
    /// Trimmed, 1..250; unique within the request.
    student_id: String,
    /// Trimmed; unique within the request, case-insensitively.
    email: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct AssignRequest {
    /// 1..1000 students.
    students: Vec<StudentIn>,
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
#[utoipa::path(post, path = "/seats/courses/{course_id}/assign", tag = "seats", security(("bearer" = [])),
    params(("course_id" = String, Path, description = "Course id (UUID)")),
    request_body = AssignRequest,
    responses((status = 200, body = AssignResponse), (status = 401), (status = 403), (status = 409),
        (status = 422)))]
async fn assign_seats(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw_id): Path<String>,
    body: RawBody,
) -> Result<Json<AssignResponse>, ApiError> {
    let course = gates::course_admin(&state, &caller, &raw_id).await?;
    let body = body.object()?;
    let students = read_students(&body)?;
    let results = assign::assign(&state.services, caller.sub, course.id, students).await?;
    Ok(Json(AssignResponse {
        results: results
            .into_iter()
            .map(SeatAssignmentResult::from)
            .collect(),
    }))
}

fn read_students(body: &Map<String, Value>) -> Result<Vec<Student>, ApiError> {
    let mut f = Fields::new(body);
    let students = f.required("students", &students);
    f.finish()?;
    students.ok_or_else(ApiError::internal)
}

/// The `students` list: 1..1000 valid items, then unique student ids, then unique e-mails.
/// The first problem found is the message (api.md §2.2).
fn students(value: &Value) -> Result<Vec<Student>, String> {
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

fn student(i: usize, item: &Value) -> Result<Student, String> {
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
    Ok(Student { student_id, email })
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
            [Student {
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
}
