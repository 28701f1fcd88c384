//! A connection's write side, shared by its own task and, while the
//! connection plays and keeps up, the channel's fan-out
//! ([`crate::hub::direct`]).
//!
//! Everything goes through one queue under one lock, so the two writers
//! never interleave inside a message: the fan-out writes a batch only while
//! the queue is empty and the sink is armed ([`Mode::Direct`]); whoever
//! finds the socket full leaves the rest queued and hands the connection
//! back to its task ([`Mode::Owner`]), which waits for the socket and
//! catches up through its subscription.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use parking_lot::Mutex;
use rustix::io::Errno;
use rustix::net::SendFlags;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;

use crate::hub::{Batch, Cursor, DirectSink, Step, Stream};

/// Who drives the writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// The connection's task (the queue may hold bytes).
    Owner,
    /// The fan-out, batch by batch (the queue is empty).
    Direct,
    /// The channel ended while direct: tell the player and close.
    Ended,
    /// A write failed while direct.
    Failed(io::ErrorKind),
    /// The connection is gone: the fan-out lets go of it.
    Closed,
}

/// Where direct writes are counted.
pub struct Meter {
    /// The channel's bytes (metering), `None` for an unmetered player.
    pub stream: Option<Arc<Stream>>,
    /// `westream_bytes_out_total{protocol="rtmp"}`, `None` likewise.
    pub bytes_out: Option<prometheus::IntCounter>,
    /// Frames skipped while waiting for a keyframe.
    pub frames_dropped: prometheus::IntCounter,
    /// `westream_rtmp_direct_viewers`.
    pub direct_viewers: prometheus::IntGauge,
    /// `westream_rtmp_handbacks_total`.
    pub handbacks: prometheus::IntCounter,
}

/// `repr(C)`: what every offer reads comes first, in the [`Writer`]'s first
/// cache line (see there).
#[repr(C)]
struct State {
    mode: Mode,
    /// Known to a fan-out shard (it may still offer batches).
    registered: bool,
    cursor: Cursor,
    /// Bytes the fan-out wrote and did not add to the shared counters yet.
    unmetered: u64,
    queue: VecDeque<Bytes>,
    meter: Option<Meter>,
}

/// The fan-out adds its bytes to the shared (contended) counters in steps
/// of this much per player; the rest when the player leaves direct delivery.
const METER_STEP: u64 = 64 * 1024;

impl State {
    fn meter_flush(&mut self) {
        let n = std::mem::take(&mut self.unmetered);
        if let (Some(m), true) = (&self.meter, n > 0) {
            if let Some(s) = &m.stream {
                s.bytes_out.fetch_add(n, Ordering::Relaxed);
            }
            if let Some(c) = &m.bytes_out {
                c.inc_by(n);
            }
        }
    }
}

/// The write half of an RTMP connection.
///
/// `repr(C, align(64))`: the fan-out offers every batch to a thousand of
/// these one after another, and each lives in an allocation of its own, so
/// what an offer reads (the fd, the chunk size, the lock word, the mode,
/// the cursor, the byte count) sits in the first cache line, which
/// [`DirectSink::warm`] loads ahead of the offer with one read (spread over
/// two lines, the second was a miss per offer again).
#[repr(C, align(64))]
pub struct Writer {
    /// The same socket as `half`, duplicated so the fan-out's `send` reads
    /// the fd from memory it touches anyway (the write half keeps it behind
    /// one more pointer: a cache miss per player per batch).
    fd: OwnedFd,
    chunk_size: usize,
    state: Mutex<State>,
    half: OwnedWriteHalf,
    wake: Notify,
}

impl Writer {
    /// Wraps a connection's write half; `chunk_size` is what the server
    /// announced (the shared chunk encodings use it).
    pub fn new(half: OwnedWriteHalf, chunk_size: usize) -> io::Result<Arc<Writer>> {
        let socket: &tokio::net::TcpStream = half.as_ref();
        let fd = socket.as_fd().try_clone_to_owned()?;
        Ok(Arc::new(Writer {
            fd,
            chunk_size,
            state: Mutex::new(State {
                mode: Mode::Owner,
                registered: false,
                cursor: Cursor { next_seq: 0, waiting_for_key: false },
                unmetered: 0,
                queue: VecDeque::new(),
                meter: None,
            }),
            half,
            wake: Notify::new(),
        }))
    }

