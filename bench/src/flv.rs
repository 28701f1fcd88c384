//! A streaming FLV demuxer that keeps only what the bench needs of each tag:
//! its type, timestamp, size and the first [`TAG_PREFIX_LEN`] bytes of its
//! body (enough for the tag header and the stamp). The rest of a body is
//! skipped without being copied, so a player costs little per byte.
//!
//! Contract: feed bytes in arrival order with [`FlvDemuxer::handle_input`];
//! each complete tag is passed to the callback once. A stream that does not
//! start with an FLV header is an error; the demuxer then stays failed.
//! Sans-IO.

/// How many leading body bytes of each tag are kept.
pub(crate) const TAG_PREFIX_LEN: usize = 32;

/// FLV tag type of audio data.
pub(crate) const TAG_AUDIO: u8 = 8;
/// FLV tag type of video data.
pub(crate) const TAG_VIDEO: u8 = 9;
/// FLV tag type of script data (onMetaData).
#[cfg(test)]
pub(crate) const TAG_SCRIPT: u8 = 18;

/// The part of a tag the bench looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FlvTagHead {
    /// 8 audio, 9 video, 18 script data.
    pub(crate) tag_type: u8,
    /// Timestamp in milliseconds, extended byte applied.
    pub(crate) timestamp_ms: u32,
    /// Full body length.
    pub(crate) data_size: u32,
    prefix: [u8; TAG_PREFIX_LEN],
    prefix_len: usize,
}

impl FlvTagHead {
    /// The first bytes of the body (all of it when the body is short).
    pub(crate) fn prefix(&self) -> &[u8] {
        &self.prefix[..self.prefix_len]
    }
}

/// Why a byte stream is not FLV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FlvError {
    /// The first three bytes are not `FLV`.
    BadSignature,
    /// The header's data offset is shorter than the 9-byte header itself.
    BadHeaderSize { data_offset: u32 },
}

impl std::fmt::Display for FlvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BadSignature => write!(f, "stream does not start with an FLV signature"),
            Self::BadHeaderSize { data_offset } => {
                write!(f, "FLV header data offset {data_offset} is below 9")
            }
        }
    }
}

impl std::error::Error for FlvError {}

#[derive(Debug)]
enum Stage {
    /// Collecting the 9-byte file header.
    FileHeader,
    /// Skipping bytes (rest of the header, PreviousTagSize fields).
    Skip(usize),
    /// Collecting an 11-byte tag header.
    TagHeader,
    /// Inside a tag body; `remaining` bytes of it are still to come.
    Body {
        remaining: usize,
    },
    Failed(FlvError),
}

/// Streaming FLV demuxer; see the module doc.
#[derive(Debug)]
pub(crate) struct FlvDemuxer {
    stage: Stage,
    header: [u8; 11],
    header_len: usize,
    current: FlvTagHead,
}

impl Default for FlvDemuxer {
    fn default() -> Self {
        Self::new()
    }
}

impl FlvDemuxer {
    pub(crate) fn new() -> Self {
        Self {
            stage: Stage::FileHeader,
            header: [0; 11],
            header_len: 0,
            current: FlvTagHead {
                tag_type: 0,
                timestamp_ms: 0,
                data_size: 0,
                prefix: [0; TAG_PREFIX_LEN],
                prefix_len: 0,
            },
        }
    }

    /// Consumes `input`, calling `on_tag` for each tag completed by it.
    pub(crate) fn handle_input(
        &mut self,
        mut input: &[u8],
        mut on_tag: impl FnMut(&FlvTagHead),
    ) -> Result<(), FlvError> {
        while !input.is_empty() {
            match &mut self.stage {
                Stage::Failed(err) => return Err(err.clone()),
                Stage::FileHeader => {
                    if !self.fill_header(&mut input, 9) {
                        return Ok(());
                    }
                    if &self.header[..3] != b"FLV" {
                        return self.fail(FlvError::BadSignature);
                    }
                    let data_offset = u32::from_be_bytes([
                        self.header[5],
                        self.header[6],
                        self.header[7],
                        self.header[8],
                    ]);
                    if data_offset < 9 {
                        return self.fail(FlvError::BadHeaderSize { data_offset });
                    }
                    // The rest of the header, then PreviousTagSize0.
                    self.stage = Stage::Skip(data_offset as usize - 9 + 4);
                }
                Stage::Skip(remaining) => {
                    let n = (*remaining).min(input.len());
                    input = &input[n..];
                    *remaining -= n;
                    if *remaining == 0 {
                        self.stage = Stage::TagHeader;
                    }
                }
                Stage::TagHeader => {
                    if !self.fill_header(&mut input, 11) {
                        return Ok(());
                    }
                    let h = &self.header;
                    let data_size = u32::from_be_bytes([0, h[1], h[2], h[3]]);
                    let timestamp_ms = u32::from_be_bytes([h[7], h[4], h[5], h[6]]);
                    self.current.tag_type = h[0] & 0x1F;
                    self.current.timestamp_ms = timestamp_ms;
                    self.current.data_size = data_size;
                    self.current.prefix_len = 0;
                    if data_size == 0 {
                        on_tag(&self.current);
                        self.stage = Stage::Skip(4);
                    } else {
                        self.stage = Stage::Body {
                            remaining: data_size as usize,
                        };
                    }
                }
                Stage::Body { remaining } => {
                    let n = (*remaining).min(input.len());
                    let want = TAG_PREFIX_LEN - self.current.prefix_len;
                    let keep = want.min(n);
                    if keep > 0 {
                        let at = self.current.prefix_len;
                        self.current.prefix[at..at + keep].copy_from_slice(&input[..keep]);
                        self.current.prefix_len += keep;
                    }
                    input = &input[n..];
                    *remaining -= n;
                    if *remaining == 0 {
                        on_tag(&self.current);
                        self.stage = Stage::Skip(4);
                    }
                }
            }
        }
        Ok(())
    }

