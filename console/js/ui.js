// Widgets every screen uses: actions with loading and error states, confirmations, a token
// shown once, the people-and-groups picker and the members panel shared by apps and
// datasources.

import { api, ApiError, qs, seg } from './api.js';
import { h, replace, select, field, table } from './dom.js';
import { isPerson, canReceiveOwnership } from './roles.js';

/** A short message in the live region (read out by screen readers). */
export function toast(message) {
  const el = document.getElementById('toast');
  replace(el, message);
  el.classList.add('shown');
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => el.classList.remove('shown'), 4000);
}

/** An error as the API gave it: its code and its message, both as text. */
export function errorView(err) {
  if (err instanceof ApiError) {
    return h('div', { class: 'error', role: 'alert' },
      h('code', { class: 'error-code' }, err.code), ' ', h('span', { class: 'error-message' }, err.message));
  }
  return h('div', { class: 'error', role: 'alert' }, h('span', { class: 'error-message' }, String(err && err.message || err)));
}

export function loading(what = 'Loading…') {
  return h('p', { class: 'loading', role: 'status' }, what);
}

/**
 * Wires `button` to an async action: while it runs the button is disabled and says so, and an
 * error is shown in `out` (an element next to the button, created when not given). Returns the
 * action's result, or undefined when it failed.
 */
export function action(button, fn, out) {
  const status = out || h('div', { class: 'action-status' });
  button.addEventListener('click', async (ev) => {
    ev.preventDefault();
    await runAction(button, fn, status);
  });
  return status;
}

/** Runs an action once, with the same states as `action`. */
export async function runAction(button, fn, status) {
  if (button.disabled) return undefined;
  button.disabled = true;
  button.setAttribute('aria-busy', 'true');
  button.classList.add('busy');
  if (status) replace(status);
  try {
    return await fn();
  } catch (err) {
    if (status) replace(status, errorView(err));
    else toast(`${err.code || 'error'}: ${err.message}`);
    return undefined;
  } finally {
    button.disabled = false;
    button.removeAttribute('aria-busy');
    button.classList.remove('busy');
  }
}

/** A form whose submit runs `fn(form)` with the same states as `action`. */
export function form(attrs, children, submitLabel, fn) {
  const submit = h('button', { type: 'submit', class: 'primary' }, submitLabel);
  const status = h('div', { class: 'action-status' });
  const f = h('form', attrs, children, h('div', { class: 'actions' }, submit), status);
  f.addEventListener('submit', (ev) => {
    ev.preventDefault();
    runAction(submit, () => fn(f), status);
  });
  return f;
}

/** Asks before something that cannot be undone. Resolves true when confirmed. */
export function confirmDialog(title, message, confirmLabel = 'Delete') {
  return new Promise((resolve) => {
    const cancel = h('button', { type: 'button' }, 'Cancel');
    const ok = h('button', { type: 'button', class: 'danger' }, confirmLabel);
    const dlg = h('dialog', { class: 'confirm', 'aria-labelledby': 'confirm-title' },
      h('h2', { id: 'confirm-title' }, title), h('p', {}, message), h('div', { class: 'actions' }, cancel, ok));
    const done = (v) => {
      dlg.close();
      dlg.remove();
      resolve(v);
    };
    cancel.addEventListener('click', () => done(false));
    ok.addEventListener('click', () => done(true));
    dlg.addEventListener('cancel', (ev) => {
      ev.preventDefault();
      done(false);
    });
    document.body.append(dlg);
    dlg.showModal();
    cancel.focus();
  });
}