    /// Sets the kernel send buffer (`SO_SNDBUF`) of the socket.
    pub fn set_send_buffer(&self, bytes: usize) -> io::Result<()> {
        rustix::net::sockopt::set_socket_send_buffer_size(&self.fd, bytes).map_err(io::Error::from)
    }

    /// Sets where direct writes are counted (before going direct).
    pub fn set_meter(&self, meter: Meter) {
        self.state.lock().meter = Some(meter);
    }

    /// Who drives the writes now.
    pub fn mode(&self) -> Mode {
        self.state.lock().mode.clone()
    }

    /// Where the fan-out left off (meaningful once [`Mode::Owner`] again).
    pub fn cursor(&self) -> Cursor {
        self.state.lock().cursor
    }

    /// Resolves when the fan-out handed the connection back or ended it.
    pub async fn handed_back(&self) {
        self.wake.notified().await
    }

    /// Writes `more` after anything queued, waiting for the socket as
    /// needed; takes the writes back from the fan-out if it has to wait.
    /// Returns the bytes written.
    pub async fn flush(&self, more: &mut VecDeque<Bytes>) -> io::Result<usize> {
        let mut total = 0;
        loop {
            {
                let mut st = self.state.lock();
                st.queue.append(more);
                total += self.write_queued(&mut st)?;
                if st.queue.is_empty() {
                    return Ok(total);
                }
                if st.mode == Mode::Direct {
                    // The fan-out writes only into an empty queue: it backs
                    // off (and lets go of this writer at its next batch).
                    Self::set_mode(&mut st, Mode::Owner);
                }
            }
            self.half.writable().await?;
        }
    }

    /// Writes from the queue until it is empty or the socket is full.
    fn write_queued(&self, st: &mut State) -> io::Result<usize> {
        let mut total = 0;
        while !st.queue.is_empty() {
            let mut slices = [IoSlice::new(&[]); 64];
            let k = slices.len().min(st.queue.len());
            for (slot, b) in slices.iter_mut().zip(st.queue.iter()) {
                *slot = IoSlice::new(b);
            }
            let res =
                if k == 1 { self.half.try_write(&st.queue[0]) } else { self.half.try_write_vectored(&slices[..k]) };
            let mut left = match res {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            };
            total += left;
            while left > 0 {
                let front = st.queue.front_mut().expect("written bytes were queued");
                if front.len() <= left {
                    left -= front.len();
                    st.queue.pop_front();
                } else {
                    front.advance(left);
                    left = 0;
                }
            }
        }
        Ok(total)
    }

    /// The connection ends: a shard still holding it lets go at its next
    /// batch (and with it the socket).
    pub fn close(&self) {
        let mut st = self.state.lock();
        Self::set_mode(&mut st, Mode::Closed);
        drop(st);
        // The socket closes now, not when the shard lets go of this writer
        // (for a channel with no batches coming, that may be much later).
        // It fails only if the peer already went; nothing to do then.
        let _ = rustix::net::shutdown(&self.fd, rustix::net::Shutdown::Both);
    }

    /// Changes mode, keeping the direct-viewer gauge, the hand-back count
    /// and the metering right.
    fn set_mode(st: &mut State, mode: Mode) {
        let was = st.mode == Mode::Direct;
        let is = mode == Mode::Direct;
        if was && !is {
            st.meter_flush();
            if let (Some(m), Mode::Owner) = (&st.meter, &mode) {
                m.handbacks.inc();
            }
        }
        if let (Some(m), true) = (&st.meter, was != is) {
            if is {
                m.direct_viewers.inc();
            } else {
                m.direct_viewers.dec();
            }
        }
        st.mode = mode;
    }

