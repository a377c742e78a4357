//! The TS aligner and packet view on arbitrary bytes, split into arbitrary
//! pushes: never panics, only ever emits whole packets that start with the
//! sync byte (one per call while locked at stride 192 or 204), locks only at
//! strides 188, 192 and 204, carries at most `CARRY_BYTES`, and after every
//! push accounts for every input byte (emitted, discarded, stripped between
//! strided packets, or held).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcast::wire::ts::{
    Aligner, Packet, CARRY_BYTES, M2TS_PACKET_BYTES, PACKET_BYTES, RS_PACKET_BYTES, SYNC_BYTE,
};

fuzz_target!(|data: &[u8]| {
    let Some((&split_seed, bytes)) = data.split_first() else {
        return;
    };
    let mut aligner = Aligner::default();
    let mut emitted = 0u64;
    let mut pushed = 0u64;
    let step = usize::from(split_seed).max(1);
    for piece in bytes.chunks(step) {
        let stride_before = aligner.stride();
        let losses_before = aligner.sync_losses();
        let mut longest_run = 0;
        aligner.push(piece, &mut |packets: &[u8]| {
            assert!(!packets.is_empty());
            assert_eq!(packets.len() % PACKET_BYTES, 0);
            longest_run = longest_run.max(packets.len());
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
        pushed += piece.len() as u64;

        let stride = aligner.stride();
        assert!(matches!(
            stride,
            None | Some(PACKET_BYTES | M2TS_PACKET_BYTES | RS_PACKET_BYTES)
        ));
        assert_eq!(aligner.is_locked(), stride.is_some());
        let stayed_strided = stride.is_some()
            && stride == stride_before
            && aligner.sync_losses() == losses_before
            && stride != Some(PACKET_BYTES);
        if stayed_strided {
            assert!(longest_run <= PACKET_BYTES);
        }
        assert!(aligner.carried_bytes() <= CARRY_BYTES);
        let accounted = emitted
            + aligner.garbage_bytes()
            + aligner.stripped_bytes()
            + aligner.carried_bytes() as u64;
        assert_eq!(accounted, pushed);
    }
});