/** A secret shown once, with a copy button. */
export function tokenReveal(label, secret) {
  const input = h('input', { type: 'text', readOnly: true, value: secret, class: 'token-value', 'aria-label': label, spellcheck: 'false' });
  const copy = h('button', { type: 'button' }, 'Copy');
  const said = h('span', { class: 'copied', role: 'status' });
  copy.addEventListener('click', async () => {
    input.select();
    try {
      await navigator.clipboard.writeText(secret);
      replace(said, 'Copied');
    } catch {
      // No clipboard permission (plain http, say): the text is selected for Ctrl+C.
      replace(said, 'Selected: press Ctrl+C to copy');
    }
  });
  return h('div', { class: 'token-reveal' },
    h('p', {}, h('strong', {}, label), ' — shown only now; store it somewhere safe.'),
    h('div', { class: 'row' }, input, copy, said));
}

/** A titled section of a screen. */
export function section(title, ...children) {
  return h('section', { class: 'panel' }, h('h2', {}, title), children);
}

// ---- People and groups -------------------------------------------------------------------

/** Users and groups by id, for showing names instead of ids. Person callers only. */
export async function directory() {
  if (!isPerson()) return { users: new Map(), groups: new Map() };
  const [users, groups] = await Promise.all([api('GET', '/v1/users'), api('GET', '/v1/groups')]);
  return {
    users: new Map(users.items.map((u) => [u.id, u])),
    groups: new Map(groups.items.map((g) => [g.id, g])),
  };
}

/** "Ada (ada@acme.test)", "robot (API user)" or a group's name. */
export function principalLabel(dir, id) {
  const u = dir.users.get(id);
  if (u) return u.kind === 'api' ? `${u.name} (API user)` : u.email && u.email !== u.name ? `${u.name} (${u.email})` : u.name;
  const g = dir.groups.get(id);
  if (g) return `${g.name} (group)`;
  return id;
}

/**
 * Search people by name or email (GET /v1/users?q=) and, when `groups` is given, groups by name.
 * `accept(user)` filters users; `onPick({id, label})` is called with the choice.
 */
export function principalPicker({ label, groups, accept = () => true, onPick }) {
  const input = h('input', { type: 'search', autocomplete: 'off', placeholder: 'Name or email' });
  const results = h('ul', { class: 'picker-results', role: 'listbox', 'aria-label': 'Matches' });
  const status = h('div', { class: 'action-status' });
  let seq = 0;
  const search = async () => {
    const q = input.value.trim();
    const mine = ++seq;
    if (!q) {
      replace(results);
      return;
    }
    try {
      const found = await api('GET', `/v1/users${qs({ q })}`);
      if (mine !== seq) return;
      const items = found.items.filter(accept).map((u) => ({
        id: u.id,
        label: u.kind === 'api' ? `${u.name} (API user)` : `${u.name}${u.email && u.email !== u.name ? ` (${u.email})` : ''}`,
      }));
      for (const g of groups || []) {
        if (g.name.toLowerCase().includes(q.toLowerCase())) items.push({ id: g.id, label: `${g.name} (group)` });
      }
      replace(status);
      replace(results, items.length
        ? items.map((it) => h('li', {}, h('button', {
          type: 'button',
          class: 'link',
          onclick: () => {
            replace(results);
            input.value = it.label;
            onPick(it);
          },
        }, it.label)))
        : h('li', { class: 'muted' }, 'No match'));
    } catch (err) {
      replace(status, errorView(err));
    }
  };
  let timer;
  input.addEventListener('input', () => {
    clearTimeout(timer);
    timer = setTimeout(search, 200);
  });
  input.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter') {
      ev.preventDefault();
      clearTimeout(timer);
      search();
    }
  });
  return h('div', { class: 'picker' }, field(label, input), results, status);
}

/**
 * The members of an app or datasource (seed 003's "Security & Permissions"): direct grants to
 * users and groups with their roles; editors add, change and revoke them.
 * `base` is `/v1/apps/{id}` or `/v1/datasources/{id}`; `allowApi` offers API users (apps only).
 */
