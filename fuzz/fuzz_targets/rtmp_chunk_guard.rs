#![no_main]
//! Any byte stream, split anywhere: the guard returns Ok or an error, never
//! panics, and once it errs the connection would be closed.
use libfuzzer_sys::fuzz_target;
use westream_media::rtmp::guard::{ChunkGuard, GuardConfig};

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let mut guard = ChunkGuard::new(GuardConfig::default());
    for piece in rest.chunks(usize::from(split).max(1)) {
        if guard.inspect(piece).is_err() {
            break;
        }
    }
});
