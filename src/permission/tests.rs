//! Named tests, several per rule of the permission engine: each says in its name what must hold.

use super::*;
use crate::model::{CompanyRole, GroupId, ObjectRole, PrincipalId, UserId, UserKind, Visibility};
use CompanyRole::{Admin, Consumer, Creator, Owner};

fn uid(s: &str) -> UserId {
    UserId::from(s)
}

fn gid(s: &str) -> GroupId {
    GroupId::from(s)
}

fn person<'a>(id: &'a UserId, role: CompanyRole, groups: &'a [GroupId]) -> Principal<'a> {
    Principal {
        user_id: id,
        kind: UserKind::Person,
        company_role: role,
        groups,
    }
}

/// An API user; its stored company role is set to owner on purpose, to show it is ignored.
fn api<'a>(id: &'a UserId, groups: &'a [GroupId]) -> Principal<'a> {
    Principal {
        user_id: id,
        kind: UserKind::Api,
        company_role: Owner,
        groups,
    }
}

fn acl<'a>(
    owner: &'a UserId,
    visibility: Visibility,
    members: &'a [(PrincipalId, ObjectRole)],
) -> Acl<'a> {
    Acl {
        owner_id: owner,
        visibility,
        members,
    }
}

fn to_user(id: &UserId, role: ObjectRole) -> (PrincipalId, ObjectRole) {
    (PrincipalId::User(id.clone()), role)
}

fn to_group(id: &GroupId, role: ObjectRole) -> (PrincipalId, ObjectRole) {
    (PrincipalId::Group(id.clone()), role)
}

const PRIVATE: Visibility = Visibility::Private;
const PUBLIC: Visibility = Visibility::Public;

// ---- effective role ----

#[test]
fn roles_from_a_direct_grant_and_a_group_add_up_to_the_highest() {
    let (me, boss) = (uid("usr_me"), uid("usr_boss"));
    let groups = [gid("grp_a"), gid("grp_b")];
    let members = [
        to_user(&me, ObjectRole::Viewer),
        to_group(&groups[1], ObjectRole::Editor),
    ];
    let p = person(&me, Consumer, &groups);
    assert_eq!(
        effective_role(&p, &acl(&boss, PRIVATE, &members)),
        Some(ObjectRole::Editor)
    );

    let members = [
        to_user(&me, ObjectRole::Editor),
        to_group(&groups[0], ObjectRole::Viewer),
    ];
    assert_eq!(
        effective_role(&p, &acl(&boss, PRIVATE, &members)),
        Some(ObjectRole::Editor)
    );
}

#[test]
fn ownership_outranks_any_grant_and_public_visibility() {
    let me = uid("usr_me");
    let members = [to_user(&me, ObjectRole::Viewer)];
    let p = person(&me, Creator, &[]);
    assert_eq!(
        effective_role(&p, &acl(&me, PUBLIC, &members)),
        Some(ObjectRole::Owner)
    );
    assert_eq!(
        effective_role(&p, &acl(&me, PRIVATE, &[])),
        Some(ObjectRole::Owner)
    );
}

#[test]
fn public_makes_every_person_a_viewer_but_not_more() {
    let (me, boss) = (uid("usr_me"), uid("usr_boss"));
    for role in [Consumer, Creator, Admin] {
        let p = person(&me, role, &[]);
        assert_eq!(
            effective_role(&p, &acl(&boss, PUBLIC, &[])),
            Some(ObjectRole::Viewer)
        );
        assert_eq!(
            app(&p, &acl(&boss, PUBLIC, &[]), AppAction::Edit),
            Decision::Forbidden
        );
    }
}

#[test]
fn grants_to_other_users_and_to_groups_the_principal_is_not_in_do_not_count() {
    let (me, other, boss) = (uid("usr_me"), uid("usr_other"), uid("usr_boss"));
    let mine = [gid("grp_mine")];
    let members = [
        to_user(&other, ObjectRole::Editor),
        to_group(&gid("grp_theirs"), ObjectRole::Editor),
    ];
    let p = person(&me, Admin, &mine);
    assert_eq!(effective_role(&p, &acl(&boss, PRIVATE, &members)), None);
    assert_eq!(
        app(&p, &acl(&boss, PRIVATE, &members), AppAction::View),
        Decision::NotFound
    );
}

#[test]
fn a_user_id_that_looks_like_a_group_id_does_not_match_the_group() {
    // A user grant and a group grant with the same text must stay apart.
    let (me, boss) = (uid("grp_mine"), uid("usr_boss"));
    let members = [to_user(&uid("grp_other"), ObjectRole::Editor)];
    let groups = [gid("grp_other")];
    let p = person(&me, Creator, &groups);
    assert_eq!(effective_role(&p, &acl(&boss, PRIVATE, &members)), None);
}

