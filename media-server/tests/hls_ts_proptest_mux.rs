//! Property tests: whatever samples arrive, the muxer never panics, emits
//! only whole sync-aligned packets with counting continuity counters, and
//! every accepted sample can be reassembled from its PID.

#[path = "common_hls/mod.rs"]
mod common;

use std::collections::HashMap;

use bytes::BytesMut;
use common::ts_packets;
use proptest::prelude::*;
use westream_media::hls::aac::AacConfig;
use westream_media::hls::avc::{AvcDecoderConfig, SpsInfo};
use westream_media::hls::ts::{TsConfig, TsError, TsMuxer, TsSample, TsTrack, AUDIO_PID, VIDEO_PID};

#[derive(Debug, Clone)]
struct Step {
    video: bool,
    dts_step_ms: u64,
    cts_ms: i32,
    keyframe: bool,
    new_segment: bool,
    data: Vec<u8>,
}

fn step() -> impl Strategy<Value = Step> {
    (
        any::<bool>(),
        0u64..100,
        0i32..500,
        any::<bool>(),
        proptest::bool::weighted(0.1),
        proptest::collection::vec(any::<u8>(), 0..5000),
    )
        .prop_map(
            |(video, dts_step_ms, cts_ms, keyframe, new_segment, data)| Step {
                video,
                dts_step_ms,
                cts_ms,
                keyframe,
                new_segment,
                data,
            },
        )
}

/// Reassembles PES payloads per PID from PUSI to PUSI.
fn pes_per_pid(ts: &[u8]) -> HashMap<u16, Vec<Vec<u8>>> {
    let mut pes: HashMap<u16, Vec<Vec<u8>>> = HashMap::new();
    for p in ts_packets(ts) {
        let list = pes.entry(p.pid).or_default();
        if p.pusi || list.is_empty() {
            list.push(Vec::new());
        }
        if let Some(last) = list.last_mut() {
            last.extend_from_slice(p.payload);
        }
    }
    pes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn muxer_output_is_always_well_formed(
        has_video in any::<bool>(),
        has_audio in any::<bool>(),
        with_aac in proptest::bool::weighted(0.8),
        start_dts in prop_oneof![Just(0u64), any::<u64>(), Just(95_443_700u64)],
        steps in proptest::collection::vec(step(), 0..40),
    ) {
        let aac = with_aac.then(|| AacConfig::parse(&[0x12, 0x10]).unwrap());
        let mut muxer = TsMuxer::new(TsConfig { has_video, has_audio, aac });
        let mut out = BytesMut::new();
        let mut dts = [start_dts, start_dts];
        let mut accepted: HashMap<u16, Vec<Vec<u8>>> = HashMap::new();
        for s in &steps {
            if s.new_segment {
                muxer.start_segment(&mut out);
            }
            let (track, pid, slot) = if s.video {
                (TsTrack::Video, VIDEO_PID, 0)
            } else {
                (TsTrack::Audio, AUDIO_PID, 1)
            };
            dts[slot] = dts[slot].saturating_add(s.dts_step_ms);
            let before = out.len();
            let sample = TsSample { track, dts_ms: dts[slot], cts_ms: s.cts_ms, keyframe: s.keyframe, data: &s.data };
            match muxer.write_sample(&sample, &mut out) {
                Ok(()) => accepted.entry(pid).or_default().push(s.data.clone()),
                Err(e) => {
                    prop_assert_eq!(out.len(), before, "an error must write nothing");
                    let expected = match e {
                        TsError::TrackNotConfigured { .. } => !(if s.video { has_video } else { has_audio }),
                        TsError::MissingAacConfig => !s.video && aac.is_none(),
                        TsError::EmptySample { .. } => s.data.is_empty(),
                        TsError::Aac(_) => false,
                    };
                    prop_assert!(expected, "unexpected {:?}", e);
                }
            }
        }

        // whole packets, sync bytes (asserted by the reader), counting CCs
        let mut last_cc: HashMap<u16, u8> = HashMap::new();
        for p in ts_packets(&out) {
            prop_assert!(p.has_payload);
            if let Some(prev) = last_cc.insert(p.pid, p.cc) {
                prop_assert_eq!(p.cc, (prev + 1) % 16, "pid {:#x}", p.pid);
            }
        }

        // each accepted sample's data ends its PES (after header / ADTS)
        let pes = pes_per_pid(&out);
        for (pid, samples) in &accepted {
            let got = &pes[pid];
            prop_assert_eq!(got.len(), samples.len());
            for (g, want) in got.iter().zip(samples) {
                prop_assert!(g.ends_with(want));
                prop_assert_eq!(&g[..3], &[0, 0, 1]);
            }
        }
    }

    #[test]
    fn avc_parsers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300), keyframe in any::<bool>()) {
        let _ = SpsInfo::parse(&data);
        let mut sps = vec![0x67];
        sps.extend_from_slice(&data);
        let _ = SpsInfo::parse(&sps);
        if let Ok(config) = AvcDecoderConfig::parse(&data) {
            let _ = config.sps_info();
        }
        for size in [1u8, 2, 4] {
            let config = AvcDecoderConfig {
                profile_indication: 100,
                profile_compatibility: 0,
                level_indication: 31,
                nalu_length_size: size,
                sps: vec![bytes::Bytes::from_static(&[0x67, 1])],
                pps: vec![bytes::Bytes::from_static(&[0x68, 2])],
            };
            let mut out = BytesMut::new();
            if config.to_annex_b(&data, keyframe, &mut out).is_err() {
                prop_assert!(out.is_empty());
            }
        }
    }

    #[test]
    fn aac_parser_never_panics(data in proptest::collection::vec(any::<u8>(), 0..8), len in 0usize..10_000) {
        if let Ok(config) = AacConfig::parse(&data) {
            prop_assert!(config.codecs().starts_with("mp4a.40."));
            match config.adts_header(len) {
                Ok(h) => {
                    prop_assert_eq!(h[0], 0xFF);
                    let frame_len = (usize::from(h[3] & 3) << 11) | (usize::from(h[4]) << 3) | usize::from(h[5] >> 5);
                    prop_assert_eq!(frame_len, len + 7);
                }
                Err(_) => prop_assert!(len + 7 > 0x1FFF),
            }
        }
    }
}
