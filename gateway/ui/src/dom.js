// Building the page: every piece of data becomes a text node (textContent), never markup.
// Nothing in the console sets innerHTML.

/** An element: `attrs` are attributes (`on*` functions become listeners), `children` are nodes
 * or strings (strings become text). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      el.addEventListener(name.slice(2), value);
    } else if (value === true) {
      el.setAttribute(name, '');
    } else {
      el.setAttribute(name, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces everything inside `el` with `children`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A message for screen readers and eyes alike: `kind` is `error` or `info`. */
export function notice(kind, text) {
  return h('p', { class: `notice ${kind}`, role: kind === 'error' ? 'alert' : 'status' }, text);
}

/** A labelled form field. */
export function field(label, input, hint) {
  const id = input.id || `f-${Math.random().toString(36).slice(2)}`;
  input.id = id;
  return h('div', { class: 'field' }, h('label', { for: id }, label), input, hint ? h('small', {}, hint) : null);
}

function parts(nanos) {
  const n = BigInt(nanos ?? 0);
  const abs = n < 0n ? -n : n;
  let frac = (abs % 1000000000n).toString().padStart(9, '0').replace(/0+$/, '');
  if (frac.length < 2) frac = frac.padEnd(2, '0');
  return { sign: n < 0n ? '-' : '', whole: abs / 1000000000n, frac };
}

/** Nano-USD (an integer, or a string of one) as dollars, exactly: `$0.000123`. */
export function usd(nanos) {
  const { sign, whole, frac } = parts(nanos);
  return `${sign}$${whole.toLocaleString('en-US')}.${frac}`;
}

/** Nano-USD as a plain decimal the API takes back as dollars, exactly: `1234.50`. */
export function dollars(nanos) {
  const { sign, whole, frac } = parts(nanos);
  return `${sign}${whole}.${frac}`;
}

/** A UTC day as YYYY-MM-DD. */
export function day(date) {
  return date.toISOString().slice(0, 10);
}
