//! Create a course (rules.md §4.6): read-only checks, then — in a detached task, under the
//! lab's creation lock — fund the template project and insert the draft course.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::json;
use sqlx::Connection;
use uuid::Uuid;

use crate::domain::audit::{Actor, EventType};
use crate::domain::datetime;
use crate::repo::courses::{Course, CreationLock, NewCourse};
use crate::repo::{self};
use crate::usecases::Services;
use crate::usecases::UseCaseError;
use crate::usecases::courses::CourseError;
use crate::usecases::events::{self, EventExt};
use crate::usecases::fault;
use crate::usecases::ledger::Ledger;
use crate::usecases::saga::{Context, Plan, Saga, SagaKind, Step};

/// The body of `POST /courses`.
#[derive(Debug, Clone)]
pub struct CourseRequest {
    pub virtual_lab_id: Uuid,
    pub template_project_id: Uuid,
    pub institution_id: Uuid,
    pub start_date: Option<DateTime<Utc>>,
    pub end_date: Option<DateTime<Utc>>,
    pub last_drop_date: Option<DateTime<Utc>>,
}

pub async fn create(
    services: &Services,
    actor: Actor,
    request: CourseRequest,
) -> Result<Course, UseCaseError> {
    let now = Utc::now();
    check(services, &request).await?;
    let task_services = services.clone();
    services
        .tasks
        .run("create_course", async move {
            fund_and_insert(&task_services, &actor, &request, now).await
        })
        .await?
}

/// The checks of api.md §4.5.3, steps 1–5, in order.
async fn check(services: &Services, request: &CourseRequest) -> Result<(), UseCaseError> {
    let db = &services.db;
    let vlab_id = request.virtual_lab_id;
    let lab = repo::labs::find_active(db, vlab_id)
        .await?
        .ok_or(CourseError::LabNotFound(vlab_id))?;
    let owned_by_obi = services.config.multiple_vlabs_allowed_user_id == Some(lab.owner_id);
    if !lab.is_course && !owned_by_obi {
        return Err(CourseError::NotACourseLab.into());
    }
    let project_id = request.template_project_id;
    if repo::projects::find_active_in_lab(db, vlab_id, project_id)
        .await?
        .is_none()
    {
        return Err(CourseError::TemplateProjectNotFound {
            project_id,
            vlab_id,
        }
        .into());
    }
    if !repo::institutions::exists(db, request.institution_id).await? {
        return Err(CourseError::InstitutionNotFound(request.institution_id).into());
    }
    if repo::courses::lab_or_template_taken(db, vlab_id, project_id).await? {
        return Err(CourseError::Conflict.into());
    }
    Ok(())
}

async fn fund_and_insert(
    services: &Services,
    actor: &Actor,
    request: &CourseRequest,
    now: DateTime<Utc>,
) -> Result<Course, UseCaseError> {
    let mut lock = CreationLock::acquire(&services.db, request.virtual_lab_id).await?;
    let outcome = fund_and_insert_locked(services, &mut lock, actor, request, now).await;
    lock.release().await;
    outcome
}

