//! A chunked body from an HTTP source, fed in arbitrary pieces: the decoder
//! never panics, never claims to consume more than it was given, and never
//! emits more body bytes than it consumed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcast::wire::http::ChunkedDecoder;

fuzz_target!(|data: &[u8]| {
    let Some((&split_seed, bytes)) = data.split_first() else {
        return;
    };
    let mut decoder = ChunkedDecoder::default();
    let mut consumed_total = 0usize;
    let mut emitted_total = 0usize;
    for piece in bytes.chunks(usize::from(split_seed).max(1)) {
        let mut offset = 0;
        while offset < piece.len() && !decoder.is_done() {
            match decoder.decode(&piece[offset..], &mut |body: &[u8]| {
                emitted_total += body.len()
            }) {
                Ok(0) | Err(_) => return,
                Ok(used) => {
                    assert!(used <= piece.len() - offset);
                    offset += used;
                }
            }
        }
        consumed_total += offset;
    }
    assert!(emitted_total <= consumed_total);
});
