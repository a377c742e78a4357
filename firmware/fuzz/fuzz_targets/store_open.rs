//! The record store's open path on damaged flash: the input either is the
//! flash image itself, or damages (bit flips, byte writes, truncation) a
//! valid format-2 or format-1 image built from a seed. Opening must never
//! panic and must only fail for a newer format, leaving the flash as it was.
//! What it loads must respect the limits; the fuzz input then stages a few
//! changes and commits, possibly with a power cut at a chosen flash op. A
//! successful commit must read back exactly the staged records; a cut one
//! must read back the records before or after it, whole.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use ringcast_hal::sim::{SimError, SimFlash};
use ringcast_hal::store::{crc32, OpenReport, RecordStore, StoreError, StoreLimits};
use ringcast_hal::{Flash, FlashGeometry};

const LIMITS: StoreLimits = StoreLimits {
    records_max: 6,
    value_bytes_max: 96,
};

/// Copies take two blocks each, four copies in the ring.
const BIG_COPIES: FlashGeometry = FlashGeometry {
    block_bytes: 512,
    page_bytes: 64,
    blocks: 8,
};

/// Two copies share each block, two blocks.
const SMALL_COPIES: FlashGeometry = FlashGeometry {
    block_bytes: 2048,
    page_bytes: 64,
    blocks: 2,
};

const NAMES: [&str; 8] = [
    "node_id",
    "dlna_uuid",
    "name",
    "peer_cache",
    "dht",
    "pcp_nonce",
    "settings",
    "x",
];

type State = BTreeMap<String, Vec<u8>>;

/// Reads fuzz bytes front to back; zeros once they run out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&first, rest)) => {
                self.0 = rest;
                first
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }
}

fn state_of<F: Flash>(store: &RecordStore<F>) -> State {
    store
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_vec()))
        .collect()
}

/// A valid format-2 image: a few commits of records derived from `seed`.
fn valid_image(geometry: FlashGeometry, seed: u8) -> SimFlash {
    let (mut store, _) = RecordStore::open(SimFlash::new(geometry), LIMITS).expect("fresh");
    for round in 0..=seed % 5 {
        for (index, name) in NAMES.iter().take(usize::from(seed % 6) + 1).enumerate() {
            let length = (usize::from(seed) * 7 + index * 13 + usize::from(round)) % 97;
            let value = vec![seed ^ round ^ index as u8; length];
            store.put(name, &value).expect("within the limits");
        }
        store.commit().expect("no cut");
    }
    store.into_flash()
}

/// A format-1 image (see the store's documentation) in bank A or B.
fn v1_image(geometry: FlashGeometry, seed: u8) -> SimFlash {
    let mut payload = vec![3u8];
    for name in &NAMES[..3] {
        payload.push(name.len() as u8);
        payload.extend(name.as_bytes());
        let value = vec![seed; usize::from(seed % 40)];
        payload.extend((value.len() as u16).to_le_bytes());
        payload.extend(value);
    }
    let mut bank = b"rcST".to_vec();
    bank.extend(1u16.to_le_bytes());
    bank.extend((!1u16).to_le_bytes());
    bank.extend(u32::from(seed).to_le_bytes());
    bank.extend((payload.len() as u32).to_le_bytes());
    let mut covered = bank.clone();
    covered.extend(&payload);
    bank.extend(crc32(&covered).to_le_bytes());
    bank.extend(payload);
    let mut flash = SimFlash::new(geometry);
    let at = if seed % 2 == 0 {
        0
    } else {
        (geometry.blocks / 2 * geometry.block_bytes) as usize
    };
    flash.image_mut()[at..at + bank.len()].copy_from_slice(&bank);
    flash
}

/// Damages `flash` as the input says, until the input runs out.
fn damage(flash: &mut SimFlash, input: &mut Input<'_>, count: u8) {
    let length = flash.image().len();
    for _ in 0..count {
        let kind = input.byte();
        let at = usize::from(input.u16()) % length;
        let image = flash.image_mut();
        match kind % 4 {
            0 => image[at] ^= 1 << (kind >> 5),
            1 => image[at] = input.byte(),
            2 => image[at..].fill(0xFF),
            _ => image[at] = 0,
        }
    }
}

