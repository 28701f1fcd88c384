//! Many client sockets read on one thread with epoll (level triggered):
//! one `read` per ready socket per wait, into one reused buffer. The room
//! bench's WebSocket listeners ([`crate::room_client::ListenLoop`]) and,
//! with `--listen-pause-us`, the fan-out's RTMP players
//! ([`crate::rtmp::PlayerLoop`]) run on it.
//!
//! Why a loop of our own instead of a tokio task per socket: a wake-up, a
//! poll and readiness bookkeeping per read are bench CPU the server does not
//! get on a shared machine. And why callers may pause once caught up: on
//! loopback, a send to a socket whose reader sleeps in `epoll_wait` runs
//! that reader's wake-up inside the *server's* `sendmsg` (`sock_def_readable`
//! in the server's perf profile), a cost a server sending to viewers on
//! other machines does not have; a reader that sleeps a moment after
//! catching up is woken once for many sends.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::time::Duration;

use rustix::event::epoll;

/// Longest pause a `--listen-pause-us` may ask for, in microseconds.
pub(crate) const MAX_PAUSE_US: u64 = 100_000;

/// What a [`ReadLoop`] does with each connection's bytes.
pub(crate) trait ConnHandler {
    /// Per-connection state kept by the loop.
    type Conn;
    /// Bytes read from connection `id` (`None`: it reached end of stream
    /// or a read failed; it is closed after this call). Returns false to
    /// close it.
    fn read(&mut self, id: usize, tcp: &std::net::TcpStream, conn: &mut Self::Conn, data: Option<&[u8]>) -> bool;
    /// Connection `id` was closed; its state comes back.
    fn closed(&mut self, id: usize, conn: Self::Conn);
    /// Called after each batch of ready sockets (flush counters here).
    fn batch_done(&mut self) {}
}

/// The sockets of one reading thread, each with its state `C`.
pub(crate) struct ReadLoop<C> {
    epoll: OwnedFd,
    conns: Vec<Option<(std::net::TcpStream, C)>>,
    scratch: Vec<u8>,
    /// Sleep once a poll has taken every ready socket (zero: none).
    pause: Duration,
}

impl<C> ReadLoop<C> {
    /// A loop whose [`poll`](Self::poll) sleeps `pause` once it has read
    /// every ready socket (zero: it returns at once).
    pub(crate) fn new(pause: Duration) -> anyhow::Result<Self> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        Ok(ReadLoop { epoll, conns: Vec::new(), scratch: vec![0; 64 * 1024], pause })
    }

    /// Adds a connection (made non-blocking here); returns its id.
    pub(crate) fn add(&mut self, tcp: std::net::TcpStream, conn: C) -> anyhow::Result<usize> {
        tcp.set_nonblocking(true)?;
        let id = self.conns.len();
        epoll::add(&self.epoll, &tcp, epoll::EventData::new_u64(id as u64), epoll::EventFlags::IN)?;
        self.conns.push(Some((tcp, conn)));
        Ok(id)
    }

    /// Hands `data` (read elsewhere, say with a handshake's reply) to
    /// `handler` as if connection `id` had just read it.
    pub(crate) fn feed<H: ConnHandler<Conn = C>>(&mut self, id: usize, data: &[u8], handler: &mut H) {
        let Some(Some((tcp, conn))) = self.conns.get_mut(id) else { return };
        if !data.is_empty() && !handler.read(id, tcp, conn, Some(data)) {
            self.close(id, handler);
        }
    }

    /// Waits up to `timeout` for ready sockets and handles them; `true`
    /// when that took every ready socket (fewer than one wait's worth), and
    /// then it sleeps the loop's pause.
    pub(crate) fn poll<H: ConnHandler<Conn = C>>(&mut self, timeout: Duration, handler: &mut H) -> anyhow::Result<bool> {
        let mut events = [epoll::Event { flags: epoll::EventFlags::empty(), data: epoll::EventData::new_u64(0) }; 1024];
        let ts = rustix::event::Timespec { tv_sec: timeout.as_secs() as i64, tv_nsec: i64::from(timeout.subsec_nanos()) };
        let n = match epoll::wait(&self.epoll, &mut events[..], Some(&ts)) {
            Ok(n) => n,
            Err(rustix::io::Errno::INTR) => 0,
            Err(e) => return Err(e.into()),
        };
        for ev in &events[..n] {
            let id = ev.data.u64() as usize;
            let Some(Some((tcp, conn))) = self.conns.get_mut(id) else { continue };
            let keep = match (&*tcp).read(&mut self.scratch) {
                Ok(0) => {
                    handler.read(id, tcp, conn, None);
                    false
                }
                Ok(got) => handler.read(id, tcp, conn, Some(&self.scratch[..got])),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::Interrupted => true,
                Err(_) => {
                    handler.read(id, tcp, conn, None);
                    false
                }
            };
            if !keep {
                self.close(id, handler);
            }
        }
        handler.batch_done();
        let caught_up = n < events.len();
        if caught_up && !self.pause.is_zero() {
            std::thread::sleep(self.pause);
        }
        Ok(caught_up)
    }

    /// Closes connection `id` and gives its state to `handler`.
    pub(crate) fn close<H: ConnHandler<Conn = C>>(&mut self, id: usize, handler: &mut H) {
        if let Some((tcp, conn)) = self.conns.get_mut(id).and_then(Option::take) {
            let _ = epoll::delete(&self.epoll, &tcp);
            handler.closed(id, conn);
        }
    }

    /// Closes every connection still open, giving each state to `handler`.
    pub(crate) fn close_all<H: ConnHandler<Conn = C>>(&mut self, handler: &mut H) {
        for id in 0..self.conns.len() {
            self.close(id, handler);
        }
    }
}
