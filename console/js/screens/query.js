// Query: the playground. Pick an app and one of its datasources, write SQL with parameters, and
// run it. Answers always stream as NDJSON, so a large result shows a live row count and can be
// cancelled: Cancel aborts the HTTP request, and the gateway then cancels the statement on the
// database server. Only the first rows are drawn (a browser table of a million rows helps
// nobody); every row is counted.

import { api, streamQuery, ApiError, seg } from '../api.js';
import { h, replace, field, select, num, cellText } from '../dom.js';
import { errorView, loading } from '../ui.js';

/** Rows drawn in the results table; the rest are counted, not kept. */
const SHOWN_ROWS = 1000;

export function render(view, [appId]) {
  let controller = null;
  const body = h('div', {}, loading());
  replace(view, h('h1', {}, 'Query'),
    h('p', { class: 'lede' }, 'Run SQL through an app, with its datasource\u2019s service account and scope policy.'),
    body);
  api('GET', '/v1/apps').then((apps) => {
    if (!apps.items.length) {
      replace(body, h('p', { class: 'empty' }, 'No app is shared with you yet.'));
      return;
    }
    const app = apps.items.find((a) => a.id === appId) || apps.items[0];
    replace(body, playground(apps.items, app, (c) => { controller = c; }));
  }, (err) => replace(body, errorView(err)));
  // Leaving the screen stops a running query rather than letting it stream to nobody.
  return () => {
    if (controller) controller.abort();
  };
}

const PARAM_TYPES = [['text', 'text'], ['number', 'number'], ['boolean', 'boolean'], ['null', 'null'], ['json', 'JSON']];

function paramValue(type, raw) {
  switch (type) {
    case 'number': {
      const n = Number(raw);
      if (raw.trim() === '' || Number.isNaN(n)) throw new ApiError(0, 'bad_params', `"${raw}" is not a number`);
      return n;
    }
    case 'boolean': return raw.trim().toLowerCase() === 'true';
    case 'null': return null;
    case 'json':
      try {
        return JSON.parse(raw);
      } catch {
        throw new ApiError(0, 'bad_params', `"${raw}" is not JSON`);
      }
    default: return raw;
  }
}

