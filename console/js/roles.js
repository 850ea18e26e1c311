// What to offer the signed-in user, mirroring PERMISSIONS.md. This only hides what would be
// refused: the gateway decides every call again, so a wrong answer here can cost a button,
// never access.

const COMPANY = ['consumer', 'creator', 'admin', 'owner'];
const OBJECT = ['viewer', 'editor', 'owner'];

let me = null;

/** Sets the caller (GET /v1/me's `user`). */
export function setMe(user) {
  me = user;
}

export function currentUser() {
  return me;
}

export function isPerson() {
  return !!me && me.kind === 'person';
}

/** The caller's company role is at least `role` (API users have none). */
export function atLeast(role) {
  return isPerson() && COMPANY.indexOf(me.role) >= COMPANY.indexOf(role);
}

/** An object role (`my_role`) is at least `role`. */
function objectAtLeast(myRole, role) {
  return !!myRole && OBJECT.indexOf(myRole) >= OBJECT.indexOf(role);
}

/** Edit, share, attach: editor on the object and creator+ in the company. */
export function canEdit(obj) {
  return objectAtLeast(obj.my_role, 'editor') && atLeast('creator');
}

/** Delete and transfer: owner of the object and creator+ in the company. */
export function canOwn(obj) {
  return objectAtLeast(obj.my_role, 'owner') && atLeast('creator');
}

/** Registering a datasource of this integration. */
export function canRegister(integration) {
  if (!integration.enabled) return false;
  return integration.creators_can_register ? atLeast('creator') : atLeast('admin');
}

/** The roles this caller may give in an invitation or a role change (owner only by owners). */
export function grantableRoles() {
  if (atLeast('owner')) return COMPANY;
  if (atLeast('admin')) return COMPANY.slice(0, 3);
  return [];
}

/** May the caller change `user`'s role (admins never touch owners)? */
export function canChangeRole(user) {
  if (user.kind !== 'person' || !atLeast('admin')) return false;
  return user.role !== 'owner' || atLeast('owner');
}

/** Ownership can go to a person with creator role or higher. */
export function canReceiveOwnership(user) {
  return user.kind === 'person' && COMPANY.indexOf(user.role) >= COMPANY.indexOf('creator');
}
