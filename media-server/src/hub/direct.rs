//! Direct delivery: the hub writes a batch to many caught-up viewers from a
//! few fan-out tasks, instead of waking one task per viewer per batch.
//!
//! A viewer that has written everything it was given hands the hub a
//! [`DirectSink`] ([`Subscription::go_direct`](super::Subscription::go_direct)).
//! From then on one of the channel's fan-out shards (one task per runtime
//! worker) offers it every batch, in order; the sink writes it to its socket
//! without waiting. A sink that cannot take a batch at once (its socket is
//! full) keeps the rest queued, leaves direct delivery and wakes its own task,
//! which drains the queue and catches up through its subscription (skipping
//! forward to a keyframe if it fell too far behind, as any slow viewer),
//! then goes direct again. The publisher never waits for any of it: it only
//! appends the batch to each shard's queue.
//!
//! Sequence numbers make the hand-over safe without holding locks across
//! writes: every batch has one, a sink's [`Cursor`] says which it needs next,
//! so a batch offered twice is skipped and a batch missed is noticed.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::media::{Frame, FrameKind};

/// Frames that leave together, with their place in the channel's sequence.
/// With merged writes (`hub.merge_write_ms`, 35 ms by default) a batch holds
/// the frames that arrived within that long, so a viewer writes about 21
/// times a second at 30 fps with AAC instead of once per message; without
/// them, audio of a channel with video rides with the next video frame.
#[derive(Debug, Clone)]
pub struct Batch(Arc<BatchInner>);

#[derive(Debug)]
struct BatchInner {
    seq: u64,
    frames: Vec<Arc<Frame>>,
    rtmp_chunks: OnceLock<Bytes>,
}

impl Batch {
    pub(super) fn new(seq: u64, frames: Vec<Arc<Frame>>) -> Batch {
        Batch(Arc::new(BatchInner { seq, frames, rtmp_chunks: OnceLock::new() }))
    }

    /// This batch's place in its channel: one more than the batch before.
    pub fn seq(&self) -> u64 {
        self.0.seq
    }

    /// The frames, in order.
    pub fn frames(&self) -> &[Arc<Frame>] {
        &self.0.frames
    }

    /// Every frame as RTMP chunks for the common play session (message
    /// stream id 1), back to back in one buffer: built once per batch, then
    /// one `send` per viewer (borrowed: a clone per viewer would be two
    /// atomic updates of one shared count, from every fan-out worker).
    pub fn rtmp_chunks(&self, chunk_size: usize) -> &Bytes {
        self.0
            .rtmp_chunks
            .get_or_init(|| match self.frames() {
                [one] => one.rtmp_chunks(chunk_size),
                frames => {
                    let parts: Vec<Bytes> = frames.iter().map(|f| f.rtmp_chunks(chunk_size)).collect();
                    let mut all = BytesMut::with_capacity(parts.iter().map(Bytes::len).sum());
                    parts.iter().for_each(|p| all.extend_from_slice(p));
                    all.freeze()
                }
            })
    }
}

/// Where a viewer stands in its channel: the batch it needs next, and
/// whether it is waiting for a keyframe after falling behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// Sequence number of the next batch this viewer needs.
    pub next_seq: u64,
    /// Frames are skipped until the next video keyframe.
    pub waiting_for_key: bool,
}

/// What a [`Cursor`] makes of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Already delivered (offered twice across a hand-over): skip it.
    Seen,
    /// Batches before this one never reached the viewer: it must catch up.
    Missed,
    /// The one needed next; the cursor moved past it.
    Deliver,
}

impl Cursor {
    /// Places a batch against the cursor, moving past it when it is next.
    pub fn step(&mut self, seq: u64) -> Step {
        match seq.cmp(&self.next_seq) {
            std::cmp::Ordering::Less => Step::Seen,
            std::cmp::Ordering::Greater => Step::Missed,
            std::cmp::Ordering::Equal => {
                self.next_seq += 1;
                Step::Deliver
            }
        }
    }

    /// Whether a frame may go out: after a skip forward, nothing but
    /// headers and metadata until a video keyframe.
    pub fn admit(&mut self, f: &Frame) -> bool {
        if !self.waiting_for_key || f.sequence_header || f.kind == FrameKind::Metadata {
            return true;
        }
        if f.is_video() && f.keyframe {
            self.waiting_for_key = false;
            return true;
        }
        false
    }
}