    /// Moves bytes from `input` into the header buffer until it holds
    /// `len`; true when it does (and resets it for the next use).
    fn fill_header(&mut self, input: &mut &[u8], len: usize) -> bool {
        let n = (len - self.header_len).min(input.len());
        self.header[self.header_len..self.header_len + n].copy_from_slice(&input[..n]);
        self.header_len += n;
        *input = &input[n..];
        if self.header_len == len {
            self.header_len = 0;
            true
        } else {
            false
        }
    }

    fn fail(&mut self, err: FlvError) -> Result<(), FlvError> {
        self.stage = Stage::Failed(err.clone());
        Err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flv_header() -> Vec<u8> {
        vec![b'F', b'L', b'V', 1, 0x05, 0, 0, 0, 9, 0, 0, 0, 0]
    }

    fn tag(tag_type: u8, timestamp_ms: u32, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag_type];
        out.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        let ts = timestamp_ms.to_be_bytes();
        out.extend_from_slice(&[ts[1], ts[2], ts[3], ts[0]]);
        out.extend_from_slice(&[0, 0, 0]);
        out.extend_from_slice(body);
        out.extend_from_slice(&(11 + body.len() as u32).to_be_bytes());
        out
    }

    fn sample_stream() -> Vec<u8> {
        let mut stream = flv_header();
        stream.extend(tag(TAG_SCRIPT, 0, b"\x02\x00\x0aonMetaData"));
        stream.extend(tag(TAG_VIDEO, 40, &[0x17; 100]));
        stream.extend(tag(TAG_AUDIO, 0x0100_0002, &[0xAF, 0x01, 7]));
        stream.extend(tag(TAG_VIDEO, 80, &[]));
        stream
    }

    fn demux_in_pieces(stream: &[u8], piece: usize) -> Vec<FlvTagHead> {
        let mut demuxer = FlvDemuxer::new();
        let mut tags = Vec::new();
        for chunk in stream.chunks(piece) {
            demuxer
                .handle_input(chunk, |t| tags.push(t.clone()))
                .expect("valid FLV");
        }
        tags
    }

    #[test]
    fn tags_come_out_whole_however_the_bytes_are_split() {
        let stream = sample_stream();
        let whole = demux_in_pieces(&stream, stream.len());
        assert_eq!(whole.len(), 4);
        for piece in [1, 2, 7, 11, 13, 64] {
            assert_eq!(demux_in_pieces(&stream, piece), whole, "piece {piece}");
        }
        assert_eq!(whole[0].tag_type, TAG_SCRIPT);
        assert_eq!(whole[1].tag_type, TAG_VIDEO);
        assert_eq!(whole[1].timestamp_ms, 40);
        assert_eq!(whole[1].data_size, 100);
        assert_eq!(whole[1].prefix(), &[0x17; TAG_PREFIX_LEN][..]);
        assert_eq!(
            whole[2].timestamp_ms, 0x0100_0002,
            "extended timestamp byte"
        );
        assert_eq!(whole[2].prefix(), &[0xAF, 0x01, 7]);
        assert_eq!(whole[3].data_size, 0);
        assert!(whole[3].prefix().is_empty());
    }

    #[test]
    fn a_longer_header_is_skipped() {
        let mut stream = vec![
            b'F', b'L', b'V', 1, 0x05, 0, 0, 0, 12, 0xEE, 0xEE, 0xEE, 0, 0, 0, 0,
        ];
        stream.extend(tag(TAG_AUDIO, 5, &[0xAF, 0x01]));
        let tags = demux_in_pieces(&stream, 3);
        assert_eq!(tags.len(), 1);
        assert_eq!(tags[0].timestamp_ms, 5);
    }

    #[test]
    fn a_stream_that_is_not_flv_is_refused_and_stays_refused() {
        let mut demuxer = FlvDemuxer::new();
        let html = b"<html><body>not found</body></html>";
        assert_eq!(
            demuxer.handle_input(html, |_| panic!("no tag expected")),
            Err(FlvError::BadSignature)
        );
        assert_eq!(
            demuxer.handle_input(&sample_stream(), |_| panic!("no tag expected")),
            Err(FlvError::BadSignature)
        );
        let mut short = FlvDemuxer::new();
        assert_eq!(
            short.handle_input(&[b'F', b'L', b'V', 1, 5, 0, 0, 0, 3], |_| ()),
            Err(FlvError::BadHeaderSize { data_offset: 3 })
        );
    }
}
