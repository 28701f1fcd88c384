use super::*;

fn hub(grace_ms: u64) -> Arc<Hub> {
    let config = HubConfig {
        publisher_grace: Duration::from_millis(grace_ms),
        viewer_queue_frames: 16,
        merge_write_ms: 0,
        ..HubConfig::default()
    };
    Hub::new(config, Metrics::new())
}

fn avc_header() -> Bytes {
    Bytes::from_static(&[0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1f])
}
fn key(n: u8) -> Bytes {
    Bytes::from(vec![0x17, 1, 0, 0, 0, n])
}
fn inter(n: u8) -> Bytes {
    Bytes::from(vec![0x27, 1, 0, 0, 0, n])
}
fn aac(n: u8) -> Bytes {
    Bytes::from(vec![0xaf, 1, n])
}

fn start_publishing(hub: &Arc<Hub>) -> Publisher {
    let p = hub.publish("demo").unwrap();
    p.push(FrameKind::Video, 0, avc_header()).unwrap();
    p.push(FrameKind::Audio, 0, Bytes::from_static(&[0xaf, 0, 0x12, 0x10])).unwrap();
    p
}

fn drain(sub: &mut Subscription) -> Vec<Arc<Frame>> {
    std::iter::from_fn(|| sub.try_recv()).collect()
}

#[test]
fn new_viewer_gets_headers_then_the_gop_from_its_keyframe() {
    let hub = hub(0);
    let p = start_publishing(&hub);
    p.push(FrameKind::Video, 0, key(1)).unwrap();
    p.push(FrameKind::Video, 33, inter(2)).unwrap();
    p.push(FrameKind::Video, 66, key(3)).unwrap();
    p.push(FrameKind::Audio, 70, aac(4)).unwrap();
    p.push(FrameKind::Video, 99, inter(5)).unwrap();
    let mut sub = hub.live("demo").unwrap().subscribe(hub.metrics()).unwrap();
    let frames = drain(&mut sub);
    assert!(frames[0].sequence_header && frames[0].is_video());
    assert!(frames[1].sequence_header && !frames[1].is_video());
    assert!(frames[2].keyframe);
    assert_eq!(frames.iter().map(|f| f.dts).collect::<Vec<_>>(), vec![0, 0, 66, 70, 99]);
}

#[test]
fn live_frames_are_shared_not_copied() {
    let hub = hub(0);
    let p = start_publishing(&hub);
    let mut a = hub.live("demo").unwrap().subscribe(hub.metrics()).unwrap();
    let mut b = hub.live("demo").unwrap().subscribe(hub.metrics()).unwrap();
    drain(&mut a);
    drain(&mut b);
    let sent = p.push(FrameKind::Video, 0, key(1)).unwrap();
    let fa = a.try_recv().unwrap();
    let fb = b.try_recv().unwrap();
    assert!(Arc::ptr_eq(&fa, &sent) && Arc::ptr_eq(&fb, &sent));
    assert_eq!(fa.payload.as_ptr(), sent.payload.as_ptr());
}

#[test]
fn second_publisher_is_refused_while_the_first_is_live() {
    let hub = hub(0);
    let _p = start_publishing(&hub);
    assert!(matches!(hub.publish("demo"), Err(HubError::AlreadyPublishing { .. })));
}

#[test]
fn slow_viewer_is_skipped_to_the_next_keyframe_and_drops_are_counted() {
    let hub = hub(0);
    let p = start_publishing(&hub);
    let mut slow = hub.live("demo").unwrap().subscribe(hub.metrics()).unwrap();
    drain(&mut slow);
    // 16 slots in the ring: 40 frames overflow it while the viewer sleeps.
    p.push(FrameKind::Video, 0, key(0)).unwrap();
    for i in 1..40u8 {
        p.push(FrameKind::Video, u32::from(i) * 33, inter(i)).unwrap();
    }
    p.push(FrameKind::Video, 40 * 33, key(40)).unwrap();
    p.push(FrameKind::Video, 41 * 33, inter(41)).unwrap();
    let got = drain(&mut slow);
    assert!(got[0].keyframe, "first frame after a lag must be a keyframe");
    assert_eq!(got.iter().map(|f| f.payload[5]).collect::<Vec<_>>(), vec![40, 41]);
    assert_eq!(slow.dropped(), 40);
    assert_eq!(hub.metrics().frames_dropped.get(), 40);
}

