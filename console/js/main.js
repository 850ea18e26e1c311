// The console's entry point: sign-in with a token, the page frame (who you are, navigation,
// sign-out) and the hash router that shows one screen at a time.

import { api, token, setToken, clearToken, whenUnauthenticated } from './api.js';
import { h, replace } from './dom.js';
import { errorView, loading } from './ui.js';
import { setMe, isPerson, atLeast } from './roles.js';
import * as integrations from './screens/integrations.js';
import * as datasources from './screens/datasources.js';
import * as apps from './screens/apps.js';
import * as people from './screens/people.js';
import * as audit from './screens/audit.js';
import * as query from './screens/query.js';

const root = document.getElementById('root');

/** The navigation, in the order of API.md; `show` says who sees each entry. */
const SCREENS = [
  { path: 'integrations', label: 'Integrations', module: integrations, show: isPerson },
  { path: 'datasources', label: 'Datasources', module: datasources, show: isPerson },
  { path: 'apps', label: 'Apps', module: apps, show: () => true },
  { path: 'people', label: 'People', module: people, show: isPerson },
  { path: 'audit', label: 'Audit', module: audit, show: () => atLeast('admin') },
  { path: 'query', label: 'Query', module: query, show: () => true },
];

let view = null;
let nav = null;
/** What the current screen asked to run when it is left (a running query's Cancel). */
let leaveScreen = null;

function signInScreen(message) {
  const input = h('input', { type: 'password', id: 'token', name: 'token', autocomplete: 'off', spellcheck: 'false', required: true });
  const submit = h('button', { type: 'submit', class: 'primary' }, 'Sign in');
  const status = h('div', { class: 'action-status' }, message ? errorView(message) : null);
  const f = h('form', { class: 'signin', 'aria-labelledby': 'signin-title' },
    h('h1', { id: 'signin-title' }, 'sluice'),
    h('p', { class: 'muted' }, 'Sign in with an API token (shown once when you were invited, or printed by `sluice demo` and `sluice company create`).'),
    h('div', { class: 'field' }, h('label', { for: 'token' }, 'Token'), input),
    h('div', { class: 'actions' }, submit),
    status);
  f.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const t = input.value.trim();
    if (!t) return;
    submit.disabled = true;
    submit.classList.add('busy');
    replace(status, loading('Signing in…'));
    setToken(t);
    input.value = '';
    try {
      await start();
    } catch (err) {
      clearToken();
      replace(status, errorView(err.status === 401 ? Object.assign(err, { message: 'That token was not accepted: it is unknown, revoked or expired.' }) : err));
      submit.disabled = false;
      submit.classList.remove('busy');
      input.focus();
    }
  });
  replace(root, h('main', { class: 'signin-page' }, f));
  input.focus();
}

function signOut(message) {
  if (leaveScreen) leaveScreen();
  leaveScreen = null;
  clearToken();
  setMe(null);
  view = null;
  nav = null;
  history.replaceState(null, '', '/');
  signInScreen(message);
}

/** Loads who the token belongs to and shows the frame; throws when the token is refused. */
async function start() {
  const me = await api('GET', '/v1/me');
  setMe(me.user);
  const roleText = me.user.kind === 'api' ? 'API user' : me.user.role;
  nav = h('nav', { 'aria-label': 'Main' },
    h('ul', {}, SCREENS.filter((s) => s.show()).map((s) => h('li', {}, h('a', { href: `#/${s.path}`, dataset: { screen: s.path } }, s.label)))));
  const out = h('button', { type: 'button', class: 'signout' }, 'Sign out');
  out.addEventListener('click', () => signOut());
  view = h('main', { id: 'view', tabindex: '-1' });
  replace(root,
    h('header', { class: 'top' },
      h('a', { class: 'brand', href: '#/apps' }, 'sluice'),
      nav,
      h('div', { class: 'who', 'aria-label': 'Signed in as' },
        h('span', { class: 'who-name', id: 'who-name' }, me.user.email || me.user.name),
        h('span', { class: `badge role-${roleText.replace(' ', '-')}`, id: 'who-role' }, roleText),
        h('span', { class: 'who-company', id: 'who-company' }, me.company.name),
        out)),
    view);
  if (!location.hash.startsWith('#/')) {
    // Admins start where seed 001 starts them; everyone else with their apps.
    history.replaceState(null, '', atLeast('admin') ? '#/integrations' : '#/apps');
  }
  route();
}

function route() {
  if (!view || !location.hash.startsWith('#/')) return;
  if (leaveScreen) leaveScreen();
  leaveScreen = null;
  const [name, ...rest] = location.hash.slice(2).split('/').map(decodeURIComponent);
  const screen = SCREENS.find((s) => s.path === name && s.show());
  for (const a of nav.querySelectorAll('a')) {
    if (a.dataset.screen === name) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  if (!screen) {
    replace(view, h('h1', { tabindex: '-1' }, 'Not found'), h('p', {}, 'There is no such screen here, or your role does not offer it.'));
    return;
  }
  replace(view, loading());
  try {
    const cleanup = screen.module.render(view, rest);
    if (typeof cleanup === 'function') leaveScreen = cleanup;
  } catch (err) {
    replace(view, errorView(err));
  }
}

/** Moves focus to a screen's heading once it is drawn, for keyboard and screen-reader users. */
function focusHeading() {
  const h1 = view && view.querySelector('h1');
  if (h1) {
    h1.setAttribute('tabindex', '-1');
    h1.focus({ preventScroll: true });
  }
}

window.addEventListener('hashchange', () => {
  route();
  focusHeading();
});

document.querySelector('.skip').addEventListener('click', (ev) => {
  ev.preventDefault();
  if (view) view.focus();
});

// A token that stops working mid-session (revoked, expired, its user removed) ends the
// session; a refused sign-in is answered by the sign-in form itself.
whenUnauthenticated(() => {
  if (view) signOut({ code: 'unauthenticated', message: 'Your token stopped working (revoked, expired or its user removed). Sign in again.' });
});

(async () => {
  if (token()) {
    try {
      await start();
      return;
    } catch {
      clearToken();
    }
  }
  signInScreen();
})();
