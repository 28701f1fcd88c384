//! Sans-IO MPEG-TS muxer for HLS segments (ISO/IEC 13818-1).
//!
//! One program (number 1, PMT on PID 0x1000) with up to two elementary
//! streams: H.264 on PID 0x100 (stream_type 0x1B) and AAC/ADTS on PID 0x101
//! (stream_type 0x0F). The caller drives it:
//!
//! 1. [`TsMuxer::new`] once per stream rendition;
//! 2. [`TsMuxer::start_segment`] at the top of every segment (PAT + PMT);
//! 3. [`TsMuxer::write_sample`] for each frame, in decode order, starting a
//!    new segment only before a video keyframe.
//!
//! Every call appends whole 188-byte packets to the caller's `BytesMut`;
//! nothing else is buffered, so a segment can be cut between any two calls.
//! Continuity counters live in the muxer and keep counting across segments,
//! which players expect from consecutive segments of one stream.
//!
//! Timing: PTS = (dts_ms + cts_ms) * 90 and DTS = dts_ms * 90, both modulo
//! 2^33, with no offset added. The PCR is carried on the first packet of
//! every PES of the PCR PID (video if present, else audio) and is the DTS of
//! that PES minus [`PCR_LEAD_MS`], clamped at 0, so that frames interleaved
//! slightly out of order across tracks are not "late" for the decoder model.

use bytes::{BufMut, BytesMut};
use thiserror::Error;

use super::aac::{AacConfig, AacError};

/// Size of every transport stream packet.
pub const TS_PACKET_LEN: usize = 188;
/// PID of the program association table.
pub const PAT_PID: u16 = 0x0000;
/// PID of the program map table (ffmpeg's default, too).
pub const PMT_PID: u16 = 0x1000;
/// PID of the H.264 elementary stream.
pub const VIDEO_PID: u16 = 0x0100;
/// PID of the AAC elementary stream.
pub const AUDIO_PID: u16 = 0x0101;
/// The only program in the stream.
pub const PROGRAM_NUMBER: u16 = 1;
/// transport_stream_id written in the PAT.
pub const TRANSPORT_STREAM_ID: u16 = 1;
/// How far the PCR runs behind the DTS of the PES that carries it.
pub const PCR_LEAD_MS: u64 = 100;

const STREAM_TYPE_H264: u8 = 0x1B;
const STREAM_TYPE_AAC_ADTS: u8 = 0x0F;
const STREAM_ID_VIDEO: u8 = 0xE0;
const STREAM_ID_AUDIO: u8 = 0xC0;
/// PCR_PID value meaning "no PCR" (a program with no streams).
const NULL_PID: u16 = 0x1FFF;
const TS_HEADER_LEN: usize = 4;
const TS_PAYLOAD_LEN: usize = TS_PACKET_LEN - TS_HEADER_LEN;
const TIMESTAMP_MASK: u64 = (1 << 33) - 1;

/// Which elementary stream a sample belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TsTrack {
    /// H.264 video.
    Video,
    /// AAC audio.
    Audio,
}

/// One frame handed to the muxer.
#[derive(Debug, Clone, Copy)]
pub struct TsSample<'a> {
    /// Which stream the frame belongs to.
    pub track: TsTrack,
    /// Decode timestamp in milliseconds (64-bit, monotonic per track).
    pub dts_ms: u64,
    /// Composition offset: pts = dts + cts (B-frames).
    pub cts_ms: i32,
    /// A random access point (IDR for video); flagged in the TS.
    pub keyframe: bool,
    /// Video: Annex B access unit (already converted); audio: raw AAC frame
    /// without ADTS (the muxer adds ADTS from the config it was given).
    pub data: &'a [u8],
}

/// What the program contains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TsConfig {
    /// The program has an H.264 stream.
    pub has_video: bool,
    /// The program has an AAC stream.
    pub has_audio: bool,
    /// The AAC AudioSpecificConfig, needed to write ADTS headers.
    pub aac: Option<AacConfig>,
}

/// Why a sample could not be muxed. Nothing is written when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TsError {
    /// The sample's track is not in the program (see [`TsConfig`]).
    #[error("{track:?} sample but the program has no {track:?} stream")]
    TrackNotConfigured {
        /// The sample's track.
        track: TsTrack,
    },
    /// An audio sample arrived but no AAC config was given.
    #[error("audio sample without an AAC config")]
    MissingAacConfig,
    /// The sample carries no data; an empty PES would confuse demuxers.
    #[error("empty {track:?} sample")]
    EmptySample {
        /// The sample's track.
        track: TsTrack,
    },
    /// The ADTS header could not be built (frame too large).
    #[error(transparent)]
    Aac(#[from] AacError),
}

