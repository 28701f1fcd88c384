//! The ffmpeg command line for one source and its whole ladder.
//!
//! One process decodes the source once; a `split` filter feeds one `scale`
//! and one libx264 encoder per rendition. Every encoder sees the same frames
//! with the same timestamps and forces keyframes by the same rule, and
//! scene-cut keyframes are off, so IDR frames land on identical pts in every
//! rendition. With [`KeyframePolicy::Source`] and `copy_timestamps` (the
//! origin's default) they also land on the source's own keyframes with the
//! source's timestamps, so the origin can cut every rendition's HLS segments
//! where it cut the source's and give them the same media sequence numbers:
//! a player switches renditions at any segment boundary. Progress goes to stdout as `-progress` key=value blocks
//! (parsed by [`crate::progress`]); stderr carries warnings and errors only.

use crate::ladder::PlannedRendition;

/// One output of a job: a rendition and where ffmpeg pushes it.
#[derive(Debug, Clone, PartialEq)]
pub struct RenditionOutput {
    /// What to encode.
    pub rendition: PlannedRendition,
    /// Where to write it: an `rtmp://` URL in production, a file path in tests.
    pub url: String,
}

/// Where keyframes go; the same rule applies to every rendition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyframePolicy {
    /// A keyframe at every multiple of this many milliseconds of source time
    /// (`-force_key_frames expr:gte(t,n_forced*S)`). Works whatever the frame
    /// rate and survives dropped frames; set it to the HLS segment duration
    /// (or a divisor of it) and to the source's keyframe interval when known.
    EveryMs(u32),
    /// A fixed GOP in frames (`-g N -keyint_min N`): exact when the frame
    /// rate is constant and known.
    FixedFrames(u32),
    /// A keyframe exactly where the source has one (`-force_key_frames
    /// source`): the renditions inherit the source's GOP, whatever it is.
    Source,
}

impl Default for KeyframePolicy {
    fn default() -> Self {
        Self::EveryMs(2000)
    }
}

/// Options shared by every rendition of a job.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodeOptions {
    /// Keyframe placement.
    pub keyframes: KeyframePolicy,
    /// B-frames per GOP. 0 (the default) keeps pts == dts, saves a few frames
    /// of latency and keeps FLV composition offsets at zero.
    pub b_frames: u32,
    /// Read the input at its native rate (`-re`). Off for live RTMP input
    /// (it already arrives in real time); on to simulate live from a file.
    pub realtime_input: bool,
    /// Output container: `flv` for RTMP and for test files.
    pub output_format: String,
    /// ffmpeg's log level for stderr (`warning` keeps the ring useful).
    pub log_level: String,
    /// Keep the input's timestamps (`-copyts`) instead of starting the
    /// outputs at zero, so rendition frames carry the source's timestamps.
    pub copy_timestamps: bool,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        Self {
            keyframes: KeyframePolicy::default(),
            b_frames: 0,
            realtime_input: false,
            output_format: "flv".to_owned(),
            log_level: "warning".to_owned(),
            copy_timestamps: false,
        }
    }
}

fn push(args: &mut Vec<String>, items: &[&str]) {
    args.extend(items.iter().map(|s| (*s).to_owned()));
}