export function membersPanel({ base, canShare, allowApi }) {
  const body = h('div', {}, loading());
  const load = async () => {
    try {
      const [members, dir] = await Promise.all([api('GET', `${base}/members`), directory()]);
      render(members.items, dir);
    } catch (err) {
      replace(body, errorView(err));
    }
  };
  const render = (items, dir) => {
    const rows = items.map((m) => {
      const name = principalLabel(dir, m.principal_id);
      let roleCell = m.role;
      let removeCell = '';
      if (canShare) {
        const sel = select([['viewer', 'Viewer'], ['editor', 'Editor']], m.role, { 'aria-label': `Role of ${name}` });
        const status = h('span', { class: 'action-status' });
        sel.addEventListener('change', () => runAction(sel, async () => {
          try {
            await api('PUT', `${base}/members/${seg(m.principal_id)}`, { role: sel.value });
          } catch (err) {
            sel.value = m.role;
            throw err;
          }
          m.role = sel.value;
          toast(`${name} is now ${sel.value}`);
        }, status));
        roleCell = h('span', {}, sel, status);
        const rm = h('button', { type: 'button', class: 'danger small' }, 'Remove');
        const rmStatus = action(rm, async () => {
          if (!(await confirmDialog('Remove access?', `${name} loses this role.`, 'Remove'))) return;
          await api('DELETE', `${base}/members/${seg(m.principal_id)}`);
          toast(`Removed ${name}`);
          await load();
        });
        removeCell = h('span', {}, rm, rmStatus);
      }
      return [name, m.principal_kind, roleCell, removeCell];
    });
    const list = items.length
      ? table(['Who', 'Kind', 'Role', ''], rows, { class: 'members' })
      : h('p', { class: 'muted' }, 'No one has been added directly.');
    let adder = null;
    if (canShare) {
      let picked = null;
      const role = select([['viewer', 'Viewer'], ['editor', 'Editor']], 'viewer');
      const add = h('button', { type: 'button', class: 'primary' }, 'Add');
      const picker = principalPicker({
        label: 'Add people or groups by name or email',
        groups: [...dir.groups.values()],
        accept: (u) => allowApi || u.kind === 'person',
        onPick: (p) => {
          picked = p;
        },
      });
      const addStatus = action(add, async () => {
        if (!picked) throw new Error('pick someone from the matches first');
        await api('PUT', `${base}/members/${seg(picked.id)}`, { role: role.value });
        toast(`Added ${picked.label} as ${role.value}`);
        await load();
      });
      adder = h('div', { class: 'adder' }, picker, field('Role', role), h('div', { class: 'actions' }, add), addStatus);
    }
    replace(body, list, adder);
  };
  load();
  return body;
}

/** Hands ownership to a person with creator role or higher (owners only). */
export function transferPanel({ base, what, onDone }) {
  const wrap = h('div', {}, loading());
  directory().then((dir) => {
    const candidates = [...dir.users.values()].filter(canReceiveOwnership);
    const sel = select([['', 'Choose a person…'], ...candidates.map((u) => [u.id, `${u.name} (${u.role})`])], '', {});
    const btn = h('button', { type: 'button' }, 'Transfer ownership');
    const status = action(btn, async () => {
      if (!sel.value) throw new Error('choose the new owner first');
      const who = sel.options[sel.selectedIndex].textContent;
      if (!(await confirmDialog('Transfer ownership?', `${who} becomes the owner of this ${what}; you keep editor access.`, 'Transfer'))) return;
      const res = await api('POST', `${base}/transfer`, { user_id: sel.value });
      toast(`Ownership transferred to ${who}`);
      onDone(res);
    });
    replace(wrap, h('p', { class: 'hint' }, 'Only a person with the creator role or higher can receive ownership.'),
      field('New owner', sel), h('div', { class: 'actions' }, btn), status);
  }, (err) => replace(wrap, errorView(err)));
  return wrap;
}

/** A delete button that asks first, then calls `fn`. */
export function deleteButton(label, question, fn) {
  const btn = h('button', { type: 'button', class: 'danger' }, label);
  const status = action(btn, async () => {
    if (!(await confirmDialog(question, 'This cannot be undone.', 'Delete'))) return;
    await fn();
  });
  return h('div', { class: 'danger-zone' }, btn, status);
}
