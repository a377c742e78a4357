//! The record store through its public API: errors (full, oversized, bad
//! names, newer format, exhausted sequence, too small or malformed flash),
//! migration from format 1, damage (bit flips and truncation: the store
//! loads an earlier committed state or starts empty, never anything else),
//! the documented layout in golden bytes, the wear budget over a simulated
//! month, and the two Linux flashes over real files.

use std::collections::BTreeMap;

use ringcast_hal::sim::{SimError, SimFlash};
use ringcast_hal::store::{
    crc32, erases_per_block_max, geometry_for, OpenReport, RecordStore, SavePolicy, Saver,
    StoreError, StoreLimits, DAY_MS, FORMAT_VERSION,
};
use ringcast_hal::{Flash, FlashGeometry, Rng, XorShift};

const LIMITS: StoreLimits = StoreLimits {
    records_max: 4,
    value_bytes_max: 100,
};

const GEOMETRY: FlashGeometry = FlashGeometry {
    block_bytes: 1024,
    page_bytes: 128,
    blocks: 4,
};

type State = BTreeMap<String, Vec<u8>>;

fn state_of<F: Flash>(store: &RecordStore<F>) -> State {
    store
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_vec()))
        .collect()
}

fn open(flash: SimFlash) -> (RecordStore<SimFlash>, OpenReport) {
    RecordStore::open(flash, LIMITS).expect("the store opens")
}

/// Commits a few states and returns the flash and every committed state.
fn history() -> (SimFlash, Vec<State>) {
    let (mut store, _) = open(SimFlash::new(GEOMETRY));
    let mut states = Vec::new();
    for round in 0..12u8 {
        store.put("node_id", &[7; 32]).expect("fits");
        store.put("counter", &[round]).expect("fits");
        let cache = vec![round; usize::from(round) * 8];
        store.put("peer_cache", &cache).expect("fits");
        if round % 3 == 0 {
            store.remove("peer_cache");
        }
        store.commit().expect("commits");
        states.push(state_of(&store));
    }
    (store.into_flash(), states)
}

/// Offsets and sequences of every intact-looking format-2 header.
fn copies(image: &[u8], page_bytes: usize) -> Vec<(usize, u64)> {
    let mut found = Vec::new();
    for (index, page) in image.chunks(page_bytes).enumerate() {
        if page[..4] == *b"rcST" && page[4..6] == FORMAT_VERSION.to_le_bytes() {
            let sequence = u64::from_le_bytes(page[8..16].try_into().expect("8 bytes"));
            found.push((index * page_bytes, sequence));
        }
    }
    found.sort_by_key(|&(_, sequence)| sequence);
    found
}

#[test]
fn a_full_store_and_an_oversized_record_are_errors() {
    let limits = StoreLimits {
        records_max: 2,
        value_bytes_max: 8,
    };
    let (mut store, _) = RecordStore::open(SimFlash::new(GEOMETRY), limits).expect("opens");
    store.put("a", b"1").expect("fits");
    store.put("b", b"12345678").expect("fits");
    let full = store.put("c", b"1").expect_err("full");
    assert!(matches!(full, StoreError::Full { records_max: 2 }));
    assert_eq!(full.to_string(), "the store is full (at most 2 records)");
    let large = store.put("a", b"123456789").expect_err("too large");
    assert!(matches!(large, StoreError::TooLarge { bytes: 9, max: 8 }));
    assert_eq!(
        large.to_string(),
        "a 9-byte record is over the 8-byte limit"
    );
    // A postcard slice: a two-byte length, then the bytes.
    let large = store.put_as("a", &[0u8; 300][..]).expect_err("too large");
    assert!(matches!(large, StoreError::TooLarge { bytes: 302, max: 8 }));
    // Nothing changed: the failed puts left the staged records alone.
    assert_eq!(store.get("a"), Some(&b"1"[..]));
    assert!(store.remove("b"));
    store.put("c", b"1").expect("room again");
}

