// Models: every deployment (`/model/info`), its prices from the catalogue (integer nano-USD per
// token, shown per million tokens) and its health in this gateway's router (`/model/health`):
// state, cooldown left, calls and failures of the last two minutes, latency p50 and p99.
import * as api from '../api.js';
import { h, fill, usd } from '../dom.js';

const STATES = { healthy: 'healthy', failing: 'failing (errors this minute)', cooled_down: 'cooled down' };

/** A latency bucket's upper bound. */
const ms = (v) => (v == null ? '–' : v >= 1000 ? `≤ ${v / 1000} s` : `≤ ${v} ms`);

/** Nano-USD per token as USD per million tokens, exactly. */
const perMillion = (nanos) => (nanos == null ? '–' : usd(BigInt(nanos) * 1000000n));

export async function modelsPage(main) {
  const [info, health] = await Promise.all([api.get('/model/info'), api.get('/model/health')]);
  const healthOf = new Map(health.data.map((d) => [d.id, d]));
  const heads = ['Model', 'Deployment', 'Provider model', 'Input / 1M', 'Output / 1M', 'Cached input / 1M', 'rpm', 'tpm', 'State', 'Calls (2 min)', 'Errors', 'p50', 'p99'];
  const rows = info.data.map((d) => {
    const m = d.model_info || {};
    const hl = healthOf.get(m.id) || {};
    const state = hl.state || 'unknown';
    const cooling = hl.cooldown_remaining_ms ? ` (${Math.ceil(hl.cooldown_remaining_ms / 1000)} s left)` : '';
    return h('tr', { 'data-deployment': m.id },
      h('th', { scope: 'row', class: 'model' }, d.model_name),
      h('td', {}, m.id ?? '–'),
      h('td', {}, d.litellm_params?.model ?? '–'),
      h('td', {}, perMillion(m.input_nano_usd_per_token)),
      h('td', {}, perMillion(m.output_nano_usd_per_token)),
      h('td', {}, perMillion(m.cached_input_nano_usd_per_token)),
      h('td', {}, d.litellm_params?.rpm ?? '–'),
      h('td', {}, d.litellm_params?.tpm ?? '–'),
      h('td', { class: `state ${state}` }, (STATES[state] || state) + cooling),
      h('td', { class: 'calls' }, hl.calls == null ? '–' : String(hl.calls)),
      h('td', { class: 'errors' }, hl.calls ? `${hl.failures} (${((hl.failures / hl.calls) * 100).toFixed(1)} %)` : '–'),
      h('td', {}, ms(hl.latency_p50_ms)),
      h('td', {}, ms(hl.latency_p99_ms)));
  });
  fill(main,
    h('h1', {}, 'Models'),
    h('p', { class: 'hint' }, `Deployments and their health in gateway ${health.gateway_id}'s router (calls ended in this minute and the last; latency of the successful ones, as the upper bound of its bucket); prices from the catalogue.`),
    rows.length
      ? h('table', { id: 'models' }, h('caption', {}, `Deployments (${rows.length})`),
        h('thead', {}, h('tr', {}, heads.map((t) => h('th', { scope: 'col' }, t)))), h('tbody', {}, rows))
      : h('p', {}, 'No model is configured.'));
}
