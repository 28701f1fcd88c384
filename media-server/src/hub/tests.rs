use super::*;

fn hub(grace_ms: u64) -> Arc<Hub> {
    let config = HubConfig { publisher_grace: Duration::from_millis(grace_ms), viewer_queue_frames: 16, ..HubConfig::default() };
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
