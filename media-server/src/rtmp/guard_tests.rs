use super::*;
use bytes::Bytes;
use proptest::prelude::*;
use rml_rtmp::chunk_io::ChunkSerializer;
use rml_rtmp::messages::MessagePayload;
use rml_rtmp::time::RtmpTimestamp;

fn payload(type_id: u8, ts: u32, data: Vec<u8>) -> MessagePayload {
    MessagePayload {
        timestamp: RtmpTimestamp::new(ts),
        message_stream_id: 1,
        type_id,
        data: Bytes::from(data),
    }
}

fn serialize_all(chunk_size: u32, messages: &[MessagePayload]) -> Vec<u8> {
    let mut ser = ChunkSerializer::new();
    let mut out = Vec::new();
    if chunk_size != 128 {
        out.extend(ser.set_max_chunk_size(chunk_size, RtmpTimestamp::new(0)).unwrap().bytes);
    }
    for m in messages {
        out.extend(ser.serialize(m, false, false).unwrap().bytes);
    }
    out
}

fn type0(csid: u8, ts: u32, len: u32, type_id: u8) -> Vec<u8> {
    let mut v = vec![csid];
    v.extend_from_slice(&ts.min(0xffffff).to_be_bytes()[1..]);
    v.extend_from_slice(&len.to_be_bytes()[1..]);
    v.push(type_id);
    v.extend_from_slice(&1u32.to_le_bytes());
    if ts >= 0xffffff {
        v.extend_from_slice(&ts.to_be_bytes());
    }
    v
}

fn set_chunk_size(size: u32) -> Vec<u8> {
    let mut v = type0(2, 0, 4, 1);
    v.extend_from_slice(&size.to_be_bytes());
    v
}

#[test]
fn media_from_a_real_serializer_passes_at_every_chunk_size() {
    for chunk_size in [128, 4096, 60000] {
        let msgs: Vec<_> = (0..20)
            .map(|i| payload(if i % 3 == 0 { 8 } else { 9 }, i * 33, vec![i as u8; 100 + i as usize * 500]))
            .collect();
        let bytes = serialize_all(chunk_size, &msgs);
        let mut g = ChunkGuard::new(GuardConfig::default());
        g.inspect(&bytes).unwrap();
        assert_eq!(g.chunk_size(), chunk_size);
    }
}

#[test]
fn chunk_size_zero_is_refused() {
    let mut g = ChunkGuard::new(GuardConfig::default());
    assert_eq!(g.inspect(&set_chunk_size(0)), Err(GuardError::InvalidChunkSize { size: 0 }));
}

#[test]
fn chunk_size_two_to_the_31_is_refused() {
    let mut g = ChunkGuard::new(GuardConfig::default());
    assert_eq!(
        g.inspect(&set_chunk_size(1 << 31)),
        Err(GuardError::InvalidChunkSize { size: 1 << 31 })
    );
}

#[test]
fn message_over_the_limit_is_refused_at_its_header() {
    let config = GuardConfig { max_message_bytes: 1000, ..GuardConfig::default() };
    let mut g = ChunkGuard::new(config);
    let err = g.inspect(&type0(4, 0, 1001, 9)).unwrap_err();
    assert_eq!(err, GuardError::MessageTooLarge { len: 1001, type_id: 9, limit: 1000 });
}

#[test]
fn deeply_nested_amf_is_refused_before_the_recursive_parser_sees_it() {
    let mut body = vec![2, 0, 7];
    body.extend_from_slice(b"connect");
    for _ in 0..1000 {
        body.extend_from_slice(&[3, 0, 1, b'a']);
    }
    let mut bytes = set_chunk_size(65536);
    bytes.extend(type0(3, 0, body.len() as u32, 20));
    bytes.extend(&body);
    let mut g = ChunkGuard::new(GuardConfig::default());
    assert_eq!(g.inspect(&bytes), Err(GuardError::AmfTooDeep { limit: 16 }));
}

#[test]
fn ordinary_connect_command_passes_the_amf_scan() {
    let values = vec![
        rml_amf0::Amf0Value::Utf8String("connect".into()),
        rml_amf0::Amf0Value::Number(1.0),
        rml_amf0::Amf0Value::Object(
            [("app".to_string(), rml_amf0::Amf0Value::Utf8String("live".into()))].into_iter().collect(),
        ),
    ];
    let body = rml_amf0::serialize(&values).unwrap();
    assert_eq!(scan_amf0(&body, 16), Ok(()));
    assert_eq!(scan_amf0(&body, 0), Err(GuardError::AmfTooDeep { limit: 0 }));
}

