// Datasources: the list, registration with a connection form, and one datasource's page:
// Test connection, settings, the scope-policy editor with the schema browser, members,
// ownership transfer and delete.

import { api, seg } from '../api.js';
import { h, replace, field, select, table, num } from '../dom.js';
import {
  errorView, loading, action, form, toast, section, membersPanel, transferPanel, deleteButton,
  directory, principalLabel,
} from '../ui.js';
import { atLeast, canEdit, canOwn, canRegister } from '../roles.js';
import { KIND_NAMES } from './integrations.js';

export function render(view, [id, arg]) {
  if (id === 'new') return renderNew(view, arg);
  if (id) return renderOne(view, id);
  return renderList(view);
}

function renderList(view) {
  const body = h('div', {}, loading());
  const actions = h('div', { class: 'actions' });
  replace(view, h('div', { class: 'title-row' }, h('h1', {}, 'Datasources'), actions),
    h('p', { class: 'lede' }, 'Databases registered with a service account and a scope policy. You see the ones shared with you or public.'),
    body);
  Promise.all([api('GET', '/v1/datasources'), api('GET', '/v1/integrations'), directory()]).then(([list, ints, dir]) => {
    if (ints.items.some(canRegister)) {
      replace(actions, h('a', { class: 'button primary', href: '#/datasources/new' }, 'Register datasource'));
    }
    if (!list.items.length) {
      replace(body, h('p', { class: 'empty' }, 'No datasource is shared with you yet.'));
      return;
    }
    replace(body, table(['Name', 'Kind', 'TLS', 'Visibility', 'Your role', 'Owner'], list.items.map((d) => [
      h('a', { href: `#/datasources/${seg(d.id)}`, class: 'ds-name' }, d.name),
      KIND_NAMES[d.kind] || d.kind,
      tlsBadge(d),
      h('span', { class: `badge ${d.visibility}` }, d.visibility),
      d.my_role || '—',
      principalLabel(dir, d.owner_id),
    ]), { class: 'datasources' }));
  }, (err) => replace(body, errorView(err)));
}

/** libpq's sslmode values, strongest first, with what each one checks. */
const TLS_MODES = [
  ['verify-full', 'Verify full (default)', 'Encrypted; the certificate must lead to a trusted CA and name this host.'],
  ['verify-ca', 'Verify CA', 'Encrypted; the certificate must lead to a trusted CA, but may name another host.'],
  ['require', 'Require', 'Encrypted, the certificate not checked: stops eavesdropping, not an impostor server.'],
  ['disable', 'Disable', 'Plain TCP: the password and every row cross the network unencrypted.'],
];

/** A datasource's TLS mode as a badge (`disable` stands out); nothing for SQLite. */
function tlsBadge(ds) {
  const t = ds.connection && ds.connection.tls;
  if (!t) return '—';
  return h('span', { class: `badge tls-${t.mode}`, title: 'TLS mode' }, t.mode);
}

/** The TLS part of the connection form: mode, CA, and a client certificate and key. */
function tlsFields(t, editing) {
  const mode = (t && t.mode) || 'verify-full';
  const modeSel = select(TLS_MODES.map(([v, l]) => [v, l]), mode, { name: 'tls_mode' });
  const hint = () => TLS_MODES.find(([v]) => v === modeSel.value)[2];
  const modeField = field('TLS mode', modeSel, hint());
  modeSel.addEventListener('change', () => { modeField.querySelector('small.hint').textContent = hint(); });
  const pem = (name, value) => h('textarea', { name, rows: 3, spellcheck: 'false', class: 'pem', placeholder: '-----BEGIN …-----', value: value || '' });
  const keySet = editing && t && t.client_key_set;
  return h('fieldset', { class: 'tls' }, h('legend', {}, 'TLS'),
    modeField,
    field('CA certificate (PEM)', pem('ca_pem', t && t.ca_pem), 'The roots to trust. Empty: the system\u2019s trusted roots.'),
    h('div', { class: 'grid2' },
      field('Client certificate (PEM)', pem('client_cert_pem', t && t.client_cert_pem), 'For mutual TLS, with its key.'),
      field(keySet ? 'New client key (PEM)' : 'Client key (PEM)',
        h('textarea', { name: 'client_key_pem', rows: 3, spellcheck: 'false', class: 'pem', autocomplete: 'off' }),
        keySet
          ? h('span', {}, h('span', { class: 'badge key-set' }, 'set'), ' Leave empty to keep the stored key (while the certificate stays the same). Write-only: never shown again.')
          : 'Write-only: stored encrypted and never shown again.')));
}

