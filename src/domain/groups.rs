//! Keycloak group names (integrations.md §2.4). They are top-level groups whose names contain
//! slashes; UUIDs are lower-case and hyphenated. The path seen in userinfo is `/` + name.

use uuid::Uuid;

pub fn lab_admin(vlab: Uuid) -> String {
    format!("vlab/{vlab}/admin")
}

pub fn lab_member(vlab: Uuid) -> String {
    format!("vlab/{vlab}/member")
}

pub fn project_admin(vlab: Uuid, project: Uuid) -> String {
    format!("proj/{vlab}/{project}/admin")
}

pub fn project_member(vlab: Uuid, project: Uuid) -> String {
    format!("proj/{vlab}/{project}/member")
}

/// A student project's waitlisted group (W.4): its members see the project in listings only.
pub fn project_waitlisted(vlab: Uuid, project: Uuid) -> String {
    format!("proj/{vlab}/{project}/waitlisted")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_use_lower_case_hyphenated_uuids() {
        let v = Uuid::parse_str("A1B2C3D4-E5F6-4A7B-8C9D-0E1F2A3B4C5D").unwrap();
        let p = Uuid::nil();
        assert_eq!(
            lab_admin(v),
            "vlab/a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d/admin"
        );
        assert_eq!(
            project_member(v, p),
            "proj/a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d/00000000-0000-0000-0000-000000000000/member"
        );
    }
}
