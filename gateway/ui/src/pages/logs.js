// Spend logs: one row per request, newest first, read from the event ledger a page at a time
// (`/spend/logs`, following its cursor), with filters by key, team, model and day range.
import * as api from '../api.js';
import { h, fill, field, notice, usd, day } from '../dom.js';
import { requestDetail } from './request_detail.js';

const PAGE_SIZE = 25;

export async function logsPage(main) {
  const input = (id, type = 'text', extra = {}) => h('input', { id, name: id, type, ...extra });
  const key = input('logs-key');
  const team = input('logs-team');
  const model = input('logs-model');
  const from = input('logs-from', 'date', { value: day(new Date()) });
  const to = input('logs-to', 'date', { value: day(new Date()) });
  const out = h('div', { id: 'logs-out', 'aria-live': 'polite' });
  // The cursors of the pages read so far: `Previous` goes back along them.
  let cursors = [null];

  async function load() {
    const after = cursors[cursors.length - 1];
    const data = await api.get('/spend/logs', {
      api_key: key.value.trim(),
      team_id: team.value.trim(),
      model: model.value.trim(),
      start_date: from.value,
      end_date: to.value,
      page_size: PAGE_SIZE,
      after,
    });
    const prev = h('button', { type: 'button', disabled: cursors.length <= 1, onclick: () => { cursors.pop(); run(); } }, 'Previous');
    const next = h('button', { type: 'button', disabled: !data.next_cursor, onclick: () => { cursors.push(data.next_cursor); run(); } }, 'Next');
    fill(out, table(data.data), h('p', { class: 'pager' }, prev, ` Page ${cursors.length}${data.total == null ? '' : ` (${data.total} requests)`} `, next));
  }
  const run = () => load().catch((e) => fill(out, notice('error', e.message)));

  const form = h('form', { id: 'logs-filter', role: 'search' },
    field('Key (token)', key), field('Team id', team), field('Model', model), field('From', from), field('To', to),
    h('button', { type: 'submit' }, 'Show'));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    cursors = [null];
    run();
  });
  fill(main, h('h1', {}, 'Spend logs'), form, out);
  await load();
}

function table(entries) {
  if (!entries.length) return h('p', {}, 'No request matches.');
  const heads = ['Time (UTC)', 'Key', 'Team', 'Model', 'Provider', 'Status', 'Tokens', 'Latency', 'Spend', 'Detail'];
  const rows = entries.map((e) => h('tr', { 'data-request': e.request_id },
    h('th', { scope: 'row' }, String(e.endTime).replace('T', ' ').slice(0, 19)),
    h('td', { class: 'alias' }, e.key_alias || String(e.api_key).slice(0, 12)),
    h('td', {}, e.team_id || '–'),
    h('td', {}, e.model),
    h('td', {}, e.provider || '–'),
    h('td', {}, e.status),
    h('td', {}, `${e.prompt_tokens} + ${e.completion_tokens}`),
    h('td', {}, `${Date.parse(e.endTime) - Date.parse(e.startTime)} ms`),
    h('td', { class: 'spend' }, usd(e.spend_nano_usd)),
    h('td', {}, h('button', { type: 'button', class: 'detail', 'aria-expanded': 'false', onclick: (ev) => toggle(ev.currentTarget, e, heads.length) }, 'Details'))));
  return h('table', { id: 'logs' }, h('caption', {}, 'Requests, newest first'),
    h('thead', {}, h('tr', {}, heads.map((t) => h('th', { scope: 'col' }, t)))), h('tbody', {}, rows));
}

/** Shows or hides the detail of `e` in a row below the button's. */
function toggle(button, e, span) {
  const row = button.closest('tr');
  const open = row.nextElementSibling?.classList.contains('detail-row');
  if (open) row.nextElementSibling.remove();
  else row.after(h('tr', { class: 'detail-row' }, requestDetail(e, span)));
  button.setAttribute('aria-expanded', String(!open));
}
