// The Keys page's forms: create a key, edit one, rotate one; and the new secret, shown once.
import { h, fill, field, dollars } from '../dom.js';

const input = (id, type = 'text', extra = {}) => h('input', { id, name: id, type, ...extra });
const text = (el) => el.value.trim();
const list = (el) => text(el).split(',').map((m) => m.trim()).filter(Boolean);

/** Runs `submit(body)` on the form's submission; a refusal is reported, success resets it. */
function onSubmit(form, body, submit, report, clear) {
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clear();
    try {
      await submit(body());
      form.reset();
    } catch (e) {
      report(e);
    }
  });
  return form;
}

export function createForm(create, report, clear) {
  const alias = input('new-alias');
  const team = input('new-team');
  const models = input('new-models');
  const budget = input('new-budget', 'text', { inputmode: 'decimal' });
  const window = input('new-window');
  const rpm = input('new-rpm', 'number', { min: 1 });
  const tpm = input('new-tpm', 'number', { min: 1 });
  const expiry = input('new-expiry');
  const form = h('form', { id: 'create-key', 'aria-labelledby': 'create-h' },
    h('h2', { id: 'create-h' }, 'Create a key'),
    field('Alias', alias), field('Team id', team), field('Models', models, 'Comma-separated; empty for all'),
    field('Budget (USD)', budget), field('Budget window', window, 'e.g. 30d, 1mo'),
    field('Requests per minute', rpm), field('Tokens per minute', tpm), field('Expires after', expiry, 'e.g. 90d'),
    h('button', { type: 'submit' }, 'Create key'));
  const body = () => {
    const b = {};
    if (text(alias)) b.key_alias = text(alias);
    if (text(team)) b.team_id = text(team);
    if (text(models)) b.models = list(models);
    if (text(budget)) b.max_budget = text(budget);
    if (text(window)) b.budget_duration = text(window);
    if (text(rpm)) b.rpm_limit = Number(text(rpm));
    if (text(tpm)) b.tpm_limit = Number(text(tpm));
    if (text(expiry)) b.duration = text(expiry);
    return b;
  };
  return onSubmit(form, body, create, report, clear);
}

/** The metadata field's JSON object, or an error naming the field. */
function metadataOf(el) {
  if (!text(el)) return {};
  let v;
  try {
    v = JSON.parse(text(el));
  } catch {
    throw new Error('Metadata must be a JSON object.');
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error('Metadata must be a JSON object.');
  return v;
}

/** Edits `k` through /key/update: every field is sent; an empty one clears the setting. */
export function editForm(k, save, report, clear, cancel) {
  const models = input('edit-models', 'text', { value: (k.models || []).join(', ') });
  const budget = input('edit-budget', 'text', { inputmode: 'decimal', value: k.max_budget_nano_usd == null ? '' : dollars(k.max_budget_nano_usd) });
  const window = input('edit-window', 'text', { value: k.budget_duration || '' });
  const rpm = input('edit-rpm', 'number', { min: 1, value: k.rpm_limit ?? '' });
  const tpm = input('edit-tpm', 'number', { min: 1, value: k.tpm_limit ?? '' });
  const expires = input('edit-expires', 'text', { value: k.expires || '' });
  const metadata = h('textarea', { id: 'edit-metadata', name: 'edit-metadata', rows: 3, cols: 40 });
  metadata.value = Object.keys(k.metadata || {}).length ? JSON.stringify(k.metadata) : '';
  const number = (el) => (text(el) ? Number(text(el)) : null);
  const body = () => ({
    key: k.key_id,
    models: list(models),
    max_budget: text(budget) || null,
    budget_duration: text(window) || null,
    rpm_limit: number(rpm),
    tpm_limit: number(tpm),
    expires: text(expires) || null,
    metadata: metadataOf(metadata),
  });
  const form = h('form', { id: 'edit-key', class: 'card', 'aria-labelledby': 'edit-h' },
    h('h2', { id: 'edit-h' }, `Edit key ${k.key_alias || k.key_name}`),
    field('Models', models, 'Comma-separated; empty for all'), field('Budget (USD)', budget, 'Empty for none'),
    field('Budget window', window, 'e.g. 30d, 1mo'), field('Requests per minute', rpm), field('Tokens per minute', tpm),
    field('Expires at', expires, 'RFC 3339, e.g. 2027-01-31T00:00:00Z; empty for never'),
    field('Metadata', metadata, 'A JSON object'),
    h('button', { type: 'submit' }, 'Save'), h('button', { type: 'button', onclick: cancel }, 'Cancel'));
  return onSubmit(form, body, save, report, clear);
}

/** Rotates `k` through /key/{key}/regenerate; the old key answers until the grace period ends. */
export function rotateForm(k, rotate, report, clear, cancel) {
  const grace = input('rotate-grace', 'text', { value: '24h' });
  const form = h('form', { id: 'rotate-key', class: 'card', 'aria-labelledby': 'rotate-h' },
    h('h2', { id: 'rotate-h' }, `Rotate key ${k.key_alias || k.key_name}`),
    field('Grace period', grace, 'The old key keeps working this long, e.g. 24h; empty ends it now'),
    h('button', { type: 'submit', id: 'confirm-rotate' }, 'Rotate'), h('button', { type: 'button', onclick: cancel }, 'Cancel'));
  const body = () => (text(grace) ? { grace_period: text(grace) } : {});
  return onSubmit(form, body, rotate, report, clear);
}

/** The new key, shown this once, with a copy button; it is dropped when the page changes. */
export function showSecret(box, k) {
  const secret = h('code', { id: 'new-secret' }, k.key);
  const copied = h('span', { 'aria-live': 'polite' });
  const copy = h('button', { type: 'button', id: 'copy-secret', onclick: async () => {
    try {
      await navigator.clipboard.writeText(k.key);
      fill(copied, ' Copied.');
    } catch {
      fill(copied, ' Select the key and copy it.');
    }
  } }, 'Copy');
  fill(box, h('section', { class: 'card secret', 'aria-labelledby': 'secret-h' },
    h('h2', { id: 'secret-h' }, `New key ${k.key_alias || ''}`.trim()),
    h('p', {}, 'This is the only time the key is shown. Store it now.'),
    h('p', {}, secret, ' ', copy, copied)));
}