/// A viewer's socket side, written by the hub's fan-out while it keeps up.
pub trait DirectSink: Send + Sync + 'static {
    /// Direct delivery starts (or resumes) at `cursor`. Called under the
    /// channel's lock, so no batch from `cursor` on has been sent yet.
    /// Returns whether the hub must register the sink with a shard (false:
    /// it is still registered from an earlier round).
    fn arm(&self, cursor: Cursor) -> bool;
    /// The next batch, in sequence order. Returns false to be unregistered:
    /// the sink left direct delivery (its socket was full, it missed a
    /// batch, it closed) and its own task takes over.
    fn offer(&self, batch: &Batch) -> bool;
    /// The channel ended after its last batch was offered.
    fn end(&self);
    /// Reads what [`offer`](Self::offer) touches first, without taking
    /// anything, and returns something derived from it. The fan-out calls it
    /// on the next few sinks before their offers, so their cache misses are
    /// in flight together instead of one per offer.
    fn warm(&self) -> usize {
        0
    }
}

/// Sinks a fan-out pass reads ahead of their offers.
const WARM_AHEAD: usize = 16;

/// Offers `batch` to every sink in order, keeping those that stay direct
/// (in their order). Each sink lives in an allocation of its own, and its
/// lock word was a cache miss per offer paid one at a time (the lock's
/// `cmpxchg` held 70% of `offer`'s own samples in perf at 1000 viewers), so
/// every [`WARM_AHEAD`] sinks one pass reads the next ones' first.
fn offer_all(sinks: &mut Vec<Arc<dyn DirectSink>>, batch: &Batch) {
    let mut kept = 0;
    for i in 0..sinks.len() {
        if i % WARM_AHEAD == 0 {
            let warmed = sinks[i..].iter().take(WARM_AHEAD).fold(0, |acc, s| acc ^ s.warm());
            std::hint::black_box(warmed);
        }
        if sinks[i].offer(batch) {
            sinks.swap(kept, i);
            kept += 1;
        }
    }
    sinks.truncate(kept);
}

/// Most batches waiting in a shard's queue; a shard further behind drops
/// the oldest and its sinks catch up on their own (as slow viewers).
const SHARD_QUEUE_BATCHES: usize = 256;

/// One fan-out task's share of a channel's direct viewers.
pub(super) struct Shard {
    inner: Mutex<ShardInner>,
    wake: Notify,
}

#[derive(Default)]
struct ShardInner {
    queue: VecDeque<Batch>,
    sinks: Vec<Arc<dyn DirectSink>>,
    closed: bool,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard").field("sinks", &self.len()).finish()
    }
}

impl Shard {
    /// A shard and its task (needs a tokio runtime).
    pub(super) fn spawn(channel: &str) -> Arc<Shard> {
        let shard = Arc::new(Shard { inner: Mutex::new(ShardInner::default()), wake: Notify::new() });
        let run = Arc::clone(&shard);
        let channel = channel.to_string();
        tokio::spawn(async move {
            run.run().await;
            tracing::debug!(%channel, "fan-out shard ended");
        });
        shard
    }

    /// Sinks registered now.
    pub(super) fn len(&self) -> usize {
        self.inner.lock().sinks.len()
    }

    pub(super) fn register(&self, sink: Arc<dyn DirectSink>) {
        self.inner.lock().sinks.push(sink);
    }

    /// Queues a batch for this shard's sinks (the publisher, under the
    /// channel's lock: cheap, never waits).
    pub(super) fn push(&self, batch: &Batch) {
        let mut inner = self.inner.lock();
        if inner.queue.len() >= SHARD_QUEUE_BATCHES {
            inner.queue.pop_front();
        }
        inner.queue.push_back(batch.clone());
        drop(inner);
        self.wake.notify_one();
    }

    /// The channel ended: deliver what is queued, then end every sink.
    pub(super) fn close(&self) {
        self.inner.lock().closed = true;
        self.wake.notify_one();
    }

    async fn run(&self) {
        let mut batches = VecDeque::new();
        loop {
            self.wake.notified().await;
            loop {
                let (mut sinks, closed) = {
                    let mut inner = self.inner.lock();
                    std::mem::swap(&mut batches, &mut inner.queue);
                    (std::mem::take(&mut inner.sinks), inner.closed)
                };
                if batches.is_empty() && !closed {
                    self.inner.lock().sinks.append(&mut sinks);
                    break;
                }
                // Writes happen outside the lock: the publisher and newly
                // arriving viewers are never held up by them.
                for batch in batches.drain(..) {
                    offer_all(&mut sinks, &batch);
                }
                if closed {
                    let late = std::mem::take(&mut self.inner.lock().sinks);
                    sinks.iter().chain(late.iter()).for_each(|s| s.end());
                    return;
                }
                // Sinks registered meanwhile start after these batches.
                let mut inner = self.inner.lock();
                sinks.append(&mut inner.sinks);
                inner.sinks = sinks;
            }
        }
    }
}
