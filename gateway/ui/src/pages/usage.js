// Usage: daily spend over a date range, from the aggregate read model (`/spend/daily` by model, the
// platform's own rows, a few a day, read in 31-day slices), drawn with uPlot; and the range's spend
// by model, team, key, customer, user, organization or tag, largest first, a page at a time
// (`/spend/daily?sum=range`: the server sums the range and pages the groups), as a table that
// downloads as CSV (every group, paged through).
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import { h, fill, field, notice, usd, dollars, day } from '../dom.js';
import { dailyRows, daysBetween, midnight, rangeGroups, DAY_MS } from '../daily.js';
import { downloadCsv } from '../csv.js';

const MAX_DAYS = 366;
// Groups shown a page at a time.
const PAGE = 50;
// group_by of `/spend/daily` → the field naming each result's group, and the column's title.
const GROUPS = {
  model: ['model', 'Model'],
  team: ['team_id', 'Team'],
  key: ['api_key', 'Key (token)'],
  customer: ['end_user', 'Customer'],
  user: ['user_id', 'User'],
  organization: ['organization_id', 'Organization'],
  // An event counts in each of its tags: the tags' rows overlap and do not sum to the day's total.
  tag: ['tag', 'Tag'],
};

const zero = () => ({ spend: 0n, requests: 0, prompt: 0, completion: 0 });
function add(into, r) {
  into.spend += BigInt(r.spend_nano_usd);
  into.requests += r.requests;
  into.prompt += r.prompt_tokens;
  into.completion += r.completion_tokens;
}

/** Rows summed by `keyOf(row)`, in first-seen order of the keys. */
function sumBy(rows, keyOf) {
  const out = new Map();
  for (const r of rows) {
    const k = keyOf(r);
    if (!out.has(k)) out.set(k, zero());
    add(out.get(k), r);
  }
  return out;
}

export async function usagePage(main) {
  const today = midnight(day(new Date()));
  const from = h('input', { type: 'date', id: 'usage-from', value: day(new Date(today.getTime() - 13 * DAY_MS)) });
  const to = h('input', { type: 'date', id: 'usage-to', value: day(today) });
  const group = h('select', { id: 'usage-group' }, Object.entries(GROUPS).map(([v, [, t]]) => h('option', { value: v }, t)));
  const out = h('div', { id: 'usage-out', 'aria-live': 'polite' });
  const form = h('form', { id: 'usage-range' }, field('From', from), field('To', to), field('Group by', group), h('button', { type: 'submit' }, 'Show'));
  const show = async () => {
    const a = midnight(from.value);
    const b = midnight(to.value);
    if (Number.isNaN(a.getTime()) || Number.isNaN(b.getTime()) || a > b) {
      fill(out, notice('error', 'Choose a start date on or before the end date.'));
      return;
    }
    if ((b - a) / DAY_MS >= MAX_DAYS) {
      fill(out, notice('error', `At most ${MAX_DAYS} days at a time.`));
      return;
    }
    fill(out, h('p', {}, 'Loading…'));
    // Every event counts towards a model: the per-model rows give the whole day's totals.
    const byModel = await dailyRows(a, b, 'model');
    const perDay = sumBy(byModel, (r) => r.date);
    const days = daysBetween(a, b).map((d) => ({ date: d, ...(perDay.get(d) || zero()) }));
    const groups = h('section', { 'aria-labelledby': 'usage-groups-h' });
    render(out, days, groups);
    await breakdown(groups, a, b, group.value, `${from.value}_${to.value}`, 0);
  };
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    show().catch((e) => fill(out, notice('error', e.message)));
  });
  fill(main, h('h1', {}, 'Usage'), form, out);
  await show();
}

/** The range's spend by group, largest first, `PAGE` groups from `offset`, with its pager and
 * its CSV button (every group of the range). */
