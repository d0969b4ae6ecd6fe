//! Assign step B for one student (rules.md §4.10 B.1–B.9): the external steps under the
//! student's own ledger, then the student transaction; on any failure the ledger is
//! compensated and the seat reservation released. No row lock is held during these calls.

use serde_json::json;
use uuid::Uuid;

use super::student_tx::{self, ProjectGroups};
use super::{AssignRun, Student, StudentFailure};
use crate::clients::ClientError;
use crate::domain::audit::EventType;
use crate::domain::groups;
use crate::repo;
use crate::repo::email_outbox::LeasedEmail;
use crate::usecases::email_outbox::{self, Delivery};
use crate::usecases::events::{self, EventExt};
use crate::usecases::ledger::Ledger;
use crate::usecases::provisioning::{AccountKind, create_account, create_groups};

/// A committed student whose claim e-mail still awaits its first attempt.
#[derive(Debug, Clone)]
pub struct Provisioned {
    pub enrolment_id: Uuid,
    pub project_id: Uuid,
    pub email: LeasedEmail,
}

/// Provisions one student on `seat_id`; the reservation is released whenever this fails.
pub async fn provision(
    ctx: &AssignRun,
    student: &Student,
    seat_id: Uuid,
) -> Result<Provisioned, StudentFailure> {
    match enrol(ctx, student, seat_id).await {
        Ok(enrolled) => {
            metrics::counter!("vlab_seats_assigned_total").increment(1);
            tracing::info!(enrolment_id = %enrolled.enrolment_id, seat_id = %seat_id, project_id = %enrolled.project_id, "student assigned");
            Ok(enrolled)
        }
        Err(Failed {
            failure,
            compensated,
        }) => {
            metrics::counter!("vlab_seat_assignments_failed_total", "reason" => failure.metric_reason())
                .increment(1);
            tracing::warn!(seat_id = %seat_id, reason = failure.metric_reason(), "student assignment failed");
            match compensated {
                Some(project_id) => {
                    release_compensated(ctx, student, seat_id, project_id, &failure).await
                }
                None => release(ctx, seat_id).await,
            }
            Err(failure)
        }
    }
}

/// A failed student, and the project whose external steps were undone, if any were made.
struct Failed {
    failure: StudentFailure,
    compensated: Option<Uuid>,
}

impl From<StudentFailure> for Failed {
    fn from(failure: StudentFailure) -> Self {
        Self {
            failure,
            compensated: None,
        }
    }
}

async fn enrol(ctx: &AssignRun, student: &Student, seat_id: Uuid) -> Result<Provisioned, Failed> {
    // B.1, read once for the request: no external call for a name that is taken.
    match &ctx.taken_names {
        None => return Err(StudentFailure::NotSaved.into()),
        Some(taken) if taken.contains(&student.student_id) => {
            return Err(StudentFailure::ProjectExists {
                student_id: student.student_id.clone(),
            }
            .into());
        }
        Some(_) => {}
    }
    if ctx.admins.failed() {
        return Err(StudentFailure::LabAdminsUnavailable.into());
    }

    let mut ledger = Ledger::new("assign_seats");
    let project_id = Uuid::new_v4();
    let committed = match external_steps(ctx, &mut ledger, student, project_id).await {
        Ok(groups) => student_tx::enrol(ctx, student, seat_id, project_id, groups).await,
        Err(failure) => Err(failure),
    };
    let committed = match committed {
        Ok(committed) => committed,
        Err(failure) => {
            let undone = !ledger.is_empty();
            ledger.compensate(&failure.to_string()).await;
            return Err(Failed {
                failure,
                compensated: undone.then_some(project_id),
            });
        }
    };
    ledger.commit();
    Ok(Provisioned {
        enrolment_id: committed.enrolment_id,
        project_id,
        email: committed.email,
    })
}

/// The first attempt of the student's claim e-mail, under the lease the student transaction
/// took; the outbox retries a failure. True when SMTP accepted it.
pub async fn send_claim_email(ctx: &AssignRun, email: &LeasedEmail) -> bool {
    email_outbox::deliver(&ctx.services, email, &ctx.actor, ctx.run, ctx.now).await
        == Delivery::Sent
}

