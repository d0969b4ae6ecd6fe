//! `/virtual-labs` and `/virtual-labs/{virtual_lab_id}` (api.md §4.1).

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::openapi::schema::{Array, Object};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::clients::KeycloakUser;
use crate::domain::caller::Caller;
use crate::domain::datetime;
use crate::domain::email::EmailAddress;
use crate::http::error::ApiError;
use crate::http::extract::{Body, Query};
use crate::http::fields::{self, Fields, FromFields};
use crate::http::gates::{VlabAdmin, VlabMember};
use crate::http::payloads::{Envelope, VirtualLabDetails};
use crate::http::state::AppState;
use crate::repo::ListOrder;
use crate::repo::labs::{LabChanges, LabListing, Scope};
use crate::usecases::labs::{self, LabExpand, NewLabRequest};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get_one, update, delete))
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

const COMPUTE_CELLS: &[&str] = &["cell_a", "cell_b"];
const SCOPES: &[&str] = &["all", "self", "external"];
/// The `order_by` values of the lab and project lists.
pub const ORDER_BY: &[&str] = &["created_at", "updated_at", "name", "owner"];
/// The `order_direction` values of the lab and project lists.
pub const DIRECTIONS: &[&str] = &["asc", "desc"];
const LAB_EXPAND: &[&str] = &["admins", "owner"];

fn compute_cell_schema() -> Object {
    fields::string_enum(COMPUTE_CELLS)
}
fn scope_schema() -> Object {
    fields::string_enum(SCOPES)
}
/// The schema of `order_by`.
pub fn order_by_schema() -> Object {
    fields::string_enum(ORDER_BY)
}
/// The schema of `order_direction`.
pub fn direction_schema() -> Object {
    fields::string_enum(DIRECTIONS)
}
fn lab_expand_schema() -> Array {
    fields::string_enum_list(LAB_EXPAND)
}

/// The body of `POST /virtual-labs`.
#[derive(Debug, ToSchema)]
#[schema(example = json!({
    "name": "Neuroscience 101",
    "description": "Course lab of the autumn semester",
    "reference_email": "lab-admin@unige.ch",
    "entity": "University of Geneva",
    "compute_cell": "cell_a",
    "is_course": true
}))]
pub struct VirtualLabCreate {
    /// Trimmed, 1..250 characters; unique among non-deleted labs (case-insensitive).
    #[schema(
        min_length = 1,
        max_length = 250,
        pattern = r"^[^\u0000]*[^\s\u0000][^\u0000]*$"
    )]
    pub name: String,
    #[schema(pattern = r"^[^\u0000]*$")]
    pub description: String,
    /// Defaults to the caller's token e-mail.
    #[schema(value_type = Option<String>, format = Email)]
    pub reference_email: Option<EmailAddress>,
    /// Accepted and ignored.
    pub email_verified: Option<bool>,
    /// Trimmed, 1..250 characters.
    #[schema(
        min_length = 1,
        max_length = 250,
        pattern = r"^[^\u0000]*[^\s\u0000][^\u0000]*$"
    )]
    pub entity: String,
    /// `cell_a` (default) or `cell_b`.
    #[schema(schema_with = compute_cell_schema, required = false)]
    pub compute_cell: Option<String>,
    /// Service admins and the OBI owner user only.
    pub is_course: Option<bool>,
}

impl FromFields for VirtualLabCreate {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        let name = f.required("name", &fields::text(1, 250));
        let description = f.required("description", &fields::any_string);
        let reference_email = f.optional("reference_email", &fields::email);
        let email_verified = f.optional("email_verified", &fields::boolean);
        let entity = f.required("entity", &fields::text(1, 250));
        let compute_cell = f.optional("compute_cell", &fields::one_of(COMPUTE_CELLS));
        let is_course = f.optional("is_course", &fields::boolean);
        Some(Self {
            name: name?,
            description: description?,
            reference_email,
            email_verified,
            entity: entity?,
            compute_cell,
            is_course,
        })
    }
}

/// The body of `PATCH /virtual-labs/{virtual_lab_id}`: only the keys present are applied.
#[derive(Debug, ToSchema)]
#[schema(example = json!({"description": "Spring semester", "reference_email": null}))]
pub struct VirtualLabUpdate {
    /// Trimmed, 1..250 characters; `null` is rejected.
    #[schema(value_type = String, required = false, min_length = 1, max_length = 250, pattern = r"^[^\u0000]*[^\s\u0000][^\u0000]*$")]
    pub name: Option<String>,
    /// `null` is rejected.
    #[schema(value_type = String, required = false, pattern = r"^[^\u0000]*$")]
    pub description: Option<String>,
    /// `null` clears it.
    #[schema(value_type = Option<String>, required = false, format = Email)]
    pub reference_email: Option<Option<String>>,
    /// Trimmed, 1..250 characters; `null` is rejected.
    #[schema(value_type = String, required = false, min_length = 1, max_length = 250, pattern = r"^[^\u0000]*[^\s\u0000][^\u0000]*$")]
    pub entity: Option<String>,
}

impl FromFields for VirtualLabUpdate {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        let name = f.patch_not_null("name", &fields::text(1, 250));
        let description = f.patch_not_null("description", &fields::any_string);
        let reference_email = f
            .nullable("reference_email", &fields::email)
            .map(|email| email.map(|e| e.with_lowercase_domain()));
        let entity = f.patch_not_null("entity", &fields::text(1, 250));
        Some(Self {
            name,
            description,
            reference_email,
            entity,
        })
    }
}

