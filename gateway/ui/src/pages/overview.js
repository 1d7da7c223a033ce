// Overview: spend today and this month, requests and tokens, from the aggregate read model
// (`/spend/daily` by model: the platform's own rows, a few per day), and the teams with the most
// spend this month against their budgets.
import * as api from '../api.js';
import { h, fill, usd, day } from '../dom.js';

function totals(rows) {
  const t = { spend: 0n, requests: 0, tokens: 0 };
  for (const r of rows) {
    t.spend += BigInt(r.spend_nano_usd);
    t.requests += r.requests;
    t.tokens += r.prompt_tokens + r.completion_tokens;
  }
  return t;
}

function card(title, t, id) {
  return h(
    'section',
    { class: 'card', 'aria-labelledby': `${id}-h` },
    h('h2', { id: `${id}-h` }, title),
    h('p', { class: 'big', id: `${id}-spend` }, usd(t.spend)),
    h('p', {}, `${t.requests.toLocaleString('en-US')} requests · ${t.tokens.toLocaleString('en-US')} tokens`),
  );
}

export async function overviewPage(main) {
  const now = new Date();
  const today = day(now);
  const first = `${today.slice(0, 8)}01`;
  const [month, report, health] = await Promise.all([
    api.get('/spend/daily', { start_date: first, end_date: today, group_by: 'model' }),
    api.get('/global/spend/report', { start_date: first, end_date: today, group_by: 'team', limit: 10 }),
    api.get('/ledger/health'),
  ]);
  const todayRows = month.results.filter((r) => r.date === today);
  const top = report;
  // The budgets of just these teams, however many teams there are.
  const ids = top.map((r) => r.team_id).filter((id) => id);
  const teams = ids.length ? await api.get('/team/list', { ids: ids.join(','), size: ids.length }) : { teams: [] };
  const budgets = new Map(teams.teams.map((t) => [t.team_id, t]));
  const rows = top.map((r) => {
    const team = budgets.get(r.team_id) || {};
    const max = team.max_budget_nano_usd;
    return h(
      'tr',
      {},
      h('th', { scope: 'row' }, team.team_alias || r.team_id),
      h('td', {}, usd(r.spend_nano_usd)),
      h('td', {}, max == null ? 'no budget' : usd(max)),
      h('td', {}, max ? `${((Number(r.spend_nano_usd) / max) * 100).toFixed(1)} %` : '–'),
    );
  });
  fill(
    main,
    h('h1', {}, 'Overview'),
    h('div', { class: 'cards' }, card('Today', totals(todayRows), 'today'), card('Month to date', totals(month.results), 'month')),
    ledgerHealth(health),
    h('h2', {}, 'Teams by spend this month'),
    rows.length
      ? h(
          'table',
          {},
          h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Team'), h('th', { scope: 'col' }, 'Spend'), h('th', { scope: 'col' }, 'Budget'), h('th', { scope: 'col' }, 'Used'))),
          h('tbody', {}, rows),
        )
      : h('p', {}, 'No team has spent anything this month.'),
  );
}

function seconds(ms) {
  return ms == null ? 'never heard' : `${(ms / 1000).toFixed(1)} s ago`;
}

function deadLetters(d) {
  if (d == null) return 'not read (no database here)';
  if (d.error) return `unknown: ${d.error}`;
  if (!d.count) return 'none';
  const reasons = Object.entries(d.by_reason).map(([r, n]) => `${r} ${n}`).join(', ');
  return `${d.more ? 'over ' : ''}${d.count} (${reasons}); newest ${d.newest ?? '–'}`;
}

function reconcile(r) {
  if (r == null) return 'never run (or no database here)';
  if (r.error) return `unknown: ${r.error}`;
  const range = r.range_from || r.range_to ? ` over ${r.range_from ?? '…'} to ${r.range_to ?? '…'}` : '';
  const found = r.ok
    ? `agreed: ${r.events.toLocaleString('en-US')} events, ${r.rows_compared.toLocaleString('en-US')} rows compared`
    : `found ${r.differences} differences, ${r.read_model_behind} read-model rows behind, ${r.key_index_missing + r.key_index_stray} key index faults`;
  return `${found}${range}; finished ${r.finished_at}`;
}

/** What this gateway knows of the ledger (`/ledger/health`). */
function ledgerHealth(health) {
  const view = health.budget_view;
  const replay = health.spool_replay;
  const rows = [
    ['Budget state', view.stale ? 'stale' : 'fresh', 'ledger-state'],
    ['Newest heartbeat', seconds(view.heartbeat_age_ms), 'ledger-heartbeat'],
    ['Stale after', `${view.max_staleness_ms / 1000} s (then ${health.when_stale.replace('_', ' ')})`],
    ['Budget topic read', view.caught_up ? 'to its end' : 'still reading'],
    ['Dead letters', deadLetters(health.dead_letters), 'ledger-dead-letters'],
    ['Last reconcile', reconcile(health.last_reconcile), 'ledger-reconcile'],
    ['Spool replay', replay == null ? 'no spool' : `${replay.in_progress ? 'in progress' : 'done'}: ${replay.replayed} of ${replay.found} events`],
  ];
  const consumers = health.consumers.map((c) => h('tr', {},
    h('th', { scope: 'row' }, c.consumer), h('td', {}, seconds(c.heartbeat_age_ms)),
    h('td', { class: 'lag' }, c.lag == null ? 'not reported' : `${c.lag.toLocaleString('en-US')} records`)));
  return h('section', { class: `card health ${view.stale ? 'bad' : 'good'}`, 'aria-labelledby': 'ledger-h', id: 'ledger-health' },
    h('h2', { id: 'ledger-h' }, `Ledger health (gateway ${health.gateway_id})`),
    h('dl', { class: 'facts' }, rows.flatMap(([k, v, id]) => [h('dt', {}, k), h('dd', { id }, v)])),
    consumers.length
      ? h('table', { id: 'ledger-consumers' }, h('caption', {}, 'Ledger consumers'),
        h('thead', {}, h('tr', {}, ['Consumer', 'Last heartbeat', 'Lag'].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, consumers))
      : h('p', {}, 'No ledger consumer heard from.'));
}
