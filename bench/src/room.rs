//! `westream-bench room`: thousands of WebSocket clients in one room while
//! senders chat and send gifts at fixed rates; fan-out latency, delivery and
//! the server's CPU and memory.
//!
//! Latency: a chat message carries its send time (`rb:{µs since the run's
//! start}`), so a measuring client gets send-to-delivery through the whole
//! server path; a gift event carries the server's `ts_ms` (the gift's time,
//! taken when the server handles the request, before its store write), so
//! gift latency is that to delivery, in milliseconds, and includes the
//! write. `chat_server_to_client_ms` runs from a chat event's `ts_ms` to
//! delivery: the fan-out's part of chat latency. Only one client in
//! `--measure-every` parses JSON (a `batch` frame's events one by one); the
//! others count frames, so the bench's own CPU stays small next to the
//! server's. Listeners are raw sockets with a frame splitter, all read by
//! one epoll thread ([`crate::room_client::ListenLoop`]), not tungstenite
//! clients or tokio tasks: one `read` and a header scan per ready socket.
//! `frames_per_client_per_s` shows what the room's batching saves.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use tokio_tungstenite::tungstenite::Message;

use crate::procstat::{clock_ticks_per_sec, cpu_seconds_between, sample_tree, ProcSample};
use crate::stats::Percentiles;

/// `room` arguments.
#[derive(Args, Debug, Clone)]
pub(crate) struct RoomArgs {
    /// The server's HTTP base URL (control API and WebSocket on it).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The room (channel).
    #[arg(long, default_value = "demo")]
    channel: String,
    /// Listening WebSocket clients.
    #[arg(long, default_value_t = 10_000)]
    clients: u32,
    /// Accounts that chat and send gifts (each also holds a WebSocket).
    #[arg(long, default_value_t = 300)]
    senders: u32,
    /// Chat messages per second over all senders.
    #[arg(long, default_value_t = 100)]
    chat_per_sec: u32,
    /// Gifts per second over all senders.
    #[arg(long, default_value_t = 50)]
    gifts_per_sec: u32,
    /// The gift sent.
    #[arg(long, default_value = "kiss")]
    gift: String,
    /// Measured window.
    #[arg(long, default_value_t = 30)]
    duration_secs: u64,
    /// One client in this many parses events and records latency.
    #[arg(long, default_value_t = 20)]
    measure_every: u32,
    /// The server's PID, for its CPU and memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Once the listeners' thread has read every ready socket, it sleeps
    /// this long before waiting again (0: it waits at once, as the bench did
    /// before 2026-12-04 evening). On loopback a send to a socket whose
    /// reader sleeps in `epoll_wait` also pays that reader's wake-up inside
    /// the server's `sendmsg` (14% of the server's perf samples at 10,000
    /// clients), a cost a server sending to viewers on other machines does
    /// not have; the pause lets one wake-up cover many sends, so the bench
    /// stands for remote clients. The pause counts in the measured latency.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=crate::read_loop::MAX_PAUSE_US))]
    listen_pause_us: u64,
}

#[derive(Default)]
struct Counters {
    frames: AtomicU64,
    chat_seen: AtomicU64,
    gifts_seen: AtomicU64,
    closed_by_server: AtomicU64,
    chat_sent: AtomicU64,
    chat_refused: AtomicU64,
    gifts_ok: AtomicU64,
    gifts_failed: AtomicU64,
}

struct Sender {
    token: String,
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn ws_url(base: &str, channel: &str, token: Option<&str>) -> String {
    let ws = base.replacen("http://", "ws://", 1);
    match token {
        Some(t) => format!("{ws}/v1/rooms/{channel}/ws?token={t}"),
        None => format!("{ws}/v1/rooms/{channel}/ws"),
    }
}

async fn post(http: &reqwest::Client, url: String, token: Option<&str>, body: serde_json::Value) -> anyhow::Result<serde_json::Value> {
    let mut req = http.post(&url).header("Idempotency-Key", format!("rb-{}", rand_u64())).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.with_context(|| format!("POST {url}"))?;
    let status = resp.status();
    let json: serde_json::Value = resp.json().await.unwrap_or_default();
    if !status.is_success() {
        bail!("POST {url}: {status} {json}");
    }
    Ok(json)
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos() ^ u128::from(unix_ms()));
    h.finish()
}