#[test]
fn publisher_never_waits_for_viewers() {
    let hub = hub(0);
    let p = start_publishing(&hub);
    let _idle: Vec<_> = (0..10).map(|_| hub.live("demo").unwrap().subscribe(hub.metrics()).unwrap()).collect();
    // Far more frames than the ring holds, with nobody reading: push never blocks or fails.
    for i in 0..10_000u32 {
        p.push(FrameKind::Audio, i, aac(1)).unwrap();
    }
}

#[tokio::test]
async fn reconnect_within_grace_keeps_viewers_and_the_timeline() {
    let hub = hub(500);
    let p = start_publishing(&hub);
    p.push(FrameKind::Video, 1000, key(1)).unwrap();
    let mut sub = hub.live("demo").unwrap().subscribe(hub.metrics()).unwrap();
    drain(&mut sub);
    drop(p);
    assert!(hub.live("demo").is_some(), "still live during grace");
    let p2 = hub.publish("demo").unwrap();
    p2.push(FrameKind::Video, 0, avc_header()).unwrap();
    p2.push(FrameKind::Video, 0, key(2)).unwrap();
    let frames = drain(&mut sub);
    let k = frames.iter().find(|f| f.keyframe).unwrap();
    assert!(k.dts > 1000, "timeline continues: {}", k.dts);
    assert_eq!(k.epoch, 1);
}

#[tokio::test]
async fn channel_ends_after_the_grace_period() {
    let hub = hub(50);
    let p = start_publishing(&hub);
    let mut sub = hub.live("demo").unwrap().subscribe(hub.metrics()).unwrap();
    drop(p);
    let end = tokio::time::timeout(Duration::from_secs(2), async {
        while sub.recv().await.is_some() {}
    })
    .await;
    assert!(end.is_ok(), "subscription must end");
    assert!(hub.live("demo").is_none());
    assert_eq!(hub.metrics().streams_live.get(), 0);
}

#[test]
fn audio_only_channel_caches_a_bounded_window() {
    let hub = hub(0);
    let p = hub.publish("demo").unwrap();
    p.push(FrameKind::Audio, 0, Bytes::from_static(&[0xaf, 0, 0x12, 0x10])).unwrap();
    for i in 0..200u32 {
        p.push(FrameKind::Audio, i * 23, aac(1)).unwrap();
    }
    let mut sub = hub.live("demo").unwrap().subscribe(hub.metrics()).unwrap();
    let frames = drain(&mut sub);
    let span = frames.last().unwrap().dts - frames[1].dts;
    assert!(span <= 1000, "cached {span} ms");
    assert!(frames.len() > 10);
}

#[test]
fn waiting_viewer_entry_goes_away_when_it_leaves() {
    let hub = hub(0);
    let sub = hub.watch("demo");
    assert!(hub.live("demo").is_none());
    assert_eq!(hub.streams.len(), 1);
    drop(sub);
    assert_eq!(hub.streams.len(), 0);
}

#[test]
fn a_viewer_joining_while_audio_waits_for_video_gets_each_audio_frame_once() {
    let hub = hub(0);
    let p = start_publishing(&hub);
    p.push(FrameKind::Video, 0, key(1)).unwrap();
    // Two audio frames wait in the hub for the next video frame.
    p.push(FrameKind::Audio, 10, aac(2)).unwrap();
    p.push(FrameKind::Audio, 33, aac(3)).unwrap();
    let mut sub = hub.live("demo").unwrap().subscribe(hub.metrics()).unwrap();
    p.push(FrameKind::Video, 40, inter(4)).unwrap();
    let frames: Vec<_> = drain(&mut sub).into_iter().filter(|f| !f.sequence_header).collect();
    let dts: Vec<u64> = frames.iter().map(|f| f.dts).collect();
    assert_eq!(dts, vec![0, 10, 33, 40], "the held audio comes once, in order, before the video that released it");
}

fn merging_hub(merge_write_ms: u64) -> Arc<Hub> {
    Hub::new(HubConfig { merge_write_ms, viewer_queue_frames: 16, ..HubConfig::default() }, Metrics::new())
}

