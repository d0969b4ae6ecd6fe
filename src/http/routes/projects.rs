//! `/virtual-labs/{virtual_lab_id}/projects…` (api.md §4.2).

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::virtual_labs::{Page, both_valid, expand_values};
use crate::domain::caller::Caller;
use crate::domain::datetime::serde_utc;
use crate::http::error::ApiError;
use crate::http::extract::{RawBody, RawQuery};
use crate::http::fields::{self, Fields};
use crate::http::gates;
use crate::http::payloads::VirtualLabDetails;
use crate::http::state::AppState;
use crate::repo::ListOrder;
use crate::repo::projects::{Project, ProjectListing};
use crate::usecases::labs::LabView;
use crate::usecases::projects::{self, NewProjectRequest};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/virtual-labs/{virtual_lab_id}/projects",
            post(create).get(list),
        )
        .route(
            "/virtual-labs/{virtual_lab_id}/projects/{project_id}",
            get(get_one),
        )
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

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ProjectCreate {
    /// Trimmed, 1..250 characters.
    name: String,
    description: Option<String>,
}

/// Create a project in a lab; the caller and every lab admin become its admins.
#[utoipa::path(post, path = "/virtual-labs/{virtual_lab_id}/projects", tag = "projects", security(("bearer" = [])),
    params(
        ("virtual_lab_id" = String, Path, description = "Lab id (UUID)"),
        ("expand" = Option<Vec<String>>, Query, description = "`virtual_lab` (`balance` is accepted and ignored)"),
        ("seed_budget" = Option<bool>, Query, description = "Accepted and ignored"),
    ),
    request_body = ProjectCreate,
    responses((status = 200, body = ProjectCreatedOut), (status = 400), (status = 401), (status = 403),
        (status = 422), (status = 502)))]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw_id): Path<String>,
    query: RawQuery,
    body: RawBody,
) -> Result<Json<ProjectCreatedOut>, ApiError> {
    let vlab_id = gates::vlab_admin(&caller, &raw_id)?;
    let expand = expand_values(&query, &["virtual_lab", "balance"]);
    let query_object = query.object();
    let mut q = Fields::new(&query_object);
    let _ignored = q.optional("seed_budget", &fields::query_boolean);
    let query_valid = both_valid(
        expand.as_ref().map(|_| ()).map_err(Clone::clone),
        q.finish(),
    );

    let body = body.object();
    let (body_valid, request) = match &body {
        Ok(body) => {
            let mut f = Fields::new(body);
            let name = f.required("name", &fields::text(1, 250));
            let description = f.optional("description", &fields::any_string);
            let request = name.map(|name| NewProjectRequest { name, description });
            (f.finish(), request)
        }
        Err(err) => (Err(err.clone()), None),
    };
    both_valid(query_valid, body_valid)?;
    let (Some(request), Ok(expand)) = (request, expand) else {
        return Err(ApiError::internal());
    };
    let created = projects::create(&state.services, &caller, vlab_id, request).await?;
    state.auth.forget_groups(&caller);
    let virtual_lab = if expand.iter().any(|v| v == "virtual_lab") {
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
    params(
        ("virtual_lab_id" = String, Path, description = "Lab id (UUID)"),
        ("page" = Option<i64>, Query, description = "≥ 1, default 1"),
        ("page_size" = Option<i64>, Query, description = "1..100, default 20"),
        ("order_by" = Option<String>, Query, description = "`created_at`, `updated_at` (default), `name` or `owner`"),
        ("order_direction" = Option<String>, Query, description = "`asc` or `desc` (default)"),
        ("query" = Option<String>, Query, description = "Case-insensitive substring of the name or description"),
    ),
    responses((status = 200, body = Page<ProjectListItem>), (status = 401), (status = 403), (status = 422)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw_id): Path<String>,
    query: RawQuery,
) -> Result<Json<Page<ProjectListItem>>, ApiError> {
    let vlab_id = gates::vlab_any(&caller, &raw_id)?;
    let query = query.object();
    let mut f = Fields::new(&query);
    let page = f.optional("page", &fields::integer_at_least(1));
    let page_size = f.optional("page_size", &fields::integer_between(1, 100));
    let order_by = f.optional(
        "order_by",
        &fields::one_of(&["created_at", "updated_at", "name", "owner"]),
    );
    let direction = f.optional("order_direction", &fields::one_of(&["asc", "desc"]));
    let search = f.optional("query", &fields::text(1, 200));
    f.finish()?;
    let page = page.unwrap_or(1);
    let listing = ProjectListing {
        vlab_id,
        only: (!caller.groups.is_vlab_admin(vlab_id)).then(|| caller.groups.project_ids(vlab_id)),
        query: search,
        order: ListOrder::from_param(order_by.as_deref()),
        descending: direction.as_deref() != Some("asc"),
        page,
        page_size: page_size.unwrap_or(20),
    };
    let (rows, total) = projects::list(&state.services, &listing).await?;
    let data = rows.into_iter().map(ProjectListItem::from).collect();
    Ok(Json(Page::new(data, page, total)))
}

/// One project, optionally with its admins (from Keycloak) and its lab.
#[utoipa::path(get, path = "/virtual-labs/{virtual_lab_id}/projects/{project_id}", tag = "projects", security(("bearer" = [])),
    params(
        ("virtual_lab_id" = String, Path, description = "Lab id (UUID)"),
        ("project_id" = String, Path, description = "Project id (UUID)"),
        ("expand" = Option<Vec<String>>, Query, description = "`admins`, `virtual_lab`; repeatable or comma-separated"),
    ),
    responses((status = 200, body = ProjectOut), (status = 401), (status = 403), (status = 404),
        (status = 422), (status = 502)))]
async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path((raw_vlab_id, raw_project_id)): Path<(String, String)>,
    query: RawQuery,
) -> Result<Json<ProjectOut>, ApiError> {
    let (vlab_id, project_id) = gates::project_access(&caller, &raw_vlab_id, &raw_project_id)?;
    let expand = expand_values(&query, &["admins", "virtual_lab"])?;
    let detail = projects::get(
        &state.services,
        vlab_id,
        project_id,
        expand.iter().any(|v| v == "admins"),
        expand.iter().any(|v| v == "virtual_lab"),
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