#[test]
fn bad_names_are_errors() {
    let (mut store, _) = open(SimFlash::new(GEOMETRY));
    for name in [
        "",
        "seventeen_chars_a",
        "with space",
        "tab\t",
        "née",
        "\u{7f}",
    ] {
        let error = store.put(name, b"x").expect_err(name);
        assert!(matches!(error, StoreError::BadName), "{name:?}");
        assert!(matches!(store.put_as(name, &1u8), Err(StoreError::BadName)));
        assert_eq!(store.get(name), None);
    }
    store.put("sixteen_chars_ab", b"x").expect("16 is allowed");
    store
        .put("a.b-c_d/e:f~!", b"x")
        .expect("punctuation is allowed");
    assert!(!store.is_dirty() || store.commit().is_ok());
}

#[test]
fn a_newer_format_is_refused_and_left_untouched() {
    let (mut flash, _) = history();
    // A newer ringcast's copy at the start of the last page.
    let at = flash.image().len() - GEOMETRY.page_bytes as usize;
    assert!(flash.image()[at..].iter().all(|&byte| byte == 0xFF));
    let mut preamble = b"rcST".to_vec();
    preamble.extend(3u16.to_le_bytes());
    preamble.extend((!3u16).to_le_bytes());
    flash.image_mut()[at..at + 8].copy_from_slice(&preamble);
    let image = flash.image().to_vec();
    let (ops, erases) = (flash.ops(), flash.erase_counts().to_vec());
    let error = RecordStore::open(&mut flash, LIMITS).expect_err("newer");
    assert!(matches!(
        error,
        StoreError::NewerFormat {
            found: 3,
            supported: 2
        }
    ));
    assert!(error.to_string().contains("newer ringcast (store format 3"));
    assert_eq!(flash.image(), &image[..]);
    assert_eq!((flash.ops(), flash.erase_counts()), (ops, &erases[..]));
    assert_eq!(flash.syncs(), 12);
    // A preamble whose version check fails is only damage.
    flash.image_mut()[at + 7] ^= 0x01;
    let (_, report) = open(flash);
    assert!(matches!(report, OpenReport::Loaded { sequence: 12 }));
}

/// A format-1 bank as the module documentation describes it.
fn v1_bank(sequence: u32, records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut payload = vec![records.len() as u8];
    for (name, value) in records {
        payload.push(name.len() as u8);
        payload.extend(name.as_bytes());
        payload.extend((value.len() as u16).to_le_bytes());
        payload.extend(*value);
    }
    let mut bank = b"rcST".to_vec();
    bank.extend(1u16.to_le_bytes());
    bank.extend((!1u16).to_le_bytes());
    bank.extend(sequence.to_le_bytes());
    bank.extend((payload.len() as u32).to_le_bytes());
    let mut covered = bank.clone();
    covered.extend(&payload);
    bank.extend(crc32(&covered).to_le_bytes());
    bank.extend(payload);
    bank
}

fn v1_flash(a: &[u8], b: &[u8]) -> SimFlash {
    let mut flash = SimFlash::new(GEOMETRY);
    let half = (GEOMETRY.blocks / 2 * GEOMETRY.block_bytes) as usize;
    flash.image_mut()[..a.len()].copy_from_slice(a);
    flash.image_mut()[half..half + b.len()].copy_from_slice(b);
    flash
}

#[test]
fn format_1_is_migrated() {
    let older = v1_bank(4, &[("node_id", &[1; 32]), ("name", b"old")]);
    let newer = v1_bank(5, &[("node_id", &[1; 32]), ("name", b"new box")]);
    let expected: State = [
        ("name".to_string(), b"new box".to_vec()),
        ("node_id".to_string(), vec![1; 32]),
    ]
    .into();
    for flash in [v1_flash(&older, &newer), v1_flash(&newer, &older)] {
        let (mut store, report) = open(flash);
        assert_eq!(report, OpenReport::Migrated { from_version: 1 });
        assert_eq!(state_of(&store), expected);
        assert!(store.is_dirty());
        store.commit().expect("commits");
        assert_eq!(store.sequence(), 6);
        let (store, report) = open(store.into_flash());
        assert_eq!(report, OpenReport::Loaded { sequence: 6 });
        assert_eq!(state_of(&store), expected);
    }
    // A damaged newer bank: the older one is migrated.
    let mut damaged = newer.clone();
    damaged[30] ^= 0x10;
    let (store, report) = open(v1_flash(&older, &damaged));
    assert_eq!(report, OpenReport::Migrated { from_version: 1 });
    assert_eq!(store.get("name"), Some(&b"old"[..]));
    // Records that break the current limits make the bank unusable.
    let oversized = v1_bank(9, &[("name", &[0; 101])]);
    let (store, report) = open(v1_flash(&oversized, &[]));
    assert_eq!(report, OpenReport::Damaged);
    assert!(store.is_empty());
}

