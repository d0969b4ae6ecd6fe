//! The lab-wide deplete of a voided, deleted or ended course (rules.md §4.7 step 4, §4.8 step
//! 5, §8 step 5.3). `budget_depleted` is set only after a 2xx, so every caller retries while it
//! is false; a repeated deplete is harmless (it moves 0).

use chrono::Utc;
use rust_decimal::Decimal;
use serde_json::json;
use uuid::Uuid;

use super::UseCaseError;
use crate::domain::audit::{Actor, EventType};
use crate::repo;
use crate::usecases::Services;
use crate::usecases::events::{self, EventExt};

/// Lab deplete once: if `budget_depleted` is false, ACC deplete the lab; on 2xx set
/// `budget_depleted = true` with its event (`reason`: `void`, `delete` or `expiry`).
/// `Ok(true)` when the flag is (now) true.
pub async fn deplete_lab_budget(
    services: &Services,
    course_id: Uuid,
    actor: &Actor,
    reason: &str,
) -> Result<bool, UseCaseError> {
    Ok(
        deplete_lab_budget_returning(services, course_id, actor, reason)
            .await?
            .is_some(),
    )
}

/// [`deplete_lab_budget`], with what this call moved back: `Some(amount)` when the flag is
/// (now) true, the amount being the deplete's parsed `total_amount` (0 when the flag was already
/// set or the answer had no readable amount); `None` when the lab is not depleted.
pub async fn deplete_lab_budget_returning(
    services: &Services,
    course_id: Uuid,
    actor: &Actor,
    reason: &str,
) -> Result<Option<Decimal>, UseCaseError> {
    let Some(course) = repo::courses::find(&services.db, course_id).await? else {
        tracing::warn!(%course_id, "lab deplete skipped: the course is gone");
        return Ok(None);
    };
    if course.budget_depleted {
        return Ok(Some(Decimal::ZERO));
    }
    let vlab_id = course.virtual_lab_id;
    let total = match services.accounting.deplete_vlab(vlab_id).await {
        Ok(total) => total,
        Err(err) => {
            tracing::warn!(%course_id, %vlab_id, error = %err, "lab deplete failed; it is retried later");
            return Ok(None);
        }
    };
    let now = Utc::now();
    let mut tx = services.db.begin().await?;
    if repo::drops::set_budget_depleted(&mut *tx, course_id, now).await? {
        let event = events::event(course_id, EventType::CourseBudgetDepleted, actor, now)
            .amount(total)
            .data(json!({ "reason": reason }));
        events::record(&mut *tx, &[event]).await?;
    }
    tx.commit().await?;
    tracing::info!(%course_id, %vlab_id, "lab budget depleted");
    Ok(Some(total.unwrap_or_default()))
}
