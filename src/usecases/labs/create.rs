//! Create a virtual lab (rules.md §4.1, api.md §4.1.1).

use chrono::Utc;
use uuid::Uuid;

use crate::domain::caller::Caller;
use crate::domain::groups;
use crate::repo::{self, labs::NewLab, labs::VirtualLab};
use crate::usecases::Services;
use crate::usecases::UseCaseError;
use crate::usecases::fault;
use crate::usecases::labs::LabError;
use crate::usecases::ledger::Ledger;
use crate::usecases::provisioning::{self, AccountKind, fail};
use crate::usecases::saga::{Context, Plan, Saga, SagaKind, Step};

/// The validated body of `POST /virtual-labs`.
#[derive(Debug, Clone)]
pub struct NewLabRequest {
    pub name: String,
    pub description: String,
    /// Already with its domain lower-cased; `None` means the caller's token e-mail.
    pub reference_email: Option<String>,
    pub entity: String,
    pub compute_cell: String,
    pub is_course: bool,
}

pub async fn create(
    services: &Services,
    caller: &Caller,
    request: NewLabRequest,
) -> Result<VirtualLab, UseCaseError> {
    let is_owner_user = services.config.multiple_vlabs_allowed_user_id == Some(caller.sub);
    if request.is_course && !(caller.groups.is_service_admin() || is_owner_user) {
        return Err(LabError::CourseLabNotAllowed.into());
    }
    if !request.is_course
        && !is_owner_user
        && repo::labs::owns_regular_lab(&services.db, caller.sub).await?
    {
        return Err(LabError::AlreadyOwnsLab {
            owner_id: caller.sub,
        }
        .into());
    }
    if repo::labs::active_name_taken(&services.db, &request.name, None).await? {
        return Err(LabError::NameTaken { name: request.name }.into());
    }

    let task_services = services.clone();
    let (owner_id, owner_email) = (caller.sub, caller.email.clone());
    services
        .tasks
        .run("create_lab", async move {
            provision_lab(&task_services, owner_id, owner_email, request).await
        })
        .await?
}

/// Steps 2–7 of rules.md §4.1, all-or-nothing through the ledger and the saga journal.
async fn provision_lab(
    services: &Services,
    owner_id: Uuid,
    owner_email: String,
    request: NewLabRequest,
) -> Result<VirtualLab, UseCaseError> {
    let id = Uuid::new_v4();
    let mut plan = Plan::default();
    let groups = [groups::lab_admin(id), groups::lab_member(id)].map(|name| {
        let seq = plan.push(Step::KcCreateGroup { name: name.clone() });
        (seq, name)
    });
    let account_seq = plan.push(Step::AccCreateVlabAccount { vlab_id: id });
    let context = Context {
        vlab_id: id,
        ..Context::default()
    };
    let saga = Saga::open(services, SagaKind::CreateLab, plan, context, Utc::now())
        .await
        .map_err(|_| LabError::NotSaved)?;
    let mut ledger = Ledger::new("create_lab");

    let [admin_group_id, member_group_id] =
        match provisioning::create_groups(&services.keycloak, &mut ledger, groups).await {
            Ok(ids) => ids,
            Err(_) => return fail(&saga, &mut ledger, LabError::GroupsFailed).await,
        };
    fault::point(services, "create_lab", "after_groups");

    if let Err(err) = services
        .keycloak
        .add_member(owner_id, &admin_group_id)
        .await
    {
        tracing::warn!(virtual_lab_id = %id, error = %err, "could not add the owner to the lab admin group");
        return fail(&saga, &mut ledger, LabError::OwnerAttachFailed).await;
    }

    let account = provisioning::create_account(
        &services.accounting,
        &mut ledger,
        AccountKind::VirtualLab,
        id,
        &request.name,
        (account_seq, saga.key(account_seq)),
    )
    .await;
    if account.is_err() {
        return fail(&saga, &mut ledger, LabError::AccountFailed).await;
    }

    let new_lab = NewLab {
        id,
        owner_id,
        reference_email: Some(request.reference_email.unwrap_or(owner_email)),
        name: request.name,
        description: request.description,
        entity: request.entity,
        compute_cell: request.compute_cell,
        admin_group_id,
        member_group_id,
        is_course: request.is_course,
    };
    let inserted = provisioning::insert_committing(services, &saga, async |tx| {
        repo::labs::insert(tx, &new_lab, Utc::now()).await
    })
    .await;
    let lab = match inserted {
        Ok(Some(lab)) => lab,
        // The recovery took the saga over: it compensates.
        Ok(None) => return fail(&saga, &mut ledger, LabError::NotSaved).await,
        Err(err) => {
            let error = match repo::unique_violation(&err).as_deref() {
                Some(repo::labs::UNIQUE_NAME_INDEX) => LabError::NameRace {
                    name: new_lab.name.clone(),
                },
                _ => {
                    tracing::error!(virtual_lab_id = %id, error = %err, "could not insert the lab");
                    LabError::NotSaved
                }
            };
            return fail(&saga, &mut ledger, error).await;
        }
    };
    ledger.commit();
    saga.committed();
    tracing::info!(virtual_lab_id = %lab.id, is_course = lab.is_course, "virtual lab created");
    Ok(lab)
}
