//! An IGD device description from the LAN: the XML scanner never panics and
//! stops within its event limit, and the description parser never panics
//! and returns only services with absolute control URLs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcast::portmap::{desc, httpc, xml};

fuzz_target!(|data: &[u8]| {
    let mut scanner = xml::Scanner::new(data);
    let mut events = 0usize;
    let mut out = [0u8; 64];
    while let Some(event) = scanner.next() {
        events += 1;
        if let xml::Event::Text(text) = event {
            let trimmed = xml::trim(text);
            assert!(trimmed.len() <= text.len());
            if let Some(length) = xml::unescape(text, &mut out) {
                assert!(length <= out.len());
            }
        }
        assert!(scanner.depth() <= xml::DEPTH_MAX);
    }
    assert!(events <= xml::EVENTS_MAX);

    let Some(location) = httpc::parse_http_url("http://192.168.1.1:5000/rootDesc.xml") else {
        return;
    };
    if let Ok(description) = desc::parse_description(data, &location) {
        assert!(!description.services.is_empty());
        for service in &description.services {
            assert!(service.control.path.starts_with('/'));
            assert!(service.version >= 1);
        }
    }
});
