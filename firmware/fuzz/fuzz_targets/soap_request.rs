//! A SOAP control request to the DLNA media server: reading it never panics
//! for either service, with or without a `SOAPACTION` header, an action read
//! belongs to the service asked, and its answer (or its fault) renders into
//! the response buffer as well-formed XML. With the small library here every
//! answer fits, so a failed action is a bug.
//!
//! The first input byte picks the header: none, the input's first line, or
//! one of the real headers (so the fuzzer reaches arguments without having
//! to guess a service type first); the rest is the body. With the byte's top
//! bit set, the body is wrapped in a SOAP envelope, for the same reason.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcast::lan::dlna::{self, Item, Service, SoapFault};
use ringcast::portmap::xml::{Event, Scanner};
use ringcast::wire::SliceWriter;

const RESPONSE_BYTES: usize = ringcast::limits::RESPONSE_BYTES_MAX;

const ITEMS: [Item<'static>; 3] = [
    Item {
        id_index: 0,
        title: "news",
        url: "http://192.168.1.2:8090/channel/news.ts",
    },
    Item {
        id_index: 3,
        title: "a<b>&\"c\"",
        url: "http://192.168.1.2:8090/channel/x.ts?a=1&b=2",
    },
    Item {
        id_index: 31,
        title: "sport",
        url: "http://[fe80::1]:8090/channel/sport.ts",
    },
];

const HEADERS: [&str; 9] = [
    "\"urn:schemas-upnp-org:service:ContentDirectory:1#Browse\"",
    "urn:schemas-upnp-org:service:ContentDirectory:1#GetSystemUpdateID",
    "\"urn:schemas-upnp-org:service:ContentDirectory:1#GetSearchCapabilities\"",
    "\"urn:schemas-upnp-org:service:ContentDirectory:1#GetSortCapabilities\"",
    "\"urn:schemas-upnp-org:service:ContentDirectory:1#X_GetFeatureList\"",
    "\"urn:schemas-upnp-org:service:ConnectionManager:1#GetProtocolInfo\"",
    "\"urn:schemas-upnp-org:service:ConnectionManager:1#GetCurrentConnectionIDs\"",
    "\"urn:schemas-upnp-org:service:ConnectionManager:1#GetCurrentConnectionInfo\"",
    "\"\"",
];

const ENVELOPE_START: &str = "<?xml version=\"1.0\"?><s:Envelope \
xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body>";
const ENVELOPE_END: &str = "</s:Body></s:Envelope>";

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let (header, body) = match usize::from(selector & 0x7f) % (HEADERS.len() + 2) {
        0 => (None, rest),
        1 => match rest.iter().position(|&byte| byte == b'\n') {
            Some(end) => (Some(&rest[..end]), &rest[end + 1..]),
            None => (Some(rest), &rest[rest.len()..]),
        },
        pick => (Some(HEADERS[pick - 2].as_bytes()), rest),
    };
    let wrapped;
    let body = if selector & 0x80 != 0 {
        wrapped = [ENVELOPE_START.as_bytes(), body, ENVELOPE_END.as_bytes()].concat();
        &wrapped[..]
    } else {
        body
    };
    let mut buffer = vec![0u8; RESPONSE_BYTES];
    for service in [Service::ContentDirectory, Service::ConnectionManager] {
        check(&mut buffer, service, header, body);
    }
});

fn check(buffer: &mut [u8], service: Service, header: Option<&[u8]>, body: &[u8]) {
    let library = dlna::slice_library(&ITEMS, 7, "fuzz & <test>");
    let parsed = dlna::parse_request(service, header, body);
    let mut w = SliceWriter::new(buffer);
    let expected_status = match parsed {
        Ok(action) => {
            assert_eq!(action.service(), service);
            match dlna::render_response(&mut w, &action, &library) {
                Ok(()) => {
                    assert_well_formed(w.written());
                    dlna::STATUS_OK
                }
                Err(SoapFault::ActionFailed) => panic!("{action:?}: the answer did not fit"),
                Err(_) => dlna::STATUS_FAULT,
            }
        }
        Err(SoapFault::ActionFailed) => panic!("reading a request cannot run out of buffer"),
        Err(fault) => {
            dlna::render_fault(&mut w, fault).expect("a fault fits");
            assert_well_formed(w.written());
            dlna::STATUS_FAULT
        }
    };
    // The one-call form agrees.
    w.clear();
    let status = dlna::render_control(&mut w, service, header, body, &library);
    assert_eq!(status, Ok(expected_status));
    assert_well_formed(w.written());
}

/// Balanced elements, nothing the scanner refuses, and UTF-8 throughout.
fn assert_well_formed(document: &[u8]) {
    assert!(core::str::from_utf8(document).is_ok());
    let mut scanner = Scanner::new(document);
    let mut open: Vec<&[u8]> = Vec::new();
    for event in scanner.by_ref() {
        match event {
            Event::Start(name) => open.push(name),
            Event::End(name) => assert_eq!(open.pop(), Some(name)),
            Event::Text(_) => {}
        }
    }
    assert!(!scanner.failed() && open.is_empty());
    // A Browse answer's Result is itself a document.
    if let Some(result) = element_text(document, b"Result") {
        let mut scanner = Scanner::new(&result);
        let mut depth = 0usize;
        for event in scanner.by_ref() {
            match event {
                Event::Start(_) => depth += 1,
                Event::End(_) => depth = depth.checked_sub(1).expect("balanced"),
                Event::Text(_) => {}
            }
        }
        assert!(!scanner.failed() && depth == 0);
    }
}

/// The unescaped text of the first element named `name`.
fn element_text(document: &[u8], name: &[u8]) -> Option<Vec<u8>> {
    let mut inside = false;
    let mut text = Vec::new();
    for event in Scanner::new(document) {
        match event {
            Event::Start(local) if local == name => inside = true,
            Event::End(local) if inside && local == name => {
                let mut out = vec![0u8; text.len()];
                let length = ringcast::portmap::xml::unescape(&text, &mut out)
                    .expect("rendered text unescapes");
                out.truncate(length);
                return Some(out);
            }
            Event::Text(raw) if inside => text.extend_from_slice(raw),
            _ => {}
        }
    }
    None
}
