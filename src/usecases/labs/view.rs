//! Reading, listing, updating and soft-deleting labs (api.md §4.1.2–§4.1.5). No external side
//! effects except the Keycloak reads of `expand`.

use chrono::Utc;
use uuid::Uuid;

use crate::clients::KeycloakUser;
use crate::repo::courses::Course;
use crate::repo::labs::{LabChanges, LabListing, VirtualLab};
use crate::repo::{self};
use crate::usecases::Services;
use crate::usecases::UseCaseError;
use crate::usecases::labs::LabError;

/// A lab with what its payloads show besides its own columns.
#[derive(Debug, Clone)]
pub struct LabView {
    pub lab: VirtualLab,
    pub projects_count: i64,
    pub course: Option<Course>,
}

/// The project count and course of a lab.
pub async fn load_view(services: &Services, lab: VirtualLab) -> Result<LabView, UseCaseError> {
    let projects_count = repo::labs::projects_count(&services.db, lab.id).await?;
    let course = repo::courses::find_by_lab(&services.db, lab.id).await?;
    Ok(LabView {
        lab,
        projects_count,
        course,
    })
}

/// One page of the caller's labs, with their courses, and the total.
pub async fn list(
    services: &Services,
    listing: &LabListing,
) -> Result<(Vec<LabView>, i64), UseCaseError> {
    let (rows, total) = repo::labs::list(&services.db, listing).await?;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.lab.id).collect();
    let mut courses = repo::courses::find_by_labs(&services.db, &ids).await?;
    let views = rows
        .into_iter()
        .map(|row| {
            let course = courses
                .iter()
                .position(|c| c.virtual_lab_id == row.lab.id)
                .map(|i| courses.swap_remove(i));
            LabView {
                lab: row.lab,
                projects_count: row.projects_count,
                course,
            }
        })
        .collect();
    Ok((views, total))
}

/// What `expand` asks `GET /virtual-labs/{id}` to read from Keycloak.
#[derive(Debug, Clone, Copy, Default)]
pub struct LabExpand {
    pub admins: bool,
    pub owner: bool,
}

/// `GET /virtual-labs/{id}`: the lab, and the expansions read from Keycloak.
#[derive(Debug, Clone)]
pub struct LabWithPeople {
    pub view: LabView,
    /// The lab admin group's user ids, sorted.
    pub admins: Option<Vec<Uuid>>,
    /// The owner's Keycloak user (`None` inside when Keycloak does not know it).
    pub owner: Option<Option<KeycloakUser>>,
}

pub async fn get(
    services: &Services,
    id: Uuid,
    expand: LabExpand,
) -> Result<LabWithPeople, UseCaseError> {
    let lab = repo::labs::find_active(&services.db, id)
        .await?
        .ok_or(LabError::NotFound)?;
    let kc = &services.keycloak;
    let admins = async {
        if !expand.admins {
            return Ok(None);
        }
        let mut ids: Vec<Uuid> = kc
            .list_members(&lab.admin_group_id)
            .await?
            .into_iter()
            .map(|m| m.id)
            .collect();
        ids.sort();
        ids.dedup();
        Ok(Some(ids))
    };
    let owner = async {
        if !expand.owner {
            return Ok(None);
        }
        kc.get_user(lab.owner_id).await.map(Some)
    };
    let (admins, owner) = futures::join!(admins, owner);
    let (admins, owner) = match (admins, owner) {
        (Ok(admins), Ok(owner)) => (admins, owner),
        (Err(err), _) | (_, Err(err)) => {
            let err: crate::clients::ClientError = err;
            tracing::warn!(virtual_lab_id = %id, error = %err, "could not read the lab's people from keycloak");
            return Err(LabError::UserDetailsUnavailable.into());
        }
    };
    Ok(LabWithPeople {
        view: load_view(services, lab).await?,
        admins,
        owner,
    })
}

/// `PATCH /virtual-labs/{id}`: only the keys present are applied; no Keycloak or accounting.
pub async fn update(
    services: &Services,
    id: Uuid,
    changes: &LabChanges,
) -> Result<VirtualLab, UseCaseError> {
    let now = Utc::now();
    let mut tx = services.db.begin().await?;
    let lab = repo::labs::find_active_for_update(&mut *tx, id)
        .await?
        .ok_or(LabError::NotFound)?;
    let nothing_to_do = changes.name.is_none()
        && changes.description.is_none()
        && changes.reference_email.is_none()
        && changes.entity.is_none();
    if nothing_to_do {
        return Ok(lab);
    }
    if let Some(name) = &changes.name
        && repo::labs::active_name_taken(&mut *tx, name, Some(id)).await?
    {
        return Err(LabError::RenameTaken.into());
    }
    let updated = repo::labs::update(&mut *tx, id, changes, now)
        .await
        .map_err(|err| match repo::unique_violation(&err).as_deref() {
            Some(repo::labs::UNIQUE_NAME_INDEX) => UseCaseError::from(LabError::RenameTaken),
            _ => err.into(),
        })?;
    tx.commit().await?;
    Ok(updated)
}

/// `DELETE /virtual-labs/{id}`: soft-deletes the lab and its projects in one transaction,
/// unless its course is active. Keycloak, accounting and the course are left untouched.
pub async fn soft_delete(services: &Services, id: Uuid, by: Uuid) -> Result<LabView, UseCaseError> {
    let now = Utc::now();
    let mut tx = services.db.begin().await?;
    // Course before lab, like every other lock order that involves a course.
    let course = repo::courses::find_by_lab(&mut *tx, id).await?;
    let course = match course {
        Some(course) => repo::courses::find_for_share(&mut *tx, course.id).await?,
        None => None,
    };
    repo::labs::find_active_for_update(&mut *tx, id)
        .await?
        .ok_or(LabError::NotFound)?;
    if course.as_ref().is_some_and(|c| c.status == "active") {
        return Err(LabError::HasActiveCourse.into());
    }
    let lab = repo::labs::soft_delete(&mut tx, id, by, now).await?;
    tx.commit().await?;
    tracing::info!(virtual_lab_id = %id, "virtual lab soft-deleted");
    Ok(LabView {
        lab,
        projects_count: 0,
        course,
    })
}
