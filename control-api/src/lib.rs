//! The control plane: accounts, stream keys, ledger, packages, gifts,
//! rewards and settlement (DESIGN.md §6).
//!
//! The media path sees the control plane only through [`hooks::MediaHooks`]:
//! the origin and edges ask it whether a publish or a play is allowed and
//! report usage to it. Everything else here is reached over the REST API.
//!
//! Entry points: [`ControlPlane::open`] (storage + seed), then
//! [`ControlPlane::router`] (the `/v1` REST API to merge into the server's
//! HTTP listener), [`ControlPlane::hooks`] (in-process hooks) and
//! [`ControlPlane::register_metrics`]. Media nodes in other processes use
//! [`HttpHooks`].
//!
//! Wiring (`westream serve` / `westream control`):
//!
//! ```ignore
//! let plane = tokio::task::spawn_blocking(move || ControlPlane::open(cfg.control, &data_dir)).await??;
//! plane.register_metrics(&registry)?;             // the server owns /metrics
//! let app = media_router.merge(plane.router());   // every route is under /v1
//! let hooks: Arc<dyn MediaHooks> = plane.hooks(); // or HttpHooks::new(url, node_token)?
//! ```
//!
//! Rooms (issue #7): [`ControlPlane::rooms`] is the handle the media server
//! reports live state and viewer counts to ([`Rooms::stream_started`],
//! [`Rooms::stream_ended`], [`Rooms::set_viewers`]); the WebSocket
//! `/v1/rooms/{channel}/ws` is in the router. Ticketed channels are checked
//! by `authorize_play` from memory with [`tickets::verify_play_token`]; the
//! vote formula is documented in [`votes`].
//!
//! Stop orders reach a node two ways: the receipt of every
//! [`hooks::MediaHooks::report_usage`] call lists those for the channels in
//! the batch, and [`hooks::MediaHooks::stop_orders`] lists all of them. A
//! node warns the publisher when it first sees an order and ends the stream
//! at `stop_at_ms`; a purchase lifts the owner's orders.
//!
//! The `[control]` table of `configs/dev.toml` is kept, and tested, in
//! `control-api/tests/data/dev-control.toml`.

pub mod api;
pub mod clock;
pub mod config;
pub mod edges;
pub mod hooks;
pub mod http_hooks;
pub mod inproc;
pub mod metrics;
pub mod plane;
pub mod rewards;
pub mod rooms;
pub mod serve;
pub mod settlement;
pub mod store;
pub mod tickets;
pub mod votes;

pub use config::{
    ConfigError, ControlConfig, ProductConfig, SeedAccountConfig, SeedChannelConfig, SqliteSync,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use http_hooks::HttpHooks;
pub use rooms::{Rooms, ViewerCounts};
pub use plane::{ControlError, ControlPlane};