#[test]
fn a_member_row_claiming_owner_gives_editor_powers_not_delete_or_transfer() {
    let (me, boss) = (uid("usr_me"), uid("usr_boss"));
    let members = [to_user(&me, ObjectRole::Owner)];
    let p = person(&me, Creator, &[]);
    let a = acl(&boss, PRIVATE, &members);
    assert_eq!(effective_role(&p, &a), Some(ObjectRole::Editor));
    assert_eq!(app(&p, &a, AppAction::Edit), Decision::Allow);
    assert_eq!(app(&p, &a, AppAction::Delete), Decision::Forbidden);
    assert_eq!(
        datasource(&p, &a, DatasourceAction::Transfer),
        Decision::Forbidden
    );
}

#[test]
fn company_owners_are_owners_of_every_private_object() {
    let (me, boss) = (uid("usr_me"), uid("usr_boss"));
    let p = person(&me, Owner, &[]);
    let a = acl(&boss, PRIVATE, &[]);
    assert_eq!(effective_role(&p, &a), Some(ObjectRole::Owner));
    assert_eq!(app(&p, &a, AppAction::Delete), Decision::Allow);
    assert_eq!(app(&p, &a, AppAction::Transfer), Decision::Allow);
    assert_eq!(datasource(&p, &a, DatasourceAction::Edit), Decision::Allow);
    assert_eq!(
        datasource(&p, &a, DatasourceAction::Delete),
        Decision::Allow
    );
}

#[test]
fn admins_have_no_implicit_access_to_private_apps_or_datasources() {
    let (me, boss) = (uid("usr_admin"), uid("usr_boss"));
    let p = person(&me, Admin, &[]);
    let a = acl(&boss, PRIVATE, &[]);
    assert_eq!(effective_role(&p, &a), None);
    assert_eq!(app(&p, &a, AppAction::View), Decision::NotFound);
    assert_eq!(app(&p, &a, AppAction::Delete), Decision::NotFound);
    assert_eq!(
        datasource(&p, &a, DatasourceAction::View),
        Decision::NotFound
    );
    assert_eq!(query(&p, &a, true, true), Decision::NotFound);
}

// ---- 404 versus 403 ----

#[test]
fn a_caller_who_cannot_view_gets_not_found_for_every_action() {
    let (me, boss) = (uid("usr_me"), uid("usr_boss"));
    let p = person(&me, Admin, &[]);
    let a = acl(&boss, PRIVATE, &[]);
    for action in [
        AppAction::View,
        AppAction::Use,
        AppAction::Clone,
        AppAction::Edit,
        AppAction::Share,
        AppAction::Delete,
        AppAction::Transfer,
        AppAction::Detach,
    ] {
        assert_eq!(app(&p, &a, action), Decision::NotFound, "{action:?}");
    }
    for action in [
        DatasourceAction::View,
        DatasourceAction::Edit,
        DatasourceAction::Share,
        DatasourceAction::Delete,
        DatasourceAction::Transfer,
    ] {
        assert_eq!(datasource(&p, &a, action), Decision::NotFound, "{action:?}");
    }
}

#[test]
fn a_consumer_with_an_editor_grant_can_view_but_is_forbidden_to_edit() {
    let (me, boss) = (uid("usr_me"), uid("usr_boss"));
    let members = [to_user(&me, ObjectRole::Editor)];
    let p = person(&me, Consumer, &[]);
    let a = acl(&boss, PRIVATE, &members);
    assert_eq!(app(&p, &a, AppAction::View), Decision::Allow);
    assert_eq!(app(&p, &a, AppAction::Edit), Decision::Forbidden);
    assert_eq!(app(&p, &a, AppAction::Share), Decision::Forbidden);
    assert_eq!(
        datasource(&p, &a, DatasourceAction::Edit),
        Decision::Forbidden
    );
}

#[test]
fn a_demoted_owner_keeps_viewing_but_cannot_delete_until_promoted_again() {
    let me = uid("usr_me");
    let a = acl(&me, PRIVATE, &[]);
    assert_eq!(
        app(&person(&me, Consumer, &[]), &a, AppAction::Use),
        Decision::Allow
    );
    assert_eq!(
        app(&person(&me, Consumer, &[]), &a, AppAction::Delete),
        Decision::Forbidden
    );
    assert_eq!(
        app(&person(&me, Creator, &[]), &a, AppAction::Delete),
        Decision::Allow
    );
}

