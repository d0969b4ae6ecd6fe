//! `/virtual-labs/{virtual_lab_id}/projects…` (api.md §4.2).

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::openapi::schema::Array;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::virtual_labs::{DIRECTIONS, ORDER_BY, Page, direction_schema, order_by_schema};
use crate::domain::datetime::serde_utc;
use crate::http::error::ApiError;
use crate::http::extract::{Query, RawBody, RawQuery, query_and_body};
use crate::http::fields::{self, Fields, FromFields};
use crate::http::gates::{ProjectMember, VlabAdmin, VlabMember};
use crate::http::payloads::VirtualLabDetails;
use crate::http::state::AppState;
use crate::repo::ListOrder;
use crate::repo::projects::{Project, ProjectListing};
use crate::usecases::labs::LabView;
use crate::usecases::projects::{self, NewProjectRequest};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get_one))
}

fn lab_details(view: &LabView) -> VirtualLabDetails {
    VirtualLabDetails::new(&view.lab, Some(view.projects_count), view.course.as_ref())
}

/// ProjectCreatedOut (api.md §3.11); null-valued keys are omitted.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectCreatedOut {
    id: Uuid,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(serialize_with = "serde_utc::serialize")]
    created_at: DateTime<Utc>,
    #[serde(serialize_with = "serde_utc::serialize")]
    updated_at: DateTime<Utc>,
    virtual_lab_id: Uuid,
    user_count: usize,
    admins: Vec<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    virtual_lab: Option<VirtualLabDetails>,
}

/// ProjectListItem (api.md §3.11).
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectListItem {
    id: Uuid,
    name: String,
    description: Option<String>,
    #[serde(serialize_with = "serde_utc::serialize")]
    created_at: DateTime<Utc>,
    #[serde(serialize_with = "serde_utc::serialize")]
    updated_at: DateTime<Utc>,
}

impl From<Project> for ProjectListItem {
    fn from(p: Project) -> Self {
        Self {
            id: p.id,
            name: p.name,
            description: p.description,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

/// ProjectOut (api.md §3.11); null-valued keys are omitted.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectOut {
    id: Uuid,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(serialize_with = "serde_utc::serialize")]
    created_at: DateTime<Utc>,
    #[serde(serialize_with = "serde_utc::serialize")]
    updated_at: DateTime<Utc>,
    virtual_lab_id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    admins: Option<Vec<Uuid>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    virtual_lab: Option<VirtualLabDetails>,
}

const CREATE_EXPAND: &[&str] = &["virtual_lab", "balance"];
const GET_EXPAND: &[&str] = &["admins", "virtual_lab"];

fn create_expand_schema() -> Array {
    fields::string_enum_list(CREATE_EXPAND)
}
fn get_expand_schema() -> Array {
    fields::string_enum_list(GET_EXPAND)
}

/// The body of `POST /virtual-labs/{virtual_lab_id}/projects`.
#[derive(Debug, ToSchema)]
#[schema(example = json!({"name": "Template project", "description": "Copied for every student"}))]
pub struct ProjectCreate {
    /// Trimmed, 1..250 characters.
    #[schema(
        min_length = 1,
        max_length = 250,
        pattern = r"^[^\u0000]*[^\s\u0000][^\u0000]*$"
    )]
    pub name: String,
    #[schema(pattern = r"^[^\u0000]*$")]
    pub description: Option<String>,
}

impl FromFields for ProjectCreate {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        let name = f.required("name", &fields::text(1, 250));
        let description = f.optional("description", &fields::any_string);
        Some(Self {
            name: name?,
            description,
        })
    }
}

/// The query of `POST /virtual-labs/{virtual_lab_id}/projects`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ProjectCreateQuery {
    /// `virtual_lab` (`balance` is accepted and ignored); repeatable or comma-separated.
    #[param(schema_with = create_expand_schema, required = false)]
    pub expand: Vec<String>,
    /// Accepted and ignored.
    pub seed_budget: Option<bool>,
}

impl FromFields for ProjectCreateQuery {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        Some(Self {
            expand: f.list("expand", CREATE_EXPAND),
            seed_budget: f.optional("seed_budget", &fields::query_boolean),
        })
    }
}

/// The query of `GET /virtual-labs/{virtual_lab_id}/projects`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ProjectListQuery {
    /// ≥ 1, default 1.
    #[param(minimum = 1)]
    pub page: Option<i64>,
    /// 1..100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub page_size: Option<i64>,
    /// `created_at`, `updated_at` (default), `name` or `owner`.
    #[param(schema_with = order_by_schema, required = false)]
    pub order_by: Option<String>,
    /// `asc` or `desc` (default).
    #[param(schema_with = direction_schema, required = false)]
    pub order_direction: Option<String>,
    /// Case-insensitive substring of the name or description; trimmed, 1..200 characters.
    #[param(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000]*[^\s\u0000][^\u0000]*$"
    )]
    pub query: Option<String>,
}