#[test]
fn compressed_header_without_a_previous_one_is_refused() {
    let mut g = ChunkGuard::new(GuardConfig::default());
    assert_eq!(g.inspect(&[0xc4, 1, 2, 3]), Err(GuardError::NoPreviousHeader { csid: 4 }));
}

#[test]
fn a_new_header_in_the_middle_of_a_message_is_refused() {
    let mut bytes = type0(4, 0, 300, 9);
    bytes.extend(vec![0; 128]);
    // A type 1 header shrinking the message on the same csid: rml would underflow.
    bytes.extend([0x44, 0, 0, 0, 0, 0, 10, 9]);
    let mut g = ChunkGuard::new(GuardConfig::default());
    assert_eq!(g.inspect(&bytes), Err(GuardError::HeaderMidMessage { csid: 4, remaining: 172 }));
}

#[test]
fn interleaving_two_chunk_streams_is_refused() {
    let mut bytes = type0(4, 0, 300, 9);
    bytes.extend(vec![0; 128]);
    bytes.extend(type0(5, 0, 10, 8));
    let mut g = ChunkGuard::new(GuardConfig::default());
    assert_eq!(g.inspect(&bytes), Err(GuardError::Interleaved { csid: 5, open: 4 }));
}

#[test]
fn extended_timestamps_pass_in_full_headers_and_continuations() {
    let msgs: Vec<_> = (0..5).map(|i| payload(9, 17_000_000 + i * 40, vec![7; 300])).collect();
    let bytes = serialize_all(128, &msgs);
    let mut g = ChunkGuard::new(GuardConfig::default());
    g.inspect(&bytes).unwrap();
}

#[test]
fn an_extended_delta_below_the_marker_is_refused() {
    let mut bytes = type0(4, 0, 1, 9);
    bytes.push(0);
    // Type 2 header with timestamp field 0xFFFFFF and extended value 5.
    bytes.extend([0x84, 0xff, 0xff, 0xff, 0, 0, 0, 5, 0]);
    let mut g = ChunkGuard::new(GuardConfig::default());
    assert_eq!(g.inspect(&bytes), Err(GuardError::BadExtendedTimestamp { csid: 4, value: 5 }));
}

#[test]
fn amf3_messages_are_refused() {
    let mut g = ChunkGuard::new(GuardConfig::default());
    assert_eq!(g.inspect(&type0(3, 0, 1, 17)), Err(GuardError::UnsupportedMessageType { type_id: 17 }));
}

#[test]
fn too_many_chunk_streams_are_refused() {
    let config = GuardConfig { max_chunk_streams: 3, ..GuardConfig::default() };
    let mut g = ChunkGuard::new(config);
    let mut bytes = Vec::new();
    for csid in 4..8u8 {
        bytes.extend(type0(csid, 0, 1, 9));
        bytes.push(0);
    }
    assert_eq!(g.inspect(&bytes), Err(GuardError::TooManyChunkStreams { limit: 3 }));
}

proptest! {
    #[test]
    fn any_serialized_message_sequence_passes_with_any_split(
        chunk_size in prop_oneof![Just(128u32), Just(4096u32), 1u32..300],
        msgs in proptest::collection::vec(
            (prop_oneof![Just(8u8), Just(9u8)], 0u32..100, proptest::collection::vec(any::<u8>(), 1..3000)),
            1..15),
        base in prop_oneof![Just(0u32), Just(0xfffff0u32), Just(17_000_000u32)],
        split in 1usize..700,
    ) {
        let mut ts = base;
        let payloads: Vec<_> = msgs.into_iter().map(|(t, d, data)| { ts = ts.wrapping_add(d); payload(t, ts, data) }).collect();
        let bytes = serialize_all(chunk_size, &payloads);
        let mut g = ChunkGuard::new(GuardConfig::default());
        for piece in bytes.chunks(split) {
            g.inspect(piece).unwrap();
        }
        // And rml itself reads the same bytes back.
        let mut de = rml_rtmp::chunk_io::ChunkDeserializer::new();
        de.set_max_chunk_size(chunk_size as usize).unwrap();
        let skip = if chunk_size != 128 { 16 } else { 0 };
        let mut n = 0;
        let mut first = true;
        loop {
            let input: &[u8] = if first { &bytes[skip..] } else { &[] };
            first = false;
            match de.get_next_message(input).unwrap() { Some(_) => n += 1, None => break }
        }
        prop_assert_eq!(n, payloads.len());
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..4000), split in 1usize..100) {
        let mut g = ChunkGuard::new(GuardConfig::default());
        for piece in data.chunks(split) {
            if g.inspect(piece).is_err() { break; }
        }
    }

    #[test]
    fn amf_scan_never_panics(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let _ = scan_amf0(&data, 16);
    }
}
