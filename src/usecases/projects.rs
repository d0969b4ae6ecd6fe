//! Projects of a virtual lab (api.md §4.2, rules.md §4.2 and §4.3).

use std::collections::BTreeSet;

use chrono::Utc;
use futures::StreamExt;
use uuid::Uuid;

use super::UseCaseError;
use super::error::{Answer, ErrorCode, StatusCode};
use super::provisioning::{self, AccountKind, fail};
use crate::domain::caller::Caller;
use crate::domain::groups;
use crate::repo::labs::VirtualLab;
use crate::repo::projects::{NewProject, Project, ProjectListing};
use crate::repo::{self};
use crate::usecases::Services;
use crate::usecases::fault;
use crate::usecases::labs::LabError;
use crate::usecases::ledger::Ledger;
use crate::usecases::saga::{Context, Plan, Saga, SagaKind, Step};

#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    #[error("Virtual lab not found")]
    LabNotFound,
    #[error("Another project with the same name already exists")]
    NameTaken,
    #[error("You have reached the maximum limit of 20 projects")]
    LimitReached,
    #[error("KC Group creation/attaching failed")]
    GroupsFailed,
    #[error("Project account creation failed")]
    AccountFailed,
    #[error("Project already exists")]
    NameRace,
    #[error("Project creation failed")]
    NotSaved,
    #[error("Project not found")]
    NotFound,
}

impl ProjectError {
    pub fn answer(&self) -> Answer {
        use ErrorCode as C;
        use StatusCode as S;
        match self {
            // Upstream's statuses for project creation are 400s, kept for the frontend.
            Self::LabNotFound => Answer::new(S::BAD_REQUEST, C::EntityNotFound),
            Self::NameTaken | Self::NameRace => Answer::new(S::BAD_REQUEST, C::EntityAlreadyExists),
            Self::LimitReached => Answer::new(S::BAD_REQUEST, C::LimitExceeded),
            Self::GroupsFailed => Answer::new(S::BAD_REQUEST, C::ExternalServiceError),
            Self::AccountFailed => Answer::new(S::BAD_GATEWAY, C::ExternalServiceError),
            Self::NotSaved => Answer::new(S::BAD_REQUEST, C::DatabaseError),
            Self::NotFound => Answer::new(S::NOT_FOUND, C::EntityNotFound),
        }
    }
}

/// The regular-lab limit of non-deleted projects per owner (api.md §4.2.1).
pub const MAX_OWNED_PROJECTS: i64 = 20;

/// The validated body of `POST /virtual-labs/{id}/projects`.
#[derive(Debug, Clone)]
pub struct NewProjectRequest {
    pub name: String,
    pub description: Option<String>,
}

/// A new project, its admins (lab admins ∪ caller, sorted) and its lab.
#[derive(Debug, Clone)]
pub struct CreatedProject {
    pub project: Project,
    pub admins: Vec<Uuid>,
    pub lab: VirtualLab,
}

/// Whether the lab may carry a course (rules.md §4.3).
pub fn is_course_lab(services: &Services, lab: &VirtualLab) -> bool {
    lab.is_course || services.config.multiple_vlabs_allowed_user_id == Some(lab.owner_id)
}

pub async fn create(
    services: &Services,
    caller: &Caller,
    vlab_id: Uuid,
    request: NewProjectRequest,
) -> Result<CreatedProject, UseCaseError> {
    let lab = repo::labs::find_active(&services.db, vlab_id)
        .await?
        .ok_or(ProjectError::LabNotFound)?;
    if !is_course_lab(services, &lab) {
        if repo::projects::name_used_in_lab(&services.db, vlab_id, &request.name).await? {
            return Err(ProjectError::NameTaken.into());
        }
        if repo::projects::count_owned(&services.db, caller.sub).await? >= MAX_OWNED_PROJECTS {
            return Err(ProjectError::LimitReached.into());
        }
    }
    let task_services = services.clone();
    let owner_id = caller.sub;
    services
        .tasks
        .run("create_project", async move {
            provision_project(&task_services, owner_id, lab, request).await
        })
        .await?
}

