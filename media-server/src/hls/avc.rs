//! H.264/AVC helpers for HLS/TS packaging.
//!
//! FLV/RTMP carries H.264 as AVCC: one AVCDecoderConfigurationRecord (the AVC
//! sequence header) with SPS/PPS, then frames made of length-prefixed NAL
//! units. MPEG-TS wants Annex B: start-code-delimited NAL units, an access
//! unit delimiter (AUD) first, and SPS/PPS in front of every IDR so that a
//! player can join at any segment. This module parses the record
//! ([`AvcDecoderConfig::parse`]), converts frames
//! ([`AvcDecoderConfig::to_annex_b`]) and reads the SPS for the HLS
//! `RESOLUTION` and `CODECS` attributes ([`SpsInfo::parse`]).
//!
//! Contract: pure functions over byte slices, no IO; malformed input is an
//! [`AvcError`], never a panic. `to_annex_b` writes nothing on error.

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

const START_CODE: [u8; 4] = [0, 0, 0, 1];
/// AUD NAL (type 9) with primary_pic_type 7 ("any slice type") + stop bit,
/// so we never need to inspect slice headers.
const AUD_NAL: [u8; 2] = [0x09, 0xF0];

const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;
const NAL_AUD: u8 = 9;

/// Why an AVC sequence header, frame or SPS could not be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AvcError {
    /// The AVCDecoderConfigurationRecord ended before its declared content.
    #[error("AVCDecoderConfigurationRecord truncated ({len} bytes)")]
    RecordTruncated {
        /// Length of the record that was given.
        len: usize,
    },
    /// Only configurationVersion 1 exists.
    #[error("unsupported AVCDecoderConfigurationRecord version {version}")]
    UnsupportedVersion {
        /// The version byte found.
        version: u8,
    },
    /// lengthSizeMinusOne + 1 must be 1, 2 or 4.
    #[error("invalid NALU length size {size}")]
    InvalidNaluLengthSize {
        /// The decoded size in bytes.
        size: u8,
    },
    /// A NALU length prefix points past the end of the frame.
    #[error("NALU at offset {offset} declares {declared} bytes, {available} available")]
    NaluTruncated {
        /// Offset of the length prefix within the frame.
        offset: usize,
        /// Length declared by the prefix (0 if the prefix itself is cut).
        declared: usize,
        /// Bytes left after the prefix.
        available: usize,
    },
    /// The record holds no SPS, so nothing can be said about the picture.
    #[error("no SPS in the AVC sequence header")]
    NoSps,
    /// The bytes given as SPS are another NAL type.
    #[error("NAL type {nal_type} is not an SPS")]
    NotAnSps {
        /// The NAL unit type found.
        nal_type: u8,
    },
    /// The SPS ended before the fields we need.
    #[error("SPS truncated")]
    SpsTruncated,
    /// An SPS field holds a value outside its legal range.
    #[error("SPS field {field} out of range")]
    SpsOutOfRange {
        /// Name of the field, as in ITU-T H.264 7.3.2.1.1.
        field: &'static str,
    },
}

/// A parsed AVCDecoderConfigurationRecord (ISO 14496-15, 5.2.4.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcDecoderConfig {
    /// AVCProfileIndication (same as the SPS profile_idc).
    pub profile_indication: u8,
    /// profile_compatibility (the SPS constraint flags byte).
    pub profile_compatibility: u8,
    /// AVCLevelIndication.
    pub level_indication: u8,
    /// Size in bytes of each NALU length prefix in frames: 1, 2 or 4.
    pub nalu_length_size: u8,
    /// Sequence parameter sets, NAL header byte included.
    pub sps: Vec<Bytes>,
    /// Picture parameter sets, NAL header byte included.
    pub pps: Vec<Bytes>,
}

