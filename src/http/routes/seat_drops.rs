//! `POST /seats/courses/{course_id}/drop` (api.md §4.6.7): faculty drop, tier CA.

use std::collections::HashSet;

use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::caller::Caller;
use crate::http::error::ApiError;
use crate::http::extract::RawBody;
use crate::http::fields::{Fields, parse_uuid};
use crate::http::gates;
use crate::http::payloads::SeatDropResult;
use crate::http::state::AppState;
use crate::usecases::drops::faculty;

/// At most this many seats per request.
const MAX_SEATS: usize = 1000;

pub fn router() -> Router<AppState> {
    Router::new().route("/seats/courses/{course_id}/drop", post(drop_seats))
}

#[derive(Serialize, ToSchema)]
pub struct SeatDropResults {
    results: Vec<SeatDropResult>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct SeatDropRequest {
    /// 1..1000 distinct seat ids.
    seat_ids: Vec<Uuid>,
}

/// Drop the students on these seats: one result per seat, in request order.
#[utoipa::path(post, path = "/seats/courses/{course_id}/drop", tag = "seats", security(("bearer" = [])),
    params(("course_id" = String, Path, description = "Course id (UUID)")),
    request_body = SeatDropRequest,
    responses((status = 200, body = SeatDropResults), (status = 401), (status = 403), (status = 422)))]
async fn drop_seats(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw_id): Path<String>,
    body: RawBody,
) -> Result<Json<SeatDropResults>, ApiError> {
    let course = gates::course_admin(&state, &caller, &raw_id).await?;
    let body = body.object()?;
    let mut f = Fields::new(&body);
    let seat_ids = f.required("seat_ids", &seat_id_list);
    f.finish()?;
    let Some(seat_ids) = seat_ids else {
        return Err(ApiError::internal());
    };
    let drops = faculty::drop_seats(&state.services, course.id, caller.sub, seat_ids).await?;
    Ok(Json(SeatDropResults {
        results: drops.iter().map(SeatDropResult::from).collect(),
    }))
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