function playground(apps, initial, setController) {
  let app = initial;
  const appSel = select(apps.map((a) => [a.id, a.name]), app.id, { name: 'app' });
  const dsSel = h('select', { name: 'datasource' });
  const fillDatasources = () => {
    replace(dsSel, app.datasources.map((d) => h('option', { value: d.id }, `${d.name} (${d.kind})`)));
    dsSel.disabled = !app.datasources.length;
  };
  fillDatasources();
  appSel.addEventListener('change', () => {
    app = apps.find((a) => a.id === appSel.value);
    history.replaceState(null, '', `#/query/${seg(app.id)}`);
    fillDatasources();
  });

  const sql = h('textarea', { name: 'sql', rows: 6, spellcheck: 'false', class: 'sql-editor', placeholder: 'SELECT … FROM … WHERE id = $1' });
  const params = h('ol', { class: 'params' });
  const addParam = h('button', { type: 'button', class: 'small' }, 'Add parameter');
  addParam.addEventListener('click', () => {
    const n = params.children.length + 1;
    const type = select(PARAM_TYPES, 'text', { 'aria-label': `Type of parameter ${n}` });
    const value = h('input', { 'aria-label': `Value of parameter ${n}`, class: 'param-value' });
    const rm = h('button', { type: 'button', class: 'small', 'aria-label': `Remove parameter ${n}` }, 'Remove');
    const li = h('li', { class: 'row' }, type, value, rm);
    rm.addEventListener('click', () => li.remove());
    params.append(li);
    value.focus();
  });
  const maxRows = h('input', { type: 'number', min: 1, name: 'max_rows', placeholder: 'policy limit' });
  const run = h('button', { type: 'submit', class: 'primary' }, 'Run');
  const cancel = h('button', { type: 'button', disabled: true }, 'Cancel');
  const count = h('span', { id: 'row-count', dataset: { rows: '0' } }, '0');
  const state = h('span', { id: 'query-state' });
  const status = h('p', { class: 'query-status', id: 'query-status', dataset: { state: 'idle' } });
  const notices = h('div', { class: 'notices' });
  const results = h('div', { class: 'results' });

  const countWrap = h('span', {}, count, ' rows');
  /** The status line: a state for tests and styles, its words, and whether the count shows. */
  const setState = (s, text, withCount = true) => {
    status.dataset.state = s;
    replace(state, text);
    countWrap.hidden = !withCount;
  };

  const f = h('form', { class: 'stack', 'aria-label': 'Query' },
    h('div', { class: 'grid2' }, field('App', appSel), field('Datasource', dsSel)),
    field('SQL', sql, 'Ctrl+Enter runs. Parameters bind to $1, $2… (PostgreSQL) or ? (MySQL, SQLite).'),
    h('fieldset', {}, h('legend', {}, 'Parameters'), params, addParam),
    h('div', { class: 'row' }, field('Max rows', maxRows), h('div', { class: 'actions' }, run, cancel)),
    status, notices, results);
  replace(status, state, ' ', countWrap);
  setState('idle', 'Ready.', false);

  sql.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) {
      ev.preventDefault();
      f.requestSubmit();
    }
  });
  cancel.addEventListener('click', () => {
    cancel.disabled = true;
    if (f.controller) f.controller.abort();
  });

  f.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (run.disabled) return;
    replace(notices);
    replace(results);
    let rows = 0;
    let drawn = 0;
    let tbody = null;
    let frame = 0;
    const showCount = () => {
      frame = 0;
      count.dataset.rows = String(rows);
      replace(count, num(rows));
    };
    const body = { sql: sql.value };
    try {
      const values = [...params.children].map((li) => {
        const [type, value] = li.querySelectorAll('select, input');
        return paramValue(type.value, value.value);
      });
      if (values.length) body.params = values;
    } catch (err) {
      setState('error', 'Not run.', false);
      replace(notices, errorView(err));
      return;
    }
    if (dsSel.value) body.datasource = dsSel.value;
    if (maxRows.value) body.max_rows = Number(maxRows.value);
    const controller = new AbortController();
    f.controller = controller;
    setController(controller);
    run.disabled = true;
    run.classList.add('busy');
    cancel.disabled = false;
    showCount();
    setState('running', 'Running…');
    try {
      const summary = await streamQuery(app.id, body, {
        signal: controller.signal,
        onColumns: (columns) => {
          const head = h('tr', {}, columns.map((c) => h('th', { scope: 'col' }, h('span', { class: 'col-name' }, c.name), h('span', { class: 'col-type' }, c.type))));
          tbody = h('tbody', {});
          replace(results, h('div', { class: 'table-wrap' }, h('table', { class: 'result' }, h('thead', {}, head), tbody)));
        },
        onRows: (batch) => {
          rows += batch.length;
          for (const r of batch) {
            if (drawn >= SHOWN_ROWS) break;
            tbody.append(h('tr', {}, r.map((v) => h('td', { class: v === null ? 'null' : typeof v }, cellText(v)))));
            drawn += 1;
          }
          if (!frame) frame = requestAnimationFrame(showCount);
        },
      });
      if (frame) cancelAnimationFrame(frame);
      if (summary.rows_affected !== undefined) {
        rows = 0;
        showCount();
        setState('done', `Done: ${num(summary.rows_affected)} rows affected in ${summary.elapsed_ms.toFixed(1)} ms.`, false);
        return;
      }
      rows = summary.row_count;
      showCount();
      setState('done', `Done in ${summary.elapsed_ms.toFixed(1)} ms:`);
      if (summary.truncated) {
        replace(notices, h('p', { class: 'warning', id: 'truncated' }, 'Truncated: more rows matched than the row limit (the request\u2019s max_rows or the datasource\u2019s). Only these rows were sent.'));
      }
      if (rows > drawn) {
        notices.append(h('p', { class: 'hint' }, `Showing the first ${num(drawn)} of ${num(rows)} rows.`));
      }
    } catch (err) {
      if (frame) cancelAnimationFrame(frame);
      showCount();
      if (err.name === 'AbortError') {
        setState('cancelled', 'Cancelled after');
        notices.append(h('p', { class: 'hint' }, 'The request was aborted; the gateway cancelled the statement on the database server.'));
      } else if (rows === 0) {
        setState('error', err.status === 403 ? 'Refused.' : 'Failed.', false);
        replace(notices, errorView(err));
      } else {
        setState('error', 'Failed after');
        replace(notices, errorView(err));
      }
    } finally {
      f.controller = null;
      setController(null);
      run.disabled = false;
      run.classList.remove('busy');
      cancel.disabled = true;
    }
  });
  return f;
}
