// Calls to the gateway's admin and spend APIs with the session cookie (HttpOnly: this code never
// sees it) and, on every change, the session's CSRF token. No key is ever kept in the browser.

let csrf = null;

export class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function call(method, path, body) {
  const headers = { accept: 'application/json' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (method !== 'GET' && csrf) headers['x-csrf-token'] = csrf;
  const resp = await fetch(path, {
    method,
    headers,
    credentials: 'same-origin',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const e = data.error || {};
    throw new ApiError(resp.status, e.message || `${resp.status} ${resp.statusText}`, e.code);
  }
  return data;
}

export const get = (path, query = {}) => {
  const q = new URLSearchParams(Object.entries(query).filter(([, v]) => v !== '' && v != null));
  const qs = q.toString();
  return call('GET', qs ? `${path}?${qs}` : path);
};
export const post = (path, body = {}) => call('POST', path, body);

/** The current session ({role, csrf_token, expires_at}), or null when signed out. */
export async function session() {
  const s = await get('/ui/api/session');
  if (!s.role) return null;
  csrf = s.csrf_token;
  return s;
}

export async function signIn(key) {
  const s = await post('/ui/api/sign-in', { key });
  csrf = s.csrf_token;
  return s;
}

export async function signOut() {
  await post('/ui/api/sign-out');
  csrf = null;
}