/// The flash the input describes.
fn flash_from(input: &mut Input<'_>) -> SimFlash {
    let mode = input.byte();
    let geometry = if mode & 1 == 0 {
        BIG_COPIES
    } else {
        SMALL_COPIES
    };
    match (mode >> 1) % 3 {
        0 => {
            let mut flash = SimFlash::new(geometry);
            let take = input.0.len().min(flash.image().len());
            flash.image_mut()[..take].copy_from_slice(&input.0[..take]);
            input.0 = &input.0[take..];
            flash
        }
        1 => {
            let mut flash = valid_image(geometry, input.byte());
            let count = input.byte() % 8;
            damage(&mut flash, input, count);
            flash
        }
        _ => {
            let mut flash = v1_image(geometry, input.byte());
            let count = input.byte() % 8;
            damage(&mut flash, input, count);
            flash
        }
    }
}

/// What was loaded must be consistent and within the limits.
fn check_loaded<F: Flash>(store: &RecordStore<F>, report: OpenReport, image: &[u8]) {
    assert!(store.len() <= LIMITS.records_max);
    for (name, value) in store.iter() {
        assert!((1..=16).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_graphic()));
        assert!(value.len() <= LIMITS.value_bytes_max);
        assert_eq!(store.get(name), Some(value));
    }
    match report {
        OpenReport::Fresh => {
            assert!(image.iter().all(|&byte| byte == 0xFF));
            assert!(store.is_empty());
        }
        OpenReport::Damaged => assert!(store.is_empty()),
        OpenReport::Loaded { sequence } | OpenReport::RecoveredOlder { sequence } => {
            assert_eq!(store.sequence(), sequence);
            assert!(!store.is_dirty());
        }
        OpenReport::Migrated { from_version } => {
            assert_eq!(from_version, 1);
            assert!(store.is_dirty());
        }
    }
}

/// Stages a few changes the input chooses.
fn stage<F: Flash>(store: &mut RecordStore<F>, input: &mut Input<'_>) {
    for _ in 0..input.byte() % 6 {
        let choice = input.byte();
        let name = NAMES[usize::from(choice) % NAMES.len()];
        if choice & 0x80 != 0 {
            store.remove(name);
            continue;
        }
        let length = usize::from(input.byte()) % (LIMITS.value_bytes_max + 8);
        let value = vec![input.byte(); length];
        match store.put(name, &value) {
            Ok(()) => assert_eq!(store.get(name), Some(&value[..])),
            Err(StoreError::TooLarge { .. }) => assert!(length > LIMITS.value_bytes_max),
            Err(StoreError::Full { .. }) => assert_eq!(store.len(), LIMITS.records_max),
            Err(other) => panic!("put: {other}"),
        }
    }
}

fn reopen(flash: &mut SimFlash) -> (RecordStore<&mut SimFlash>, OpenReport) {
    match RecordStore::open(flash, LIMITS) {
        Ok(opened) => opened,
        Err(error) => panic!("reopening what the store wrote: {error}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let mut flash = flash_from(&mut input);
    let image = flash.image().to_vec();
    let ops = flash.ops();
    let (mut store, report) = match RecordStore::open(&mut flash, LIMITS) {
        Ok(opened) => opened,
        Err(StoreError::NewerFormat { found, supported }) => {
            assert!(found > supported);
            assert_eq!(flash.image(), &image[..], "a newer store was changed");
            assert_eq!(flash.ops(), ops);
            return;
        }
        Err(error) => panic!("open: {error}"),
    };
    check_loaded(&store, report, &image);
    let before = state_of(&store);
    stage(&mut store, &mut input);
    let after = state_of(&store);
    let wrote = store.is_dirty();
    let cut = input.byte();
    if cut & 1 == 1 {
        store.flash_mut().cut_power_after_ops(u64::from(cut >> 1));
    }
    let committed = store.commit();
    let sequence = store.sequence();
    drop(store);
    flash.reboot();
    match committed {
        Ok(()) => {
            let (store, report) = reopen(&mut flash);
            assert_eq!(state_of(&store), after, "a commit did not read back");
            if wrote {
                assert_eq!(report, OpenReport::Loaded { sequence });
            }
        }
        Err(StoreError::Flash(SimError::PowerLost)) => {
            // The copy open loaded (or the format-1 bank it migrated, or
            // nothing if it found none) is never touched by a commit.
            let (store, _) = reopen(&mut flash);
            let found = state_of(&store);
            assert!(
                found == after || found == before,
                "a cut left neither state"
            );
        }
        // A crafted copy can hold the last sequence number, or sit across
        // two erase units of a two-unit ring.
        Err(StoreError::SequenceExhausted | StoreError::TooSmall) => {}
        Err(error) => panic!("commit: {error}"),
    }
});
