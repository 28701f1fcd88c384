//! Media units as the hub carries them, and the FLV encodings of them.
//!
//! A published RTMP audio/video message body is already an FLV tag body, so
//! a [`Frame`] keeps that body as one `Bytes` and every output (RTMP play,
//! HTTP-FLV, HLS) reads it from there. Nothing here does IO.

pub mod flv;
pub mod frame;
pub mod metadata;

pub use frame::{Frame, FrameKind, FrameParseError};
