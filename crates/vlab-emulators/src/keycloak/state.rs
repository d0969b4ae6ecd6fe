//! The realm: users, groups, memberships, keys and sessions, and its state file.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::tokens::RsaKey;
use super::{GroupInfo, UserSpec};

pub(crate) struct User {
    pub spec: UserSpec,
    pub created_timestamp: i64,
    /// Ids of the groups the user is a direct member of.
    pub groups: BTreeSet<String>,
}

pub(crate) struct Group {
    pub id: String,
    pub name: String,
    pub parent: Option<String>,
}

pub(crate) struct Realm {
    pub users: BTreeMap<Uuid, User>,
    pub groups: BTreeMap<String, Group>,
    /// Every signing key listed in the JWKS; `current` is the one that signs.
    pub signing_keys: Vec<RsaKey>,
    pub current_kid: String,
    pub encryption_key: RsaKey,
    pub service_account_id: Uuid,
    /// Live sessions (`sid` → user) created by this process.
    pub sessions: HashMap<String, Uuid>,
    pub revoked_sessions: HashSet<String>,
    /// Unix time of the last `revoke_user_sessions`, for tokens whose `sid` is not known.
    pub revoked_at: HashMap<Uuid, i64>,
}

impl Realm {
    pub fn new() -> anyhow::Result<Self> {
        let key = RsaKey::generate()?;
        Ok(Self {
            users: BTreeMap::new(),
            groups: BTreeMap::new(),
            current_kid: key.kid.clone(),
            signing_keys: vec![key],
            encryption_key: RsaKey::generate()?,
            service_account_id: Uuid::new_v4(),
            sessions: HashMap::new(),
            revoked_sessions: HashSet::new(),
            revoked_at: HashMap::new(),
        })
    }

    pub fn current_key(&self) -> &RsaKey {
        self.signing_keys
            .iter()
            .find(|k| k.kid == self.current_kid)
            .or_else(|| self.signing_keys.last())
            // Unreachable: the list is never left empty (see `remove_signing_key`).
            .unwrap_or(&self.encryption_key)
    }

    /// The full path of a group: `/` + the names from the top, joined with `/`.
    pub fn path(&self, id: &str) -> String {
        let mut names = Vec::new();
        let mut next = Some(id);
        while let Some(id) = next {
            match self.groups.get(id) {
                Some(group) => {
                    names.push(group.name.as_str());
                    next = group.parent.as_deref();
                }
                None => break,
            }
        }
        names.reverse();
        format!("/{}", names.join("/"))
    }

    pub fn children(&self, parent: Option<&str>) -> Vec<&Group> {
        let mut children: Vec<&Group> = self
            .groups
            .values()
            .filter(|g| g.parent.as_deref() == parent)
            .collect();
        children.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
        children
    }

    pub fn child_named(&self, parent: Option<&str>, name: &str) -> Option<&Group> {
        self.groups
            .values()
            .find(|g| g.parent.as_deref() == parent && g.name == name)
    }

    pub fn add_group(&mut self, parent: Option<&str>, name: &str) -> String {
        let id = Uuid::new_v4().to_string();
        self.groups.insert(
            id.clone(),
            Group {
                id: id.clone(),
                name: name.to_owned(),
                parent: parent.map(str::to_owned),
            },
        );
        id
    }

    /// Deletes a group, its subgroups and their memberships; false if it does not exist.
    pub fn delete_group(&mut self, id: &str) -> bool {
        if !self.groups.contains_key(id) {
            return false;
        }
        let mut doomed = vec![id.to_owned()];
        let mut i = 0;
        while i < doomed.len() {
            let parent = doomed[i].clone();
            doomed.extend(
                self.groups
                    .values()
                    .filter(|g| g.parent.as_deref() == Some(parent.as_str()))
                    .map(|g| g.id.clone()),
            );
            i += 1;
        }
        for id in &doomed {
            self.groups.remove(id);
            for user in self.users.values_mut() {
                user.groups.remove(id);
            }
        }
        true
    }

    /// Members of a group, ordered by username then id.
    pub fn members(&self, group_id: &str) -> Vec<&User> {
        let mut members: Vec<&User> = self
            .users
            .values()
            .filter(|u| u.groups.contains(group_id))
            .collect();
        members.sort_by(|a, b| {
            a.spec
                .username
                .cmp(&b.spec.username)
                .then_with(|| a.spec.id.cmp(&b.spec.id))
        });
        members
    }

