//! The record store allocates nothing after `open`: thousands of puts,
//! gets, removals, refused puts and commits (erases, erase checks, power
//! cuts) under a counting global allocator read zero allocations, over the
//! simulated flash and over both Linux flashes.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use ringcast_hal::sim::SimFlash;
use ringcast_hal::store::{RecordStore, SavePolicy, Saver, StoreLimits};
use ringcast_hal::{Flash, FlashGeometry};

/// Counts the allocations of threads that asked to be counted.
struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn note_allocation() {
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
    }
}

// SAFETY: every call is passed straight to the system allocator; counting
// only touches const-initialised thread-locals, which do not allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, size: usize) -> *mut u8 {
        note_allocation();
        // SAFETY: same contract as ours.
        unsafe { System.realloc(pointer, layout, size) }
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(pointer, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `work` and returns how many allocations it made on this thread.
fn allocations_in(work: impl FnOnce()) -> u64 {
    ALLOCATIONS.with(|count| count.set(0));
    COUNTING.with(|counting| counting.set(true));
    work();
    COUNTING.with(|counting| counting.set(false));
    ALLOCATIONS.with(Cell::get)
}

const LIMITS: StoreLimits = StoreLimits {
    records_max: 8,
    value_bytes_max: 256,
};

/// `rounds` of everything the store does, on an open store.
fn exercise<F: Flash>(store: &mut RecordStore<F>, rounds: u64) {
    let mut saver = Saver::new(SavePolicy::default(), 0);
    let mut value = [0u8; 256];
    for round in 0..rounds {
        value[..8].copy_from_slice(&round.to_le_bytes());
        let length = (round as usize * 13) % value.len();
        store.put("peer_cache", &value[..length]).expect("fits");
        store.put_as("boots", &round).expect("fits");
        store.put_as("name", "ringcast on box").expect("fits");
        let _ = store.put_as("id", &[round as u8; 16]);
        if round % 3 == 0 {
            store.remove("peer_cache");
        }
        assert!(store.put("big", &[0; 257]).is_err());
        assert!(store.put_as("big", &[0u8; 300][..]).is_err());
        assert!(store.put("bad name", b"x").is_err());
        assert_eq!(store.get_as::<u64>("boots"), Some(round));
        assert_eq!(store.get_as::<[u8; 16]>("id"), Some([round as u8; 16]));
        assert!(store.get("missing").is_none());
        assert!(store.iter().count() >= 3);
        saver.note_change(round % 5 == 0);
        let _ = saver.commit_due(round * 1000);
        let _ = saver.next_deadline_ms();
        store.commit().expect("commits");
        assert!(!store.is_dirty());
    }
}

#[test]
fn the_store_allocates_nothing_after_open_on_sim_flash() {
    let geometry = FlashGeometry {
        block_bytes: 2048,
        page_bytes: 128,
        blocks: 6,
    };
    let (mut store, _) = RecordStore::open(SimFlash::new(geometry), LIMITS).expect("opens");
    let count = allocations_in(|| {
        exercise(&mut store, 3000);
        // A commit cut short, and one after the power is back.
        store.put("peer_cache", b"cut").expect("fits");
        store.flash_mut().cut_power_mid_page(0, 7);
        assert!(store.commit().is_err());
        store.flash_mut().reboot();
        store.commit().expect("power is back");
    });
    assert_eq!(count, 0, "allocations after open");
    // The ring went round: each of the three units had its first block
    // erased (copies this small never need the second).
    let erases = store.flash().erase_counts();
    let erased = erases.iter().filter(|&&count| count > 0).count();
    assert_eq!(erased, 3, "{erases:?}");
}

#[cfg(target_os = "linux")]
#[test]
fn the_store_allocates_nothing_after_open_on_linux_flashes() {
    use ringcast_hal::linux::{FileFlash, StateDirFlash};

    let dir = std::env::temp_dir().join(format!("ringcast-store-alloc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let geometry = FlashGeometry {
        block_bytes: 4096,
        page_bytes: 4096,
        blocks: 2,
    };
    let flash = FileFlash::open(&dir.join("region"), geometry).expect("opens");
    let (mut store, _) = RecordStore::open(flash, LIMITS).expect("opens");
    assert_eq!(allocations_in(|| exercise(&mut store, 200)), 0);
    let flash = StateDirFlash::open(&dir, "state", geometry).expect("opens");
    let (mut store, _) = RecordStore::open(flash, LIMITS).expect("opens");
    assert_eq!(allocations_in(|| exercise(&mut store, 200)), 0);
    let _ = std::fs::remove_dir_all(&dir);
}
