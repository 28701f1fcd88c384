//! WeStream origin: RTMP ingest and play, the stream hub, HTTP-FLV and HLS
//! packaging, and the all-in-one `serve` command (DESIGN.md §3).

pub mod audience;
pub mod auth;
pub mod config;
pub mod edge;
pub mod hls;
pub mod http;
pub mod hub;
pub mod media;
pub mod metering;
pub mod metrics;
pub mod relay;
pub mod room_feed;
pub mod rtmp;
pub mod server;
pub mod transcode;

pub use config::Config;
pub use server::Server;