/// Pushes `n` 30 fps video frames from `first` (frame i at 33i ms, its
/// audio at +10 and +25 ms, a keyframe every `gop` frames) and returns the
/// batches the hub sent, as the frames' last bytes. With `real_time` each
/// frame is pushed at its own time on tokio's clock (paused in these
/// tests, so the timings are exact), else all at once, as a publisher
/// sending faster than real time.
async fn batches_of(hub: &Arc<Hub>, p: &Publisher, first: u8, n: u8, gop: u8, real_time: bool) -> Vec<Vec<u8>> {
    let mut sub = hub.live("demo").unwrap().subscribe(hub.metrics()).unwrap();
    drain(&mut sub);
    let before = hub.live("demo").unwrap().state.lock().next_seq;
    let start = tokio::time::Instant::now();
    for i in first..first + n {
        let t = u32::from(i) * 33;
        let frames = [
            (t, FrameKind::Video, if i % gop == 0 { key(i) } else { inter(i) }),
            (t + 10, FrameKind::Audio, aac(100 + i)),
            (t + 25, FrameKind::Audio, aac(200 + i)),
        ];
        for (ts, kind, payload) in frames {
            if real_time {
                let at = Duration::from_millis(u64::from(ts - u32::from(first) * 33));
                tokio::time::sleep_until(start + at).await;
            }
            p.push(kind, ts, payload).unwrap();
        }
    }
    let stream = hub.live("demo").unwrap();
    let st = stream.state.lock();
    st.recent.iter().filter(|b| b.seq() >= before).map(|b| last_bytes(b.frames())).collect()
}

#[tokio::test(start_paused = true)]
async fn without_merged_writes_each_video_frame_leaves_with_the_audio_before_it() {
    let hub = merging_hub(0);
    let p = start_publishing(&hub);
    let batches = batches_of(&hub, &p, 0, 4, 60, true).await;
    assert_eq!(batches, vec![vec![0], vec![100, 200, 1], vec![101, 201, 2], vec![102, 202, 3]]);
}

#[tokio::test(start_paused = true)]
async fn a_merged_write_leaves_when_its_oldest_frame_has_waited_and_a_keyframe_at_once() {
    let tasks = || tokio::runtime::Handle::current().metrics().num_alive_tasks();
    let hub = merging_hub(35);
    let idle = tasks();
    let p = start_publishing(&hub);
    assert_eq!(tasks(), idle + 1, "the merged writes' timer runs with the publisher");
    // Frame i at 33i ms, audio 100+i at +10 and 200+i at +25; keyframes 0
    // and 5 leave at once. Audio 100 (10 ms) starts a batch that the timer
    // sends at 45 ms, with audio 101 (43 ms) but before audio 201 (58 ms),
    // which starts the next (out at 93 ms, after audio 202 at 91), and so
    // on: a batch every 35-48 ms instead of one per video frame.
    let batches = batches_of(&hub, &p, 0, 8, 5, true).await;
    assert_eq!(
        batches,
        vec![
            vec![0],
            vec![100, 200, 1, 101],
            vec![201, 2, 102, 202],
            vec![3, 103, 203, 4],
            vec![104, 204, 5],
            vec![105, 205, 6, 106],
        ]
    );
    // 206, 7, 107 and 207 wait for the timer (at 258 ms); none waits longer.
    tokio::time::sleep(Duration::from_millis(10)).await;
    let stream = hub.live("demo").unwrap();
    assert_eq!(last_bytes(stream.state.lock().recent.back().unwrap().frames()), vec![206, 7, 107, 207]);
    assert!(stream.state.lock().pending.is_empty());
    drop(stream);
    drop(p);
    tokio::task::yield_now().await;
    assert!(tasks() <= idle + 1, "the timer ended with its publisher (only the grace period's task is left)");
}

#[tokio::test(start_paused = true)]
async fn merged_writes_from_a_publisher_faster_than_real_time_leave_by_media_span() {
    let hub = merging_hub(35);
    let p = start_publishing(&hub);
    // All pushed at once (the clock stands still): a batch leaves with the
    // first frame 35 ms of media after its oldest. From audio 100 (10 ms),
    // audio 201 (58 ms) is the first; then from frame 2 (66 ms) audio 103
    // (109 ms); keyframe 5 leaves at once; from audio 105 (175 ms) audio 206
    // (223 ms).
    let batches = batches_of(&hub, &p, 0, 8, 5, false).await;
    assert_eq!(
        batches,
        vec![
            vec![0],
            vec![100, 200, 1, 101, 201],
            vec![2, 102, 202, 3, 103],
            vec![203, 4, 104, 204, 5],
            vec![105, 205, 6, 106, 206],
        ]
    );
    // Frame 7 and its audio are held for the next batch; a viewer joining
    // now gets the GOP from keyframe 5 without them, then them once, with
    // that batch, in order (frame 10 is still held).
    let mut sub = hub.live("demo").unwrap().subscribe(hub.metrics()).unwrap();
    for i in 8..=10u8 {
        p.push(FrameKind::Video, u32::from(i) * 33, inter(i)).unwrap();
    }
    assert_eq!(last_bytes(&drain(&mut sub)), vec![5, 105, 205, 6, 106, 206, 7, 107, 207, 8, 9]);
}

