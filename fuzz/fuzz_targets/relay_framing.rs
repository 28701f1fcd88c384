#![no_main]
//! The relay decoder on arbitrary bytes, fed in two pieces: never a panic,
//! and whatever decodes re-encodes to a message that decodes the same.
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use westream_edge::framing::{encode, RelayDecoder};

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |b| *b as usize).min(data.len());
    let mut dec = RelayDecoder::new(64 * 1024);
    dec.handle_input(&data[..split]);
    let mut msgs = Vec::new();
    while let Ok(Some(m)) = dec.poll_message() {
        msgs.push(m);
    }
    dec.handle_input(&data[split..]);
    while let Ok(Some(m)) = dec.poll_message() {
        msgs.push(m);
    }
    for m in msgs {
        let mut out = BytesMut::new();
        if encode(&m, &mut out).is_ok() {
            let mut again = RelayDecoder::new(64 * 1024);
            again.handle_input(&out);
            assert_eq!(again.poll_message().ok().flatten(), Some(m));
        }
    }
});
