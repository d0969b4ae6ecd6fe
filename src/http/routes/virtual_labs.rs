//! `/virtual-labs` and `/virtual-labs/{virtual_lab_id}` (api.md §4.1).

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::clients::KeycloakUser;
use crate::domain::caller::Caller;
use crate::domain::datetime;
use crate::http::error::ApiError;
use crate::http::extract::{RawBody, RawQuery};
use crate::http::fields::{self, Fields, Patch};
use crate::http::gates;
use crate::http::payloads::{Envelope, VirtualLabDetails};
use crate::http::state::AppState;
use crate::repo::ListOrder;
use crate::repo::labs::{LabChanges, LabListing, Scope};
use crate::usecases::labs::{self, LabExpand, NewLabRequest};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/virtual-labs", post(create).get(list))
        .route(
            "/virtual-labs/{virtual_lab_id}",
            get(get_one).patch(update).delete(delete),
        )
}

/// The list page of api.md §0.3; `page_size` is the number of items in this page.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T: Serialize> {
    pub data: Vec<T>,
    pub pagination: Pagination,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Pagination {
    pub page: i64,
    pub page_size: i64,
    pub total_items: i64,
}

impl<T: Serialize> Page<T> {
    pub fn new(data: Vec<T>, page: i64, total_items: i64) -> Self {
        let page_size = i64::try_from(data.len()).unwrap_or(i64::MAX);
        Self {
            data,
            pagination: Pagination {
                page,
                page_size,
                total_items,
            },
        }
    }
}

/// `{"virtual_lab": …}`, the data of the PATCH and DELETE envelopes.
#[derive(Debug, Serialize, ToSchema)]
pub struct VirtualLabData {
    virtual_lab: VirtualLabDetails,
}

#[derive(Serialize, ToSchema)]
pub struct VirtualLabEnvelope {
    message: String,
    data: VirtualLabData,
}

/// VirtualLabWithAdmins (api.md §3.10).
#[derive(Debug, Serialize, ToSchema)]
pub struct VirtualLabWithAdmins {
    #[serde(flatten)]
    details: VirtualLabDetails,
    created_by: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    admins: Option<Vec<Uuid>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<OwnerOut>,
}

/// The lab owner as Keycloak knows them; unknown values are null.
#[derive(Debug, Serialize, ToSchema)]
pub struct OwnerOut {
    id: Uuid,
    username: Option<String>,
    email: Option<String>,
    created_at: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    name: Option<String>,
}

impl OwnerOut {
    fn new(owner_id: Uuid, user: Option<KeycloakUser>) -> Self {
        let user = user.unwrap_or_default();
        let full = format!(
            "{} {}",
            user.first_name.as_deref().unwrap_or(""),
            user.last_name.as_deref().unwrap_or("")
        )
        .trim()
        .to_owned();
        let name = if full.is_empty() {
            user.username.clone()
        } else {
            Some(full)
        };
        Self {
            id: owner_id,
            created_at: user
                .created_timestamp
                .and_then(chrono::DateTime::from_timestamp_millis)
                .map(|dt| datetime::format(&dt)),
            username: user.username,
            email: user.email,
            first_name: user.first_name,
            last_name: user.last_name,
            name,
        }
    }
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct VirtualLabCreate {
    /// Trimmed, 1..250 characters; unique among non-deleted labs (case-insensitive).
    name: String,
    description: String,
    /// Defaults to the caller's token e-mail.
    reference_email: Option<String>,
    /// Accepted and ignored.
    email_verified: Option<bool>,
    /// Trimmed, 1..250 characters.
    entity: String,
    /// `cell_a` (default) or `cell_b`.
    compute_cell: Option<String>,
    /// Service admins and the OBI owner user only.
    is_course: Option<bool>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct VirtualLabUpdate {
    name: Option<String>,
    description: Option<String>,
    /// `null` clears it.
    reference_email: Option<String>,
    entity: Option<String>,
}

/// Merges two 422s (e.g. the query's and the body's) into one; any other error wins as is.
pub fn both_valid(
    first: Result<(), ApiError>,
    second: Result<(), ApiError>,
) -> Result<(), ApiError> {
    match (first, second) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(e), Ok(())) | (Ok(()), Err(e)) => Err(e),
        (Err(mut a), Err(b)) => {
            if let (Value::Object(into), Value::Object(from)) = (a.details.as_mut(), *b.details) {
                for (k, v) in from {
                    into.entry(k).or_insert(v);
                }
            }
            Err(a)
        }
    }
}

