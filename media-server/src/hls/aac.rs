//! AAC helpers for HLS/TS packaging.
//!
//! An FLV/RTMP publisher sends one AudioSpecificConfig (the AAC sequence
//! header) and then raw AAC frames. MPEG-TS carries AAC as ADTS, so every raw
//! frame needs a 7-byte ADTS header derived from that config. This module
//! parses the config ([`AacConfig::parse`]), builds the header
//! ([`AacConfig::adts_header`]) and names the codec for the HLS `CODECS`
//! attribute ([`AacConfig::codecs`]).
//!
//! Contract: pure functions over byte slices, no IO; malformed input is an
//! [`AacError`], never a panic.

use thiserror::Error;

/// Largest value of the 13-bit ADTS `aac_frame_length` field (header included).
pub const ADTS_MAX_FRAME_LEN: usize = 0x1FFF;
/// Size of an ADTS header without CRC (`protection_absent = 1`).
pub const ADTS_HEADER_LEN: usize = 7;

/// Sampling frequencies indexed by `samplingFrequencyIndex` (ISO 14496-3, 1.6.3.4).
const SAMPLE_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

/// Why an AudioSpecificConfig or an ADTS header could not be produced.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AacError {
    /// The AudioSpecificConfig ended before all required fields were read.
    #[error("AudioSpecificConfig truncated ({len} bytes)")]
    Truncated {
        /// Length of the config that was given.
        len: usize,
    },
    /// ADTS can only express AAC Main, LC, SSR and LTP (object types 1..=4).
    #[error("audio object type {object_type} cannot be carried in ADTS")]
    UnsupportedObjectType {
        /// The (base) audio object type found in the config.
        object_type: u8,
    },
    /// The sampling frequency has no index; ADTS has no escape for it.
    #[error(
        "sampling frequency index {index} / explicit frequency {frequency} not usable in ADTS"
    )]
    UnsupportedSampleRate {
        /// The 4-bit index from the config (15 = explicit frequency).
        index: u8,
        /// The explicit frequency when `index` is 15, else 0.
        frequency: u32,
    },
    /// Channel configuration 0 (layout in a PCE) or above 7 does not fit ADTS' 3 bits.
    #[error("channel configuration {channels} not supported in ADTS")]
    UnsupportedChannelConfig {
        /// The 4-bit channel configuration from the config.
        channels: u8,
    },
    /// The raw frame plus header exceeds the 13-bit ADTS frame length.
    #[error("raw AAC frame of {len} bytes too large for ADTS")]
    FrameTooLarge {
        /// Length of the raw frame.
        len: usize,
    },
}

/// The fields of an AudioSpecificConfig that ADTS and HLS need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AacConfig {
    /// Base audio object type written to ADTS (2 = AAC LC), always 1..=4.
    pub object_type: u8,
    /// Explicitly signalled SBR (5) or PS (29) extension, if any. ADTS carries
    /// only the core; decoders find SBR/PS implicitly. Kept for `CODECS`.
    pub extension_object_type: Option<u8>,
    /// Index into the standard sampling frequency table (core rate).
    pub sample_rate_index: u8,
    /// Channel configuration (1 = mono, 2 = stereo, ... 7 = 7.1).
    pub channel_config: u8,
}

impl AacConfig {
    /// Parses an AudioSpecificConfig (the payload of an FLV AAC sequence
    /// header after the two FLV audio tag bytes).
    pub fn parse(asc: &[u8]) -> Result<Self, AacError> {
        let truncated = AacError::Truncated { len: asc.len() };
        let mut bits = BitCursor { data: asc, pos: 0 };
        let mut object_type = read_object_type(&mut bits).ok_or(truncated.clone())?;
        let sample_rate_index = read_sample_rate_index(&mut bits)?;
        let channel_config = bits.read(4).ok_or(truncated.clone())? as u8;

        // Explicit hierarchical signalling of HE-AAC (v2): the extension
        // rate comes first, then the core object type we actually put in ADTS.
        let mut extension_object_type = None;
        if object_type == 5 || object_type == 29 {
            extension_object_type = Some(object_type);
            read_sample_rate_index(&mut bits)?;
            object_type = read_object_type(&mut bits).ok_or(truncated)?;
        }

        if !(1..=4).contains(&object_type) {
            return Err(AacError::UnsupportedObjectType { object_type });
        }
        if !(1..=7).contains(&channel_config) {
            return Err(AacError::UnsupportedChannelConfig {
                channels: channel_config,
            });
        }
        Ok(Self {
            object_type,
            extension_object_type,
            sample_rate_index,
            channel_config,
        })
    }

