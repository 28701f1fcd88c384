//! [`ChannelPlaylist`]: one channel's segments in memory and its playlists,
//! rendered with `hls_m3u8` once per new segment and served as cached
//! `Bytes`, so a request costs a lookup and a clone.
//!
//! Contract:
//! - The media playlist lists the newest `playlist_length` segments; the
//!   ring keeps `extra_segments_kept` older ones for players that are behind.
//! - `EXT-X-TARGETDURATION` is the ceiling of the longest segment ever
//!   listed (and at least the configured target), so it never understates a
//!   segment and never shrinks while the channel lives.
//! - `EXT-X-DISCONTINUITY-SEQUENCE` counts the discontinuities that left
//!   the playlist window, as RFC 8216 §4.3.3.3 requires.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hls_m3u8::tags::{ExtXProgramDateTime, VariantStream};
use hls_m3u8::types::StreamData;
use hls_m3u8::{MasterPlaylist, MediaPlaylist, MediaSegment};

use super::memfd::SealedFile;
use super::segmenter::{Segment, StreamParams};

/// The playlist name of the source rendition (transcoded ones will be
/// `720p.m3u8` and so on).
pub const SOURCE_RENDITION: &str = "source";

/// Why a segment cannot be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentLookup {
    /// Older than the ring.
    Expired,
    /// Not produced yet.
    NotYet,
}

/// One channel's HLS state, shared between its segmenter (writer) and the
/// HTTP handlers (readers).
#[derive(Debug)]
pub struct ChannelPlaylist {
    channel: String,
    playlist_length: usize,
    ring_capacity: usize,
    min_target_s: u64,
    segments: VecDeque<Arc<Segment>>,
    /// Each segment's sealed copy for sendfile, in step with `segments`.
    files: VecDeque<Option<Arc<SealedFile>>>,
    target_duration_s: u64,
    discontinuity_sequence: u64,
    ended: bool,
    params: StreamParams,
    media_text: Option<Bytes>,
    master_text: Option<Bytes>,
}

impl ChannelPlaylist {
    /// An empty playlist for `channel`.
    pub fn new(channel: &str, segment_duration_ms: u64, playlist_length: usize, extra_kept: usize) -> ChannelPlaylist {
        ChannelPlaylist {
            channel: channel.to_string(),
            playlist_length: playlist_length.max(1),
            ring_capacity: playlist_length.max(1) + extra_kept,
            min_target_s: rounded_seconds(segment_duration_ms).max(1),
            segments: VecDeque::new(),
            files: VecDeque::new(),
            target_duration_s: 0,
            discontinuity_sequence: 0,
            ended: false,
            params: StreamParams::default(),
            media_text: None,
            master_text: None,
        }
    }

    /// The channel name.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// Adds a finished segment and re-renders the playlists.
    pub fn push(&mut self, segment: Segment) {
        self.push_with_file(segment, None);
    }

    /// [`Self::push`], with the segment's sealed copy (served with sendfile).
    pub fn push_with_file(&mut self, segment: Segment, file: Option<Arc<SealedFile>>) {
        let first_listed_before = self.listed_start();
        self.params = segment.params.clone();
        self.target_duration_s = self
            .target_duration_s
            .max(self.min_target_s)
            // RFC 8216 §4.3.3.1: each EXTINF *rounded to the nearest
            // integer* must not exceed the target. Rounding up instead would
            // let one 2.016 s segment raise the target to 3 s for the rest of
            // the broadcast, and players hold back three targets from live.
            .max(rounded_seconds(segment.duration_ms));
        self.segments.push_back(Arc::new(segment));
        self.files.push_back(file);
        // Discontinuities that scrolled out of the playlist window (counted
        // before the ring drops them: the window may be the whole ring).
        let first_listed_after = self.listed_start();
        let left = self
            .segments
            .iter()
            .filter(|s| s.sequence >= first_listed_before.unwrap_or(u64::MAX))
            .filter(|s| first_listed_after.is_some_and(|a| s.sequence < a))
            .filter(|s| s.discontinuity)
            .count();
        self.discontinuity_sequence += left as u64;
        while self.segments.len() > self.ring_capacity {
            self.segments.pop_front();
            self.files.pop_front();
        }
        self.render();
    }

    /// Marks the stream as ended for good (`EXT-X-ENDLIST`).
    pub fn end(&mut self) {
        self.ended = true;
        self.render();
    }

    /// Whether the stream ended.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Segments in memory, oldest first.
    pub fn segments(&self) -> impl Iterator<Item = &Arc<Segment>> {
        self.segments.iter()
    }

    /// The segment numbered `sequence`.
    pub fn segment(&self, sequence: u64) -> Result<Arc<Segment>, SegmentLookup> {
        self.segment_with_file(sequence).map(|(s, _)| s)
    }

