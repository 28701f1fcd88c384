//! Byte-level tests of the TS muxer's building blocks.

use super::*;

/// One parsed TS packet, fields as on the wire.
#[derive(Debug)]
struct Packet {
    pid: u16,
    pusi: bool,
    cc: u8,
    /// Adaptation field including its length byte.
    af: Option<Vec<u8>>,
    payload: Vec<u8>,
}

fn parse(out: &[u8]) -> Vec<Packet> {
    assert_eq!(out.len() % TS_PACKET_LEN, 0, "not whole packets");
    out.chunks(TS_PACKET_LEN)
        .map(|p| {
            assert_eq!(p[0], 0x47);
            let afc = (p[3] >> 4) & 0x03;
            let (af, rest) = if afc & 0x2 != 0 {
                let len = usize::from(p[4]);
                (Some(p[4..5 + len].to_vec()), &p[5 + len..])
            } else {
                (None, &p[4..])
            };
            Packet {
                pid: (u16::from(p[1] & 0x1F) << 8) | u16::from(p[2]),
                pusi: p[1] & 0x40 != 0,
                cc: p[3] & 0x0F,
                af,
                payload: if afc & 0x1 != 0 {
                    rest.to_vec()
                } else {
                    Vec::new()
                },
            }
        })
        .collect()
}

fn lc_44100_stereo() -> AacConfig {
    AacConfig::parse(&[0x12, 0x10]).unwrap()
}

