//! The TS aligner and packet view on arbitrary bytes, split into arbitrary
//! pushes: never panics, only ever emits whole packets that start with the
//! sync byte, and accounts for every input byte (emitted, discarded or held).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcast::wire::ts::{Aligner, Packet, PACKET_BYTES, SYNC_BYTE};

fuzz_target!(|data: &[u8]| {
    let Some((&split_seed, bytes)) = data.split_first() else {
        return;
    };
    let mut aligner = Aligner::default();
    let mut emitted = 0u64;
    let step = usize::from(split_seed).max(1);
    for piece in bytes.chunks(step) {
        aligner.push(piece, &mut |packets: &[u8]| {
            assert_eq!(packets.len() % PACKET_BYTES, 0);
            for packet in packets.chunks(PACKET_BYTES) {
                assert_eq!(packet[0], SYNC_BYTE);
                let view = Packet::new_checked(packet);
                if let Ok(view) = view {
                    let _ = (
                        view.pid(),
                        view.pcr(),
                        view.random_access(),
                        view.payload().len(),
                    );
                }
            }
            emitted += packets.len() as u64;
        });
    }
    let accounted = emitted + aligner.garbage_bytes() + aligner.carried_bytes() as u64;
    assert_eq!(accounted, bytes.len() as u64);
});
