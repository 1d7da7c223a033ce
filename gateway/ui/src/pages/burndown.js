// A budget's burn-down: spend per day of the current budget window (the daily aggregates,
// `/spend/daily`), cumulative, against `max_budget`, drawn with uPlot. Daily rows count whole
// UTC days, so a window that starts within a day (`budget_duration` in seconds or hours) counts
// that day's earlier spend too.
import uPlot from 'uplot';
import { h, usd, day } from '../dom.js';
import { dailyRows, daysBetween, midnight, DAY_MS } from '../daily.js';

const MAX_DAYS = 366;

/** The first UTC day of a budget window id (`d:`, `m:`, `p<n>s:`, `p<n>mo:`); null for `all`. */
export function windowStart(id) {
  let m;
  if ((m = /^d:(\d{4}-\d{2}-\d{2})$/.exec(id))) return midnight(m[1]);
  if ((m = /^m:(\d{4}-\d{2})$/.exec(id))) return midnight(`${m[1]}-01`);
  if ((m = /^p(\d+)s:(\d+)$/.exec(id))) return midnight(day(new Date(Number(m[1]) * Number(m[2]) * 1000)));
  if ((m = /^p(\d+)mo:(\d+)$/.exec(id))) {
    const months = Number(m[1]) * Number(m[2]);
    return new Date(Date.UTC(1970 + Math.floor(months / 12), months % 12, 1));
  }
  return null;
}

/** The burn-down of `record` (with `budget_window`, `max_budget_nano_usd`) of the rows of
 * `/spend/daily?group_by=groupBy` whose `field` is `id`. */
export async function burnDown(record, groupBy, field, id) {
  const today = midnight(day(new Date()));
  const start = windowStart(record.budget_window || '') || new Date(today.getTime() - 29 * DAY_MS);
  const from = new Date(Math.max(start.getTime(), today.getTime() - (MAX_DAYS - 1) * DAY_MS));
  const rows = (await dailyRows(from, today, groupBy, { [field]: id })).filter((r) => r[field] === id);
  const perDay = new Map();
  for (const r of rows) perDay.set(r.date, (perDay.get(r.date) || 0n) + BigInt(r.spend_nano_usd));
  let sum = 0n;
  const days = daysBetween(from, today).map((d) => {
    sum += perDay.get(d) || 0n;
    return { date: d, cumulative: sum };
  });
  const max = record.max_budget_nano_usd == null ? null : BigInt(record.max_budget_nano_usd);
  const summary = max == null
    ? `${usd(sum)} spent since ${day(from)}; no budget.`
    : `${usd(sum)} of ${usd(max)} spent since ${day(from)}${max > 0n ? ` (${(Number((sum * 10000n) / max) / 100).toFixed(2)} %)` : ''}.`;
  const chart = h('figure', { id: 'burn-down', 'aria-label': `Cumulative spend in this budget window against the budget. ${summary}` });
  const section = h('section', { 'aria-labelledby': 'burn-down-h' },
    h('h2', { id: 'burn-down-h' }, record.budget_window && record.budget_window !== 'all' ? 'Budget window burn-down' : 'Spend, last 30 days'),
    h('p', { id: 'burn-down-summary' }, summary), chart);
  return { section, draw: () => draw(chart, days, max) };
}

function draw(chart, days, max) {
  const xs = days.map((d) => Date.parse(`${d.date}T00:00:00Z`) / 1000);
  const series = [{}, { label: 'Spent (USD)', stroke: '#1f5fa8', fill: 'rgba(31,95,168,0.12)', width: 2 }];
  const data = [xs, days.map((d) => Number(d.cumulative) / 1e9)];
  if (max != null) {
    series.push({ label: 'Budget (USD)', stroke: '#a3201b', dash: [6, 4], width: 2 });
    data.push(days.map(() => Number(max) / 1e9));
  }
  new uPlot({
    width: Math.max(320, Math.min(960, chart.parentElement?.clientWidth || 800)),
    height: 260,
    series,
    axes: [{}, { size: 100, values: (_, ticks) => ticks.map((t) => `$${Number(t.toPrecision(3))}`) }],
  }, data, chart);
}
