// Keys: a page of keys at a time, filtered and sorted on the server; create, edit, rotate (the
// new secret shown once, with a copy button), block and unblock, delete with a confirmation, and
// a key's spend.
import * as api from '../api.js';
import { h, fill, field, notice, usd } from '../dom.js';
import { createForm, editForm, rotateForm, showSecret } from './key_forms.js';

const PAGE_SIZE = 20;
const SORTS = {
  '': {},
  newest: { sort: 'created_at', order: 'desc' },
  spend_desc: { sort: 'spend', order: 'desc' },
  spend_asc: { sort: 'spend', order: 'asc' },
};
const SORT_NAMES = { '': 'Oldest first', newest: 'Newest first', spend_desc: 'Spend, highest first', spend_asc: 'Spend, lowest first' };

/** Blocked, replaced by a rotation (answering until it expires), or active. */
function stateOf(k) {
  if (k.blocked) return 'blocked';
  return k.replaced_by ? 'replaced' : 'active';
}

/** What the session may do with key `k`, as the API decides it (docs/console.md, "Roles"):
 *  admins change every key (a viewer's changes are refused: it is told so); a team admin the
 *  keys of its teams; a user deletes its own keys. */
export function mayChange(session, k) {
  if (session.role === 'proxy_admin' || session.role === 'proxy_admin_viewer') return true;
  return session.role === 'team_admin' && (session.teams || []).includes(k.team_id);
}

export function mayDelete(session, k) {
  return mayChange(session, k) || (k.user_id != null && k.user_id === session.user_id);
}

const HINTS = {
  proxy_admin_viewer: 'You may read; changes will be refused.',
  team_admin: 'You see your own keys and the keys of the teams you administer, which you may change.',
  internal_user: 'You see your own keys: you may create and delete them.',
};