/// Steps 2–7 of rules.md §4.2, all-or-nothing through the ledger and the saga journal.
async fn provision_project(
    services: &Services,
    owner_id: Uuid,
    lab: VirtualLab,
    request: NewProjectRequest,
) -> Result<CreatedProject, UseCaseError> {
    let id = Uuid::new_v4();
    let kc = &services.keycloak;

    let mut plan = Plan::default();
    let groups = [
        groups::project_admin(lab.id, id),
        groups::project_member(lab.id, id),
    ]
    .map(|name| {
        let seq = plan.push(Step::KcCreateGroup { name: name.clone() });
        (seq, name)
    });
    let account_seq = plan.push(Step::AccCreateProjectAccount { project_id: id });
    let context = Context {
        vlab_id: lab.id,
        project_id: Some(id),
        ..Context::default()
    };
    let saga = Saga::open(services, SagaKind::CreateProject, plan, context, Utc::now())
        .await
        .map_err(|_| ProjectError::NotSaved)?;
    let mut ledger = Ledger::new("create_project");

    let (created, lab_admins) = futures::join!(
        provisioning::create_groups(kc, &mut ledger, groups),
        kc.list_members(&lab.admin_group_id),
    );
    let lab_admins = match lab_admins {
        Ok(members) => members,
        Err(err) => {
            tracing::warn!(virtual_lab_id = %lab.id, error = %err, "could not list the lab admins");
            return fail(&saga, &mut ledger, ProjectError::GroupsFailed).await;
        }
    };
    let Ok([admin_group_id, member_group_id]) = created else {
        return fail(&saga, &mut ledger, ProjectError::GroupsFailed).await;
    };
    fault::point(services, "create_project", "after_groups");

    let admins: Vec<Uuid> = lab_admins
        .iter()
        .map(|m| m.id)
        .chain([owner_id])
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let concurrency = services.config.external_concurrency.max(1);
    let failures = futures::stream::iter(admins.iter().copied())
        .map(|user| {
            let group = admin_group_id.clone();
            async move { (user, kc.add_member(user, &group).await) }
        })
        .buffer_unordered(concurrency)
        .filter_map(|(user, result)| async move { result.err().map(|err| (user, err)) })
        .collect::<Vec<_>>()
        .await;
    if let Some((user, err)) = failures.first() {
        tracing::warn!(project_id = %id, user_id = %user, error = %err, "could not add a project admin");
        return fail(&saga, &mut ledger, ProjectError::GroupsFailed).await;
    }

    let account = provisioning::create_account(
        &services.accounting,
        &mut ledger,
        AccountKind::Project { vlab_id: lab.id },
        id,
        &request.name,
        (account_seq, saga.key(account_seq)),
    )
    .await;
    if account.is_err() {
        return fail(&saga, &mut ledger, ProjectError::AccountFailed).await;
    }

    let new_project = NewProject {
        id,
        virtual_lab_id: lab.id,
        name: request.name,
        description: request.description,
        owner_id,
        admin_group_id,
        member_group_id,
        waitlisted_group_id: None,
    };
    let inserted = provisioning::insert_committing(services, &saga, async |tx| {
        repo::projects::insert(tx, &new_project, Utc::now()).await
    })
    .await;
    let project = match inserted {
        Ok(Some(project)) => project,
        // The recovery took the saga over: it compensates.
        Ok(None) => return fail(&saga, &mut ledger, ProjectError::NotSaved).await,
        Err(err) => {
            let error = if repo::unique_violation(&err).as_deref()
                == Some(repo::projects::UNIQUE_NAME_INDEX)
            {
                ProjectError::NameRace
            } else {
                tracing::error!(project_id = %id, error = %err, "could not insert the project");
                ProjectError::NotSaved
            };
            return fail(&saga, &mut ledger, error).await;
        }
    };
    ledger.commit();
    saga.committed();
    tracing::info!(project_id = %project.id, virtual_lab_id = %lab.id, "project created");
    Ok(CreatedProject {
        project,
        admins,
        lab,
    })
}

/// One page of the lab's projects the caller may see (api.md §4.2.2).
pub async fn list(
    services: &Services,
    listing: &ProjectListing,
) -> Result<(Vec<Project>, i64), UseCaseError> {
    Ok(repo::projects::list(&services.db, listing).await?)
}

/// `GET /virtual-labs/{id}/projects/{project_id}` with its expansions.
#[derive(Debug, Clone)]
pub struct ProjectDetail {
    pub project: Project,
    /// The project admin group's user ids, sorted (`expand=admins`).
    pub admins: Option<Vec<Uuid>>,
    /// The lab (`expand=virtual_lab`).
    pub lab: Option<super::labs::LabView>,
}

pub async fn get(
    services: &Services,
    vlab_id: Uuid,
    project_id: Uuid,
    expand_admins: bool,
    expand_lab: bool,
) -> Result<ProjectDetail, UseCaseError> {
    let project = repo::projects::find_active_in_lab(&services.db, vlab_id, project_id)
        .await?
        .ok_or(ProjectError::NotFound)?;
    let lab = if expand_lab {
        let lab = repo::labs::find_active(&services.db, vlab_id)
            .await?
            .ok_or(ProjectError::NotFound)?;
        Some(super::labs::load_view(services, lab).await?)
    } else {
        None
    };
    let admins = if expand_admins {
        let members = services
            .keycloak
            .list_members(&project.admin_group_id)
            .await
            .map_err(|err| {
                tracing::warn!(project_id = %project.id, error = %err, "could not list the project admins");
                LabError::UserDetailsUnavailable
            })?;
        let ids: BTreeSet<Uuid> = members.into_iter().map(|m| m.id).collect();
        Some(ids.into_iter().collect())
    } else {
        None
    };
    Ok(ProjectDetail {
        project,
        admins,
        lab,
    })
}
