//! The ffmpeg worker pool that turns each live stream into an H.264/AAC
//! ladder (DESIGN.md §4).
//!
//! - [`ladder`]: ladders from `configs/ladders.toml` and
//!   [`plan_renditions`], which fits a ladder to a source (no upscaling,
//!   even sizes).
//! - [`args`]: [`ffmpeg_args`], one ffmpeg process per source producing the
//!   whole ladder with keyframes on the same timestamps in every rendition.
//! - [`TranscoderPool`]: fixed slots, a FIFO queue, supervised workers
//!   (restart with backoff, SIGTERM then SIGKILL, progress, slow detection),
//!   prometheus metrics, typed [`PoolEvent`]s.
//! - [`TranscoderPool::probe_ffmpeg`]: is there a usable ffmpeg at all.
//!
//! ffmpeg is the system's (its path is configurable), never downloaded:
//! `ffmpeg-sidecar` is used without default features, for its log parsers
//! only; the processes are driven with `tokio::process` so that stopping,
//! restarting and reading progress are async and never block a thread.
//!
//! Progress comes from `-progress pipe:1` on stdout; stderr (`-loglevel
//! warning`) is kept in a bounded ring and logged when a worker dies.

pub mod args;
pub mod config;
pub mod errors;
pub mod events;
pub mod ladder;
mod metrics;
pub mod pool;
mod probe;
pub mod progress;

pub use args::{ffmpeg_args, EncodeOptions, KeyframePolicy, RenditionOutput};
pub use config::PoolConfig;
pub use errors::{ConfigError, PoolError, ProbeError};
pub use events::{FinishReason, PoolEvent};
pub use ladder::{plan_renditions, H264Profile, LadderConfig, LaddersConfig, PlannedRendition, Rendition, X264Preset, PASSTHROUGH};
pub use pool::{JobHandle, JobState, JobStatus, TranscodeJob, TranscoderPool};
