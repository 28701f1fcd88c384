//! A room's fan-out: a few shard tasks (`fanout_shards`; by default one per
//! two runtime workers, at most [`MAX_SHARDS`]) write the room's events to every client, instead of one
//! task per client woken per frame.
//!
//! Each shard owns its clients' socket write halves. When it wakes (an
//! event was published, a client joined, a reader has a reply or ended) it
//! takes every event the room published since its last round, under the
//! room's lock, and makes one frame of them (a lone event goes out bare,
//! several as `{"type":"batch","events":[...]}`, at most
//! [`MAX_BATCH_EVENTS`] events and about [`MAX_BATCH_BYTES`] bytes each).
//! Then it visits its clients in turn and gives each, without waiting, what
//! it has not had: its private messages first (`hello`, refusals of its
//! own input), then the frames from its cursor on, in one socket write.
//! Frames are kept as WebSocket wire bytes, encoded once per shard, so a
//! client's write is one `sendmsg` of shared buffers: no per-client copy, no
//! WebSocket library on the write path (the connection is the raw socket,
//! taken back from hyper by [`crate::serve::raw_tcp`]).
//!
//! So the batching clocks itself: a quiet room sends an event at once; a
//! room whose round over 10,000 sockets takes 80 ms sends each client one
//! write per round, carrying what came meanwhile. `batch_window_ms` is the
//! shortest time between two frames of a shard, which bounds writes per
//! client per second in a small busy room; midway through a round that has
//! run that long, events leave without waiting for it (see [`may_frame`]).
//!
//! A client whose socket does not take its write at once leaves the round:
//! its own task waits for the socket (at most `send_timeout_ms`, else it is
//! dropped as `send_timeout`), then hands it back to the shard, which goes
//! on from the client's cursor. A client further behind than the shard's
//! ring of `client_queue_events` frames is dropped as `lagged`. Nothing
//! waits for a slow client but itself.
//!
//! A joining client gets `hello` from its shard, built under the room's
//! lock in the same breath as the shard takes the events published so far:
//! what is in `hello` never comes again as an event, and every later event
//! comes once, in order.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use bytes::{Buf, Bytes};
use parking_lot::Mutex;
use rustix::io::Errno;
use rustix::net::{SendAncillaryBuffer, SendFlags};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use super::{HelloState, Room, Rooms};
use crate::metrics::ControlMetrics;
use crate::store::AccountId;

/// Most events in one batch frame.
pub(crate) const MAX_BATCH_EVENTS: usize = 64;
/// A batch frame is cut once its events reach this many bytes, so a frame
/// (and the shard's ring of them) stays small.
pub(crate) const MAX_BATCH_BYTES: usize = 32 * 1024;
/// Shards per room at most.
pub(crate) const MAX_SHARDS: usize = 8;
/// A round lets other tasks run after visiting this many clients.
const YIELD_EVERY: usize = 128;
/// How long a close frame to a dropped client may take.
const CLOSE_TIMEOUT: Duration = Duration::from_millis(200);
/// Buffers in one client write at most (Linux takes 1024).
const MAX_IOV: usize = 64;
/// Clients whose socket handles a round reads ahead of their visits.
const WARM_AHEAD: usize = 16;

/// WebSocket opcodes the server sends (RFC 6455 5.2).
pub(crate) const OP_TEXT: u8 = 0x1;
const OP_CLOSE: u8 = 0x8;

/// One server frame as wire bytes: FIN, `opcode`, unmasked `payload`.
pub(crate) fn wire_frame(opcode: u8, payload: &[u8]) -> Bytes {
    let mut v = Vec::with_capacity(payload.len() + 10);
    v.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => v.push(n as u8),
        n if n <= 0xffff => {
            v.push(126);
            v.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            v.push(127);
            v.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    v.extend_from_slice(payload);
    Bytes::from(v)
}

/// A close frame with `code` and a reason of at most 123 bytes (cut at a
/// character boundary).
fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    wire_frame(OP_CLOSE, &payload)
}

/// Why the server dropped a client.
#[derive(Debug)]
pub(crate) enum DropReason {
    Lagged(u64),
    SendTimeout,
    Protocol(String),
}

