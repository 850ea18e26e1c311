//! The table walk: every company role × grant (direct and through a group) × visibility × action,
//! checked against expectation tables written out by hand from `PERMISSIONS.md`.
//!
//! The expectations are literal data, not computed with the engine's helpers, so a wrong rule in
//! the engine cannot agree with itself here.

use super::*;
use crate::model::{CompanyRole, GroupId, ObjectRole, PrincipalId, UserId, UserKind, Visibility};
use CompanyRole::{Admin, Consumer, Creator, Owner};
use ObjectRole::{Editor, Owner as ObjOwner, Viewer};

const A: Decision = Decision::Allow;
const N: Decision = Decision::NotFound;
const F: Decision = Decision::Forbidden;

/// How the asking principal holds a role on the object, visibility aside.
#[derive(Clone, Copy, Debug)]
enum Grant {
    Nothing,
    DirectViewer,
    DirectEditor,
    GroupViewer,
    GroupEditor,
    /// The principal is the object's `owner_id`.
    Owns,
    /// A member row saying `owner` (no route creates one): must not make an owner.
    DirectOwnerRow,
    GroupOwnerRow,
}

/// Expected effective role of a person who is not a company owner:
/// (grant, on a private object, on a public object).
const PERSON_GRANTS: &[(Grant, Option<ObjectRole>, Option<ObjectRole>)] = &[
    (Grant::Nothing, None, Some(Viewer)),
    (Grant::DirectViewer, Some(Viewer), Some(Viewer)),
    (Grant::DirectEditor, Some(Editor), Some(Editor)),
    (Grant::GroupViewer, Some(Viewer), Some(Viewer)),
    (Grant::GroupEditor, Some(Editor), Some(Editor)),
    (Grant::Owns, Some(ObjOwner), Some(ObjOwner)),
    (Grant::DirectOwnerRow, Some(Editor), Some(Editor)),
    (Grant::GroupOwnerRow, Some(Editor), Some(Editor)),
];

/// Expected effective role of an API user, whatever the visibility and its stored company role:
/// only grants naming it directly count.
const API_GRANTS: &[(Grant, Option<ObjectRole>)] = &[
    (Grant::Nothing, None),
    (Grant::DirectViewer, Some(Viewer)),
    (Grant::DirectEditor, Some(Editor)),
    (Grant::GroupViewer, None),
    (Grant::GroupEditor, None),
    (Grant::Owns, None),
    (Grant::DirectOwnerRow, Some(Editor)),
    (Grant::GroupOwnerRow, None),
];

const COMPANY_ROLES: [CompanyRole; 4] = [Consumer, Creator, Admin, Owner];
const VISIBILITIES: [Visibility; 2] = [Visibility::Private, Visibility::Public];

const APP_ACTIONS: [AppAction; 8] = [
    AppAction::View,
    AppAction::Use,
    AppAction::Clone,
    AppAction::Edit,
    AppAction::Share,
    AppAction::Delete,
    AppAction::Transfer,
    AppAction::Detach,
];

/// App actions by (company role, role from grants and visibility).
/// Columns: View, Use, Clone, Edit, Share, Delete, Transfer, Detach.
/// A company owner passes every row whatever it was granted.
#[rustfmt::skip]
const APP_MATRIX: &[(CompanyRole, Option<ObjectRole>, [Decision; 8])] = &[
    //                           View Use Clone Edit Share Del Xfer Detach
    (Consumer, None,           [N,   N,  N,    N,   N,    N,  N,   N]),
    (Consumer, Some(Viewer),   [A,   A,  F,    F,   F,    F,  F,   F]),
    (Consumer, Some(Editor),   [A,   A,  F,    F,   F,    F,  F,   F]),
    (Consumer, Some(ObjOwner), [A,   A,  F,    F,   F,    F,  F,   F]),
    (Creator,  None,           [N,   N,  N,    N,   N,    N,  N,   N]),
    (Creator,  Some(Viewer),   [A,   A,  A,    F,   F,    F,  F,   F]),
    (Creator,  Some(Editor),   [A,   A,  A,    A,   A,    F,  F,   A]),
    (Creator,  Some(ObjOwner), [A,   A,  A,    A,   A,    A,  A,   A]),
    (Admin,    None,           [N,   N,  N,    N,   N,    N,  N,   N]),
    (Admin,    Some(Viewer),   [A,   A,  A,    F,   F,    F,  F,   F]),
    (Admin,    Some(Editor),   [A,   A,  A,    A,   A,    F,  F,   A]),
    (Admin,    Some(ObjOwner), [A,   A,  A,    A,   A,    A,  A,   A]),
    (Owner,    None,           [A,   A,  A,    A,   A,    A,  A,   A]),
    (Owner,    Some(Viewer),   [A,   A,  A,    A,   A,    A,  A,   A]),
    (Owner,    Some(Editor),   [A,   A,  A,    A,   A,    A,  A,   A]),
    (Owner,    Some(ObjOwner), [A,   A,  A,    A,   A,    A,  A,   A]),
];

