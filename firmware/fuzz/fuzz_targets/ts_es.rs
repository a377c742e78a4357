//! Keyframe detection on arbitrary bytes, for every codec, pushed in pieces
//! of a size taken from the input: never panics, answers `NeedMore` until a
//! decision and the same decision ever after, decides the same way for
//! every split, and the codec lookup accepts any descriptor bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcast::wire::es::{video_codec, KeyframeScan, Verdict, VideoCodec};

/// The last verdict of `bytes` pushed in pieces of `step`.
fn scan(codec: VideoCodec, bytes: &[u8], step: usize) -> Verdict {
    let mut scan = KeyframeScan::new(codec);
    let mut decided = None;
    let mut last = Verdict::NeedMore;
    for piece in bytes.chunks(step) {
        last = scan.push(piece);
        match decided {
            None if last != Verdict::NeedMore => decided = Some(last),
            None => {}
            Some(verdict) => assert_eq!(last, verdict),
        }
    }
    // Nothing pushed, or an empty push after a decision, keeps it.
    assert_eq!(scan.push(&[]), last);
    last
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, bytes)) = data.split_first() else {
        return;
    };
    let _ = video_codec(seed, bytes);
    let step = usize::from(seed).max(1);
    for codec in [VideoCodec::Mpeg2, VideoCodec::H264, VideoCodec::Hevc] {
        let whole = scan(codec, bytes, bytes.len().max(1));
        assert_eq!(scan(codec, bytes, step), whole);
        assert_eq!(scan(codec, bytes, 1), whole);
    }
});