/// Steps B.3–B.6: project groups (with the shared admin listing), memberships, the account
/// and the grant, each with its undo on `ledger`.
async fn external_steps(
    ctx: &AssignRun,
    ledger: &mut Ledger,
    student: &Student,
    project_id: Uuid,
) -> Result<ProjectGroups, StudentFailure> {
    let services = &ctx.services;
    let vlab_id = ctx.lab.id;
    let (created, admins) = tokio::join!(
        create_project_groups(ctx, ledger, project_id),
        ctx.admins.get()
    );
    let Some(admins) = admins else {
        return Err(StudentFailure::LabAdminsUnavailable);
    };
    let groups = created.map_err(|err| {
        tracing::warn!(project_id = %project_id, error = %err, "assign: project group creation failed");
        StudentFailure::GroupsFailed
    })?;
    let admin_group_id = groups.admin_group_id.clone();

    // The caller and every other lab admin administer the student's project.
    let mut users = vec![ctx.caller];
    users.extend(admins.iter().filter(|id| **id != ctx.caller));
    let added = futures::future::join_all(
        users
            .iter()
            .map(|user| services.keycloak.add_member(*user, &admin_group_id)),
    )
    .await;
    if let Some(err) = added.into_iter().find_map(Result::err) {
        tracing::warn!(project_id = %project_id, error = %err, "assign: adding the course admins failed");
        return Err(StudentFailure::MembershipsFailed);
    }

    create_account(
        &services.accounting,
        ledger,
        AccountKind::Project { vlab_id },
        project_id,
        &student.student_id,
    )
    .await
    .map_err(|_| StudentFailure::AccountFailed)?;

    grant(ctx, ledger, project_id).await?;
    Ok(groups)
}

/// B.3: the project's admin and member groups, and its waitlisted group when the course has
/// not started at the time of the run (W.5.2), each with its undo.
async fn create_project_groups(
    ctx: &AssignRun,
    ledger: &mut Ledger,
    project_id: Uuid,
) -> Result<ProjectGroups, ClientError> {
    let (kc, vlab_id) = (&ctx.services.keycloak, ctx.lab.id);
    let admin = groups::project_admin(vlab_id, project_id);
    let member = groups::project_member(vlab_id, project_id);
    if ctx.course.start_date.is_some_and(|start| ctx.now < start) {
        let waitlisted = groups::project_waitlisted(vlab_id, project_id);
        let [admin_group_id, member_group_id, waitlisted_group_id] =
            create_groups(kc, ledger, [admin, member, waitlisted]).await?;
        Ok(ProjectGroups {
            admin_group_id,
            member_group_id,
            waitlisted_group_id: Some(waitlisted_group_id),
        })
    } else {
        let [admin_group_id, member_group_id] = create_groups(kc, ledger, [admin, member]).await?;
        Ok(ProjectGroups {
            admin_group_id,
            member_group_id,
            waitlisted_group_id: None,
        })
    }
}

/// The grant's outcome may be uncertain, so its undo (a deplete) is pushed first and
/// discarded only after a definite failure.
async fn grant(
    ctx: &AssignRun,
    ledger: &mut Ledger,
    project_id: Uuid,
) -> Result<(), StudentFailure> {
    let credits = ctx.course.credits_per_seat;
    let accounting = ctx.services.accounting.clone();
    let step = ledger.push("acc_grant", move || async move {
        let amount = accounting.deplete_project(project_id).await?;
        tracing::info!(project_id = %project_id, %amount, "compensation: project depleted");
        Ok(())
    });
    match ctx
        .services
        .accounting
        .grant(project_id, i64::from(credits), None)
        .await
    {
        Ok(()) => Ok(()),
        Err(err) => {
            tracing::warn!(project_id = %project_id, error = %err, uncertain = err.is_uncertain(), "assign: the grant failed");
            if !err.is_uncertain() {
                ledger.discard(step);
            }
            Err(StudentFailure::GrantFailed { credits })
        }
    }
}

/// Gives the seat back, as [`release`] does, and records the undone external steps as
/// `assignment_compensated` in the same transaction.
async fn release_compensated(
    ctx: &AssignRun,
    student: &Student,
    seat_id: Uuid,
    project_id: Uuid,
    failure: &StudentFailure,
) {
    let event = events::event(
        ctx.course.id,
        EventType::AssignmentCompensated,
        &ctx.actor,
        ctx.now,
    )
    .seat(Some(seat_id))
    .project(project_id)
    .student(&student.student_id)
    .data(json!({
        "saga_id": null,
        "run_id": ctx.run,
        "reason": failure.metric_reason(),
    }));
    let recorded = async {
        let mut tx = ctx.services.db.begin().await?;
        repo::seats::release(&mut *tx, seat_id, ctx.run).await?;
        events::record(&mut *tx, &[event]).await?;
        tx.commit().await
    };
    if let Err(err) = recorded.await {
        tracing::warn!(seat_id = %seat_id, error = %err, "could not release a seat reservation; it lapses by itself");
    }
}

/// Gives the seat back if this run still holds it; otherwise it lapses after 30 min.
pub async fn release(ctx: &AssignRun, seat_id: Uuid) {
    match repo::seats::release(&ctx.services.db, seat_id, ctx.run).await {
        Ok(_) => {}
        Err(err) => {
            tracing::warn!(seat_id = %seat_id, error = %err, "could not release a seat reservation; it lapses by itself")
        }
    }
}
