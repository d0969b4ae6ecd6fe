//! Pre-expiry notices (addendum §9), step 5b of the expiry job: for every active course inside
//! a notice window, course by course in id order, read the lab admins (only when a faculty
//! notice is due) and the lab's balances once (only when a drop-deadline or student notice is
//! due), then insert every due notice in one transaction with its `email_queued` event. Each
//! notice has a dedup key, so a later run never queues it again; the e-mail pass sends them.
//! No transaction is open during the Keycloak and accounting reads.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::Value;
use uuid::Uuid;

use crate::clients::mail::Notice;
use crate::clients::{GroupMember, ProjectBalance};
use crate::domain::audit::Actor;
use crate::repo::email_outbox::{self as outbox, NewEmail, origin};
use crate::repo::notices::{self, DueStudent, NoticeCourse, Windows};
use crate::usecases::drops::preview;
use crate::usecases::email_outbox::queued_event;
use crate::usecases::error::Chain;
use crate::usecases::events;
use crate::usecases::{Services, UseCaseError};

/// The error of a course whose lab admins could not be read (its faculty notices wait).
pub const ADMINS_UNREADABLE: &str = "Could not read the course administrators";
/// The error of a course whose notices could not be inserted.
pub const NOT_QUEUED: &str = "The notices could not be queued";

/// A course whose notices failed this run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NoticeError {
    pub course_id: Uuid,
    pub error: String,
}

/// What step 5b did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoticeRun {
    /// Rows inserted (a notice queued by an earlier run is not counted again).
    pub queued: u64,
    /// Courses with a failure.
    pub failed: u64,
    pub errors: Vec<NoticeError>,
}

impl NoticeRun {
    fn fail(&mut self, course_id: Uuid, error: &str) {
        self.failed += 1;
        self.errors.push(NoticeError {
            course_id,
            error: error.to_owned(),
        });
    }
}

/// What a dry run would queue notices for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct NoticesDue {
    pub drop_deadline_courses: u64,
    pub course_end_courses: u64,
    pub access_end_enrolments: u64,
}

fn windows(services: &Services) -> Windows {
    let days = |d: u32| i32::try_from(d).unwrap_or(i32::MAX);
    let n = &services.config.notices;
    Windows {
        drop_deadline_days: days(n.faculty_drop_deadline_days),
        course_end_days: days(n.faculty_end_days),
        access_end_days: days(n.student_end_days),
    }
}

fn enabled(w: Windows) -> bool {
    w.drop_deadline_days > 0 || w.course_end_days > 0 || w.access_end_days > 0
}

/// The dry run's counts: one read, no external call, no write.
pub async fn due(services: &Services, now: DateTime<Utc>) -> Result<NoticesDue, sqlx::Error> {
    let w = windows(services);
    let mut due = NoticesDue::default();
    if !enabled(w) {
        return Ok(due);
    }
    for c in notices::due_courses(&services.db, now, w).await? {
        due.drop_deadline_courses += u64::from(c.drop_deadline_due);
        due.course_end_courses += u64::from(c.course_end_due);
        due.access_end_enrolments += c.due_students as u64;
    }
    Ok(due)
}

/// Step 5b. A failed course is reported and the next one is processed; only the selection
/// itself failing is an error.
pub async fn queue_due(services: &Services, now: DateTime<Utc>) -> Result<NoticeRun, UseCaseError> {
    let w = windows(services);
    let mut run = NoticeRun::default();
    if !enabled(w) {
        return Ok(run);
    }
    for course in notices::due_courses(&services.db, now, w).await? {
        queue_course(services, &course, now, &mut run).await;
    }
    if run.queued > 0 {
        tracing::info!(
            queued = run.queued,
            failed = run.failed,
            "pre-expiry notices queued"
        );
    }
    Ok(run)
}

