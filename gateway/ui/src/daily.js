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

/** The UTC days `from..=to` as YYYY-MM-DD. */
export function daysBetween(from, to) {
  const days = [];
  for (let t = from.getTime(); t <= to.getTime(); t += DAY_MS) days.push(day(new Date(t)));
  return days;
}

/** Midnight UTC of a YYYY-MM-DD day. */
export const midnight = (d) => new Date(`${d}T00:00:00Z`);
