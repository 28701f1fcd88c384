//! Ladders: named lists of renditions loaded from `configs/ladders.toml`,
//! and the plan of which renditions a given source gets.
//!
//! Contract: a rendition is never above its source (no upscaling); every
//! planned size is even (x264 with yuv420p needs it); a ladder with no
//! renditions (`passthrough`) means "serve the source only".

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Deserialize;

use crate::errors::ConfigError;

/// The name of the ladder that means "no transcoding".
pub const PASSTHROUGH: &str = "passthrough";

/// The whole `ladders.toml` file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LaddersConfig {
    /// Ladders by name; a channel opts into one by this name.
    #[serde(default)]
    pub ladders: BTreeMap<String, LadderConfig>,
}

/// One ladder: the renditions produced from a source, highest first after
/// [`LaddersConfig::validate`] (the file may list them in any order).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LadderConfig {
    /// Empty means passthrough.
    #[serde(default)]
    pub renditions: Vec<Rendition>,
}

/// One rung of a ladder, as configured.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rendition {
    /// Suffix of the published stream: `{channel}_{name}`. ASCII letters and
    /// digits only, so it is safe in stream names, URLs and file names.
    pub name: String,
    /// Output height in pixels (even); width follows the source aspect ratio.
    pub height: u32,
    /// x264 target bitrate (`-b:v`).
    pub video_bitrate_kbps: u32,
    /// VBV max rate (`-maxrate`), at least `video_bitrate_kbps`.
    pub maxrate_kbps: u32,
    /// VBV buffer (`-bufsize`).
    pub bufsize_kbps: u32,
    /// H.264 profile.
    #[serde(default)]
    pub profile: H264Profile,
    /// x264 preset: the main CPU cost knob.
    #[serde(default)]
    pub preset: X264Preset,
    /// AAC bitrate (`-b:a`).
    #[serde(default = "default_audio_bitrate_kbps")]
    pub audio_bitrate_kbps: u32,
}

fn default_audio_bitrate_kbps() -> u32 {
    96
}

/// H.264 profiles that every HLS player decodes.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum H264Profile {
    /// Constrained devices; no B-frames, no CABAC.
    Baseline,
    /// The safe default for ABR.
    #[default]
    Main,
    /// Best compression per bit.
    High,
}

impl H264Profile {
    /// The value for `-profile:v`.
    pub fn as_ffmpeg(self) -> &'static str {
        match self {
            Self::Baseline => "baseline",
            Self::Main => "main",
            Self::High => "high",
        }
    }

    /// The `avc1.PPCCLL` profile and constraint bytes for a CODECS
    /// attribute (level is left to the caller, which knows the resolution).
    pub fn codecs_profile_hex(self) -> &'static str {
        match self {
            Self::Baseline => "42E0",
            Self::Main => "4D40",
            Self::High => "6400",
        }
    }
}

/// x264 presets, fastest first.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum X264Preset {
    /// Cheapest; poor quality per bit.
    Ultrafast,
    /// Very cheap.
    Superfast,
    /// The default: holds real time for a 720p30 ladder on two cores.
    #[default]
    Veryfast,
    /// Slightly better quality per bit, about 1.5x the CPU of veryfast.
    Faster,
    /// More CPU.
    Fast,
    /// x264's own default; too slow for live ladders on small machines.
    Medium,
}

impl X264Preset {
    /// The value for `-preset`.
    pub fn as_ffmpeg(self) -> &'static str {
        match self {
            Self::Ultrafast => "ultrafast",
            Self::Superfast => "superfast",
            Self::Veryfast => "veryfast",
            Self::Faster => "faster",
            Self::Fast => "fast",
            Self::Medium => "medium",
        }
    }
}

/// A rendition fitted to one source: the configured rung plus the output
/// size in pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedRendition {
    /// The configured rung.
    pub rendition: Rendition,
    /// Even width, from the source aspect ratio.
    pub width: u32,
    /// Even height (the configured one).
    pub height: u32,
}

impl PlannedRendition {
    /// Video plus audio bitrate in bits per second: a starting value for a
    /// master playlist's AVERAGE-BANDWIDTH before measured numbers exist.
    pub fn nominal_bandwidth_bps(&self) -> u64 {
        u64::from(self.rendition.video_bitrate_kbps + self.rendition.audio_bitrate_kbps) * 1000
    }

    /// The peak (maxrate plus audio) in bits per second: a starting value for
    /// BANDWIDTH.
    pub fn peak_bandwidth_bps(&self) -> u64 {
        u64::from(self.rendition.maxrate_kbps + self.rendition.audio_bitrate_kbps) * 1000
    }
}