async fn queue_course(
    services: &Services,
    c: &NoticeCourse,
    now: DateTime<Utc>,
    run: &mut NoticeRun,
) {
    let course_id = c.course.id;
    let faculty_due = c.drop_deadline_due || c.course_end_due;
    let admins = if faculty_due {
        match services.keycloak.list_members(&c.lab_admin_group_id).await {
            Ok(members) => Some(recipients(&members, c.lab_owner_id)),
            Err(err) => {
                tracing::warn!(%course_id, error = %err, "notices: the lab admins could not be read");
                run.fail(course_id, ADMINS_UNREADABLE);
                None
            }
        }
    } else {
        None
    };
    let balances = if c.drop_deadline_due || c.due_students > 0 {
        match services
            .accounting
            .vlab_balance(c.course.virtual_lab_id)
            .await
        {
            Ok(lab) => Some(lab.projects),
            Err(err) => {
                // Not a failure: the notices go out without their credit lines.
                tracing::warn!(%course_id, error = %err, "notices: the balances could not be read");
                None
            }
        }
    } else {
        None
    };

    match build_and_insert(services, c, admins.as_deref(), balances.as_ref(), now).await {
        Ok(queued) => run.queued += queued,
        Err(err) => {
            tracing::error!(%course_id, error = %Chain(&err), "notices could not be queued");
            run.fail(course_id, NOT_QUEUED);
        }
    }
}

async fn build_and_insert(
    services: &Services,
    c: &NoticeCourse,
    admins: Option<&[String]>,
    balances: Option<&HashMap<Uuid, ProjectBalance>>,
    now: DateTime<Utc>,
) -> Result<u64, UseCaseError> {
    let course = &c.course;
    let config = &services.config;
    let discover_link = config.landing_namespace.clone();
    let course_link = config.notices.course_link(course.virtual_lab_id, course.id);
    let mut rows: Vec<(NewEmail, String)> = Vec::new();

    if let Some(admins) = admins {
        if c.drop_deadline_due
            && let Some(last_drop) = course.last_drop_date
        {
            let recoverable_now = match balances {
                Some(b) => Some(preview::recoverable_now(services, course, b, now).await? as i64),
                None => None,
            };
            let notice = Notice::DropDeadlineNotice {
                course_name: c.lab_name.clone(),
                last_drop_date: printed(last_drop),
                enrolled: c.enrolled,
                unclaimed: c.unclaimed,
                recoverable_now,
                margin_credits: i64::from(config.drop_recovery_margin_credits),
                course_link: course_link.clone(),
                discover_link: discover_link.clone(),
            };
            for admin in admins {
                let key = format!(
                    "drop_deadline:{}:{}:{}",
                    course.id,
                    last_drop.timestamp(),
                    admin.to_lowercase()
                );
                rows.push((row(course.id, None, admin, &notice, None), key));
            }
        }
        if c.course_end_due
            && let Some(end) = course.end_date
        {
            let notice = Notice::CourseEndNotice {
                course_name: c.lab_name.clone(),
                end_date: printed(end),
                enrolled: c.enrolled,
                course_link: course_link.clone(),
                discover_link: discover_link.clone(),
            };
            for admin in admins {
                let key = format!(
                    "course_end:{}:{}:{}",
                    course.id,
                    end.timestamp(),
                    admin.to_lowercase()
                );
                rows.push((row(course.id, None, admin, &notice, None), key));
            }
        }
    }

    if c.due_students > 0
        && let Some(end) = course.end_date
    {
        let students = notices::due_students(&services.db, course.id).await?;
        for DueStudent {
            enrolment_id,
            contact_email,
            project_id,
        } in students
        {
            let notice = Notice::AccessEndNotice {
                course_name: c.lab_name.clone(),
                access_end_date: printed(end),
                remaining_credits: balances
                    .map(|b| b.get(&project_id).map_or(Decimal::ZERO, |p| p.balance))
                    .map(|balance| format!("{:.2}", balance.round_dp(2))),
                platform_link: config.invite_link_base.trim_end_matches('/').to_owned(),
                discover_link: discover_link.clone(),
            };
            let key = format!("access_end:{enrolment_id}:{}", end.timestamp());
            let email = row(
                course.id,
                Some(enrolment_id),
                &contact_email,
                &notice,
                Some(end),
            );
            rows.push((email, key));
        }
    }
    insert(services, course.id, &rows, now).await
}

