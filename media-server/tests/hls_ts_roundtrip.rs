//! Round trip through real tools: ffmpeg encodes H.264 (with B-frames) and
//! AAC into FLV, we split the FLV tags as the hub does, mux them with
//! `TsMuxer`, and check the TS with ffprobe, ffmpeg and the `mpeg2ts` crate.
//!
//! Timestamps: the muxer adds no offset, so PTS = (dts + cts) * 90 and
//! DTS = dts * 90 exactly.

#[path = "common_hls/mod.rs"]
mod common;

use std::collections::HashMap;
use std::process::Command;

use bytes::BytesMut;
use common::{ffmpeg_to_flv, parse_flv, run, temp_dir, ts_packets, FlvKind};
use westream_media::hls::aac::AacConfig;
use westream_media::hls::avc::AvcDecoderConfig;
use westream_media::hls::ts::{TsConfig, TsMuxer, TsSample, TsTrack, AUDIO_PID, VIDEO_PID};

/// What we fed the muxer, per track, in order.
#[derive(Default)]
struct Fed {
    video: Vec<(u64, u64, bool, Vec<u8>)>, // pts, dts, keyframe, Annex B AU
    audio: Vec<(u64, Vec<u8>)>,            // pts, ADTS + raw
}

/// Muxes FLV tags into one TS, starting a segment (PAT/PMT) before every
/// video keyframe, the way the HLS segmenter will.
fn mux_flv(
    flv: &[u8],
    has_video: bool,
    has_audio: bool,
) -> (Vec<u8>, Fed, Option<AvcDecoderConfig>) {
    let frames = parse_flv(flv);
    let avc = frames
        .iter()
        .find(|f| f.kind == FlvKind::Video && f.sequence_header)
        .map(|f| AvcDecoderConfig::parse(&f.payload).expect("avc record"));
    let aac = frames
        .iter()
        .find(|f| f.kind == FlvKind::Audio && f.sequence_header)
        .map(|f| AacConfig::parse(&f.payload).expect("aac config"));
    assert_eq!(avc.is_some(), has_video);
    assert_eq!(aac.is_some(), has_audio);

    let mut muxer = TsMuxer::new(TsConfig {
        has_video,
        has_audio,
        aac,
    });
    let mut out = BytesMut::new();
    let mut fed = Fed::default();
    let mut started = false;
    for f in frames.iter().filter(|f| !f.sequence_header) {
        let (track, data) = match f.kind {
            FlvKind::Video => {
                let mut au = BytesMut::new();
                avc.as_ref()
                    .unwrap()
                    .to_annex_b(&f.payload, f.keyframe, &mut au)
                    .unwrap();
                (TsTrack::Video, au.to_vec())
            }
            FlvKind::Audio => (TsTrack::Audio, f.payload.clone()),
        };
        if !started || (track == TsTrack::Video && f.keyframe) {
            muxer.start_segment(&mut out);
            started = true;
        }
        let sample = TsSample {
            track,
            dts_ms: f.dts_ms,
            cts_ms: f.cts_ms,
            keyframe: f.keyframe,
            data: &data,
        };
        muxer.write_sample(&sample, &mut out).unwrap();
        let pts = (f.dts_ms as i64 + i64::from(f.cts_ms)) as u64 * 90;
        match track {
            TsTrack::Video => fed.video.push((pts, f.dts_ms * 90, f.keyframe, data)),
            TsTrack::Audio => {
                let mut adts = aac.unwrap().adts_header(data.len()).unwrap().to_vec();
                adts.extend_from_slice(&data);
                fed.audio.push((pts, adts));
            }
        }
    }
    (out.to_vec(), fed, avc)
}

/// ffprobe `-show_packets` as (codec_type, pts, dts, flags) per packet.
fn probe_packets(path: &std::path::Path) -> Vec<(String, u64, u64, String)> {
    let (stdout, stderr) = run(Command::new("ffprobe")
        .args(["-v", "error", "-show_packets", "-of", "compact=p=0"])
        .arg(path));
    assert!(stderr.trim().is_empty(), "ffprobe complained: {stderr}");
    stdout
        .lines()
        .filter(|line| line.starts_with("codec_type="))
        .map(|line| {
            let kv: HashMap<&str, &str> =
                line.split('|').filter_map(|f| f.split_once('=')).collect();
            (
                kv["codec_type"].to_string(),
                kv["pts"].parse().expect("pts"),
                kv["dts"].parse().expect("dts"),
                kv["flags"].to_string(),
            )
        })
        .collect()
}

