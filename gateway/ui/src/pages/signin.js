// Sign-in: the key goes to the gateway once, in the body of a POST, and is not kept here.
import * as api from '../api.js';
import { h, fill, field, notice } from '../dom.js';

export function signInPage(main, done) {
  const key = h('input', { type: 'password', name: 'key', id: 'key', autocomplete: 'off', required: true });
  const status = h('div', { 'aria-live': 'polite' });
  const form = h(
    'form',
    { id: 'sign-in' },
    field('Your key (master key, admin key or your own key)', key),
    h('button', { type: 'submit' }, 'Sign in'),
    status,
  );
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    fill(status);
    try {
      const session = await api.signIn(key.value);
      key.value = '';
      await done(session);
    } catch (e) {
      fill(status, notice('error', e.message));
    }
  });
  fill(main, h('h1', {}, 'Sign in'), form);
  key.focus();
}