/// One transaction: the rows (those already queued are skipped) and an `email_queued` event
/// per inserted row.
async fn insert(
    services: &Services,
    course_id: Uuid,
    rows: &[(NewEmail, String)],
    now: DateTime<Utc>,
) -> Result<u64, UseCaseError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let mut tx = services.db.begin().await?;
    let inserted: HashSet<Uuid> = outbox::insert_notices(&mut *tx, rows, now)
        .await?
        .into_iter()
        .collect();
    let system = Actor::system();
    let queued: Vec<_> = rows
        .iter()
        .filter(|(email, _)| inserted.contains(&email.id))
        .map(|(email, _)| queued_event(course_id, email, &system, now))
        .collect();
    if !queued.is_empty() {
        events::record(&mut *tx, &queued).await?;
    }
    tx.commit().await?;
    Ok(inserted.len() as u64)
}

/// A notice row; the payload is the notice's variables, plus `access_end_at` (the instant the
/// send-time check compares) for a student notice.
fn row(
    course_id: Uuid,
    enrolment_id: Option<Uuid>,
    recipient: &str,
    notice: &Notice,
    access_end_at: Option<DateTime<Utc>>,
) -> NewEmail {
    let mut payload = serde_json::to_value(notice).unwrap_or(Value::Null);
    if let (Some(at), Some(map)) = (access_end_at, payload.as_object_mut()) {
        map.insert(
            "access_end_at".to_owned(),
            Value::String(crate::domain::datetime::format(&at)),
        );
    }
    NewEmail {
        id: Uuid::new_v4(),
        kind: notice.kind(),
        enrolment_id,
        course_id: Some(course_id),
        recipient: recipient.to_owned(),
        payload,
        origin: origin::JOB,
        requested_by: None,
        lease: None,
    }
}

/// Dates as the notices print them: `14 September 2026, 00:00 UTC`.
pub fn printed(at: DateTime<Utc>) -> String {
    at.format("%-d %B %Y, %H:%M UTC").to_string()
}

/// The course-admin recipients: the lab admins with an e-mail, without the lab owner (the OBI
/// account that created the lab), deduplicated case-insensitively; the owner alone when
/// nobody else is left and it has an e-mail.
pub fn recipients(members: &[GroupMember], owner_id: Uuid) -> Vec<String> {
    let with_email = |m: &GroupMember| {
        m.email
            .as_deref()
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_owned)
    };
    let mut seen = HashSet::new();
    let admins: Vec<String> = members
        .iter()
        .filter(|m| m.id != owner_id)
        .filter_map(with_email)
        .filter(|e| seen.insert(e.to_lowercase()))
        .collect();
    if !admins.is_empty() {
        return admins;
    }
    members
        .iter()
        .filter(|m| m.id == owner_id)
        .filter_map(with_email)
        .take(1)
        .collect()
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn member(n: u128, email: Option<&str>) -> GroupMember {
        GroupMember {
            id: Uuid::from_u128(n),
            email: email.map(str::to_owned),
        }
    }

    #[test]
    fn recipients_leave_out_the_owner_and_duplicates() {
        let owner = Uuid::from_u128(1);
        let members = [
            member(1, Some("owner@obi.org")),
            member(2, Some("Ada@uni.org")),
            member(3, Some("ada@UNI.org")),
            member(4, None),
            member(5, Some("  ")),
            member(6, Some("alan@uni.org")),
        ];
        assert_eq!(recipients(&members, owner), ["Ada@uni.org", "alan@uni.org"]);
        assert_eq!(
            recipients(&[member(1, Some("owner@obi.org")), member(4, None)], owner),
            ["owner@obi.org"]
        );
        assert!(recipients(&[member(1, None)], owner).is_empty());
    }

    #[test]
    fn dates_are_printed_in_words() {
        let at = Utc.with_ymd_and_hms(2026, 9, 14, 0, 0, 0).unwrap();
        assert_eq!(printed(at), "14 September 2026, 00:00 UTC");
    }
}
