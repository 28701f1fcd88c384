//! The edge role: pulls streams from origins over QUIC and serves viewers
//! from a local hub. Not built yet; see DESIGN.md §5.
