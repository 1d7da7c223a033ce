// Daily rows of the aggregate read model (`/spend/daily`), read in 31-day slices (the API's
// bound per call).
import * as api from './api.js';
import { day } from './dom.js';

export const DAY_MS = 86400000;

/** Every row of `/spend/daily` for the UTC days `from..=to` (Dates at midnight UTC), of every
 * group of `groupBy`, or with `only` (e.g. `{ team_id: 'pay' }`) of that one group. */
export async function dailyRows(from, to, groupBy, only = {}) {
  const rows = [];
  for (let start = from; start <= to; start = new Date(start.getTime() + 31 * DAY_MS)) {
    const end = new Date(Math.min(to.getTime(), start.getTime() + 30 * DAY_MS));
    const data = await api.get('/spend/daily', { start_date: day(start), end_date: day(end), group_by: groupBy, ...only });
    rows.push(...data.results);
  }
  return rows;
}

/** The spend of every group of `groupBy` over the UTC days `from..=to`, largest first: `limit`
 * groups from `offset` (each named by its field `name`, e.g. `team_id`), with `totals` and `total_groups` of all of them (`/spend/daily?sum=range`).
 * The server sums at most 31 days a call: a longer range is summed here from every group of each
 * 31-day slice (paged through), exactly (BigInt nano-USD), then sorted and paged the same way. */
export async function rangeGroups(from, to, groupBy, name, offset, limit) {
  const slices = [];
  for (let start = from; start <= to; start = new Date(start.getTime() + 31 * DAY_MS)) {
    slices.push([start, new Date(Math.min(to.getTime(), start.getTime() + 30 * DAY_MS))]);
  }
  const ask = (a, b, at, n) => api.get('/spend/daily', { start_date: day(a), end_date: day(b), group_by: groupBy, sum: 'range', offset: at, limit: n });
  if (slices.length === 1) return ask(from, to, offset, limit);
  const sums = new Map();
  const total = { spend_nano_usd: 0n, requests: 0, prompt_tokens: 0, completion_tokens: 0 };
  const put = (into, r) => {
    into.spend_nano_usd += BigInt(r.spend_nano_usd);
    into.requests += r.requests;
    into.prompt_tokens += r.prompt_tokens;
    into.completion_tokens += r.completion_tokens;
  };
  for (const [a, b] of slices) {
    for (let at = 0, more = true; more; at += 1000) {
      const part = await ask(a, b, at, 1000);
      for (const r of part.results) {
        const id = r[name];
        if (!sums.has(id)) sums.set(id, { [name]: id, spend_nano_usd: 0n, requests: 0, prompt_tokens: 0, completion_tokens: 0 });
        put(sums.get(id), r);
        put(total, r);
      }
      more = part.has_more;
    }
  }
  const all = [...sums.values()].sort((x, y) => (x.spend_nano_usd === y.spend_nano_usd ? (x[name] < y[name] ? -1 : x[name] > y[name] ? 1 : 0) : x.spend_nano_usd > y.spend_nano_usd ? -1 : 1));
  const results = all.slice(offset, offset + limit);
  return { results, totals: total, total_groups: all.length, offset, limit, has_more: offset + results.length < all.length };
}

/** The UTC days `from..=to` as YYYY-MM-DD. */
export function daysBetween(from, to) {
  const days = [];
  for (let t = from.getTime(); t <= to.getTime(); t += DAY_MS) days.push(day(new Date(t)));
  return days;
}

/** Midnight UTC of a YYYY-MM-DD day. */
export const midnight = (d) => new Date(`${d}T00:00:00Z`);