#[tokio::test(start_paused = true)]
async fn flush_sends_what_is_held_at_once() {
    let hub = merging_hub(35);
    let p = start_publishing(&hub);
    p.push(FrameKind::Video, 0, key(0)).unwrap();
    p.push(FrameKind::Audio, 10, aac(1)).unwrap();
    p.push(FrameKind::Video, 33, inter(2)).unwrap();
    let stream = hub.live("demo").unwrap();
    assert_eq!(stream.held(), 2, "the keyframe left; the rest waits for the timer");
    let mut sub = stream.subscribe(hub.metrics()).unwrap();
    assert_eq!(last_bytes(&drain(&mut sub)), vec![0]);
    p.flush();
    assert_eq!(stream.held(), 0);
    assert_eq!(last_bytes(&drain(&mut sub)), vec![1, 2], "flushed at once, in order, once");
    p.flush();
    assert!(drain(&mut sub).is_empty(), "nothing held, nothing sent");
}

/// A sink that records what the fan-out offers; it takes `accept` batches,
/// then refuses (as a full socket would) and hands the viewer back.
struct RecordingSink {
    state: parking_lot::Mutex<SinkLog>,
    changed: tokio::sync::Notify,
}

#[derive(Default)]
struct SinkLog {
    cursor: Option<Cursor>,
    accept: usize,
    payloads: Vec<u8>,
    registered: bool,
    handed_back: bool,
    ended: bool,
}

impl RecordingSink {
    fn new(accept: usize) -> Arc<RecordingSink> {
        Arc::new(RecordingSink {
            state: parking_lot::Mutex::new(SinkLog { accept, ..SinkLog::default() }),
            changed: tokio::sync::Notify::new(),
        })
    }

    async fn wait(&self, done: impl Fn(&SinkLog) -> bool) {
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let notified = self.changed.notified();
                if done(&self.state.lock()) {
                    return;
                }
                notified.await;
            }
        })
        .await
        .expect("the fan-out delivers within 5 s");
    }
}

impl DirectSink for RecordingSink {
    fn arm(&self, cursor: Cursor) -> bool {
        let mut st = self.state.lock();
        st.cursor = Some(cursor);
        st.handed_back = false;
        !std::mem::replace(&mut st.registered, true)
    }

    fn offer(&self, batch: &Batch) -> bool {
        let mut st = self.state.lock();
        let keep = if st.handed_back {
            false
        } else if st.accept == 0 {
            st.handed_back = true;
            false
        } else {
            let mut cursor = st.cursor.expect("armed first");
            match cursor.step(batch.seq()) {
                Step::Seen => true,
                Step::Missed => panic!("batch {} offered before the ones this sink needs", batch.seq()),
                Step::Deliver => {
                    st.accept -= 1;
                    for f in batch.frames() {
                        if cursor.admit(f) {
                            st.payloads.push(f.payload[f.payload.len() - 1]);
                        }
                    }
                    true
                }
            }
            .then(|| st.cursor = Some(cursor))
            .is_some()
        };
        st.registered = keep;
        drop(st);
        self.changed.notify_waiters();
        keep
    }

    fn end(&self) {
        self.state.lock().ended = true;
        self.changed.notify_waiters();
    }
}

fn last_bytes(frames: &[Arc<Frame>]) -> Vec<u8> {
    frames.iter().filter(|f| !f.sequence_header).map(|f| f.payload[f.payload.len() - 1]).collect()
}

#[tokio::test]
async fn a_direct_viewer_gets_every_batch_once_in_order_from_the_fan_out() {
    let hub = hub(0);
    let p = start_publishing(&hub);
    p.push(FrameKind::Video, 0, key(0)).unwrap();
    let mut sub = hub.live("demo").unwrap().subscribe(hub.metrics()).unwrap();
    let sink = RecordingSink::new(usize::MAX);
    // Not everything taken yet: the viewer must read its backlog first.
    assert_eq!(sub.go_direct(sink.clone()), GoDirect::Behind);
    assert_eq!(last_bytes(&drain(&mut sub)), vec![0]);
    assert_eq!(sub.go_direct(sink.clone()), GoDirect::Armed);
    assert!(sub.is_direct());
    for i in 1..=40u8 {
        p.push(FrameKind::Audio, u32::from(i) * 33 - 10, aac(100 + i)).unwrap();
        p.push(FrameKind::Video, u32::from(i) * 33, inter(i)).unwrap();
    }
    sink.wait(|s| s.payloads.len() == 80).await;
    let expected: Vec<u8> = (1..=40u8).flat_map(|i| [100 + i, i]).collect();
    assert_eq!(sink.state.lock().payloads, expected);
    // A direct viewer is still a subscriber, and reads nothing itself.
    assert_eq!(hub.live("demo").unwrap().info().subscribers, 1);
    assert!(sub.try_recv().is_none());
}

