// One request of the spend logs in detail: its cost by token type (exact nano-USD), tokens,
// latency, the model asked for and the deployment that served it, and the chain of upstream
// attempts of a request retried or moved to a fallback. Never its prompt or answer (the ledger
// does not hold them).
import { h, usd } from '../dom.js';

function costTable(e) {
  const parts = e.cost_by_token_type || [];
  if (!parts.length) return h('p', {}, e.unpriced ? 'Not priced: no price was known for this model.' : `Not split by token type: ${usd(e.spend_nano_usd)} in all.`);
  return h('table', { class: 'cost-breakdown' }, h('caption', {}, 'Cost by token type'),
    h('thead', {}, h('tr', {}, ['Token type', 'Tokens', 'Cost'].map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, parts.map((p) => h('tr', {}, h('th', { scope: 'row' }, p.token_type), h('td', {}, String(p.tokens)), h('td', {}, usd(p.cost_nano_usd))))),
    h('tfoot', {}, h('tr', {}, h('th', { scope: 'row' }, 'Total'), h('td', {}, ''), h('td', { class: 'cost-total' }, usd(e.spend_nano_usd)))));
}

const KINDS = { first: 'first', retry: 'retry', fallback: 'fallback to another model group' };
const OUTCOMES = { ok: 'ok', error_status: 'error', timeout: 'timed out', connect: 'no connection', cancelled: 'cancelled (client gone)' };

/** The upstream attempts of a request retried or moved to a fallback, in order; none for one call. */
function attemptsTable(e) {
  const attempts = e.attempts || [];
  if (!attempts.length) return null;
  const omitted = e.attempts_omitted || 0;
  const outcome = (a) => [OUTCOMES[a.outcome] || a.outcome, a.status == null ? '' : ` ${a.status}`].join('');
  return h('table', { class: 'attempts' }, h('caption', {}, `Attempts (${attempts.length + omitted})`),
    h('thead', {}, h('tr', {}, ['#', 'Model group', 'Deployment', 'Provider', 'How', 'Outcome', 'Latency'].map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, attempts.map((a, i) => h('tr', { class: `attempt ${a.outcome}` },
      h('th', { scope: 'row' }, String(i + 1)), h('td', {}, a.model_group), h('td', {}, a.deployment), h('td', {}, a.provider),
      h('td', {}, KINDS[a.kind] || a.kind), h('td', {}, outcome(a)), h('td', {}, `${a.latency_ms} ms`)))),
    omitted ? h('tfoot', {}, h('tr', {}, h('td', { colspan: 7 }, `and ${omitted} more attempts, not listed`))) : null);
}

/** The detail of log entry `e`, as the content of a table cell spanning `span` columns. */
export function requestDetail(e, span) {
  const route = e.served_model && e.served_model !== e.model
    ? `${e.model} → ${e.served_model} (a fallback or alias served it)`
    : e.model;
  const facts = [
    ['Request id', e.request_id],
    ['Event id', e.event_id],
    ['Model asked → served', route],
    ['Provider', e.provider],
    ['Deployment', e.deployment],
    ['Status', e.error_type ? `${e.status} ${e.error_type}` : e.status],
    ['Tokens', `${e.prompt_tokens} prompt (${e.cached_tokens} cached, ${e.cache_write_tokens ?? 0} cache write) + ${e.completion_tokens} completion (${e.reasoning_tokens ?? 0} reasoning)`],
    ['Latency', `${Date.parse(e.endTime) - Date.parse(e.startTime)} ms`],
    ['Streamed', e.stream ? (e.partial ? 'yes, cut short' : 'yes') : 'no'],
    ['Estimated', e.estimated ? 'yes: the provider reported no usage; tokens were counted by the gateway' : 'no'],
    ['Response cache', e.cache_hit ? 'hit' : 'miss'],
    ['Client', e.client_disconnected ? `disconnected (${e.client_disconnected})` : 'stayed'],
    ['Trace', e.trace_id],
    ['Gateway', e.gateway_id],
    ['Customer', e.end_user],
    ['User', e.user],
  ].filter(([, v]) => v !== undefined && v !== null && v !== '');
  return h('td', { colspan: span },
    h('dl', { class: 'facts' }, facts.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, String(v))])),
    attemptsTable(e),
    costTable(e));
}