impl DropReason {
    pub(crate) fn label(&self) -> &'static str {
        match self {
            DropReason::Lagged(_) => "lagged",
            DropReason::SendTimeout => "send_timeout",
            DropReason::Protocol(_) => "protocol",
        }
    }

    fn close_text(&self) -> String {
        match self {
            DropReason::Lagged(n) => format!("too slow: {n} frames behind"),
            DropReason::SendTimeout => "too slow: send timed out".to_string(),
            DropReason::Protocol(e) => format!("protocol error: {e}"),
        }
    }
}

/// What a client's reader tells its shard.
#[derive(Debug)]
pub(crate) enum FromReader {
    /// An error event for this client (a refused chat, a binary frame).
    Reply(Utf8Bytes),
    /// Frames the WebSocket protocol itself answers with (pong, the close
    /// reply), as wire bytes.
    Wire(Bytes),
    /// The client closed (`Ok`) or broke the protocol.
    Ended(Result<(), DropReason>),
}

/// Counts the client in its room and in the gauge for as long as it lives.
pub(crate) struct Presence {
    room: Arc<Room>,
    rooms: Arc<Rooms>,
}

impl Presence {
    pub(crate) fn new(room: &Arc<Room>, rooms: &Arc<Rooms>) -> Self {
        room.clients.fetch_add(1, Ordering::Relaxed);
        rooms.metrics().ws_clients.inc();
        Presence { room: Arc::clone(room), rooms: Arc::clone(rooms) }
    }
}

impl Drop for Presence {
    fn drop(&mut self) {
        self.room.clients.fetch_sub(1, Ordering::Relaxed);
        self.rooms.metrics().ws_clients.dec();
    }
}

/// Ends the reader's task with the client.
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The reader's way to get its shard's attention.
#[derive(Debug)]
pub(crate) struct Attention {
    flag: AtomicBool,
    shard: Arc<Shard>,
}

impl Attention {
    /// After queueing something for the shard: look at this client.
    pub(crate) fn raise(&self) {
        self.flag.store(true, Ordering::Release);
        self.shard.raised.store(true, Ordering::Release);
        self.shard.wake.notify_one();
    }

    fn take(&self) -> bool {
        self.flag.load(Ordering::Relaxed) && self.flag.swap(false, Ordering::Acquire)
    }
}

/// One client as its shard holds it.
pub(crate) struct ClientConn {
    sink: OwnedWriteHalf,
    /// The unwritten rest of a frame the socket took only part of: written
    /// before anything else.
    partial: Bytes,
    from_reader: mpsc::Receiver<FromReader>,
    attention: Arc<Attention>,
    /// `hello` and replies as wire frames, written before any room frame.
    private: VecDeque<Bytes>,
    /// The shard frame this client needs next; none until it had `hello`.
    cursor: Option<u64>,
    you: Option<AccountId>,
    send_timeout: Duration,
    presence: Presence,
    _reader: AbortOnDrop,
}

impl std::fmt::Debug for ClientConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConn").field("cursor", &self.cursor).field("you", &self.you).finish_non_exhaustive()
    }
}

impl ClientConn {
    /// A client, to be handed to [`Shard::attach`].
    pub(crate) fn new(
        sink: OwnedWriteHalf,
        from_reader: mpsc::Receiver<FromReader>,
        attention: Arc<Attention>,
        you: Option<AccountId>,
        send_timeout: Duration,
        presence: Presence,
        reader: AbortOnDrop,
    ) -> Self {
        ClientConn {
            sink,
            partial: Bytes::new(),
            from_reader,
            attention,
            private: VecDeque::new(),
            cursor: None,
            you,
            send_timeout,
            presence,
            _reader: reader,
        }
    }

    /// Drops the client: counted and logged; a close frame with the reason
    /// where the socket still takes one (from a task of its own: a stuck
    /// socket holds up nobody).
    fn drop_for(self, reason: DropReason) {
        self.presence.rooms.metrics().ws_drops.with_label_values(&[reason.label()]).inc();
        tracing::debug!(channel = %self.presence.room.channel(), account = ?self.you, reason = ?reason, "room client dropped");
        // 1008: policy violation.
        let close = close_frame(1008, &reason.close_text());
        let mut me = self;
        tokio::spawn(async move {
            // The rest of a frame cut short first: a close frame starts on a
            // frame boundary.
            let mut close = close;
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                write_out(&me.sink, &mut me.partial).await?;
                write_out(&me.sink, &mut close).await
            })
            .await;
        });
    }

    /// Writes what it can of its queued private frames without waiting
    /// (the close reply to a client that closed).
    fn write_private_now(&mut self) {
        while let Some(frame) = self.private.front() {
            if !self.partial.is_empty() {
                break; // a frame cut short: nothing whole can follow now
            }
            match self.sink.try_write(frame) {
                Ok(n) if n == frame.len() => drop(self.private.pop_front()),
                _ => break,
            }
        }
    }
}