/// The query of `GET /virtual-labs`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LabListQuery {
    /// ≥ 1, default 1.
    #[param(minimum = 1)]
    pub page: Option<i64>,
    /// 1..100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub page_size: Option<i64>,
    /// `all` (default), `self` or `external`.
    #[param(schema_with = scope_schema, required = false)]
    pub scope: Option<String>,
    /// Only labs where the caller is admin.
    pub admin_access_only: Option<bool>,
    /// `created_at`, `updated_at` (default), `name` or `owner`.
    #[param(schema_with = order_by_schema, required = false)]
    pub order_by: Option<String>,
    /// `asc` or `desc` (default).
    #[param(schema_with = direction_schema, required = false)]
    pub order_direction: Option<String>,
    /// Case-insensitive substring of the name; trimmed, 1..200 characters.
    #[param(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000]*[^\s\u0000][^\u0000]*$"
    )]
    pub query: Option<String>,
}

impl FromFields for LabListQuery {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        Some(Self {
            page: f.optional("page", &fields::integer_at_least(1)),
            page_size: f.optional("page_size", &fields::integer_between(1, 100)),
            scope: f.optional("scope", &fields::one_of(SCOPES)),
            admin_access_only: f.optional("admin_access_only", &fields::query_boolean),
            order_by: f.optional("order_by", &fields::one_of(ORDER_BY)),
            order_direction: f.optional("order_direction", &fields::one_of(DIRECTIONS)),
            query: f.optional("query", &fields::text(1, 200)),
        })
    }
}

/// The query of `GET /virtual-labs/{virtual_lab_id}`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LabExpandQuery {
    /// `admins`, `owner`; repeatable or comma-separated.
    #[param(schema_with = lab_expand_schema, required = false)]
    pub expand: Vec<String>,
}

impl FromFields for LabExpandQuery {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        Some(Self {
            expand: f.list("expand", LAB_EXPAND),
        })
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
    Body(body): Body<VirtualLabCreate>,
) -> Result<Json<VirtualLabDetails>, ApiError> {
    let request = NewLabRequest {
        name: body.name,
        description: body.description,
        reference_email: body.reference_email.map(|e| e.with_lowercase_domain()),
        entity: body.entity,
        compute_cell: body.compute_cell.unwrap_or_else(|| "cell_a".to_owned()),
        is_course: body.is_course.unwrap_or(false),
    };
    let lab = labs::create(&state.services, &caller, request).await?;
    state.auth.forget_groups(&caller);
    Ok(Json(VirtualLabDetails::new(&lab, None, None)))
}

/// The caller's labs: those named in their groups plus those they own.
#[utoipa::path(get, path = "/virtual-labs", tag = "virtual-labs", security(("bearer" = [])),
    params(LabListQuery),
    responses((status = 200, body = Page<VirtualLabDetails>), (status = 401), (status = 422)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<LabListQuery>,
) -> Result<Json<Page<VirtualLabDetails>>, ApiError> {
    let admin_only = query.admin_access_only.unwrap_or(false);
    let page = query.page.unwrap_or(1);
    let listing = LabListing {
        caller: caller.sub,
        group_lab_ids: caller.groups.vlab_ids(admin_only),
        scope: match query.scope.as_deref() {
            Some("self") => Scope::Own,
            Some("external") => Scope::External,
            _ => Scope::All,
        },
        query: query.query,
        order: ListOrder::from_param(query.order_by.as_deref()),
        descending: query.order_direction.as_deref() != Some("asc"),
        page,
        page_size: query.page_size.unwrap_or(20),
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
    params(("virtual_lab_id" = Uuid, Path, description = "Lab id"), LabExpandQuery),
    responses((status = 200, body = VirtualLabWithAdmins), (status = 401), (status = 403), (status = 404),
        (status = 422), (status = 502)))]
async fn get_one(
    State(state): State<AppState>,
    gate: VlabMember,
    Query(query): Query<LabExpandQuery>,
) -> Result<Json<VirtualLabWithAdmins>, ApiError> {
    let expand = LabExpand {
        admins: query.expand.iter().any(|v| v == "admins"),
        owner: query.expand.iter().any(|v| v == "owner"),
    };
    let found = labs::get(&state.services, gate.vlab_id, expand).await?;
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
    params(("virtual_lab_id" = Uuid, Path, description = "Lab id")),
    request_body = VirtualLabUpdate,
    responses((status = 200, body = VirtualLabEnvelope), (status = 401), (status = 403), (status = 404),
        (status = 409), (status = 422)))]
async fn update(
    State(state): State<AppState>,
    gate: VlabAdmin,
    Body(body): Body<VirtualLabUpdate>,
) -> Result<Json<Envelope<VirtualLabData>>, ApiError> {
    let changes = LabChanges {
        name: body.name,
        description: body.description,
        reference_email: body.reference_email,
        entity: body.entity,
    };
    let lab = labs::update(&state.services, gate.vlab_id, &changes).await?;
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
    params(("virtual_lab_id" = Uuid, Path, description = "Lab id")),
    responses((status = 200, body = VirtualLabEnvelope), (status = 401), (status = 403), (status = 404),
        (status = 409)))]
async fn delete(
    State(state): State<AppState>,
    gate: VlabAdmin,
) -> Result<Json<Envelope<VirtualLabData>>, ApiError> {
    let view = labs::soft_delete(&state.services, gate.vlab_id, gate.caller.sub).await?;
    Ok(Envelope::new(
        "Deleted virtual lab",
        VirtualLabData {
            virtual_lab: VirtualLabDetails::new(&view.lab, None, view.course.as_ref()),
        },
    ))
}