impl AvcDecoderConfig {
    /// Parses the record, i.e. the FLV AVC sequence header payload after the
    /// five FLV video tag bytes (frame type/codec, AVCPacketType, CTS).
    pub fn parse(record: &[u8]) -> Result<Self, AvcError> {
        let mut r = ByteCursor {
            data: record,
            pos: 0,
        };
        let truncated = AvcError::RecordTruncated { len: record.len() };
        let version = r.u8().ok_or(truncated.clone())?;
        if version != 1 {
            return Err(AvcError::UnsupportedVersion { version });
        }
        let profile_indication = r.u8().ok_or(truncated.clone())?;
        let profile_compatibility = r.u8().ok_or(truncated.clone())?;
        let level_indication = r.u8().ok_or(truncated.clone())?;
        let nalu_length_size = (r.u8().ok_or(truncated.clone())? & 0x03) + 1;
        if nalu_length_size == 3 {
            return Err(AvcError::InvalidNaluLengthSize { size: 3 });
        }
        let num_sps = r.u8().ok_or(truncated.clone())? & 0x1F;
        let mut sps = Vec::with_capacity(usize::from(num_sps));
        for _ in 0..num_sps {
            sps.push(r.length_prefixed().ok_or(truncated.clone())?);
        }
        let num_pps = r.u8().ok_or(truncated.clone())?;
        let mut pps = Vec::with_capacity(usize::from(num_pps));
        for _ in 0..num_pps {
            pps.push(r.length_prefixed().ok_or(truncated.clone())?);
        }
        // High-profile trailers (chroma format, bit depths, SPS ext) are
        // ignored: the SPS itself carries the same information.
        Ok(Self {
            profile_indication,
            profile_compatibility,
            level_indication,
            nalu_length_size,
            sps,
            pps,
        })
    }

    /// Parses the first SPS of the record.
    pub fn sps_info(&self) -> Result<SpsInfo, AvcError> {
        SpsInfo::parse(self.sps.first().ok_or(AvcError::NoSps)?)
    }

    /// Converts one AVCC frame (length-prefixed NALUs) into an Annex B
    /// access unit appended to `out`: AUD first, then SPS/PPS from this
    /// record if the frame is a keyframe or holds an IDR slice and brings no
    /// SPS of its own, then the frame's NALUs (its own AUDs dropped so there
    /// is exactly one). Empty NALUs are skipped.
    pub fn to_annex_b(
        &self,
        avcc: &[u8],
        keyframe: bool,
        out: &mut BytesMut,
    ) -> Result<(), AvcError> {
        // First pass validates and classifies, so `out` is untouched on error.
        let mut has_idr = false;
        let mut has_sps = false;
        let mut payload_len = 0usize;
        for nalu in self.nalus(avcc) {
            let nalu = nalu?;
            match nalu.first().map(|b| b & 0x1F) {
                Some(NAL_IDR) => has_idr = true,
                Some(NAL_SPS) => has_sps = true,
                _ => {}
            }
            payload_len += START_CODE.len() + nalu.len();
        }
        let insert_params = (keyframe || has_idr) && !has_sps;
        let params_len: usize = if insert_params {
            self.sps
                .iter()
                .chain(&self.pps)
                .map(|p| START_CODE.len() + p.len())
                .sum()
        } else {
            0
        };
        out.reserve(START_CODE.len() + AUD_NAL.len() + params_len + payload_len);

        out.put_slice(&START_CODE);
        out.put_slice(&AUD_NAL);
        if insert_params {
            for p in self.sps.iter().chain(&self.pps) {
                out.put_slice(&START_CODE);
                out.put_slice(p);
            }
        }
        for nalu in self.nalus(avcc).flatten() {
            match nalu.first().map(|b| b & 0x1F) {
                None | Some(NAL_AUD) => continue,
                _ => {}
            }
            out.put_slice(&START_CODE);
            out.put_slice(nalu);
        }
        Ok(())
    }

