// People: users (invite, role change, removal), groups and their members (seed 004), API users,
// and tokens. A new token is shown once, with a copy button; the gateway keeps only its hash.

import { api, seg } from '../api.js';
import { h, replace, field, select, table, time } from '../dom.js';
import {
  errorView, loading, action, form, toast, section, tokenReveal, principalPicker, confirmDialog, runAction,
} from '../ui.js';
import { atLeast, currentUser, grantableRoles, canChangeRole } from '../roles.js';

export function render(view) {
  const body = h('div', {}, loading());
  replace(view, h('h1', {}, 'People'),
    h('p', { class: 'lede' }, atLeast('admin')
      ? 'Invite people, set their company role, group them, and manage API users for programs.'
      : 'The people and groups of your company. Admins and owners invite and change roles.'),
    body);
  const load = () => Promise.all([api('GET', '/v1/users'), api('GET', '/v1/groups')]).then(([users, groups]) => {
    const all = users.items;
    const byId = new Map(all.map((u) => [u.id, u]));
    replace(body,
      section('Users', usersPanel(all.filter((u) => u.kind === 'person'), load)),
      section('Groups', groupsPanel(groups.items, byId, load)),
      section('API users', apiUsersPanel(all.filter((u) => u.kind === 'api'), load)),
      section('Your tokens', myTokensPanel()));
  }, (err) => replace(body, errorView(err)));
  load();
}

function usersPanel(users, reload) {
  const admin = atLeast('admin');
  const me = currentUser();
  const rows = users.map((u) => {
    let role = h('span', { class: `badge role-${u.role}` }, u.role);
    if (canChangeRole(u)) {
      const roles = grantableRoles();
      const sel = select(roles.map((r) => [r, r]), u.role, { 'aria-label': `Company role of ${u.email || u.name}` });
      const status = h('span', { class: 'action-status' });
      sel.addEventListener('change', () => runAction(sel, async () => {
        try {
          await api('PATCH', `/v1/users/${seg(u.id)}`, { role: sel.value });
          toast(`${u.email || u.name} is now ${sel.value}`);
          u.role = sel.value;
        } catch (err) {
          sel.value = u.role;
          throw err;
        }
      }, status));
      role = h('span', {}, sel, status);
    }
    let remove = '';
    if (admin && u.id !== me.id && canChangeRole(u)) {
      const btn = h('button', { type: 'button', class: 'danger small' }, 'Remove');
      const status = action(btn, async () => {
        if (!(await confirmDialog(`Remove ${u.email || u.name}?`, 'Their tokens stop working at once. This cannot be undone.', 'Remove'))) return;
        await api('DELETE', `/v1/users/${seg(u.id)}`);
        toast(`Removed ${u.email || u.name}`);
        reload();
      });
      remove = h('span', {}, btn, status);
    }
    return [u.name, u.email || '—', role, time(u.created_at), remove];
  });
  let invite = null;
  if (admin) {
    const out = h('div', {});
    invite = h('details', { class: 'edit' }, h('summary', {}, 'Invite'),
      form({ class: 'stack', 'aria-label': 'Invite a person' }, [
        h('div', { class: 'grid2' },
          field('Email', h('input', { name: 'email', type: 'email', required: true, autocomplete: 'off' })),
          field('Name', h('input', { name: 'name' }), 'Optional; the email is used when empty.')),
        field('Role', select(grantableRoles().map((r) => [r, r]), 'consumer', { name: 'role' })),
      ], 'Invite', async (f) => {
        const e = f.elements;
        const body = { email: e.email.value.trim(), role: e.role.value };
        if (e.name.value.trim()) body.name = e.name.value.trim();
        const r = await api('POST', '/v1/users', body);
        replace(out, tokenReveal(`First token for ${r.user.email}`, r.token),
          h('button', { type: 'button', onclick: reload }, 'Done'));
        f.reset();
      }), out);
  }
  return h('div', {}, table(['Name', 'Email', 'Role', 'Since', ''], rows, { class: 'users' }), invite);
}

