//! RTMP ingest and play, HTTP-FLV, with real ffmpeg and ffprobe as clients.

mod common;

use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(40);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_publish_plays_over_rtmp_and_http_flv_with_every_frame() {
    let clip = make_clip(ClipSpec::default());
    let source_video = count_packets(&clip, "video").await;
    let source_audio = count_packets(&clip, "audio").await;
    let server = start_server().await;
    // The RTMP player connects first and waits for the publisher.
    let rtmp_reader = tokio::spawn(probe(rtmp_url(server.rtmp_addr, "demo"), LIMIT));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut publisher = publish(&clip, &rtmp_url(server.rtmp_addr, "demo-key"), &[]);
    wait_media(&server, "demo").await;
    let flv = probe(&format!("http://{}/live/demo.flv", server.http_addr), LIMIT).await;
    let rtmp = rtmp_reader.await.unwrap();
    assert!(publisher.wait().await.unwrap().success(), "publisher failed");

    for (name, p) in [("rtmp", &rtmp), ("flv", &flv)] {
        assert_eq!(p.codec_names(), vec!["aac", "h264"], "{name}: {:?}", p.codecs);
        let video = p.of("video");
        assert!(video[0].keyframe, "{name}: first video frame must be a keyframe");
        p.assert_monotonic();
        // Within one GOP of what was sent (the FLV viewer joins a little late
        // and starts from the GOP cache).
        assert!(video.len() <= source_video && video.len() + 30 >= source_video,
            "{name}: {} video frames of {source_video}", video.len());
        assert!(p.of("audio").len() + 50 >= source_audio, "{name}: audio {} of {source_audio}", p.of("audio").len());
    }
    // The waiting RTMP player saw everything from the first frame.
    assert_eq!(rtmp.of("video").len(), source_video);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_only_and_video_only_publishes_play_on_both_outputs() {
    for (spec, codec, kind) in [
        (ClipSpec { video: false, seconds: 3, ..ClipSpec::default() }, "aac", "audio"),
        (ClipSpec { audio: false, seconds: 3, ..ClipSpec::default() }, "h264", "video"),
    ] {
        let clip = make_clip(spec);
        let server = start_server().await;
        let rtmp_reader = tokio::spawn(probe(rtmp_url(server.rtmp_addr, "demo"), LIMIT));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut publisher = publish(&clip, &rtmp_url(server.rtmp_addr, "demo-key"), &[]);
        wait_media(&server, "demo").await;
        let flv = probe(&format!("http://{}/live/demo.flv", server.http_addr), LIMIT).await;
        let rtmp = rtmp_reader.await.unwrap();
        publisher.wait().await.unwrap();
        for (name, p) in [("rtmp", &rtmp), ("flv", &flv)] {
            assert_eq!(p.codec_names(), vec![codec], "{name} {kind}-only: {:?}", p.codecs);
            assert!(p.of(kind).len() > 20, "{name} {kind}-only: {} packets", p.of(kind).len());
            p.assert_monotonic();
        }
        server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_is_refused_and_creates_no_channel() {
    let clip = make_clip(ClipSpec { seconds: 2, ..ClipSpec::default() });
    let server = start_server().await;
    let mut publisher = publish(&clip, &rtmp_url(server.rtmp_addr, "not-a-key"), &[]);
    let status = tokio::time::timeout(Duration::from_secs(10), publisher.wait()).await.expect("ffmpeg gives up").unwrap();
    assert!(!status.success(), "publish with a wrong key must fail");
    // Publishing with the channel name instead of its key fails too.
    let mut by_name = publish(&clip, &rtmp_url(server.rtmp_addr, "demo"), &[]);
    assert!(!tokio::time::timeout(Duration::from_secs(10), by_name.wait()).await.unwrap().unwrap().success());
    assert!(server.hub.live_streams().is_empty(), "no channel may be created");
    let (code, body) = http_get(&format!("http://{}/live/demo.flv", server.http_addr)).await;
    assert_eq!(code, 404);
    assert!(body.contains("not live"), "{body}");
    let (_, metrics) = http_get(&format!("http://{}/metrics", server.http_addr)).await;
    assert!(metrics.contains("westream_connections_rejected_total{reason=\"unknown_key\"} 2"), "{metrics}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_publisher_is_refused_while_the_first_keeps_streaming() {
    let clip = make_clip(ClipSpec { seconds: 6, ..ClipSpec::default() });
    let server = start_server().await;
    let mut first = publish(&clip, &rtmp_url(server.rtmp_addr, "demo-key"), &[]);
    wait_media(&server, "demo").await;
    let mut second = publish(&clip, &rtmp_url(server.rtmp_addr, "demo-key"), &[]);
    let status = tokio::time::timeout(Duration::from_secs(10), second.wait()).await.unwrap().unwrap();
    assert!(!status.success(), "the second publisher must be refused");
    // The first one is still live and still delivering frames after the refusal.
    let flv = probe(&format!("http://{}/live/demo.flv", server.http_addr), LIMIT).await;
    assert!(first.wait().await.unwrap().success(), "first publisher must not be disturbed");
    assert!(flv.of("video").len() > 60, "frames after the refusal: {}", flv.of("video").len());
    flv.assert_monotonic();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_past_the_extended_mark_play_monotonic() {
    let clip = make_clip(ClipSpec { seconds: 4, ..ClipSpec::default() });
    let server = start_server().await;
    let rtmp_reader = tokio::spawn(probe(rtmp_url(server.rtmp_addr, "demo"), LIMIT));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // 17000 s = 17,000,000 ms > 0xFFFFFF: every RTMP header needs the extended field.
    let mut publisher = publish(&clip, &rtmp_url(server.rtmp_addr, "demo-key"), &["-output_ts_offset", "17000"]);
    wait_media(&server, "demo").await;
    let flv = probe(&format!("http://{}/live/demo.flv", server.http_addr), LIMIT).await;
    let rtmp = rtmp_reader.await.unwrap();
    assert!(publisher.wait().await.unwrap().success());
    for (name, p) in [("rtmp", &rtmp), ("flv", &flv)] {
        let video = p.of("video");
        assert!(video.len() > 60, "{name}: {} frames", video.len());
        let first = video[0].dts.unwrap();
        let last = video.last().unwrap().dts.unwrap();
        assert!(first >= 17_000_000, "{name}: first dts {first}");
        assert!(last - first > 2000 && last - first < 5000, "{name}: span {}", last - first);
        p.assert_monotonic();
    }
    server.shutdown().await;
}