#[test]
fn a_cut_during_migration_keeps_format_1() {
    let older = v1_bank(4, &[("node_id", &[1; 32]), ("name", b"old")]);
    let newer = v1_bank(5, &[("node_id", &[1; 32]), ("name", b"new box")]);
    for banks in [[&older, &newer], [&newer, &older]] {
        let (mut store, _) = open(v1_flash(banks[0], banks[1]));
        let expected = state_of(&store);
        store.commit().expect("commits");
        let ops = store.flash().ops();
        for cut in 0..ops {
            for bytes in [None, Some(1), Some(64)] {
                let mut flash = v1_flash(banks[0], banks[1]);
                match bytes {
                    None => flash.cut_power_after_ops(cut),
                    Some(bytes) => flash.cut_power_mid_page(cut, bytes),
                }
                let (mut store, _) = open(flash);
                assert!(store.commit().is_err(), "cut {cut}");
                let mut flash = store.into_flash();
                flash.reboot();
                let (mut store, report) = open(flash);
                assert_eq!(
                    report,
                    OpenReport::Migrated { from_version: 1 },
                    "cut {cut}"
                );
                assert_eq!(state_of(&store), expected, "cut {cut}");
                store.commit().expect("power is back");
                let (store, report) = open(store.into_flash());
                assert!(matches!(report, OpenReport::Loaded { .. }));
                assert_eq!(state_of(&store), expected);
            }
        }
    }
}

#[test]
fn a_damaged_newest_copy_falls_back_to_the_previous_one() {
    let (flash, states) = history();
    let page_bytes = GEOMETRY.page_bytes as usize;
    let found = copies(flash.image(), page_bytes);
    let &(newest, sequence) = found.last().expect("copies");
    assert_eq!(sequence, 12);
    // A flipped payload bit: the header survives, so open knows a newer
    // copy was lost.
    let mut payload_flip = flash.clone();
    payload_flip.image_mut()[newest + 40] ^= 0x04;
    let (store, report) = open(payload_flip);
    assert_eq!(report, OpenReport::RecoveredOlder { sequence: 11 });
    assert_eq!(state_of(&store), states[10]);
    // A flipped header bit: the copy is as good as never written.
    let mut header_flip = flash.clone();
    header_flip.image_mut()[newest + 9] ^= 0x80;
    let (mut store, report) = open(header_flip);
    assert_eq!(report, OpenReport::Loaded { sequence: 11 });
    assert_eq!(state_of(&store), states[10]);
    // The next commit must not reuse sequence 12 of the damaged copy.
    store.put("counter", b"x").expect("fits");
    store.commit().expect("commits");
    assert_eq!(store.sequence(), 12);
    // Every copy's payload damaged: the store starts empty and can be
    // written again, above every sequence its headers still show.
    let mut all = flash.clone();
    for &(offset, _) in &found {
        all.image_mut()[offset + 40] ^= 0x01;
    }
    let (mut store, report) = open(all);
    assert_eq!(report, OpenReport::Damaged);
    assert!(store.is_empty());
    store.put("node_id", &[9; 32]).expect("fits");
    store.commit().expect("writes over the damage");
    assert_eq!(store.sequence(), 13);
    let (store, report) = open(store.into_flash());
    assert_eq!(report, OpenReport::Loaded { sequence: 13 });
    assert_eq!(store.get("node_id"), Some(&[9; 32][..]));
}

