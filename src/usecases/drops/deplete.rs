//! D2 — deplete the student project (rules.md §5.2), with no row lock held. A failure releases
//! the lease: a definite one restores the in-doubt flag, an uncertain one leaves it set.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

use super::claim::LeasedDrop;
use super::{DropOutcome, drop_failed_event};
use crate::domain::audit::Actor;
use crate::repo::drops;
use crate::usecases::Services;
use crate::usecases::events;

pub enum Depleted {
    Amount(Decimal),
    Failed(DropOutcome),
}

const FAILED: &str = "The credit depletion of the student project failed";
const UNCERTAIN: &str = "The credit depletion of the student project could not be confirmed";

pub async fn deplete(
    services: &Services,
    drop: &LeasedDrop,
    actor: &Actor,
    lease: Uuid,
    now: DateTime<Utc>,
) -> Depleted {
    if !drop.project_exists {
        return Depleted::Amount(Decimal::ZERO);
    }
    let project_id = drop.project_id;
    let err = match services.accounting.deplete_project(project_id).await {
        Ok(amount) => return Depleted::Amount(amount),
        Err(err) => err,
    };
    let uncertain = err.is_uncertain();
    tracing::warn!(
        enrolment_id = %drop.enrolment_id, %project_id, uncertain, error = %err,
        "project deplete failed"
    );
    let (in_doubt, last_error, outcome) = if uncertain {
        (
            true,
            UNCERTAIN,
            DropOutcome::DepleteUncertain { project_id },
        )
    } else {
        (
            drop.prior_in_doubt,
            FAILED,
            DropOutcome::DepleteFailed { project_id },
        )
    };
    let event = drop_failed_event(drop, actor, &outcome, now);
    if let Err(db) =
        release_with_event(services, drop, lease, in_doubt, last_error, event, now).await
    {
        // The lease lapses by itself; the record stays in doubt, which only errs on recovery.
        tracing::error!(enrolment_id = %drop.enrolment_id, error = %db, "could not release the drop lease");
    }
    Depleted::Failed(outcome)
}

/// Releases the lease after a failed step and records `drop_failed`, in one transaction; a
/// record someone else took over is left alone, and then no event is written.
pub async fn release_with_event(
    services: &Services,
    drop: &LeasedDrop,
    lease: Uuid,
    in_doubt: bool,
    last_error: &str,
    event: crate::repo::events::NewEvent,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let mut tx = services.db.begin().await?;
    let released = drops::release_lease(
        &mut *tx,
        drop.enrolment_id,
        lease,
        in_doubt,
        last_error,
        now,
    )
    .await?;
    if released {
        events::record(&mut *tx, &[event]).await?;
    }
    tx.commit().await
}