/** Connection inputs for a kind; values from `c` (an existing connection) when editing. */
function connectionFields(kind, c = {}, editing = false) {
  if (kind === 'sqlite') {
    return [field('Path', h('input', { name: 'path', required: true, value: c.path || '' }), 'A file under the gateway\u2019s SQLite roots.')];
  }
  const port = kind === 'mysql' ? 3306 : 5432;
  return [
    h('div', { class: 'grid2' },
      field('Host', h('input', { name: 'host', required: true, value: c.host || '', autocomplete: 'off' })),
      field('Port', h('input', { name: 'port', type: 'number', min: 1, max: 65535, value: c.port || port }))),
    h('div', { class: 'grid2' },
      field('Database', h('input', { name: 'database', required: true, value: c.database || '' })),
      field('User', h('input', { name: 'user', required: true, value: c.user || '', autocomplete: 'off' }), 'The service account every app user queries with.')),
    field(editing ? 'New password' : 'Password',
      h('input', { name: 'password', type: 'password', autocomplete: 'new-password' }),
      editing ? 'Leave empty to keep the stored password. It is write-only: never shown again.' : 'Write-only: stored encrypted and never shown again.'),
    tlsFields(c.tls, editing),
  ];
}

function readConnection(f, kind) {
  const v = (n) => (f.elements[n] ? f.elements[n].value.trim() : '');
  if (kind === 'sqlite') return { path: v('path') };
  const c = { host: v('host'), database: v('database'), user: v('user') };
  if (v('port')) c.port = Number(v('port'));
  if (v('password')) c.password = f.elements.password.value;
  // The TLS settings are sent whole; empty PEM fields are left out (a key left out is kept).
  c.tls = { mode: v('tls_mode') || 'verify-full' };
  for (const n of ['ca_pem', 'client_cert_pem', 'client_key_pem']) if (v(n)) c.tls[n] = f.elements[n].value;
  return c;
}

function renderNew(view, wantKind) {
  const body = h('div', {}, loading());
  replace(view, h('h1', {}, 'Register a datasource'), body);
  api('GET', '/v1/integrations').then((ints) => {
    const kinds = ints.items.filter(canRegister).map((i) => i.kind);
    if (!kinds.length) {
      replace(body, h('p', { class: 'empty' }, atLeast('admin')
        ? 'No integration is on. Turn one on in Integrations first.'
        : 'Your role cannot register a datasource of any enabled kind. Ask an admin.'),
      h('p', {}, h('a', { href: '#/integrations' }, 'Go to Integrations')));
      return;
    }
    let kind = kinds.includes(wantKind) ? wantKind : kinds[0];
    const kindSel = select(kinds.map((k) => [k, KIND_NAMES[k] || k]), kind, { name: 'kind' });
    const conn = h('fieldset', {}, h('legend', {}, 'Connection'), connectionFields(kind));
    kindSel.addEventListener('change', () => {
      kind = kindSel.value;
      replace(conn, h('legend', {}, 'Connection'), connectionFields(kind));
    });
    const f = form({ class: 'stack', 'aria-label': 'Register a datasource' }, [
      field('Name', h('input', { name: 'name', required: true, maxlength: 200 })),
      field('Description', h('input', { name: 'description' })),
      field('Kind', kindSel),
      conn,
      h('fieldset', {}, h('legend', {}, 'Scope'),
        h('div', { class: 'grid2' },
          field('Access', select([['read_only', 'Read only'], ['read_write', 'Read and write']], 'read_only', { name: 'access' })),
          field('Visibility', select([['private', 'Private'], ['public', 'Public (every person in the company can view)']], 'private', { name: 'visibility' }))),
        h('div', { class: 'grid2' },
          field('Max rows', h('input', { name: 'max_rows', type: 'number', min: 1, value: 10000 })),
          field('Timeout (ms)', h('input', { name: 'timeout_ms', type: 'number', min: 1, value: 30000 }))),
        h('p', { class: 'hint' }, 'Allowed and denied tables are picked from the schema once the datasource is registered.')),
    ], 'Register', async (fm) => {
      const e = fm.elements;
      const created = await api('POST', '/v1/datasources', {
        name: e.name.value.trim(),
        description: e.description.value,
        kind,
        visibility: e.visibility.value,
        connection: readConnection(fm, kind),
        policy: { access: e.access.value, max_rows: Number(e.max_rows.value), timeout_ms: Number(e.timeout_ms.value) },
      });
      toast(`Registered ${created.name}. Test the connection next.`);
      location.hash = `#/datasources/${seg(created.id)}`;
    });
    replace(body, f);
  }, (err) => replace(body, errorView(err)));
}

