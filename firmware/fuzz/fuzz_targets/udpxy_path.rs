//! udpxy/msd_lite request paths from players: parsing never panics, and an
//! accepted path names a multicast group and a non-zero port.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcast::wire::udpxy;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = core::str::from_utf8(data) else {
        return;
    };
    if let Ok(Some(target)) = udpxy::parse_path(path) {
        assert!(target.group.is_multicast());
        assert_ne!(target.port, 0);
    }
});