export async function keysPage(main, session) {
  const state = { page: 1, search: '', team: '', user: '', metadata: '', blocked: '', expiring: '', over: '', sort: '' };
  const status = h('div', { id: 'keys-status', 'aria-live': 'polite' });
  const list = h('div', { id: 'keys-list' });
  const detail = h('div', { id: 'key-detail', 'aria-live': 'polite' });
  const created = h('div', { id: 'key-created', 'aria-live': 'polite' });
  const report = (e) => fill(status, notice('error', e.message));

  async function load() {
    const data = await api.get('/key/list', {
      page: state.page,
      size: PAGE_SIZE,
      return_full_object: 'true',
      search: state.search,
      team_id: state.team,
      user_id: state.user,
      metadata: state.metadata,
      blocked: state.blocked,
      expires_within_days: state.expiring,
      min_budget_percent: state.over,
      ...SORTS[state.sort],
    });
    fill(list, table(data.keys), pager(data));
  }

  async function act(fn) {
    fill(status);
    try {
      await fn();
    } catch (e) {
      report(e);
    }
  }

  function table(keys) {
    if (!keys.length) return h('p', {}, 'No key matches.');
    const rows = keys.map((k) => {
      const name = k.key_alias || k.key_name;
      const block = h(
        'button',
        { type: 'button', class: 'block', onclick: () => act(async () => {
          await api.post(k.blocked ? '/key/unblock' : '/key/block', { key: k.token ?? k.key_id });
          await load();
        }) },
        k.blocked ? 'Unblock' : 'Block',
      );
      const remove = h('button', { type: 'button', class: 'delete danger', onclick: () => confirmDelete(k, name) }, 'Delete');
      const show = h('button', { type: 'button', class: 'details', onclick: () => act(() => showDetail(k)) }, 'Details');
      const edit = h('button', { type: 'button', class: 'edit', onclick: () => showForm(editForm(k, async (body) => {
        await api.post('/key/update', body);
        fill(detail);
        await load();
      }, report, () => fill(status), () => fill(detail))) }, 'Edit');
      const rotate = h('button', { type: 'button', class: 'rotate', onclick: () => showForm(rotateForm(k, async (body) => {
        const n = await api.post(`/key/${encodeURIComponent(k.key_id)}/regenerate`, body);
        fill(detail);
        showSecret(created, n);
        await load();
      }, report, () => fill(status), () => fill(detail))) }, 'Rotate');
      return h(
        'tr',
        { 'data-key': k.key_id },
        h('th', { scope: 'row', class: 'alias' }, name),
        h('td', {}, k.key_name),
        h('td', {}, k.team_id || '–'),
        h('td', {}, (k.models || []).join(', ') || 'all'),
        h('td', { class: 'budget' }, k.max_budget_nano_usd == null ? 'none' : usd(k.max_budget_nano_usd)),
        h('td', { class: 'spend' }, k.spend_nano_usd == null ? '–' : usd(k.spend_nano_usd)),
        h('td', {}, k.expires || 'never'),
        h('td', { class: 'state' }, stateOf(k)),
        h('td', {}, show, ...(mayChange(session, k) ? [' ', edit, ' ', rotate, ' ', block] : []),
          ...(mayDelete(session, k) ? [' ', remove] : [])),
      );
    });
    const heads = ['Alias', 'Key', 'Team', 'Models', 'Budget', 'Spend', 'Expires', 'State', 'Actions'];
    return h(
      'table',
      { id: 'keys' },
      h('caption', {}, 'Virtual keys'),
      h('thead', {}, h('tr', {}, heads.map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, rows),
    );
  }

  function pager(data) {
    const prev = h('button', { type: 'button', disabled: state.page <= 1, onclick: () => { state.page -= 1; act(load); } }, 'Previous');
    const next = h('button', { type: 'button', disabled: state.page >= data.total_pages, onclick: () => { state.page += 1; act(load); } }, 'Next');
    return h('p', { class: 'pager' }, prev, ` Page ${data.current_page} of ${Math.max(1, data.total_pages)} (${data.total_count} keys) `, next);
  }

  function showForm(form) {
    fill(status);
    fill(detail, form);
    form.querySelector('input')?.focus();
  }

  function confirmDelete(k, name) {
    const yes = h('button', { type: 'button', class: 'danger', id: 'confirm-delete', onclick: () => act(async () => {
      await api.post('/key/delete', { keys: [k.key_id] });
      fill(detail);
      await load();
    }) }, 'Delete for good');
    const no = h('button', { type: 'button', onclick: () => fill(detail) }, 'Cancel');
    fill(detail, h('div', { class: 'confirm', role: 'alertdialog', 'aria-label': 'Confirm deletion' },
      h('p', {}, 'Delete key ', h('strong', {}, name), '? Requests with it will be refused.'), yes, ' ', no));
    yes.focus();
  }

  async function showDetail(k) {
    const info = (await api.get('/key/info', { key: k.key_id })).info;
    fill(detail, h('section', { class: 'card', 'aria-labelledby': 'detail-h' },
      h('h2', { id: 'detail-h' }, `Key ${info.key_alias || info.key_name}`),
      h('dl', {},
        h('dt', {}, 'Spend (current budget window)'), h('dd', { id: 'detail-spend' }, usd(info.spend_nano_usd ?? 0)),
        h('dt', {}, 'Spend (all time)'), h('dd', { id: 'detail-spend-all' }, usd(info.spend_all_time_nano_usd ?? 0)),
        h('dt', {}, 'Requests'), h('dd', { id: 'detail-requests' }, String(info.requests ?? 0)),
        h('dt', {}, 'Expires'), h('dd', {}, info.expires || 'never'))));
  }

  const search = h('input', { type: 'search', id: 'key-search', name: 'search' });
  const team = h('input', { type: 'text', id: 'key-team', name: 'team' });
  const user = h('input', { type: 'text', id: 'key-user', name: 'user' });
  const metadata = h('input', { type: 'text', id: 'key-metadata', name: 'metadata', placeholder: 'name=value' });
  const choice = (id, options) => h('select', { id, name: id }, options.map(([v, t]) => h('option', { value: v }, t)));
  const blocked = choice('key-blocked', [['', 'Any'], ['true', 'Blocked'], ['false', 'Active']]);
  const expiring = h('input', { type: 'number', id: 'key-expiring', name: 'expiring', min: 1, max: 3650 });
  const over = h('input', { type: 'number', id: 'key-over', name: 'over', min: 0, max: 10000 });
  const sort = choice('key-sort', Object.entries(SORT_NAMES));
  const searchForm = h('form', { id: 'search', role: 'search' },
    field('Search alias, team or key prefix', search), field('Team id', team), field('User id', user),
    field('Metadata (name=value)', metadata), field('State', blocked),
    field('Expiring within (days)', expiring), field('Spent at least (% of budget)', over), field('Order', sort),
    h('button', { type: 'submit' }, 'Search'));
  searchForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    Object.assign(state, {
      page: 1, search: search.value.trim(), team: team.value.trim(), user: user.value.trim(),
      metadata: metadata.value.trim(), blocked: blocked.value,
      expiring: expiring.value.trim(), over: over.value.trim(), sort: sort.value,
    });
    act(load);
  });

  fill(main, h('h1', {}, 'Keys'), searchForm, status, list, detail,
    HINTS[session.role] ? h('p', { class: 'hint', id: 'role-hint' }, HINTS[session.role]) : null,
    createForm(async (body) => {
      const k = await api.post('/key/generate', body);
      showSecret(created, k);
      await load();
    }, report, () => fill(status)),
    created);
  await load();
}
