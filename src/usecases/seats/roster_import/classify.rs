//! The verdicts of round2.md §5.3 that need no external call, as pure functions over the rows
//! and one read of the course: the file's own problems first, then what the course already
//! holds, then the pairing with the available seats in file order. The dry run and the real
//! run classify through the same code, so they agree whenever nothing changed in between.

use std::collections::{HashMap, HashSet};

use uuid::Uuid;

use super::{ImportRow, Verdict};
use crate::usecases::seats::assign::Student;

/// An enrolment of the course whose student id or e-mail matches a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Existing {
    pub enrolment_id: Uuid,
    pub student_id: String,
    pub email: String,
    pub project_id: Uuid,
    pub seat_id: Option<Uuid>,
    /// `is_dropped`, or a drop has started.
    pub dropped: bool,
}

/// What the course holds for the rows that passed the file checks.
#[derive(Debug, Clone, Default)]
pub struct CourseState {
    pub enrolments: Vec<Existing>,
    /// Live reservations (`reserved_until > now`): `(student_id, e-mail)`.
    pub reservations: Vec<(String, String)>,
    /// Non-deleted project names of the lab among the rows' student ids.
    pub taken_names: HashSet<String>,
}

/// Step 1: `invalid_row` and `duplicate_in_file`. Returns a verdict per row, `None` for the
/// rows that go on.
pub fn file_verdicts(rows: &[ImportRow]) -> Vec<Option<Verdict>> {
    let mut ids: HashMap<&str, usize> = HashMap::new();
    let mut emails: HashMap<String, usize> = HashMap::new();
    rows.iter()
        .map(|row| {
            let student = match &row.parsed {
                Ok(student) => student,
                Err(message) => return Some(Verdict::InvalidRow(message.clone())),
            };
            if let Some(first) = ids.get(student.student_id.as_str()) {
                return Some(Verdict::DuplicateInFile(format!(
                    "Duplicate student_id in file: first used in row {first}"
                )));
            }
            let email = student.email.to_lowercase();
            if let Some(first) = emails.get(&email) {
                return Some(Verdict::DuplicateInFile(format!(
                    "Duplicate email in file: first used in row {first}"
                )));
            }
            ids.insert(&student.student_id, row.row);
            emails.insert(email, row.row);
            None
        })
        .collect()
}

/// Step 2 for one row that passed step 1: `unchanged`, `already_enrolled`, `in_progress` or
/// `project_name_taken`, or `None` when the row needs a seat.
pub fn course_verdict(student: &Student, state: &CourseState) -> Option<Verdict> {
    let email = student.email.to_lowercase();
    let by_id = state
        .enrolments
        .iter()
        .find(|e| e.student_id == student.student_id);
    let by_email = state
        .enrolments
        .iter()
        .find(|e| e.email.to_lowercase() == email);
    if let Some(e) = by_id {
        if !e.dropped && e.email.to_lowercase() == email {
            return Some(Verdict::Unchanged {
                enrolment_id: e.enrolment_id,
                seat_id: e.seat_id,
                project_id: e.project_id,
            });
        }
        return Some(Verdict::AlreadyEnrolled(if e.dropped {
            format!(
                "{} was dropped from this course and cannot be enrolled again",
                student.student_id
            )
        } else {
            format!(
                "student_id {} is already enrolled in this course with another e-mail",
                student.student_id
            )
        }));
    }
    if let Some(e) = by_email {
        return Some(Verdict::AlreadyEnrolled(format!(
            "{} is already enrolled in this course as {}",
            student.email, e.student_id
        )));
    }
    let reserved = state
        .reservations
        .iter()
        .any(|(id, e)| *id == student.student_id || e.to_lowercase() == email);
    if reserved {
        return Some(Verdict::InProgress(format!(
            "{} ({}) is being enrolled by another request",
            student.student_id, student.email
        )));
    }
    if state.taken_names.contains(&student.student_id) {
        return Some(Verdict::ProjectNameTaken(format!(
            "A project named '{}' already exists in this virtual lab",
            student.student_id
        )));
    }
    None
}

/// The `not_enough_seats` verdict of the rows beyond the first `available` of `remaining`.
pub fn no_seat(available: usize, remaining: usize) -> Verdict {
    Verdict::NotEnoughSeats(format!(
        "No seat left: {available} seat(s) were available for {remaining} row(s)"
    ))
}