/// The arguments (without the program name) of one ffmpeg process that
/// reads `input_url` and produces every output. Audio is optional: a source
/// without audio yields video-only renditions (`-map 0:a?`).
pub fn ffmpeg_args(input_url: &str, outputs: &[RenditionOutput], options: &EncodeOptions) -> Vec<String> {
    let mut args: Vec<String> = Vec::with_capacity(16 + outputs.len() * 40);
    push(&mut args, &["-hide_banner", "-nostdin", "-loglevel", &options.log_level]);
    push(&mut args, &["-nostats", "-progress", "pipe:1"]);
    if options.realtime_input {
        push(&mut args, &["-re"]);
    }
    if options.copy_timestamps {
        push(&mut args, &["-copyts"]);
    }
    push(&mut args, &["-i", input_url]);
    if outputs.is_empty() {
        return args;
    }

    let mut filter = format!("[0:v:0]split={}", outputs.len());
    for i in 0..outputs.len() {
        filter.push_str(&format!("[s{i}]"));
    }
    for (i, out) in outputs.iter().enumerate() {
        filter.push_str(&format!(";[s{i}]scale={}:{}[v{i}]", out.rendition.width, out.rendition.height));
    }
    push(&mut args, &["-filter_complex", &filter]);

    let keyframe_args: Vec<String> = match options.keyframes {
        KeyframePolicy::EveryMs(ms) => {
            let seconds = format!("{:.3}", f64::from(ms.max(1)) / 1000.0);
            vec!["-force_key_frames".into(), format!("expr:gte(t,n_forced*{seconds})"), "-sc_threshold".into(), "0".into()]
        }
        KeyframePolicy::FixedFrames(n) => {
            let n = n.max(1).to_string();
            vec!["-g".into(), n.clone(), "-keyint_min".into(), n, "-sc_threshold".into(), "0".into()]
        }
        KeyframePolicy::Source => {
            vec!["-force_key_frames".into(), "source".into(), "-sc_threshold".into(), "0".into()]
        }
    };

    for (i, out) in outputs.iter().enumerate() {
        let r = &out.rendition.rendition;
        push(&mut args, &["-map", &format!("[v{i}]"), "-map", "0:a:0?"]);
        push(&mut args, &["-c:v", "libx264", "-preset", r.preset.as_ffmpeg(), "-profile:v", r.profile.as_ffmpeg()]);
        push(&mut args, &["-pix_fmt", "yuv420p"]);
        push(&mut args, &["-b:v", &format!("{}k", r.video_bitrate_kbps)]);
        push(&mut args, &["-maxrate", &format!("{}k", r.maxrate_kbps), "-bufsize", &format!("{}k", r.bufsize_kbps)]);
        push(&mut args, &["-bf", &options.b_frames.to_string()]);
        if options.copy_timestamps {
            // Millisecond encoder clock and one output frame per input frame:
            // otherwise pts are rounded to the frame-rate grid and drift off
            // the source's by up to half a frame.
            push(&mut args, &["-enc_time_base:v", "1:1000", "-fps_mode", "passthrough"]);
        }
        args.extend(keyframe_args.iter().cloned());
        push(&mut args, &["-c:a", "aac", "-b:a", &format!("{}k", r.audio_bitrate_kbps)]);
        push(&mut args, &["-max_muxing_queue_size", "1024"]);
        if options.output_format == "flv" {
            // Live outputs: no seek back to patch duration and size.
            push(&mut args, &["-flvflags", "no_duration_filesize"]);
        }
        push(&mut args, &["-f", &options.output_format, &out.url]);
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ladder::{plan_renditions, LaddersConfig};

    fn outputs() -> Vec<RenditionOutput> {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/ladders.toml")).unwrap();
        let ladders = LaddersConfig::from_toml_str(&text).unwrap();
        plan_renditions(ladders.ladder("default").unwrap(), 1280, 720)
            .into_iter()
            .map(|r| RenditionOutput { url: format!("rtmp://127.0.0.1:1935/internal/demo_{}", r.rendition.name), rendition: r })
            .collect()
    }

    fn value_after<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
        args.windows(2).filter(|w| w[0] == flag).map(|w| w[1].as_str()).collect()
    }

    #[test]
    fn one_process_splits_the_source_into_every_rendition() {
        let args = ffmpeg_args("rtmp://127.0.0.1:1935/live/demo", &outputs(), &EncodeOptions::default());
        assert_eq!(value_after(&args, "-i"), ["rtmp://127.0.0.1:1935/live/demo"]);
        let filter = value_after(&args, "-filter_complex");
        assert_eq!(
            filter,
            ["[0:v:0]split=3[s0][s1][s2];[s0]scale=1280:720[v0];[s1]scale=854:480[v1];[s2]scale=640:360[v2]"]
        );
        assert_eq!(value_after(&args, "-c:v"), ["libx264"; 3]);
        assert_eq!(value_after(&args, "-c:a"), ["aac"; 3]);
        assert_eq!(value_after(&args, "-b:v"), ["2500k", "1200k", "700k"]);
        assert_eq!(value_after(&args, "-maxrate"), ["2675k", "1285k", "750k"]);
        assert_eq!(value_after(&args, "-bufsize"), ["5000k", "2400k", "1400k"]);
        assert_eq!(value_after(&args, "-b:a"), ["128k", "96k", "64k"]);
        assert_eq!(value_after(&args, "-f"), ["flv"; 3]);
        assert_eq!(args.last().map(String::as_str), Some("rtmp://127.0.0.1:1935/internal/demo_360p"));
        assert!(!args.contains(&"-re".to_owned()), "live input is already real time");
    }

    #[test]
    fn every_rendition_forces_the_same_keyframes_without_scene_cuts() {
        let args = ffmpeg_args("in.flv", &outputs(), &EncodeOptions::default());
        assert_eq!(value_after(&args, "-force_key_frames"), ["expr:gte(t,n_forced*2.000)"; 3]);
        assert_eq!(value_after(&args, "-sc_threshold"), ["0"; 3]);
        assert_eq!(value_after(&args, "-bf"), ["0"; 3]);

        let fixed = EncodeOptions { keyframes: KeyframePolicy::FixedFrames(60), ..EncodeOptions::default() };
        let args = ffmpeg_args("in.flv", &outputs(), &fixed);
        assert_eq!(value_after(&args, "-g"), ["60"; 3]);
        assert_eq!(value_after(&args, "-keyint_min"), ["60"; 3]);
        assert!(value_after(&args, "-force_key_frames").is_empty());

        let source = EncodeOptions { keyframes: KeyframePolicy::Source, copy_timestamps: true, ..EncodeOptions::default() };
        let args = ffmpeg_args("in.flv", &outputs(), &source);
        assert_eq!(value_after(&args, "-force_key_frames"), ["source"; 3]);
        let copyts = args.iter().position(|a| a == "-copyts").expect("-copyts");
        assert!(copyts < args.iter().position(|a| a == "-i").unwrap(), "-copyts goes before the input");
        assert_eq!(value_after(&args, "-enc_time_base:v"), ["1:1000"; 3]);
        assert_eq!(value_after(&args, "-fps_mode"), ["passthrough"; 3]);
    }

    #[test]
    fn progress_goes_to_stdout_and_audio_is_optional() {
        let opts = EncodeOptions { realtime_input: true, ..EncodeOptions::default() };
        let args = ffmpeg_args("in.flv", &outputs(), &opts);
        assert_eq!(value_after(&args, "-progress"), ["pipe:1"]);
        assert!(args.contains(&"-nostdin".to_owned()));
        let re = args.iter().position(|a| a == "-re").unwrap();
        let input = args.iter().position(|a| a == "-i").unwrap();
        assert!(re < input, "-re is an input option");
        assert_eq!(value_after(&args, "-map").iter().filter(|m| **m == "0:a:0?").count(), 3);
    }
}
