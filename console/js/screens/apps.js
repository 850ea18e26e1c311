// Apps: the list, creating one, and one app's page: settings, attached datasources, members
// ("Security & Permissions", seed 003, including groups and API users), clone with the
// datasources it dropped, ownership transfer and delete.

import { api, seg } from '../api.js';
import { h, replace, field, select, table } from '../dom.js';
import {
  errorView, loading, action, form, toast, section, membersPanel, transferPanel, deleteButton,
  directory, principalLabel, confirmDialog,
} from '../ui.js';
import { atLeast, canEdit, canOwn, isPerson } from '../roles.js';
import { KIND_NAMES } from './integrations.js';

export function render(view, [id]) {
  if (id === 'new') return renderNew(view);
  if (id) return renderOne(view, id);
  return renderList(view);
}

function renderList(view) {
  const body = h('div', {}, loading());
  replace(view,
    h('div', { class: 'title-row' }, h('h1', {}, 'Apps'),
      atLeast('creator') ? h('div', { class: 'actions' }, h('a', { class: 'button primary', href: '#/apps/new' }, 'Create app')) : null),
    h('p', { class: 'lede' }, 'Apps are what people query through: each uses its datasources\u2019 service accounts. You see the apps you may use.'),
    body);
  Promise.all([api('GET', '/v1/apps'), directory()]).then(([list, dir]) => {
    if (!list.items.length) {
      replace(body, h('p', { class: 'empty' }, 'No app is shared with you yet.'));
      return;
    }
    replace(body, table(['Name', 'Datasources', 'Visibility', 'Your role', 'Owner', ''], list.items.map((a) => [
      h('a', { href: `#/apps/${seg(a.id)}`, class: 'app-name' }, a.name),
      a.datasources.map((d) => d.name).join(', ') || '—',
      h('span', { class: `badge ${a.visibility}` }, a.visibility),
      a.my_role || '—',
      isPerson() ? principalLabel(dir, a.owner_id) : '—',
      h('a', { href: `#/query/${seg(a.id)}` }, 'Query'),
    ]), { class: 'apps' }));
  }, (err) => replace(body, errorView(err)));
}

function renderNew(view) {
  const body = h('div', {}, loading());
  replace(view, h('h1', {}, 'Create an app'), body);
  api('GET', '/v1/datasources').then((dss) => {
    const boxes = dss.items.map((d) => h('label', { class: 'check' },
      h('input', { type: 'checkbox', name: 'ds', value: d.id }), ' ', d.name, ' ', h('span', { class: 'muted' }, `(${KIND_NAMES[d.kind] || d.kind})`)));
    replace(body, form({ class: 'stack', 'aria-label': 'Create an app' }, [
      field('Name', h('input', { name: 'name', required: true, maxlength: 200 })),
      field('Description', h('input', { name: 'description' })),
      field('Visibility', select([['private', 'Private (only you, owners and people you share with)'], ['public', 'Public (every person in the company can use it)']], 'private', { name: 'visibility' })),
      h('fieldset', {}, h('legend', {}, 'Datasources'),
        boxes.length ? boxes : h('p', { class: 'muted' }, 'No datasource is shared with you; attach one later.')),
    ], 'Create app', async (f) => {
      const e = f.elements;
      const ids = [...f.querySelectorAll('input[name=ds]:checked')].map((i) => i.value);
      const app = await api('POST', '/v1/apps', {
        name: e.name.value.trim(), description: e.description.value, visibility: e.visibility.value, datasource_ids: ids,
      });
      toast(`Created ${app.name}`);
      location.hash = `#/apps/${seg(app.id)}`;
    }));
  }, (err) => replace(body, errorView(err)));
}

function renderOne(view, id) {
  const base = `/v1/apps/${seg(id)}`;
  const head = h('div', {}, h('h1', {}, 'App'));
  const body = h('div', {}, loading());
  replace(view, h('p', { class: 'crumbs' }, h('a', { href: '#/apps' }, 'Apps')), head, body);
  const load = () => Promise.all([api('GET', base), directory()]).then(([app, dir]) => draw(app, dir), (err) => replace(body, errorView(err)));
  const draw = (app, dir) => {
    replace(head,
      h('h1', {}, app.name),
      h('p', { class: 'meta' },
        h('span', { class: `badge ${app.visibility}` }, app.visibility), ' Your role: ', h('strong', {}, app.my_role || '—'),
        isPerson() ? [' · Owner: ', principalLabel(dir, app.owner_id)] : null, ' · ',
        h('a', { href: `#/query/${seg(app.id)}` }, 'Open in Query')),
      app.description ? h('p', {}, app.description) : null);
    const editor = canEdit(app);
    const owner = canOwn(app);
    replace(body,
      editor ? section('Settings', settingsPanel(app, base, load)) : null,
      section('Datasources', datasourcesPanel(app, base, editor, load)),
      isPerson() ? section('Security & Permissions',
        h('p', { class: 'hint' }, 'Viewers use the app; editors also change it and share it. API users can use only the apps they are added to.'),
        membersPanel({ base, canShare: editor, allowApi: true })) : null,
      atLeast('creator') ? section('Clone', clonePanel(app, base)) : null,
      owner ? section('Ownership', transferPanel({ base, what: 'app', onDone: load })) : null,
      owner ? section('Delete', deleteButton('Delete app', `Delete ${app.name}?`, async () => {
        await api('DELETE', base);
        toast(`Deleted ${app.name}`);
        location.hash = '#/apps';
      })) : null);
  };
  load();
}

