// Browser end-to-end checks of the WeStream page in headless Chromium
// (Debian's `chromium`, driven by playwright-core; no downloaded browser).
//
// Run by media-server/tests/browser.rs, which starts the server and a
// publisher; by hand:
//   WESTREAM_BASE=http://127.0.0.1:8080 E2E_CHECKS=play_hls,play_flv node web/tests/e2e.mjs
//
// Environment:
//   WESTREAM_BASE        the server (required)
//   E2E_CHANNEL          a live channel (default demo)
//   E2E_CHECKS           comma list of: play_hls, play_flv, chat, gift, ticket (default play_hls,play_flv)
//   E2E_STREAMER_TOKEN   API token of E2E_CHANNEL's owner (gift: the streamer's balance)
//   E2E_FEE_BPS          platform fee in basis points (gift: exact split), default 1000
//   E2E_TICKET_CHANNEL   a live ticketed channel (ticket)
//   E2E_SCREENSHOT       where to save the watch page's screenshot (PNG)
//   E2E_CHROMIUM         the browser (default /usr/bin/chromium)
//   E2E_PLAY_SECONDS     how far currentTime must advance (default 4)
//
// Prints one JSON line last: {"ok", "checks": {name: {ok, ...}}, "screenshot", "errors"}.

import { chromium } from 'playwright-core';

const base = (process.env.WESTREAM_BASE || '').replace(/\/$/, '');
const channel = process.env.E2E_CHANNEL || 'demo';
const checks = (process.env.E2E_CHECKS || 'play_hls,play_flv').split(',').map((s) => s.trim()).filter(Boolean);
const streamerToken = process.env.E2E_STREAMER_TOKEN || '';
const feeBps = Number(process.env.E2E_FEE_BPS || 1000);
const ticketChannel = process.env.E2E_TICKET_CHANNEL || '';
const screenshot = process.env.E2E_SCREENSHOT || '';
const executablePath = process.env.E2E_CHROMIUM || '/usr/bin/chromium';
const playSeconds = Number(process.env.E2E_PLAY_SECONDS || 4);

const result = { ok: false, checks: {}, screenshot: null, errors: [] };
function finish(code) {
  result.ok = checks.length > 0 && checks.every((c) => result.checks[c]?.ok === true);
  console.log(JSON.stringify(result));
  process.exit(code ?? (result.ok ? 0 : 1));
}
if (!base) {
  result.errors.push('WESTREAM_BASE is not set');
  finish(2);
}
// Every wait below is bounded; this bounds the whole run.
setTimeout(() => {
  result.errors.push('e2e: overall timeout (240 s)');
  finish(1);
}, 240_000).unref();

async function api(method, path, token, body) {
  const headers = { 'content-type': 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  if (method !== 'GET') headers['idempotency-key'] = `e2e-${Date.now()}-${Math.random()}`;
  const resp = await fetch(`${base}${path}`, { method, headers, body: method === 'GET' ? undefined : JSON.stringify(body || {}) });
  const text = await resp.text();
  let data = null;
  try {
    data = JSON.parse(text);
  } catch {
    data = text;
  }
  if (!resp.ok) throw new Error(`${method} ${path}: ${resp.status} ${text}`);
  return data;
}
const walletOf = async (token) => (await api('GET', '/v1/wallet', token)).balance_micro_we;

/** A fresh browser context (own storage: its own guest viewer) on a watch page. */
async function openWatch(browser, ch, mode) {
  const context = await browser.newContext({ viewport: { width: 1360, height: 860 } });
  const page = await context.newPage();
  const media = [];
  page.on('request', (r) => {
    const u = r.url();
    if (u.includes('/live/')) media.push(u.replace(base, ''));
  });
  page.on('pageerror', (e) => result.errors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') result.errors.push(`console: ${m.text()}`);
  });
  await page.goto(`${base}/#/watch/${encodeURIComponent(ch)}?mode=${mode}`);
  // The guest viewer is signed up (and funded on a dev server) on load.
  await page.waitForFunction(() => !!document.getElementById('wallet-balance'), null, { timeout: 20_000 });
  const session = await page.evaluate(() => JSON.parse(localStorage.getItem('westream.session')));
  return { context, page, media, session };
}

/** Waits until the page's video has played `seconds` of media without error. */
async function assertPlays(page, seconds) {
  await page.waitForFunction(() => {
    const v = document.getElementById('video');
    return v && v.currentTime > 0.1 && !v.paused;
  }, null, { timeout: 30_000 });
  const t0 = await page.evaluate(() => document.getElementById('video').currentTime);
  const started = Date.now();
  await page.waitForFunction(
    ([from, s]) => document.getElementById('video').currentTime >= from + s,
    [t0, seconds],
    { timeout: (seconds + 20) * 1000 },
  );
  const v = await page.evaluate(() => {
    const el = document.getElementById('video');
    return {
      currentTime: el.currentTime,
      error: el.error ? `${el.error.code} ${el.error.message}` : null,
      width: el.videoWidth,
      height: el.videoHeight,
      status: document.getElementById('player-status')?.textContent,
    };
  });
  return { ...v, from: t0, advanced: v.currentTime - t0, wall_ms: Date.now() - started };
}

async function check(name, fn) {
  if (!checks.includes(name)) return;
  try {
    result.checks[name] = { ok: true, ...(await fn()) };
  } catch (e) {
    result.checks[name] = { ok: false, error: String(e.stack || e) };
  }
}

let browser;
try {
  browser = await chromium.launch({
    executablePath,
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--autoplay-policy=no-user-gesture-required',
    ],
  });
} catch (e) {
  result.errors.push(`cannot launch ${executablePath}: ${e.message}`);
  finish(3);
}

