//! The whole TS ingest path (aligner, PSI tables, program selection, keyframe
//! scan, switch handling, chunking) on arbitrary bytes in arbitrary pushes,
//! with source restarts in between: never panics, and the ring only ever
//! holds whole packets that start with the sync byte, with every keyframe
//! chunk on a packet boundary.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcast::config::ProgramSelect;
use ringcast::ingest::Intake;
use ringcast::limits::CHUNK_BYTES;
use ringcast::ring::{Cursor, Readable, Ring};
use ringcast::stats::ChannelStats;
use ringcast::wire::ts::{PACKET_BYTES, SYNC_BYTE};
use ringcast_hal::Region;

struct VecRegion(Vec<u8>);

impl Region for VecRegion {
    fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.0
    }
    fn as_slice(&self) -> &[u8] {
        &self.0
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&[mode, split, restarts], bytes)) = data.split_first_chunk::<3>() else {
        return;
    };
    let select = match mode % 4 {
        0 | 1 => ProgramSelect::All,
        2 => ProgramSelect::Number(u16::from(mode >> 2).max(1)),
        _ => ProgramSelect::Service("Service01".into()),
    };
    let mut ring = Ring::new(VecRegion(vec![0; 3 * CHUNK_BYTES]), CHUNK_BYTES / 2);
    let stats = ChannelStats::default();
    let mut intake = Intake::new(select);
    let step = usize::from(split).max(1) * 7;
    for (index, piece) in bytes.chunks(step).enumerate() {
        let now_ms = index as u64 * 40;
        if restarts & (1 << (index % 8)) != 0 && index % 3 == 2 {
            if index % 2 == 0 {
                intake.handle_source_restart(now_ms);
            } else {
                intake.mark_discontinuity(now_ms);
            }
        }
        intake.handle_bytes(now_ms, 50, piece, &mut ring, &stats);
    }
    let start = ring.window_start();
    assert_eq!(start % PACKET_BYTES as u64, 0);
    if let Readable::Data { first, second } = ring.readable(Cursor { position: start }, usize::MAX) {
        for span in core::iter::once(first).chain(second) {
            let bytes = ring.bytes(span);
            assert_eq!(bytes.len() % PACKET_BYTES, 0);
            for packet in bytes.chunks(PACKET_BYTES) {
                assert_eq!(packet[0], SYNC_BYTE);
            }
        }
    }
    if let Some(keyframe) = ring.newest_keyframe() {
        assert_eq!(keyframe.start % PACKET_BYTES as u64, 0);
    }
    let live = ring.live_start();
    assert!(live.position <= ring.head());
});