/// Every `expand` value (repeatable or comma-separated) must be one of `allowed`.
pub fn expand_values(
    query: &RawQuery,
    allowed: &'static [&'static str],
) -> Result<Vec<String>, ApiError> {
    let values = query.all("expand");
    match values.iter().find(|v| !allowed.contains(&v.as_str())) {
        Some(_) => Err(ApiError::invalid_field(
            "expand",
            format!("Must be one of: {}", allowed.join(", ")),
        )),
        None => Ok(values),
    }
}

/// Create a lab; the caller becomes its owner and admin.
#[utoipa::path(post, path = "/virtual-labs", tag = "virtual-labs", security(("bearer" = [])),
    request_body = VirtualLabCreate,
    responses((status = 200, body = VirtualLabDetails), (status = 400), (status = 401), (status = 403),
        (status = 409), (status = 422), (status = 502)))]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: RawBody,
) -> Result<Json<VirtualLabDetails>, ApiError> {
    let body = body.object()?;
    let mut f = Fields::new(&body);
    let name = f.required("name", &fields::text(1, 250));
    let description = f.required("description", &fields::any_string);
    let reference_email = f.optional("reference_email", &fields::email);
    let _ignored = f.optional("email_verified", &fields::boolean);
    let entity = f.required("entity", &fields::text(1, 250));
    let compute_cell = f.optional("compute_cell", &fields::one_of(&["cell_a", "cell_b"]));
    let is_course = f.optional("is_course", &fields::boolean);
    f.finish()?;
    let (Some(name), Some(description), Some(entity)) = (name, description, entity) else {
        return Err(ApiError::internal());
    };
    let request = NewLabRequest {
        name,
        description,
        reference_email: reference_email.map(|e| e.with_lowercase_domain()),
        entity,
        compute_cell: compute_cell.unwrap_or_else(|| "cell_a".to_owned()),
        is_course: is_course.unwrap_or(false),
    };
    let lab = labs::create(&state.services, &caller, request).await?;
    state.auth.forget_groups(&caller);
    Ok(Json(VirtualLabDetails::new(&lab, None, None)))
}

/// The caller's labs: those named in their groups plus those they own.
#[utoipa::path(get, path = "/virtual-labs", tag = "virtual-labs", security(("bearer" = [])),
    params(
        ("page" = Option<i64>, Query, description = "≥ 1, default 1"),
        ("page_size" = Option<i64>, Query, description = "1..100, default 20"),
        ("scope" = Option<String>, Query, description = "`all` (default), `self` or `external`"),
        ("admin_access_only" = Option<bool>, Query, description = "Only labs where the caller is admin"),
        ("order_by" = Option<String>, Query, description = "`created_at`, `updated_at` (default), `name` or `owner`"),
        ("order_direction" = Option<String>, Query, description = "`asc` or `desc` (default)"),
        ("query" = Option<String>, Query, description = "Case-insensitive substring of the name"),
    ),
    responses((status = 200, body = Page<VirtualLabDetails>), (status = 401), (status = 422)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: RawQuery,
) -> Result<Json<Page<VirtualLabDetails>>, ApiError> {
    let query = query.object();
    let mut f = Fields::new(&query);
    let page = f.optional("page", &fields::integer_at_least(1));
    let page_size = f.optional("page_size", &fields::integer_between(1, 100));
    let scope = f.optional("scope", &fields::one_of(&["all", "self", "external"]));
    let admin_only = f.optional("admin_access_only", &fields::query_boolean);
    let order_by = f.optional(
        "order_by",
        &fields::one_of(&["created_at", "updated_at", "name", "owner"]),
    );
    let direction = f.optional("order_direction", &fields::one_of(&["asc", "desc"]));
    let search = f.optional("query", &fields::text(1, 200));
    f.finish()?;
    let admin_only = admin_only.unwrap_or(false);
    let page = page.unwrap_or(1);
    let listing = LabListing {
        caller: caller.sub,
        group_lab_ids: caller.groups.vlab_ids(admin_only),
        scope: match scope.as_deref() {
            Some("self") => Scope::Own,
            Some("external") => Scope::External,
            _ => Scope::All,
        },
        query: search,
        order: ListOrder::from_param(order_by.as_deref()),
        descending: direction.as_deref() != Some("asc"),
        page,
        page_size: page_size.unwrap_or(20),
    };
    let (views, total) = labs::list(&state.services, &listing).await?;
    let data = views
        .iter()
        .map(|v| VirtualLabDetails::new(&v.lab, Some(v.projects_count), v.course.as_ref()))
        .collect();
    Ok(Json(Page::new(data, page, total)))
}