#[test]
fn a_viewer_through_a_group_may_use_but_is_forbidden_to_share_or_delete() {
    let (me, boss) = (uid("usr_me"), uid("usr_boss"));
    let groups = [gid("grp_sales")];
    let members = [to_group(&groups[0], ObjectRole::Viewer)];
    let p = person(&me, Admin, &groups);
    let a = acl(&boss, PRIVATE, &members);
    assert_eq!(app(&p, &a, AppAction::Use), Decision::Allow);
    assert_eq!(app(&p, &a, AppAction::Share), Decision::Forbidden);
    assert_eq!(app(&p, &a, AppAction::Delete), Decision::Forbidden);
}

#[test]
fn an_editor_may_share_and_detach_but_not_delete_or_transfer() {
    let (me, boss) = (uid("usr_me"), uid("usr_boss"));
    let members = [to_user(&me, ObjectRole::Editor)];
    let p = person(&me, Creator, &[]);
    let a = acl(&boss, PRIVATE, &members);
    assert_eq!(app(&p, &a, AppAction::Share), Decision::Allow);
    assert_eq!(app(&p, &a, AppAction::Detach), Decision::Allow);
    assert_eq!(app(&p, &a, AppAction::Delete), Decision::Forbidden);
    assert_eq!(app(&p, &a, AppAction::Transfer), Decision::Forbidden);
}

// ---- API users ----

#[test]
fn an_api_user_added_as_viewer_or_editor_may_use_the_app_and_nothing_more() {
    let (bot, boss) = (uid("usr_bot"), uid("usr_boss"));
    for role in [ObjectRole::Viewer, ObjectRole::Editor] {
        let members = [to_user(&bot, role)];
        let a = acl(&boss, PRIVATE, &members);
        let p = api(&bot, &[]);
        assert_eq!(app(&p, &a, AppAction::Use), Decision::Allow);
        assert_eq!(query(&p, &a, true, true), Decision::Allow);
        for action in [
            AppAction::Edit,
            AppAction::Share,
            AppAction::Delete,
            AppAction::Clone,
            AppAction::Transfer,
            AppAction::Detach,
        ] {
            assert_eq!(
                app(&p, &a, action),
                Decision::Forbidden,
                "{role:?} {action:?}"
            );
        }
    }
}

#[test]
fn an_api_user_never_sees_a_public_app_it_was_not_added_to() {
    let (bot, boss) = (uid("usr_bot"), uid("usr_boss"));
    let p = api(&bot, &[]);
    let a = acl(&boss, PUBLIC, &[]);
    assert_eq!(effective_role(&p, &a), None);
    assert_eq!(app(&p, &a, AppAction::View), Decision::NotFound);
    assert_eq!(query(&p, &a, true, true), Decision::NotFound);
}

#[test]
fn an_api_user_gets_nothing_through_a_group_grant() {
    let (bot, boss) = (uid("usr_bot"), uid("usr_boss"));
    let groups = [gid("grp_bots")];
    let members = [to_group(&groups[0], ObjectRole::Editor)];
    let p = api(&bot, &groups);
    let a = acl(&boss, PRIVATE, &members);
    assert_eq!(app(&p, &a, AppAction::Use), Decision::NotFound);
    assert_eq!(query(&p, &a, true, true), Decision::NotFound);
}

#[test]
fn an_api_user_stored_as_company_owner_gets_no_owner_powers() {
    let (bot, boss) = (uid("usr_bot"), uid("usr_boss"));
    let p = api(&bot, &[]);
    assert_eq!(p.company_role, Owner);
    let a = acl(&boss, PRIVATE, &[]);
    assert_eq!(app(&p, &a, AppAction::View), Decision::NotFound);
    assert_eq!(company(&p, CompanyAction::CreateApp), Decision::Forbidden);
    assert_eq!(
        company(
            &p,
            CompanyAction::ChangeRole {
                from: Consumer,
                to: Owner
            }
        ),
        Decision::Forbidden
    );
}

#[test]
fn an_api_user_never_sees_a_datasource_even_one_that_names_it() {
    let (bot, boss) = (uid("usr_bot"), uid("usr_boss"));
    let members = [to_user(&bot, ObjectRole::Editor)];
    let p = api(&bot, &[]);
    assert_eq!(
        datasource(&p, &acl(&boss, PUBLIC, &members), DatasourceAction::View),
        Decision::NotFound
    );
    assert_eq!(
        datasource(&p, &acl(&bot, PRIVATE, &[]), DatasourceAction::View),
        Decision::NotFound
    );
}

