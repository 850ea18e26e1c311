//! Who may do what: the access rules of `PERMISSIONS.md` as pure functions over plain data.
//!
//! Nothing here reads the store, the clock or the network: callers load the principal and the
//! object's sharing state, ask one question, and map the [`Decision`] to HTTP. Rules this module
//! adds where `PERMISSIONS.md` is silent are written down in `docs/permissions.md`.
//!
//! Every function assumes the caller has already resolved the object *inside the principal's own
//! company*: an object of another company never reaches this module (it is a 404 at lookup).

use crate::model::{
    CompanyRole, DatasourceId, GroupId, ObjectRole, PrincipalId, UserId, UserKind, Visibility,
};

#[cfg(test)]
mod matrix_tests;
#[cfg(test)]
mod tests;

/// Who is asking. For API users `company_role` is ignored.
#[derive(Debug, Clone, Copy)]
pub struct Principal<'a> {
    pub user_id: &'a UserId,
    pub kind: UserKind,
    pub company_role: CompanyRole,
    pub groups: &'a [GroupId],
}

impl Principal<'_> {
    /// The company role that counts, or `None` for API users: an API user's stored role must
    /// never lend it a person's powers, so every company-role check goes through here.
    fn person_role(&self) -> Option<CompanyRole> {
        match self.kind {
            UserKind::Person => Some(self.company_role),
            UserKind::Api => None,
        }
    }

    fn is_person_at_least(&self, role: CompanyRole) -> bool {
        self.person_role().is_some_and(|r| r >= role)
    }
}

/// Sharing state of one app or datasource. `members` hold viewer/editor grants to users or groups.
#[derive(Debug, Clone, Copy)]
pub struct Acl<'a> {
    pub owner_id: &'a UserId,
    pub visibility: Visibility,
    pub members: &'a [(PrincipalId, ObjectRole)],
}

/// The answer to one question. The HTTP layer maps it: `NotFound` → 404 `not_found`,
/// `Forbidden` → 403 `forbidden`, `Conflict` → 409 `conflict`, `IntegrationDisabled` → 403
/// `integration_disabled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// The caller may not even view the object: answer exactly as if it did not exist.
    NotFound,
    /// The caller may view the object but not do this.
    Forbidden,
    Conflict(&'static str),
    IntegrationDisabled,
}

impl crate::code::Coded for Decision {
    /// Only refusals have a code; `Allow` reaching here is a bug and answers `internal`.
    fn code(&self) -> crate::code::Code {
        use crate::code::Code;
        match self {
            Decision::NotFound => Code::NotFound,
            Decision::Forbidden => Code::Forbidden,
            Decision::Conflict(_) => Code::Conflict,
            Decision::IntegrationDisabled => Code::IntegrationDisabled,
            Decision::Allow => Code::Internal,
        }
    }

    fn message(&self) -> String {
        match self {
            Decision::NotFound => "no such object".into(),
            Decision::Forbidden => "your role does not allow this".into(),
            Decision::Conflict(m) => (*m).to_owned(),
            Decision::IntegrationDisabled => {
                "this integration is turned off for the company".into()
            }
            Decision::Allow => "an internal error occurred; it has been logged".into(),
        }
    }
}

impl Decision {
    pub fn is_allow(self) -> bool {
        self == Decision::Allow
    }
}

