//! Shared test helpers: running ffmpeg/ffprobe, reading FLV tags the way the
//! media server's hub hands frames over, and a minimal TS packet reader.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::Command;

/// A scratch directory unique to this test process and `name`.
pub(crate) fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("westream-hls-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// Runs a command, panicking with its stderr if it fails; returns (stdout, stderr).
pub(crate) fn run(cmd: &mut Command) -> (String, String) {
    let out = cmd.output().expect("spawn (is ffmpeg installed?)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{cmd:?} failed: {stderr}");
    (stdout, stderr)
}

/// Encodes `args` (lavfi inputs and codec options) to an FLV file.
pub(crate) fn ffmpeg_to_flv(dir: &Path, name: &str, args: &[&str]) -> Vec<u8> {
    let path = dir.join(name);
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-nostdin", "-v", "error", "-y"])
        .args(args)
        .arg("-f")
        .arg("flv")
        .arg(&path);
    run(&mut cmd);
    std::fs::read(&path).expect("read flv")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FlvKind {
    Video,
    Audio,
}

/// One FLV audio/video tag, split the way the hub splits it.
#[derive(Debug, Clone)]
pub(crate) struct FlvFrame {
    pub(crate) kind: FlvKind,
    pub(crate) sequence_header: bool,
    pub(crate) keyframe: bool,
    pub(crate) dts_ms: u64,
    pub(crate) cts_ms: i32,
    /// Video: AVCDecoderConfigurationRecord or AVCC frame; audio:
    /// AudioSpecificConfig or raw AAC frame.
    pub(crate) payload: Vec<u8>,
}

/// Parses an FLV file into its H.264 and AAC tags; script tags are skipped.
pub(crate) fn parse_flv(data: &[u8]) -> Vec<FlvFrame> {
    assert_eq!(&data[..3], b"FLV");
    let header_len = u32::from_be_bytes([data[5], data[6], data[7], data[8]]) as usize;
    let mut pos = header_len + 4; // skip PreviousTagSize0
    let mut frames = Vec::new();
    while pos + 11 <= data.len() {
        let tag_type = data[pos];
        let size = be24(&data[pos + 1..]) as usize;
        let ts = be24(&data[pos + 4..]) | (u32::from(data[pos + 7]) << 24);
        let body = &data[pos + 11..pos + 11 + size];
        pos += 11 + size + 4;
        match tag_type {
            9 => {
                assert_eq!(body[0] & 0x0F, 7, "not AVC");
                if body[1] == 2 {
                    continue; // end of sequence
                }
                let raw_cts = be24(&body[2..]);
                // sign-extend the 24-bit composition time
                let cts = ((raw_cts << 8) as i32) >> 8;
                frames.push(FlvFrame {
                    kind: FlvKind::Video,
                    sequence_header: body[1] == 0,
                    keyframe: body[0] >> 4 == 1,
                    dts_ms: u64::from(ts),
                    cts_ms: cts,
                    payload: body[5..].to_vec(),
                });
            }
            8 => {
                assert_eq!(body[0] >> 4, 10, "not AAC");
                frames.push(FlvFrame {
                    kind: FlvKind::Audio,
                    sequence_header: body[1] == 0,
                    keyframe: true,
                    dts_ms: u64::from(ts),
                    cts_ms: 0,
                    payload: body[2..].to_vec(),
                });
            }
            _ => {}
        }
    }
    frames
}

fn be24(b: &[u8]) -> u32 {
    (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2])
}

/// One TS packet as seen by a minimal, independent reader.
#[derive(Debug)]
pub(crate) struct TsPacketView<'a> {
    pub(crate) pid: u16,
    pub(crate) pusi: bool,
    pub(crate) cc: u8,
    pub(crate) has_payload: bool,
    pub(crate) adaptation: Option<&'a [u8]>,
    pub(crate) payload: &'a [u8],
}

/// Splits `data` into TS packets, asserting sync bytes and sizes.
pub(crate) fn ts_packets(data: &[u8]) -> Vec<TsPacketView<'_>> {
    assert_eq!(data.len() % 188, 0, "output is not whole packets");
    data.chunks(188)
        .map(|p| {
            assert_eq!(p[0], 0x47, "sync byte");
            let afc = (p[3] >> 4) & 3;
            let mut off = 4;
            let mut adaptation = None;
            if afc & 2 != 0 {
                let len = p[4] as usize;
                assert!(len <= 183, "adaptation field too long");
                adaptation = Some(&p[5..5 + len]);
                off = 5 + len;
            }
            TsPacketView {
                pid: (u16::from(p[1] & 0x1F) << 8) | u16::from(p[2]),
                pusi: p[1] & 0x40 != 0,
                cc: p[3] & 0x0F,
                has_payload: afc & 1 != 0,
                adaptation,
                payload: if afc & 1 != 0 { &p[off..] } else { &[] },
            }
        })
        .collect()
}