/// What an API user gets on an app, by its effective role. Columns as in `APP_MATRIX`.
#[rustfmt::skip]
const API_APP_MATRIX: &[(Option<ObjectRole>, [Decision; 8])] = &[
    (None,         [N, N, N, N, N, N, N, N]),
    (Some(Viewer), [A, A, F, F, F, F, F, F]),
    (Some(Editor), [A, A, F, F, F, F, F, F]),
];

const DS_ACTIONS: [DatasourceAction; 5] = [
    DatasourceAction::View,
    DatasourceAction::Edit,
    DatasourceAction::Share,
    DatasourceAction::Delete,
    DatasourceAction::Transfer,
];

/// Datasource actions. Columns: View, Edit, Share, Delete, Transfer.
#[rustfmt::skip]
const DS_MATRIX: &[(CompanyRole, Option<ObjectRole>, [Decision; 5])] = &[
    //                           View Edit Share Del Xfer
    (Consumer, None,           [N,   N,   N,    N,  N]),
    (Consumer, Some(Viewer),   [A,   F,   F,    F,  F]),
    (Consumer, Some(Editor),   [A,   F,   F,    F,  F]),
    (Consumer, Some(ObjOwner), [A,   F,   F,    F,  F]),
    (Creator,  None,           [N,   N,   N,    N,  N]),
    (Creator,  Some(Viewer),   [A,   F,   F,    F,  F]),
    (Creator,  Some(Editor),   [A,   A,   A,    F,  F]),
    (Creator,  Some(ObjOwner), [A,   A,   A,    A,  A]),
    (Admin,    None,           [N,   N,   N,    N,  N]),
    (Admin,    Some(Viewer),   [A,   F,   F,    F,  F]),
    (Admin,    Some(Editor),   [A,   A,   A,    F,  F]),
    (Admin,    Some(ObjOwner), [A,   A,   A,    A,  A]),
    (Owner,    None,           [A,   A,   A,    A,  A]),
    (Owner,    Some(Viewer),   [A,   A,   A,    A,  A]),
    (Owner,    Some(Editor),   [A,   A,   A,    A,  A]),
    (Owner,    Some(ObjOwner), [A,   A,   A,    A,  A]),
];

/// Attach, per company role: rows are the role on the app (none, viewer, editor, owner),
/// columns the role on the datasource (none, viewer, editor, owner).
#[rustfmt::skip]
const ATTACH_MATRIX: &[(CompanyRole, [[Decision; 4]; 4])] = &[
    //           ds: none viewer editor owner
    (Consumer, [[N, N, N, N],   // app: none
                [N, F, F, F],   // app: viewer
                [N, F, F, F],   // app: editor
                [N, F, F, F]]), // app: owner
    (Creator,  [[N, N, N, N],
                [N, F, F, F],
                [N, A, A, A],
                [N, A, A, A]]),
    (Admin,    [[N, N, N, N],
                [N, F, F, F],
                [N, A, A, A],
                [N, A, A, A]]),
    (Owner,    [[A, A, A, A],
                [A, A, A, A],
                [A, A, A, A],
                [A, A, A, A]]),
];

fn role_index(role: Option<ObjectRole>) -> usize {
    match role {
        None => 0,
        Some(Viewer) => 1,
        Some(Editor) => 2,
        Some(ObjOwner) => 3,
    }
}

fn lookup<const K: usize>(
    table: &[(CompanyRole, Option<ObjectRole>, [Decision; K])],
    company: CompanyRole,
    role: Option<ObjectRole>,
) -> [Decision; K] {
    let rows: Vec<_> = table
        .iter()
        .filter(|(c, r, _)| *c == company && *r == role)
        .collect();
    assert_eq!(
        rows.len(),
        1,
        "expectation table needs exactly one row for {company:?} {role:?}"
    );
    rows[0].2
}

/// The ids one object's sharing state is built from. Every object also carries grants to a
/// stranger and to a group the principal is not in, which must never count.
struct World {
    me: UserId,
    someone_else: UserId,
    my_groups: Vec<GroupId>,
}

