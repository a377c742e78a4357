//! SSDP datagrams from the LAN: none of the three parsers panics, and what
//! they return is borrowed from the datagram and within the documented
//! bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcast::wire::ssdp;

fuzz_target!(|data: &[u8]| {
    if let Some(response) = ssdp::parse_search_response(data) {
        assert!(!response.location.is_empty());
        let _ = (response.st, response.usn, response.max_age_s);
    }
    if let Some(request) = ssdp::parse_search_request(data) {
        assert!((ssdp::MX_MIN_S..=ssdp::MX_MAX_S).contains(&request.mx));
        assert!(!request.st.is_empty());
        let _ = (request.man_discover, request.user_agent);
    }
    if let Some(notify) = ssdp::parse_notify(data) {
        assert!(!notify.nt.is_empty() && !notify.nts.is_empty() && !notify.usn.is_empty());
        let _ = (notify.location, notify.max_age_s);
    }
});