/// Checks that a damaged flash opens to an earlier committed state or to
/// nothing, and that it can be written and read back afterwards.
fn check_damaged(flash: SimFlash, states: &[State], label: &str) {
    let (mut store, report) = match RecordStore::open(flash, LIMITS) {
        Ok(opened) => opened,
        Err(error) => panic!("{label}: {error}"),
    };
    let found = state_of(&store);
    assert!(
        found.is_empty() || states.contains(&found),
        "{label}: {report:?} {found:?}"
    );
    if found.is_empty() {
        assert!(
            matches!(report, OpenReport::Damaged | OpenReport::Fresh),
            "{label}: {report:?}"
        );
    }
    store.put("after", b"damage").expect("fits");
    store.commit().expect("commits over the damage");
    let expected = state_of(&store);
    let (store, report) = open(store.into_flash());
    assert!(matches!(report, OpenReport::Loaded { .. }), "{label}");
    assert_eq!(state_of(&store), expected, "{label}");
}

#[test]
fn random_bit_flips_load_an_earlier_state_or_nothing() {
    let (flash, states) = history();
    let mut random = XorShift::new(7);
    let length = flash.image().len();
    for trial in 0..500 {
        let mut damaged = flash.clone();
        let flips = 1 + random.next_u32() % 16;
        for _ in 0..flips {
            let bit = random.next_u32() as usize % (length * 8);
            damaged.image_mut()[bit / 8] ^= 1 << (bit % 8);
        }
        check_damaged(damaged, &states, &format!("trial {trial}"));
    }
}

#[test]
fn truncation_loads_an_earlier_state_or_nothing() {
    let (flash, states) = history();
    // A truncated file reads as erased past its end.
    for end in (0..flash.image().len()).step_by(37) {
        let mut truncated = flash.clone();
        truncated.image_mut()[end..].fill(0xFF);
        check_damaged(truncated, &states, &format!("truncated at {end}"));
    }
}

/// A format-2 copy of one page, built from the module documentation.
fn v2_copy(sequence: u64, records: &[(&str, u64, &[u8])], page_bytes: usize) -> Vec<u8> {
    let mut payload = Vec::new();
    for (name, changed, value) in records {
        let start = payload.len();
        payload.push(name.len() as u8);
        payload.extend(name.as_bytes());
        assert!(*changed < 128 && value.len() < 128, "one-byte varints");
        payload.push(*changed as u8);
        payload.push(value.len() as u8);
        payload.extend(*value);
        let crc = crc32(&payload[start..]);
        payload.extend(crc.to_le_bytes());
    }
    let mut copy = b"rcST".to_vec();
    copy.extend(2u16.to_le_bytes());
    copy.extend((!2u16).to_le_bytes());
    copy.extend(sequence.to_le_bytes());
    copy.extend((payload.len() as u32).to_le_bytes());
    copy.extend((records.len() as u16).to_le_bytes());
    copy.extend([0, 0]);
    copy.extend(crc32(&payload).to_le_bytes());
    let crc = crc32(&copy);
    copy.extend(crc.to_le_bytes());
    copy.extend(payload);
    assert!(copy.len() <= page_bytes, "one page");
    copy.resize(page_bytes, 0xFF);
    copy
}

#[test]
fn the_layout_matches_the_documentation() {
    let (mut store, _) = open(SimFlash::new(GEOMETRY));
    store.put("id", &[1, 2, 3]).expect("fits");
    store.put("name", b"box").expect("fits");
    store.commit().expect("commits");
    let expected = v2_copy(1, &[("id", 1, &[1, 2, 3]), ("name", 1, b"box")], 128);
    assert_eq!(&store.flash().image()[..128], &expected[..]);
    // And a hand-made copy loads.
    let mut flash = SimFlash::new(GEOMETRY);
    let copy = v2_copy(41, &[("x", 40, b"y")], 128);
    flash.image_mut()[256..384].copy_from_slice(&copy);
    let (store, report) = open(flash);
    assert_eq!(report, OpenReport::Loaded { sequence: 41 });
    assert_eq!(store.get("x"), Some(&b"y"[..]));
    assert_eq!(store.sequence_of("x"), Some(40));
}