    fn nalus<'a>(&self, avcc: &'a [u8]) -> NaluIter<'a> {
        NaluIter {
            data: avcc,
            pos: 0,
            length_size: usize::from(self.nalu_length_size),
        }
    }
}

/// Iterates over the NALUs of an AVCC frame; stops after the first error.
struct NaluIter<'a> {
    data: &'a [u8],
    pos: usize,
    length_size: usize,
}

impl<'a> Iterator for NaluIter<'a> {
    type Item = Result<&'a [u8], AvcError>;

    fn next(&mut self) -> Option<Self::Item> {
        let offset = self.pos;
        let rest = self.data.get(offset..).filter(|r| !r.is_empty())?;
        let (Some(prefix), Some(body)) =
            (rest.get(..self.length_size), rest.get(self.length_size..))
        else {
            self.pos = self.data.len();
            return Some(Err(AvcError::NaluTruncated {
                offset,
                declared: 0,
                available: rest.len(),
            }));
        };
        let declared = prefix
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        match body.get(..declared) {
            Some(nalu) => {
                self.pos = offset + self.length_size + declared;
                Some(Ok(nalu))
            }
            None => {
                self.pos = self.data.len();
                Some(Err(AvcError::NaluTruncated {
                    offset,
                    declared,
                    available: body.len(),
                }))
            }
        }
    }
}

/// Big-endian byte reader for the configuration record.
struct ByteCursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl ByteCursor<'_> {
    fn u8(&mut self) -> Option<u8> {
        let b = *self.data.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn length_prefixed(&mut self) -> Option<Bytes> {
        let len = usize::from(u16::from_be_bytes([self.u8()?, self.u8()?]));
        let end = self.pos.checked_add(len)?;
        let v = Bytes::copy_from_slice(self.data.get(self.pos..end)?);
        self.pos = end;
        Some(v)
    }
}

/// What HLS needs from an SPS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpsInfo {
    /// profile_idc (66 baseline, 77 main, 100 high, ...).
    pub profile_idc: u8,
    /// The constraint_set flags byte.
    pub constraint_flags: u8,
    /// level_idc (31 = level 3.1).
    pub level_idc: u8,
    /// chroma_format_idc (1 = 4:2:0).
    pub chroma_format_idc: u8,
    /// Displayed width in pixels, after frame cropping.
    pub width: u32,
    /// Displayed height in pixels, after frame cropping.
    pub height: u32,
}

