//! The one real-ffmpeg test: a 3-second 640x360 source through the pool
//! into a two-rendition ladder written to FLV files, checked with ffprobe:
//! sizes, codecs, and keyframes on the same timestamps in every rendition.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use prometheus::Registry;
use westream_transcoder::{
    plan_renditions, EncodeOptions, FinishReason, KeyframePolicy, LaddersConfig, PoolConfig, PoolEvent, RenditionOutput, TranscodeJob,
    TranscoderPool,
};

const LADDER: &str = r#"
[ladders.test]
renditions = [
    { name = "720p", height = 720, video_bitrate_kbps = 2500, maxrate_kbps = 2675, bufsize_kbps = 5000 },
    { name = "360p", height = 360, video_bitrate_kbps = 700, maxrate_kbps = 750, bufsize_kbps = 1400, preset = "ultrafast" },
    { name = "240p", height = 240, video_bitrate_kbps = 400, maxrate_kbps = 430, bufsize_kbps = 800, preset = "ultrafast", profile = "baseline", audio_bitrate_kbps = 64 },
]
"#;

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(out.status.success(), "{program} {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn make_source(path: &Path, extra: &[&str]) {
    let path = path.display().to_string();
    let mut args = vec![
        "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", "testsrc=size=640x360:rate=30",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
        "-t", "3",
        "-c:v", "libx264", "-preset", "ultrafast",
        "-c:a", "aac", "-b:a", "64k",
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["-f", "flv", &path]);
    run("ffmpeg", &args);
}

/// Runs one job on a one-slot pool and waits for the source to end.
async fn encode(input: &Path, outputs: &[RenditionOutput], options: EncodeOptions) {
    let pool = TranscoderPool::new(PoolConfig { slots: Some(1), ..PoolConfig::default() }, &Registry::new()).unwrap();
    let mut events = pool.subscribe();
    let job = TranscodeJob { channel: "demo".into(), input_url: input.display().to_string(), outputs: outputs.to_vec(), options };
    pool.start(job).unwrap();
    let finished = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match events.recv().await.unwrap() {
                PoolEvent::Finished { reason, .. } => return reason,
                PoolEvent::Died { status, stderr_tail, .. } => panic!("ffmpeg died: {status}: {stderr_tail:?}"),
                _ => {}
            }
        }
    })
    .await
    .expect("the encode did not finish within 60 s");
    assert_eq!(finished, FinishReason::SourceEnded);
}

fn file_outputs(dir: &Path, width: u32, height: u32) -> Vec<RenditionOutput> {
    let ladders = LaddersConfig::from_toml_str(LADDER).unwrap();
    plan_renditions(ladders.ladder("test").unwrap(), width, height)
        .into_iter()
        .map(|r| RenditionOutput { url: dir.join(format!("demo_{}.flv", r.rendition.name)).display().to_string(), rendition: r })
        .collect()
}

/// `codec_name,codec_type,width,height` per stream (ffprobe's order).
fn streams(path: &str) -> Vec<String> {
    run("ffprobe", &["-v", "error", "-show_entries", "stream=codec_type,codec_name,width,height", "-of", "csv=p=0", path])
        .lines()
        .map(|l| l.trim_end_matches(',').to_owned())
        .collect()
}

/// Presentation times (ms) of the video keyframes.
fn keyframes_ms(path: &str) -> Vec<i64> {
    run("ffprobe", &["-v", "error", "-select_streams", "v:0", "-show_entries", "packet=pts_time,flags", "-of", "csv=p=0", path])
        .lines()
        .filter_map(|l| {
            let (pts, flags) = l.split_once(',')?;
            let ms = (pts.parse::<f64>().ok()? * 1000.0).round() as i64;
            flags.contains('K').then_some(ms)
        })
        .collect()
}

#[tokio::test]
async fn a_source_becomes_an_aligned_two_rendition_ladder() {
    let version = TranscoderPool::probe_ffmpeg("ffmpeg").await.expect("this test needs ffmpeg with libx264 and aac");
    assert!(!version.is_empty());

    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source.flv");
    make_source(&source, &["-g", "90"]);
    let outputs = file_outputs(dir.path(), 640, 360);
    assert_eq!(outputs.len(), 2, "720p is above the source and skipped");
    encode(&source, &outputs, EncodeOptions { keyframes: KeyframePolicy::EveryMs(1000), ..EncodeOptions::default() }).await;

    let urls: Vec<&str> = outputs.iter().map(|o| o.url.as_str()).collect();
    assert_eq!(streams(urls[0]), ["h264,video,640,360", "aac,audio"]);
    assert_eq!(streams(urls[1]), ["h264,video,426,240", "aac,audio"]);

    let k360 = keyframes_ms(urls[0]);
    let k240 = keyframes_ms(urls[1]);
    assert_eq!(k360, k240, "keyframes must line up across renditions");
    // One per second of the 3-second source, on the source's own timestamps
    // (which start where the source's first video frame does).
    let first_source_pts = keyframes_ms(&source.display().to_string())[0];
    let relative: Vec<i64> = k360.iter().map(|k| k - k360[0]).collect();
    assert_eq!(relative, [0, 1000, 2000]);
    assert!((k360[0] - first_source_pts).abs() <= 34, "first keyframe {} vs source {first_source_pts}", k360[0]);
}

/// The origin's default: keyframes where the source has them, on the
/// source's own timestamps. The source here starts at 100.023 s (as a stream
/// that has been live for a while does, off the frame grid) and has an
/// irregular GOP.
#[tokio::test]
async fn renditions_keep_the_source_keyframes_and_timestamps() {
    TranscoderPool::probe_ffmpeg("ffmpeg").await.expect("this test needs ffmpeg with libx264 and aac");
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source.flv");
    make_source(
        &source,
        &["-g", "1000", "-sc_threshold", "0", "-force_key_frames", "0,0.5,1.7,2.2", "-output_ts_offset", "100.023"],
    );
    let source_keys = keyframes_ms(&source.display().to_string());
    assert_eq!(source_keys, [100_023, 100_523, 101_723, 102_223], "the source's own keyframes");

    let outputs = file_outputs(dir.path(), 640, 360);
    let options = EncodeOptions { keyframes: KeyframePolicy::Source, copy_timestamps: true, ..EncodeOptions::default() };
    encode(&source, &outputs, options).await;
    for out in &outputs {
        assert_eq!(keyframes_ms(&out.url), source_keys, "{}: keyframes on the source's", out.rendition.rendition.name);
    }
}
