use super::*;
use proptest::prelude::*;

fn encoded(msgs: &[RelayMessage]) -> BytesMut {
    let mut out = BytesMut::new();
    for m in msgs {
        encode(m, &mut out).unwrap();
    }
    out
}

fn decode_all(dec: &mut RelayDecoder) -> Result<Vec<RelayMessage>, FramingError> {
    let mut out = Vec::new();
    while let Some(m) = dec.poll_message()? {
        out.push(m);
    }
    Ok(out)
}

fn request() -> RelayMessage {
    RelayMessage::Request(RelayRequest {
        channel: "demo".into(),
        rendition: "source".into(),
        edge_id: "edge-paris".into(),
        token: "node-token".into(),
    })
}

#[test]
fn a_request_header_and_frames_come_back_as_sent_when_fed_byte_by_byte() {
    let msgs = vec![
        request(),
        RelayMessage::Header(StreamHeader { has_video: true, has_audio: false, channel: "demo".into(), origin_id: "o1".into() }),
        RelayMessage::Frame(RelayFrame { kind: RelayFrameKind::Video, dts: 1 << 40, payload: Bytes::from_static(&[0x17, 1, 0, 0, 0]) }),
        RelayMessage::Frame(RelayFrame { kind: RelayFrameKind::Metadata, dts: 0, payload: Bytes::new() }),
        RelayMessage::Refusal(Refusal { code: RefusalCode::NotLive, reason: "not here".into() }),
    ];
    let bytes = encoded(&msgs);
    let mut dec = RelayDecoder::new(1024);
    let mut got = Vec::new();
    for b in bytes.iter() {
        dec.handle_input(&[*b]);
        got.extend(decode_all(&mut dec).unwrap());
    }
    assert_eq!(got, msgs);
    assert_eq!(dec.buffered(), 0);
}

#[test]
fn an_oversized_frame_is_refused_from_its_prefix_before_the_body_arrives() {
    let mut dec = RelayDecoder::new(100);
    dec.handle_input(&[3, 0xff, 0xff, 0xff, 0xff]);
    assert!(matches!(dec.poll_message(), Err(FramingError::TooLarge { type_id: 3, .. })));
    // The decoder stays failed.
    dec.handle_input(&encoded(&[request()]));
    assert_eq!(dec.poll_message(), Err(FramingError::Failed));
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    for garbage in [&b"GET / HTTP/1.1\r\n\r\n"[..], &[0, 0, 0, 0, 0], &[1, 0, 0, 0, 4, b'X', b'X', b'X', b'X'], &[3, 0, 0, 0, 2, 9, 0]] {
        let mut dec = RelayDecoder::new(1024);
        dec.handle_input(garbage);
        assert!(dec.poll_message().is_err(), "{garbage:?}");
    }
}

#[test]
fn a_request_with_a_wrong_magic_or_trailing_bytes_is_refused() {
    let mut bytes = encoded(&[request()]).to_vec();
    bytes[5] = b'X';
    let mut dec = RelayDecoder::new(1024);
    dec.handle_input(&bytes);
    assert_eq!(dec.poll_message(), Err(FramingError::BadMagic));

    let mut bytes = encoded(&[request()]).to_vec();
    bytes.push(0);
    let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) + 1;
    bytes[1..5].copy_from_slice(&len.to_be_bytes());
    let mut dec = RelayDecoder::new(1024);
    dec.handle_input(&bytes);
    assert!(matches!(dec.poll_message(), Err(FramingError::Malformed { .. })));
}

#[test]
fn the_encoder_refuses_fields_the_decoder_would_refuse() {
    let long = RelayMessage::Request(RelayRequest {
        channel: "x".repeat(MAX_NAME_LEN + 1),
        rendition: "source".into(),
        edge_id: "e".into(),
        token: "t".into(),
    });
    let mut out = BytesMut::new();
    assert!(matches!(encode(&long, &mut out), Err(FramingError::FieldTooLong { field: "channel", .. })));
    assert!(out.is_empty());
}

fn arb_name(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>(), 0..max).prop_map(|cs| {
        let mut s: String = cs.into_iter().collect();
        while s.len() > 64 {
            s.pop();
        }
        s
    })
}

fn arb_message() -> impl Strategy<Value = RelayMessage> {
    prop_oneof![
        (arb_name(20), arb_name(10), arb_name(20), arb_name(40)).prop_map(|(channel, rendition, edge_id, token)| {
            RelayMessage::Request(RelayRequest { channel, rendition, edge_id, token })
        }),
        (any::<bool>(), any::<bool>(), arb_name(20), arb_name(20)).prop_map(|(has_video, has_audio, channel, origin_id)| {
            RelayMessage::Header(StreamHeader { has_video, has_audio, channel, origin_id })
        }),
        (prop_oneof![Just(RelayFrameKind::Audio), Just(RelayFrameKind::Video), Just(RelayFrameKind::Metadata)], any::<u64>(), proptest::collection::vec(any::<u8>(), 0..2000))
            .prop_map(|(kind, dts, p)| RelayMessage::Frame(RelayFrame { kind, dts, payload: Bytes::from(p) })),
        (prop_oneof![Just(RefusalCode::Unauthorized), Just(RefusalCode::NotLive), Just(RefusalCode::BadRequest), Just(RefusalCode::Unavailable)], arb_name(60))
            .prop_map(|(code, reason)| RelayMessage::Refusal(Refusal { code, reason })),
    ]
}

proptest! {
    #[test]
    fn any_message_sequence_round_trips_whatever_the_split(msgs in proptest::collection::vec(arb_message(), 0..8), cuts in proptest::collection::vec(any::<usize>(), 0..6)) {
        let bytes = encoded(&msgs);
        let mut points: Vec<usize> = cuts.iter().map(|c| if bytes.is_empty() { 0 } else { c % bytes.len() }).collect();
        points.push(0);
        points.push(bytes.len());
        points.sort_unstable();
        let mut dec = RelayDecoder::new(4096);
        let mut got = Vec::new();
        for w in points.windows(2) {
            dec.handle_input(&bytes[w[0]..w[1]]);
            got.extend(decode_all(&mut dec).unwrap());
        }
        prop_assert_eq!(got, msgs);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut dec = RelayDecoder::new(256);
        dec.handle_input(&data);
        for _ in 0..64 {
            match dec.poll_message() {
                Ok(Some(_)) => continue,
                _ => break,
            }
        }
    }
}
