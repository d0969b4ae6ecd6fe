//! Activate a draft course (rules.md §2.1, §4.14): one transaction with the course row locked;
//! no external calls.

use chrono::Utc;
use serde_json::json;
use uuid::Uuid;

use crate::domain::audit::{Actor, EventType};
use crate::domain::course_dates::{self, CourseDates};
use crate::repo::courses::{Course, status};
use crate::repo::{self};
use crate::usecases::Services;
use crate::usecases::UseCaseError;
use crate::usecases::courses::CourseError;
use crate::usecases::events::{self, EventExt};

pub async fn activate(
    services: &Services,
    actor: &Actor,
    course_id: Uuid,
) -> Result<Course, UseCaseError> {
    let now = Utc::now();
    let mut tx = services.db.begin().await?;
    let course = repo::courses::find_for_update(&mut *tx, course_id)
        .await?
        .ok_or(CourseError::NotFound(course_id))?;
    if course.status != status::DRAFT {
        return Err(CourseError::NotDraft.into());
    }
    let dates = CourseDates {
        start_date: course.start_date,
        last_drop_date: course.last_drop_date,
        end_date: course.end_date,
    };
    course_dates::check_activation(&dates, services.config.drop_window_max_days)
        .map_err(CourseError::DatesInvalid)?;
    let activated = repo::courses::set_status(&mut *tx, course_id, status::ACTIVE, now).await?;
    let event = events::event(course_id, EventType::CourseActivated, actor, now)
        .before(json!({ "status": course.status }))
        .after(json!({ "status": activated.status }));
    events::record(&mut *tx, &[event]).await?;
    tx.commit().await?;
    tracing::info!(course_id = %course_id, "course activated");
    Ok(activated)
}
