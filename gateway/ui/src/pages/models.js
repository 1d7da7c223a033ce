// Models: every deployment (`/model/info`), its prices from the catalogue (integer nano-USD per
// token, shown per million tokens) and its state in this gateway's router (`/model/health`).
import * as api from '../api.js';
import { h, fill, usd } from '../dom.js';

const STATES = { healthy: 'healthy', failing: 'failing (errors this minute)', cooled_down: 'cooled down' };

/** Nano-USD per token as USD per million tokens, exactly. */
const perMillion = (nanos) => (nanos == null ? '–' : usd(BigInt(nanos) * 1000000n));

export async function modelsPage(main) {
  const [info, health] = await Promise.all([api.get('/model/info'), api.get('/model/health')]);
  const states = new Map(health.data.map((d) => [d.id, d.state]));
  const heads = ['Model', 'Deployment', 'Provider model', 'Input / 1M', 'Output / 1M', 'Cached input / 1M', 'rpm', 'tpm', 'State'];
  const rows = info.data.map((d) => {
    const m = d.model_info || {};
    const state = states.get(m.id) || 'unknown';
    return h('tr', { 'data-deployment': m.id },
      h('th', { scope: 'row', class: 'model' }, d.model_name),
      h('td', {}, m.id ?? '–'),
      h('td', {}, d.litellm_params?.model ?? '–'),
      h('td', {}, perMillion(m.input_nano_usd_per_token)),
      h('td', {}, perMillion(m.output_nano_usd_per_token)),
      h('td', {}, perMillion(m.cached_input_nano_usd_per_token)),
      h('td', {}, d.litellm_params?.rpm ?? '–'),
      h('td', {}, d.litellm_params?.tpm ?? '–'),
      h('td', { class: `state ${state}` }, STATES[state] || state));
  });
  fill(main,
    h('h1', {}, 'Models'),
    h('p', { class: 'hint' }, `Deployments and their state in gateway ${health.gateway_id}'s router; prices from the catalogue.`),
    rows.length
      ? h('table', { id: 'models' }, h('caption', {}, `Deployments (${rows.length})`),
        h('thead', {}, h('tr', {}, heads.map((t) => h('th', { scope: 'col' }, t)))), h('tbody', {}, rows))
      : h('p', {}, 'No model is configured.'));
}