    /// Sampling frequency in Hz of the core stream.
    pub fn sample_rate(&self) -> u32 {
        // The index was validated by `parse`; a hand-built config with a bad
        // index reports 0 rather than panicking.
        SAMPLE_RATES
            .get(usize::from(self.sample_rate_index))
            .copied()
            .unwrap_or(0)
    }

    /// The HLS `CODECS` entry, e.g. `mp4a.40.2` for AAC LC, `mp4a.40.5` for HE-AAC.
    pub fn codecs(&self) -> String {
        format!(
            "mp4a.40.{}",
            self.extension_object_type.unwrap_or(self.object_type)
        )
    }

    /// Builds the 7-byte ADTS header (MPEG-4, no CRC) for a raw frame of
    /// `raw_len` bytes.
    pub fn adts_header(&self, raw_len: usize) -> Result<[u8; ADTS_HEADER_LEN], AacError> {
        let frame_len = raw_len
            .checked_add(ADTS_HEADER_LEN)
            .filter(|&n| n <= ADTS_MAX_FRAME_LEN)
            .ok_or(AacError::FrameTooLarge { len: raw_len })?;
        // Masks keep a hand-built, unvalidated config from bleeding into
        // neighbouring fields.
        let profile = self.object_type.wrapping_sub(1) & 0x03;
        let sr = self.sample_rate_index & 0x0F;
        let ch = self.channel_config & 0x07;
        let len = frame_len as u16; // <= 0x1FFF, checked above
        Ok([
            0xFF,
            // syncword low nibble, ID=0 (MPEG-4), layer=00, protection_absent=1
            0xF1,
            (profile << 6) | (sr << 2) | (ch >> 2),
            ((ch & 0x03) << 6) | ((len >> 11) as u8 & 0x03),
            (len >> 3) as u8,
            (((len & 0x07) as u8) << 5) | 0x1F,
            // buffer fullness 0x7FF (VBR) low bits, one raw data block
            0xFC,
        ])
    }
}

fn read_object_type(bits: &mut BitCursor<'_>) -> Option<u8> {
    let ot = bits.read(5)? as u8;
    if ot == 31 {
        Some(32 + bits.read(6)? as u8)
    } else {
        Some(ot)
    }
}

fn read_sample_rate_index(bits: &mut BitCursor<'_>) -> Result<u8, AacError> {
    let truncated = AacError::Truncated {
        len: bits.data.len(),
    };
    let index = bits.read(4).ok_or(truncated.clone())? as u8;
    if index != 15 {
        if usize::from(index) < SAMPLE_RATES.len() {
            return Ok(index);
        }
        return Err(AacError::UnsupportedSampleRate {
            index,
            frequency: 0,
        });
    }
    // An explicit frequency is only usable if it is one of the indexed ones.
    let frequency = bits.read(24).ok_or(truncated)?;
    SAMPLE_RATES
        .iter()
        .position(|&r| r == frequency)
        .map(|i| i as u8)
        .ok_or(AacError::UnsupportedSampleRate { index, frequency })
}