fn probe_streams(path: &std::path::Path) -> Vec<HashMap<String, String>> {
    let (stdout, stderr) = run(Command::new("ffprobe")
        .args(["-v", "error", "-show_streams", "-of", "compact=p=0"])
        .arg(path));
    assert!(stderr.trim().is_empty(), "ffprobe complained: {stderr}");
    stdout
        .lines()
        .map(|l| {
            l.split('|')
                .filter_map(|f| f.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// ffmpeg decodes every frame without a complaint.
fn assert_decodes_cleanly(path: &std::path::Path) {
    let (_, stderr) = run(Command::new("ffmpeg")
        .args(["-nostdin", "-v", "warning", "-i"])
        .arg(path)
        .args(["-f", "null", "-"]));
    assert!(
        stderr.trim().is_empty(),
        "ffmpeg decode complained: {stderr}"
    );
}

/// PCRs sit on the video PID, never decrease and never pass the DTS of
/// the PES they start.
fn assert_pcr_sane(ts: &[u8]) {
    let mut last = 0u64;
    let mut count = 0;
    for p in ts_packets(ts) {
        let Some(af) = p
            .adaptation
            .filter(|a| a.first().is_some_and(|f| f & 0x10 != 0))
        else {
            continue;
        };
        assert_eq!(p.pid, VIDEO_PID);
        let pcr = (u64::from(af[1]) << 25)
            | (u64::from(af[2]) << 17)
            | (u64::from(af[3]) << 9)
            | (u64::from(af[4]) << 1)
            | u64::from(af[5] >> 7);
        assert!(pcr >= last, "PCR went backwards");
        // PES header: flags at 7, DTS (or PTS) at 14 or 9
        let pes = p.payload;
        let ts_at = if pes[7] & 0x40 != 0 { 14 } else { 9 };
        let t = &pes[ts_at..ts_at + 5];
        let dts = (u64::from(t[0] >> 1 & 7) << 30)
            | (u64::from(t[1]) << 22)
            | (u64::from(t[2] >> 1) << 15)
            | (u64::from(t[3]) << 7)
            | u64::from(t[4] >> 1);
        assert!(pcr <= dts, "PCR {pcr} after DTS {dts}");
        last = pcr;
        count += 1;
    }
    assert!(count > 0);
}

/// Continuity counters increase by one mod 16 per PID over the whole file.
fn assert_continuity(ts: &[u8]) {
    let mut last: HashMap<u16, u8> = HashMap::new();
    for p in ts_packets(ts) {
        assert!(p.has_payload);
        if let Some(prev) = last.insert(p.pid, p.cc) {
            assert_eq!(p.cc, (prev + 1) % 16, "pid {:#x}", p.pid);
        }
    }
}

const AV_INPUTS: &[&str] = &[
    "-f",
    "lavfi",
    "-i",
    "testsrc=size=854x480:rate=30",
    "-f",
    "lavfi",
    "-i",
    "sine=frequency=440:sample_rate=44100",
    "-t",
    "3",
    "-pix_fmt",
    "yuv420p",
    "-c:v",
    "libx264",
    "-profile:v",
    "high",
    "-g",
    "30",
    "-bf",
    "2",
    "-c:a",
    "aac",
    "-b:a",
    "64k",
    "-ac",
    "2",
];

#[test]
fn h264_with_b_frames_and_aac_survive_ffprobe_with_exact_timestamps() {
    let dir = temp_dir("av");
    let flv = ffmpeg_to_flv(&dir, "in.flv", AV_INPUTS);
    let (ts, fed, avc) = mux_flv(&flv, true, true);
    assert!(
        fed.video.iter().any(|v| v.0 != v.1),
        "the input must have B-frames"
    );
    assert_eq!(fed.video.len(), 90);
    let path = dir.join("out.ts");
    std::fs::write(&path, &ts).unwrap();

    let streams = probe_streams(&path);
    assert_eq!(streams.len(), 2, "{streams:?}");
    let video = streams.iter().find(|s| s["codec_type"] == "video").unwrap();
    assert_eq!(video["codec_name"], "h264");
    assert_eq!(video["id"], format!("{VIDEO_PID:#x}"));
    assert_eq!(video["profile"], "High");
    let info = avc.unwrap().sps_info().unwrap();
    assert_eq!(
        (video["width"].as_str(), video["height"].as_str()),
        ("854", "480")
    );
    assert_eq!((info.width, info.height), (854, 480));
    let audio = streams.iter().find(|s| s["codec_type"] == "audio").unwrap();
    assert_eq!(audio["codec_name"], "aac");
    assert_eq!(audio["id"], format!("{AUDIO_PID:#x}"));
    assert_eq!(audio["profile"], "LC");
    assert_eq!(audio["sample_rate"], "44100");
    assert_eq!(audio["channels"], "2");

    let packets = probe_packets(&path);
    let v: Vec<_> = packets.iter().filter(|p| p.0 == "video").collect();
    let a: Vec<_> = packets.iter().filter(|p| p.0 == "audio").collect();
    assert_eq!(v.len(), fed.video.len());
    assert_eq!(a.len(), fed.audio.len());
    for (got, want) in v.iter().zip(&fed.video) {
        assert_eq!((got.1, got.2), (want.0, want.1));
        assert_eq!(
            got.3.starts_with('K'),
            want.2,
            "keyframe flag at dts {}",
            want.1
        );
    }
    for (got, want) in a.iter().zip(&fed.audio) {
        assert_eq!((got.1, got.2), (want.0, want.0));
    }

    assert_decodes_cleanly(&path);
    assert_continuity(&ts);
    assert_pcr_sane(&ts);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn mpeg2ts_crate_reads_back_identical_pes_payloads_and_timestamps() {
    use mpeg2ts::pes::{PesPacketReader, ReadPesPacket};
    use mpeg2ts::ts::TsPacketReader;

    let dir = temp_dir("mpeg2ts");
    let flv = ffmpeg_to_flv(&dir, "in.flv", AV_INPUTS);
    let (ts, fed, _) = mux_flv(&flv, true, true);
    let mut reader = PesPacketReader::new(TsPacketReader::new(&ts[..]));
    let (mut video, mut audio) = (Vec::new(), Vec::new());
    while let Some(pes) = reader.read_pes_packet().expect("mpeg2ts parse") {
        let pts = pes.header.pts.map(|t| t.as_u64());
        let dts = pes.header.dts.map(|t| t.as_u64());
        match pes.header.stream_id.as_u8() {
            0xE0 => video.push((pts, dts, pes.data)),
            0xC0 => audio.push((pts, dts, pes.data)),
            other => panic!("unexpected stream id {other:#x}"),
        }
    }
    // The reader yields PES in completion order; compare per track.
    assert_eq!(video.len(), fed.video.len());
    for (got, want) in video.iter().zip(&fed.video) {
        let want_dts = (want.0 != want.1).then_some(want.1);
        assert_eq!((got.0, got.1), (Some(want.0), want_dts));
        assert_eq!(got.2, want.3);
    }
    assert_eq!(audio.len(), fed.audio.len());
    for (got, want) in audio.iter().zip(&fed.audio) {
        assert_eq!((got.0, got.1), (Some(want.0), None));
        assert_eq!(got.2, want.1);
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn audio_only_stream_is_probed_with_pcr_on_audio() {
    let dir = temp_dir("audio");
    let flv = ffmpeg_to_flv(
        &dir,
        "in.flv",
        &[
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=1000:sample_rate=48000",
            "-t",
            "2",
            "-c:a",
            "aac",
            "-ac",
            "1",
        ],
    );
    let (ts, fed, _) = mux_flv(&flv, false, true);
    let path = dir.join("out.ts");
    std::fs::write(&path, &ts).unwrap();
    let streams = probe_streams(&path);
    assert_eq!(streams.len(), 1);
    assert_eq!(streams[0]["codec_name"], "aac");
    assert_eq!(streams[0]["sample_rate"], "48000");
    assert_eq!(streams[0]["channels"], "1");
    let packets = probe_packets(&path);
    assert_eq!(packets.len(), fed.audio.len());
    for (got, want) in packets.iter().zip(&fed.audio) {
        assert_eq!(got.1, want.0);
    }
    let pcr_packets = ts_packets(&ts)
        .iter()
        .filter(|p| {
            p.pid == AUDIO_PID
                && p.adaptation
                    .is_some_and(|a| a.first().is_some_and(|f| f & 0x10 != 0))
        })
        .count();
    assert_eq!(pcr_packets, fed.audio.len());
    assert_decodes_cleanly(&path);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn video_only_stream_with_large_keyframes_is_probed() {
    let dir = temp_dir("video");
    // 1080p noise makes keyframes far larger than 64 KiB (unbounded PES length).
    let flv = ffmpeg_to_flv(
        &dir,
        "in.flv",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1920x1080:rate=25",
            "-t",
            "1",
            "-pix_fmt",
            "yuv420p",
            "-c:v",
            "libx264",
            "-g",
            "10",
            "-bf",
            "3",
            "-qp",
            "5",
        ],
    );
    let (ts, fed, _) = mux_flv(&flv, true, false);
    assert!(
        fed.video.iter().any(|v| v.3.len() > 65_535),
        "want an AU over 64 KiB"
    );
    let path = dir.join("out.ts");
    std::fs::write(&path, &ts).unwrap();
    let streams = probe_streams(&path);
    assert_eq!(streams.len(), 1);
    assert_eq!(
        (streams[0]["width"].as_str(), streams[0]["height"].as_str()),
        ("1920", "1080")
    );
    let packets = probe_packets(&path);
    assert_eq!(packets.len(), fed.video.len());
    for (got, want) in packets.iter().zip(&fed.video) {
        assert_eq!((got.1, got.2), (want.0, want.1));
    }
    assert_decodes_cleanly(&path);
    assert_continuity(&ts);
    std::fs::remove_dir_all(&dir).ok();
}