    /// The segment numbered `sequence` and its sealed copy, if it has one.
    pub fn segment_with_file(&self, sequence: u64) -> Result<(Arc<Segment>, Option<Arc<SealedFile>>), SegmentLookup> {
        let first = self.segments.front().map(|s| s.sequence);
        let last = self.segments.back().map(|s| s.sequence);
        match (first, last) {
            (Some(f), _) if sequence < f => Err(SegmentLookup::Expired),
            (Some(f), Some(l)) if sequence <= l => {
                let i = (sequence - f) as usize;
                self.segments
                    .get(i)
                    .filter(|s| s.sequence == sequence)
                    .map(|s| (Arc::clone(s), self.files.get(i).cloned().flatten()))
                    .ok_or(SegmentLookup::NotYet)
            }
            _ if self.ended && first.is_some() => Err(SegmentLookup::Expired),
            _ => Err(SegmentLookup::NotYet),
        }
    }

    /// The media playlist, once a segment exists.
    pub fn media_playlist(&self) -> Option<Bytes> {
        self.media_text.clone()
    }

    /// The master playlist, once a segment exists.
    pub fn master_playlist(&self) -> Option<Bytes> {
        self.master_text.clone()
    }

    fn listed_start(&self) -> Option<u64> {
        let skip = self.segments.len().saturating_sub(self.playlist_length);
        self.segments.get(skip).map(|s| s.sequence)
    }

    fn listed(&self) -> impl Iterator<Item = &Arc<Segment>> {
        self.segments.iter().skip(self.segments.len().saturating_sub(self.playlist_length))
    }

    fn render(&mut self) {
        match render_media(self) {
            Ok(text) => self.media_text = text.map(Bytes::from),
            Err(e) => tracing::error!(channel = %self.channel, error = %e, "media playlist not rendered"),
        }
        match render_master(self) {
            Ok(text) => self.master_text = text.map(Bytes::from),
            Err(e) => tracing::error!(channel = %self.channel, error = %e, "master playlist not rendered"),
        }
    }

    /// Peak bits per second over the segments in memory.
    fn peak_bandwidth(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| (s.data.len() as u64 * 8 * 1000) / s.duration_ms.max(1))
            .max()
            .unwrap_or(0)
    }
}

/// Milliseconds to whole seconds, rounded to the nearest (half up).
fn rounded_seconds(ms: u64) -> u64 {
    (ms + 500) / 1000
}

fn render_media(p: &ChannelPlaylist) -> Result<Option<String>, hls_m3u8::Error> {
    let Some(first) = p.listed().next() else { return Ok(None) };
    let mut segments = Vec::with_capacity(p.playlist_length);
    for s in p.listed() {
        segments.push(
            MediaSegment::builder()
                .duration(Duration::from_millis(s.duration_ms))
                .uri(format!("{}.ts", s.sequence))
                .has_discontinuity(s.discontinuity)
                .program_date_time(ExtXProgramDateTime::new(iso8601_ms(s.program_date_time_ms)))
                .build()?,
        );
    }
    let playlist = MediaPlaylist::builder()
        .target_duration(Duration::from_secs(p.target_duration_s))
        .media_sequence(first.sequence as usize)
        .discontinuity_sequence(p.discontinuity_sequence as usize)
        .has_end_list(p.ended)
        .segments(segments)
        .build()?;
    Ok(Some(playlist.to_string()))
}

fn render_master(p: &ChannelPlaylist) -> Result<Option<String>, hls_m3u8::Error> {
    let Some(variant) = p.variant(format!("{SOURCE_RENDITION}.m3u8"))? else { return Ok(None) };
    let master = MasterPlaylist::builder().variant_streams(vec![variant]).build()?;
    Ok(Some(master.to_string()))
}

/// A master playlist over several variants (the source and its
/// renditions), ordered by bandwidth as players expect.
pub fn render_master_of(variants: Vec<(u64, VariantStream<'static>)>) -> Result<Option<String>, hls_m3u8::Error> {
    if variants.is_empty() {
        return Ok(None);
    }
    let mut variants = variants;
    variants.sort_by_key(|(bw, _)| *bw);
    let list: Vec<VariantStream<'static>> = variants.into_iter().map(|(_, v)| v).collect();
    let master = MasterPlaylist::builder().variant_streams(list).build()?;
    Ok(Some(master.to_string()))
}

impl ChannelPlaylist {
    /// This playlist as a master-playlist variant at `uri`: BANDWIDTH is the
    /// peak segment bitrate, AVERAGE-BANDWIDTH the mean over the window,
    /// CODECS, RESOLUTION and FRAME-RATE from the stream itself. `None`
    /// before the first segment.
    pub fn variant(&self, uri: String) -> Result<Option<VariantStream<'static>>, hls_m3u8::Error> {
        if self.segments.is_empty() {
            return Ok(None);
        }
        let mut data = StreamData::builder();
        data.bandwidth(self.peak_bandwidth().max(1));
        data.average_bandwidth(self.average_bandwidth().max(1));
        if !self.params.codecs.is_empty() {
            data.codecs(self.params.codecs.clone());
        }
        if let Some((w, h)) = self.params.resolution {
            data.resolution((w as usize, h as usize));
        }
        let frame_rate = self.segments.back().and_then(|s| s.frame_rate).map(|f| hls_m3u8::types::UFloat::new(f as f32));
        Ok(Some(VariantStream::ExtXStreamInf {
            uri: Cow::Owned(uri),
            frame_rate,
            audio: None,
            subtitles: None,
            closed_captions: None,
            stream_data: data.build()?,
        }))
    }

    /// Peak segment bitrate, for ordering variants.
    pub fn bandwidth(&self) -> u64 {
        self.peak_bandwidth()
    }

    fn average_bandwidth(&self) -> u64 {
        let bytes: u64 = self.segments.iter().map(|s| s.data.len() as u64).sum();
        let ms: u64 = self.segments.iter().map(|s| s.duration_ms).sum();
        bytes * 8 * 1000 / ms.max(1)
    }
}