#[test]
fn an_exhausted_sequence_is_an_error() {
    let mut flash = SimFlash::new(GEOMETRY);
    let copy = v2_copy(u64::MAX, &[("x", 1, b"y")], 128);
    flash.image_mut()[..128].copy_from_slice(&copy);
    let (mut store, report) = open(flash);
    assert_eq!(report, OpenReport::Loaded { sequence: u64::MAX });
    store.put("x", b"z").expect("fits");
    let ops = store.flash().ops();
    assert!(matches!(store.commit(), Err(StoreError::SequenceExhausted)));
    assert_eq!(store.flash().ops(), ops);
}

#[test]
fn records_breaking_the_rules_make_a_copy_invalid() {
    let cases: [&[(&str, u64, &[u8])]; 4] = [
        &[("x", 1, b"a"), ("x", 1, b"b")],
        &[("bad name", 1, b"a")],
        &[("x", 6, b"a")],
        &[("x", 0, b"a")],
    ];
    for records in cases {
        let mut flash = SimFlash::new(GEOMETRY);
        let copy = v2_copy(5, records, 128);
        flash.image_mut()[..128].copy_from_slice(&copy);
        let (store, report) = open(flash);
        assert_eq!(report, OpenReport::Damaged, "{records:?}");
        assert!(store.is_empty());
    }
}

/// A flash that reports a geometry of its choosing.
struct Shaped(SimFlash, FlashGeometry);

impl Flash for Shaped {
    type Error = SimError;
    fn geometry(&self) -> FlashGeometry {
        self.1
    }
    fn read(&mut self, offset: u32, buffer: &mut [u8]) -> Result<(), SimError> {
        self.0.read(offset, buffer)
    }
    fn program(&mut self, offset: u32, data: &[u8]) -> Result<(), SimError> {
        self.0.program(offset, data)
    }
    fn erase(&mut self, block: u32) -> Result<(), SimError> {
        self.0.erase(block)
    }
    fn sync(&mut self) -> Result<(), SimError> {
        self.0.sync()
    }
}

#[test]
fn a_flash_too_small_or_malformed_is_an_error() {
    let one_block = FlashGeometry {
        blocks: 1,
        ..GEOMETRY
    };
    let error = RecordStore::open(SimFlash::new(one_block), LIMITS).expect_err("small");
    assert!(matches!(error, StoreError::TooSmall));
    assert_eq!(
        error.to_string(),
        "the flash region is too small for two copies"
    );
    let tiny_pages = FlashGeometry {
        page_bytes: 32,
        ..GEOMETRY
    };
    let error = RecordStore::open(SimFlash::new(tiny_pages), LIMITS).expect_err("small");
    assert!(matches!(error, StoreError::TooSmall));
    let big_limits = StoreLimits {
        records_max: 64,
        value_bytes_max: 1000,
    };
    let error = RecordStore::open(SimFlash::new(GEOMETRY), big_limits).expect_err("small");
    assert!(matches!(error, StoreError::TooSmall));
    for malformed in [
        FlashGeometry {
            block_bytes: 1000,
            ..GEOMETRY
        },
        FlashGeometry {
            page_bytes: 0,
            ..GEOMETRY
        },
        FlashGeometry {
            blocks: 0,
            ..GEOMETRY
        },
    ] {
        let flash = Shaped(SimFlash::new(GEOMETRY), malformed);
        let error = RecordStore::open(flash, LIMITS).expect_err("malformed");
        assert!(matches!(error, StoreError::BadGeometry), "{malformed:?}");
    }
}

#[test]
fn flash_errors_are_passed_on_and_the_store_recovers() {
    let (mut store, _) = open(SimFlash::new(GEOMETRY));
    store.put("a", b"1").expect("fits");
    store.flash_mut().cut_power_after_ops(0);
    let error = store.commit().expect_err("no power");
    assert!(matches!(error, StoreError::Flash(SimError::PowerLost)));
    assert_eq!(
        error.to_string(),
        "flash error: power lost during a flash write"
    );
    assert!(store.is_dirty());
    store.flash_mut().reboot();
    store.commit().expect("power is back");
    let (store, _) = open(store.into_flash());
    assert_eq!(store.get("a"), Some(&b"1"[..]));
}

/// Records of a node: what changes rarely and what changes all the time.
struct Load {
    peer_cache: Vec<u8>,
    dht: Vec<u8>,
}

