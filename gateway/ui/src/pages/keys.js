// Keys: a page of keys at a time, searched on the server; create (the secret shown once, with a
// copy button), block and unblock, delete with a confirmation, and a key's spend.
import * as api from '../api.js';
import { h, fill, field, notice, usd } from '../dom.js';

const PAGE_SIZE = 20;

export async function keysPage(main, session) {
  const state = { page: 1, search: '', team: '' };
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
      return h(
        'tr',
        { 'data-key': k.key_id },
        h('th', { scope: 'row', class: 'alias' }, name),
        h('td', {}, k.key_name),
        h('td', {}, k.team_id || '–'),
        h('td', {}, (k.models || []).join(', ') || 'all'),
        h('td', {}, k.max_budget_nano_usd == null ? 'none' : usd(k.max_budget_nano_usd)),
        h('td', { class: 'state' }, k.blocked ? 'blocked' : 'active'),
        h('td', {}, show, ' ', block, ' ', remove),
      );
    });
    const heads = ['Alias', 'Key', 'Team', 'Models', 'Budget', 'State', 'Actions'];
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
  const searchForm = h('form', { id: 'search', role: 'search' },
    field('Search alias, team or key prefix', search), field('Team id', team), h('button', { type: 'submit' }, 'Search'));
  searchForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    Object.assign(state, { page: 1, search: search.value.trim(), team: team.value.trim() });
    act(load);
  });

  fill(main, h('h1', {}, 'Keys'), searchForm, status, list, detail,
    session.role === 'proxy_admin_viewer' ? h('p', { class: 'hint' }, 'You may read; changes will be refused.') : null,
    createForm(async (body) => {
      const k = await api.post('/key/generate', body);
      showSecret(created, k);
      await load();
    }, report, () => fill(status)),
    created);
  await load();
}

function createForm(create, report, clear) {
  const input = (id, type = 'text', extra = {}) => h('input', { id, name: id, type, ...extra });
  const alias = input('new-alias');
  const team = input('new-team');
  const models = input('new-models');
  const budget = input('new-budget', 'text', { inputmode: 'decimal' });
  const window = input('new-window');
  const rpm = input('new-rpm', 'number', { min: 1 });
  const tpm = input('new-tpm', 'number', { min: 1 });
  const expiry = input('new-expiry');
  const form = h('form', { id: 'create-key', 'aria-labelledby': 'create-h' },
    h('h2', { id: 'create-h' }, 'Create a key'),
    field('Alias', alias), field('Team id', team), field('Models', models, 'Comma-separated; empty for all'),
    field('Budget (USD)', budget), field('Budget window', window, 'e.g. 30d, 1mo'),
    field('Requests per minute', rpm), field('Tokens per minute', tpm), field('Expires after', expiry, 'e.g. 90d'),
    h('button', { type: 'submit' }, 'Create key'));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clear();
    const body = {};
    const text = (el) => el.value.trim();
    if (text(alias)) body.key_alias = text(alias);
    if (text(team)) body.team_id = text(team);
    if (text(models)) body.models = text(models).split(',').map((m) => m.trim()).filter(Boolean);
    if (text(budget)) body.max_budget = text(budget);
    if (text(window)) body.budget_duration = text(window);
    if (text(rpm)) body.rpm_limit = Number(text(rpm));
    if (text(tpm)) body.tpm_limit = Number(text(tpm));
    if (text(expiry)) body.duration = text(expiry);
    try {
      await create(body);
      form.reset();
    } catch (e) {
      report(e);
    }
  });
  return form;
}

/** The new key, shown this once, with a copy button; it is dropped when the page changes. */
function showSecret(box, k) {
  const secret = h('code', { id: 'new-secret' }, k.key);
  const copied = h('span', { 'aria-live': 'polite' });
  const copy = h('button', { type: 'button', id: 'copy-secret', onclick: async () => {
    try {
      await navigator.clipboard.writeText(k.key);
      fill(copied, ' Copied.');
    } catch {
      fill(copied, ' Select the key and copy it.');
    }
  } }, 'Copy');
  fill(box, h('section', { class: 'card secret', 'aria-labelledby': 'secret-h' },
    h('h2', { id: 'secret-h' }, `New key ${k.key_alias || ''}`.trim()),
    h('p', {}, 'This is the only time the key is shown. Store it now.'),
    h('p', {}, secret, ' ', copy, copied)));
}
