//! The ffmpeg worker pool that turns each live stream into an H.264/AAC
//! ladder. Not built yet; see DESIGN.md §4.