impl FromFields for ProjectListQuery {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        Some(Self {
            page: f.optional("page", &fields::integer_at_least(1)),
            page_size: f.optional("page_size", &fields::integer_between(1, 100)),
            order_by: f.optional("order_by", &fields::one_of(ORDER_BY)),
            order_direction: f.optional("order_direction", &fields::one_of(DIRECTIONS)),
            query: f.optional("query", &fields::text(1, 200)),
        })
    }
}

/// The query of `GET /virtual-labs/{virtual_lab_id}/projects/{project_id}`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ProjectExpandQuery {
    /// `admins`, `virtual_lab`; repeatable or comma-separated.
    #[param(schema_with = get_expand_schema, required = false)]
    pub expand: Vec<String>,
}

impl FromFields for ProjectExpandQuery {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        Some(Self {
            expand: f.list("expand", GET_EXPAND),
        })
    }
}

/// Create a project in a lab; the caller and every lab admin become its admins.
#[utoipa::path(post, path = "/virtual-labs/{virtual_lab_id}/projects", tag = "projects", security(("bearer" = [])),
    params(("virtual_lab_id" = Uuid, Path, description = "Lab id"), ProjectCreateQuery),
    request_body = ProjectCreate,
    responses((status = 200, body = ProjectCreatedOut), (status = 400), (status = 401), (status = 403),
        (status = 422), (status = 502)))]
async fn create(
    State(state): State<AppState>,
    gate: VlabAdmin,
    query: RawQuery,
    body: RawBody,
) -> Result<Json<ProjectCreatedOut>, ApiError> {
    // The query's and the body's problems are reported together.
    let (query, body) = query_and_body::<ProjectCreateQuery, ProjectCreate>(&query, &body)?;
    let caller = gate.caller;
    let request = NewProjectRequest {
        name: body.name,
        description: body.description,
    };
    let created = projects::create(&state.services, &caller, gate.vlab_id, request).await?;
    state.auth.forget_groups(&caller);
    let virtual_lab = if query.expand.iter().any(|v| v == "virtual_lab") {
        let view = crate::usecases::labs::load_view(&state.services, created.lab).await?;
        Some(lab_details(&view))
    } else {
        None
    };
    let project = created.project;
    Ok(Json(ProjectCreatedOut {
        id: project.id,
        name: project.name,
        description: project.description,
        created_at: project.created_at,
        updated_at: project.updated_at,
        virtual_lab_id: project.virtual_lab_id,
        user_count: created.admins.len(),
        admins: created.admins,
        virtual_lab,
    }))
}

/// The lab's projects the caller may see (lab admins: all of them).
#[utoipa::path(get, path = "/virtual-labs/{virtual_lab_id}/projects", tag = "projects", security(("bearer" = [])),
    params(("virtual_lab_id" = Uuid, Path, description = "Lab id"), ProjectListQuery),
    responses((status = 200, body = Page<ProjectListItem>), (status = 401), (status = 403), (status = 422)))]
async fn list(
    State(state): State<AppState>,
    gate: VlabMember,
    Query(query): Query<ProjectListQuery>,
) -> Result<Json<Page<ProjectListItem>>, ApiError> {
    let (caller, vlab_id) = (gate.caller, gate.vlab_id);
    let page = query.page.unwrap_or(1);
    let listing = ProjectListing {
        vlab_id,
        only: (!caller.groups.is_vlab_admin(vlab_id)).then(|| caller.groups.project_ids(vlab_id)),
        query: query.query,
        order: ListOrder::from_param(query.order_by.as_deref()),
        descending: query.order_direction.as_deref() != Some("asc"),
        page,
        page_size: query.page_size.unwrap_or(20),
    };
    let (rows, total) = projects::list(&state.services, &listing).await?;
    let data = rows.into_iter().map(ProjectListItem::from).collect();
    Ok(Json(Page::new(data, page, total)))
}

/// One project, optionally with its admins (from Keycloak) and its lab.
#[utoipa::path(get, path = "/virtual-labs/{virtual_lab_id}/projects/{project_id}", tag = "projects", security(("bearer" = [])),
    params(
        ("virtual_lab_id" = Uuid, Path, description = "Lab id"),
        ("project_id" = Uuid, Path, description = "Project id"),
        ProjectExpandQuery,
    ),
    responses((status = 200, body = ProjectOut), (status = 401), (status = 403), (status = 404),
        (status = 422), (status = 502)))]
async fn get_one(
    State(state): State<AppState>,
    gate: ProjectMember,
    Query(query): Query<ProjectExpandQuery>,
) -> Result<Json<ProjectOut>, ApiError> {
    let detail = projects::get(
        &state.services,
        gate.vlab_id,
        gate.project_id,
        query.expand.iter().any(|v| v == "admins"),
        query.expand.iter().any(|v| v == "virtual_lab"),
    )
    .await?;
    let project = detail.project;
    Ok(Json(ProjectOut {
        id: project.id,
        name: project.name,
        description: project.description,
        created_at: project.created_at,
        updated_at: project.updated_at,
        virtual_lab_id: project.virtual_lab_id,
        admins: detail.admins,
        virtual_lab: detail.lab.as_ref().map(lab_details),
    }))
}
