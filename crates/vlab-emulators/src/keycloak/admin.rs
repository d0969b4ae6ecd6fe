//! The admin API calls of integrations.md §2.6, under `/admin/realms/{realm}`.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use uuid::Uuid;

use super::oidc::{SERVICE_ROLES, bearer};
use super::state::{Group, Realm, User};
use super::{Kc, Refusal, json_response};

type Answer = Result<Response, Response>;

fn error(status: StatusCode, message: &str) -> Response {
    json_response(status, json!({ "error": message }))
}

fn group_not_found() -> Response {
    error(StatusCode::NOT_FOUND, "Could not find group by id")
}

/// Realm check, then the service token: 401 unless it verifies, 403 unless it carries a
/// `realm-management` role.
fn authorize(kc: &Kc, realm_name: &str, headers: &HeaderMap) -> Result<(), Refusal> {
    kc.check_realm(realm_name)?;
    let unauthorized = || error(StatusCode::UNAUTHORIZED, "HTTP 401 Unauthorized");
    let token = bearer(headers).ok_or_else(unauthorized)?;
    let claims = kc.verify_token(token).map_err(|_| unauthorized())?;
    let allowed = claims["resource_access"]["realm-management"]["roles"]
        .as_array()
        .is_some_and(|roles| {
            roles
                .iter()
                .any(|r| r.as_str().is_some_and(|r| SERVICE_ROLES.contains(&r)))
        });
    if allowed {
        Ok(())
    } else {
        Err(error(StatusCode::FORBIDDEN, "HTTP 403 Forbidden").into())
    }
}

/// Reads an optional non-negative integer query parameter.
fn paging(query: &HashMap<String, String>, name: &str) -> Result<Option<usize>, Refusal> {
    match query.get(name).map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => match v.parse::<i64>() {
            Ok(n) if n < 0 => Ok(None),
            Ok(n) => Ok(Some(usize::try_from(n).unwrap_or(usize::MAX))),
            Err(_) => Err(error(
                StatusCode::BAD_REQUEST,
                &format!("Invalid query parameter {name}"),
            )
            .into()),
        },
    }
}

fn flag(query: &HashMap<String, String>, name: &str, default: bool) -> bool {
    query
        .get(name)
        .map_or(default, |v| v.eq_ignore_ascii_case("true"))
}

fn page<T>(items: Vec<T>, first: Option<usize>, max: Option<usize>) -> Vec<T> {
    items
        .into_iter()
        .skip(first.unwrap_or(0))
        .take(max.unwrap_or(usize::MAX))
        .collect()
}

/// A group representation; `subgroups` decides which children are shown.
fn group_json(
    realm: &Realm,
    group: &Group,
    brief: bool,
    subgroups: &dyn Fn(&Group) -> bool,
) -> Value {
    let children = realm.children(Some(&group.id));
    let shown: Vec<Value> = children
        .iter()
        .filter(|c| subgroups(c))
        .map(|c| group_json(realm, c, brief, subgroups))
        .collect();
    let mut body = json!({
        "id": group.id,
        "name": group.name,
        "path": realm.path(&group.id),
        "subGroupCount": children.len(),
        "subGroups": shown,
    });
    if let Some(parent) = &group.parent {
        body["parentId"] = Value::String(parent.clone());
    }
    if !brief {
        body["attributes"] = json!({});
        body["realmRoles"] = json!([]);
        body["clientRoles"] = json!({});
        body["access"] = json!({"view": true, "viewMembers": true, "manageMembers": true, "manage": true, "manageMembership": true});
    }
    body
}

fn user_json(user: &User) -> Value {
    let mut body = json!({
        "id": user.spec.id.to_string(),
        "username": user.spec.username,
        "enabled": true,
        "emailVerified": false,
        "createdTimestamp": user.created_timestamp,
    });
    if !user.spec.email.is_empty() {
        body["email"] = Value::String(user.spec.email.clone());
    }
    if let Some(first) = &user.spec.first_name {
        body["firstName"] = Value::String(first.clone());
    }
    if let Some(last) = &user.spec.last_name {
        body["lastName"] = Value::String(last.clone());
    }
    body
}