/// The muxer state: the program layout and one continuity counter per PID.
#[derive(Debug, Clone)]
pub struct TsMuxer {
    config: TsConfig,
    cc_pat: u8,
    cc_pmt: u8,
    cc_video: u8,
    cc_audio: u8,
}

impl TsMuxer {
    /// A muxer for one program; counters start at 0.
    pub fn new(config: TsConfig) -> Self {
        Self {
            config,
            cc_pat: 0,
            cc_pmt: 0,
            cc_video: 0,
            cc_audio: 0,
        }
    }

    /// The configuration given to [`TsMuxer::new`].
    pub fn config(&self) -> &TsConfig {
        &self.config
    }

    /// The PID whose packets carry the PCR: video when present, else audio.
    pub fn pcr_pid(&self) -> u16 {
        if self.config.has_video {
            VIDEO_PID
        } else if self.config.has_audio {
            AUDIO_PID
        } else {
            NULL_PID
        }
    }

    /// Appends PAT and PMT packets; call at the top of every segment so each
    /// segment can be decoded on its own.
    pub fn start_segment(&mut self, out: &mut BytesMut) {
        let pat = pat_section();
        write_psi_packet(PAT_PID, &mut self.cc_pat, &pat, out);
        let pmt = pmt_section(&self.config, self.pcr_pid());
        write_psi_packet(PMT_PID, &mut self.cc_pmt, &pmt, out);
    }

    /// Appends one frame as a PES split into TS packets.
    pub fn write_sample(&mut self, s: &TsSample<'_>, out: &mut BytesMut) -> Result<(), TsError> {
        let (configured, pid, stream_id) = match s.track {
            TsTrack::Video => (self.config.has_video, VIDEO_PID, STREAM_ID_VIDEO),
            TsTrack::Audio => (self.config.has_audio, AUDIO_PID, STREAM_ID_AUDIO),
        };
        if !configured {
            return Err(TsError::TrackNotConfigured { track: s.track });
        }
        if s.data.is_empty() {
            return Err(TsError::EmptySample { track: s.track });
        }

        // Audio gets its ADTS header here, before anything is written, so an
        // oversized frame leaves `out` and the counters untouched.
        let adts = match s.track {
            TsTrack::Video => None,
            TsTrack::Audio => {
                let aac = self.config.aac.as_ref().ok_or(TsError::MissingAacConfig)?;
                Some(aac.adts_header(s.data.len())?)
            }
        };
        let adts: &[u8] = adts.as_ref().map_or(&[], |h| &h[..]);

        let (pts, dts) = timestamps_90k(s.dts_ms, s.cts_ms);
        // Video uses 0 ("unbounded"), as ffmpeg does, since access units can
        // exceed 64 KiB; audio always fits and gets its exact length.
        let es_len = match s.track {
            TsTrack::Video => None,
            TsTrack::Audio => Some(adts.len() + s.data.len()),
        };
        let header = PesHeader::new(stream_id, pts, dts, es_len);

        let pcr = (pid == self.pcr_pid()).then(|| pcr_base(s.dts_ms));
        let cc = match s.track {
            TsTrack::Video => &mut self.cc_video,
            TsTrack::Audio => &mut self.cc_audio,
        };
        let first = FirstPacketFlags {
            pcr,
            random_access: s.keyframe,
        };
        write_pes_packets(pid, cc, first, &[header.as_bytes(), adts, s.data], out);
        Ok(())
    }
}

/// PTS and DTS in 90 kHz units modulo 2^33; DTS is `None` when equal to PTS.
///
/// Wrapping u64 arithmetic is exact modulo 2^33 because 2^33 divides 2^64,
/// so huge `dts_ms` or a negative composition time never overflow or panic.
fn timestamps_90k(dts_ms: u64, cts_ms: i32) -> (u64, Option<u64>) {
    let dts = dts_ms.wrapping_mul(90);
    let pts = dts.wrapping_add((i64::from(cts_ms) * 90) as u64) & TIMESTAMP_MASK;
    let dts = dts & TIMESTAMP_MASK;
    (pts, (pts != dts).then_some(dts))
}

/// The 33-bit PCR base for a PES with this DTS (see the module doc).
fn pcr_base(dts_ms: u64) -> u64 {
    let base = (u128::from(dts_ms) * 90).saturating_sub(u128::from(PCR_LEAD_MS) * 90);
    (base & u128::from(TIMESTAMP_MASK)) as u64
}

/// A PES header with PTS and optional DTS (at most 19 bytes).
struct PesHeader {
    bytes: [u8; 19],
    len: usize,
}

