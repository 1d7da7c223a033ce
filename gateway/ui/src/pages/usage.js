// Usage: daily spend over a date range, from the aggregate read model (`/spend/daily`, at most
// 31 days a call: a longer range is read in 31-day slices), drawn with uPlot.
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import * as api from '../api.js';
import { h, fill, field, notice, usd, day } from '../dom.js';

const DAY_MS = 86400000;
const MAX_DAYS = 366;

async function daily(from, to) {
  const byDay = new Map();
  for (let start = from; start <= to; start = new Date(start.getTime() + 31 * DAY_MS)) {
    const end = new Date(Math.min(to.getTime(), start.getTime() + 30 * DAY_MS));
    const data = await api.get('/spend/daily', { start_date: day(start), end_date: day(end) });
    for (const r of data.results) {
      const d = byDay.get(r.date) || { spend: 0n, requests: 0, tokens: 0 };
      d.spend += BigInt(r.spend_nano_usd);
      d.requests += r.requests;
      d.tokens += r.prompt_tokens + r.completion_tokens;
      byDay.set(r.date, d);
    }
  }
  const days = [];
  for (let t = from.getTime(); t <= to.getTime(); t += DAY_MS) {
    const d = day(new Date(t));
    days.push({ date: d, ...(byDay.get(d) || { spend: 0n, requests: 0, tokens: 0 }) });
  }
  return days;
}

export async function usagePage(main) {
  const today = new Date(`${day(new Date())}T00:00:00Z`);
  const from = h('input', { type: 'date', id: 'usage-from', value: day(new Date(today.getTime() - 13 * DAY_MS)) });
  const to = h('input', { type: 'date', id: 'usage-to', value: day(today) });
  const out = h('div', { id: 'usage-out', 'aria-live': 'polite' });
  const form = h('form', { id: 'usage-range' }, field('From', from), field('To', to), h('button', { type: 'submit' }, 'Show'));
  const show = async () => {
    const a = new Date(`${from.value}T00:00:00Z`);
    const b = new Date(`${to.value}T00:00:00Z`);
    if (Number.isNaN(a.getTime()) || Number.isNaN(b.getTime()) || a > b) {
      fill(out, notice('error', 'Choose a start date on or before the end date.'));
      return;
    }
    if ((b - a) / DAY_MS >= MAX_DAYS) {
      fill(out, notice('error', `At most ${MAX_DAYS} days at a time.`));
      return;
    }
    fill(out, h('p', {}, 'Loading…'));
    render(out, await daily(a, b));
  };
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    show().catch((e) => fill(out, notice('error', e.message)));
  });
  fill(main, h('h1', {}, 'Usage'), form, out);
  await show();
}

function render(out, days) {
  const total = days.reduce((s, d) => s + d.spend, 0n);
  const chart = h('figure', { id: 'usage-chart', 'aria-label': 'Daily spend in USD' });
  const rows = days.map((d) => h('tr', {}, h('th', { scope: 'row' }, d.date), h('td', {}, usd(d.spend)), h('td', {}, String(d.requests)), h('td', {}, String(d.tokens))));
  fill(out,
    h('p', {}, 'Total: ', h('strong', { id: 'usage-total' }, usd(total))),
    chart,
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
