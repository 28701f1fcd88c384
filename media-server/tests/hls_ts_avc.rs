//! AVC sequence header, Annex B conversion and SPS parsing on real x264 output.

use bytes::BytesMut;
use westream_media::hls::avc::{AvcDecoderConfig, AvcError, SpsInfo};

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// SPS NAL units produced by `ffmpeg -f lavfi -i testsrc=size=WxH ... -c:v
/// libx264 -f h264`, with the picture size ffprobe reports for them.
const SPS_FIXTURES: &[(&str, &str, &str, u32, u32)] = &[
    // (what, sps hex, CODECS, width, height)
    (
        "high 720p",
        "6764001facd9405005bb0110000003001000000303c0f1831960",
        "avc1.64001f",
        1280,
        720,
    ),
    (
        "high 1080p, crops 1088 to 1080",
        "67640028acd940780227e5c044000003000400000300f03c60c658",
        "avc1.640028",
        1920,
        1080,
    ),
    (
        "high 360p, crops 368 to 360",
        "6764001eacd940a02ff970110000030001000003003c0f162d96",
        "avc1.64001e",
        640,
        360,
    ),
    (
        "high 854x480, crops 864 to 854",
        "6764001facd940d83de6f0110000030001000003003c0f183196",
        "avc1.64001f",
        854,
        480,
    ),
    (
        "high QCIF",
        "6764000bacd942c4ec0440000003004000000f03c50a6580",
        "avc1.64000b",
        176,
        144,
    ),
    (
        "constrained baseline (no chroma fields)",
        "6742c00dd90141fb0110000003001000000303c0f142a480",
        "avc1.42c00d",
        320,
        240,
    ),
    (
        "high 4:2:2, crop unit 2x1",
        "677a001fbcd940d83de6f0110000030001000003003c0f183196",
        "avc1.7a001f",
        854,
        480,
    ),
    (
        "high 4:4:4, crop unit 1x1",
        "67f4001f919b281b07bc5f8088000003000800000301e078c18cb0",
        "avc1.f4001f",
        854,
        480,
    ),
    (
        "interlaced (field pairs)",
        "6764001eacd940b47b6022000003000200000300783e28532c",
        "avc1.64001e",
        720,
        480,
    ),
];

#[test]
fn sps_fixtures_give_ffprobes_size_and_codecs_string() {
    for &(what, sps, codecs, w, h) in SPS_FIXTURES {
        let info = SpsInfo::parse(&hex(sps)).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!((info.width, info.height), (w, h), "{what}");
        assert_eq!(info.codecs(), codecs, "{what}");
    }
}

#[test]
fn sps_fields_of_720p_high() {
    let info = SpsInfo::parse(&hex(SPS_FIXTURES[0].1)).unwrap();
    assert_eq!(info.profile_idc, 100);
    assert_eq!(info.constraint_flags, 0);
    assert_eq!(info.level_idc, 31);
    assert_eq!(info.chroma_format_idc, 1);
}

#[test]
fn every_truncation_of_a_real_sps_is_an_error_not_a_panic() {
    for &(what, sps, ..) in SPS_FIXTURES {
        let sps = hex(sps);
        // Cutting inside the fields we read must fail; after them it may succeed.
        for cut in 0..sps.len() {
            if let Ok(info) = SpsInfo::parse(&sps[..cut]) {
                assert!(info.width > 0 && info.height > 0, "{what} cut {cut}");
            }
        }
        assert_eq!(
            SpsInfo::parse(&sps[..4]),
            Err(AvcError::SpsTruncated),
            "{what}"
        );
    }
}