#[test]
fn an_api_user_cannot_create_register_list_people_or_read_the_audit() {
    let bot = uid("usr_bot");
    let p = api(&bot, &[]);
    let register = CompanyAction::RegisterDatasource {
        integration_enabled: true,
        creators_can_register: true,
    };
    for action in [
        CompanyAction::CreateApp,
        register,
        CompanyAction::ListUsers,
        CompanyAction::ListGroups,
        CompanyAction::ReadAudit,
        CompanyAction::ManageApiUsers,
    ] {
        assert_eq!(company(&p, action), Decision::Forbidden, "{action:?}");
    }
    assert_eq!(company(&p, CompanyAction::ViewCompany), Decision::Allow);
    assert!(!audit_sees_detail(&p, None, false));
}

#[test]
fn an_api_user_that_is_somehow_an_objects_owner_is_not_treated_as_owner() {
    let bot = uid("usr_bot");
    let p = api(&bot, &[]);
    let a = acl(&bot, PUBLIC, &[]);
    assert_eq!(effective_role(&p, &a), None);
    assert_eq!(app(&p, &a, AppAction::Delete), Decision::NotFound);
}

// ---- cross-object: attach, detach, query ----

#[test]
fn attaching_a_datasource_the_caller_cannot_see_is_not_found() {
    let (me, boss) = (uid("usr_me"), uid("usr_boss"));
    let p = person(&me, Creator, &[]);
    let app_acl = acl(&me, PRIVATE, &[]);
    let ds = acl(&boss, PRIVATE, &[]);
    assert_eq!(attach(&p, &app_acl, &ds), Decision::NotFound);
    let admin = person(&me, Admin, &[]);
    assert_eq!(attach(&admin, &app_acl, &ds), Decision::NotFound);
}

#[test]
fn attaching_to_an_app_the_caller_only_views_is_forbidden() {
    let (me, boss) = (uid("usr_me"), uid("usr_boss"));
    let p = person(&me, Creator, &[]);
    let app_acl = acl(&boss, PUBLIC, &[]);
    let ds = acl(&me, PRIVATE, &[]);
    assert_eq!(attach(&p, &app_acl, &ds), Decision::Forbidden);
}

#[test]
fn attaching_with_app_editor_and_datasource_viewer_through_groups_is_allowed() {
    let (me, boss) = (uid("usr_me"), uid("usr_boss"));
    let groups = [gid("grp_eng"), gid("grp_data")];
    let app_members = [to_group(&groups[0], ObjectRole::Editor)];
    let ds_members = [to_group(&groups[1], ObjectRole::Viewer)];
    let p = person(&me, Creator, &groups);
    let verdict = attach(
        &p,
        &acl(&boss, PRIVATE, &app_members),
        &acl(&boss, PRIVATE, &ds_members),
    );
    assert_eq!(verdict, Decision::Allow);
}

#[test]
fn attaching_to_an_invisible_app_is_not_found_even_with_the_datasource_visible() {
    let (me, boss) = (uid("usr_me"), uid("usr_boss"));
    let p = person(&me, Admin, &[]);
    assert_eq!(
        attach(&p, &acl(&boss, PRIVATE, &[]), &acl(&me, PUBLIC, &[])),
        Decision::NotFound
    );
}

#[test]
fn detaching_needs_only_app_editor_not_a_view_of_the_datasource() {
    let (me, boss) = (uid("usr_me"), uid("usr_boss"));
    let members = [to_user(&me, ObjectRole::Editor)];
    let p = person(&me, Creator, &[]);
    assert_eq!(
        app(&p, &acl(&boss, PRIVATE, &members), AppAction::Detach),
        Decision::Allow
    );
    assert_eq!(
        app(
            &person(&me, Consumer, &[]),
            &acl(&boss, PRIVATE, &members),
            AppAction::Detach
        ),
        Decision::Forbidden
    );
}

#[test]
fn a_public_app_can_be_queried_by_a_consumer_with_no_role_on_the_private_datasource() {
    let (me, boss) = (uid("usr_me"), uid("usr_boss"));
    let p = person(&me, Consumer, &[]);
    let app_acl = acl(&boss, PUBLIC, &[]);
    let ds = acl(&boss, PRIVATE, &[]);
    assert_eq!(
        datasource(&p, &ds, DatasourceAction::View),
        Decision::NotFound
    );
    assert_eq!(query(&p, &app_acl, true, true), Decision::Allow);
}

#[test]
fn query_through_an_app_the_caller_cannot_use_is_not_found_before_anything_else() {
    let (me, boss) = (uid("usr_me"), uid("usr_boss"));
    let p = person(&me, Admin, &[]);
    let a = acl(&boss, PRIVATE, &[]);
    assert_eq!(query(&p, &a, false, false), Decision::NotFound);
    assert_eq!(query(&p, &a, true, false), Decision::NotFound);
}