impl World {
    fn new() -> Self {
        World {
            me: UserId::from("usr_me"),
            someone_else: UserId::from("usr_someone_else"),
            my_groups: vec![
                GroupId::from("grp_other_of_mine"),
                GroupId::from("grp_mine"),
            ],
        }
    }

    fn members(&self, grant: Grant) -> Vec<(PrincipalId, ObjectRole)> {
        let mut m = vec![
            (PrincipalId::User(self.someone_else.clone()), Editor),
            (PrincipalId::Group(GroupId::from("grp_not_mine")), Editor),
        ];
        let me = PrincipalId::User(self.me.clone());
        let group = PrincipalId::Group(GroupId::from("grp_mine"));
        match grant {
            Grant::Nothing | Grant::Owns => {}
            Grant::DirectViewer => m.push((me, Viewer)),
            Grant::DirectEditor => m.push((me, Editor)),
            Grant::GroupViewer => m.push((group, Viewer)),
            Grant::GroupEditor => m.push((group, Editor)),
            Grant::DirectOwnerRow => m.push((me, ObjOwner)),
            Grant::GroupOwnerRow => m.push((group, ObjOwner)),
        }
        m
    }

    fn owner(&self, grant: Grant) -> &UserId {
        match grant {
            Grant::Owns => &self.me,
            _ => &self.someone_else,
        }
    }

    fn principal(&self, kind: UserKind, company_role: CompanyRole) -> Principal<'_> {
        Principal {
            user_id: &self.me,
            kind,
            company_role,
            groups: &self.my_groups,
        }
    }
}