fn av_config() -> TsConfig {
    TsConfig {
        has_video: true,
        has_audio: true,
        aac: Some(lc_44100_stereo()),
    }
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

// ---------------------------------------------------------------- CRC, PSI

#[test]
fn crc32_mpeg2_matches_the_catalogue_check_value() {
    assert_eq!(crc32_mpeg2(b"123456789"), 0x0376_E6E7);
    assert_eq!(crc32_mpeg2(b""), 0xFFFF_FFFF);
}

#[test]
fn pat_packet_is_byte_identical_to_ffmpeg() {
    // First 21 bytes of ffmpeg's PAT packet (`-f mpegts`, defaults).
    let mut out = BytesMut::new();
    TsMuxer::new(av_config()).start_segment(&mut out);
    let expected = hex("47 40 00 10 00 00 b0 0d 00 01 c1 00 00 00 01 f0 00 2a b1 04 b2");
    assert_eq!(&out[..expected.len()], &expected[..]);
    assert!(out[expected.len()..TS_PACKET_LEN]
        .iter()
        .all(|&b| b == 0xFF));
}

#[test]
fn pmt_for_video_and_audio_is_byte_identical_to_ffmpeg() {
    let mut out = BytesMut::new();
    TsMuxer::new(av_config()).start_segment(&mut out);
    let pmt = &out[TS_PACKET_LEN..2 * TS_PACKET_LEN];
    let expected = hex("47 50 00 10 00 02 b0 17 00 01 c1 00 00 e1 00 f0 00
         1b e1 00 f0 00 0f e1 01 f0 00 2f 44 b9 9b");
    assert_eq!(&pmt[..expected.len()], &expected[..]);
    assert!(pmt[expected.len()..].iter().all(|&b| b == 0xFF));
}

#[test]
fn pmt_for_video_only_is_byte_identical_to_ffmpeg() {
    let mut out = BytesMut::new();
    let config = TsConfig {
        has_video: true,
        has_audio: false,
        aac: None,
    };
    TsMuxer::new(config).start_segment(&mut out);
    let expected =
        hex("47 50 00 10 00 02 b0 12 00 01 c1 00 00 e1 00 f0 00 1b e1 00 f0 00 15 bd 4d 56");
    assert_eq!(
        &out[TS_PACKET_LEN..TS_PACKET_LEN + expected.len()],
        &expected[..]
    );
}

#[test]
fn pmt_for_audio_only_puts_pcr_on_the_audio_pid() {
    // CRC computed independently (Python, same polynomial).
    let config = TsConfig {
        has_video: false,
        has_audio: true,
        aac: Some(lc_44100_stereo()),
    };
    let mut muxer = TsMuxer::new(config);
    assert_eq!(muxer.pcr_pid(), AUDIO_PID);
    let mut out = BytesMut::new();
    muxer.start_segment(&mut out);
    let section = hex("02 b0 12 00 01 c1 00 00 e1 01 f0 00 0f e1 01 f0 00 ec e2 b0 94");
    assert_eq!(
        &out[TS_PACKET_LEN + 5..TS_PACKET_LEN + 5 + section.len()],
        &section[..]
    );
}

#[test]
fn pmt_without_streams_uses_the_null_pcr_pid() {
    let mut muxer = TsMuxer::new(TsConfig {
        has_video: false,
        has_audio: false,
        aac: None,
    });
    let mut out = BytesMut::new();
    muxer.start_segment(&mut out);
    let section = hex("02 b0 0d 00 01 c1 00 00 ff ff f0 00 1c c8 d7 3f");
    assert_eq!(
        &out[TS_PACKET_LEN + 5..TS_PACKET_LEN + 5 + section.len()],
        &section[..]
    );
}

#[test]
fn psi_continuity_counters_keep_counting_across_segments() {
    let mut muxer = TsMuxer::new(av_config());
    let mut out = BytesMut::new();
    for _ in 0..17 {
        muxer.start_segment(&mut out);
    }
    let packets = parse(&out);
    let pat: Vec<u8> = packets
        .iter()
        .filter(|p| p.pid == PAT_PID)
        .map(|p| p.cc)
        .collect();
    let pmt: Vec<u8> = packets
        .iter()
        .filter(|p| p.pid == PMT_PID)
        .map(|p| p.cc)
        .collect();
    let expected: Vec<u8> = (0..17).map(|i| i % 16).collect();
    assert_eq!(pat, expected);
    assert_eq!(pmt, expected);
}

// ------------------------------------------------------------- timestamps

#[test]
fn timestamp_field_encodes_one_second() {
    assert_eq!(
        encode_timestamp(0b0010, 90_000),
        [0x21, 0x00, 0x05, 0xBF, 0x21]
    );
    assert_eq!(encode_timestamp(0b0011, 0), [0x31, 0x00, 0x01, 0x00, 0x01]);
    assert_eq!(encode_timestamp(0b0001, 0), [0x11, 0x00, 0x01, 0x00, 0x01]);
}

#[test]
fn timestamp_field_encodes_all_33_bits_and_masks_the_rest() {
    assert_eq!(
        encode_timestamp(0b0010, (1 << 33) - 1),
        [0x2F, 0xFF, 0xFF, 0xFF, 0xFF]
    );
    // bit 32 alone lands in the top of the first byte
    assert_eq!(
        encode_timestamp(0b0010, 1 << 32),
        [0x29, 0x00, 0x01, 0x00, 0x01]
    );
    assert_eq!(
        encode_timestamp(0b0010, 1 << 33),
        encode_timestamp(0b0010, 0)
    );
}

#[test]
fn timestamps_are_ms_times_90_with_dts_only_when_different() {
    assert_eq!(timestamps_90k(1000, 0), (90_000, None));
    assert_eq!(timestamps_90k(1000, 66), (95_940, Some(90_000)));
    assert_eq!(timestamps_90k(0, 0), (0, None));
}

#[test]
fn timestamps_wrap_at_33_bits() {
    // 95_443_718 ms * 90 = 2^33 + 28
    assert_eq!(timestamps_90k(95_443_718, 0), (28, None));
    // PTS wraps backwards below zero
    assert_eq!(timestamps_90k(95_443_718, -1), ((1 << 33) - 62, Some(28)));
    assert_eq!(timestamps_90k(0, -1), ((1 << 33) - 90, Some(0)));
    // no overflow panic at the extremes
    let (pts, dts) = timestamps_90k(u64::MAX, i32::MAX);
    assert!(pts <= TIMESTAMP_MASK && dts.is_none_or(|d| d <= TIMESTAMP_MASK));
    let _ = timestamps_90k(u64::MAX, i32::MIN);
}

#[test]
fn pcr_runs_behind_dts_and_clamps_at_zero() {
    assert_eq!(pcr_base(0), 0);
    assert_eq!(pcr_base(PCR_LEAD_MS), 0);
    assert_eq!(pcr_base(1000), (1000 - PCR_LEAD_MS) * 90);
    assert_eq!(pcr_base(95_443_718 + PCR_LEAD_MS), 28);
    assert!(pcr_base(u64::MAX) <= TIMESTAMP_MASK);
}

#[test]
fn pcr_field_bytes() {
    // base 90000 = 0x15F90: 0x15F90 >> 1 = 0xAFC8, low bit 0
    assert_eq!(encode_pcr(90_000), [0x00, 0x00, 0xAF, 0xC8, 0x7E, 0x00]);
    assert_eq!(encode_pcr(1), [0x00, 0x00, 0x00, 0x00, 0xFE, 0x00]);
    assert_eq!(
        encode_pcr((1 << 33) - 1),
        [0xFF, 0xFF, 0xFF, 0xFF, 0xFE, 0x00]
    );
}

#[test]
fn pes_header_with_pts_only_and_exact_length() {
    let h = PesHeader::new(STREAM_ID_AUDIO, 90_000, None, Some(100));
    assert_eq!(
        h.as_bytes(),
        &hex("00 00 01 c0 00 6c 80 80 05 21 00 05 bf 21")[..] // 3 + 5 + 100 = 0x6c
    );
}

#[test]
fn pes_header_with_pts_and_dts_and_unbounded_length() {
    let h = PesHeader::new(STREAM_ID_VIDEO, 90_000 + 3_000, Some(90_000), None);
    // 93000 = 0x16B48: >>15 = 2, >>7 & 0xff = 0xd6, & 0x7f = 0x48
    assert_eq!(
        h.as_bytes(),
        &hex("00 00 01 e0 00 00 80 c0 0a 31 00 05 d6 91 11 00 05 bf 21")[..]
    );
}

#[test]
fn pes_length_that_does_not_fit_16_bits_becomes_zero() {
    let h = PesHeader::new(STREAM_ID_AUDIO, 0, None, Some(70_000));
    assert_eq!(&h.as_bytes()[4..6], &[0, 0]);
    let h = PesHeader::new(STREAM_ID_AUDIO, 0, None, Some(usize::MAX));
    assert_eq!(&h.as_bytes()[4..6], &[0, 0]);
}

// ------------------------------------------------------ packetization

const NO_FLAGS: FirstPacketFlags = FirstPacketFlags {
    pcr: None,
    random_access: false,
};

fn packetize(len: usize, first: FirstPacketFlags) -> (Vec<u8>, Vec<u8>) {
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let mut out = BytesMut::new();
    let mut cc = 0;
    write_pes_packets(0x101, &mut cc, first, &[&data], &mut out);
    (out.to_vec(), data)
}

fn reassemble(packets: &[Packet]) -> Vec<u8> {
    packets.iter().flat_map(|p| p.payload.clone()).collect()
}

#[test]
fn payload_of_184_bytes_fills_one_packet_without_adaptation_field() {
    let (out, data) = packetize(184, NO_FLAGS);
    assert_eq!(out.len(), 188);
    assert_eq!(&out[..4], &[0x47, 0x41, 0x01, 0x10]);
    assert_eq!(&out[4..], &data[..]);
}

#[test]
fn payload_of_183_bytes_gets_a_one_byte_adaptation_field() {
    let (out, data) = packetize(183, NO_FLAGS);
    assert_eq!(out.len(), 188);
    // afc = 11, adaptation_field_length = 0, no flags byte
    assert_eq!(&out[..5], &[0x47, 0x41, 0x01, 0x30, 0x00]);
    assert_eq!(&out[5..], &data[..]);
}

#[test]
fn payload_of_182_bytes_gets_a_two_byte_adaptation_field() {
    let (out, data) = packetize(182, NO_FLAGS);
    assert_eq!(&out[..6], &[0x47, 0x41, 0x01, 0x30, 0x01, 0x00]);
    assert_eq!(&out[6..], &data[..]);
}

#[test]
fn payload_of_181_bytes_gets_one_stuffing_byte() {
    let (out, data) = packetize(181, NO_FLAGS);
    assert_eq!(&out[..7], &[0x47, 0x41, 0x01, 0x30, 0x02, 0x00, 0xFF]);
    assert_eq!(&out[7..], &data[..]);
}

#[test]
fn payload_of_185_bytes_spills_one_byte_into_a_stuffed_second_packet() {
    let (out, data) = packetize(185, NO_FLAGS);
    assert_eq!(out.len(), 2 * 188);
    assert_eq!(&out[4..188], &data[..184]);
    let second = &out[188..];
    assert_eq!(&second[..6], &[0x47, 0x01, 0x01, 0x31, 182, 0x00]);
    assert!(second[6..187].iter().all(|&b| b == 0xFF));
    assert_eq!(second[187], data[184]);
}

#[test]
fn second_packet_edge_cases_184_183_182_bytes() {
    for (tail, af) in [
        (184usize, None),
        (183, Some(vec![0u8])),
        (182, Some(vec![1, 0])),
    ] {
        let (out, data) = packetize(184 + tail, NO_FLAGS);
        let packets = parse(&out);
        assert_eq!(packets.len(), 2);
        assert_eq!(packets[1].af, af, "tail {tail}");
        assert!(!packets[1].pusi);
        assert_eq!(packets[1].cc, 1);
        assert_eq!(reassemble(&packets), data);
    }
}

#[test]
fn first_packet_with_pcr_and_random_access() {
    let first = FirstPacketFlags {
        pcr: Some(90_000),
        random_access: true,
    };
    // 176 bytes fit exactly next to the 8-byte adaptation field
    let (out, data) = packetize(176, first);
    assert_eq!(out.len(), 188);
    assert_eq!(
        &out[..12],
        &[0x47, 0x41, 0x01, 0x30, 0x07, 0x50, 0x00, 0x00, 0xAF, 0xC8, 0x7E, 0x00]
    );
    assert_eq!(&out[12..], &data[..]);

    // 175 bytes: one stuffing byte after the PCR
    let (out, data) = packetize(175, first);
    assert_eq!(
        &out[4..13],
        &[0x08, 0x50, 0x00, 0x00, 0xAF, 0xC8, 0x7E, 0x00, 0xFF]
    );
    assert_eq!(&out[13..], &data[..]);

    // 177 bytes: the last byte goes into a second, stuffed packet
    let (out, data) = packetize(177, first);
    let packets = parse(&out);
    assert_eq!(packets.len(), 2);
    assert_eq!(packets[1].af.as_ref().map(Vec::len), Some(183));
    assert_eq!(reassemble(&packets), data);
}

#[test]
fn random_access_without_pcr_is_a_two_byte_field() {
    let first = FirstPacketFlags {
        pcr: None,
        random_access: true,
    };
    let (out, data) = packetize(182, first);
    assert_eq!(&out[..6], &[0x47, 0x41, 0x01, 0x30, 0x01, 0x40]);
    assert_eq!(&out[6..], &data[..]);
    let (out, data) = packetize(10, first);
    assert_eq!(&out[4..7], &[173, 0x40, 0xFF]);
    assert_eq!(&out[178..], &data[..]);
}

#[test]
fn every_size_up_to_three_packets_reassembles_with_counting_cc() {
    for len in 1..=3 * 184 + 1 {
        for first in [
            NO_FLAGS,
            FirstPacketFlags {
                pcr: Some(12345),
                random_access: true,
            },
        ] {
            let (out, data) = packetize(len, first);
            let packets = parse(&out);
            assert_eq!(reassemble(&packets), data, "len {len}");
            for (i, p) in packets.iter().enumerate() {
                assert_eq!(p.cc, i as u8 % 16);
                assert_eq!(p.pusi, i == 0);
                assert_eq!(p.pid, 0x101);
            }
            // Only the last packet may be short of payload.
            for p in &packets[..packets.len() - 1] {
                let af_len = p.af.as_ref().map_or(0, Vec::len);
                assert!(af_len == 0 || af_len == 8 || af_len == 2, "len {len}");
            }
        }
    }
}

#[test]
fn pieces_are_concatenated_across_packet_boundaries() {
    let a = vec![1u8; 100];
    let b = vec![2u8; 7];
    let c = vec![3u8; 300];
    let mut out = BytesMut::new();
    let mut cc = 15;
    write_pes_packets(0x100, &mut cc, NO_FLAGS, &[&a, &[], &b, &c], &mut out);
    let packets = parse(&out);
    assert_eq!(packets[0].cc, 15);
    assert_eq!(packets[1].cc, 0);
    assert_eq!(cc, 2);
    let expected: Vec<u8> = [a, b, c].concat();
    assert_eq!(reassemble(&packets), expected);
}

// ------------------------------------------------------- write_sample

#[test]
fn audio_sample_is_one_pes_with_adts_and_exact_length() {
    let mut muxer = TsMuxer::new(av_config());
    let raw = [0xAAu8; 10];
    let mut out = BytesMut::new();
    let s = TsSample {
        track: TsTrack::Audio,
        dts_ms: 1000,
        cts_ms: 0,
        keyframe: false,
        data: &raw,
    };
    muxer.write_sample(&s, &mut out).unwrap();
    let packets = parse(&out);
    assert_eq!(packets.len(), 1);
    assert_eq!(packets[0].pid, AUDIO_PID);
    // no PCR on audio when there is video; stuffing only
    assert_eq!(packets[0].af.as_ref().map(|a| a[1]), Some(0x00));
    let mut expected = hex("00 00 01 c0 00 19 80 80 05 21 00 05 bf 21"); // 3+5+7+10 = 25
    expected.extend_from_slice(&lc_44100_stereo().adts_header(10).unwrap());
    expected.extend_from_slice(&raw);
    assert_eq!(packets[0].payload, expected);
}

#[test]
fn video_keyframe_carries_pcr_and_random_access() {
    let mut muxer = TsMuxer::new(av_config());
    let au = [0, 0, 0, 1, 0x09, 0xF0, 0, 0, 0, 1, 0x65, 0x88];
    let mut out = BytesMut::new();
    let s = TsSample {
        track: TsTrack::Video,
        dts_ms: 1100,
        cts_ms: 0,
        keyframe: true,
        data: &au,
    };
    muxer.write_sample(&s, &mut out).unwrap();
    let packets = parse(&out);
    assert_eq!(packets.len(), 1);
    let af = packets[0].af.as_ref().unwrap();
    assert_eq!(af[1], 0x50);
    assert_eq!(&af[2..8], &encode_pcr(1000 * 90));
    let mut expected = hex("00 00 01 e0 00 00 80 80 05");
    expected.extend_from_slice(&encode_timestamp(0b0010, 1100 * 90));
    expected.extend_from_slice(&au);
    assert_eq!(packets[0].payload, expected);
}

#[test]
fn audio_only_program_carries_pcr_on_audio() {
    let config = TsConfig {
        has_video: false,
        has_audio: true,
        aac: Some(lc_44100_stereo()),
    };
    let mut muxer = TsMuxer::new(config);
    let mut out = BytesMut::new();
    let s = TsSample {
        track: TsTrack::Audio,
        dts_ms: 5000,
        cts_ms: 0,
        keyframe: false,
        data: &[1, 2, 3],
    };
    muxer.write_sample(&s, &mut out).unwrap();
    let af = parse(&out)[0].af.clone().unwrap();
    assert_eq!(af[1], 0x10);
    assert_eq!(&af[2..8], &encode_pcr(4900 * 90));
}

#[test]
fn invalid_samples_are_errors_and_write_nothing() {
    let mut video_only = TsMuxer::new(TsConfig {
        has_video: true,
        has_audio: false,
        aac: None,
    });
    let mut no_aac = TsMuxer::new(TsConfig {
        has_video: false,
        has_audio: true,
        aac: None,
    });
    let mut av = TsMuxer::new(av_config());
    let sample = |track, data| TsSample {
        track,
        dts_ms: 0,
        cts_ms: 0,
        keyframe: true,
        data,
    };
    let big = vec![0u8; 8185];
    let mut out = BytesMut::new();
    assert_eq!(
        video_only.write_sample(&sample(TsTrack::Audio, &[1]), &mut out),
        Err(TsError::TrackNotConfigured {
            track: TsTrack::Audio
        })
    );
    assert_eq!(
        no_aac.write_sample(&sample(TsTrack::Audio, &[1]), &mut out),
        Err(TsError::MissingAacConfig)
    );
    assert_eq!(
        av.write_sample(&sample(TsTrack::Video, &[]), &mut out),
        Err(TsError::EmptySample {
            track: TsTrack::Video
        })
    );
    assert!(matches!(
        av.write_sample(&sample(TsTrack::Audio, &big), &mut out),
        Err(TsError::Aac(AacError::FrameTooLarge { len: 8185 }))
    ));
    assert!(out.is_empty());
    // counters untouched: the next good sample starts at 0
    av.write_sample(&sample(TsTrack::Audio, &big[..8184]), &mut out)
        .unwrap();
    assert_eq!(parse(&out)[0].cc, 0);
}
