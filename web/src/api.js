// The control API as the page uses it: JSON over fetch, the viewer's
// session in localStorage, an Idempotency-Key on every write.

const SESSION_KEY = 'westream.session';

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || code || `HTTP ${status}`);
    this.status = status;
    this.code = code;
  }
}

export function session() {
  try {
    return JSON.parse(localStorage.getItem(SESSION_KEY)) || null;
  } catch {
    return null;
  }
}

export function saveSession(s) {
  if (s) localStorage.setItem(SESSION_KEY, JSON.stringify(s));
  else localStorage.removeItem(SESSION_KEY);
}

/** A random key; crypto.randomUUID needs a secure context, this does not. */
export function randomKey() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

async function request(method, path, body, { token, idempotencyKey } = {}) {
  const headers = {};
  const auth = token === undefined ? session()?.token : token;
  if (auth) headers.authorization = `Bearer ${auth}`;
  if (method !== 'GET') {
    headers['idempotency-key'] = idempotencyKey || randomKey();
    headers['content-type'] = 'application/json';
  }
  const resp = await fetch(path, {
    method,
    headers,
    body: method === 'GET' ? undefined : JSON.stringify(body ?? {}),
  });
  const text = await resp.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { message: text };
  }
  if (!resp.ok) throw new ApiError(resp.status, data?.error, data?.message || text);
  return data;
}

export const get = (path, opts) => request('GET', path, undefined, opts);
export const post = (path, body, opts) => request('POST', path, body, opts);

/** micro-WE as a short WE amount: 1500000 -> "1.5". */
export function we(micro) {
  if (micro === null || micro === undefined) return '–';
  const n = Number(micro) / 1e6;
  return n.toLocaleString('en-US', { maximumFractionDigits: 6 });
}

/**
 * The viewer's account. Without one the page signs up a guest and, on a dev
 * server (faucet on), funds it so gifts and tickets work at once.
 */
export async function ensureViewer() {
  const s = session();
  if (s?.token) return s;
  const handle = `viewer-${randomKey().slice(0, 8)}`;
  const created = await post('/v1/accounts', { handle }, { token: null });
  const fresh = { token: created.token, handle: created.account.handle, account: created.account.id };
  saveSession(fresh);
  try {
    await post('/v1/wallet/faucet', { amount_micro_we: 100_000_000 });
  } catch (e) {
    if (e.code !== 'faucet_disabled') console.warn('faucet', e);
  }
  return fresh;
}

/** Switches to an existing account by its API token (e.g. a streamer's). */
export async function signInWithToken(token) {
  const me = await get('/v1/accounts/me', { token });
  const s = { token, handle: me.handle, account: me.id };
  saveSession(s);
  return s;
}

export async function balance() {
  const w = await get('/v1/wallet');
  return w.balance_micro_we;
}
