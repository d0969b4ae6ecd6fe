//! Assign step A (rules.md §4.10): the request-level checks and the seat reservation, in one
//! short transaction holding the course row `FOR UPDATE`. Nothing external happens here.

use chrono::{DateTime, Duration, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::Student;
use crate::repo::seats::SeatReservation;
use crate::repo::{self, courses::Course, courses::status, labs::VirtualLab};
use crate::usecases::Services;
use crate::usecases::UseCaseError;
use crate::usecases::courses::CourseError;
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

pub async fn reserve(
    services: &Services,
    course_id: Uuid,
    run: Uuid,
    students: &[Student],
    now: DateTime<Utc>,
) -> Result<Reservation, UseCaseError> {
    let mut tx = services.db.begin().await?;
    let course = repo::courses::find_for_update(&mut *tx, course_id)
        .await?
        .ok_or(CourseError::NotFound(course_id))?;
    let lab = open_lab(&mut tx, &course, now).await?;

    let student_ids: Vec<String> = students.iter().map(|s| s.student_id.clone()).collect();
    let lower_emails: Vec<String> = students.iter().map(|s| s.email.to_lowercase()).collect();
    let mut existing =
        repo::enrolments::duplicates(&mut *tx, course_id, &student_ids, &lower_emails).await?;
    existing.extend(
        repo::seats::reserved_duplicates(&mut *tx, course_id, now, &student_ids, &lower_emails)
            .await?,
    );
    if !existing.is_empty() {
        return Err(AssignError::StudentsAlreadyEnrolled {
            entries: duplicate_entries(existing),
        }
        .into());
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
    Ok(Reservation { course, lab, seats })
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
}