/// Conflict messages, kept here so the HTTP layer and tests name the same text.
pub const DATASOURCE_NOT_ATTACHED: &str = "datasource not attached";
pub const LAST_OWNER: &str = "a company must keep at least one owner";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AppAction {
    View,
    /// Run queries through the app.
    Use,
    Clone,
    /// Name, description, visibility, policy overrides.
    Edit,
    /// Add members, change their roles, revoke them.
    Share,
    Delete,
    Transfer,
    /// Detach a datasource: app editor only (attach is [`attach`], which also needs the datasource).
    Detach,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DatasourceAction {
    /// Configuration (never the password) and schema.
    View,
    /// Connection, credentials, scope policy.
    Edit,
    Share,
    Delete,
    Transfer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompanyAction {
    CreateApp,
    RegisterDatasource {
        integration_enabled: bool,
        creators_can_register: bool,
    },
    ListUsers,
    InviteUser {
        role: CompanyRole,
    },
    ChangeRole {
        from: CompanyRole,
        to: CompanyRole,
    },
    RemoveUser {
        role: CompanyRole,
    },
    ManageApiUsers,
    ManageGroups,
    ListGroups,
    ViewIntegrations,
    ToggleIntegrations,
    ViewCompany,
    EditCompany,
    ReadAudit,
}

/// Grants in `members` are viewer or editor; ownership comes only from `owner_id`. A stored
/// member grant of `owner` (which no route can create) is read as editor, so a corrupt row can
/// never hand out delete or transfer.
fn member_grant(role: ObjectRole) -> ObjectRole {
    role.min(ObjectRole::Editor)
}

/// The highest role among the grants that name this user directly.
fn direct_grant(user: &UserId, acl: &Acl) -> Option<ObjectRole> {
    acl.members
        .iter()
        .filter(|(who, _)| matches!(who, PrincipalId::User(u) if u == user))
        .map(|(_, role)| member_grant(*role))
        .max()
}

/// The principal's effective role on an object, `None` when it may not even view it.
///
/// Persons: the highest of ownership, direct grant, group grants and visibility (public makes
/// every person an effective viewer); company owners are owners of everything.
/// API users: only grants that name them directly count; groups, visibility, ownership and
/// their stored company role do not.
pub fn effective_role(p: &Principal, acl: &Acl) -> Option<ObjectRole> {
    if p.kind == UserKind::Api {
        return direct_grant(p.user_id, acl);
    }
    if p.company_role == CompanyRole::Owner {
        return Some(ObjectRole::Owner);
    }
    let ownership = (acl.owner_id == p.user_id).then_some(ObjectRole::Owner);
    let direct = direct_grant(p.user_id, acl);
    let via_groups = acl
        .members
        .iter()
        .filter(|(who, _)| matches!(who, PrincipalId::Group(g) if p.groups.contains(g)))
        .map(|(_, role)| member_grant(*role))
        .max();
    let public = (acl.visibility == Visibility::Public).then_some(ObjectRole::Viewer);
    [ownership, direct, via_groups, public]
        .into_iter()
        .flatten()
        .max()
}

/// The object role and company role an app action needs (the table in `PERMISSIONS.md`).
fn app_needs(action: AppAction) -> (ObjectRole, CompanyRole) {
    use AppAction::*;
    match action {
        View | Use => (ObjectRole::Viewer, CompanyRole::Consumer),
        Clone => (ObjectRole::Viewer, CompanyRole::Creator),
        Edit | Share | Detach => (ObjectRole::Editor, CompanyRole::Creator),
        Delete | Transfer => (ObjectRole::Owner, CompanyRole::Creator),
    }
}

fn datasource_needs(action: DatasourceAction) -> (ObjectRole, CompanyRole) {
    use DatasourceAction::*;
    match action {
        View => (ObjectRole::Viewer, CompanyRole::Consumer),
        Edit | Share => (ObjectRole::Editor, CompanyRole::Creator),
        Delete | Transfer => (ObjectRole::Owner, CompanyRole::Creator),
    }
}

/// Both roles must suffice; the caller has already established that the object is visible.
fn both_allow(p: &Principal, have: ObjectRole, needs: (ObjectRole, CompanyRole)) -> Decision {
    let (object, company) = needs;
    if have >= object && p.is_person_at_least(company) {
        Decision::Allow
    } else {
        Decision::Forbidden
    }
}

pub fn app(p: &Principal, app: &Acl, action: AppAction) -> Decision {
    let Some(role) = effective_role(p, app) else {
        return Decision::NotFound;
    };
    if p.kind == UserKind::Api {
        // An API user only ever uses the apps it was added to; its grant's level does not matter.
        return match action {
            AppAction::View | AppAction::Use => Decision::Allow,
            _ => Decision::Forbidden,
        };
    }
    both_allow(p, role, app_needs(action))
}

pub fn datasource(p: &Principal, ds: &Acl, action: DatasourceAction) -> Decision {
    if p.kind == UserKind::Api {
        // API users reach data only through apps; a datasource is invisible to them even if a
        // grant names them.
        return Decision::NotFound;
    }
    let Some(role) = effective_role(p, ds) else {
        return Decision::NotFound;
    };
    both_allow(p, role, datasource_needs(action))
}

/// Attach needs editor on the app AND viewer on the datasource (and creator+).
///
/// Visibility is settled before roles (app, then datasource), so a `Forbidden` is only ever
/// given about objects the caller can see.
pub fn attach(p: &Principal, app: &Acl, ds: &Acl) -> Decision {
    let Some(app_role) = effective_role(p, app) else {
        return Decision::NotFound;
    };
    if datasource(p, ds, DatasourceAction::View) != Decision::Allow {
        return Decision::NotFound;
    }
    both_allow(p, app_role, (ObjectRole::Editor, CompanyRole::Creator))
}

pub fn company(p: &Principal, action: CompanyAction) -> Decision {
    use CompanyAction::*;
    let Some(role) = p.person_role() else {
        // The company's name and settings are readable by any authenticated caller (API.md);
        // everything else is for people.
        return match action {
            ViewCompany => Decision::Allow,
            _ => Decision::Forbidden,
        };
    };
    let needs = match action {
        ViewCompany | ListUsers | ListGroups | ViewIntegrations => CompanyRole::Consumer,
        CreateApp => CompanyRole::Creator,
        RegisterDatasource {
            integration_enabled,
            creators_can_register,
        } => {
            let needs = if creators_can_register {
                CompanyRole::Creator
            } else {
                CompanyRole::Admin
            };
            // Who may register is answered before whether the kind is on, so a refusal for
            // lack of role does not depend on the integration's state.
            return if role < needs {
                Decision::Forbidden
            } else if !integration_enabled {
                Decision::IntegrationDisabled
            } else {
                Decision::Allow
            };
        }
        InviteUser { role: r } | RemoveUser { role: r } => owner_only_if(r == CompanyRole::Owner),
        ChangeRole { from, to } => {
            owner_only_if(from == CompanyRole::Owner || to == CompanyRole::Owner)
        }
        ManageApiUsers | ManageGroups | ToggleIntegrations | EditCompany | ReadAudit => {
            CompanyRole::Admin
        }
    };
    if role >= needs {
        Decision::Allow
    } else {
        Decision::Forbidden
    }
}

/// Only an owner grants or revokes the owner role; other user management is admin+.
fn owner_only_if(touches_owner: bool) -> CompanyRole {
    if touches_owner {
        CompanyRole::Owner
    } else {
        CompanyRole::Admin
    }
}

/// Minting a token: a person for themselves, or an admin+ for an API user. API users may not
/// mint tokens (a leaked API token must not be able to extend its own life); other persons get
/// their first token when invited and mint the rest themselves.
pub fn create_token(p: &Principal, target: &UserId, target_kind: UserKind) -> Decision {
    if p.kind == UserKind::Api {
        return Decision::Forbidden;
    }
    let for_self = target == p.user_id;
    let admin_for_api = target_kind == UserKind::Api && p.is_person_at_least(CompanyRole::Admin);
    if for_self || admin_for_api {
        Decision::Allow
    } else {
        Decision::Forbidden
    }
}

/// Revoking a token: its own user (of any kind: giving up access is always allowed) or an
/// admin+ person. Anyone else cannot see the token at all, so it answers `NotFound`.
pub fn revoke_token(p: &Principal, token_owner: &UserId) -> Decision {
    if token_owner == p.user_id || p.is_person_at_least(CompanyRole::Admin) {
        Decision::Allow
    } else {
        Decision::NotFound
    }
}

/// The last-owner rule: refuses (Conflict) demoting or removing the company's last owner.
///
/// `new_role` is `None` for a removal. An `owner_count` of zero is inconsistent data and is
/// refused as well rather than trusted.
pub fn last_owner_rule(
    owner_count: usize,
    target_role: CompanyRole,
    new_role: Option<CompanyRole>,
) -> Decision {
    let loses_an_owner = target_role == CompanyRole::Owner && new_role != Some(CompanyRole::Owner);
    if loses_an_owner && owner_count <= 1 {
        Decision::Conflict(LAST_OWNER)
    } else {
        Decision::Allow
    }
}

/// Ownership can go to a person user of the same company whose role is creator or higher.
/// (Same company is the caller's lookup; a foreign user is a 404 before this is asked.)
pub fn can_receive_ownership(kind: UserKind, role: CompanyRole) -> bool {
    kind == UserKind::Person && role >= CompanyRole::Creator
}

/// What a clone keeps: the datasources the cloner can view; the rest are dropped and listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClonePlan<'d> {
    pub kept: Vec<&'d DatasourceId>,
    pub dropped: Vec<&'d DatasourceId>,
}

/// Clone: needs viewer on the app and creator+; keeps each datasource the cloner can view,
/// lists the rest. Order of `datasources` is preserved in both lists.
pub fn clone_plan<'d>(
    p: &Principal,
    app_acl: &Acl,
    datasources: &[(&'d DatasourceId, Acl)],
) -> Result<ClonePlan<'d>, Decision> {
    match app(p, app_acl, AppAction::Clone) {
        Decision::Allow => {}
        refused => return Err(refused),
    }
    let mut plan = ClonePlan {
        kept: Vec::new(),
        dropped: Vec::new(),
    };
    for (id, acl) in datasources {
        if datasource(p, acl, DatasourceAction::View).is_allow() {
            plan.kept.push(id);
        } else {
            plan.dropped.push(id);
        }
    }
    Ok(plan)
}

/// The query path: may `p` run a statement through app on a datasource?
///
/// Checked in this order so nothing about the app leaks to someone who cannot use it: use of
/// the app (else `NotFound`), attachment, then the integration. No role on the datasource is
/// needed: the app is what was shared. The scope policy is the SQL policy's job, after this.
pub fn query(
    p: &Principal,
    app_acl: &Acl,
    datasource_attached: bool,
    integration_enabled: bool,
) -> Decision {
    if !app(p, app_acl, AppAction::Use).is_allow() {
        return Decision::NotFound;
    }
    if !datasource_attached {
        return Decision::Conflict(DATASOURCE_NOT_ATTACHED);
    }
    if !integration_enabled {
        return Decision::IntegrationDisabled;
    }
    Decision::Allow
}

/// Audit redaction: does an admin reading the audit log see a private app's SQL and error detail?
///
/// `app` is the app the entry is about, `None` for entries about no app (users, groups,
/// settings). For an app that no longer exists the caller should pass a private ACL with no
/// members, which keeps its entries redacted for admins. Readers who may not read the audit at
/// all never see detail.
pub fn audit_sees_detail(
    reader: &Principal,
    app: Option<&Acl>,
    redact_private_audit: bool,
) -> bool {
    let Some(role) = reader.person_role() else {
        return false;
    };
    if role < CompanyRole::Admin {
        return false;
    }
    if !redact_private_audit || role == CompanyRole::Owner {
        return true;
    }
    match app {
        None => true,
        Some(acl) => acl.visibility == Visibility::Public || effective_role(reader, acl).is_some(),
    }
}
