//! Assign step A (rules.md §4.10): the request-level checks and the seat reservation, in one
//! short transaction holding the course row `FOR UPDATE`. Nothing external happens here.

use chrono::{DateTime, Duration, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::Student;
use crate::repo::enrolments::HeldEnrolment;
use crate::repo::seats::SeatReservation;
use crate::repo::{self, courses::Course, courses::status, labs::VirtualLab};
use crate::usecases::Services;
use crate::usecases::UseCaseError;
use crate::usecases::courses::CourseError;
use crate::usecases::idempotency::Resume;
use crate::usecases::seats::AssignError;

/// How long a reservation holds a seat.
pub const RESERVATION: Duration = Duration::minutes(30);

/// What the reservation committed: seat *i* is reserved for student *i*.
#[derive(Debug, Clone)]
pub struct Reservation {
    pub course: Course,
    pub lab: VirtualLab,
    pub seats: Vec<Uuid>,
}

/// Checks and reserves: seat *i* of the reservation is for the *i*-th student that is not
/// held. The second value has, per student, the enrolment it already holds: only when the
/// run resumes a dead attempt (which enrolled them), otherwise none.
pub async fn reserve(
    services: &Services,
    course_id: Uuid,
    run: Uuid,
    students: &[Student],
    resumes: Option<Resume>,
    now: DateTime<Utc>,
) -> Result<(Reservation, Vec<Option<HeldEnrolment>>), UseCaseError> {
    let mut tx = services.db.begin().await?;
    let course = repo::courses::find_for_update(&mut *tx, course_id)
        .await?
        .ok_or(CourseError::NotFound(course_id))?;
    let lab = open_lab(&mut tx, &course, now).await?;

    let mut held = vec![None; students.len()];
    if let Some(resume) = resumes {
        held = take_over(&mut tx, course_id, resume, students).await?;
    }
    let students: Vec<&Student> = students
        .iter()
        .zip(&held)
        .filter_map(|(s, h)| h.is_none().then_some(s))
        .collect();
    if students.is_empty() {
        tx.commit().await?;
        let seats = Vec::new();
        return Ok((Reservation { course, lab, seats }, held));
    }
    let student_ids: Vec<String> = students.iter().map(|s| s.student_id.clone()).collect();
    let lower_emails: Vec<String> = students.iter().map(|s| s.email.to_lowercase()).collect();
    let enrolled =
        repo::enrolments::duplicates(&mut *tx, course_id, &student_ids, &lower_emails).await?;
    let in_progress =
        repo::seats::reserved_duplicates(&mut *tx, course_id, now, &student_ids, &lower_emails)
            .await?;
    if let Some(refusal) = duplicates_refusal(enrolled, in_progress) {
        return Err(refusal.into());
    }

    let seats =
        repo::seats::lock_available(&mut *tx, course_id, now, students.len() as i64).await?;
    if seats.len() < students.len() {
        return Err(AssignError::NotEnoughSeats {
            requested: students.len(),
            found: seats.len(),
        }
        .into());
    }
    let pairs: Vec<SeatReservation> = seats
        .iter()
        .zip(students)
        .map(|(seat_id, s)| SeatReservation {
            seat_id: *seat_id,
            student_id: s.student_id.clone(),
            email: s.email.clone(),
        })
        .collect();
    repo::seats::reserve(&mut *tx, run, now + RESERVATION, &pairs).await?;
    tx.commit().await?;
    Ok((Reservation { course, lab, seats }, held))
}

/// A resumed attempt, under the course lock: frees the seats its dead run still holds, so
/// that their students are not refused as being enrolled by a request in progress.
pub(crate) async fn release_dead_run(
    db: &mut PgConnection,
    course_id: Uuid,
    resume: Resume,
) -> Result<(), sqlx::Error> {
    if let Some(previous) = resume.previous_run {
        let released = repo::seats::release_run(&mut *db, course_id, previous).await?;
        if released > 0 {
            tracing::info!(course_id = %course_id, previous_run = %previous, released,
                "resumed request: took over the seats of its dead run");
        }
    }
    Ok(())
}

/// A resumed attempt, under the course lock: frees the seats its dead run still holds (their
/// students are assigned again now), and finds, per student, the undropped enrolment with
/// that student id and e-mail.
pub(crate) async fn take_over(
    db: &mut PgConnection,
    course_id: Uuid,
    resume: Resume,
    students: &[Student],
) -> Result<Vec<Option<HeldEnrolment>>, sqlx::Error> {
    release_dead_run(&mut *db, course_id, resume).await?;
    let student_ids: Vec<String> = students.iter().map(|s| s.student_id.clone()).collect();
    let lower_emails: Vec<String> = students.iter().map(|s| s.email.to_lowercase()).collect();
    let held = repo::enrolments::held_by(&mut *db, course_id, &student_ids, &lower_emails).await?;
    Ok(students
        .iter()
        .map(|s| {
            held.iter()
                .find(|h| {
                    h.student_id == s.student_id
                        && h.contact_email.to_lowercase() == s.email.to_lowercase()
                })
                .cloned()
        })
        .collect())
}

/// Assign checks 1–3 on a course row the caller has read (locked or not): the course is
/// active, before its last drop date, and its lab is not deleted. Returns the lab.
pub(crate) async fn open_lab(
    db: &mut PgConnection,
    course: &Course,
    now: DateTime<Utc>,
) -> Result<VirtualLab, UseCaseError> {
    if course.status != status::ACTIVE {
        return Err(AssignError::CourseNotActive {
            status: course.status.clone(),
        }
        .into());
    }
    if course.last_drop_date.is_some_and(|d| now >= d) {
        return Err(AssignError::AfterLastDropDate.into());
    }
    let lab = repo::labs::find_active(db, course.virtual_lab_id)
        .await?
        .ok_or(AssignError::LabDeleted)?;
    Ok(lab)
}

/// Check 4: students enrolled (dropped ones included) and students being enrolled by a run
/// in progress (a live reservation) are listed apart; with only enrolled ones, the message is
/// the one api.md gives.
fn duplicates_refusal(
    enrolled: Vec<(String, String)>,
    in_progress: Vec<(String, String)>,
) -> Option<AssignError> {
    let enrolled = (!enrolled.is_empty()).then(|| duplicate_entries(enrolled));
    if in_progress.is_empty() {
        return enrolled.map(|entries| AssignError::StudentsAlreadyEnrolled { entries });
    }
    Some(AssignError::StudentsBeingEnrolled {
        enrolled,
        in_progress: duplicate_entries(in_progress),
    })
}

/// `{student_id} ({email})` per match, in `student_id` order, joined by `", "`.
fn duplicate_entries(mut existing: Vec<(String, String)>) -> String {
    existing.sort();
    existing
        .iter()
        .map(|(student_id, email)| format!("{student_id} ({email})"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_listed_in_student_id_order() {
        let entries = duplicate_entries(vec![
            ("stu-2".to_owned(), "b@uni.org".to_owned()),
            ("stu-10".to_owned(), "J@uni.org".to_owned()),
            ("stu-1".to_owned(), "a@uni.org".to_owned()),
        ]);
        assert_eq!(
            entries,
            "stu-1 (a@uni.org), stu-10 (J@uni.org), stu-2 (b@uni.org)"
        );
    }

    #[test]
    fn students_in_progress_get_their_own_sentence() {
        let pair = |id: &str, email: &str| (id.to_owned(), email.to_owned());
        let message = |enrolled, in_progress| {
            duplicates_refusal(enrolled, in_progress).map(|refusal| refusal.to_string())
        };
        assert_eq!(message(vec![], vec![]), None);
        assert_eq!(
            message(vec![pair("stu-1", "a@uni.org")], vec![]).as_deref(),
            Some("Students already enrolled in this course: stu-1 (a@uni.org)")
        );
        assert_eq!(
            message(vec![], vec![pair("stu-2", "b@uni.org")]).as_deref(),
            Some("Students being enrolled by a request in progress: stu-2 (b@uni.org)")
        );
        assert_eq!(
            message(
                vec![pair("stu-1", "a@uni.org")],
                vec![pair("stu-3", "c@uni.org"), pair("stu-2", "b@uni.org")]
            )
            .as_deref(),
            Some(
                "Students already enrolled in this course: stu-1 (a@uni.org). \
                 Students being enrolled by a request in progress: stu-2 (b@uni.org), stu-3 (c@uni.org)"
            )
        );
    }
}