/// Every row's verdict before seats are paired: step 1 for all rows, step 2 for the rest.
/// `None` marks a row that needs a seat.
pub fn classify(rows: &[ImportRow], state: &CourseState) -> Vec<Option<Verdict>> {
    file_verdicts(rows)
        .into_iter()
        .zip(rows)
        .map(|(verdict, row)| match (verdict, &row.parsed) {
            (Some(verdict), _) => Some(verdict),
            (None, Ok(student)) => course_verdict(student, state),
            (None, Err(message)) => Some(Verdict::InvalidRow(message.clone())),
        })
        .collect()
}

/// The students of the rows that passed step 1 (the ones step 2 reads the course for).
pub fn candidates(rows: &[ImportRow]) -> Vec<&Student> {
    file_verdicts(rows)
        .iter()
        .zip(rows)
        .filter_map(|(verdict, row)| match (verdict, &row.parsed) {
            (None, Ok(student)) => Some(student),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(row: usize, student_id: &str, email: &str) -> ImportRow {
        ImportRow {
            row,
            student_id: Some(student_id.to_owned()),
            email: Some(email.to_owned()),
            parsed: Ok(Student {
                student_id: student_id.to_owned(),
                email: email.to_owned(),
            }),
        }
    }

    fn existing(student_id: &str, email: &str, dropped: bool) -> Existing {
        Existing {
            enrolment_id: Uuid::from_u128(1),
            student_id: student_id.to_owned(),
            email: email.to_owned(),
            project_id: Uuid::from_u128(2),
            seat_id: Some(Uuid::from_u128(3)),
            dropped,
        }
    }

    fn message(verdict: &Option<Verdict>) -> Option<String> {
        verdict.as_ref().and_then(Verdict::message)
    }

    #[test]
    fn invalid_rows_never_count_as_first_occurrences() {
        let mut bad = row(2, "a", "a@uni.org");
        bad.parsed = Err("email: Must be a valid e-mail address".to_owned());
        let rows = [
            bad,
            row(3, "a", "x@uni.org"),
            row(4, "a", "y@uni.org"),
            row(5, "b", "X@UNI.org"),
        ];
        let verdicts = file_verdicts(&rows);
        assert_eq!(
            verdicts.iter().map(message).collect::<Vec<_>>(),
            [
                Some("email: Must be a valid e-mail address".to_owned()),
                None,
                Some("Duplicate student_id in file: first used in row 3".to_owned()),
                Some("Duplicate email in file: first used in row 3".to_owned()),
            ]
        );
        assert_eq!(candidates(&rows).len(), 1);
    }

    #[test]
    fn the_course_verdicts_apply_in_order() {
        let state = CourseState {
            enrolments: vec![
                existing("same", "Same@uni.org", false),
                existing("gone", "gone@uni.org", true),
                existing("other", "other@uni.org", false),
            ],
            reservations: vec![("busy".to_owned(), "busy@uni.org".to_owned())],
            taken_names: ["taken".to_owned()].into(),
        };
        let cases = [
            (
                row(3, "gone", "gone@uni.org"),
                Some("gone was dropped from this course and cannot be enrolled again"),
            ),
            (
                row(4, "other", "new@uni.org"),
                Some("student_id other is already enrolled in this course with another e-mail"),
            ),
            (
                row(5, "fresh", "OTHER@uni.org"),
                Some("OTHER@uni.org is already enrolled in this course as other"),
            ),
            (
                row(6, "x", "BUSY@uni.org"),
                Some("x (BUSY@uni.org) is being enrolled by another request"),
            ),
            (
                row(7, "taken", "t@uni.org"),
                Some("A project named 'taken' already exists in this virtual lab"),
            ),
        ];
        for (r, expected) in cases {
            let Ok(student) = &r.parsed else {
                unreachable!()
            };
            let verdict = course_verdict(student, &state);
            assert!(verdict.is_some(), "row {}", r.row);
            assert_eq!(message(&verdict).as_deref(), expected, "row {}", r.row);
        }
        let unchanged = course_verdict(
            &Student {
                student_id: "same".to_owned(),
                email: "SAME@uni.org".to_owned(),
            },
            &state,
        );
        assert!(matches!(unchanged, Some(Verdict::Unchanged { .. })));
        let fresh = Student {
            student_id: "new".to_owned(),
            email: "new@uni.org".to_owned(),
        };
        assert_eq!(course_verdict(&fresh, &state), None);
    }

    #[test]
    fn rows_without_a_seat_are_told_how_many_there_were() {
        assert_eq!(
            no_seat(2, 3).message().as_deref(),
            Some("No seat left: 2 seat(s) were available for 3 row(s)")
        );
    }
}
