//! HTTP request and response heads from the network: parsing never panics,
//! and a parsed head's length never exceeds the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcast::limits::HTTP_HEADERS_MAX;
use ringcast::wire::http;

fuzz_target!(|data: &[u8]| {
    let mut headers = [httparse::EMPTY_HEADER; HTTP_HEADERS_MAX];
    if let Ok(Some((head, length))) = http::parse_request(data, &mut headers) {
        assert!(length <= data.len());
        let _ = (head.path, head.query, head.header("host"));
        let _ = ringcast::lan::route(head.path);
    }
    let mut headers = [httparse::EMPTY_HEADER; HTTP_HEADERS_MAX];
    if let Ok(Some((head, length))) = http::parse_response(data, &mut headers) {
        assert!(length <= data.len());
        let _ = (head.code, head.chunked, head.content_length);
    }
});
