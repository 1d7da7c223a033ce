// Teams, users, customers and organizations: a list, 20 a page, paged and searched on the server
// (by part of the id or name), and a page of each with its members and roles, budgets and the
// burn-down of its current budget window. The admin API's `*/list` and `*/info` answers, and
// `/spend/daily`.
import * as api from '../api.js';
import { h, fill, notice, usd } from '../dom.js';
import { burnDown } from './burndown.js';

const PAGE = 20;
// The most teams or users an organization's page shows (the API's largest page).
const MOST = 1000;

// What differs between the four: their API, id field and name, and the `/spend/daily` group.
export const KINDS = {
  teams: {
    title: 'Teams', one: 'Team', list: '/team/list', plural: 'teams', id: 'team_id', name: (r) => r.team_alias,
    group: ['team', 'team_id'],
    info: async (id) => {
      const a = await api.get('/team/info', { team_id: id });
      return { record: a.team_info, keys: a.keys };
    },
  },
  users: {
    title: 'Users', one: 'User', list: '/user/list', plural: 'users', id: 'user_id', name: (r) => r.user_alias || r.user_email,
    group: ['user', 'user_id'],
    info: async (id) => {
      const a = await api.get('/user/info', { user_id: id });
      return { record: a.user_info, keys: a.keys, teams: a.teams };
    },
  },
  customers: {
    title: 'Customers', one: 'Customer', list: '/customer/list', plural: 'customers', id: 'user_id', name: (r) => r.alias,
    group: ['customer', 'end_user'],
    info: async (id) => ({ record: await api.get('/customer/info', { end_user_id: id }) }),
  },
  organizations: {
    title: 'Organizations', one: 'Organization', list: '/organization/list', plural: 'organizations', id: 'organization_id',
    name: (r) => r.organization_alias, group: ['organization', 'organization_id'],
    info: async (id) => {
      const [record, teams, users] = await Promise.all([
        api.get('/organization/info', { organization_id: id }),
        api.get('/team/list', { organization_id: id, size: MOST }),
        api.get('/user/list', { organization_id: id, size: MOST }),
      ]);
      return {
        record,
        teams: teams.teams.map((t) => t.team_id),
        members: users.users.map((u) => ({ user_id: u.user_id, role: u.user_role || 'internal_user' })),
      };
    },
  },
};

const link = (route, id, text) => h('a', { href: `#/${route}/${encodeURIComponent(id)}` }, text);
const budget = (r) => (r.max_budget_nano_usd == null ? 'no budget' : usd(r.max_budget_nano_usd));

/** The list of one kind: a page at a time from the server, searched there. */
export async function listPage(main, route) {
  const kind = KINDS[route];
  const search = h('input', { id: 'entity-search', type: 'search', 'aria-label': `Search ${kind.title.toLowerCase()} by id or name` });
  const out = h('div', { id: 'entity-list', 'aria-live': 'polite' });
  let page = 1;
  let query = '';
  const show = async () => {
    const data = await api.get(kind.list, { page, size: PAGE, search: query });
    const found = data[kind.plural];
    const pages = Math.max(1, data.total_pages);
    const rows = found.map((r) => h('tr', { 'data-id': r[kind.id] },
      h('th', { scope: 'row', class: 'name' }, link(route, r[kind.id], kind.name(r) || r[kind.id])),
      h('td', { class: 'id' }, r[kind.id]),
      h('td', {}, budget(r)),
      h('td', {}, r.budget_duration || '–'),
      h('td', {}, r.blocked ? 'blocked' : 'active')));
    const turn = (by) => () => { page += by; show().catch((e) => fill(out, notice('error', e.message))); };
    const prev = h('button', { type: 'button', disabled: page <= 1, onclick: turn(-1) }, 'Previous');
    const next = h('button', { type: 'button', disabled: page >= pages, onclick: turn(1) }, 'Next');
    fill(out,
      found.length
        ? h('table', { id: 'entities' }, h('caption', {}, `${kind.title} (${data.total_count})`),
          h('thead', {}, h('tr', {}, ['Name', 'Id', 'Budget', 'Window', 'State'].map((t) => h('th', { scope: 'col' }, t)))),
          h('tbody', {}, rows))
        : h('p', {}, `No ${kind.title.toLowerCase()}.`),
      h('p', { class: 'pager' }, prev, ` Page ${Math.min(page, pages)} of ${pages} `, next));
  };
  const form = h('form', { role: 'search', id: 'entity-filter' }, search, h('button', { type: 'submit' }, 'Search'));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    page = 1;
    query = search.value.trim();
    show().catch((e) => fill(out, notice('error', e.message)));
  });
  fill(main, h('h1', {}, kind.title), form, out);
  await show();
}