/// Signs up one sender and funds it from the dev faucet.
async fn make_sender(http: &reqwest::Client, base: &str, run: u64, i: u32) -> anyhow::Result<Sender> {
    let handle = format!("rb{}x{i}", run % 1_000_000);
    let account = post(http, format!("{base}/v1/accounts"), None, serde_json::json!({ "handle": handle })).await?;
    let token = account["token"].as_str().ok_or_else(|| anyhow!("sign-up answered no token: {account}"))?.to_string();
    post(http, format!("{base}/v1/wallet/faucet"), Some(&token), serde_json::json!({ "amount_micro_we": 100_000_000 })).await?;
    Ok(Sender { token })
}

/// An event as the bench reads it: only the fields it measures, borrowed
/// where it can (unknown fields are skipped without building a tree).
#[derive(serde::Deserialize)]
struct WireEvent<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    text: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    ts_ms: Option<u64>,
    /// A `batch` frame's events.
    #[serde(default, borrow)]
    events: Vec<WireEvent<'a>>,
}

/// Latency samples one measuring client gathered since its last flush.
#[derive(Default)]
struct Samples {
    chat_us: Vec<u32>,
    /// The chat event's `ts_ms` (the server's clock when it took the
    /// message) to arrival: the fan-out's part of `chat_us`, in ms.
    chat_out_ms: Vec<u32>,
    gift_ms: Vec<u32>,
}

/// Counts one parsed event and records its latency.
fn record_event(e: &WireEvent<'_>, start: Instant, counters: &Counters, out: &mut Samples) {
    match &*e.kind {
        "chat" => {
            counters.chat_seen.fetch_add(1, Ordering::Relaxed);
            if let Some(sent) = e.text.as_deref().and_then(|t| t.strip_prefix("rb:")).and_then(|t| t.parse::<u64>().ok()) {
                let now = start.elapsed().as_micros() as u64;
                out.chat_us.push(now.saturating_sub(sent).min(u64::from(u32::MAX)) as u32);
            }
            if let Some(ts) = e.ts_ms {
                out.chat_out_ms.push(unix_ms().saturating_sub(ts) as u32);
            }
        }
        "gift" => {
            counters.gifts_seen.fetch_add(1, Ordering::Relaxed);
            if let Some(ts) = e.ts_ms {
                out.gift_ms.push(unix_ms().saturating_sub(ts) as u32);
            }
        }
        _ => {}
    }
}

/// Where measuring clients pool their samples.
#[derive(Default)]
struct Pool {
    chat_us: Mutex<Vec<u32>>,
    chat_out_ms: Mutex<Vec<u32>>,
    gift_ms: Mutex<Vec<u32>>,
}

impl Pool {
    fn take(&self, s: &mut Samples) {
        if !s.chat_us.is_empty() {
            self.chat_us.lock().append(&mut s.chat_us);
        }
        if !s.chat_out_ms.is_empty() {
            self.chat_out_ms.lock().append(&mut s.chat_out_ms);
        }
        if !s.gift_ms.is_empty() {
            self.gift_ms.lock().append(&mut s.gift_ms);
        }
    }
}

/// The listeners, as the epoll loop's sink: every client counts text
/// frames; a measuring one parses them.
struct Listeners {
    measure: Vec<bool>,
    start: Instant,
    counters: Arc<Counters>,
    pool: Arc<Pool>,
    stopped: Arc<AtomicBool>,
    samples: Samples,
    frames: u64,
}

