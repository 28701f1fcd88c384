// The room's WebSocket (`/v1/rooms/{channel}/ws`): events in, chat out.
// Reconnects with a growing delay; closing the page or leaving the room
// stops it for good.

export class RoomSocket {
  constructor(channel, token, share, onEvent) {
    this.channel = channel;
    this.token = token;
    this.share = share;
    this.onEvent = onEvent;
    this.closed = false;
    this.delay = 500;
    this.connect();
  }

  url() {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const q = new URLSearchParams();
    if (this.token) q.set('token', this.token);
    // A visit through a share link counts for the sharer.
    if (this.share) q.set('share', this.share);
    const qs = q.toString();
    return `${proto}//${location.host}/v1/rooms/${encodeURIComponent(this.channel)}/ws${qs ? `?${qs}` : ''}`;
  }

  connect() {
    if (this.closed) return;
    const ws = new WebSocket(this.url());
    this.ws = ws;
    ws.onopen = () => {
      this.delay = 500;
      this.onEvent({ type: 'socket', state: 'open' });
    };
    ws.onmessage = (m) => {
      let ev;
      try {
        ev = JSON.parse(m.data);
      } catch {
        return;
      }
      // A busy room sends the events of a few ms as one `batch` frame.
      if (ev.type === 'batch' && Array.isArray(ev.events)) {
        for (const e of ev.events) this.onEvent(e);
        return;
      }
      this.onEvent(ev);
    };
    ws.onclose = (c) => {
      if (this.closed) return;
      this.onEvent({ type: 'socket', state: 'closed', reason: c.reason });
      setTimeout(() => this.connect(), this.delay);
      this.delay = Math.min(this.delay * 2, 10_000);
    };
  }

  /** Sends a chat line; false when the socket is not open. */
  send(text) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify({ type: 'chat', text }));
    return true;
  }

  close() {
    this.closed = true;
    if (this.ws) this.ws.close(1000, 'left the room');
  }
}