#[test]
fn non_sps_nal_and_garbage_are_errors() {
    assert_eq!(SpsInfo::parse(&[]), Err(AvcError::SpsTruncated));
    assert_eq!(
        SpsInfo::parse(&[0x68, 0xEB]),
        Err(AvcError::NotAnSps { nal_type: 8 })
    );
    // all-zero payload: exp-Golomb codes never terminate within 32 bits
    assert!(SpsInfo::parse(&[0x67, 100, 0, 31, 0, 0, 0, 0, 0, 0]).is_err());
    // cropping more than the picture is refused
    let mut sps = hex(SPS_FIXTURES[5].1);
    sps.truncate(4);
    // seq id 0, log2 frame num 0, poc type 2, refs 0, gaps 0, 1x1 MBs,
    // frame_mbs_only, direct8x8, cropping with left = 100
    sps.extend_from_slice(&[0xDD, 0xF0, 0x32, 0xF0]);
    assert_eq!(
        SpsInfo::parse(&sps),
        Err(AvcError::SpsOutOfRange {
            field: "pic_width_in_mbs_minus1"
        })
    );
    // the same SPS without the crop is a single 16x16 macroblock
    sps.truncate(4);
    sps.extend_from_slice(&[0xDD, 0xE0]);
    assert_eq!(
        SpsInfo::parse(&sps).map(|i| (i.width, i.height)),
        Ok((16, 16))
    );
}

// ------------------------------------------------------------------ record

const SPS: &str = "6764001facd9405005bb0110000003001000000303c0f1831960";
const PPS: &str = "68ebe3cb22c0";

fn record(length_size_minus_one: u8) -> Vec<u8> {
    let sps = hex(SPS);
    let pps = hex(PPS);
    let mut r = vec![1, 0x64, 0x00, 0x1F, 0xFC | length_size_minus_one, 0xE1];
    r.extend_from_slice(&(sps.len() as u16).to_be_bytes());
    r.extend_from_slice(&sps);
    r.push(1);
    r.extend_from_slice(&(pps.len() as u16).to_be_bytes());
    r.extend_from_slice(&pps);
    r
}

fn avcc(length_size: usize, nalus: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for n in nalus {
        out.extend_from_slice(&(n.len() as u32).to_be_bytes()[4 - length_size..]);
        out.extend_from_slice(n);
    }
    out
}

fn annex_b(nalus: &[&[u8]]) -> Vec<u8> {
    nalus
        .iter()
        .flat_map(|n| [&[0, 0, 0, 1][..], n].concat())
        .collect()
}

#[test]
fn record_is_parsed() {
    let c = AvcDecoderConfig::parse(&record(3)).unwrap();
    assert_eq!(
        (
            c.profile_indication,
            c.profile_compatibility,
            c.level_indication
        ),
        (100, 0, 31)
    );
    assert_eq!(c.nalu_length_size, 4);
    assert_eq!(c.sps, vec![hex(SPS)]);
    assert_eq!(c.pps, vec![hex(PPS)]);
    assert_eq!(c.sps_info().unwrap().codecs(), "avc1.64001f");
}

#[test]
fn record_with_high_profile_trailer_is_parsed() {
    let mut r = record(3);
    r.extend_from_slice(&[0xFD, 0xF8, 0xF8, 0x00]);
    assert!(AvcDecoderConfig::parse(&r).is_ok());
}

#[test]
fn malformed_records_are_errors() {
    let r = record(3);
    for cut in 0..r.len() {
        assert!(AvcDecoderConfig::parse(&r[..cut]).is_err(), "cut {cut}");
    }
    let mut bad = r.clone();
    bad[0] = 0;
    assert_eq!(
        AvcDecoderConfig::parse(&bad),
        Err(AvcError::UnsupportedVersion { version: 0 })
    );
    assert_eq!(
        AvcDecoderConfig::parse(&record(2)),
        Err(AvcError::InvalidNaluLengthSize { size: 3 })
    );
    let mut no_sps = r[..5].to_vec();
    no_sps.extend_from_slice(&[0xE0, 0]);
    assert_eq!(
        AvcDecoderConfig::parse(&no_sps).unwrap().sps_info(),
        Err(AvcError::NoSps)
    );
}

// ------------------------------------------------------------- Annex B

