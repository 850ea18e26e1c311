// Building the page without ever parsing markup: every string becomes a text node or an
// attribute value, so a name like `<img src=x onerror=alert(1)>` shows as those characters.

/** Attributes that could run code or load things if given a server string; refused outright. */
const FORBIDDEN_ATTRS = /^(on|style$|srcdoc$)/i;

/**
 * h('button', {class: 'primary', onclick: fn}, 'Save') builds an element.
 * Attributes: `class`, `for` and any other plain attribute (set with setAttribute, as text);
 * `on<event>` takes a function (never a string); `dataset` an object; `hidden`, `disabled`,
 * `checked`, `selected`, `value`, `required` and `open` set the property. Children: strings and
 * numbers become text nodes, null/false are skipped, arrays are flattened.
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') {
      el.addEventListener(k.slice(2).toLowerCase(), v);
    } else if (k === 'dataset') {
      Object.assign(el.dataset, v);
    } else if (['hidden', 'disabled', 'checked', 'selected', 'value', 'required', 'open', 'multiple', 'readOnly'].includes(k)) {
      el[k] = v;
    } else if (FORBIDDEN_ATTRS.test(k)) {
      throw new Error(`attribute ${k} is not set from code`);
    } else {
      el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  append(el, children);
  return el;
}

/** Appends children (strings as text nodes). */
export function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** Empties an element and fills it again. */
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** 12345 -> "12,345" (the user's locale). */
export function num(n) {
  return typeof n === 'number' ? n.toLocaleString() : String(n);
}

/** An RFC 3339 time shown in the user's time zone, the exact value in a tooltip. */
export function time(iso) {
  if (!iso) return h('span', {}, '—');
  const d = new Date(iso);
  return h('time', { datetime: iso, title: iso }, isNaN(d) ? iso : d.toLocaleString());
}

/** A table: `cols` are header labels, `rows` arrays of cells (nodes or text). */
export function table(cols, rows, attrs = {}) {
  return h('div', { class: 'table-wrap' },
    h('table', attrs,
      h('thead', {}, h('tr', {}, cols.map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, rows.map((r) => h('tr', {}, r.map((cell) => h('td', {}, cell)))))));
}

/** A labelled form field; `input` is the control, whose id is set for the label. */
let fieldSeq = 0;
export function field(label, input, hint) {
  const id = input.id || `f${++fieldSeq}`;
  input.id = id;
  let hintEl = null;
  if (hint) {
    hintEl = h('small', { id: `${id}-hint`, class: 'hint' }, hint);
    input.setAttribute('aria-describedby', hintEl.id);
  }
  return h('div', { class: 'field' }, h('label', { for: id }, label), input, hintEl);
}

/** A <select> of [value, label] pairs. */
export function select(options, value, attrs = {}) {
  return h('select', attrs, options.map(([v, l]) => h('option', { value: v, selected: v === value }, l)));
}

/** The JSON of a value, as text for a table cell (objects and arrays shown compactly). */
export function cellText(v) {
  if (v === null || v === undefined) return 'NULL';
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}