impl SpsInfo {
    /// Parses an SPS NAL unit (header byte included, no start code).
    pub fn parse(nal: &[u8]) -> Result<Self, AvcError> {
        let (&header, payload) = nal.split_first().ok_or(AvcError::SpsTruncated)?;
        let nal_type = header & 0x1F;
        if nal_type != NAL_SPS {
            return Err(AvcError::NotAnSps { nal_type });
        }
        let rbsp = unescape_rbsp(payload);
        let mut r = BitReader::new(&rbsp);

        let profile_idc = r.bits(8)? as u8;
        let constraint_flags = r.bits(8)? as u8;
        let level_idc = r.bits(8)? as u8;
        r.ue_max(31, "seq_parameter_set_id")?;

        let mut chroma_format_idc = 1; // inferred for profiles without the field
        let mut separate_colour_plane = false;
        if matches!(
            profile_idc,
            100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
        ) {
            chroma_format_idc = r.ue_max(3, "chroma_format_idc")? as u8;
            if chroma_format_idc == 3 {
                separate_colour_plane = r.flag()?;
            }
            r.ue_max(6, "bit_depth_luma_minus8")?;
            r.ue_max(6, "bit_depth_chroma_minus8")?;
            r.flag()?; // qpprime_y_zero_transform_bypass_flag
            if r.flag()? {
                // seq_scaling_matrix_present_flag
                let lists = if chroma_format_idc == 3 { 12 } else { 8 };
                for i in 0..lists {
                    if r.flag()? {
                        r.skip_scaling_list(if i < 6 { 16 } else { 64 })?;
                    }
                }
            }
        }
        r.ue_max(12, "log2_max_frame_num_minus4")?;
        match r.ue_max(2, "pic_order_cnt_type")? {
            0 => {
                r.ue_max(12, "log2_max_pic_order_cnt_lsb_minus4")?;
            }
            1 => {
                r.flag()?; // delta_pic_order_always_zero_flag
                r.se()?; // offset_for_non_ref_pic
                r.se()?; // offset_for_top_to_bottom_field
                let cycle = r.ue_max(255, "num_ref_frames_in_pic_order_cnt_cycle")?;
                for _ in 0..cycle {
                    r.se()?;
                }
            }
            _ => {}
        }
        r.ue()?; // max_num_ref_frames
        r.flag()?; // gaps_in_frame_num_value_allowed_flag
        let width_mbs = r.ue()? + 1;
        let height_map_units = r.ue()? + 1;
        let frame_mbs_only = r.flag()?;
        if !frame_mbs_only {
            r.flag()?; // mb_adaptive_frame_field_flag
        }
        r.flag()?; // direct_8x8_inference_flag
        let (mut crop_left, mut crop_right, mut crop_top, mut crop_bottom) = (0, 0, 0, 0);
        if r.flag()? {
            crop_left = r.ue()?;
            crop_right = r.ue()?;
            crop_top = r.ue()?;
            crop_bottom = r.ue()?;
        }

        // H.264 7.4.2.1.1: crop units depend on chroma subsampling and on
        // whether height counts frames or field pairs.
        let field_factor = if frame_mbs_only { 1 } else { 2 };
        let chroma_array_type = if separate_colour_plane {
            0
        } else {
            chroma_format_idc
        };
        let (crop_unit_x, crop_unit_y) = match chroma_array_type {
            1 => (2, 2 * field_factor),
            2 => (2, field_factor),
            _ => (1, field_factor), // 0 (monochrome / separate planes) and 3 (4:4:4)
        };
        let width = dimension(
            width_mbs * 16,
            crop_unit_x * (crop_left + crop_right),
            "pic_width_in_mbs_minus1",
        )?;
        let height = dimension(
            height_map_units * 16 * field_factor,
            crop_unit_y * (crop_top + crop_bottom),
            "pic_height_in_map_units_minus1",
        )?;
        Ok(Self {
            profile_idc,
            constraint_flags,
            level_idc,
            chroma_format_idc,
            width,
            height,
        })
    }

    /// The HLS `CODECS` entry, e.g. `avc1.64001f` (profile, constraints, level in hex).
    pub fn codecs(&self) -> String {
        format!(
            "avc1.{:02x}{:02x}{:02x}",
            self.profile_idc, self.constraint_flags, self.level_idc
        )
    }
}

/// Cropped size in pixels; u64 inputs never overflow because `ue` is bounded
/// to 32 bits, and anything beyond u32 or cropped to nothing is refused.
fn dimension(full: u64, crop: u64, field: &'static str) -> Result<u32, AvcError> {
    full.checked_sub(crop)
        .filter(|&v| v > 0)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or(AvcError::SpsOutOfRange { field })
}