function groupsPanel(groups, byId, reload) {
  const admin = atLeast('admin');
  const label = (id) => {
    const u = byId.get(id);
    return u ? (u.email || u.name) : id;
  };
  const items = groups.map((g) => {
    const members = g.members.map((uid) => {
      let rm = null;
      if (admin) {
        const btn = h('button', { type: 'button', class: 'small', 'aria-label': `Remove ${label(uid)} from ${g.name}` }, 'Remove');
        action(btn, async () => {
          await api('DELETE', `/v1/groups/${seg(g.id)}/members/${seg(uid)}`);
          toast(`Removed ${label(uid)} from ${g.name}`);
          reload();
        });
        rm = btn;
      }
      return h('li', {}, label(uid), ' ', rm);
    });
    let tools = null;
    if (admin) {
      let picked = null;
      const add = h('button', { type: 'button', class: 'primary small' }, 'Add to group');
      const status = action(add, async () => {
        if (!picked) throw new Error('pick a person from the matches first');
        await api('PUT', `/v1/groups/${seg(g.id)}/members/${seg(picked.id)}`);
        toast(`Added ${picked.label} to ${g.name}`);
        reload();
      });
      const del = h('button', { type: 'button', class: 'danger small' }, 'Delete group');
      const delStatus = action(del, async () => {
        if (!(await confirmDialog(`Delete the group ${g.name}?`, 'Its members lose the roles the group gave them.', 'Delete'))) return;
        await api('DELETE', `/v1/groups/${seg(g.id)}`);
        toast(`Deleted ${g.name}`);
        reload();
      });
      tools = h('div', {},
        principalPicker({ label: `Add a person to ${g.name}`, accept: (u) => u.kind === 'person' && !g.members.includes(u.id), onPick: (p) => { picked = p; } }),
        h('div', { class: 'actions' }, add, del), status, delStatus);
    }
    return h('article', { class: 'group', dataset: { group: g.id } },
      h('h3', {}, g.name, ' ', h('span', { class: 'muted' }, `(${g.members.length} member${g.members.length === 1 ? '' : 's'})`)),
      members.length ? h('ul', {}, members) : h('p', { class: 'muted' }, 'No members.'), tools);
  });
  const create = admin ? form({ class: 'row', 'aria-label': 'Create a group' }, [
    field('New group', h('input', { name: 'name', required: true, maxlength: 200 })),
  ], 'Create group', async (f) => {
    const g = await api('POST', '/v1/groups', { name: f.elements.name.value.trim() });
    toast(`Created ${g.name}`);
    reload();
  }) : null;
  return h('div', {}, items.length ? items : h('p', { class: 'muted' }, 'No groups yet.'), create);
}

function apiUsersPanel(users, reload) {
  const admin = atLeast('admin');
  const out = h('div', {});
  const rows = users.map((u) => {
    const tools = [];
    if (admin) {
      const mint = h('button', { type: 'button', class: 'small' }, 'New token');
      const status = action(mint, async () => {
        const t = await api('POST', `/v1/users/${seg(u.id)}/tokens`, { name: 'console' });
        replace(out, tokenReveal(`New token for ${u.name}`, t.token));
      });
      const del = h('button', { type: 'button', class: 'danger small' }, 'Delete');
      const delStatus = action(del, async () => {
        if (!(await confirmDialog(`Delete the API user ${u.name}?`, 'Its tokens stop working at once.', 'Delete'))) return;
        await api('DELETE', `/v1/users/${seg(u.id)}`);
        toast(`Deleted ${u.name}`);
        reload();
      });
      tools.push(mint, ' ', del, status, delStatus);
    }
    return [u.name, time(u.created_at), h('span', {}, tools)];
  });
  const create = admin ? form({ class: 'row', 'aria-label': 'Create an API user' }, [
    field('New API user', h('input', { name: 'name', required: true, maxlength: 200 }), 'A service identity for a program; add it to apps in their Security & Permissions.'),
  ], 'Create API user', async (f) => {
    const r = await api('POST', '/v1/api-users', { name: f.elements.name.value.trim() });
    replace(out, tokenReveal(`Token for ${r.user.name}`, r.token), h('button', { type: 'button', onclick: reload }, 'Done'));
    f.reset();
  }) : null;
  return h('div', {},
    rows.length ? table(['Name', 'Since', ''], rows, { class: 'api-users' }) : h('p', { class: 'muted' }, 'No API users.'),
    create, out);
}

function myTokensPanel() {
  const me = currentUser();
  const out = h('div', {});
  const f = form({ class: 'stack', 'aria-label': 'Create a token' }, [
    h('div', { class: 'grid2' },
      field('Token name', h('input', { name: 'name', placeholder: 'laptop, CI, …' })),
      field('Expires on', h('input', { name: 'expires', type: 'date' }), 'Optional; the server default applies when empty.')),
  ], 'Create token', async (fm) => {
    const e = fm.elements;
    const body = {};
    if (e.name.value.trim()) body.name = e.name.value.trim();
    if (e.expires.value) body.expires_at = new Date(`${e.expires.value}T23:59:59`).toISOString();
    const t = await api('POST', `/v1/users/${seg(me.id)}/tokens`, body);
    const revoke = h('button', { type: 'button', class: 'danger small' }, 'Revoke this token');
    const status = action(revoke, async () => {
      if (!(await confirmDialog('Revoke this token?', 'Programs using it stop working at once.', 'Revoke'))) return;
      await api('DELETE', `/v1/tokens/${seg(t.id)}`);
      replace(out, h('p', { class: 'ok', role: 'status' }, 'Revoked.'));
    });
    replace(out, tokenReveal('Your new token', t.token), h('p', { class: 'hint' }, t.expires_at ? ['Expires ', time(t.expires_at), '.'] : 'It does not expire.'), revoke, status);
    fm.reset();
  });
  return h('div', {}, h('p', { class: 'hint' }, 'Tokens for your own scripts. Each is shown once; the gateway keeps only its hash.'), f, out);
}
