//! The caller's live groups, read from userinfo `groups` (integrations.md §2.4).

use std::collections::BTreeSet;

use uuid::Uuid;

/// The roles a caller holds, parsed from the full group paths of userinfo.
///
/// Lab and project ids are kept as parsed UUIDs, so the case of a path does not matter.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Groups {
    service_admin: bool,
    vlab_admin: BTreeSet<Uuid>,
    vlab_member: BTreeSet<Uuid>,
    /// `(virtual_lab_id, project_id)` pairs.
    project_admin: BTreeSet<(Uuid, Uuid)>,
    project_member: BTreeSet<(Uuid, Uuid)>,
    /// Waitlisted student projects: listed, never opened (W.3.5).
    project_waitlisted: BTreeSet<(Uuid, Uuid)>,
}

#[derive(Clone, Copy)]
enum Role {
    Admin,
    Member,
}

impl Role {
    fn parse(segment: &str) -> Option<Self> {
        match segment {
            "admin" => Some(Role::Admin),
            "member" => Some(Role::Member),
            _ => None,
        }
    }
}

/// A UUID in its hyphenated 36-character form, any case (api.md §0.2).
pub(crate) fn parse_uuid(text: &str) -> Option<Uuid> {
    if text.len() != 36 {
        return None;
    }
    Uuid::try_parse(text).ok()
}

impl Groups {
    /// Applies the rules of integrations.md §2.4 to every path; anything unrecognised is ignored.
    pub fn parse(paths: &[String], service_admin_group: &str) -> Self {
        let mut groups = Groups::default();
        for path in paths {
            if path == service_admin_group {
                groups.service_admin = true;
            } else {
                groups.add_path(path);
            }
        }
        groups
    }

    fn add_path(&mut self, path: &str) {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match segments.as_slice() {
            ["vlab", vlab, role] => {
                if let (Some(vlab), Some(role)) = (parse_uuid(vlab), Role::parse(role)) {
                    match role {
                        Role::Admin => self.vlab_admin.insert(vlab),
                        Role::Member => self.vlab_member.insert(vlab),
                    };
                }
            }
            ["proj", vlab, project, "waitlisted"] => {
                if let (Some(vlab), Some(project)) = (parse_uuid(vlab), parse_uuid(project)) {
                    self.project_waitlisted.insert((vlab, project));
                }
            }
            ["proj", vlab, project, role] => {
                if let (Some(vlab), Some(project), Some(role)) =
                    (parse_uuid(vlab), parse_uuid(project), Role::parse(role))
                {
                    match role {
                        Role::Admin => self.project_admin.insert((vlab, project)),
                        Role::Member => self.project_member.insert((vlab, project)),
                    };
                }
            }
            _ => {}
        }
    }

    /// Userinfo `groups` contains exactly `VLAB_SERVICE_ADMIN_GROUP` (tier SA).
    pub fn is_service_admin(&self) -> bool {
        self.service_admin
    }

    /// Lab admin of `vlab` (tier VA).
    pub fn is_vlab_admin(&self, vlab: Uuid) -> bool {
        self.vlab_admin.contains(&vlab)
    }

    /// Lab member of `vlab` (the member role only).
    pub fn is_vlab_member(&self, vlab: Uuid) -> bool {
        self.vlab_member.contains(&vlab)
    }

    /// Lab admin or member of `vlab` (tier VM).
    pub fn has_vlab_access(&self, vlab: Uuid) -> bool {
        self.is_vlab_admin(vlab) || self.is_vlab_member(vlab)
    }