function renderOne(view, id) {
  const base = `/v1/datasources/${seg(id)}`;
  const head = h('div', {}, h('h1', {}, 'Datasource'));
  const body = h('div', {}, loading());
  replace(view, h('p', { class: 'crumbs' }, h('a', { href: '#/datasources' }, 'Datasources')), head, body);
  const load = () => Promise.all([api('GET', base), directory()]).then(([ds, dir]) => draw(ds, dir), (err) => replace(body, errorView(err)));
  const draw = (ds, dir) => {
    replace(head,
      h('h1', {}, ds.name),
      h('p', { class: 'meta' },
        h('span', { class: 'badge' }, KIND_NAMES[ds.kind] || ds.kind), ' ',
        h('span', { class: `badge ${ds.visibility}` }, ds.visibility), ' ',
        'Your role: ', h('strong', {}, ds.my_role || '—'), ' · Owner: ', principalLabel(dir, ds.owner_id)),
      ds.description ? h('p', {}, ds.description) : null);
    const editor = canEdit(ds);
    const owner = canOwn(ds);
    const policy = policyPanel(ds, base, editor);
    replace(body,
      section('Connection', connectionPanel(ds, base, editor, load, policy.learned)),
      editor ? section('Settings', settingsPanel(ds, base, load)) : null,
      section('Scope policy', policy.el),
      section('Members', h('p', { class: 'hint' }, 'Viewers can see this datasource and attach it to their apps; editors can change it and share it.'),
        membersPanel({ base, canShare: editor, allowApi: false })),
      owner ? section('Ownership', transferPanel({ base, what: 'datasource', onDone: load })) : null,
      owner ? section('Delete', deleteButton('Delete datasource', `Delete ${ds.name}?`, async () => {
        await api('DELETE', base);
        toast(`Deleted ${ds.name}`);
        location.hash = '#/datasources';
      })) : null);
  };
  load();
}

function describeConnection(ds) {
  const c = ds.connection || {};
  if (ds.kind === 'sqlite') return c.path;
  return `${c.user}@${c.host}:${c.port}/${c.database}`;
}

/** What a check says of the connection's TLS (`null`: not encrypted). */
function tlsText(t) {
  if (!t) return 'Not encrypted (TLS mode disable).';
  if (!t.verified) return `Encrypted with ${t.version}; the server\u2019s certificate was not checked (mode require).`;
  return `Encrypted with ${t.version}; certificate chain verified${t.host_verified ? ' and host name verified' : ' (host name not checked)'}.`;
}

