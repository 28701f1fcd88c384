#![no_main]
//! The AMF0 depth scan must never panic, and whatever it lets through must
//! not overflow rml_amf0's recursive parser.
use libfuzzer_sys::fuzz_target;
use westream_media::rtmp::guard::scan_amf0;

fuzz_target!(|data: &[u8]| {
    if scan_amf0(data, 16).is_ok() {
        let _ = rml_amf0_parse(data);
    }
});

fn rml_amf0_parse(mut data: &[u8]) -> usize {
    // Reached through the media-server's public re-export of the session
    // crate: deserialize exactly what a session would.
    westream_media::rtmp::guard::amf0_value_count(&mut data)
}