/// `POST /groups` `{"name"}`: a new top-level group.
pub(super) async fn create_group(
    State(kc): State<Arc<Kc>>,
    Path(realm_name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    authorize(&kc, &realm_name, &headers)?;
    let request: Value = serde_json::from_slice(&body)
        .map_err(|_| json_response(StatusCode::BAD_REQUEST, json!({"error": "unknown_error"})))?;
    let name = request["name"].as_str().map(str::trim).unwrap_or_default();
    if name.is_empty() {
        return Err(json_response(
            StatusCode::BAD_REQUEST,
            json!({"errorMessage": "Group name is missing"}),
        ));
    }
    let mut realm = kc.realm();
    if realm.child_named(None, name).is_some() {
        return Err(json_response(
            StatusCode::CONFLICT,
            json!({"errorMessage": format!("Top level group named '{name}' already exists.")}),
        ));
    }
    let id = realm.add_group(None, name);
    kc.save(&realm);
    let location = format!("{}/admin/realms/{}/groups/{id}", kc.base_url, kc.realm_name);
    let mut response = StatusCode::CREATED.into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

/// `GET /groups?search&exact&briefRepresentation&first&max`.
///
/// Like Keycloak, the answer lists top-level groups; with `search`, only those that match or
/// have a matching descendant, each with the branches that lead to the matches in
/// `subGroups`. `exact=true` compares names exactly, otherwise a case-insensitive substring.
pub(super) async fn find_groups(
    State(kc): State<Arc<Kc>>,
    Path(realm_name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Answer {
    authorize(&kc, &realm_name, &headers)?;
    let first = paging(&query, "first")?;
    let max = paging(&query, "max")?;
    let brief = flag(&query, "briefRepresentation", true);
    let exact = flag(&query, "exact", false);
    let realm = kc.realm();
    let search = query.get("search").filter(|s| !s.is_empty());
    let body: Vec<Value> = match search {
        None => {
            let top = page(realm.children(None), first, max);
            top.iter()
                .map(|g| group_json(&realm, g, brief, &|_| false))
                .collect()
        }
        Some(search) => {
            let needle = search.to_lowercase();
            let matches = |g: &Group| {
                if exact {
                    g.name == *search
                } else {
                    g.name.to_lowercase().contains(&needle)
                }
            };
            // The matching groups and all their ancestors.
            let mut shown: BTreeSet<&str> = BTreeSet::new();
            for group in realm.groups.values().filter(|g| matches(g)) {
                let mut next = Some(group);
                while let Some(g) = next {
                    shown.insert(g.id.as_str());
                    next = g.parent.as_deref().and_then(|p| realm.groups.get(p));
                }
            }
            let top: Vec<&Group> = realm
                .children(None)
                .into_iter()
                .filter(|g| shown.contains(g.id.as_str()))
                .collect();
            page(top, first, max)
                .iter()
                .map(|g| group_json(&realm, g, brief, &|c| shown.contains(c.id.as_str())))
                .collect()
        }
    };
    Ok(axum::Json(body).into_response())
}

/// `GET /groups/{id}`.
pub(super) async fn get_group(
    State(kc): State<Arc<Kc>>,
    Path((realm_name, group_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    authorize(&kc, &realm_name, &headers)?;
    let realm = kc.realm();
    let group = realm.groups.get(&group_id).ok_or_else(group_not_found)?;
    Ok(axum::Json(group_json(&realm, group, false, &|_| true)).into_response())
}

/// `DELETE /groups/{id}`: the group, its subgroups and their memberships.
pub(super) async fn delete_group(
    State(kc): State<Arc<Kc>>,
    Path((realm_name, group_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    authorize(&kc, &realm_name, &headers)?;
    let mut realm = kc.realm();
    if !realm.delete_group(&group_id) {
        return Err(group_not_found());
    }
    kc.save(&realm);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /groups/{id}/members?first&max&briefRepresentation`, ordered by username then id,
/// at most 100 per page unless `max` says otherwise.
pub(super) async fn members(
    State(kc): State<Arc<Kc>>,
    Path((realm_name, group_id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Answer {
    authorize(&kc, &realm_name, &headers)?;
    let first = paging(&query, "first")?;
    let max = paging(&query, "max")?.or(Some(100));
    let realm = kc.realm();
    if !realm.groups.contains_key(&group_id) {
        return Err(group_not_found());
    }
    let members: Vec<Value> = page(realm.members(&group_id), first, max)
        .into_iter()
        .map(user_json)
        .collect();
    Ok(axum::Json(members).into_response())
}

fn user_id(raw: &str) -> Option<Uuid> {
    Uuid::parse_str(raw).ok()
}

/// `GET /users/{id}`.
pub(super) async fn get_user(
    State(kc): State<Arc<Kc>>,
    Path((realm_name, raw_user)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    authorize(&kc, &realm_name, &headers)?;
    let realm = kc.realm();
    let user = user_id(&raw_user)
        .and_then(|id| realm.users.get(&id))
        .ok_or_else(|| error(StatusCode::NOT_FOUND, "User not found"))?;
    let mut body = user_json(user);
    body["totp"] = Value::Bool(false);
    body["disableableCredentialTypes"] = json!([]);
    body["requiredActions"] = json!([]);
    body["notBefore"] = json!(0);
    Ok(axum::Json(body).into_response())
}

/// `GET /users/{id}/groups`: the user's direct groups.
pub(super) async fn user_groups(
    State(kc): State<Arc<Kc>>,
    Path((realm_name, raw_user)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    authorize(&kc, &realm_name, &headers)?;
    let realm = kc.realm();
    let user = user_id(&raw_user)
        .and_then(|id| realm.users.get(&id))
        .ok_or_else(|| error(StatusCode::NOT_FOUND, "User not found"))?;
    let mut groups: Vec<&Group> = user
        .groups
        .iter()
        .filter_map(|id| realm.groups.get(id))
        .collect();
    groups.sort_by_key(|g| realm.path(&g.id));
    let body: Vec<Value> = groups
        .into_iter()
        .map(|g| group_json(&realm, g, true, &|_| false))
        .collect();
    Ok(axum::Json(body).into_response())
}

/// Finds the user and the group of a membership call (404 for either missing).
fn membership<'r>(
    realm: &'r mut Realm,
    raw_user: &str,
    group_id: &str,
) -> Result<&'r mut User, Refusal> {
    let id = user_id(raw_user)
        .filter(|id| realm.users.contains_key(id))
        .ok_or_else(|| error(StatusCode::NOT_FOUND, "User not found"))?;
    if !realm.groups.contains_key(group_id) {
        return Err(error(StatusCode::NOT_FOUND, "Group not found").into());
    }
    realm
        .users
        .get_mut(&id)
        .ok_or_else(|| error(StatusCode::NOT_FOUND, "User not found").into())
}

/// `PUT /users/{user_id}/groups/{group_id}` (idempotent).
pub(super) async fn add_member(
    State(kc): State<Arc<Kc>>,
    Path((realm_name, raw_user, group_id)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Answer {
    authorize(&kc, &realm_name, &headers)?;
    let mut realm = kc.realm();
    membership(&mut realm, &raw_user, &group_id)?
        .groups
        .insert(group_id);
    kc.save(&realm);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /users/{user_id}/groups/{group_id}` (idempotent).
pub(super) async fn remove_member(
    State(kc): State<Arc<Kc>>,
    Path((realm_name, raw_user, group_id)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Answer {
    authorize(&kc, &realm_name, &headers)?;
    let mut realm = kc.realm();
    membership(&mut realm, &raw_user, &group_id)?
        .groups
        .remove(&group_id);
    kc.save(&realm);
    Ok(StatusCode::NO_CONTENT.into_response())
}
