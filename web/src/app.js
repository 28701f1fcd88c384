// The WeStream page: hash routes `#/` (who is live), `#/watch/{channel}`
// (player, chat, gifts, ranking) and `#/studio` (OBS settings, stream key,
// room settings). Everything user-supplied goes into the DOM as text.

import { ApiError, balance, ensureViewer, get, post, randomKey, saveSession, session, signInWithToken, we } from './api.js';
import { Player } from './player.js';
import { RoomSocket } from './room.js';

// ---------- DOM helpers ----------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const view = () => document.getElementById('view');
let cleanup = [];
function onLeave(fn) {
  cleanup.push(fn);
}
function every(ms, fn) {
  fn();
  const t = setInterval(fn, ms);
  onLeave(() => clearInterval(t));
}

function toast(text, kind = 'info') {
  const box = document.getElementById('toasts');
  const el = h('div', { class: `toast ${kind}` }, text);
  box.append(el);
  setTimeout(() => el.remove(), 5000);
}

function errText(e) {
  return e instanceof ApiError ? `${e.message}${e.code ? ` (${e.code})` : ''}` : String(e.message || e);
}

// ---------- share links: ?share=CODE#/watch/{channel} ----------

const SHARE_KEY = 'westream.share';
(function keepShareCode() {
  const code = new URLSearchParams(location.search).get('share');
  const m = location.hash.match(/^#\/watch\/([^?/]+)/);
  if (code && m) sessionStorage.setItem(SHARE_KEY, JSON.stringify({ code, channel: decodeURIComponent(m[1]) }));
})();
function shareCodeFor(channel) {
  try {
    const s = JSON.parse(sessionStorage.getItem(SHARE_KEY));
    return s && s.channel === channel ? s.code : undefined;
  } catch {
    return undefined;
  }
}

// ---------- wallet pill ----------

async function refreshWallet(known) {
  const pill = document.getElementById('wallet');
  const s = session();
  if (!s) {
    pill.textContent = 'not signed in';
    return;
  }
  try {
    const b = known ?? (await balance());
    pill.replaceChildren(h('span', { class: 'who' }, s.handle), h('span', { id: 'wallet-balance', 'data-micro': b }, `${we(b)} WE`));
  } catch (e) {
    pill.textContent = s.handle;
    if (e.status === 401) {
      saveSession(null);
      await ensureViewer().catch(() => {});
    }
  }
}

// ---------- rooms and ranking ----------

function roomCard(r) {
  return h(
    'a',
    { class: `room-card ${r.live ? 'live' : ''}`, href: `#/watch/${encodeURIComponent(r.channel)}`, 'data-channel': r.channel },
    h('div', { class: 'thumb' }, r.live ? h('span', { class: 'badge live' }, 'LIVE') : h('span', { class: 'badge' }, 'offline'),
      r.ticket_price_micro > 0 ? h('span', { class: 'badge ticket' }, `ticket ${we(r.ticket_price_micro)} WE`) : null,
      h('span', { class: 'initial' }, (r.owner_handle || r.channel).slice(0, 1).toUpperCase())),
    h('div', { class: 'meta' },
      h('div', { class: 'title' }, r.title || r.channel),
      h('div', { class: 'sub' }, `${r.owner_handle || ''} · ${r.viewers?.total ?? 0} watching · score ${fmtScore(r.score)}`)),
  );
}

function fmtScore(s) {
  return Number(s || 0).toLocaleString('en-US', { maximumFractionDigits: 1 });
}

function rankingPanel(highlight) {
  const list = h('ol', { class: 'ranking', id: 'ranking' });
  const panel = h('section', { class: 'panel' }, h('h3', {}, 'Ranking'), list);
  every(10_000, async () => {
    try {
      const { rankings } = await get('/v1/rankings?limit=10');
      list.replaceChildren(
        ...(rankings.length ? rankings : []).map((r) =>
          h('li', { class: r.channel === highlight ? 'me' : '' },
            h('a', { href: `#/watch/${encodeURIComponent(r.channel)}` }, r.owner_handle || r.channel),
            h('span', { class: 'score' }, fmtScore(r.score)))),
      );
      if (!rankings.length) list.replaceChildren(h('li', { class: 'muted' }, 'no gifts yet'));
    } catch (e) {
      list.replaceChildren(h('li', { class: 'muted' }, `ranking unavailable: ${errText(e)}`));
    }
  });
  return panel;
}

async function listView() {
  const grid = h('div', { class: 'grid', id: 'rooms' });
  view().replaceChildren(
    h('div', { class: 'columns' },
      h('section', { class: 'main' }, h('h2', {}, 'Channels'), grid),
      h('aside', {}, rankingPanel())),
  );
  every(5_000, async () => {
    try {
      const { rooms } = await get('/v1/rooms');
      grid.replaceChildren(...rooms.map(roomCard));
      if (!rooms.length) grid.replaceChildren(h('p', { class: 'muted' }, 'No channels yet. Open the studio to create one.'));
    } catch (e) {
      grid.replaceChildren(h('p', { class: 'muted' }, `Rooms unavailable: ${errText(e)}. Open a channel directly: `,
        h('a', { href: '#/watch/demo' }, '#/watch/demo')));
    }
  });
}

// ---------- watch page ----------

const MODE_KEY = 'westream.mode';

async function watchView(channel, params) {
  let mode = params.get('mode') || localStorage.getItem(MODE_KEY) || 'hls';
  let playToken = params.get('token') || null;
  let room = null;

  const video = h('video', { id: 'video', controls: true, playsinline: true, muted: true, autoplay: true });
  const status = h('div', { class: 'player-status', id: 'player-status' }, 'connecting…');
  const overlay = h('div', { class: 'overlay hidden', id: 'player-overlay' });
  const player = new Player(video, {
    onStatus: (s) => {
      status.dataset.state = s.state;
      status.textContent = s.state === 'playing' ? `● live · ${s.mode.toUpperCase()}` : `${s.state}${s.reason ? `: ${s.reason}` : ''}`;
      overlay.classList.toggle('hidden', s.state !== 'refused');
      if (s.state === 'playing') setLive(true);
      if (s.state === 'refused') showRefusal(s);
    },
  });
  onLeave(() => player.stop());

  const modeButtons = ['hls', 'flv'].map((m) =>
    h('button', { class: `seg ${m === mode ? 'on' : ''}`, id: `mode-${m}`, 'data-mode': m, onclick: () => setMode(m) },
      m === 'hls' ? 'HLS' : 'HTTP-FLV (low latency)'));
  function setMode(m) {
    mode = m;
    localStorage.setItem(MODE_KEY, m);
    modeButtons.forEach((b) => b.classList.toggle('on', b.dataset.mode === m));
    player.play(channel, mode, playToken);
  }

  function showRefusal(s) {
    const ticketed = room && room.ticket_price_micro > 0;
    overlay.replaceChildren(
      h('div', { class: 'refusal' },
        h('p', { class: 'reason', id: 'refusal-reason' }, s.reason || 'not available'),
        ticketed && s.status === 403
          ? h('button', { class: 'primary', id: 'buy-ticket', onclick: buyTicket }, `Buy a ticket · ${we(room.ticket_price_micro)} WE`)
          : null),
    );
  }

  async function buyTicket() {
    try {
      const t = await post(`/v1/rooms/${encodeURIComponent(channel)}/tickets`, {});
      playToken = t.token;
      toast(`Ticket bought: ${we(t.paid_micro)} WE`, 'ok');
      refreshWallet();
      player.play(channel, mode, playToken);
    } catch (e) {
      toast(`Ticket not bought: ${errText(e)}`, 'error');
    }
  }

  const title = h('h2', { id: 'room-title' }, channel);
  const live = h('span', { class: 'badge', id: 'room-live' }, '…');
  const viewers = h('span', { class: 'stat', id: 'room-viewers' }, '');
  const score = h('span', { class: 'stat', id: 'room-score' }, '');
  const shareBtn = h('button', { class: 'ghost', id: 'share', onclick: share }, 'Share');

  const chatLog = h('ul', { class: 'chat-log', id: 'chat-log' });
  const chatInput = h('input', { id: 'chat-input', maxlength: 500, placeholder: 'Say something…', autocomplete: 'off' });
  const chatForm = h('form', { class: 'chat-form', onsubmit: sendChat }, chatInput, h('button', { class: 'primary', id: 'chat-send' }, 'Send'));
  const chatState = h('div', { class: 'muted small', id: 'chat-state' }, 'connecting to chat…');
  const gifts = h('div', { class: 'gifts', id: 'gifts' });

  view().replaceChildren(
    h('div', { class: 'columns watch' },
      h('section', { class: 'main' },
        h('div', { class: 'room-head' }, title, live, viewers, score, h('span', { class: 'spacer' }), shareBtn),
        h('div', { class: 'player' }, video, overlay),
        h('div', { class: 'toolbar' }, h('div', { class: 'segmented' }, modeButtons), status),
        h('section', { class: 'panel' }, h('h3', {}, 'Send a gift'), gifts)),
      h('aside', {},
        h('section', { class: 'panel chat' }, h('h3', {}, 'Chat'), chatLog, chatState, chatForm),
        rankingPanel(channel))),
  );

  function addLine(ev) {
    let li;
    if (ev.type === 'chat') {
      li = h('li', { class: 'chat-line', 'data-id': ev.id }, h('span', { class: 'who' }, ev.handle), ' ', h('span', { class: 'text' }, ev.text));
    } else if (ev.type === 'gift') {
      li = h('li', { class: 'gift-line', 'data-id': ev.id, 'data-gift': ev.gift },
        h('img', { src: `/assets/gifts/${encodeURIComponent(ev.gift)}.svg`, alt: '', onerror: (e) => { e.target.src = '/assets/gifts/gift.svg'; } }),
        h('span', { class: 'who' }, ev.handle), ` sent ${ev.count > 1 ? `${ev.count} × ` : ''}${ev.name || ev.gift}`);
    } else if (ev.type === 'notice') {
      li = h('li', { class: `notice ${ev.kind || ''}` }, ev.text);
    } else return;
    chatLog.append(li);
    while (chatLog.children.length > 200) chatLog.firstChild.remove();
    chatLog.scrollTop = chatLog.scrollHeight;
  }

  function setViewers(v) {
    if (v) viewers.textContent = `${v.total ?? 0} watching`;
  }
  function setLive(on) {
    live.textContent = on ? 'LIVE' : 'offline';
    live.classList.toggle('live', !!on);
  }

  // The score moves with gifts (and decays): re-read it now and then.
  let scoreTimer = null;
  async function refreshRoom() {
    try {
      const r = await get(`/v1/rooms/${encodeURIComponent(channel)}`);
      score.textContent = `★ ${fmtScore(r.score)}`;
      setViewers(r.viewers);
    } catch {
      /* the socket or the next look will tell */
    }
  }
  const roomTimer = setInterval(refreshRoom, 15_000);
  onLeave(() => {
    clearInterval(roomTimer);
    clearTimeout(scoreTimer);
  });

  const me = session();
  const socket = new RoomSocket(channel, me?.token, shareCodeFor(channel), (ev) => {
    switch (ev.type) {
      case 'socket':
        chatState.textContent = ev.state === 'open' ? '' : `chat reconnecting…${ev.reason ? ` (${ev.reason})` : ''}`;
        break;
      case 'hello':
        chatLog.replaceChildren();
        (ev.recent || []).forEach(addLine);
        setViewers(ev.viewers);
        setLive(ev.live);
        if (ev.score !== undefined) score.textContent = `★ ${fmtScore(ev.score)}`;
        break;
      case 'chat':
        addLine(ev);
        break;
      case 'gift':
        addLine(ev);
        clearTimeout(scoreTimer);
        scoreTimer = setTimeout(refreshRoom, 500);
        break;
      case 'viewers':
        setViewers(ev);
        break;
      case 'stream':
        setLive(ev.live);
        addLine({ type: 'notice', text: ev.live ? 'The stream started' : 'The stream ended' });
        if (ev.live) player.play(channel, mode, playToken);
        break;
      case 'error':
        addLine({ type: 'notice', kind: 'error', text: `${ev.message || ev.code}` });
        break;
      default:
    }
  });
  onLeave(() => socket.close());

  function sendChat(e) {
    e.preventDefault();
    const text = chatInput.value.trim();
    if (!text) return;
    if (socket.send(text)) chatInput.value = '';
    else toast('Chat is not connected yet', 'error');
  }

  async function share() {
    try {
      const s = await post(`/v1/rooms/${encodeURIComponent(channel)}/shares`, {});
      const url = new URL(s.url, location.href).href;
      await navigator.clipboard?.writeText(url).catch(() => {});
      toast(`Share link: ${url}`, 'ok');
    } catch (e) {
      toast(`No share link: ${errText(e)}`, 'error');
    }
  }

  async function sendGift(g, btn) {
    btn.disabled = true;
    try {
      const body = { gift: g.id, count: 1 };
      const code = shareCodeFor(channel);
      if (code) body.share = code;
      const r = await post(`/v1/rooms/${encodeURIComponent(channel)}/gifts`, body, { idempotencyKey: randomKey() });
      refreshWallet(r.balance_micro);
    } catch (e) {
      toast(`Gift not sent: ${errText(e)}`, 'error');
    } finally {
      btn.disabled = false;
    }
  }

  get('/v1/gifts')
    .then(({ gifts: list }) =>
      gifts.replaceChildren(
        ...list.map((g) => {
          const btn = h('button', { class: 'gift-btn', 'data-gift': g.id, title: `${g.name}: ${we(g.price_micro)} WE` },
            h('img', { src: g.image || '/assets/gifts/gift.svg', alt: '' }), h('span', { class: 'name' }, g.name),
            h('span', { class: 'price' }, `${we(g.price_micro)} WE`));
          btn.addEventListener('click', () => sendGift(g, btn));
          return btn;
        }),
      ))
    .catch((e) => gifts.replaceChildren(h('p', { class: 'muted' }, `Gifts unavailable: ${errText(e)}`)));

  // The room: title, live state, ticket price. A ticketed room uses the
  // viewer's ticket if they hold one.
  try {
    room = await get(`/v1/rooms/${encodeURIComponent(channel)}`);
    title.textContent = room.title || channel;
    setLive(room.live);
    setViewers(room.viewers);
    score.textContent = `★ ${fmtScore(room.score)}`;
    if (room.ticket_price_micro > 0 && !playToken && me) {
      try {
        playToken = (await get(`/v1/rooms/${encodeURIComponent(channel)}/tickets/me`)).token;
      } catch (e) {
        if (e.status !== 404) console.warn('ticket lookup', e);
      }
    }
  } catch (e) {
    setLive(false);
    if (e.status !== 404) console.warn('room', e);
  }
  if (me) {
    try {
      player.viewer = (await get('/v1/accounts/me/viewer-token')).token;
    } catch (e) {
      console.warn('viewer token', e);
    }
  }
  player.play(channel, mode, playToken);
}

// ---------- studio ----------

// The channel each account last opened in the studio.
const studioChannelKey = (s) => `westream.studio.channel.${s?.account ?? ''}`;

async function studioView() {
  const s = session();
  const rtmpUrl = `rtmp://${location.hostname}:1935/live`;
  const out = h('div', { id: 'studio-out' });
  const remembered = localStorage.getItem(studioChannelKey(s));
  const channelInput = h('input', { id: 'studio-channel', value: remembered || s?.handle || '', placeholder: 'channel name' });
  const tokenInput = h('input', { id: 'studio-token', placeholder: 'API token (e.g. demo-api-token on the dev server)' });

  view().replaceChildren(
    h('div', { class: 'studio' },
      h('h2', {}, 'Studio'),
      h('section', { class: 'panel' },
        h('h3', {}, 'Account'),
        h('p', {}, 'Signed in as ', h('b', { id: 'studio-handle' }, s?.handle || '–'),
          '. Streamers sign in with their API token (the one sign-up returned).'),
        h('form', { class: 'row', onsubmit: async (e) => {
          e.preventDefault();
          try {
            await signInWithToken(tokenInput.value.trim());
            refreshWallet();
            studioView();
          } catch (err) {
            toast(`Sign-in failed: ${errText(err)}`, 'error');
          }
        } }, tokenInput, h('button', { class: 'primary' }, 'Use this token'))),
      h('section', { class: 'panel' },
        h('h3', {}, 'Your channel'),
        h('form', { class: 'row', onsubmit: (e) => { e.preventDefault(); loadChannel(channelInput.value.trim(), true); } },
          channelInput, h('button', { class: 'primary', id: 'studio-open' }, 'Open or create')),
        out)),
  );

  // Opens `name`; creates it only when the user asked (`create`).
  async function loadChannel(name, create) {
    if (!name) return;
    out.replaceChildren(h('p', { class: 'muted' }, 'loading…'));
    let ch;
    try {
      ch = await get(`/v1/channels/${encodeURIComponent(name)}`);
    } catch (e) {
      if (e.status !== 404) return out.replaceChildren(h('p', { class: 'error' }, errText(e)));
      if (!create) return out.replaceChildren(h('p', { class: 'muted' }, `No channel '${name}' yet: press "Open or create".`));
      try {
        ch = await post('/v1/channels', { name });
        toast(`Channel ${name} created`, 'ok');
      } catch (e2) {
        return out.replaceChildren(h('p', { class: 'error' }, `Cannot create '${name}': ${errText(e2)}`));
      }
    }
    if (ch.owner === session()?.handle) localStorage.setItem(studioChannelKey(session()), ch.name);
    const keyBox = h('div', { id: 'stream-keys' });
    out.replaceChildren(
      h('dl', { class: 'obs' },
        h('dt', {}, 'OBS → Settings → Stream → Service'), h('dd', {}, 'Custom…'),
        h('dt', {}, 'Server'), h('dd', {}, h('code', { id: 'rtmp-url' }, rtmpUrl)),
        h('dt', {}, 'Stream key'), h('dd', {}, keyBox),
        h('dt', {}, 'Keyframe interval'), h('dd', {}, '2 s (Output → Advanced)'),
        h('dt', {}, 'Viewers watch at'), h('dd', {}, h('a', { href: `#/watch/${encodeURIComponent(ch.name)}` }, `${location.origin}/#/watch/${ch.name}`))),
      packagesPanel(),
      roomSettings(ch.name),
    );
    renderKeys(ch.name, keyBox);
  }

  async function renderKeys(name, box, fresh) {
    let keys = [];
    try {
      keys = (await get(`/v1/channels/${encodeURIComponent(name)}/keys`)).keys.filter((k) => !k.revoked_at_ms);
    } catch (e) {
      return box.replaceChildren(h('span', { class: 'error' }, `${errText(e)} (only the owner sees keys)`));
    }
    box.replaceChildren(
      fresh ? h('p', {}, h('code', { class: 'secret', id: 'stream-key' }, fresh), h('span', { class: 'muted small' }, ' shown once: copy it into OBS now')) : null,
      ...keys.map((k) => h('div', { class: 'muted' }, h('code', {}, k.masked), ` · key #${k.id}`)),
      h('button', { class: 'ghost', id: 'new-key', onclick: async () => {
        try {
          const k = await post(`/v1/channels/${encodeURIComponent(name)}/keys`, {});
          renderKeys(name, box, k.key);
        } catch (e) {
          toast(errText(e), 'error');
        }
      } }, keys.length ? 'Add a key' : 'Create a stream key'),
    );
  }

  function packagesPanel() {
    const box = h('div', {}, 'loading…');
    (async () => {
      try {
        const [{ products }, { packages }] = await Promise.all([get('/v1/products'), get('/v1/packages')]);
        const left = packages.filter((p) => p.expires_at_ms > Date.now()).reduce((a, p) => a + p.bytes_remaining, 0);
        box.replaceChildren(
          h('p', {}, `Bandwidth left: ${(left / 1e9).toFixed(2)} GB. Viewers' traffic draws on it; without it you cannot go live.`),
          h('div', { class: 'row' }, ...products.map((p) => h('button', { class: 'ghost', onclick: async () => {
            try {
              await post('/v1/packages', { product_id: p.id });
              toast(`Bought ${p.description}`, 'ok');
              refreshWallet();
              box.replaceWith(packagesPanel());
            } catch (e) {
              toast(errText(e), 'error');
            }
          } }, `${p.description} · ${we(p.price_micro_we)} WE`))),
        );
      } catch (e) {
        box.replaceChildren(h('span', { class: 'error' }, errText(e)));
      }
    })();
    return h('section', { class: 'panel' }, h('h3', {}, 'Bandwidth'), box);
  }

  function roomSettings(name) {
    const titleIn = h('input', { id: 'set-title', placeholder: 'title' });
    const priceIn = h('input', { id: 'set-ticket', type: 'number', min: 0, step: '0.000001', placeholder: '0 = free' });
    const sharerIn = h('input', { id: 'set-sharer', type: 'number', min: 0, max: 50, step: '0.01', placeholder: '% of gifts to sharers' });
    const slowIn = h('input', { id: 'set-slow', type: 'number', min: 0, step: 1, placeholder: 'seconds between messages' });
    get(`/v1/rooms/${encodeURIComponent(name)}`)
      .then((r) => {
        titleIn.value = r.title || '';
        priceIn.value = r.ticket_price_micro / 1e6;
        sharerIn.value = r.sharer_bps / 100;
        slowIn.value = r.slow_mode_ms / 1000;
      })
      .catch(() => {});
    const save = async (e) => {
      e.preventDefault();
      try {
        await post(`/v1/rooms/${encodeURIComponent(name)}/settings`, {
          title: titleIn.value,
          ticket_price_micro: Math.round(Number(priceIn.value || 0) * 1e6),
          sharer_bps: Math.round(Number(sharerIn.value || 0) * 100),
          slow_mode_ms: Math.round(Number(slowIn.value || 0) * 1000),
        });
        toast('Room settings saved', 'ok');
      } catch (err) {
        toast(`Not saved: ${errText(err)}`, 'error');
      }
    };
    return h('section', { class: 'panel' }, h('h3', {}, 'Room'),
      h('form', { class: 'settings', onsubmit: save },
        h('label', {}, 'Title', titleIn), h('label', {}, 'Ticket price (WE)', priceIn),
        h('label', {}, 'Sharer share (%)', sharerIn), h('label', {}, 'Slow mode (s)', slowIn),
        h('button', { class: 'primary' }, 'Save')));
  }

  if (remembered) loadChannel(remembered, false);
  else if (s) loadChannel(s.handle, false);
}

// ---------- router ----------

function route() {
  cleanup.forEach((f) => f());
  cleanup = [];
  const [path, query] = location.hash.replace(/^#/, '').split('?');
  const params = new URLSearchParams(query || '');
  const parts = (path || '/').split('/').filter(Boolean);
  document.querySelectorAll('nav a').forEach((a) => a.classList.toggle('on', a.getAttribute('href') === `#/${parts[0] || ''}`));
  if (parts[0] === 'watch' && parts[1]) return watchView(decodeURIComponent(parts[1]), params);
  if (parts[0] === 'studio') return studioView();
  return listView();
}

async function boot() {
  window.addEventListener('hashchange', route);
  try {
    await ensureViewer();
  } catch (e) {
    toast(`Could not sign up a guest viewer: ${errText(e)}`, 'error');
  }
  refreshWallet();
  setInterval(() => refreshWallet(), 15_000);
  route();
}

boot();
