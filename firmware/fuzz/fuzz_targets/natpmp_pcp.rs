//! NAT-PMP and PCP answers from the gateway's port 5351: both decoders take
//! any datagram without panicking, and what they accept is self-consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcast::portmap::{natpmp, pcp};

fuzz_target!(|data: &[u8]| {
    match natpmp::parse_response(data) {
        Ok(natpmp::Response::Map { .. }) => assert!(data.len() >= natpmp::MAP_RESPONSE_BYTES),
        Ok(natpmp::Response::ExternalAddress { .. }) => {
            assert!(data.len() >= natpmp::EXTERNAL_ADDRESS_RESPONSE_BYTES)
        }
        Err(_) => {}
    }
    let _ = natpmp::is_version_mismatch(data);

    match pcp::parse_response(data) {
        Ok(response) => {
            assert!(data.len() >= pcp::HEADER_BYTES && data.len() <= pcp::MESSAGE_BYTES_MAX);
            assert_eq!(data.len() % 4, 0);
            assert!(response.opcode < 0x80);
            if response.map.is_some() {
                assert_eq!(response.opcode, pcp::OPCODE_MAP);
            }
            if response.is_success() && response.opcode == pcp::OPCODE_MAP {
                assert!(response.map.is_some());
            }
        }
        Err(pcp::PcpError::UnsupportedVersion { server_version }) => {
            assert_ne!(server_version, pcp::VERSION)
        }
        Err(_) => {}
    }
    let _ = pcp::is_version_mismatch(data);
});