impl LaddersConfig {
    /// Reads, parses and validates a ladders file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml_str(&text).map_err(|e| match e {
            ConfigError::Parse { source, .. } => ConfigError::Parse {
                path: path.display().to_string(),
                source,
            },
            other => other,
        })
    }

    /// Parses and validates ladders from TOML text; renditions come out
    /// sorted highest first.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let mut config: Self = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: "<string>".to_owned(),
            source,
        })?;
        config.validate()?;
        for ladder in config.ladders.values_mut() {
            ladder.renditions.sort_by_key(|r| std::cmp::Reverse(r.height));
        }
        Ok(config)
    }

    /// The ladder a channel asked for, by name.
    pub fn ladder(&self, name: &str) -> Option<&LadderConfig> {
        self.ladders.get(name)
    }

    /// Checks every value; the error names the offending key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (ladder_name, ladder) in &self.ladders {
            let key = format!("ladders.{ladder_name}");
            if !is_token(ladder_name) {
                return Err(invalid(&key, "ladder names are ASCII letters, digits, '-' or '_'"));
            }
            if ladder_name == PASSTHROUGH && !ladder.renditions.is_empty() {
                return Err(invalid(&key, "the passthrough ladder must have no renditions"));
            }
            ladder.validate(&key)?;
        }
        Ok(())
    }
}

impl LadderConfig {
    /// True when this ladder produces nothing (serve the source only).
    pub fn is_passthrough(&self) -> bool {
        self.renditions.is_empty()
    }

    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        for (i, r) in self.renditions.iter().enumerate() {
            let key = format!("{key}.renditions[{i}]");
            r.validate(&key)?;
            if self.renditions[..i].iter().any(|o| o.name == r.name) {
                return Err(invalid(&format!("{key}.name"), &format!("duplicate rendition name {:?}", r.name)));
            }
            if self.renditions[..i].iter().any(|o| o.height == r.height) {
                return Err(invalid(&format!("{key}.height"), &format!("two renditions with height {}", r.height)));
            }
        }
        Ok(())
    }
}

impl Rendition {
    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if self.name.is_empty() || !self.name.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(invalid(&format!("{key}.name"), "must be non-empty ASCII letters and digits"));
        }
        if !(96..=2160).contains(&self.height) || !self.height.is_multiple_of(2) {
            return Err(invalid(
                &format!("{key}.height"),
                &format!("must be even and within 96..=2160, got {}", self.height),
            ));
        }
        if !(64..=50_000).contains(&self.video_bitrate_kbps) {
            return Err(invalid(
                &format!("{key}.video_bitrate_kbps"),
                &format!("must be within 64..=50000, got {}", self.video_bitrate_kbps),
            ));
        }
        if self.maxrate_kbps < self.video_bitrate_kbps {
            return Err(invalid(
                &format!("{key}.maxrate_kbps"),
                &format!("must be at least video_bitrate_kbps ({}), got {}", self.video_bitrate_kbps, self.maxrate_kbps),
            ));
        }
        if self.bufsize_kbps < self.maxrate_kbps / 4 || self.bufsize_kbps > self.maxrate_kbps * 10 {
            return Err(invalid(
                &format!("{key}.bufsize_kbps"),
                &format!("must be between maxrate/4 and 10x maxrate, got {}", self.bufsize_kbps),
            ));
        }
        if !(16..=512).contains(&self.audio_bitrate_kbps) {
            return Err(invalid(
                &format!("{key}.audio_bitrate_kbps"),
                &format!("must be within 16..=512, got {}", self.audio_bitrate_kbps),
            ));
        }
        Ok(())
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn invalid(key: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid { key: key.to_owned(), reason: reason.to_owned() }
}

/// The renditions of `ladder` that fit a `source_width` x `source_height`
/// source, highest first: a rung taller than the source is skipped (no
/// upscaling); widths keep the source aspect ratio, rounded to even.
/// A source of unknown or zero size gets nothing.
pub fn plan_renditions(ladder: &LadderConfig, source_width: u32, source_height: u32) -> Vec<PlannedRendition> {
    if source_width == 0 || source_height == 0 {
        return Vec::new();
    }
    let mut planned: Vec<PlannedRendition> = ladder
        .renditions
        .iter()
        .filter(|r| r.height <= source_height)
        .map(|r| PlannedRendition { rendition: r.clone(), width: even_width(source_width, source_height, r.height), height: r.height })
        .collect();
    planned.sort_by_key(|p| std::cmp::Reverse(p.height));
    planned
}

/// `source_width * height / source_height` rounded to the nearest even
/// number, at least 2.
fn even_width(source_width: u32, source_height: u32, height: u32) -> u32 {
    let exact = u64::from(source_width) * u64::from(height);
    let sh = u64::from(source_height);
    // round(exact / sh / 2) * 2, in integers.
    let pairs = (exact + sh) / (2 * sh);
    u32::try_from(pairs * 2).unwrap_or(u32::MAX).max(2)
}

impl fmt::Display for PlannedRendition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}x{} {}k", self.rendition.name, self.width, self.height, self.rendition.video_bitrate_kbps)
    }
}

#[cfg(test)]
mod tests;
