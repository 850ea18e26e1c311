// Integrations (seed 001, Settings > Integrations): one card per datasource kind with its
// `enabled` and `creators_can_register` toggles and its available actions. Admins and owners
// toggle; everyone else sees the state.

import { api, seg } from '../api.js';
import { h, replace } from '../dom.js';
import { errorView, loading, runAction, toast } from '../ui.js';
import { atLeast, canRegister } from '../roles.js';

export const KIND_NAMES = { postgres: 'PostgreSQL', mysql: 'MySQL / MariaDB', sqlite: 'SQLite' };

const ABOUT = {
  postgres: 'PostgreSQL databases reached through a service account, over TLS or on a trusted network.',
  mysql: 'MySQL and MariaDB databases reached through a service account.',
  sqlite: 'SQLite files on the gateway host, under its configured SQLite roots.',
};

const ACTION_NAMES = { select: 'Read rows (SELECT)', insert: 'Create rows (INSERT)', update: 'Update rows (UPDATE)', delete: 'Delete rows (DELETE)' };

export function render(view) {
  const body = h('div', {}, loading());
  replace(view,
    h('h1', {}, 'Integrations'),
    h('p', { class: 'lede' }, atLeast('admin')
      ? 'Turn on the kinds of database your company may register, and choose whether creators may register them or only admins.'
      : 'The kinds of database your company can use. Admins and owners change these settings.'),
    body);
  api('GET', '/v1/integrations').then(
    (list) => replace(body, h('div', { class: 'cards' }, list.items.map(card))),
    (err) => replace(body, errorView(err)));
}

function toggle(label, checked, disabled, onChange) {
  const input = h('input', { type: 'checkbox', role: 'switch', checked, disabled });
  const status = h('span', { class: 'action-status' });
  input.addEventListener('change', () => onChange(input, status));
  return h('div', { class: 'toggle' }, h('label', {}, input, ' ', label), status);
}

function card(item) {
  const admin = atLeast('admin');
  const name = KIND_NAMES[item.kind] || item.kind;
  const state = h('span', { class: `badge ${item.enabled ? 'on' : 'off'}` }, item.enabled ? 'On' : 'Off');
  const registerHint = h('p', { class: 'hint' });
  const describe = () => {
    replace(state, item.enabled ? 'On' : 'Off');
    state.className = `badge ${item.enabled ? 'on' : 'off'}`;
    replace(registerHint, item.enabled
      ? (item.creators_can_register ? 'Creators, admins and owners can register datasources of this kind.' : 'Only admins and owners can register datasources of this kind (company-level connections).')
      : 'Nobody can register or query datasources of this kind while it is off; existing ones are kept.');
  };
  describe();
  const save = (field) => (input, status) => runAction(input, async () => {
    try {
      const next = await api('PATCH', `/v1/integrations/${seg(item.kind)}`, { [field]: input.checked });
      Object.assign(item, next);
      describe();
      toast(`${name}: ${field === 'enabled' ? (item.enabled ? 'turned on' : 'turned off') : (item.creators_can_register ? 'creators may register' : 'only admins may register')}`);
    } catch (err) {
      input.checked = !input.checked;
      throw err;
    }
  }, status);
  const actions = h('details', { class: 'available-actions' },
    h('summary', {}, `Available actions (${item.available_actions.length})`),
    h('ul', {}, item.available_actions.map((a) => h('li', {}, h('code', {}, a), ' — ', ACTION_NAMES[a] || a))),
    h('p', { class: 'hint' }, 'Each datasource\u2019s scope policy allows SELECT only (read_only) or all four (read_write).'));
  return h('article', { class: 'card', dataset: { kind: item.kind }, 'aria-labelledby': `int-${item.kind}` },
    h('header', {}, h('h2', { id: `int-${item.kind}` }, name), state),
    h('p', {}, ABOUT[item.kind] || ''),
    toggle(`Enabled`, item.enabled, !admin, save('enabled')),
    toggle(`Creators can register`, item.creators_can_register, !admin, save('creators_can_register')),
    registerHint,
    actions,
    h('p', {}, h('a', { href: '#/datasources' }, 'Configure scope'), ' — per datasource, in its scope policy.',
      canRegister(item) ? [' ', h('a', { href: `#/datasources/new/${item.kind}` }, `Register a ${name} datasource`)] : null));
}
