//! RTP datagrams from the network: the checked view never panics and its
//! payload always lies inside the datagram.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcast::wire::rtp::Packet;

fuzz_target!(|data: &[u8]| {
    if let Ok(packet) = Packet::new_checked(data) {
        let payload = packet.payload();
        assert!(packet.header_len() + packet.padding_len() + payload.len() <= data.len());
        let _ = (packet.sequence_number(), packet.timestamp(), packet.ssrc());
    }
});