async fn fund_and_insert_locked(
    services: &Services,
    lock: &mut CreationLock,
    actor: &Actor,
    request: &CourseRequest,
    now: DateTime<Utc>,
) -> Result<Course, UseCaseError> {
    let template = request.template_project_id;
    // A creation that held the lock before us may have taken the lab or the template; it must
    // be refused before funding, because compensation would deplete the winner's credits too.
    if repo::courses::lab_or_template_taken(lock.conn()?, request.virtual_lab_id, template).await? {
        return Err(CourseError::Conflict.into());
    }

    let credits_per_seat = services.config.credits_per_seat;
    let mut plan = Plan::default();
    let grant_seq = plan.push(Step::TemplateGrant {
        project_id: template,
        amount: i64::from(credits_per_seat),
    });
    let context = Context {
        vlab_id: request.virtual_lab_id,
        template_project_id: Some(template),
        ..Context::default()
    };
    let saga = Saga::open(services, SagaKind::CreateCourse, plan, context, Utc::now())
        .await
        .map_err(|_| CourseError::NotSaved)?;
    let mut ledger = Ledger::new("create_course");
    if let Err(err) = fund_template(
        services,
        &saga,
        grant_seq,
        &mut ledger,
        template,
        credits_per_seat,
    )
    .await
    {
        saga.compensate(&mut ledger, "template grant failed").await;
        return Err(err);
    }
    fault::point(services, "create_course", "after_grant");
    let new_course = NewCourse {
        id: Uuid::new_v4(),
        virtual_lab_id: request.virtual_lab_id,
        institution_id: request.institution_id,
        template_project_id: template,
        start_date: request.start_date,
        end_date: request.end_date,
        last_drop_date: request.last_drop_date,
        credits_per_seat,
    };
    match insert_with_event(lock, &saga, actor, &new_course, now).await {
        Ok(Some(course)) => {
            ledger.commit();
            saga.committed();
            tracing::info!(
                course_id = %course.id,
                vlab_id = %course.virtual_lab_id,
                template_project_id = %template,
                "course created"
            );
            Ok(course)
        }
        // The recovery took the saga over: it compensates.
        Ok(None) => {
            saga.compensate(&mut ledger, "course creation fenced").await;
            Err(CourseError::NotSaved.into())
        }
        Err(err) => {
            let conflict = repo::unique_violation(&err);
            if conflict.is_some() {
                tracing::warn!(
                    vlab_id = %request.virtual_lab_id,
                    constraint = ?conflict,
                    "course created concurrently"
                );
            } else {
                tracing::error!(
                    vlab_id = %request.virtual_lab_id,
                    error = %err,
                    "could not insert the course"
                );
            }
            saga.compensate(&mut ledger, "course insert failed").await;
            Err(match conflict.as_deref() {
                Some(repo::courses::UNIQUE_LAB_INDEX | repo::courses::UNIQUE_TEMPLATE_INDEX) => {
                    CourseError::Conflict.into()
                }
                _ => CourseError::NotSaved.into(),
            })
        }
    }
}

/// The course insert, its `course_created` event and the saga's commit point, in one
/// transaction on the lock's connection; `None` when the recovery took the saga over.
async fn insert_with_event(
    lock: &mut CreationLock,
    saga: &Saga,
    actor: &Actor,
    course: &NewCourse,
    now: DateTime<Utc>,
) -> Result<Option<Course>, sqlx::Error> {
    let mut tx = lock.conn()?.begin().await?;
    let inserted = repo::courses::insert(&mut *tx, course, now).await?;
    let format = |d: Option<DateTime<Utc>>| d.as_ref().map(datetime::format);
    let event = events::event(inserted.id, EventType::CourseCreated, actor, now)
        .amount(Some(Decimal::from(course.credits_per_seat)))
        .after(json!({
            "start_date": format(course.start_date),
            "end_date": format(course.end_date),
            "last_drop_date": format(course.last_drop_date),
            "institution_id": course.institution_id,
        }));
    events::record(&mut *tx, &[event]).await?;
    if !saga.commit(&mut tx).await? {
        return Ok(None);
    }
    tx.commit().await?;
    Ok(Some(inserted))
}

/// Grants the template project its credits (plan step `seq`), after fencing the saga. The
/// ledger holds the undo (a deplete of the template) unless the grant failed definitely; the
/// caller compensates on failure.
async fn fund_template(
    services: &Services,
    saga: &Saga,
    seq: u32,
    ledger: &mut Ledger,
    template: Uuid,
    credits_per_seat: i32,
) -> Result<(), UseCaseError> {
    if !saga.fence(seq).await {
        return Err(CourseError::TemplateFundingFailed(template).into());
    }
    let accounting = services.accounting.clone();
    // The grant's outcome may be uncertain, so its undo is registered before the call.
    let undo_grant = ledger.push_for(seq, "ACC deplete template project", move || async move {
        accounting.deplete_project(template).await?;
        Ok(())
    });
    let Err(err) = services
        .accounting
        .grant(template, i64::from(credits_per_seat), Some(&saga.key(seq)))
        .await
    else {
        return Ok(());
    };
    tracing::warn!(
        template_project_id = %template,
        error = %err,
        uncertain = err.is_uncertain(),
        "could not fund the template project"
    );
    if !err.is_uncertain() {
        ledger.discard(undo_grant);
    }
    Err(CourseError::TemplateFundingFailed(template).into())
}
