//! An IGD's HTTP response to a SOAP request: response framing in the read
//! buffer (complete or cut by EOF) never panics and its body range stays in
//! the buffer, and reading the body as the reply to every action never
//! panics.
#![no_main]

use core::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use ringcast::portmap::{httpc, soap};

const BUFFER_BYTES: usize = 4096;

fuzz_target!(|data: &[u8]| {
    for eof in [false, true] {
        let mut buf = [0u8; BUFFER_BYTES];
        let filled = data.len().min(BUFFER_BYTES);
        buf[..filled].copy_from_slice(&data[..filled]);
        if let Ok(httpc::Parsed::Complete { status, body }) =
            httpc::parse_response(&mut buf, filled, eof)
        {
            assert!(body.start <= body.end && body.end <= filled);
            read_replies(status, &buf[body]);
        }
    }
    // The body alone, as if framing had passed it through.
    read_replies(200, data);
    read_replies(500, data);
});

fn read_replies(status: u16, body: &[u8]) {
    let key = (7144, soap::Protocol::Tcp);
    let (external_port, protocol) = key;
    let internal_client = Ipv4Addr::new(192, 168, 1, 10);
    let actions = [
        soap::Action::GetStatusInfo,
        soap::Action::GetExternalIPAddress,
        soap::Action::AddPortMapping {
            external_port,
            protocol,
            internal_port: 7144,
            internal_client,
            description: "ringcast",
            lease_s: 3600,
        },
        soap::Action::AddAnyPortMapping {
            external_port,
            protocol,
            internal_port: 7144,
            internal_client,
            description: "ringcast",
            lease_s: 3600,
        },
        soap::Action::GetSpecificPortMappingEntry {
            external_port,
            protocol,
        },
        soap::Action::DeletePortMapping {
            external_port,
            protocol,
        },
    ];
    for action in actions {
        if let Ok(soap::Reply::Fault { code }) = soap::parse_response(&action, status, body) {
            let _ = soap::error_meaning(code);
        }
    }
}