impl crate::room_client::FrameSink for Listeners {
    fn text(&mut self, id: usize, payload: &[u8]) {
        self.frames += 1;
        if !self.measure.get(id).copied().unwrap_or(false) {
            return;
        }
        let Ok(v) = serde_json::from_slice::<WireEvent<'_>>(payload) else { return };
        // A busy room sends several events as one `batch` frame.
        if v.kind == "batch" {
            v.events.iter().for_each(|e| record_event(e, self.start, &self.counters, &mut self.samples));
        } else {
            record_event(&v, self.start, &self.counters, &mut self.samples);
        }
    }

    fn closed(&mut self, _id: usize) {
        if !self.stopped.load(Ordering::Relaxed) {
            self.counters.closed_by_server.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn batch_done(&mut self) {
        self.counters.frames.fetch_add(std::mem::take(&mut self.frames), Ordering::Relaxed);
        self.pool.take(&mut self.samples);
    }
}

/// An upgraded listener for the loop: its socket, what came after the 101,
/// and whether it measures.
type NewListener = (std::net::TcpStream, bytes::BytesMut, bool);

/// The listeners' thread: takes in new connections and reads them all
/// until `done`; dropping the loop closes every socket.
fn listen_loop(new: std::sync::mpsc::Receiver<NewListener>, mut sink: Listeners, done: Arc<AtomicBool>, pause: Duration) -> anyhow::Result<()> {
    let mut lp = crate::room_client::ListenLoop::new(pause)?;
    while !done.load(Ordering::Relaxed) {
        while let Ok((tcp, already, measure)) = new.try_recv() {
            sink.measure.push(measure);
            lp.add(tcp, &already, &mut sink)?;
        }
        lp.poll(Duration::from_millis(5), &mut sink)?;
    }
    Ok(())
}

/// Upgrades one listener and hands it to the loop.
async fn connect_listener(url: String, measure: bool, to_loop: std::sync::mpsc::Sender<NewListener>) -> anyhow::Result<()> {
    let (tcp, already) = crate::room_client::connect(&url).await.context("websocket connect")?;
    let tcp = tcp.into_std().context("socket out of tokio")?;
    to_loop.send((tcp, already, measure)).map_err(|_| anyhow!("the listen loop ended"))?;
    Ok(())
}

/// CPU seconds between two samples, `None` when either is missing.
fn cpu_seconds(before: Option<ProcSample>, after: Option<ProcSample>, ticks: u64) -> Option<f64> {
    (before.is_some() && after.is_some()).then(|| cpu_seconds_between(before, after, ticks))
}

/// Runs the room scenario and prints a JSON report.
pub(crate) async fn room_command(args: RoomArgs) -> anyhow::Result<()> {
    if args.clients + args.senders > 18_000 {
        bail!("--clients plus --senders above 18000 exceeds this machine's fd limit (20000)");
    }
    if args.duration_secs == 0 || args.duration_secs > 600 || args.measure_every == 0 {
        bail!("--duration-secs must be 1..=600 and --measure-every at least 1");
    }
    let base = args.url.trim_end_matches('/').to_string();
    let http = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;
    let run = unix_ms() / 1000;
    eprintln!("room: signing up {} senders", args.senders);
    let mut senders = Vec::new();
    for chunk in (0..args.senders).collect::<Vec<_>>().chunks(50) {
        let made = futures_util::future::join_all(chunk.iter().map(|i| make_sender(&http, &base, run, *i))).await;
        for s in made {
            senders.push(s?);
        }
    }

    let start = Instant::now();
    let counters = Arc::new(Counters::default());
    let pool = Arc::new(Pool::default());
    let stopped = Arc::new(AtomicBool::new(false));
    let stop = tokio_util::sync::CancellationToken::new();
    eprintln!("room: connecting {} clients", args.clients);
    let (to_loop, from_connects) = std::sync::mpsc::channel();
    let done = Arc::new(AtomicBool::new(false));
    let sink = Listeners {
        measure: Vec::with_capacity(args.clients as usize),
        start,
        counters: Arc::clone(&counters),
        pool: Arc::clone(&pool),
        stopped: Arc::clone(&stopped),
        samples: Samples::default(),
        frames: 0,
    };
    let loop_done = Arc::clone(&done);
    let pause = Duration::from_micros(args.listen_pause_us);
    let listen_thread = std::thread::Builder::new()
        .name("room-listeners".into())
        .spawn(move || listen_loop(from_connects, sink, loop_done, pause))
        .context("start the listeners' thread")?;
    let mut listeners = tokio::task::JoinSet::new();
    let connect_deadline = Instant::now() + Duration::from_secs(120);
    for i in 0..args.clients {
        let url = ws_url(&base, &args.channel, None);
        listeners.spawn(connect_listener(url, i % args.measure_every == 0, to_loop.clone()));
        // Ramp: a few hundred handshakes at a time.
        if i % 250 == 249 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if Instant::now() > connect_deadline {
            bail!("connecting the clients took over 120 s");
        }
    }
    // Sender sockets (chat goes out on them; their inbound is drained).
    let mut sinks = Vec::new();
    for s in &senders {
        // A small read buffer: tungstenite zeroes it before every read, and
        // these sockets get every frame of the room too.
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4096);
        let (ws, _) = tokio_tungstenite::connect_async_with_config(ws_url(&base, &args.channel, Some(&s.token)), Some(config), true)
            .await
            .context("sender websocket")?;
        let (sink, mut inbound) = ws.split();
        let (c, st) = (Arc::clone(&counters), stop.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = st.cancelled() => break,
                    m = inbound.next() => match m {
                        Some(Ok(Message::Text(t))) if t.as_str().contains("\"type\":\"error\"") => { c.chat_refused.fetch_add(1, Ordering::Relaxed); }
                        Some(Ok(_)) => {}
                        _ => break,
                    }
                }
            }
        });
        sinks.push(sink);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let connected_frames = counters.frames.load(Ordering::Relaxed);
    let ticks = clock_ticks_per_sec();
    let server_before = args.server_pid.and_then(sample_tree);
    let bench_before = sample_tree(std::process::id());
    let measure_start = Instant::now();
    eprintln!("room: {} s of {} chat/s and {} gifts/s", args.duration_secs, args.chat_per_sec, args.gifts_per_sec);

    // Gifts: a bounded pool of in-flight POSTs on a fixed schedule.
    let gift_task = {
        let (http, base, channel, gift, c) = (http.clone(), base.clone(), args.channel.clone(), args.gift.clone(), Arc::clone(&counters));
        let tokens: Vec<String> = senders.iter().map(|s| s.token.clone()).collect();
        let (per_sec, secs) = (args.gifts_per_sec, args.duration_secs);
        tokio::spawn(async move {
            let total = u64::from(per_sec) * secs;
            let mut inflight = tokio::task::JoinSet::new();
            let t0 = Instant::now();
            for n in 0..total {
                let due = t0 + Duration::from_secs_f64(n as f64 / f64::from(per_sec.max(1)));
                tokio::time::sleep_until(due.into()).await;
                let (http, url, token, c) = (http.clone(), format!("{base}/v1/rooms/{channel}/gifts"), tokens[n as usize % tokens.len()].clone(), Arc::clone(&c));
                let body = serde_json::json!({ "gift": gift });
                inflight.spawn(async move {
                    match post(&http, url, Some(&token), body).await {
                        Ok(_) => c.gifts_ok.fetch_add(1, Ordering::Relaxed),
                        Err(_) => c.gifts_failed.fetch_add(1, Ordering::Relaxed),
                    };
                });
                while inflight.len() > 256 {
                    inflight.join_next().await;
                }
            }
            while inflight.join_next().await.is_some() {}
        })
    };
    // Chat on the schedule, round robin over the senders.
    let total_chat = u64::from(args.chat_per_sec) * args.duration_secs;
    let t0 = Instant::now();
    for n in 0..total_chat {
        let due = t0 + Duration::from_secs_f64(n as f64 / f64::from(args.chat_per_sec.max(1)));
        tokio::time::sleep_until(due.into()).await;
        let sent = start.elapsed().as_micros() as u64;
        let text = serde_json::json!({ "type": "chat", "text": format!("rb:{sent}") }).to_string();
        let i = n as usize % sinks.len();
        if sinks[i].send(Message::Text(text.into())).await.is_ok() {
            counters.chat_sent.fetch_add(1, Ordering::Relaxed);
        }
    }
    let _ = gift_task.await;
    let elapsed = measure_start.elapsed().as_secs_f64();
    let server_after = args.server_pid.and_then(sample_tree);
    let bench_after = sample_tree(std::process::id());
    // Let the last events arrive, then stop everyone.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stopped.store(true, Ordering::Relaxed);
    stop.cancel();
    done.store(true, Ordering::Relaxed);
    let mut connect_errors = 0u64;
    while let Some(r) = listeners.join_next().await {
        if !matches!(r, Ok(Ok(()))) {
            connect_errors += 1;
        }
    }
    match tokio::task::spawn_blocking(move || listen_thread.join()).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => bail!("the listeners' loop failed: {e:#}"),
        _ => bail!("the listeners' thread panicked"),
    }

    let measuring = u64::from(args.clients.div_ceil(args.measure_every));
    let chat = Percentiles::from_samples(&mut pool.chat_us.lock(), 1000.0);
    let chat_out = Percentiles::from_samples(&mut pool.chat_out_ms.lock(), 1.0);
    let gifts = Percentiles::from_samples(&mut pool.gift_ms.lock(), 1.0);
    let c = &counters;
    let load = |o: &AtomicU64| o.load(Ordering::Relaxed);
    let report = serde_json::json!({
        "clients": args.clients,
        "senders": args.senders,
        "connect_errors": connect_errors,
        "closed_by_server": load(&c.closed_by_server),
        "duration_s": elapsed,
        "chat_sent": load(&c.chat_sent),
        "chat_refused": load(&c.chat_refused),
        "gifts_ok": load(&c.gifts_ok),
        "gifts_failed": load(&c.gifts_failed),
        "events_expected_per_measuring_client": load(&c.chat_sent) - load(&c.chat_refused) + load(&c.gifts_ok),
        "chat_events_seen_by_measuring_clients": load(&c.chat_seen),
        "gift_events_seen_by_measuring_clients": load(&c.gifts_seen),
        "measuring_clients": measuring,
        "frames_received_total": load(&c.frames) - connected_frames,
        "frames_per_client_per_s": (load(&c.frames) - connected_frames) as f64 / f64::from(args.clients.max(1)) / elapsed,
        "chat_latency_ms": chat,
        "chat_server_to_client_ms": chat_out,
        "gift_latency_ms": gifts,
        "server_cpu_s": cpu_seconds(server_before, server_after, ticks),
        "server_cpu_percent_of_one_core": cpu_seconds(server_before, server_after, ticks).map(|s| s / elapsed * 100.0),
        "server_rss_kb_before": server_before.map(|s| s.rss_kb),
        "server_rss_kb_after": server_after.map(|s| s.rss_kb),
        "bench_cpu_s": cpu_seconds(bench_before, bench_after, ticks),
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        room: RoomArgs,
    }

    #[test]
    fn listeners_pause_a_millisecond_unless_told_and_at_most_a_tenth_of_a_second() {
        let args = |extra: &[&str]| Cli::try_parse_from(["room"].iter().chain(extra)).map(|c| c.room.listen_pause_us);
        assert_eq!(args(&[]).expect("defaults parse"), 1000);
        assert_eq!(args(&["--listen-pause-us", "0"]).expect("0 parses"), 0, "the earlier bench, woken per send");
        assert_eq!(args(&["--listen-pause-us", "100000"]).expect("the cap parses"), 100_000);
        let err = args(&["--listen-pause-us", "100001"]).expect_err("over the cap");
        assert!(err.to_string().contains("100001"), "{err}");
    }
}