function connectionPanel(ds, base, editor, reload, learned) {
  const test = h('button', { type: 'button', class: 'primary' }, 'Test connection');
  const result = h('div', { class: 'check-result', 'aria-live': 'polite' });
  action(test, async () => {
    replace(result, loading('Connecting…'));
    const r = await api('POST', `${base}/check`);
    learned(r);
    replace(result, h('div', { class: 'ok', role: 'status' },
      h('strong', {}, 'Connected'), ` in ${r.latency_ms.toFixed(1)} ms — ${r.server_version}`,
      r.default_schema ? `; unqualified table names resolve in ${r.default_schema}` : ''),
    ds.kind === 'sqlite' ? null : h('p', { class: 'tls-result' }, tlsText(r.tls)));
  }, result);
  let edit = null;
  if (editor) {
    edit = h('details', { class: 'edit' }, h('summary', {}, 'Edit connection'),
      form({ class: 'stack', 'aria-label': 'Edit connection' }, connectionFields(ds.kind, ds.connection, true), 'Save connection', async (f) => {
        await api('PATCH', base, { connection: readConnection(f, ds.kind) });
        toast('Connection saved; the pool reconnects with it.');
        reload();
      }));
  }
  return h('div', {},
    h('p', {}, h('code', {}, describeConnection(ds)), ds.kind === 'sqlite' ? null : [' TLS: ', tlsBadge(ds)]),
    h('div', { class: 'actions' }, test), result, edit);
}

function settingsPanel(ds, base, reload) {
  return form({ class: 'stack', 'aria-label': 'Datasource settings' }, [
    field('Name', h('input', { name: 'name', required: true, value: ds.name })),
    field('Description', h('input', { name: 'description', value: ds.description || '' })),
    field('Visibility', select([['private', 'Private'], ['public', 'Public (every person in the company can view)']], ds.visibility, { name: 'visibility' })),
  ], 'Save settings', async (f) => {
    const e = f.elements;
    await api('PATCH', base, { name: e.name.value.trim(), description: e.description.value, visibility: e.visibility.value });
    toast('Settings saved');
    reload();
  });
}

const list = (s) => s.split(/[\s,]+/).map((x) => x.trim()).filter(Boolean);

/**
 * The scope policy ("Configure scope"). Tables are picked in the schema browser: each table the
 * policy lets the service account see has an Allowed and a Denied box; entries the browser does
 * not list (patterns like `sales.*`, or tables the policy now hides) are kept as their own rows.
 */