#[test]
fn query_on_a_datasource_not_attached_is_a_conflict_even_when_the_integration_is_off() {
    let me = uid("usr_me");
    let p = person(&me, Consumer, &[]);
    let a = acl(&me, PRIVATE, &[]);
    assert_eq!(
        query(&p, &a, false, true),
        Decision::Conflict(DATASOURCE_NOT_ATTACHED)
    );
    assert_eq!(
        query(&p, &a, false, false),
        Decision::Conflict("datasource not attached")
    );
}

// ---- clone ----

fn ds_ids() -> [DatasourceId; 3] {
    [
        DatasourceId::from("ds_shared"),
        DatasourceId::from("ds_private"),
        DatasourceId::from("ds_public"),
    ]
}

#[test]
fn clone_keeps_the_datasources_the_cloner_can_view_and_lists_the_rest_in_order() {
    let (me, boss) = (uid("usr_me"), uid("usr_boss"));
    let ids = ds_ids();
    let shared = [to_user(&me, ObjectRole::Viewer)];
    let dss = [
        (&ids[0], acl(&boss, PRIVATE, &shared)),
        (&ids[1], acl(&boss, PRIVATE, &[])),
        (&ids[2], acl(&boss, PUBLIC, &[])),
    ];
    let p = person(&me, Creator, &[]);
    let plan = clone_plan(&p, &acl(&boss, PUBLIC, &[]), &dss);
    assert_eq!(
        plan,
        Ok(ClonePlan {
            kept: vec![&ids[0], &ids[2]],
            dropped: vec![&ids[1]]
        })
    );
}

#[test]
fn clone_by_a_cloner_with_access_to_every_datasource_drops_nothing() {
    let (me, boss) = (uid("usr_me"), uid("usr_boss"));
    let ids = ds_ids();
    let groups = [gid("grp_data")];
    let via_group = [to_group(&groups[0], ObjectRole::Viewer)];
    let dss = [
        (&ids[0], acl(&me, PRIVATE, &[])),
        (&ids[1], acl(&boss, PRIVATE, &via_group)),
        (&ids[2], acl(&boss, PUBLIC, &[])),
    ];
    let p = person(&me, Admin, &groups);
    let plan =
        clone_plan(&p, &acl(&boss, PUBLIC, &[]), &dss).map(|plan| (plan.kept.len(), plan.dropped));
    assert_eq!(plan, Ok((3, vec![])));
}

#[test]
fn clone_by_a_cloner_with_no_datasource_access_drops_every_private_one() {
    let (me, boss) = (uid("usr_me"), uid("usr_boss"));
    let ids = ds_ids();
    let dss = [
        (&ids[0], acl(&boss, PRIVATE, &[])),
        (&ids[1], acl(&boss, PRIVATE, &[])),
    ];
    let p = person(&me, Admin, &[]);
    let plan = clone_plan(&p, &acl(&boss, PUBLIC, &[]), &dss);
    assert_eq!(
        plan,
        Ok(ClonePlan {
            kept: vec![],
            dropped: vec![&ids[0], &ids[1]]
        })
    );
}

#[test]
fn clone_by_a_company_owner_keeps_every_datasource() {
    let (me, boss) = (uid("usr_me"), uid("usr_boss"));
    let ids = ds_ids();
    let dss = [
        (&ids[0], acl(&boss, PRIVATE, &[])),
        (&ids[1], acl(&boss, PRIVATE, &[])),
    ];
    let plan = clone_plan(&person(&me, Owner, &[]), &acl(&boss, PRIVATE, &[]), &dss);
    assert_eq!(
        plan,
        Ok(ClonePlan {
            kept: vec![&ids[0], &ids[1]],
            dropped: vec![]
        })
    );
}

#[test]
fn clone_is_forbidden_to_a_consumer_and_not_found_to_a_stranger_or_api_user() {
    let (me, boss, bot) = (uid("usr_me"), uid("usr_boss"), uid("usr_bot"));
    let ids = ds_ids();
    let dss = [(&ids[2], acl(&boss, PUBLIC, &[]))];
    let public_app = acl(&boss, PUBLIC, &[]);
    assert_eq!(
        clone_plan(&person(&me, Consumer, &[]), &public_app, &dss),
        Err(Decision::Forbidden)
    );
    assert_eq!(
        clone_plan(&person(&me, Admin, &[]), &acl(&boss, PRIVATE, &[]), &dss),
        Err(Decision::NotFound)
    );
    assert_eq!(
        clone_plan(&api(&bot, &[]), &public_app, &dss),
        Err(Decision::NotFound)
    );
    let added = [to_user(&bot, ObjectRole::Editor)];
    assert_eq!(
        clone_plan(&api(&bot, &[]), &acl(&boss, PRIVATE, &added), &dss),
        Err(Decision::Forbidden)
    );
}