/// Runs `days` of virtual time through a [`Saver`] at default settings:
/// the peer cache changes every `volatile_step_ms`, the DHT table every ten
/// steps, and a durable setting every `durable_every_ms`. Returns the
/// commits made and the flash.
fn simulate(
    geometry: FlashGeometry,
    limits: StoreLimits,
    days: u64,
    volatile_step_ms: u64,
    durable_every_ms: u64,
) -> (u64, SimFlash) {
    let (mut store, _) = RecordStore::open(SimFlash::new(geometry), limits).expect("opens");
    store.put("node_id", &[1; 32]).expect("fits");
    store.put("dlna_uuid", &[2; 16]).expect("fits");
    store
        .put("friendly_name", b"ringcast on box")
        .expect("fits");
    let mut saver = Saver::new(SavePolicy::default(), 0);
    saver.note_change(true);
    let mut load = Load {
        peer_cache: vec![0; limits.value_bytes_max],
        dht: vec![0; limits.value_bytes_max * 3 / 4],
    };
    let mut commits = 0;
    let mut step = 0u64;
    let mut now_ms = 0;
    while now_ms < days * DAY_MS {
        load.peer_cache[..8].copy_from_slice(&step.to_le_bytes());
        store.put("peer_cache", &load.peer_cache).expect("fits");
        if step.is_multiple_of(10) {
            load.dht[..8].copy_from_slice(&step.to_le_bytes());
            store.put("dht", &load.dht).expect("fits");
        }
        saver.note_change(false);
        if now_ms.is_multiple_of(durable_every_ms) {
            store
                .put_as("settings", &(now_ms / durable_every_ms))
                .expect("fits");
            saver.note_change(true);
        }
        if saver.commit_due(now_ms) {
            store.commit().expect("commits");
            commits += 1;
        }
        step += 1;
        now_ms += volatile_step_ms;
    }
    if store.is_dirty() {
        store.commit().expect("commits");
        commits += 1;
    }
    let (reopened, _) = RecordStore::open(store.flash().clone(), limits).expect("opens");
    assert_eq!(state_of(&reopened), state_of(&store));
    (commits, store.into_flash())
}

/// The limits the daemon opens its store with.
const DAEMON_LIMITS: StoreLimits = StoreLimits {
    records_max: 32,
    value_bytes_max: 1024,
};

fn check_wear(geometry: FlashGeometry, volatile_step_ms: u64, durable_every_ms: u64) -> u64 {
    let days = 30;
    let (commits, flash) = simulate(
        geometry,
        DAEMON_LIMITS,
        days,
        volatile_step_ms,
        durable_every_ms,
    );
    let (store, _) = RecordStore::open(flash.clone(), DAEMON_LIMITS).expect("opens");
    let copies = store.copies();
    let policy = SavePolicy::default();
    let commits_max = policy.commits_max(days * DAY_MS);
    let budget = erases_per_block_max(commits_max, copies);
    let worst = *flash.erase_counts().iter().max().expect("blocks");
    println!(
        "{geometry:?}, {copies} copies: {commits} commits in {days} days (bound {commits_max}); \
         most erases of one block {worst}, budget {budget}"
    );
    assert!(commits <= commits_max);
    assert!(worst <= budget, "{worst} erases > budget {budget}");
    assert!(worst <= erases_per_block_max(commits, copies));
    worst
}

#[test]
fn a_month_at_default_settings_stays_within_the_erase_budget() {
    let minute_ms = 60 * 1000;
    // The daemon's state file: two 64 KiB blocks of 4 KiB pages.
    let state_file = FlashGeometry {
        block_bytes: 64 * 1024,
        page_bytes: 4096,
        blocks: 2,
    };
    // A raw NOR partition laid out for eight copies.
    let nor = geometry_for(DAEMON_LIMITS, 64 * 1024, 256, 8).expect("fits");
    for geometry in [state_file, nor] {
        // Realistic worst case: the peer cache changes every second, a
        // setting once a day.
        let worst = check_wear(geometry, 1000, DAY_MS);
        assert!(worst <= erases_per_block_max(30 * 26, 2));
        // Runaway: a durable change every minute.
        check_wear(geometry, minute_ms, minute_ms);
    }
}