impl ClientConn {
    /// Moves the next queued frame into `partial` (when it is empty), so
    /// that `wait_for_socket` has something to write through tokio.
    fn next_into_partial(&mut self, frames: &VecDeque<Bytes>, first_seq: u64) {
        if !self.partial.is_empty() {
            return;
        }
        if let Some(f) = self.private.pop_front() {
            self.partial = f;
        } else if let Some(n) = self.cursor.filter(|n| *n < first_seq + frames.len() as u64) {
            self.partial = frames[(n - first_seq) as usize].clone();
            self.cursor = Some(n + 1);
        }
    }
}

/// Writes all of `buf` to the socket, waiting for it as needed.
async fn write_out(sink: &OwnedWriteHalf, buf: &mut Bytes) -> io::Result<()> {
    while !buf.is_empty() {
        sink.writable().await?;
        match sink.try_write(buf) {
            Ok(n) => buf.advance(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// What one visit of a client came to.
enum Visit {
    /// Written (or nothing to write).
    Done,
    /// The socket did not take everything: its own task waits for it.
    Blocked,
    /// Drop it (`Ok`: it closed).
    Gone(Result<(), DropReason>),
}

/// One shard of a room's clients and its task.
#[derive(Debug)]
pub(crate) struct Shard {
    room: Weak<Room>,
    /// Clients to take in at the next round: new ones, and ones back from
    /// waiting for their socket.
    joining: Mutex<Vec<ClientConn>>,
    wake: Notify,
    /// Some client's reader raised its attention since the last round: only
    /// then does a round look at each client's flag (one memory access
    /// less per client in the common round).
    raised: AtomicBool,
}

/// The shard's own state, owned by its task.
struct Round {
    clients: Vec<ClientConn>,
    /// The last `ring_len` frames as wire bytes, the first being `first_seq`.
    frames: VecDeque<Bytes>,
    first_seq: u64,
    ring_len: usize,
    /// The next room event this shard needs.
    log_cursor: u64,
    min_gap: Duration,
    last_frame_at: Option<Instant>,
    metrics: Arc<ControlMetrics>,
}

impl Round {
    fn next_seq(&self) -> u64 {
        self.first_seq + self.frames.len() as u64
    }

    fn push_frame(&mut self, frame: Bytes) {
        if self.frames.len() >= self.ring_len {
            self.frames.pop_front();
            self.first_seq += 1;
        }
        self.frames.push_back(frame);
    }
}

impl Shard {
    /// A shard of `room` and its task (needs a tokio runtime); it starts
    /// with the room's next event.
    pub(super) fn spawn(room: &Arc<Room>, log_cursor: u64, ring_len: usize, min_gap: Duration, metrics: Arc<ControlMetrics>) -> Arc<Shard> {
        let shard = Arc::new(Shard { room: Arc::downgrade(room), joining: Mutex::new(Vec::new()), wake: Notify::new(), raised: AtomicBool::new(false) });
        let round = Round {
            clients: Vec::new(),
            frames: VecDeque::new(),
            first_seq: 0,
            ring_len: ring_len.max(1),
            log_cursor,
            min_gap,
            last_frame_at: None,
            metrics,
        };
        let run = Arc::clone(&shard);
        let channel = room.channel().to_string();
        // Unconstrained: a round is thousands of socket writes in one poll,
        // and tokio's cooperative budget would otherwise fail all but the
        // first hundred or so as "not ready" (and send their clients off to
        // wait for sockets that are not full). A round is bounded work, and
        // the task waits between rounds.
        tokio::spawn(tokio::task::coop::unconstrained(async move {
            run.run(round).await;
            tracing::debug!(%channel, "room fan-out shard ended");
        }));
        shard
    }

    /// The attention handle a new client's reader raises.
    pub(crate) fn attention(self: &Arc<Self>) -> Arc<Attention> {
        Arc::new(Attention { flag: AtomicBool::new(false), shard: Arc::clone(self) })
    }

    /// Takes a client in at the next round: a new one gets `hello`, then
    /// every later event; one back from waiting for its socket goes on from
    /// its cursor.
    pub(crate) fn attach(&self, client: ClientConn) {
        self.joining.lock().push(client);
        self.wake.notify_one();
    }

    /// The room published an event.
    pub(super) fn notify(&self) {
        self.wake.notify_one();
    }

    async fn run(self: Arc<Self>, mut round: Round) {
        let mut due: Option<Instant> = None;
        loop {
            match due {
                Some(at) => {
                    tokio::select! {
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => self.wake.notified().await,
            }
            let Some(room) = self.room.upgrade() else { return };
            due = self.round(&room, &mut round).await;
        }
    }

    /// One round: new events into a frame, joiners in, every client given
    /// what it lacks. Returns when to run again for events held back by
    /// `batch_window_ms`. Clients that join or come back during the round
    /// wait for the next one; the room's lock is not held across a yield.
    async fn round(self: &Arc<Self>, room: &Arc<Room>, round: &mut Round) -> Option<Instant> {
        let mut joining: Vec<ClientConn> = std::mem::take(&mut *self.joining.lock());
        let began = Instant::now();
        let mut due = self.take_events(room, round, &mut joining, None);
        let next_seq = round.next_seq();
        let check_attention = self.raised.swap(false, Ordering::AcqRel) || !joining.is_empty();
        for mut c in joining {
            if c.cursor.is_none() {
                c.cursor = Some(next_seq);
            }
            // Whatever its reader queued meanwhile.
            c.attention.flag.store(true, Ordering::Relaxed);
            round.clients.push(c);
        }
        let started = std::time::Instant::now();
        let mut writes = 0u64;
        let mut i = 0;
        let mut visited = 0;
        while i < round.clients.len() {
            if visited % WARM_AHEAD == 0 {
                warm_sockets(&round.clients[i..]);
            }
            visited += 1;
            if visited % YIELD_EVERY == 0 {
                // Let this worker's other tasks (readers, HTTP) run: a round
                // of a big room is tens of milliseconds of writes. Then take
                // what was published meanwhile, so the clients still to come
                // in this round get it now, not a round later.
                tokio::task::yield_now().await;
                due = self.take_events(room, round, &mut Vec::new(), Some(began));
            }
            match visit(&mut round.clients[i], &round.frames, round.first_seq, check_attention, &mut writes) {
                Visit::Done => i += 1,
                Visit::Blocked => {
                    let c = round.clients.swap_remove(i);
                    tokio::spawn(wait_for_socket(c, Arc::clone(self)));
                }
                Visit::Gone(outcome) => {
                    let c = round.clients.swap_remove(i);
                    match outcome {
                        Ok(()) => drop(c),
                        Err(reason) => c.drop_for(reason),
                    }
                }
            }
        }
        if visited > 0 {
            round.metrics.ws_fanout_rounds.observe(started.elapsed().as_secs_f64());
            round.metrics.ws_fanout_writes.inc_by(writes);
        }
        if round.next_seq() > next_seq {
            // Frames taken during the round missed the clients visited
            // before: another round, at once, for them.
            self.wake.notify_one();
        }
        due
    }

    /// Takes the events published since the last frame as new frames when
    /// `batch_window_ms` allows (always when a client joins: its `hello`,
    /// built here under the same lock, holds everything published so far,
    /// so that must be out of the log before its first frame). `round_began`:
    /// this take is midway through the round that began then (see
    /// [`may_frame`]). Returns when to look again for events held back.
    fn take_events(&self, room: &Room, round: &mut Round, joining: &mut [ClientConn], round_began: Option<Instant>) -> Option<Instant> {
        let now = Instant::now();
        let gap_over = may_frame(now, round.last_frame_at, round.min_gap, round_began);
        let (hello, events, due, missed) = {
            let st = room.state.lock();
            let next = st.log_first_seq + st.log.len() as u64;
            let pending = next > round.log_cursor;
            let new_client = joining.iter().any(|c| c.cursor.is_none());
            let hello = new_client.then(|| HelloState::of(&st));
            if !pending {
                (hello, Vec::new(), None, 0)
            } else if !gap_over && !new_client {
                (hello, Vec::new(), round.last_frame_at.map(|t| t + round.min_gap), 0)
            } else {
                let missed = st.log_first_seq.saturating_sub(round.log_cursor);
                let skip = round.log_cursor.saturating_sub(st.log_first_seq) as usize;
                round.log_cursor = next;
                (hello, st.log.iter().skip(skip).cloned().collect(), None, missed)
            }
        };
        if let Some(hello) = &hello {
            for c in joining.iter_mut().filter(|c| c.cursor.is_none()) {
                let text = c.presence.rooms.hello(room, hello, c.you);
                c.private.push_back(wire_frame(OP_TEXT, text.as_bytes()));
            }
        }
        if events.is_empty() {
            return due;
        }
        if missed > 0 {
            // The log outran this shard (thousands of events between two
            // takes): every client it has, here, joining again or waiting
            // for its socket, lost events. Emptying the ring past every
            // cursor drops each as lagged at its next visit.
            tracing::warn!(channel = %room.channel(), missed, "room fan-out fell behind its log; its clients will be dropped");
            round.first_seq = round.next_seq() + 1;
            round.frames.clear();
        }
        for frame in frames_of(&events) {
            round.push_frame(wire_frame(OP_TEXT, frame.as_bytes()));
        }
        round.last_frame_at = Some(now);
        None
    }
}

/// Whether a shard may make a frame of its pending events at `now`: once
/// `min_gap` (`batch_window_ms`) has passed since its last frame, or, midway
/// through a round, once that round has itself run `min_gap`. The window
/// bounds how often a client is written in a small busy room, whose rounds
/// are short; a round that has run a window long already writes each client
/// about once per window, so holding events back further would only delay
/// them (for the clients still to come in the round, by up to a window)
/// without saving a single write. In a room of 10,000 clients, whose rounds
/// take tens of milliseconds, events then leave at the next stop of the
/// round (every [`YIELD_EVERY`] clients) instead of every window.
fn may_frame(now: Instant, last_frame_at: Option<Instant>, min_gap: Duration, round_began: Option<Instant>) -> bool {
    let window_since = |t: Instant| now >= t + min_gap;
    last_frame_at.is_none_or(window_since) || round_began.is_some_and(window_since)
}

/// Reads the socket handles of the next [`WARM_AHEAD`] clients in one
/// pass. Each client's write half points into an allocation of its own, and
/// reading it on the way to the syscall was a cache miss per client paid
/// one at a time (5-6% of a 10,000-client round in perf); loads that do not
/// depend on each other are in flight together, so a pass over a few
/// clients pays about one miss for all of them before their visits.
fn warm_sockets(clients: &[ClientConn]) {
    let fds = clients.iter().take(WARM_AHEAD).fold(0i32, |acc, c| acc ^ c.sink.as_ref().as_fd().as_raw_fd());
    std::hint::black_box(fds);
}

/// Gives a client its replies and the frames it lacks, without waiting.
fn visit(c: &mut ClientConn, frames: &VecDeque<Bytes>, first_seq: u64, check_attention: bool, writes: &mut u64) -> Visit {
    if check_attention && c.attention.take() {
        loop {
            match c.from_reader.try_recv() {
                Ok(FromReader::Reply(text)) => c.private.push_back(wire_frame(OP_TEXT, text.as_bytes())),
                Ok(FromReader::Wire(frame)) => c.private.push_back(frame),
                Ok(FromReader::Ended(Ok(()))) => {
                    c.write_private_now();
                    return Visit::Gone(Ok(()));
                }
                Ok(FromReader::Ended(Err(reason))) => return Visit::Gone(Err(reason)),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => return Visit::Gone(Ok(())),
            }
        }
    }
    let Some(cursor) = c.cursor else { return Visit::Done };
    let end = first_seq + frames.len() as u64;
    if cursor < first_seq {
        return Visit::Gone(Err(DropReason::Lagged(end - cursor)));
    }
    // Nothing here may wait: a full socket sends the client to its own task.
    loop {
        let cursor = c.cursor.unwrap_or(end);
        if c.partial.is_empty() && c.private.is_empty() && cursor == end {
            return Visit::Done;
        }
        let mut iov = [IoSlice::new(&[]); MAX_IOV];
        let mut n = 0;
        let queued = std::iter::once(&c.partial)
            .filter(|p| !p.is_empty())
            .chain(c.private.iter())
            .chain(frames.range((cursor - first_seq) as usize..));
        for (slot, buf) in iov.iter_mut().zip(queued) {
            *slot = IoSlice::new(buf);
            n += 1;
        }
        // sendmsg(2) straight to the kernel, as the RTMP writer does:
        // tokio's readiness is left alone (its bookkeeping cost more than
        // the rest of a visit), so a full socket is handled by
        // `wait_for_socket` through tokio, which finds it full and waits.
        let flags = SendFlags::DONTWAIT | SendFlags::NOSIGNAL;
        *writes += 1;
        let wrote = match rustix::net::sendmsg(c.sink.as_ref(), &iov[..n], &mut SendAncillaryBuffer::default(), flags) {
            Ok(w) => w,
            Err(Errno::AGAIN | Errno::INTR) => {
                c.next_into_partial(frames, first_seq);
                return Visit::Blocked;
            }
            Err(e) => return Visit::Gone(Err(DropReason::Protocol(io::Error::from(e).to_string()))),
        };
        let whole = iov[..n].iter().map(|b| b.len()).sum::<usize>() == wrote;
        consume(c, wrote, frames, first_seq);
        if !whole {
            c.next_into_partial(frames, first_seq);
            return Visit::Blocked;
        }
    }
}

/// Takes `n` written bytes off the front of what the client had queued:
/// the partial frame, its private frames, then frames from its cursor. A
/// frame written in part leaves its rest in `partial`.
fn consume(c: &mut ClientConn, mut n: usize, frames: &VecDeque<Bytes>, first_seq: u64) {
    let k = n.min(c.partial.len());
    c.partial.advance(k);
    n -= k;
    while n > 0 {
        // Shared frames are looked at, not cloned (a reference count
        // touched per client per frame), unless one is cut short.
        if let Some(frame) = c.private.front() {
            if n < frame.len() {
                c.partial = frame.slice(n..);
                c.private.pop_front();
                return;
            }
            n -= frame.len();
            c.private.pop_front();
            continue;
        }
        let Some(cursor) = c.cursor else { return };
        c.cursor = Some(cursor + 1);
        let frame = &frames[(cursor - first_seq) as usize];
        if n < frame.len() {
            c.partial = frame.slice(n..);
            return;
        }
        n -= frame.len();
    }
}

/// A client whose socket was full: wait for it (bounded), then back to the
/// shard, which goes on from its cursor.
async fn wait_for_socket(mut c: ClientConn, shard: Arc<Shard>) {
    c.presence.rooms.metrics().ws_socket_waits.inc();
    // `partial` holds at least the frame the socket refused (see
    // `next_into_partial`): writing it through tokio waits properly.
    match tokio::time::timeout(c.send_timeout, write_out(&c.sink, &mut c.partial)).await {
        Ok(Ok(())) => shard.attach(c),
        Ok(Err(e)) => c.drop_for(DropReason::Protocol(e.to_string())),
        Err(_) => c.drop_for(DropReason::SendTimeout),
    }
}

/// Events as frames: a lone event bare, more as `batch` frames of at most
/// [`MAX_BATCH_EVENTS`] events and about [`MAX_BATCH_BYTES`] bytes, in
/// order.
pub(crate) fn frames_of(events: &[Utf8Bytes]) -> Vec<Utf8Bytes> {
    let mut frames = Vec::new();
    let mut start = 0;
    while start < events.len() {
        let mut end = start;
        let mut bytes = 0;
        while end < events.len() && end - start < MAX_BATCH_EVENTS && (end == start || bytes < MAX_BATCH_BYTES) {
            bytes += events[end].len();
            end += 1;
        }
        frames.push(frame_text(&events[start..end]));
        start = end;
    }
    frames
}

/// One event bare; several as a `batch` with the already-serialized events
/// spliced in (no event is serialized twice).
fn frame_text(events: &[Utf8Bytes]) -> Utf8Bytes {
    if let [one] = events {
        return one.clone();
    }
    let len: usize = events.iter().map(|e| e.len() + 1).sum();
    let mut s = String::with_capacity(len + 32);
    s.push_str(r#"{"type":"batch","events":"#);
    super::events::push_array(&mut s, events.iter());
    s.push('}');
    Utf8Bytes::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(n: usize, len: usize) -> Utf8Bytes {
        let pad = "x".repeat(len.saturating_sub(30));
        Utf8Bytes::from(format!(r#"{{"type":"chat","id":{n},"t":"{pad}"}}"#))
    }

    fn ids(frame: &Utf8Bytes) -> Vec<u64> {
        let v: serde_json::Value = serde_json::from_str(frame.as_str()).expect("valid json");
        match v["type"].as_str() {
            Some("batch") => v["events"].as_array().expect("events").iter().filter_map(|e| e["id"].as_u64()).collect(),
            _ => v["id"].as_u64().into_iter().collect(),
        }
    }

    #[test]
    fn a_frame_waits_for_the_window_unless_the_round_has_run_that_long() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let window = ms(10);
        // The first frame of a shard goes at once.
        assert!(may_frame(t0, None, window, None));
        // A round's first take, and a take in a round younger than the
        // window, wait for the window since the last frame.
        assert!(!may_frame(t0 + ms(4), Some(t0), window, None));
        assert!(!may_frame(t0 + ms(4), Some(t0), window, Some(t0 + ms(1))));
        assert!(may_frame(t0 + ms(10), Some(t0), window, None));
        // Midway through a round that has run the window: at once, however
        // recent the last frame (it was taken earlier in this round).
        assert!(may_frame(t0 + ms(31), Some(t0 + ms(30)), window, Some(t0)));
        assert!(!may_frame(t0 + ms(31), Some(t0 + ms(30)), window, Some(t0 + ms(25))));
        // No window: always.
        assert!(may_frame(t0, Some(t0), Duration::ZERO, None));
    }

    #[test]
    fn wire_frames_have_every_length_form_and_parse_back() {
        use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
        use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
        for len in [0usize, 1, 125, 126, 65_535, 65_536, 70_000] {
            let bytes = wire_frame(OP_TEXT, &vec![b'x'; len]);
            let mut cur = std::io::Cursor::new(&bytes[..]);
            let (header, payload) = FrameHeader::parse(&mut cur).expect("valid").expect("complete header");
            assert!(header.is_final && header.mask.is_none(), "{len}: final and unmasked");
            assert_eq!(header.opcode, OpCode::Data(Data::Text));
            assert_eq!(payload, len as u64);
            assert_eq!(cur.position() as usize + len, bytes.len(), "{len}: header then payload, nothing else");
        }
        let close = close_frame(1008, &"é".repeat(100));
        assert_eq!(&close[..2], &[0x88, 2 + 122], "a close frame's payload stays within 125 bytes, cut between characters");
        assert_eq!(&close[2..4], &1008u16.to_be_bytes());
        assert!(std::str::from_utf8(&close[4..]).is_ok());
    }

    #[test]
    fn a_lone_event_is_its_own_frame_and_more_share_one_in_order() {
        let one = frames_of(&[ev(1, 40)]);
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].as_str(), ev(1, 40).as_str(), "bare, byte for byte");
        let three = frames_of(&[ev(1, 40), ev(2, 40), ev(3, 40)]);
        assert_eq!(three.len(), 1);
        assert!(three[0].as_str().starts_with(r#"{"type":"batch","events":[{"type":"chat","id":1"#));
        assert_eq!(ids(&three[0]), [1, 2, 3]);
        assert!(frames_of(&[]).is_empty());
    }

    #[test]
    fn frames_are_cut_by_event_count_and_bytes_and_keep_every_event_once() {
        let many: Vec<Utf8Bytes> = (0..MAX_BATCH_EVENTS * 2 + 5).map(|n| ev(n, 40)).collect();
        let frames = frames_of(&many);
        assert_eq!(frames.len(), 3);
        assert_eq!(ids(&frames[0]).len(), MAX_BATCH_EVENTS);
        let all: Vec<u64> = frames.iter().flat_map(ids).collect();
        assert_eq!(all, (0..many.len() as u64).collect::<Vec<_>>());

        // Just over half the cap each: two reach it, so two per frame.
        let big: Vec<Utf8Bytes> = (0..6).map(|n| ev(n, MAX_BATCH_BYTES / 2 + 100)).collect();
        let frames = frames_of(&big);
        assert_eq!(frames.len(), 3, "two such events per frame");
        assert!(frames.iter().all(|f| f.len() < MAX_BATCH_BYTES + 1024));
        let huge = frames_of(&[ev(0, MAX_BATCH_BYTES * 2), ev(1, 40)]);
        assert_eq!(huge.len(), 2, "an event over the cap goes alone");
        assert_eq!(huge.iter().flat_map(ids).collect::<Vec<_>>(), [0, 1]);
    }
}
