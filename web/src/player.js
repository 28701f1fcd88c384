// One <video> element playing a channel over HLS (hls.js, or native HLS
// in Safari) or low-latency HTTP-FLV (mpegts.js). The libraries are loaded
// as classic scripts (window.Hls, window.mpegts) from /assets/vendor/.

export function streamUrl(channel, mode, token, viewer) {
  // `token`: a ticket's play token; `viewer`: the signed-in viewer's token,
  // so watch time counts for their rewards (GET /v1/accounts/me/viewer-token).
  const params = [];
  if (token) params.push(`token=${encodeURIComponent(token)}`);
  if (viewer) params.push(`viewer=${encodeURIComponent(viewer)}`);
  const q = params.length ? `?${params.join('&')}` : '';
  const ch = encodeURIComponent(channel);
  return mode === 'flv' ? `/live/${ch}.flv${q}` : `/live/${ch}/index.m3u8${q}`;
}

/**
 * Asks the server whether this play would be allowed, so the page can show
 * the reason (403 "ticketed", 404 "not live") instead of a silent player.
 * For FLV the answer is a stream: read the headers, then let go of it.
 */
export async function preflight(url) {
  const ctl = new AbortController();
  try {
    const resp = await fetch(url, { signal: ctl.signal, cache: 'no-store' });
    if (resp.ok) return { ok: true, status: resp.status };
    const text = (await resp.text()).trim();
    return { ok: false, status: resp.status, reason: text || `HTTP ${resp.status}` };
  } catch (e) {
    return { ok: false, status: 0, reason: String(e.message || e) };
  } finally {
    ctl.abort();
  }
}

export class Player {
  constructor(video, { onStatus } = {}) {
    this.video = video;
    this.onStatus = onStatus || (() => {});
    this.engine = null;
    this.retry = null;
    /** The signed-in viewer's token, added to every stream URL. */
    this.viewer = null;
  }

  /** Starts (or restarts) playback. */
  async play(channel, mode, token) {
    this.stop();
    const url = streamUrl(channel, mode, token, this.viewer);
    this.current = { channel, mode, token };
    this.onStatus({ state: 'connecting', mode });
    const pre = await preflight(url);
    if (!this.current || this.current.channel !== channel || this.current.mode !== mode) return;
    if (!pre.ok) {
      this.onStatus({ state: 'refused', status: pre.status, reason: pre.reason, mode });
      // Not live yet, or no segment yet: try again shortly. A refusal
      // (403) waits for the user (a ticket).
      if (pre.status === 404 || pre.status === 0 || pre.status >= 500) this.scheduleRetry(4000);
      return;
    }
    if (mode === 'flv') this.playFlv(url);
    else this.playHls(url);
  }

  playHls(url) {
    const video = this.video;
    const Hls = window.Hls;
    if (Hls && Hls.isSupported()) {
      const hls = new Hls({ liveSyncDurationCount: 2, lowLatencyMode: false, backBufferLength: 30 });
      hls.on(Hls.Events.ERROR, (_ev, data) => {
        if (!data.fatal) return;
        this.onStatus({ state: 'error', reason: `hls: ${data.details}`, mode: 'hls' });
        this.scheduleRetry(3000);
      });
      hls.loadSource(url);
      hls.attachMedia(video);
      this.engine = { destroy: () => hls.destroy() };
    } else if (video.canPlayType('application/vnd.apple.mpegurl')) {
      video.src = url;
      this.engine = { destroy: () => video.removeAttribute('src') };
    } else {
      this.onStatus({ state: 'error', reason: 'this browser cannot play HLS', mode: 'hls' });
      return;
    }
    this.start();
  }

  playFlv(url) {
    const mpegts = window.mpegts;
    if (!mpegts || !mpegts.getFeatureList().mseLivePlayback) {
      this.onStatus({ state: 'error', reason: 'this browser cannot play HTTP-FLV (no MSE)', mode: 'flv' });
      return;
    }
    const p = mpegts.createPlayer(
      { type: 'flv', isLive: true, url: new URL(url, location.href).href },
      // Low latency by playing slightly faster when behind, not by seeking
      // (a seek stalls the picture).
      { enableWorker: false, lazyLoad: false, liveSync: true, liveSyncMaxLatency: 2.5, liveSyncTargetLatency: 1.2, liveSyncPlaybackRate: 1.1 },
    );
    p.on(mpegts.Events.ERROR, (type, detail) => {
      this.onStatus({ state: 'error', reason: `flv: ${type} ${detail}`, mode: 'flv' });
      this.scheduleRetry(3000);
    });
    p.attachMediaElement(this.video);
    p.load();
    this.engine = {
      destroy: () => {
        p.pause();
        p.unload();
        p.detachMediaElement();
        p.destroy();
      },
    };
    this.start();
  }

  start() {
    const mode = this.current?.mode;
    const v = this.video;
    v.onplaying = () => this.onStatus({ state: 'playing', mode });
    v.onwaiting = () => this.onStatus({ state: 'buffering', mode });
    // Browsers allow muted autoplay; the controls unmute.
    v.muted = true;
    v.play().catch(() => this.onStatus({ state: 'paused', reason: 'press play', mode }));
  }

  scheduleRetry(ms) {
    clearTimeout(this.retry);
    const cur = this.current;
    this.retry = setTimeout(() => {
      if (cur && this.current === cur) this.play(cur.channel, cur.mode, cur.token);
    }, ms);
  }

  stop() {
    clearTimeout(this.retry);
    this.retry = null;
    if (this.engine) {
      try {
        this.engine.destroy();
      } catch (e) {
        console.warn('player destroy', e);
      }
    }
    this.engine = null;
    this.current = null;
    this.video.onplaying = null;
    this.video.onwaiting = null;
  }
}