/// Minimal MSB-first bit reader; `None` when the data runs out.
struct BitCursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl BitCursor<'_> {
    fn read(&mut self, n: u32) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            let byte = *self.data.get(self.pos / 8)?;
            let bit = (byte >> (7 - (self.pos % 8))) & 1;
            v = (v << 1) | u32::from(bit);
            self.pos += 1;
        }
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lc_44100_stereo_config_is_parsed() {
        // 0x12 0x10: object type 2, index 4 (44100), 2 channels.
        let c = AacConfig::parse(&[0x12, 0x10]).unwrap();
        assert_eq!(c.object_type, 2);
        assert_eq!(c.sample_rate_index, 4);
        assert_eq!(c.sample_rate(), 44100);
        assert_eq!(c.channel_config, 2);
        assert_eq!(c.extension_object_type, None);
        assert_eq!(c.codecs(), "mp4a.40.2");
    }

    #[test]
    fn lc_48000_mono_config_is_parsed() {
        // 00010 0011 0001 000 -> 0x11 0x88
        let c = AacConfig::parse(&[0x11, 0x88]).unwrap();
        assert_eq!(
            (c.object_type, c.sample_rate(), c.channel_config),
            (2, 48000, 1)
        );
    }

    #[test]
    fn explicit_he_aac_uses_core_type_in_adts_and_sbr_in_codecs() {
        // object type 5, index 6 (24000, core), channels 2, ext index 3 (48000), object type 2
        // 00101 0110 0010 0011 00010 -> 0010 1011 0001 0001 1000 10xx
        let c = AacConfig::parse(&[0x2B, 0x11, 0x88]).unwrap();
        assert_eq!(c.object_type, 2);
        assert_eq!(c.extension_object_type, Some(5));
        assert_eq!(c.sample_rate(), 24000);
        assert_eq!(c.codecs(), "mp4a.40.5");
    }

    #[test]
    fn explicit_frequency_maps_to_an_index_or_is_refused() {
        // object 2, index 15, frequency 44100 (0x00AC44), channels 2
        // 00010 1111 000000001010110001000100 0010
        let bytes = [0x17, 0x80, 0x56, 0x22, 0x10];
        let c = AacConfig::parse(&bytes).unwrap();
        assert_eq!(c.sample_rate_index, 4);
        // 44101 Hz has no index
        let bytes = [0x17, 0x80, 0x56, 0x22, 0x90];
        assert!(matches!(
            AacConfig::parse(&bytes),
            Err(AacError::UnsupportedSampleRate {
                index: 15,
                frequency: 44101
            })
        ));
    }

    #[test]
    fn malformed_configs_are_errors() {
        assert_eq!(AacConfig::parse(&[]), Err(AacError::Truncated { len: 0 }));
        assert_eq!(
            AacConfig::parse(&[0x12]),
            Err(AacError::Truncated { len: 1 })
        );
        // object type 42 (USAC) via escape: 11111 001010 ...
        assert!(matches!(
            AacConfig::parse(&[0xF9, 0x44, 0x40]),
            Err(AacError::UnsupportedObjectType { object_type: 42 })
        ));
        // channel config 0
        assert_eq!(
            AacConfig::parse(&[0x12, 0x00]),
            Err(AacError::UnsupportedChannelConfig { channels: 0 })
        );
        // sampling index 13 is reserved
        assert!(matches!(
            AacConfig::parse(&[0x16, 0x90]),
            Err(AacError::UnsupportedSampleRate { index: 13, .. })
        ));
    }

    #[test]
    fn adts_header_bytes_for_lc_44100_stereo() {
        let c = AacConfig::parse(&[0x12, 0x10]).unwrap();
        // frame length 7 + 371 = 378 = 0x17A
        assert_eq!(
            c.adts_header(371).unwrap(),
            [0xFF, 0xF1, 0x50, 0x80, 0x2F, 0x5F, 0xFC]
        );
    }

    #[test]
    fn adts_header_bytes_for_lc_48000_mono_and_max_length() {
        let c = AacConfig::parse(&[0x11, 0x88]).unwrap();
        // profile 1, index 3, ch 1; length 0x1FFF
        assert_eq!(
            c.adts_header(ADTS_MAX_FRAME_LEN - 7).unwrap(),
            [0xFF, 0xF1, 0x4C, 0x43, 0xFF, 0xFF, 0xFC]
        );
        assert_eq!(
            c.adts_header(ADTS_MAX_FRAME_LEN - 6),
            Err(AacError::FrameTooLarge {
                len: ADTS_MAX_FRAME_LEN - 6
            })
        );
        assert!(c.adts_header(usize::MAX).is_err());
    }

    #[test]
    fn adts_header_carries_channel_config_high_bit() {
        let c = AacConfig {
            object_type: 2,
            extension_object_type: None,
            sample_rate_index: 3,
            channel_config: 6,
        };
        let h = c.adts_header(0).unwrap();
        assert_eq!(h[2] & 0x01, 1);
        assert_eq!(h[3] >> 6, 0b10);
    }
}