async function breakdown(section, a, b, groupBy, range, offset) {
  const [fieldName, title] = GROUPS[groupBy];
  const page = await rangeGroups(a, b, groupBy, fieldName, offset, PAGE);
  const lines = page.results.map((r) => [r[fieldName] ?? '', (() => { const t = zero(); add(t, r); return t; })()]);
  const all = zero();
  add(all, page.totals);
  const heads = [title, 'Spend', 'Requests', 'Prompt tokens', 'Completion tokens'];
  const csv = async () => {
    const every = [];
    for (let at = 0, more = true; more; at += 1000) {
      const part = await rangeGroups(a, b, groupBy, fieldName, at, 1000);
      every.push(...part.results);
      more = part.has_more;
    }
    downloadCsv(`tollgate-usage-by-${groupBy}-${range}.csv`, [
      [groupBy, 'spend_usd', 'spend_nano_usd', 'requests', 'prompt_tokens', 'completion_tokens'],
      ...every.map((r) => [r[fieldName] ?? '', dollars(BigInt(r.spend_nano_usd)), r.spend_nano_usd, r.requests, r.prompt_tokens, r.completion_tokens]),
    ]);
  };
  const to = (at) => () => breakdown(section, a, b, groupBy, range, at).catch((e) => fill(section, notice('error', e.message)));
  const last = Math.min(offset + lines.length, page.total_groups);
  fill(section,
    h('h2', { id: 'usage-groups-h' }, `By ${title.toLowerCase()}`),
    h('p', {}, `${page.total_groups} in these days, `, h('strong', { id: 'usage-groups-total' }, usd(all.spend)), ' in all',
      groupBy === 'tag' ? ' (an event counts in each of its tags)' : '', '.'),
    h('button', { type: 'button', id: 'usage-csv', onclick: () => csv().catch((e) => fill(section, notice('error', e.message))), disabled: !lines.length }, 'Download CSV'),
    lines.length
      ? h('table', { id: 'usage-groups', 'data-group': groupBy }, h('caption', {}, `Spend by ${title.toLowerCase()}, ${offset + 1} to ${last} of ${page.total_groups}, largest first`),
        h('thead', {}, h('tr', {}, heads.map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, lines.map(([g, t]) => h('tr', {},
          h('th', { scope: 'row', class: 'group' }, g || '–'), h('td', { class: 'spend' }, usd(t.spend)),
          h('td', {}, String(t.requests)), h('td', {}, String(t.prompt)), h('td', {}, String(t.completion))))))
      : h('p', {}, `No spend by ${title.toLowerCase()} in these days.`),
    h('nav', { 'aria-label': 'Pages of groups', class: 'pager' },
      h('button', { type: 'button', id: 'usage-prev', onclick: to(Math.max(0, offset - PAGE)), disabled: offset === 0 }, 'Previous'),
      h('button', { type: 'button', id: 'usage-next', onclick: to(offset + PAGE), disabled: !page.has_more }, 'Next')));
}

function render(out, days, groups) {
  const total = days.reduce((s, d) => s + d.spend, 0n);
  const chart = h('figure', { id: 'usage-chart', 'aria-label': 'Daily spend in USD' });
  const rows = days.map((d) => h('tr', {}, h('th', { scope: 'row' }, d.date), h('td', {}, usd(d.spend)), h('td', {}, String(d.requests)), h('td', {}, String(d.prompt + d.completion))));
  fill(out,
    h('p', {}, 'Total: ', h('strong', { id: 'usage-total' }, usd(total))),
    chart,
    groups,
    h('table', { id: 'usage-table' }, h('caption', {}, 'Daily spend'),
      h('thead', {}, h('tr', {}, ['Day', 'Spend', 'Requests', 'Tokens'].map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, rows)));
  // uPlot draws floats; the amounts shown in text stay exact.
  const xs = days.map((d) => Date.parse(`${d.date}T00:00:00Z`) / 1000);
  const ys = days.map((d) => Number(d.spend) / 1e9);
  const width = Math.max(320, Math.min(960, out.clientWidth || 800));
  new uPlot({
    width,
    height: 280,
    series: [{}, { label: 'Spend (USD)', stroke: '#1f5fa8', fill: 'rgba(31,95,168,0.12)', width: 2 }],
    axes: [{}, { size: 100, values: (_, ticks) => ticks.map((t) => `$${Number(t.toPrecision(3))}`) }],
  }, [xs, ys], chart);
}