// ---- transfer targets ----

#[test]
fn ownership_goes_only_to_person_users_who_are_creator_or_higher() {
    assert!(!can_receive_ownership(UserKind::Person, Consumer));
    assert!(can_receive_ownership(UserKind::Person, Creator));
    assert!(can_receive_ownership(UserKind::Person, Admin));
    assert!(can_receive_ownership(UserKind::Person, Owner));
}

#[test]
fn ownership_never_goes_to_an_api_user_whatever_its_stored_role() {
    for role in [Consumer, Creator, Admin, Owner] {
        assert!(!can_receive_ownership(UserKind::Api, role), "{role:?}");
    }
}

#[test]
fn only_the_object_owner_or_a_company_owner_may_start_a_transfer() {
    let (me, boss) = (uid("usr_me"), uid("usr_boss"));
    let editors = [to_user(&me, ObjectRole::Editor)];
    assert_eq!(
        app(
            &person(&me, Admin, &[]),
            &acl(&boss, PRIVATE, &editors),
            AppAction::Transfer
        ),
        Decision::Forbidden
    );
    assert_eq!(
        app(
            &person(&me, Creator, &[]),
            &acl(&me, PRIVATE, &[]),
            AppAction::Transfer
        ),
        Decision::Allow
    );
    assert_eq!(
        datasource(
            &person(&me, Owner, &[]),
            &acl(&boss, PRIVATE, &[]),
            DatasourceAction::Transfer
        ),
        Decision::Allow
    );
}

// ---- last owner ----

#[test]
fn demoting_the_last_owner_is_a_conflict() {
    for to in [Consumer, Creator, Admin] {
        assert_eq!(
            last_owner_rule(1, Owner, Some(to)),
            Decision::Conflict(LAST_OWNER),
            "{to:?}"
        );
    }
}

#[test]
fn removing_the_last_owner_is_a_conflict() {
    assert_eq!(
        last_owner_rule(1, Owner, None),
        Decision::Conflict(LAST_OWNER)
    );
}

#[test]
fn an_owner_may_be_demoted_or_removed_while_another_owner_remains() {
    assert_eq!(last_owner_rule(2, Owner, Some(Admin)), Decision::Allow);
    assert_eq!(last_owner_rule(2, Owner, None), Decision::Allow);
    assert_eq!(last_owner_rule(5, Owner, Some(Consumer)), Decision::Allow);
}

#[test]
fn the_last_owner_rule_leaves_non_owners_and_owner_to_owner_changes_alone() {
    assert_eq!(last_owner_rule(1, Owner, Some(Owner)), Decision::Allow);
    assert_eq!(last_owner_rule(1, Admin, None), Decision::Allow);
    assert_eq!(last_owner_rule(1, Consumer, Some(Creator)), Decision::Allow);
}

#[test]
fn an_owner_count_of_zero_is_refused_rather_than_trusted() {
    assert_eq!(
        last_owner_rule(0, Owner, None),
        Decision::Conflict(LAST_OWNER)
    );
    assert_eq!(
        last_owner_rule(0, Owner, Some(Admin)),
        Decision::Conflict(LAST_OWNER)
    );
}

// ---- integrations and registration ----

#[test]
fn registering_a_datasource_of_a_disabled_integration_is_refused_as_disabled() {
    let me = uid("usr_me");
    for role in [Creator, Admin, Owner] {
        let action = CompanyAction::RegisterDatasource {
            integration_enabled: false,
            creators_can_register: true,
        };
        assert_eq!(
            company(&person(&me, role, &[]), action),
            Decision::IntegrationDisabled,
            "{role:?}"
        );
    }
}

#[test]
fn a_query_on_a_disabled_integration_is_refused_as_disabled() {
    let (me, boss) = (uid("usr_me"), uid("usr_boss"));
    let members = [to_user(&me, ObjectRole::Viewer)];
    let p = person(&me, Consumer, &[]);
    assert_eq!(
        query(&p, &acl(&boss, PRIVATE, &members), true, false),
        Decision::IntegrationDisabled
    );
    assert_eq!(
        query(
            &person(&me, Owner, &[]),
            &acl(&boss, PRIVATE, &[]),
            true,
            false
        ),
        Decision::IntegrationDisabled
    );
    assert_eq!(
        query(&p, &acl(&boss, PRIVATE, &members), true, true),
        Decision::Allow
    );
}

#[test]
fn with_creators_can_register_off_only_admins_and_owners_register() {
    let me = uid("usr_me");
    let action = CompanyAction::RegisterDatasource {
        integration_enabled: true,
        creators_can_register: false,
    };
    assert_eq!(
        company(&person(&me, Consumer, &[]), action),
        Decision::Forbidden
    );
    assert_eq!(
        company(&person(&me, Creator, &[]), action),
        Decision::Forbidden
    );
    assert_eq!(company(&person(&me, Admin, &[]), action), Decision::Allow);
    assert_eq!(company(&person(&me, Owner, &[]), action), Decision::Allow);
}

