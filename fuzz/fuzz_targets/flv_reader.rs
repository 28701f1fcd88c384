#![no_main]
use libfuzzer_sys::fuzz_target;
use westream_media::media::flv::FlvReader;

fuzz_target!(|data: &[u8]| {
    let mut reader = FlvReader::new(1 << 20);
    reader.push(data);
    while let Ok(Some(_)) = reader.next_tag() {}
});
