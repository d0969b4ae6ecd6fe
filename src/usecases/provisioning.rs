//! External steps shared by lab, project and student-project creation, each registered on the
//! ledger as rules.md §3 asks: group and account creations have an uncertain outcome, so their undo is
//! pushed *before* the call. An account creation's undo is discarded after a definite
//! failure; a group creation's undo never is: group creation is retried after a timeout, so a
//! final error answer does not prove that an earlier attempt did not create the group, and
//! the undo (find by exact name, delete, 404 = done) is harmless when there is nothing.
//! Each undo is tagged with its step's `seq` in the saga plan, and the account creation sends
//! the saga's idempotency key. The end of lab and project creation is shared too: the row
//! insert with the saga's commit point ([`insert_committing`]), or the compensation ([`fail`]).

use std::sync::{Arc, OnceLock};

use sqlx::PgConnection;
use uuid::Uuid;

use crate::clients::{Accounting, ClientError, IdempotencyKey, KeycloakAdmin};
use crate::usecases::ledger::Ledger;
use crate::usecases::saga::Saga;
use crate::usecases::{Services, UseCaseError};

/// Creates these top-level groups (each with its plan `seq`) concurrently, each with its own
/// undo (so one group is never orphaned when another fails). Returns the ids in the order of
/// `groups`, or the first failure.
pub async fn create_groups<const N: usize>(
    keycloak: &Arc<dyn KeycloakAdmin>,
    ledger: &mut Ledger,
    groups: [(u32, String); N],
) -> Result<[String; N], ClientError> {
    let pending: Vec<Arc<OnceLock<String>>> = groups
        .iter()
        .map(|(seq, name)| push_group_undo(keycloak, ledger, *seq, name))
        .collect();
    let names = groups.map(|(_, name)| name);
    let results =
        futures::future::join_all(names.iter().map(|name| keycloak.create_group(name))).await;

    let mut ids = Vec::with_capacity(N);
    let mut failure = None;
    for ((result, known_id), name) in results.into_iter().zip(pending).zip(&names) {
        match result {
            Ok(id) => {
                // The undo now deletes by id instead of searching by name.
                let _ = known_id.set(id.clone());
                ids.push(id);
            }
            Err(err) => {
                tracing::warn!(group = %name, error = %err, uncertain = err.is_uncertain(), "group creation failed");
                failure.get_or_insert(err);
            }
        }
    }
    if let Some(err) = failure {
        return Err(err);
    }
    ids.try_into().map_err(|_| ClientError::Decode {
        operation: "kc_create_group",
        message: "missing group id".to_owned(),
    })
}

/// The undo of one group creation: delete by id once known, otherwise find the top-level group
/// by its exact name and delete it. Nothing found, or a 404, means nothing to undo.
fn push_group_undo(
    keycloak: &Arc<dyn KeycloakAdmin>,
    ledger: &mut Ledger,
    seq: u32,
    name: &str,
) -> Arc<OnceLock<String>> {
    let known_id: Arc<OnceLock<String>> = Arc::new(OnceLock::new());
    let (kc, id_cell, name) = (keycloak.clone(), known_id.clone(), name.to_owned());
    ledger.push_for(seq, "kc_create_group", move || async move {
        let id = match id_cell.get() {
            Some(id) => Some(id.clone()),
            None => kc.find_group(&name).await?,
        };
        if let Some(id) = id {
            kc.delete_group(&id).await?;
            tracing::info!(group = %name, group_id = %id, "compensation: group deleted");
        }
        Ok(())
    });
    known_id
}

/// Which kind of account an orphan log line names.
#[derive(Debug, Clone, Copy)]
pub enum AccountKind {
    VirtualLab,
    Project { vlab_id: Uuid },
}

/// Creates the accounting account under the ledger (plan step `seq`, sent with `key`). The
/// accounting service cannot delete accounts, so the undo only logs the orphan for manual
/// reconciliation.
pub async fn create_account(
    accounting: &Arc<dyn Accounting>,
    ledger: &mut Ledger,
    kind: AccountKind,
    id: Uuid,
    name: &str,
    (seq, key): (u32, IdempotencyKey),
) -> Result<(), ClientError> {
    let label = match kind {
        AccountKind::VirtualLab => "virtual-lab",
        AccountKind::Project { .. } => "project",
    };
    let step = ledger.push_for(seq, "acc_create_account", move || async move {
        // operations.md §4 wants orphaned accounts at `error` (rules.md §3 says warning).
        tracing::error!(account_id = %id, "orphan accounting account ({label}) {id}; reconcile manually");
        Ok(())
    });
    let result = match kind {
        AccountKind::VirtualLab => accounting.create_vlab_account(id, name, Some(&key)).await,
        AccountKind::Project { vlab_id } => {
            accounting
                .create_project_account(id, vlab_id, name, Some(&key))
                .await
        }
    };
    if let Err(err) = &result {
        tracing::warn!(account = %id, kind = label, error = %err, "account creation failed");
        if !err.is_uncertain() {
            ledger.discard(step);
        }
    }
    result
}

/// The insert of the created row and the saga's commit point, in one transaction; `None` when
/// the recovery took the saga over (the transaction is rolled back, so nothing is committed).
pub async fn insert_committing<T>(
    services: &Services,
    saga: &Saga,
    insert: impl AsyncFnOnce(&mut PgConnection) -> Result<T, sqlx::Error>,
) -> Result<Option<T>, sqlx::Error> {
    let mut tx = services.db.begin().await?;
    let inserted = insert(&mut tx).await?;
    if !saga.commit(&mut tx).await? {
        return Ok(None);
    }
    tx.commit().await?;
    Ok(Some(inserted))
}

/// Fails the creation with `error` once its saga is compensated.
pub async fn fail<T>(
    saga: &Saga,
    ledger: &mut Ledger,
    error: impl Into<UseCaseError>,
) -> Result<T, UseCaseError> {
    let error = error.into();
    saga.compensate(ledger, &error.to_string()).await;
    Err(error)
}