#[test]
fn a_consumer_is_forbidden_to_register_whatever_the_integration_settings() {
    let me = uid("usr_me");
    for integration_enabled in [true, false] {
        for creators_can_register in [true, false] {
            let action = CompanyAction::RegisterDatasource {
                integration_enabled,
                creators_can_register,
            };
            assert_eq!(
                company(&person(&me, Consumer, &[]), action),
                Decision::Forbidden,
                "{action:?}"
            );
        }
    }
}

// ---- company roles ----

#[test]
fn only_an_owner_grants_or_revokes_the_owner_role() {
    let me = uid("usr_me");
    let admin = person(&me, Admin, &[]);
    let owner = person(&me, Owner, &[]);
    for action in [
        CompanyAction::InviteUser { role: Owner },
        CompanyAction::ChangeRole {
            from: Admin,
            to: Owner,
        },
        CompanyAction::ChangeRole {
            from: Owner,
            to: Creator,
        },
        CompanyAction::RemoveUser { role: Owner },
    ] {
        assert_eq!(company(&admin, action), Decision::Forbidden, "{action:?}");
        assert_eq!(company(&owner, action), Decision::Allow, "{action:?}");
    }
}

#[test]
fn admins_manage_users_groups_integrations_settings_and_audit_but_creators_do_not() {
    let me = uid("usr_me");
    for action in [
        CompanyAction::InviteUser { role: Admin },
        CompanyAction::ChangeRole {
            from: Consumer,
            to: Admin,
        },
        CompanyAction::RemoveUser { role: Creator },
        CompanyAction::ManageGroups,
        CompanyAction::ManageApiUsers,
        CompanyAction::ToggleIntegrations,
        CompanyAction::EditCompany,
        CompanyAction::ReadAudit,
    ] {
        assert_eq!(
            company(&person(&me, Admin, &[]), action),
            Decision::Allow,
            "{action:?}"
        );
        assert_eq!(
            company(&person(&me, Creator, &[]), action),
            Decision::Forbidden,
            "{action:?}"
        );
    }
}

#[test]
fn every_person_may_list_users_and_groups_and_see_integrations() {
    let me = uid("usr_me");
    for action in [
        CompanyAction::ListUsers,
        CompanyAction::ListGroups,
        CompanyAction::ViewIntegrations,
        CompanyAction::ViewCompany,
    ] {
        assert_eq!(
            company(&person(&me, Consumer, &[]), action),
            Decision::Allow,
            "{action:?}"
        );
    }
    assert_eq!(
        company(&person(&me, Consumer, &[]), CompanyAction::CreateApp),
        Decision::Forbidden
    );
    assert_eq!(
        company(&person(&me, Creator, &[]), CompanyAction::CreateApp),
        Decision::Allow
    );
}

// ---- tokens ----

#[test]
fn every_person_may_mint_a_token_for_themselves() {
    let me = uid("usr_me");
    for role in [Consumer, Creator, Admin, Owner] {
        assert_eq!(
            create_token(&person(&me, role, &[]), &me, UserKind::Person),
            Decision::Allow,
            "{role:?}"
        );
    }
}

#[test]
fn only_admins_and_owners_mint_tokens_for_api_users() {
    let (me, bot) = (uid("usr_me"), uid("usr_bot"));
    assert_eq!(
        create_token(&person(&me, Consumer, &[]), &bot, UserKind::Api),
        Decision::Forbidden
    );
    assert_eq!(
        create_token(&person(&me, Creator, &[]), &bot, UserKind::Api),
        Decision::Forbidden
    );
    assert_eq!(
        create_token(&person(&me, Admin, &[]), &bot, UserKind::Api),
        Decision::Allow
    );
    assert_eq!(
        create_token(&person(&me, Owner, &[]), &bot, UserKind::Api),
        Decision::Allow
    );
}

#[test]
fn nobody_mints_a_token_for_another_person_not_even_an_owner() {
    let (me, other) = (uid("usr_me"), uid("usr_other"));
    for role in [Consumer, Creator, Admin, Owner] {
        assert_eq!(
            create_token(&person(&me, role, &[]), &other, UserKind::Person),
            Decision::Forbidden,
            "{role:?}"
        );
    }
}