/// Removes emulation prevention bytes (00 00 03 -> 00 00) so the bit reader
/// sees the raw syntax.
fn unescape_rbsp(ebsp: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ebsp.len());
    let mut zeros = 0;
    for &b in ebsp {
        if zeros >= 2 && b == 0x03 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// MSB-first bit reader with exp-Golomb codes (H.264 9.1).
struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    fn bit(&mut self) -> Result<u64, AvcError> {
        let byte = *self.data.get(self.pos / 8).ok_or(AvcError::SpsTruncated)?;
        let bit = (byte >> (7 - (self.pos % 8))) & 1;
        self.pos += 1;
        Ok(u64::from(bit))
    }

    fn bits(&mut self, n: u32) -> Result<u64, AvcError> {
        let mut v = 0;
        for _ in 0..n {
            v = (v << 1) | self.bit()?;
        }
        Ok(v)
    }

    fn flag(&mut self) -> Result<bool, AvcError> {
        Ok(self.bit()? == 1)
    }

    /// ue(v); codes longer than 32 bits are not legal H.264.
    fn ue(&mut self) -> Result<u64, AvcError> {
        let mut leading_zeros = 0;
        while self.bit()? == 0 {
            leading_zeros += 1;
            if leading_zeros > 31 {
                return Err(AvcError::SpsOutOfRange {
                    field: "exp-Golomb code",
                });
            }
        }
        Ok((1u64 << leading_zeros) - 1 + self.bits(leading_zeros)?)
    }

    fn ue_max(&mut self, max: u64, field: &'static str) -> Result<u64, AvcError> {
        let v = self.ue()?;
        if v > max {
            return Err(AvcError::SpsOutOfRange { field });
        }
        Ok(v)
    }

    /// se(v), mapped from ue(v) as 1, -1, 2, -2, ...
    fn se(&mut self) -> Result<i64, AvcError> {
        let k = self.ue()? as i64; // < 2^32, fits
        Ok(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }

    /// scaling_list() of H.264 7.3.2.1.1.1; values are discarded, only
    /// their bits matter for reaching the picture size.
    fn skip_scaling_list(&mut self, size: usize) -> Result<(), AvcError> {
        let mut last = 8i64;
        let mut next = 8i64;
        for _ in 0..size {
            if next != 0 {
                let delta = self.se()?;
                next = (last + delta).rem_euclid(256);
            }
            if next != 0 {
                last = next;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_golomb_codes_decode() {
        // 1 | 010 | 011 | 00100 | 00101 -> ue 0,1,2,3,4
        let data = [0b1010_0110, 0b0100_0010, 0b1000_0000];
        let mut r = BitReader::new(&data);
        let v: Vec<u64> = (0..5).map(|_| r.ue().unwrap()).collect();
        assert_eq!(v, [0, 1, 2, 3, 4]);
        // se: 010 -> 1, 011 -> -1, 00100 -> 2
        let data = [0b0100_1100, 0b1000_0000];
        let mut r = BitReader::new(&data);
        assert_eq!(
            (r.se().unwrap(), r.se().unwrap(), r.se().unwrap()),
            (1, -1, 2)
        );
    }

    #[test]
    fn exp_golomb_rejects_overlong_and_truncated_codes() {
        let mut r = BitReader::new(&[0, 0, 0, 0, 0x80]);
        assert!(matches!(r.ue(), Err(AvcError::SpsOutOfRange { .. })));
        let mut r = BitReader::new(&[0x00, 0x01]);
        assert_eq!(r.ue(), Err(AvcError::SpsTruncated));
        // 31 leading zeros is the longest code accepted.
        let mut r = BitReader::new(&[0, 0, 0, 1, 0xFF, 0xFF, 0xFF, 0xFE]);
        assert_eq!(r.ue(), Ok((1u64 << 31) - 1 + 0x7FFF_FFFF));
    }

    #[test]
    fn emulation_prevention_bytes_are_removed() {
        assert_eq!(
            unescape_rbsp(&[0x00, 0x00, 0x03, 0x01, 0x00, 0x00, 0x03, 0x00, 0x03]),
            [0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x03]
        );
    }

    #[test]
    fn scaling_lists_are_skipped_bit_exactly() {
        // One 4x4 list whose first delta is -8 (next = 0): a single se code
        // "000010001" (ue 16 -> -8) ends the list; followed by ue 0 ("1").
        let data = [0b0000_1000, 0b1100_0000];
        let mut r = BitReader::new(&data);
        r.skip_scaling_list(16).unwrap();
        assert_eq!(r.pos, 9);
        assert_eq!(r.ue().unwrap(), 0);
    }
}