#[test]
fn every_person_gets_exactly_the_app_table_of_permissions_md() {
    let w = World::new();
    let mut checked = 0;
    for company_role in COMPANY_ROLES {
        for &(grant, private_role, public_role) in PERSON_GRANTS {
            for visibility in VISIBILITIES {
                let members = w.members(grant);
                let acl = Acl {
                    owner_id: w.owner(grant),
                    visibility,
                    members: &members,
                };
                let p = w.principal(UserKind::Person, company_role);
                let granted = match visibility {
                    Visibility::Private => private_role,
                    Visibility::Public => public_role,
                };
                let expected_role = if company_role == Owner {
                    Some(ObjOwner)
                } else {
                    granted
                };
                assert_eq!(
                    effective_role(&p, &acl),
                    expected_role,
                    "effective role of {company_role:?} with {grant:?} on a {visibility:?} app"
                );
                let row = lookup(APP_MATRIX, company_role, granted);
                for (action, want) in APP_ACTIONS.into_iter().zip(row) {
                    assert_eq!(
                        app(&p, &acl, action),
                        want,
                        "{company_role:?} with {grant:?} on a {visibility:?} app doing {action:?}"
                    );
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 4 * PERSON_GRANTS.len() * 2 * APP_ACTIONS.len());
}

#[test]
fn every_person_gets_exactly_the_datasource_table_of_permissions_md() {
    let w = World::new();
    let mut checked = 0;
    for company_role in COMPANY_ROLES {
        for &(grant, private_role, public_role) in PERSON_GRANTS {
            for visibility in VISIBILITIES {
                let members = w.members(grant);
                let acl = Acl {
                    owner_id: w.owner(grant),
                    visibility,
                    members: &members,
                };
                let p = w.principal(UserKind::Person, company_role);
                let granted = match visibility {
                    Visibility::Private => private_role,
                    Visibility::Public => public_role,
                };
                let row = lookup(DS_MATRIX, company_role, granted);
                for (action, want) in DS_ACTIONS.into_iter().zip(row) {
                    assert_eq!(
                        datasource(&p, &acl, action),
                        want,
                        "{company_role:?} with {grant:?} on a {visibility:?} datasource doing {action:?}"
                    );
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 4 * PERSON_GRANTS.len() * 2 * DS_ACTIONS.len());
}

#[test]
fn attach_needs_app_editor_and_datasource_viewer_for_every_combination_of_grants() {
    let w = World::new();
    let mut checked = 0;
    for &(company_role, grid) in ATTACH_MATRIX {
        for &(app_grant, app_private, app_public) in PERSON_GRANTS {
            for app_vis in VISIBILITIES {
                for &(ds_grant, ds_private, ds_public) in PERSON_GRANTS {
                    for ds_vis in VISIBILITIES {
                        let app_members = w.members(app_grant);
                        let ds_members = w.members(ds_grant);
                        let app_acl = Acl {
                            owner_id: w.owner(app_grant),
                            visibility: app_vis,
                            members: &app_members,
                        };
                        let ds_acl = Acl {
                            owner_id: w.owner(ds_grant),
                            visibility: ds_vis,
                            members: &ds_members,
                        };
                        let app_role = match app_vis {
                            Visibility::Private => app_private,
                            Visibility::Public => app_public,
                        };
                        let ds_role = match ds_vis {
                            Visibility::Private => ds_private,
                            Visibility::Public => ds_public,
                        };
                        let want = grid[role_index(app_role)][role_index(ds_role)];
                        let p = w.principal(UserKind::Person, company_role);
                        assert_eq!(
                            attach(&p, &app_acl, &ds_acl),
                            want,
                            "{company_role:?}: app {app_grant:?}/{app_vis:?}, datasource {ds_grant:?}/{ds_vis:?}"
                        );
                        checked += 1;
                    }
                }
            }
        }
    }
    assert_eq!(checked, 4 * (PERSON_GRANTS.len() * 2).pow(2));
}

#[test]
fn api_users_count_only_direct_grants_whatever_their_stored_role_or_the_visibility() {
    let w = World::new();
    let mut checked = 0;
    for stored_role in COMPANY_ROLES {
        for &(grant, expected_role) in API_GRANTS {
            for visibility in VISIBILITIES {
                let members = w.members(grant);
                let acl = Acl {
                    owner_id: w.owner(grant),
                    visibility,
                    members: &members,
                };
                let p = w.principal(UserKind::Api, stored_role);
                let what = format!(
                    "api user stored as {stored_role:?} with {grant:?} on a {visibility:?}"
                );
                assert_eq!(effective_role(&p, &acl), expected_role, "{what} object");

                let rows: Vec<_> = API_APP_MATRIX
                    .iter()
                    .filter(|(r, _)| *r == expected_role)
                    .collect();
                assert_eq!(rows.len(), 1);
                for (action, want) in APP_ACTIONS.into_iter().zip(rows[0].1) {
                    assert_eq!(app(&p, &acl, action), want, "{what} app doing {action:?}");
                    checked += 1;
                }
                for action in DS_ACTIONS {
                    assert_eq!(
                        datasource(&p, &acl, action),
                        N,
                        "{what} datasource doing {action:?}"
                    );
                    checked += 1;
                }
                assert_eq!(attach(&p, &acl, &acl), N, "{what} app attaching");
                checked += 1;
            }
        }
    }
    assert_eq!(
        checked,
        4 * API_GRANTS.len() * 2 * (APP_ACTIONS.len() + DS_ACTIONS.len() + 1)
    );
}

/// Company actions by company role. Columns: consumer, creator, admin, owner.
#[rustfmt::skip]
fn company_matrix() -> Vec<(CompanyAction, [Decision; 4])> {
    use CompanyAction::*;
    let reg = |integration_enabled, creators_can_register| RegisterDatasource {
        integration_enabled,
        creators_can_register,
    };
    const D: Decision = Decision::IntegrationDisabled;
    vec![
        //                                                        consumer creator admin owner
        (CreateApp,                                              [F,       A,      A,    A]),
        (reg(true, true),                                        [F,       A,      A,    A]),
        (reg(true, false),                                       [F,       F,      A,    A]),
        (reg(false, true),                                       [F,       D,      D,    D]),
        (reg(false, false),                                      [F,       F,      D,    D]),
        (ListUsers,                                              [A,       A,      A,    A]),
        (InviteUser { role: Consumer },                          [F,       F,      A,    A]),
        (InviteUser { role: Creator },                           [F,       F,      A,    A]),
        (InviteUser { role: Admin },                             [F,       F,      A,    A]),
        (InviteUser { role: Owner },                             [F,       F,      F,    A]),
        (ChangeRole { from: Consumer, to: Creator },             [F,       F,      A,    A]),
        (ChangeRole { from: Creator, to: Admin },                [F,       F,      A,    A]),
        (ChangeRole { from: Admin, to: Consumer },               [F,       F,      A,    A]),
        (ChangeRole { from: Consumer, to: Owner },               [F,       F,      F,    A]),
        (ChangeRole { from: Admin, to: Owner },                  [F,       F,      F,    A]),
        (ChangeRole { from: Owner, to: Admin },                  [F,       F,      F,    A]),
        (ChangeRole { from: Owner, to: Consumer },               [F,       F,      F,    A]),
        (ChangeRole { from: Owner, to: Owner },                  [F,       F,      F,    A]),
        (RemoveUser { role: Consumer },                          [F,       F,      A,    A]),
        (RemoveUser { role: Admin },                             [F,       F,      A,    A]),
        (RemoveUser { role: Owner },                             [F,       F,      F,    A]),
        (ManageApiUsers,                                         [F,       F,      A,    A]),
        (ManageGroups,                                           [F,       F,      A,    A]),
        (ListGroups,                                             [A,       A,      A,    A]),
        (ViewIntegrations,                                       [A,       A,      A,    A]),
        (ToggleIntegrations,                                     [F,       F,      A,    A]),
        (ViewCompany,                                            [A,       A,      A,    A]),
        (EditCompany,                                            [F,       F,      A,    A]),
        (ReadAudit,                                              [F,       F,      A,    A]),
    ]
}

#[test]
fn every_company_role_gets_exactly_the_company_table_of_permissions_md() {
    let w = World::new();
    let mut checked = 0;
    for (action, row) in company_matrix() {
        for (company_role, want) in COMPANY_ROLES.into_iter().zip(row) {
            let p = w.principal(UserKind::Person, company_role);
            assert_eq!(
                company(&p, action),
                want,
                "{company_role:?} doing {action:?}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, company_matrix().len() * 4);
}

#[test]
fn api_users_may_only_view_the_company_whatever_their_stored_role() {
    let w = World::new();
    for stored_role in COMPANY_ROLES {
        let p = w.principal(UserKind::Api, stored_role);
        for (action, _) in company_matrix() {
            let want = if action == CompanyAction::ViewCompany {
                A
            } else {
                F
            };
            assert_eq!(
                company(&p, action),
                want,
                "api user stored as {stored_role:?} doing {action:?}"
            );
        }
    }
}

/// Which audit entries an app's state lets a reader see in full.
#[derive(Clone, Copy, Debug)]
enum AuditApp {
    NoApp,
    PrivateNotShared,
    PrivateSharedDirectly,
    PrivateSharedToGroup,
    PrivateOwnedByReader,
    Public,
}

/// Audit detail by reader. Columns: consumer, creator, admin, owner, API user (stored as owner).
#[rustfmt::skip]
const AUDIT_MATRIX: &[(AuditApp, bool, [bool; 5])] = &[
    //                                  redact  consumer creator admin  owner  api
    (AuditApp::NoApp,                  true,  [false,   false,  true,  true,  false]),
    (AuditApp::PrivateNotShared,       true,  [false,   false,  false, true,  false]),
    (AuditApp::PrivateSharedDirectly,  true,  [false,   false,  true,  true,  false]),
    (AuditApp::PrivateSharedToGroup,   true,  [false,   false,  true,  true,  false]),
    (AuditApp::PrivateOwnedByReader,   true,  [false,   false,  true,  true,  false]),
    (AuditApp::Public,                 true,  [false,   false,  true,  true,  false]),
    (AuditApp::NoApp,                  false, [false,   false,  true,  true,  false]),
    (AuditApp::PrivateNotShared,       false, [false,   false,  true,  true,  false]),
    (AuditApp::PrivateSharedDirectly,  false, [false,   false,  true,  true,  false]),
    (AuditApp::PrivateSharedToGroup,   false, [false,   false,  true,  true,  false]),
    (AuditApp::PrivateOwnedByReader,   false, [false,   false,  true,  true,  false]),
    (AuditApp::Public,                 false, [false,   false,  true,  true,  false]),
];

#[test]
fn audit_detail_follows_the_redaction_table_for_every_reader_and_app() {
    let w = World::new();
    let readers = [
        (UserKind::Person, Consumer),
        (UserKind::Person, Creator),
        (UserKind::Person, Admin),
        (UserKind::Person, Owner),
        (UserKind::Api, Owner),
    ];
    let mut checked = 0;
    for &(state, redact, row) in AUDIT_MATRIX {
        let (grant, visibility) = match state {
            AuditApp::NoApp | AuditApp::PrivateNotShared => (Grant::Nothing, Visibility::Private),
            AuditApp::PrivateSharedDirectly => (Grant::DirectViewer, Visibility::Private),
            AuditApp::PrivateSharedToGroup => (Grant::GroupViewer, Visibility::Private),
            AuditApp::PrivateOwnedByReader => (Grant::Owns, Visibility::Private),
            AuditApp::Public => (Grant::Nothing, Visibility::Public),
        };
        let members = w.members(grant);
        let acl = Acl {
            owner_id: w.owner(grant),
            visibility,
            members: &members,
        };
        let app_acl = match state {
            AuditApp::NoApp => None,
            _ => Some(&acl),
        };
        for (&(kind, role), want) in readers.iter().zip(row) {
            let p = w.principal(kind, role);
            assert_eq!(
                audit_sees_detail(&p, app_acl, redact),
                want,
                "{kind:?} {role:?} reading {state:?} with redaction {redact}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, AUDIT_MATRIX.len() * 5);
}