#[test]
fn an_api_user_may_not_mint_tokens_even_for_itself() {
    let (bot, other_bot) = (uid("usr_bot"), uid("usr_bot2"));
    assert_eq!(
        create_token(&api(&bot, &[]), &bot, UserKind::Api),
        Decision::Forbidden
    );
    assert_eq!(
        create_token(&api(&bot, &[]), &other_bot, UserKind::Api),
        Decision::Forbidden
    );
}

#[test]
fn a_token_may_be_revoked_by_its_own_user_of_either_kind() {
    let (me, bot) = (uid("usr_me"), uid("usr_bot"));
    assert_eq!(
        revoke_token(&person(&me, Consumer, &[]), &me),
        Decision::Allow
    );
    assert_eq!(revoke_token(&api(&bot, &[]), &bot), Decision::Allow);
}

#[test]
fn admins_and_owners_may_revoke_anyones_token() {
    let (me, other) = (uid("usr_me"), uid("usr_other"));
    assert_eq!(
        revoke_token(&person(&me, Admin, &[]), &other),
        Decision::Allow
    );
    assert_eq!(
        revoke_token(&person(&me, Owner, &[]), &other),
        Decision::Allow
    );
}

#[test]
fn anyone_else_revoking_a_token_is_told_it_does_not_exist() {
    let (me, other) = (uid("usr_me"), uid("usr_other"));
    assert_eq!(
        revoke_token(&person(&me, Consumer, &[]), &other),
        Decision::NotFound
    );
    assert_eq!(
        revoke_token(&person(&me, Creator, &[]), &other),
        Decision::NotFound
    );
    // An API user's stored role (owner in `api`) does not make it an admin.
    assert_eq!(revoke_token(&api(&me, &[]), &other), Decision::NotFound);
}

// ---- audit redaction ----

#[test]
fn an_admin_sees_no_sql_of_a_private_app_they_cannot_use() {
    let (admin_id, boss) = (uid("usr_admin"), uid("usr_boss"));
    let admin = person(&admin_id, Admin, &[]);
    assert!(!audit_sees_detail(
        &admin,
        Some(&acl(&boss, PRIVATE, &[])),
        true
    ));
    let others = [to_user(&uid("usr_other"), ObjectRole::Editor)];
    assert!(!audit_sees_detail(
        &admin,
        Some(&acl(&boss, PRIVATE, &others)),
        true
    ));
}

#[test]
fn an_admin_who_can_use_the_private_app_sees_its_sql() {
    let (admin_id, boss) = (uid("usr_admin"), uid("usr_boss"));
    let groups = [gid("grp_ops")];
    let admin = person(&admin_id, Admin, &groups);
    let direct = [to_user(&admin_id, ObjectRole::Viewer)];
    let via_group = [to_group(&groups[0], ObjectRole::Viewer)];
    assert!(audit_sees_detail(
        &admin,
        Some(&acl(&boss, PRIVATE, &direct)),
        true
    ));
    assert!(audit_sees_detail(
        &admin,
        Some(&acl(&boss, PRIVATE, &via_group)),
        true
    ));
    assert!(audit_sees_detail(
        &admin,
        Some(&acl(&admin_id, PRIVATE, &[])),
        true
    ));
}

#[test]
fn public_apps_and_company_owners_always_show_detail() {
    let (me, boss) = (uid("usr_me"), uid("usr_boss"));
    assert!(audit_sees_detail(
        &person(&me, Admin, &[]),
        Some(&acl(&boss, PUBLIC, &[])),
        true
    ));
    assert!(audit_sees_detail(
        &person(&me, Owner, &[]),
        Some(&acl(&boss, PRIVATE, &[])),
        true
    ));
    assert!(audit_sees_detail(&person(&me, Admin, &[]), None, true));
}

#[test]
fn turning_redaction_off_shows_admins_every_private_apps_detail() {
    let (me, boss) = (uid("usr_me"), uid("usr_boss"));
    let private_app = acl(&boss, PRIVATE, &[]);
    assert!(audit_sees_detail(
        &person(&me, Admin, &[]),
        Some(&private_app),
        false
    ));
    assert!(!audit_sees_detail(
        &person(&me, Admin, &[]),
        Some(&private_app),
        true
    ));
}

#[test]
fn readers_who_may_not_read_the_audit_never_see_detail() {
    let (me, bot) = (uid("usr_me"), uid("usr_bot"));
    let own_public = acl(&me, PUBLIC, &[]);
    for role in [Consumer, Creator] {
        assert!(
            !audit_sees_detail(&person(&me, role, &[]), Some(&own_public), false),
            "{role:?}"
        );
    }
    let added = [to_user(&bot, ObjectRole::Editor)];
    assert!(!audit_sees_detail(
        &api(&bot, &[]),
        Some(&acl(&me, PUBLIC, &added)),
        false
    ));
}
