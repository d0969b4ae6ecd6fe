//! Update a draft course (rules.md §4.14): only the keys present change; no date rules.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::domain::audit::{Actor, EventType};
use crate::domain::datetime;
use crate::repo::courses::{Course, DraftChanges, status};
use crate::repo::{self};
use crate::usecases::Services;
use crate::usecases::UseCaseError;
use crate::usecases::courses::CourseError;
use crate::usecases::events::{self, EventExt};

pub async fn update(
    services: &Services,
    actor: &Actor,
    course_id: Uuid,
    changes: &DraftChanges,
) -> Result<Course, UseCaseError> {
    let now = Utc::now();
    let mut tx = services.db.begin().await?;
    let course = repo::courses::find_for_update(&mut *tx, course_id)
        .await?
        .ok_or(CourseError::NotFound(course_id))?;
    if course.status != status::DRAFT {
        return Err(CourseError::NotDraft.into());
    }
    if let Some(institution_id) = changes.institution_id
        && !repo::institutions::exists(&mut *tx, institution_id).await?
    {
        return Err(CourseError::InstitutionNotFound(institution_id).into());
    }
    if changes.is_empty() {
        return Ok(course);
    }
    let updated = repo::courses::update_draft(&mut *tx, course_id, changes, now).await?;
    let (before, after) = changed_keys(&course, &updated, changes);
    let event = events::event(course_id, EventType::CourseUpdated, actor, now)
        .before(before)
        .after(after);
    events::record(&mut *tx, &[event]).await?;
    tx.commit().await?;
    Ok(updated)
}

/// The keys the request set, with their values before and after.
fn changed_keys(old: &Course, new: &Course, changes: &DraftChanges) -> (Value, Value) {
    let date = |d: Option<DateTime<Utc>>| json!(d.as_ref().map(datetime::format));
    let mut before = Map::new();
    let mut after = Map::new();
    let dates = [
        (
            "start_date",
            changes.start_date.is_some(),
            old.start_date,
            new.start_date,
        ),
        (
            "end_date",
            changes.end_date.is_some(),
            old.end_date,
            new.end_date,
        ),
        (
            "last_drop_date",
            changes.last_drop_date.is_some(),
            old.last_drop_date,
            new.last_drop_date,
        ),
    ];
    for (key, set, old, new) in dates {
        if set {
            before.insert(key.to_owned(), date(old));
            after.insert(key.to_owned(), date(new));
        }
    }
    if changes.institution_id.is_some() {
        before.insert("institution_id".to_owned(), json!(old.institution_id));
        after.insert("institution_id".to_owned(), json!(new.institution_id));
    }
    (Value::Object(before), Value::Object(after))
}