/// One lab, optionally with its admins and owner read from Keycloak.
#[utoipa::path(get, path = "/virtual-labs/{virtual_lab_id}", tag = "virtual-labs", security(("bearer" = [])),
    params(
        ("virtual_lab_id" = String, Path, description = "Lab id (UUID)"),
        ("expand" = Option<Vec<String>>, Query, description = "`admins`, `owner`; repeatable or comma-separated"),
    ),
    responses((status = 200, body = VirtualLabWithAdmins), (status = 401), (status = 403), (status = 404),
        (status = 422), (status = 502)))]
async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw_id): Path<String>,
    query: RawQuery,
) -> Result<Json<VirtualLabWithAdmins>, ApiError> {
    let id = gates::vlab_any(&caller, &raw_id)?;
    let expand = expand_values(&query, &["admins", "owner"])?;
    let expand = LabExpand {
        admins: expand.iter().any(|v| v == "admins"),
        owner: expand.iter().any(|v| v == "owner"),
    };
    let found = labs::get(&state.services, id, expand).await?;
    let view = &found.view;
    Ok(Json(VirtualLabWithAdmins {
        details: VirtualLabDetails::new(&view.lab, Some(view.projects_count), view.course.as_ref()),
        created_by: view.lab.owner_id,
        admins: found.admins,
        owner: found
            .owner
            .map(|user| OwnerOut::new(view.lab.owner_id, user)),
    }))
}

/// Update a lab's name, description, reference e-mail or entity.
#[utoipa::path(patch, path = "/virtual-labs/{virtual_lab_id}", tag = "virtual-labs", security(("bearer" = [])),
    params(("virtual_lab_id" = String, Path, description = "Lab id (UUID)")),
    request_body = VirtualLabUpdate,
    responses((status = 200, body = VirtualLabEnvelope), (status = 401), (status = 403), (status = 404),
        (status = 409), (status = 422)))]
async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw_id): Path<String>,
    body: RawBody,
) -> Result<Json<Envelope<VirtualLabData>>, ApiError> {
    let id = gates::vlab_admin(&caller, &raw_id)?;
    let body = body.object()?;
    let mut f = Fields::new(&body);
    let name = f.patch_not_null("name", &fields::text(1, 250));
    let description = f.patch_not_null("description", &fields::any_string);
    let reference_email = match f.patch("reference_email", &fields::email) {
        Patch::Absent => None,
        Patch::Null => Some(None),
        Patch::Value(email) => Some(Some(email.with_lowercase_domain())),
    };
    let entity = f.patch_not_null("entity", &fields::text(1, 250));
    f.finish()?;
    let changes = LabChanges {
        name,
        description,
        reference_email,
        entity,
    };
    let lab = labs::update(&state.services, id, &changes).await?;
    let view = labs::load_view(&state.services, lab).await?;
    Ok(Envelope::new(
        "Updated virtual lab",
        VirtualLabData {
            virtual_lab: VirtualLabDetails::new(&view.lab, None, view.course.as_ref()),
        },
    ))
}

/// Soft-delete a lab and its projects (refused while its course is active).
#[utoipa::path(delete, path = "/virtual-labs/{virtual_lab_id}", tag = "virtual-labs", security(("bearer" = [])),
    params(("virtual_lab_id" = String, Path, description = "Lab id (UUID)")),
    responses((status = 200, body = VirtualLabEnvelope), (status = 401), (status = 403), (status = 404),
        (status = 409)))]
async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw_id): Path<String>,
) -> Result<Json<Envelope<VirtualLabData>>, ApiError> {
    let id = gates::vlab_admin(&caller, &raw_id)?;
    let view = labs::soft_delete(&state.services, id, caller.sub).await?;
    Ok(Envelope::new(
        "Deleted virtual lab",
        VirtualLabData {
            virtual_lab: VirtualLabDetails::new(&view.lab, None, view.course.as_ref()),
        },
    ))
}