#[tokio::test]
async fn a_viewer_handed_back_catches_up_from_the_recent_batches_without_loss_or_repeat() {
    let hub = hub(0);
    let p = start_publishing(&hub);
    p.push(FrameKind::Video, 0, key(0)).unwrap();
    let mut sub = hub.live("demo").unwrap().subscribe(hub.metrics()).unwrap();
    let mut got = last_bytes(&drain(&mut sub));
    let sink = RecordingSink::new(5);
    assert_eq!(sub.go_direct(sink.clone()), GoDirect::Armed);
    for i in 1..=30u8 {
        p.push(FrameKind::Video, u32::from(i) * 33, inter(i)).unwrap();
    }
    sink.wait(|s| s.handed_back).await;
    let cursor = sink.state.lock().cursor.unwrap();
    got.extend(sink.state.lock().payloads.iter());
    sub.resume(cursor);
    assert!(!sub.is_direct());
    got.extend(last_bytes(&drain(&mut sub)));
    assert_eq!(got, (0..=30u8).collect::<Vec<_>>());
    assert_eq!(sub.dropped(), 0);
    // Caught up again: the same sink goes direct once more.
    assert_eq!(sub.go_direct(sink.clone()), GoDirect::Armed);
    sink.state.lock().accept = usize::MAX;
    p.push(FrameKind::Video, 31 * 33, inter(31)).unwrap();
    sink.wait(|s| s.payloads.last() == Some(&31)).await;
    assert_eq!(sink.state.lock().payloads, vec![1, 2, 3, 4, 5, 31]);
}

#[tokio::test]
async fn a_viewer_further_behind_than_the_recent_batches_skips_to_the_next_keyframe() {
    let hub = hub(0);
    let p = start_publishing(&hub);
    p.push(FrameKind::Video, 0, key(0)).unwrap();
    let mut sub = hub.live("demo").unwrap().subscribe(hub.metrics()).unwrap();
    drain(&mut sub);
    let sink = RecordingSink::new(0);
    assert_eq!(sub.go_direct(sink.clone()), GoDirect::Armed);
    p.push(FrameKind::Video, 33, inter(1)).unwrap();
    sink.wait(|s| s.handed_back).await;
    let behind = RECENT_BATCHES as u32 + 10;
    for i in 2..=behind {
        p.push(FrameKind::Video, i * 33, inter(i as u8)).unwrap();
    }
    p.push(FrameKind::Video, (behind + 1) * 33, key(201)).unwrap();
    p.push(FrameKind::Video, (behind + 2) * 33, inter(202)).unwrap();
    sub.resume(sink.state.lock().cursor.unwrap());
    let frames = drain(&mut sub);
    assert!(frames[0].keyframe, "a viewer that lost frames starts again on a keyframe");
    assert_eq!(last_bytes(&frames), vec![201, 202]);
    assert_eq!(sub.dropped(), u64::from(behind));
    assert_eq!(hub.metrics().frames_dropped.get(), u64::from(behind));
}

#[tokio::test]
async fn direct_viewers_get_the_last_batches_then_the_end_when_the_channel_closes() {
    let hub = hub(0);
    let mut sub = hub.watch("demo");
    let sink = RecordingSink::new(usize::MAX);
    assert_eq!(sub.go_direct(sink.clone()), GoDirect::Armed);
    assert_eq!(hub.subscribers("demo"), 1);
    let p = start_publishing(&hub);
    p.push(FrameKind::Video, 0, key(7)).unwrap();
    p.push(FrameKind::Audio, 20, aac(8)).unwrap();
    // Dropping the publisher flushes the held audio, then (grace 0) ends the channel.
    drop(p);
    sink.wait(|s| s.ended).await;
    let st = sink.state.lock();
    assert_eq!(st.payloads.iter().rev().take(2).rev().copied().collect::<Vec<_>>(), vec![7, 8]);
    drop(st);
    drop(sub);
    assert_eq!(hub.subscribers("demo"), 0);
}
