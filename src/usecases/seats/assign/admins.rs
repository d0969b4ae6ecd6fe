//! The lab admin listing of one assign request: fetched once, lazily, by whichever student
//! needs it first, and shared by all (rules.md §4.10 B).

use std::sync::Arc;

use tokio::sync::OnceCell;
use uuid::Uuid;

use crate::clients::KeycloakAdmin;

pub struct LabAdmins {
    keycloak: Arc<dyn KeycloakAdmin>,
    admin_group_id: String,
    /// `None` once the fetch has failed: every student then fails, without another fetch.
    members: OnceCell<Option<Vec<Uuid>>>,
}

impl LabAdmins {
    pub fn new(keycloak: Arc<dyn KeycloakAdmin>, admin_group_id: String) -> Self {
        Self {
            keycloak,
            admin_group_id,
            members: OnceCell::new(),
        }
    }

    /// Whether the listing was already attempted and failed.
    pub fn failed(&self) -> bool {
        matches!(self.members.get(), Some(None))
    }

    /// The user ids of the lab admin group, or `None` when they could not be read.
    pub async fn get(&self) -> Option<&[Uuid]> {
        self.members
            .get_or_init(|| async {
                match self.keycloak.list_members(&self.admin_group_id).await {
                    Ok(members) => Some(members.into_iter().map(|m| m.id).collect()),
                    Err(err) => {
                        tracing::warn!(group_id = %self.admin_group_id, error = %err, "assign: could not list the lab admins");
                        None
                    }
                }
            })
            .await
            .as_deref()
    }
}
