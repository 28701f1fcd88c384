//! The JSON events of a room's WebSocket (documented in openapi.json under
//! `x-websocket`). Each is serialized once per room and the bytes are shared
//! by every client.

use axum::extract::ws::Utf8Bytes;
use serde::Serialize;

use crate::store::AccountId;

/// Viewer counts by protocol, as the media server reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ViewerCounts {
    /// RTMP players.
    pub rtmp: u64,
    /// HTTP-FLV players.
    pub flv: u64,
    /// HLS players (sessions seen recently).
    pub hls: u64,
}

impl ViewerCounts {
    /// All protocols together.
    pub fn total(&self) -> u64 {
        self.rtmp.saturating_add(self.flv).saturating_add(self.hls)
    }
}

/// `viewers` as sent (with the total).
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct ViewersBody {
    pub(crate) rtmp: u64,
    pub(crate) flv: u64,
    pub(crate) hls: u64,
    pub(crate) total: u64,
}

impl From<ViewerCounts> for ViewersBody {
    fn from(v: ViewerCounts) -> Self {
        ViewersBody {
            rtmp: v.rtmp,
            flv: v.flv,
            hls: v.hls,
            total: v.total(),
        }
    }
}

/// A server -> client event.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Event<'a> {
    /// A chat message.
    Chat {
        id: u64,
        account: AccountId,
        handle: &'a str,
        text: &'a str,
        ts_ms: i64,
    },
    /// A gift.
    Gift {
        id: i64,
        account: AccountId,
        handle: &'a str,
        gift: &'a str,
        name: &'a str,
        count: u32,
        paid_micro: i64,
        vote_weight: f64,
        ts_ms: i64,
    },
    /// Aggregated viewer counts.
    Viewers(ViewersBody),
    /// The stream went live or ended.
    Stream { live: bool, ts_ms: i64 },
    /// A refusal, to the sender only.
    Error { code: &'a str, message: &'a str },
}

impl Event<'_> {
    /// The JSON text, ready to share.
    pub(crate) fn to_bytes(&self) -> Utf8Bytes {
        // Our own enums of strings and numbers always serialize.
        Utf8Bytes::from(serde_json::to_string(self).unwrap_or_default())
    }
}

/// The first message a client gets.
#[derive(Debug, Serialize)]
pub(crate) struct Hello<'a> {
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    pub(crate) channel: &'a str,
    pub(crate) live: bool,
    pub(crate) viewers: ViewersBody,
    pub(crate) score: f64,
    pub(crate) you: Option<AccountId>,
}

impl Hello<'_> {
    /// `hello` with `recent`: the already-serialized history spliced in, so
    /// no event is serialized twice.
    pub(crate) fn to_bytes<'b>(&self, recent: impl Iterator<Item = &'b Utf8Bytes>) -> Utf8Bytes {
        let mut s = serde_json::to_string(self).unwrap_or_else(|_| "{}".into());
        s.pop(); // the closing brace
        s.push_str(",\"recent\":");
        push_array(&mut s, recent);
        s.push('}');
        Utf8Bytes::from(s)
    }
}

/// Appends `[e1,e2,...]`: already-serialized events spliced into a JSON
/// array as they are.
pub(crate) fn push_array<'b>(s: &mut String, events: impl Iterator<Item = &'b Utf8Bytes>) {
    s.push('[');
    for (i, e) in events.enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(e.as_str());
    }
    s.push(']');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_have_the_documented_shape() {
        let chat = Event::Chat { id: 1, account: 2, handle: "ann", text: "hi", ts_ms: 3 }.to_bytes();
        assert_eq!(chat.as_str(), r#"{"type":"chat","id":1,"account":2,"handle":"ann","text":"hi","ts_ms":3}"#);
        let v = Event::Viewers(ViewerCounts { rtmp: 1, flv: 2, hls: 3 }.into()).to_bytes();
        assert_eq!(v.as_str(), r#"{"type":"viewers","rtmp":1,"flv":2,"hls":3,"total":6}"#);
        let hello = Hello {
            kind: "hello",
            channel: "c",
            live: false,
            viewers: ViewerCounts::default().into(),
            score: 0.0,
            you: None,
        };
        let h = hello.to_bytes([chat.clone(), chat].iter());
        let parsed: serde_json::Value = serde_json::from_str(h.as_str()).expect("valid json");
        assert_eq!(parsed["recent"].as_array().map(Vec::len), Some(2));
        assert_eq!(parsed["recent"][0]["text"], "hi");
        let empty = hello.to_bytes(std::iter::empty());
        assert!(empty.as_str().ends_with(r#""you":null,"recent":[]}"#));
    }
}