let a; // viewer A, kept for chat, gifts and the screenshot
try {
  for (const mode of ['hls', 'flv']) {
    await check(`play_${mode}`, async () => {
      const w = await openWatch(browser, channel, mode);
      try {
        const played = await assertPlays(w.page, playSeconds);
        if (played.error) throw new Error(`video error: ${played.error}`);
        if (!(played.width > 0)) throw new Error('no picture decoded');
        const wanted = mode === 'flv' ? '.flv' : '.ts';
        const used = w.media.filter((u) => u.includes(wanted)).length;
        if (used === 0) throw new Error(`no ${wanted} request: ${w.media.join(' ')}`);
        return { ...played, requests: used };
      } finally {
        if (!a && mode === 'flv') a = w;
        else await w.context.close();
      }
    });
  }
  if (!a && checks.some((c) => ['chat', 'gift'].includes(c))) a = await openWatch(browser, channel, 'flv');

  let b;
  await check('chat', async () => {
    b = await openWatch(browser, channel, 'hls');
    const line = `hello from ${a.session.handle} ${Math.random().toString(36).slice(2, 8)}`;
    // Both sockets are up before A speaks.
    for (const p of [a.page, b.page]) {
      await p.waitForFunction(() => document.getElementById('chat-state')?.textContent === '', null, { timeout: 15_000 });
    }
    await a.page.fill('#chat-input', line);
    await a.page.press('#chat-input', 'Enter');
    const seen = (p) => p.waitForFunction(
      (t) => [...document.querySelectorAll('#chat-log .chat-line .text')].some((e) => e.textContent === t),
      line,
      { timeout: 10_000 },
    );
    await Promise.all([seen(b.page), seen(a.page)]);
    return { line, from: a.session.handle, to: b.session.handle };
  });

  await check('gift', async () => {
    if (!streamerToken) throw new Error('E2E_STREAMER_TOKEN is not set');
    b = b || (await openWatch(browser, channel, 'hls'));
    const { gifts } = await api('GET', '/v1/gifts');
    const gift = gifts.find((g) => g.id === 'flower') || gifts[0];
    const senderBefore = await walletOf(a.session.token);
    const streamerBefore = await walletOf(streamerToken);
    await a.page.waitForSelector(`.gift-btn[data-gift="${gift.id}"]`, { timeout: 10_000 });
    const [resp] = await Promise.all([
      a.page.waitForResponse((r) => r.url().endsWith(`/v1/rooms/${channel}/gifts`) && r.request().method() === 'POST', { timeout: 10_000 }),
      a.page.click(`.gift-btn[data-gift="${gift.id}"]`),
    ]);
    const receipt = await resp.json();
    if (resp.status() !== 200) throw new Error(`gift refused: ${resp.status()} ${JSON.stringify(receipt)}`);
    const senderAfter = await walletOf(a.session.token);
    const streamerAfter = await walletOf(streamerToken);
    const fee = Math.floor((gift.price_micro * feeBps) / 10_000);
    const expect = (what, got, want) => {
      if (got !== want) throw new Error(`${what}: got ${got}, want ${want} (receipt ${JSON.stringify(receipt)})`);
    };
    expect('paid', receipt.paid_micro, gift.price_micro);
    expect('sender balance', senderAfter, senderBefore - gift.price_micro);
    expect('fee', receipt.fee_micro, fee);
    expect('streamer share', receipt.streamer_micro, gift.price_micro - fee);
    expect('streamer balance', streamerAfter, streamerBefore + gift.price_micro - fee);
    expect('receipt balance', receipt.balance_micro, senderAfter);
    // The event reaches both rooms' chat logs; the sender's wallet pill shows the new balance.
    const shown = (p) => p.waitForFunction(
      ([g, who]) => [...document.querySelectorAll('#chat-log .gift-line')].some((e) => e.dataset.gift === g && e.textContent.includes(who)),
      [gift.id, a.session.handle],
      { timeout: 10_000 },
    );
    await Promise.all([shown(a.page), shown(b.page)]);
    await a.page.waitForFunction((want) => document.getElementById('wallet-balance')?.dataset.micro === String(want), senderAfter, { timeout: 10_000 });
    return { gift: gift.id, sender_before: senderBefore, sender_after: senderAfter, streamer_before: streamerBefore, streamer_after: streamerAfter, fee };
  });

  await check('ticket', async () => {
    if (!ticketChannel) throw new Error('E2E_TICKET_CHANNEL is not set');
    const c = await openWatch(browser, ticketChannel, 'hls');
    try {
      await c.page.waitForSelector('#buy-ticket', { state: 'visible', timeout: 20_000 });
      const reason = await c.page.textContent('#refusal-reason');
      if (!/ticketed/.test(reason)) throw new Error(`refusal without the reason: ${reason}`);
      const before = await walletOf(c.session.token);
      await c.page.click('#buy-ticket');
      const played = await assertPlays(c.page, Math.min(playSeconds, 3));
      if (played.error) throw new Error(`video error: ${played.error}`);
      const tokened = c.media.filter((u) => u.includes('token=')).length;
      if (tokened === 0) throw new Error(`no request carried the ticket: ${c.media.join(' ')}`);
      const after = await walletOf(c.session.token);
      return { reason, paid: before - after, requests_with_token: tokened, ...played };
    } finally {
      await c.context.close();
    }
  });

  if (screenshot && a) {
    await a.page.waitForTimeout(500);
    await a.page.screenshot({ path: screenshot });
    result.screenshot = screenshot;
  }
} catch (e) {
  result.errors.push(String(e.stack || e));
} finally {
  await browser.close().catch(() => {});
}
finish();
