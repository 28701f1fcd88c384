//! The edge role's own parts (DESIGN.md §5): the relay framing (sans-IO),
//! the QUIC plumbing (certificates, pinning), the upstream client that pulls
//! a channel from an origin with reconnects and failover, and the
//! registration/heartbeat client for the control plane.
//!
//! The edge reuses the media server's hub and packagers; the wiring that
//! feeds a hub from [`upstream::UpstreamClient`] lives in the media server
//! (`westream_media::edge`), so this crate does not depend on it.

pub mod config;
pub mod framing;
pub mod quic;
pub mod registration;
pub mod upstream;

pub use config::{ConfigError, EdgeConfig, OriginConfig, PublicUrls, RelayConfig};