    pub fn user_paths(&self, user_id: Uuid) -> Vec<String> {
        let mut paths: Vec<String> = self
            .users
            .get(&user_id)
            .map(|u| u.groups.iter().map(|g| self.path(g)).collect())
            .unwrap_or_default();
        paths.sort();
        paths
    }

    pub fn info(&self, group: &Group) -> GroupInfo {
        GroupInfo {
            id: group.id.clone(),
            name: group.name.clone(),
            path: self.path(&group.id),
            members: self.members(&group.id).iter().map(|u| u.spec.id).collect(),
        }
    }

    pub fn user_by_login(&self, login: &str) -> Option<&User> {
        self.users.values().find(|u| {
            u.spec.username.eq_ignore_ascii_case(login) || u.spec.email.eq_ignore_ascii_case(login)
        })
    }

    pub fn to_stored(&self) -> StoredRealm {
        StoredRealm {
            current_kid: self.current_kid.clone(),
            signing_keys: self
                .signing_keys
                .iter()
                .map(|k| StoredKey {
                    kid: k.kid.clone(),
                    pkcs8: k.pkcs8_base64(),
                })
                .collect(),
            encryption_key: StoredKey {
                kid: self.encryption_key.kid.clone(),
                pkcs8: self.encryption_key.pkcs8_base64(),
            },
            service_account_id: self.service_account_id,
            users: self
                .users
                .values()
                .map(|u| StoredUser {
                    id: u.spec.id,
                    username: u.spec.username.clone(),
                    email: u.spec.email.clone(),
                    first_name: u.spec.first_name.clone(),
                    last_name: u.spec.last_name.clone(),
                    password: u.spec.password.clone(),
                    created_timestamp: u.created_timestamp,
                    groups: u.groups.iter().cloned().collect(),
                })
                .collect(),
            groups: self
                .groups
                .values()
                .map(|g| StoredGroup {
                    id: g.id.clone(),
                    name: g.name.clone(),
                    parent: g.parent.clone(),
                })
                .collect(),
        }
    }

    pub fn from_stored(stored: StoredRealm) -> anyhow::Result<Self> {
        let signing_keys = stored
            .signing_keys
            .into_iter()
            .map(|k| RsaKey::from_stored(k.kid, &k.pkcs8))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if signing_keys.is_empty() {
            anyhow::bail!("the state file lists no signing key");
        }
        let encryption_key =
            RsaKey::from_stored(stored.encryption_key.kid, &stored.encryption_key.pkcs8)?;
        let groups = stored
            .groups
            .into_iter()
            .map(|g| {
                (
                    g.id.clone(),
                    Group {
                        id: g.id,
                        name: g.name,
                        parent: g.parent,
                    },
                )
            })
            .collect();
        let users = stored
            .users
            .into_iter()
            .map(|u| {
                (
                    u.id,
                    User {
                        spec: UserSpec {
                            id: u.id,
                            username: u.username,
                            email: u.email,
                            first_name: u.first_name,
                            last_name: u.last_name,
                            password: u.password,
                        },
                        created_timestamp: u.created_timestamp,
                        groups: u.groups.into_iter().collect(),
                    },
                )
            })
            .collect();
        Ok(Self {
            users,
            groups,
            current_kid: stored.current_kid,
            signing_keys,
            encryption_key,
            service_account_id: stored.service_account_id,
            sessions: HashMap::new(),
            revoked_sessions: HashSet::new(),
            revoked_at: HashMap::new(),
        })
    }
}

/// The shape of `keycloak.json`.
#[derive(Serialize, Deserialize)]
pub(crate) struct StoredRealm {
    current_kid: String,
    signing_keys: Vec<StoredKey>,
    encryption_key: StoredKey,
    service_account_id: Uuid,
    users: Vec<StoredUser>,
    groups: Vec<StoredGroup>,
}

#[derive(Serialize, Deserialize)]
struct StoredKey {
    kid: String,
    /// PKCS#8 DER, base64.
    pkcs8: String,
}

#[derive(Serialize, Deserialize)]
struct StoredUser {
    id: Uuid,
    username: String,
    email: String,
    first_name: Option<String>,
    last_name: Option<String>,
    password: String,
    created_timestamp: i64,
    groups: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct StoredGroup {
    id: String,
    name: String,
    parent: Option<String>,
}
