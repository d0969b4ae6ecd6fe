//! Assign step B for one student (rules.md §4.10 B.1–B.9): the external steps under the
//! student's own ledger and saga journal (one `assign_student` saga per student), then the
//! student transaction, which deletes the saga row; on any failure the ledger is compensated
//! and the seat reservation released, recorded on the saga. No row lock is held during these
//! calls.

use chrono::Utc;
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
use crate::usecases::fault;
use crate::usecases::ledger::Ledger;
use crate::usecases::provisioning::{AccountKind, create_account, create_groups};
use crate::usecases::saga::plan::Step;
use crate::usecases::saga::{Context, Plan, Saga, SagaKind, StepState};

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
            seat_released,
        }) => {
            metrics::counter!("vlab_seat_assignments_failed_total", "reason" => failure.metric_reason())
                .increment(1);
            tracing::warn!(seat_id = %seat_id, reason = failure.metric_reason(), "student assignment failed");
            if !seat_released {
                release(ctx, seat_id).await;
            }
            Err(failure)
        }
    }
}

/// A failed student, and whether its saga's compensation already handled the seat (released
/// it, or left it to the recovery that took the saga over).
struct Failed {
    failure: StudentFailure,
    seat_released: bool,
}

impl From<StudentFailure> for Failed {
    fn from(failure: StudentFailure) -> Self {
        Self {
            failure,
            seat_released: false,
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

    let project_id = Uuid::new_v4();
    let plan = StudentPlan::new(ctx, seat_id, project_id);
    let context = Context {
        course_id: Some(ctx.course.id),
        vlab_id: ctx.lab.id,
        project_id: Some(project_id),
        seat_id: Some(seat_id),
        student_id: Some(student.student_id.clone()),
        ..Context::default()
    };
    // The journal comes first: if it cannot be written, nothing external has happened.
    let saga = Saga::open(
        &ctx.services,
        SagaKind::AssignStudent,
        plan.plan.clone(),
        context,
        Utc::now(),
    )
    .await
    .map_err(|_| StudentFailure::NotSaved)?;

    let mut ledger = Ledger::new("assign_seats");
    let committed = match external_steps(ctx, &saga, &plan, &mut ledger, student, project_id).await
    {
        Ok(groups) => student_tx::enrol(ctx, &saga, student, seat_id, project_id, groups).await,
        Err(failure) => Err(failure),
    };
    let committed = match committed {
        Ok(committed) => committed,
        Err(failure) => {
            compensate(
                ctx,
                &saga,
                &mut ledger,
                student,
                seat_id,
                project_id,
                &failure,
            )
            .await;
            return Err(Failed {
                failure,
                seat_released: true,
            });
        }
    };
    ledger.commit();
    saga.committed();
    fault::point(&ctx.services, "assign", "after_commit");
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

/// The student's saga plan (addendum §8.3) and the `seq` of each step. The waitlisted group
/// is planned with the run's `now`, the same that decides whether B.3 creates it.
struct StudentPlan {
    plan: Plan,
    admin_group: (u32, String),
    member_group: (u32, String),
    waitlisted_group: Option<(u32, String)>,
    account: u32,
    grant: u32,
}

impl StudentPlan {
    fn new(ctx: &AssignRun, seat_id: Uuid, project_id: Uuid) -> Self {
        let vlab_id = ctx.lab.id;
        let mut plan = Plan::default();
        plan.push(Step::SeatReservation {
            seat_id,
            reservation_id: ctx.run,
        });
        let mut group = |name: String| {
            let seq = plan.push(Step::KcCreateGroup { name: name.clone() });
            (seq, name)
        };
        let admin_group = group(groups::project_admin(vlab_id, project_id));
        let member_group = group(groups::project_member(vlab_id, project_id));
        let waitlisted_group = ctx
            .course
            .start_date
            .is_some_and(|start| ctx.now < start)
            .then(|| group(groups::project_waitlisted(vlab_id, project_id)));
        let account = plan.push(Step::AccCreateProjectAccount { project_id });
        let grant = plan.push(Step::AccGrant {
            project_id,
            amount: i64::from(ctx.course.credits_per_seat),
        });
        Self {
            plan,
            admin_group,
            member_group,
            waitlisted_group,
            account,
            grant,
        }
    }
}

/// In-process compensation of a failed student: the ledger's undos, then — in one transaction
/// — the seat's release, `assignment_compensated` and the saga's outcome. A saga the recovery
/// took over is left to it (seat included).
async fn compensate(
    ctx: &AssignRun,
    saga: &Saga,
    ledger: &mut Ledger,
    student: &Student,
    seat_id: Uuid,
    project_id: Uuid,
    failure: &StudentFailure,
) {
    let now = Utc::now();
    let reason = failure.to_string();
    match saga.take_compensation(now).await {
        Some(false) => ledger.forget(),
        None => {
            ledger.compensate(&reason).await;
            release(ctx, seat_id).await;
        }
        Some(true) => {
            let had_undos = !ledger.is_empty();
            let mut undone = saga.undo(ledger, &reason).await;
            let event = had_undos.then(|| {
                events::event(
                    ctx.course.id,
                    EventType::AssignmentCompensated,
                    &ctx.actor,
                    ctx.now,
                )
                .seat(Some(seat_id))
                .project(project_id)
                .student(&student.student_id)
                .data(json!({
                    "saga_id": saga.id(),
                    "run_id": ctx.run,
                    "reason": failure.metric_reason(),
                }))
            });
            let seat_seq = saga.seq_of(|s| matches!(s, Step::SeatReservation { .. }));
            let recorded = async {
                let mut tx = ctx.services.db.begin().await?;
                let released = repo::seats::release(&mut *tx, seat_id, ctx.run).await?;
                if let Some(seq) = seat_seq {
                    let state = if released {
                        StepState::Undone
                    } else {
                        StepState::NothingToUndo
                    };
                    undone.progress.set(seq, state);
                }
                if let Some(event) = event {
                    events::record(&mut *tx, &[event]).await?;
                }
                saga.finish(&mut *tx, &undone, now).await?;
                tx.commit().await
            };
            if let Err(err) = recorded.await {
                tracing::warn!(seat_id = %seat_id, saga_id = %saga.id(), error = %err, "could not record the compensation; the saga recovery finishes it");
            }
        }
    }
}

/// Steps B.3–B.6: project groups (with the shared admin listing), memberships, the account
/// and the grant, each with its undo on `ledger`, tagged with its plan step.
async fn external_steps(
    ctx: &AssignRun,
    saga: &Saga,
    plan: &StudentPlan,
    ledger: &mut Ledger,
    student: &Student,
    project_id: Uuid,
) -> Result<ProjectGroups, StudentFailure> {
    let services = &ctx.services;
    let vlab_id = ctx.lab.id;
    let (created, admins) =
        tokio::join!(create_project_groups(ctx, plan, ledger), ctx.admins.get());
    let Some(admins) = admins else {
        return Err(StudentFailure::LabAdminsUnavailable);
    };
    let groups = created.map_err(|err| {
        tracing::warn!(project_id = %project_id, error = %err, "assign: project group creation failed");
        StudentFailure::GroupsFailed
    })?;
    fault::point(services, "assign", "after_groups");
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
        (plan.account, saga.key(plan.account)),
    )
    .await
    .map_err(|_| StudentFailure::AccountFailed)?;
    fault::point(services, "assign", "after_account");

    grant(ctx, saga, plan.grant, ledger, project_id).await?;
    fault::point(services, "assign", "after_grant");
    Ok(groups)
}

/// B.3: the project's admin and member groups, and its waitlisted group when the course has
/// not started at the time of the run (W.5.2), each with its undo.
async fn create_project_groups(
    ctx: &AssignRun,
    plan: &StudentPlan,
    ledger: &mut Ledger,
) -> Result<ProjectGroups, ClientError> {
    let kc = &ctx.services.keycloak;
    let admin = plan.admin_group.clone();
    let member = plan.member_group.clone();
    if let Some(waitlisted) = plan.waitlisted_group.clone() {
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
/// discarded only after a definite failure. The saga is fenced first: a process whose saga
/// the recovery took over never creates credits.
async fn grant(
    ctx: &AssignRun,
    saga: &Saga,
    seq: u32,
    ledger: &mut Ledger,
    project_id: Uuid,
) -> Result<(), StudentFailure> {
    let credits = ctx.course.credits_per_seat;
    if !saga.fence(seq).await {
        return Err(StudentFailure::GrantFailed { credits });
    }
    let accounting = ctx.services.accounting.clone();
    let step = ledger.push_for(seq, "acc_grant", move || async move {
        let amount = accounting.deplete_project(project_id).await?;
        tracing::info!(project_id = %project_id, %amount, "compensation: project depleted");
        Ok(())
    });
    match ctx
        .services
        .accounting
        .grant(project_id, i64::from(credits), Some(&saga.key(seq)))
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

/// Gives the seat back if this run still holds it; otherwise it lapses after 30 min.
pub async fn release(ctx: &AssignRun, seat_id: Uuid) {
    match repo::seats::release(&ctx.services.db, seat_id, ctx.run).await {
        Ok(_) => {}
        Err(err) => {
            tracing::warn!(seat_id = %seat_id, error = %err, "could not release a seat reservation; it lapses by itself")
        }
    }
}
