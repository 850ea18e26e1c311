// Audit (admins and owners): GET /v1/audit with API.md's filters, newest first, paged with
// `next_cursor`. Records are shown exactly as the API returns them: for a private app an admin
// cannot use, the gateway leaves out the SQL and the detail, and so does this screen.

import { api, qs } from '../api.js';
import { h, replace, field, select, table, time, num } from '../dom.js';
import { errorView, loading, form, runAction } from '../ui.js';

const PAGE = 50;

export function render(view) {
  const results = h('div', {});
  const filters = h('div', {}, loading());
  replace(view, h('h1', {}, 'Audit'),
    h('p', { class: 'lede' }, 'Every query (allowed, denied or failed) and every change, newest first.'),
    filters, results);
  Promise.all([api('GET', '/v1/users'), api('GET', '/v1/apps'), api('GET', '/v1/datasources')]).then(([users, apps, dss]) => {
    const names = {
      user: new Map(users.items.map((u) => [u.id, u.email || u.name])),
      app: new Map(apps.items.map((a) => [a.id, a.name])),
      ds: new Map(dss.items.map((d) => [d.id, d.name])),
    };
    const opt = (map) => [['', 'Any'], ...[...map.entries()].map(([id, n]) => [id, n])];
    const localToIso = (v) => (v ? new Date(v).toISOString() : '');
    const f = form({ class: 'filters', 'aria-label': 'Audit filters' }, [
      field('Action', h('input', { name: 'action', list: 'audit-actions', placeholder: 'query, app.share, …' })),
      h('datalist', { id: 'audit-actions' }, ['query', 'app.create', 'app.share', 'app.unshare', 'app.attach', 'app.detach', 'app.transfer', 'app.delete',
        'datasource.create', 'datasource.update', 'datasource.share', 'datasource.delete', 'integration.update', 'user.create', 'user.role',
        'user.delete', 'token.create', 'token.revoke', 'group.create', 'company.update'].map((a) => h('option', { value: a }))),
      field('Actor', select(opt(names.user), '', { name: 'actor_id' })),
      field('App', select(opt(names.app), '', { name: 'app_id' })),
      field('Datasource', select(opt(names.ds), '', { name: 'datasource_id' })),
      field('Outcome', select([['', 'Any'], ['allowed', 'allowed'], ['denied', 'denied'], ['failed', 'failed']], '', { name: 'outcome' })),
      field('Since', h('input', { name: 'since', type: 'datetime-local' })),
      field('Until', h('input', { name: 'until', type: 'datetime-local' })),
    ], 'Apply filters', async (fm) => {
      const e = fm.elements;
      const params = {
        action: e.action.value.trim(),
        actor_id: e.actor_id.value,
        app_id: e.app_id.value,
        datasource_id: e.datasource_id.value,
        outcome: e.outcome.value,
        since: localToIso(e.since.value),
        until: localToIso(e.until.value),
        limit: PAGE,
      };
      await showPage(results, params, names, true);
    });
    replace(filters, f);
    showPage(results, { limit: PAGE }, names, true).catch((err) => replace(results, errorView(err)));
  }, (err) => replace(filters, errorView(err)));
}

/** Each new listing's number: an older listing's late answer is dropped, not drawn. */
let listing = 0;

/** Loads one page; `fresh` starts a new listing, otherwise rows are appended. */
async function showPage(results, params, names, fresh, cursor) {
  const mine = fresh ? ++listing : listing;
  const page = await api('GET', `/v1/audit${qs({ ...params, cursor })}`);
  if (mine !== listing) return;
  let tbody = results.querySelector('tbody');
  if (fresh || !tbody) {
    const t = table(['When', 'Actor', 'Action', 'Outcome', 'App / datasource', 'SQL or detail', 'Rows', 'ms'], [], { class: 'audit' });
    replace(results, page.items.length ? t : h('p', { class: 'empty' }, 'No records match.'));
    tbody = results.querySelector('tbody');
  }
  for (const r of page.items) tbody.append(row(r, names));
  const old = results.querySelector('.more');
  if (old) old.remove();
  if (page.next_cursor) {
    const more = h('button', { type: 'button', class: 'more' }, 'Load more');
    more.addEventListener('click', () => runAction(more, () => showPage(results, params, names, false, page.next_cursor), null));
    results.append(more);
  }
}

function row(r, names) {
  const named = (map, id) => (id ? (map.get(id) || id) : null);
  const where = [named(names.app, r.app_id), named(names.ds, r.datasource_id)].filter(Boolean).join(' / ') || (r.target_id || '—');
  let what;
  if (r.sql !== undefined && r.sql !== null) what = h('code', { class: 'sql' }, r.sql);
  else if (r.detail !== undefined && r.detail !== null) what = h('code', { class: 'detail' }, JSON.stringify(r.detail));
  else if (r.action === 'query') what = h('span', { class: 'muted redacted' }, 'not returned (private app)');
  else what = '—';
  const cells = [
    time(r.at),
    r.actor_id ? named(names.user, r.actor_id) : 'system',
    h('code', {}, r.action),
    h('span', {}, h('span', { class: `badge outcome-${r.outcome}` }, r.outcome), r.code ? [' ', h('code', { class: 'error-code' }, r.code)] : null),
    where,
    what,
    r.row_count !== undefined ? num(r.row_count) : '',
    r.duration_ms !== undefined ? r.duration_ms.toFixed(1) : '',
  ];
  return h('tr', { dataset: { id: r.id, outcome: r.outcome } }, cells.map((c) => h('td', {}, c)));
}