    /// Leaves direct delivery: the task takes over (or ends).
    fn hand_back(&self, st: &mut State, mode: Mode) {
        Self::set_mode(st, mode);
        st.registered = false;
        self.wake.notify_one();
    }
}

impl DirectSink for Writer {
    fn arm(&self, cursor: Cursor) -> bool {
        let mut st = self.state.lock();
        debug_assert!(st.queue.is_empty());
        st.cursor = cursor;
        Self::set_mode(&mut st, Mode::Direct);
        !std::mem::replace(&mut st.registered, true)
    }

    fn warm(&self) -> usize {
        // The lock word: its cache line holds all an offer reads.
        usize::from(self.state.is_locked())
    }

    fn offer(&self, batch: &Batch) -> bool {
        let mut st = self.state.lock();
        if st.mode != Mode::Direct {
            st.registered = false;
            return false;
        }
        match st.cursor.step(batch.seq()) {
            Step::Seen => return true,
            Step::Missed => {
                self.hand_back(&mut st, Mode::Owner);
                return false;
            }
            Step::Deliver => {}
        }
        // `(bytes written, whether all went)`.
        let written = if st.cursor.waiting_for_key {
            // Only some frames go out: one buffer per frame.
            for f in batch.frames() {
                if st.cursor.admit(f) {
                    st.queue.push_back(f.rtmp_chunks(self.chunk_size));
                } else if let Some(m) = &st.meter {
                    m.frames_dropped.inc();
                }
            }
            self.write_queued(&mut st).map(|n| (n, st.queue.is_empty()))
        } else {
            // The common case: the whole batch, one buffer, one `send`
            // (straight to the kernel: tokio's readiness is left alone, and
            // the task's own first write after a hand-back finds the socket
            // full and waits properly). The queue is empty while direct, and
            // is only touched when the socket takes less than all.
            let all = batch.rtmp_chunks(self.chunk_size);
            match rustix::net::send(&self.fd, all, SendFlags::DONTWAIT | SendFlags::NOSIGNAL) {
                Ok(n) if n == all.len() => Ok((n, true)),
                Ok(n) => {
                    st.queue.push_back(all.slice(n..));
                    Ok((n, false))
                }
                Err(Errno::AGAIN | Errno::INTR) => {
                    st.queue.push_back(all.clone());
                    Ok((0, false))
                }
                Err(e) => Err(io::Error::from(e)),
            }
        };
        match written {
            Ok((n, all_went)) => {
                st.unmetered += n as u64;
                if st.unmetered >= METER_STEP {
                    st.meter_flush();
                }
                if all_went {
                    return true;
                }
                // The socket is full: the task waits for it, then catches up.
                self.hand_back(&mut st, Mode::Owner);
                false
            }
            Err(e) => {
                self.hand_back(&mut st, Mode::Failed(e.kind()));
                false
            }
        }
    }

    fn end(&self) {
        let mut st = self.state.lock();
        st.registered = false;
        // A task that already took over sees the end through its own
        // subscription, after the frames it still has to write.
        if st.mode == Mode::Direct {
            self.hand_back(&mut st, Mode::Ended);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field the fan-out's offer reads lies in the writer's first
    /// cache line, the one `warm` loads.
    #[tokio::test]
    async fn what_an_offer_reads_shares_one_cache_line() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = tokio::net::TcpStream::connect(listener.local_addr().expect("addr")).await.expect("connect");
        let (_read, half) = client.into_split();
        let w = Writer::new(half, 4096).expect("writer");
        let base = Arc::as_ptr(&w) as usize;
        assert_eq!(base % 64, 0, "a writer starts a cache line");
        let state = std::mem::offset_of!(Writer, state);
        let data = w.state.data_ptr() as usize - base;
        assert!(state < data, "the lock word comes before the state it guards");
        let hot_end = data + std::mem::offset_of!(State, unmetered) + std::mem::size_of::<u64>();
        assert!(hot_end <= 64, "fd, chunk size, lock, mode, cursor and count end at byte {hot_end}");
        assert!(std::mem::offset_of!(Writer, fd) < state && std::mem::offset_of!(Writer, chunk_size) < state);
    }
}