function policyPanel(ds, base, editor) {
  // Returns {el, learned}: the panel, and what to call with a connection check's answer.
  const p = ds.policy;
  const rows = new Map();
  const entry = (key) => {
    if (!rows.has(key)) rows.set(key, { allowed: false, denied: false, columns: null });
    return rows.get(key);
  };
  for (const t of p.allowed_tables || []) entry(t).allowed = true;
  for (const t of p.denied_tables || []) entry(t).denied = true;
  const allowAll = h('input', { type: 'checkbox', name: 'allow_all', checked: p.allowed_tables === null || p.allowed_tables === undefined, disabled: !editor });
  const tablesBox = h('div', { class: 'schema-browser' }, loading('Reading the schema…'));
  const schemaStatus = h('div', {});

  const drawTables = () => {
    const keys = [...rows.keys()].sort();
    if (!keys.length) {
      replace(tablesBox, h('p', { class: 'muted' }, 'No tables listed.'));
      return;
    }
    replace(tablesBox, table(['Table', 'Allowed', 'Denied'], keys.map((key) => {
      const r = entry(key);
      const allowed = h('input', { type: 'checkbox', checked: r.allowed, disabled: !editor || allowAll.checked, 'aria-label': `Allow ${key}`, dataset: { table: key, list: 'allowed' } });
      const denied = h('input', { type: 'checkbox', checked: r.denied, disabled: !editor, 'aria-label': `Deny ${key}`, dataset: { table: key, list: 'denied' } });
      allowed.addEventListener('change', () => { r.allowed = allowed.checked; });
      denied.addEventListener('change', () => { r.denied = denied.checked; });
      const name = r.columns
        ? h('details', {}, h('summary', {}, h('code', {}, key)),
          h('ul', { class: 'columns' }, r.columns.map((c) => h('li', {}, h('code', {}, c.name), ' ', h('span', { class: 'type' }, c.type), c.nullable ? '' : ' not null'))))
        : h('span', {}, h('code', {}, key), ' ', h('span', { class: 'muted' }, '(not listed by the schema)'));
      return [name, allowed, denied];
    }), { class: 'policy-tables' }));
  };
  allowAll.addEventListener('change', drawTables);

  api('GET', `${base}/schema`).then((s) => {
    for (const t of s.tables) entry(`${t.schema}.${t.name}`).columns = t.columns;
    drawTables();
  }, (err) => {
    replace(schemaStatus, h('p', { class: 'hint' }, 'The schema browser could not read the database; entries can still be edited.'), errorView(err));
    drawTables();
  });

  const isPg = ds.kind === 'postgres';
  const maxRows = h('input', { name: 'max_rows', type: 'number', min: 1, value: p.max_rows, disabled: !editor });
  const timeout = h('input', { name: 'timeout_ms', type: 'number', min: 1, value: p.timeout_ms, disabled: !editor });
  const access = select([['read_only', 'Read only (SELECT)'], ['read_write', 'Read and write (SELECT, INSERT, UPDATE, DELETE)']], p.access, { name: 'access', disabled: !editor });
  const functions = h('input', { name: 'extra_functions', value: (p.extra_functions || []).join(', '), disabled: !editor });
  const defaultSchema = isPg ? h('input', { name: 'default_schema', value: p.default_schema || '', disabled: !editor }) : null;
  const extensions = isPg ? h('input', { name: 'extensions', value: (p.extensions || []).join(', '), disabled: !editor }) : null;

  let adder = null;
  if (editor) {
    const newEntry = h('input', { placeholder: 'schema.table or schema.*' });
    const add = (which) => h('button', {
      type: 'button',
      onclick: () => {
        const key = newEntry.value.trim();
        if (!key) return;
        entry(key)[which] = true;
        newEntry.value = '';
        drawTables();
      },
    }, which === 'allowed' ? 'Allow' : 'Deny');
    adder = h('div', { class: 'row' }, field('Add an entry', newEntry), add('allowed'), add('denied'));
  }

  const children = [
    field('Access', access),
    h('fieldset', {}, h('legend', {}, 'Tables'),
      h('label', {}, allowAll, ' Allow every table the service account can read (denied tables still refused)'),
      schemaStatus, tablesBox, adder),
    h('div', { class: 'grid2' }, field('Max rows', maxRows, 'A request may lower it, never raise it.'), field('Timeout (ms)', timeout)),
    field('Extra functions', functions, 'User functions allowed on top of the built-in safe list, as schema.name, separated by commas.'),
    isPg ? h('div', { class: 'grid2' },
      field('Default schema', defaultSchema, 'Where unqualified names resolve; read from the service account\u2019s search path when empty.'),
      field('Extensions', extensions, 'Trusted extensions whose functions may be used, e.g. postgis, pg_trgm.')) : null,
  ];
  // A PostgreSQL check records the schema it read from the server in a policy that named none;
  // show it, so saving the form keeps it rather than clearing it.
  const learned = (check) => {
    if (defaultSchema && !defaultSchema.value && check.default_schema) defaultSchema.value = check.default_schema;
  };
  if (!editor) {
    return { learned, el: h('div', { class: 'stack readonly' }, children, h('p', { class: 'hint' }, 'Editors of this datasource (creator role or higher) change its scope.')) };
  }
  return { learned, el: form({ class: 'stack', 'aria-label': 'Scope policy' }, children, 'Save scope policy', async () => {
    const keys = [...rows.keys()].sort();
    const policy = {
      access: access.value,
      allowed_tables: allowAll.checked ? null : keys.filter((k) => rows.get(k).allowed),
      denied_tables: keys.filter((k) => rows.get(k).denied),
      extra_functions: list(functions.value),
      max_rows: Number(maxRows.value),
      timeout_ms: Number(timeout.value),
    };
    if (isPg) {
      if (defaultSchema.value.trim()) policy.default_schema = defaultSchema.value.trim();
      policy.extensions = list(extensions.value);
    }
    const saved = await api('PATCH', base, { policy });
    toast(`Scope policy saved (max ${num(saved.policy.max_rows)} rows)`);
  }) };
}