impl PesHeader {
    /// `es_len` is the elementary stream bytes following the header, or
    /// `None` to write PES_packet_length 0 (unbounded, video only).
    fn new(stream_id: u8, pts: u64, dts: Option<u64>, es_len: Option<usize>) -> Self {
        let header_data_len: u8 = if dts.is_some() { 10 } else { 5 };
        // 3 bytes of flags + header data + payload; 0 if it cannot be expressed.
        let packet_len = es_len
            .and_then(|n| n.checked_add(3 + usize::from(header_data_len)))
            .and_then(|n| u16::try_from(n).ok())
            .unwrap_or(0);
        let mut bytes = [0u8; 19];
        bytes[..4].copy_from_slice(&[0x00, 0x00, 0x01, stream_id]);
        bytes[4..6].copy_from_slice(&packet_len.to_be_bytes());
        // '10' marker, not scrambled, no priority/alignment/copyright flags.
        bytes[6] = 0x80;
        bytes[7] = if dts.is_some() { 0xC0 } else { 0x80 };
        bytes[8] = header_data_len;
        match dts {
            Some(dts) => {
                bytes[9..14].copy_from_slice(&encode_timestamp(0b0011, pts));
                bytes[14..19].copy_from_slice(&encode_timestamp(0b0001, dts));
            }
            None => bytes[9..14].copy_from_slice(&encode_timestamp(0b0010, pts)),
        }
        Self {
            bytes,
            len: 9 + usize::from(header_data_len),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// The 5-byte PTS/DTS field: 4-bit prefix, 33 bits split 3/15/15 with
/// marker bits after each part.
fn encode_timestamp(prefix: u8, ts: u64) -> [u8; 5] {
    let ts = ts & TIMESTAMP_MASK;
    [
        (prefix << 4) | (((ts >> 30) as u8 & 0x07) << 1) | 1,
        (ts >> 22) as u8,
        (((ts >> 15) as u8 & 0x7F) << 1) | 1,
        (ts >> 7) as u8,
        ((ts as u8 & 0x7F) << 1) | 1,
    ]
}

/// Adaptation field content for the first packet of a PES.
#[derive(Clone, Copy)]
struct FirstPacketFlags {
    pcr: Option<u64>,
    random_access: bool,
}

/// Splits `parts` (concatenated: PES header, optional ADTS, payload) into TS
/// packets. The last packet is filled with adaptation field stuffing, which
/// is the only padding the standard allows inside a PES.
fn write_pes_packets(
    pid: u16,
    cc: &mut u8,
    first: FirstPacketFlags,
    parts: &[&[u8]],
    out: &mut BytesMut,
) {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    // Every packet but the last carries at least 176 payload bytes.
    out.reserve((total / (TS_PAYLOAD_LEN - 8) + 2) * TS_PACKET_LEN);
    let mut chunks = Chunker::new(parts);
    let mut remaining = total;
    let mut is_first = true;
    while remaining > 0 {
        let (flags, pcr) = if is_first {
            let mut flags = 0u8;
            if first.random_access {
                flags |= 0x40;
            }
            if first.pcr.is_some() {
                flags |= 0x10;
            }
            (flags, first.pcr)
        } else {
            (0, None)
        };
        let pcr_len = if pcr.is_some() { 6 } else { 0 };
        // Length byte + flags byte + PCR when any flag is set.
        let af_required = if flags != 0 { 2 + pcr_len } else { 0 };
        let capacity = TS_PAYLOAD_LEN - af_required;
        let payload_len = remaining.min(capacity);
        let stuffing = capacity - payload_len;
        let af_total = af_required + stuffing;

        let pusi = if is_first { 0x40 } else { 0x00 };
        let afc = if af_total > 0 { 0x30 } else { 0x10 };
        out.put_u8(0x47);
        out.put_u8(pusi | ((pid >> 8) as u8 & 0x1F));
        out.put_u8(pid as u8);
        out.put_u8(afc | (*cc & 0x0F));
        *cc = (*cc + 1) & 0x0F;

        if af_total > 0 {
            // af_total == 1 is the 1-byte edge case: a zero-length
            // adaptation field, just the length byte and no flags byte.
            let af_len = af_total - 1;
            out.put_u8(af_len as u8);
            if af_len > 0 {
                out.put_u8(flags);
                if let Some(base) = pcr {
                    out.put_slice(&encode_pcr(base));
                }
                out.put_bytes(0xFF, af_len - 1 - pcr_len);
            }
        }
        chunks.copy_to(payload_len, out);
        remaining -= payload_len;
        is_first = false;
    }
}

/// The 6-byte PCR: 33-bit base, 6 reserved bits, 9-bit extension (0).
fn encode_pcr(base: u64) -> [u8; 6] {
    let base = base & TIMESTAMP_MASK;
    [
        (base >> 25) as u8,
        (base >> 17) as u8,
        (base >> 9) as u8,
        (base >> 1) as u8,
        (((base & 1) as u8) << 7) | 0x7E,
        0x00,
    ]
}

/// Copies consecutive byte ranges out of several slices without first
/// concatenating them, so payloads are copied once, into `out`.
struct Chunker<'a, 'b> {
    parts: &'b [&'a [u8]],
    index: usize,
    offset: usize,
}

impl<'a, 'b> Chunker<'a, 'b> {
    fn new(parts: &'b [&'a [u8]]) -> Self {
        Self {
            parts,
            index: 0,
            offset: 0,
        }
    }

    fn copy_to(&mut self, mut n: usize, out: &mut BytesMut) {
        while n > 0 {
            let Some(part) = self.parts.get(self.index) else {
                return;
            };
            let rest = part.get(self.offset..).unwrap_or(&[]);
            let take = rest.len().min(n);
            out.put_slice(&rest[..take]);
            n -= take;
            self.offset += take;
            if self.offset >= part.len() {
                self.index += 1;
                self.offset = 0;
            }
        }
    }
}

/// PAT section: one program, number 1, PMT on [`PMT_PID`].
fn pat_section() -> Vec<u8> {
    let mut s = Vec::with_capacity(16);
    s.push(0x00); // table_id: program_association_section
    section_header(&mut s, TRANSPORT_STREAM_ID);
    s.extend_from_slice(&PROGRAM_NUMBER.to_be_bytes());
    s.extend_from_slice(&(0xE000 | PMT_PID).to_be_bytes());
    finish_section(s)
}

/// PMT section for the configured streams, video first.
fn pmt_section(config: &TsConfig, pcr_pid: u16) -> Vec<u8> {
    let mut s = Vec::with_capacity(32);
    s.push(0x02); // table_id: TS_program_map_section
    section_header(&mut s, PROGRAM_NUMBER);
    s.extend_from_slice(&(0xE000 | pcr_pid).to_be_bytes());
    s.extend_from_slice(&0xF000u16.to_be_bytes()); // program_info_length 0
    let streams = [
        (config.has_video, STREAM_TYPE_H264, VIDEO_PID),
        (config.has_audio, STREAM_TYPE_AAC_ADTS, AUDIO_PID),
    ];
    for (_, stream_type, pid) in streams.into_iter().filter(|s| s.0) {
        s.push(stream_type);
        s.extend_from_slice(&(0xE000 | pid).to_be_bytes());
        s.extend_from_slice(&0xF000u16.to_be_bytes()); // ES_info_length 0
    }
    finish_section(s)
}

/// Section syntax header after table_id; the length is patched by
/// `finish_section`. Version 0, current, single section.
fn section_header(s: &mut Vec<u8>, id: u16) {
    s.extend_from_slice(&[0xB0, 0x00]);
    s.extend_from_slice(&id.to_be_bytes());
    s.extend_from_slice(&[0xC1, 0x00, 0x00]);
}

/// Patches section_length and appends the CRC.
fn finish_section(mut s: Vec<u8>) -> Vec<u8> {
    // section_length counts from after itself through the CRC.
    let section_len = (s.len() - 3 + 4) as u16;
    s[1] = 0xB0 | ((section_len >> 8) as u8 & 0x0F);
    s[2] = section_len as u8;
    let crc = crc32_mpeg2(&s);
    s.extend_from_slice(&crc.to_be_bytes());
    s
}

/// Writes one PSI section (which always fits one packet here) with a
/// pointer_field of 0 and 0xFF fill, as PSI stuffing requires.
fn write_psi_packet(pid: u16, cc: &mut u8, section: &[u8], out: &mut BytesMut) {
    out.reserve(TS_PACKET_LEN);
    out.put_u8(0x47);
    out.put_u8(0x40 | ((pid >> 8) as u8 & 0x1F));
    out.put_u8(pid as u8);
    out.put_u8(0x10 | (*cc & 0x0F));
    *cc = (*cc + 1) & 0x0F;
    out.put_u8(0x00); // pointer_field
    let len = section.len().min(TS_PAYLOAD_LEN - 1);
    out.put_slice(&section[..len]);
    out.put_bytes(0xFF, TS_PAYLOAD_LEN - 1 - len);
}

/// CRC-32/MPEG-2: polynomial 0x04C11DB7, init all ones, no reflection, no
/// final xor. Sections are tiny, so a bitwise loop is fast enough.
fn crc32_mpeg2(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04C1_1DB7
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
#[path = "ts_tests.rs"]
mod tests;
