// The console's shell: who is signed in, the navigation, and a page per `#/route`.
import './style.css';
import * as api from './api.js';
import { h, fill, notice } from './dom.js';
import { signInPage } from './pages/signin.js';
import { keysPage } from './pages/keys.js';
import { overviewPage } from './pages/overview.js';
import { usagePage } from './pages/usage.js';
import { logsPage } from './pages/logs.js';
import { entityPage } from './pages/entities.js';
import { modelsPage } from './pages/models.js';

// Which roles see each page (the API refuses the rest anyway): admins every page; a team admin
// its keys, usage, logs and teams; an internal user its keys, usage and logs.
const ADMINS = ['proxy_admin', 'proxy_admin_viewer'];
const USERS = [...ADMINS, 'team_admin', 'internal_user'];
const PAGES = {
  overview: { title: 'Overview', render: overviewPage, roles: ADMINS },
  keys: { title: 'Keys', render: keysPage, roles: USERS },
  usage: { title: 'Usage', render: usagePage, roles: USERS },
  logs: { title: 'Spend logs', render: logsPage, roles: USERS },
  teams: { title: 'Teams', render: entityPage('teams'), roles: [...ADMINS, 'team_admin'] },
  users: { title: 'Users', render: entityPage('users'), roles: ADMINS },
  customers: { title: 'Customers', render: entityPage('customers'), roles: ADMINS },
  organizations: { title: 'Organizations', render: entityPage('organizations'), roles: ADMINS },
  models: { title: 'Models', render: modelsPage, roles: ADMINS },
};

/** The pages the session's role may open, in the navigation's order. */
const pagesOf = (session) => Object.entries(PAGES).filter(([, page]) => page.roles.includes(session.role));

let current = null;
let routed = 0;

function header(session) {
  const top = document.getElementById('top');
  if (!session) {
    fill(top, h('span', { class: 'brand' }, 'Tollgate'));
    return;
  }
  const links = pagesOf(session).map(([route, page]) =>
    h('li', {}, h('a', { href: `#/${route}`, 'data-route': route }, page.title)),
  );
  const out = h('button', { type: 'button', id: 'sign-out', onclick: onSignOut }, 'Sign out');
  fill(
    top,
    h('span', { class: 'brand' }, 'Tollgate'),
    h('nav', { 'aria-label': 'Console' }, h('ul', {}, links)),
    h('span', { class: 'role', id: 'role' }, session.role),
    out,
  );
}

async function onSignOut() {
  await api.signOut();
  current = null;
  location.hash = '#/sign-in';
  await route();
}

async function route() {
  const main = document.getElementById('main');
  if (!current) current = await api.session();
  header(current);
  if (!current) {
    document.title = 'Sign in · Tollgate';
    routed += 1;
    signInPage(main, async (session) => {
      current = session;
      location.hash = `#/${pagesOf(session)[0]?.[0] ?? 'keys'}`;
      await route();
    });
    return;
  }
  // `#/<page>` or `#/<page>/<id>` (the id percent-encoded).
  const [first, ...rest] = location.hash.replace(/^#\//, '').split('/');
  const allowed = new Map(pagesOf(current));
  const name = allowed.has(first) ? first : (pagesOf(current)[0]?.[0] ?? 'keys');
  const page = allowed.get(name) || PAGES.keys;
  let param = null;
  try {
    param = rest.length ? decodeURIComponent(rest.join('/')) : null;
  } catch {
    param = null;
  }
  document.title = `${page.title} · Tollgate`;
  for (const a of document.querySelectorAll('nav a')) {
    if (a.dataset.route === name) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  // A page renders into a view of its own, shown only if no later route started meanwhile.
  const turn = ++routed;
  const view = h('div', { class: 'view', 'data-page': name });
  try {
    await page.render(view, current, param);
  } catch (e) {
    fill(view, notice('error', e.message));
  }
  if (turn === routed) fill(main, view);
}

window.addEventListener('hashchange', () => route());
route().catch((e) => fill(document.getElementById('main'), notice('error', e.message)));