    /// The labs where the caller is admin (`admin_only`) or admin or member, sorted.
    pub fn vlab_ids(&self, admin_only: bool) -> Vec<Uuid> {
        if admin_only {
            return self.vlab_admin.iter().copied().collect();
        }
        self.vlab_admin
            .union(&self.vlab_member)
            .copied()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// The projects of `vlab` where the caller is project admin, member or waitlisted, sorted:
    /// what the project listing shows (a waitlisted project is listed but never opened).
    pub fn project_ids(&self, vlab: Uuid) -> Vec<Uuid> {
        self.project_admin
            .iter()
            .chain(&self.project_member)
            .chain(&self.project_waitlisted)
            .filter(|(lab, _)| *lab == vlab)
            .map(|(_, project)| *project)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// Project admin or member of `project` in `vlab`, or lab admin of `vlab` (tier PW).
    pub fn has_project_access(&self, vlab: Uuid, project: Uuid) -> bool {
        self.project_admin.contains(&(vlab, project))
            || self.project_member.contains(&(vlab, project))
            || self.is_vlab_admin(vlab)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SA: &str = "/service/virtual-lab-svc/admin";
    const LAB: &str = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d";
    const LAB2: &str = "0b7e5a8e-6f55-4c1e-9d0f-3c0b8a1d2e4f";
    const PROJ: &str = "c0ffee00-1111-4222-8333-444455556666";
    const PROJ2: &str = "5d1c0e7a-2b3f-4a8e-9c6d-7e8f9a0b1c2d";

    fn parse(paths: &[&str]) -> Groups {
        let paths: Vec<String> = paths.iter().map(|p| (*p).to_owned()).collect();
        Groups::parse(&paths, SA)
    }

    fn id(text: &str) -> Uuid {
        Uuid::parse_str(text).unwrap()
    }

    #[test]
    fn service_admin_requires_the_exact_path() {
        assert!(parse(&[SA]).is_service_admin());
        for near_miss in [
            "service/virtual-lab-svc/admin",
            "/service/virtual-lab-svc/admin/",
            "/Service/virtual-lab-svc/admin",
            "/service/virtual-lab-svc/member",
            " /service/virtual-lab-svc/admin",
        ] {
            assert!(!parse(&[near_miss]).is_service_admin(), "{near_miss}");
        }
        assert!(!parse(&[]).is_service_admin());
    }

    #[test]
    fn the_service_admin_path_is_configurable() {
        let paths = vec!["/ops/admins".to_owned(), SA.to_owned()];
        let groups = Groups::parse(&paths, "/ops/admins");
        assert!(groups.is_service_admin());
        assert!(!Groups::parse(&paths[1..], "/ops/admins").is_service_admin());
    }

    #[test]
    fn lab_roles_are_read_with_any_case_and_extra_outer_slashes() {
        let upper = LAB.to_uppercase();
        let groups = parse(&[
            &format!("/vlab/{upper}/admin"),
            &format!("//vlab/{LAB2}/member//"),
        ]);
        assert!(groups.is_vlab_admin(id(LAB)));
        assert!(!groups.is_vlab_member(id(LAB)));
        assert!(groups.has_vlab_access(id(LAB)));
        assert!(groups.is_vlab_member(id(LAB2)));
        assert!(!groups.is_vlab_admin(id(LAB2)));
        assert!(groups.has_vlab_access(id(LAB2)));
        assert!(!groups.has_vlab_access(id(PROJ)));
        assert!(!groups.is_service_admin());
    }

    #[test]
    fn a_path_without_leading_slash_is_read_too() {
        assert!(parse(&[&format!("vlab/{LAB}/admin")]).is_vlab_admin(id(LAB)));
    }

    #[test]
    fn garbage_paths_are_ignored() {
        let groups = parse(&[
            "",
            "/",
            "///",
            "/vlab",
            &format!("/vlab/{LAB}"),
            &format!("/vlab/{LAB}/owner"),
            &format!("/vlab/{LAB}/Admin"),
            &format!("/vlab/{LAB}/admin/extra"),
            &format!("/vlab//{LAB}/admin"),
            "/vlab/not-a-uuid/admin",
            &format!("/vlab/{}/admin", LAB.replace('-', "")),
            &format!("/vlab/{{{LAB}}}/admin"),
            &format!("/VLAB/{LAB}/admin"),
            &format!("/lab/{LAB}/admin"),
            &format!("/proj/{LAB}/admin"),
            &format!("/proj/{LAB}/not-a-uuid/admin"),
            &format!("/proj/{LAB}/{PROJ}/viewer"),
            &format!("/proj/{LAB}/{PROJ}/admin/x"),
            "/service/virtual-lab-svc",
        ]);
        assert_eq!(groups, Groups::default());
    }

    #[test]
    fn project_roles_give_workspace_access_to_that_project_only() {
        let groups = parse(&[
            &format!("/proj/{LAB}/{PROJ}/member"),
            &format!(
                "/proj/{}/{}/admin",
                LAB.to_uppercase(),
                PROJ2.to_uppercase()
            ),
        ]);
        assert!(groups.has_project_access(id(LAB), id(PROJ)));
        assert!(groups.has_project_access(id(LAB), id(PROJ2)));
        // The same project id under another lab is another workspace.
        assert!(!groups.has_project_access(id(LAB2), id(PROJ)));
        // Project roles do not grant lab roles.
        assert!(!groups.has_vlab_access(id(LAB)));
        let mut expected = vec![id(PROJ), id(PROJ2)];
        expected.sort();
        assert_eq!(groups.project_ids(id(LAB)), expected);
        assert!(groups.project_ids(id(LAB2)).is_empty());
    }

    #[test]
    fn a_waitlisted_project_is_listed_but_never_grants_access() {
        let groups = parse(&[&format!("/proj/{LAB}/{PROJ}/waitlisted")]);
        assert_eq!(groups.project_ids(id(LAB)), vec![id(PROJ)]);
        assert!(!groups.has_project_access(id(LAB), id(PROJ)));
        assert!(!groups.has_vlab_access(id(LAB)));
        assert!(!groups.is_vlab_admin(id(LAB)));
        for ignored in [
            format!("/proj/{LAB}/{PROJ}/Waitlisted"),
            format!("/vlab/{LAB}/waitlisted"),
        ] {
            let groups = parse(&[&ignored]);
            assert!(groups.project_ids(id(LAB)).is_empty(), "{ignored}");
            assert!(!groups.has_vlab_access(id(LAB)), "{ignored}");
            assert_eq!(groups, Groups::default(), "{ignored}");
        }
    }

    #[test]
    fn a_lab_admin_has_workspace_access_to_every_project_of_the_lab() {
        let groups = parse(&[
            &format!("/vlab/{LAB}/admin"),
            &format!("/vlab/{LAB2}/member"),
        ]);
        assert!(groups.has_project_access(id(LAB), id(PROJ)));
        assert!(!groups.has_project_access(id(LAB2), id(PROJ)));
        // project_ids lists explicit project roles only.
        assert!(groups.project_ids(id(LAB)).is_empty());
    }

    #[test]
    fn vlab_ids_are_sorted_and_deduplicated() {
        let groups = parse(&[
            &format!("/vlab/{LAB}/admin"),
            &format!("/vlab/{LAB}/member"),
            &format!("/vlab/{LAB2}/member"),
            &format!("/vlab/{PROJ}/admin"),
        ]);
        let mut all = vec![id(LAB), id(LAB2), id(PROJ)];
        all.sort();
        assert_eq!(groups.vlab_ids(false), all);
        let mut admin = vec![id(LAB), id(PROJ)];
        admin.sort();
        assert_eq!(groups.vlab_ids(true), admin);
    }

    #[test]
    fn duplicate_project_roles_are_listed_once() {
        let groups = parse(&[
            &format!("/proj/{LAB}/{PROJ}/member"),
            &format!("/proj/{LAB}/{PROJ}/admin"),
        ]);
        assert_eq!(groups.project_ids(id(LAB)), vec![id(PROJ)]);
    }
}