function facts(record, kind) {
  const rows = [
    ['Id', record[kind.id]],
    ['Organization', record.organization_id],
    ['Team', kind.id === 'team_id' ? null : record.team_id],
    ['Role', record.user_role],
    ['Email', record.user_email],
    ['State', record.blocked ? 'blocked' : 'active'],
    ['Models', record.models?.length ? record.models.join(', ') : record.models && 'all'],
    ['Budget', budget(record)],
    ['Soft budget', record.soft_budget_nano_usd == null ? null : usd(record.soft_budget_nano_usd)],
    ['Budget window', record.budget_duration ? `${record.budget_duration}, resets ${record.budget_reset_at || '–'}` : 'all time'],
    ['Spend in window', record.spend_nano_usd == null ? null : usd(record.spend_nano_usd)],
    ['Spend all time', record.spend_all_time_nano_usd == null ? null : usd(record.spend_all_time_nano_usd)],
    ['Requests', record.requests],
    ['Limits', `rpm ${record.rpm_limit ?? '–'} · tpm ${record.tpm_limit ?? '–'} · parallel ${record.max_parallel_requests ?? '–'}`],
    ['Tags', record.tags?.length ? record.tags.join(', ') : null],
  ].filter(([, v]) => v !== undefined && v !== null);
  return h('dl', { class: 'facts', id: 'entity-facts' }, rows.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, String(v))]));
}

function members(list) {
  if (!list?.length) return h('p', {}, 'No members.');
  return h('table', { id: 'members' }, h('caption', {}, 'Members and roles'),
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'User'), h('th', { scope: 'col' }, 'Role'))),
    h('tbody', {}, list.map((m) => h('tr', {}, h('th', { scope: 'row' }, link('users', m.user_id, m.user_id)), h('td', { class: 'role' }, m.role)))));
}

function keys(list) {
  if (!list) return null;
  if (!list.length) return h('p', {}, 'No keys.');
  return h('table', { id: 'entity-keys' }, h('caption', {}, 'Keys'),
    h('thead', {}, h('tr', {}, ['Alias', 'Key', 'Budget', 'State'].map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, list.map((k) => h('tr', {}, h('th', { scope: 'row' }, k.key_alias || '–'), h('td', {}, k.key_name),
      h('td', {}, budget(k)), h('td', {}, k.blocked ? 'blocked' : 'active')))));
}

/** The page of one team, user, customer or organization. */
export async function detailPage(main, route, id) {
  const kind = KINDS[route];
  const { record, keys: keyList, teams, members: orgMembers } = await kind.info(id);
  const [groupBy, field] = kind.group;
  const chart = await burnDown(record, groupBy, field, id);
  const teamLinks = teams && (teams.length ? h('ul', { id: 'entity-teams' }, teams.map((t) => h('li', {}, link('teams', t, t)))) : h('p', {}, 'In no team.'));
  fill(main,
    h('p', {}, h('a', { href: `#/${route}` }, `← ${kind.title}`)),
    h('h1', { id: 'entity-name' }, `${kind.one}: ${kind.name(record) || record[kind.id]}`),
    facts(record, kind),
    chart.section,
    record.members || orgMembers ? h('h2', {}, 'Members') : null,
    record.members || orgMembers ? members(record.members || orgMembers) : null,
    teams ? h('h2', {}, 'Teams') : null,
    teamLinks,
    keyList ? h('h2', {}, 'Keys') : null,
    keys(keyList));
  chart.draw();
}

/** The route `#/<kind>` or `#/<kind>/<id>`. */
export function entityPage(route) {
  return (main, _session, id) => (id == null ? listPage(main, route) : detailPage(main, route, id)).catch((e) => {
    fill(main, notice('error', e.message));
  });
}