function settingsPanel(app, base, reload) {
  return form({ class: 'stack', 'aria-label': 'App settings' }, [
    field('Name', h('input', { name: 'name', required: true, value: app.name })),
    field('Description', h('input', { name: 'description', value: app.description || '' })),
    field('Visibility', select([['private', 'Private'], ['public', 'Public (every person in the company can use it)']], app.visibility, { name: 'visibility' })),
  ], 'Save settings', async (f) => {
    const e = f.elements;
    await api('PATCH', base, { name: e.name.value.trim(), description: e.description.value, visibility: e.visibility.value });
    toast('Settings saved');
    reload();
  });
}

function datasourcesPanel(app, base, editor, reload) {
  const rows = app.datasources.map((d) => {
    let detach = '';
    if (editor) {
      const btn = h('button', { type: 'button', class: 'small' }, 'Detach');
      const status = action(btn, async () => {
        if (!(await confirmDialog(`Detach ${d.name}?`, 'Queries through this app can no longer reach it.', 'Detach'))) return;
        await api('DELETE', `${base}/datasources/${seg(d.id)}`);
        toast(`Detached ${d.name}`);
        reload();
      });
      detach = h('span', {}, btn, status);
    }
    return [isPerson() ? h('a', { href: `#/datasources/${seg(d.id)}` }, d.name) : d.name, KIND_NAMES[d.kind] || d.kind, detach];
  });
  const listEl = rows.length ? table(['Datasource', 'Kind', ''], rows, { class: 'attached' }) : h('p', { class: 'muted' }, 'No datasource attached.');
  if (!editor) return listEl;
  const attachBox = h('div', {}, loading());
  api('GET', '/v1/datasources').then((dss) => {
    const attached = new Set(app.datasources.map((d) => d.id));
    const free = dss.items.filter((d) => !attached.has(d.id));
    if (!free.length) {
      replace(attachBox, h('p', { class: 'hint' }, 'Every datasource you can view is attached.'));
      return;
    }
    const sel = select(free.map((d) => [d.id, `${d.name} (${KIND_NAMES[d.kind] || d.kind})`]), free[0].id);
    const btn = h('button', { type: 'button', class: 'primary' }, 'Attach');
    const status = action(btn, async () => {
      await api('PUT', `${base}/datasources/${seg(sel.value)}`);
      toast('Attached');
      reload();
    });
    replace(attachBox, h('div', { class: 'row' }, field('Attach a datasource', sel), btn), status,
      h('p', { class: 'hint' }, 'You can attach datasources you can view; everyone who may use the app then queries them with their service account.'));
  }, (err) => replace(attachBox, errorView(err)));
  return h('div', {}, listEl, attachBox);
}

function clonePanel(app, base) {
  const out = h('div', { class: 'clone-result' });
  const f = form({ class: 'row', 'aria-label': 'Clone this app' }, [
    field('Name of the copy', h('input', { name: 'name', value: `${app.name} (copy)` })),
  ], 'Clone', async (fm) => {
    const r = await api('POST', `${base}/clone`, { name: fm.elements.name.value.trim() });
    const names = new Map(app.datasources.map((d) => [d.id, d.name]));
    replace(out, h('div', { class: 'ok', role: 'status' },
      'Cloned as ', h('a', { href: `#/apps/${seg(r.app.id)}` }, r.app.name), '. ',
      r.dropped_datasources.length
        ? ['Dropped (you cannot view them, ask their owners for access): ',
          h('ul', { class: 'dropped' }, r.dropped_datasources.map((id) => h('li', {}, names.get(id) || id)))]
        : 'Every datasource was kept.'));
  });
  return h('div', {}, h('p', { class: 'hint' }, 'The copy is private and yours. It keeps only the datasources you can view.'), f, out);
}