/// `playlist` with `token=T` (the play token) and/or `viewer=V` (the viewer
/// token, for watch-time rewards), percent-encoded, added to the query of
/// every URI it names: URI lines and `URI="..."` attributes. Done per
/// request, and only for requests that carry one, so the cached text stays
/// shared. Unchanged without either.
pub fn with_play_params(playlist: &[u8], token: Option<&str>, viewer: Option<&str>) -> Bytes {
    let param = [("token", token), ("viewer", viewer)]
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={}", percent_encode(v))))
        .collect::<Vec<_>>()
        .join("&");
    if param.is_empty() {
        return Bytes::copy_from_slice(playlist);
    }
    let text = String::from_utf8_lossy(playlist);
    let mut out = String::with_capacity(text.len() + 16 * (param.len() + 1));
    for line in text.split_inclusive('\n') {
        let (body, eol) = match line.strip_suffix("\r\n") {
            Some(b) => (b, "\r\n"),
            None => line.strip_suffix('\n').map_or((line, ""), |b| (b, "\n")),
        };
        if body.is_empty() {
            out.push_str(body);
        } else if !body.starts_with('#') {
            push_with_param(&mut out, body, &param);
        } else if let Some(at) = body.find("URI=\"") {
            let start = at + 5;
            match body[start..].find('"') {
                Some(len) => {
                    out.push_str(&body[..start]);
                    push_with_param(&mut out, &body[start..start + len], &param);
                    out.push_str(&body[start + len..]);
                }
                None => out.push_str(body),
            }
        } else {
            out.push_str(body);
        }
        out.push_str(eol);
    }
    Bytes::from(out)
}

fn push_with_param(out: &mut String, uri: &str, param: &str) {
    out.push_str(uri);
    out.push(if uri.contains('?') { '&' } else { '?' });
    out.push_str(param);
}

/// RFC 3986 query-value encoding: unreserved characters stay, the rest
/// become `%XX`.
pub fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `2026-11-25T11:40:52.123Z` from ms since the Unix epoch.
pub fn iso8601_ms(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        unix_ms % 1000
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_play_token_rides_on_every_uri_and_nothing_else() {
        let media = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:2,\n17.ts\n\n#EXTINF:2,\n18.ts?x=1\n";
        let out = with_play_params(media.as_bytes(), Some("ab.c/+="), None);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MAP:URI=\"init.mp4?token=ab.c%2F%2B%3D\"\n#EXTINF:2,\n\
             17.ts?token=ab.c%2F%2B%3D\n\n#EXTINF:2,\n18.ts?x=1&token=ab.c%2F%2B%3D\n"
        );
        let master = "#EXTM3U\r\n#EXT-X-STREAM-INF:BANDWIDTH=1\r\n../demo_480p/source.m3u8\r\n";
        assert_eq!(
            std::str::from_utf8(&with_play_params(master.as_bytes(), Some("t"), None)).unwrap(),
            "#EXTM3U\r\n#EXT-X-STREAM-INF:BANDWIDTH=1\r\n../demo_480p/source.m3u8?token=t\r\n"
        );
        assert_eq!(
            std::str::from_utf8(&with_play_params(master.as_bytes(), Some("t"), Some("v.1"))).unwrap(),
            "#EXTM3U\r\n#EXT-X-STREAM-INF:BANDWIDTH=1\r\n../demo_480p/source.m3u8?token=t&viewer=v.1\r\n",
            "a viewer token rides along"
        );
    }

    #[test]
    fn percent_encoding_keeps_only_unreserved_characters() {
        assert_eq!(percent_encode("AZaz09-._~"), "AZaz09-._~");
        assert_eq!(percent_encode("a b&c=d?é"), "a%20b%26c%3Dd%3F%C3%A9");
    }
}
