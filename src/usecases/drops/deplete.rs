//! D2 — deplete the student project (rules.md §5.2), with no row lock held. A failure releases
//! the lease: a definite one restores the in-doubt flag, an uncertain one leaves it set.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

use super::DropOutcome;
use super::claim::LeasedDrop;
use crate::repo::drops;
use crate::usecases::Services;

pub enum Depleted {
    Amount(Decimal),
    Failed(DropOutcome),
}

const FAILED: &str = "The credit depletion of the student project failed";
const UNCERTAIN: &str = "The credit depletion of the student project could not be confirmed";

pub async fn deplete(
    services: &Services,
    drop: &LeasedDrop,
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
    if let Err(db) = drops::release_lease(
        &services.db,
        drop.enrolment_id,
        lease,
        in_doubt,
        last_error,
        now,
    )
    .await
    {
        // The lease lapses by itself; the record stays in doubt, which only errs on recovery.
        tracing::error!(enrolment_id = %drop.enrolment_id, error = %db, "could not release the drop lease");
    }
    Depleted::Failed(outcome)
}
