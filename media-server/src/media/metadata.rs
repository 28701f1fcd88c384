//! `onMetaData` as an AMF0 script body, shared by RTMP play (message type
//! 18) and HTTP-FLV (script tag).

use std::collections::HashMap;

use bytes::Bytes;
use rml_amf0::Amf0Value;
use rml_rtmp::sessions::StreamMetadata;

/// Encodes the publisher's metadata as `"onMetaData", {…}`. Only the
/// properties the encoder told us are written.
pub fn encode_on_metadata(meta: &StreamMetadata) -> Bytes {
    let mut props: HashMap<String, Amf0Value> = HashMap::new();
    let mut num = |k: &str, v: Option<f64>| {
        if let Some(v) = v {
            props.insert(k.to_string(), Amf0Value::Number(v));
        }
    };
    num("width", meta.video_width.map(f64::from));
    num("height", meta.video_height.map(f64::from));
    num("videocodecid", meta.video_codec_id.map(f64::from));
    num("framerate", meta.video_frame_rate.map(f64::from));
    num("videodatarate", meta.video_bitrate_kbps.map(f64::from));
    num("audiocodecid", meta.audio_codec_id.map(f64::from));
    num("audiodatarate", meta.audio_bitrate_kbps.map(f64::from));
    num("audiosamplerate", meta.audio_sample_rate.map(f64::from));
    num("audiochannels", meta.audio_channels.map(f64::from));
    if let Some(stereo) = meta.audio_is_stereo {
        props.insert("stereo".into(), Amf0Value::Boolean(stereo));
    }
    if let Some(encoder) = &meta.encoder {
        props.insert("encoder".into(), Amf0Value::Utf8String(encoder.clone()));
    }
    props.insert("server".into(), Amf0Value::Utf8String(concat!("WeStream ", env!("CARGO_PKG_VERSION")).into()));
    let values = vec![Amf0Value::Utf8String("onMetaData".into()), Amf0Value::Object(props)];
    // Serializing numbers, strings and a flat object cannot fail.
    Bytes::from(rml_amf0::serialize(&values).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_through_amf0() {
        let mut meta = StreamMetadata::new();
        meta.video_width = Some(1280);
        meta.video_height = Some(720);
        meta.audio_sample_rate = Some(44100);
        let body = encode_on_metadata(&meta);
        let values = rml_amf0::deserialize(&mut &body[..]).unwrap();
        assert_eq!(values[0], Amf0Value::Utf8String("onMetaData".into()));
        let Amf0Value::Object(props) = &values[1] else { panic!("not an object") };
        assert_eq!(props["width"], Amf0Value::Number(1280.0));
        assert_eq!(props["audiosamplerate"], Amf0Value::Number(44100.0));
        assert!(!props.contains_key("framerate"));
    }
}