const AUD: &[u8] = &[0x09, 0xF0];
const IDR: &[u8] = &[0x65, 0x88, 0x84, 0x00, 0x33];
const SLICE: &[u8] = &[0x41, 0x9A, 0x02];
const SEI: &[u8] = &[0x06, 0x05, 0x01, 0xAA, 0x80];

#[test]
fn idr_frame_gets_aud_then_sps_pps() {
    let c = AvcDecoderConfig::parse(&record(3)).unwrap();
    let mut out = BytesMut::new();
    c.to_annex_b(&avcc(4, &[SEI, IDR]), true, &mut out).unwrap();
    assert_eq!(
        &out[..],
        &annex_b(&[AUD, &hex(SPS), &hex(PPS), SEI, IDR])[..]
    );
}

#[test]
fn non_idr_frame_gets_only_aud() {
    let c = AvcDecoderConfig::parse(&record(3)).unwrap();
    let mut out = BytesMut::from(&b"prefix"[..]);
    c.to_annex_b(&avcc(4, &[SLICE]), false, &mut out).unwrap();
    assert_eq!(&out[..6], b"prefix", "appends, never clears");
    assert_eq!(&out[6..], &annex_b(&[AUD, SLICE])[..]);
}

#[test]
fn idr_slice_gets_parameter_sets_even_without_the_keyframe_flag() {
    let c = AvcDecoderConfig::parse(&record(3)).unwrap();
    let mut out = BytesMut::new();
    c.to_annex_b(&avcc(4, &[IDR]), false, &mut out).unwrap();
    assert_eq!(&out[..], &annex_b(&[AUD, &hex(SPS), &hex(PPS), IDR])[..]);
}

#[test]
fn frames_own_aud_is_replaced_and_own_sps_is_not_duplicated() {
    let c = AvcDecoderConfig::parse(&record(3)).unwrap();
    let sps = hex(SPS);
    let pps = hex(PPS);
    let mut out = BytesMut::new();
    c.to_annex_b(&avcc(4, &[AUD, &sps, &pps, IDR]), true, &mut out)
        .unwrap();
    assert_eq!(&out[..], &annex_b(&[AUD, &sps, &pps, IDR])[..]);
}

#[test]
fn short_length_prefixes_and_empty_nalus() {
    for (minus_one, size) in [(0u8, 1usize), (1, 2)] {
        let c = AvcDecoderConfig::parse(&record(minus_one)).unwrap();
        let mut out = BytesMut::new();
        c.to_annex_b(&avcc(size, &[&[], SLICE]), false, &mut out)
            .unwrap();
        assert_eq!(&out[..], &annex_b(&[AUD, SLICE])[..], "size {size}");
    }
}

#[test]
fn truncated_frames_are_errors_and_write_nothing() {
    let c = AvcDecoderConfig::parse(&record(3)).unwrap();
    let frame = avcc(4, &[SEI, IDR]);
    for cut in 1..frame.len() {
        if cut == 4 + SEI.len() {
            continue; // a whole first NALU is a valid frame
        }
        let mut out = BytesMut::new();
        let err = c.to_annex_b(&frame[..cut], true, &mut out).unwrap_err();
        assert!(matches!(err, AvcError::NaluTruncated { .. }), "cut {cut}");
        assert!(out.is_empty(), "cut {cut}");
    }
    let mut out = BytesMut::new();
    assert_eq!(
        c.to_annex_b(&[0, 0, 0, 9, 0x41], false, &mut out),
        Err(AvcError::NaluTruncated {
            offset: 0,
            declared: 9,
            available: 1
        })
    );
    assert_eq!(
        c.to_annex_b(&[0, 0, 0, 1, 0x41, 0, 0], false, &mut out),
        Err(AvcError::NaluTruncated {
            offset: 5,
            declared: 0,
            available: 2
        })
    );
}

#[test]
fn empty_frame_is_just_an_aud() {
    let c = AvcDecoderConfig::parse(&record(3)).unwrap();
    let mut out = BytesMut::new();
    c.to_annex_b(&[], false, &mut out).unwrap();
    assert_eq!(&out[..], &annex_b(&[AUD])[..]);
}
