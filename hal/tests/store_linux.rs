//! The record store over the Linux flashes and real files: `FileFlash` (a
//! raw region written in place) and `StateDirFlash` (a file replaced by
//! rename). Round trips, reopening after drop, truncated and missing files,
//! a newer format left byte for byte as it was.
#![cfg(target_os = "linux")]

use std::fs;
use std::path::{Path, PathBuf};

use ringcast_hal::linux::{FileFlash, StateDirFlash};
use ringcast_hal::store::{OpenReport, RecordStore, StoreError, StoreLimits};
use ringcast_hal::{Flash, FlashGeometry};

const LIMITS: StoreLimits = StoreLimits {
    records_max: 8,
    value_bytes_max: 512,
};

const GEOMETRY: FlashGeometry = FlashGeometry {
    block_bytes: 8192,
    page_bytes: 4096,
    blocks: 4,
};

/// A fresh directory for one test, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("ringcast-store-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("temp dir");
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn open_file(path: &Path) -> (RecordStore<FileFlash>, OpenReport) {
    let flash = FileFlash::open(path, GEOMETRY).expect("file opens");
    RecordStore::open(flash, LIMITS).expect("store opens")
}

#[test]
fn file_flash_round_trips_and_survives_reopening() {
    let dir = TempDir::new("round-trip");
    let path = dir.path().join("ringcast.state");
    let (mut store, report) = open_file(&path);
    assert_eq!(report, OpenReport::Fresh);
    // A missing file is created erased, at full size.
    let bytes = fs::read(&path).expect("created");
    assert_eq!(bytes.len(), GEOMETRY.total_bytes() as usize);
    assert!(bytes.iter().all(|&byte| byte == 0xFF));
    for round in 0..10u32 {
        store.put_as("boots", &round).expect("fits");
        store.put("node_id", &[round as u8; 32]).expect("fits");
        store.commit().expect("commits");
    }
    drop(store);
    let (mut store, report) = open_file(&path);
    assert_eq!(report, OpenReport::Loaded { sequence: 10 });
    assert_eq!(store.get_as::<u32>("boots"), Some(9));
    store.put("node_id", &[0xAA; 32]).expect("fits");
    store.commit().expect("commits");
    drop(store);
    let (store, _) = open_file(&path);
    assert_eq!(store.get("node_id"), Some(&[0xAA; 32][..]));
}

#[test]
fn a_truncated_file_reads_as_erased_and_is_extended() {
    let dir = TempDir::new("truncated");
    let path = dir.path().join("ringcast.state");
    let mut states = Vec::new();
    let (mut store, _) = open_file(&path);
    for round in 0..5u8 {
        store.put("counter", &[round]).expect("fits");
        store
            .put("cache", &vec![round; 300 + usize::from(round) * 40])
            .expect("fits");
        store.commit().expect("commits");
        states.push((
            store.get("counter").map(<[u8]>::to_vec),
            store.get("cache").map(<[u8]>::to_vec),
        ));
    }
    drop(store);
    let full = fs::read(&path).expect("readable");
    let total = GEOMETRY.total_bytes();
    for length in [0, 1, 100, 4096, 4097, 8192, 12000, 16384, 20000, total - 1] {
        fs::write(&path, &full[..length as usize]).expect("truncate");
        let (mut store, report) = open_file(&path);
        let found = (
            store.get("counter").map(<[u8]>::to_vec),
            store.get("cache").map(<[u8]>::to_vec),
        );
        assert!(
            states.contains(&found) || store.is_empty(),
            "length {length}: {report:?}"
        );
        store.put("after", b"truncation").expect("fits");
        store.commit().expect("commits over the damage");
        drop(store);
        let (store, _) = open_file(&path);
        assert_eq!(
            store.get("after"),
            Some(&b"truncation"[..]),
            "length {length}"
        );
        let length_now = fs::metadata(&path).expect("exists").len();
        assert!(length_now <= total);
    }
}

#[test]
fn file_flash_refuses_what_a_flash_cannot_do() {
    let dir = TempDir::new("refuses");
    let path = dir.path().join("region");
    let mut flash = FileFlash::open(&path, GEOMETRY).expect("opens");
    let mut buffer = [0u8; 8];
    assert!(flash
        .read(GEOMETRY.total_bytes() as u32 - 4, &mut buffer)
        .is_err());
    assert!(flash.program(100, &[0; 4096]).is_err());
    assert!(flash.program(0, &[0; 100]).is_err());
    assert!(flash.erase(GEOMETRY.blocks).is_err());
    let bad = FlashGeometry {
        page_bytes: 1000,
        ..GEOMETRY
    };
    assert!(FileFlash::open(&path, bad).is_err());
}

#[test]
fn a_newer_format_file_is_left_as_it_was() {
    let dir = TempDir::new("newer");
    let path = dir.path().join("ringcast.state");
    let (mut store, _) = open_file(&path);
    store.put("node_id", &[1; 32]).expect("fits");
    store.commit().expect("commits");
    drop(store);
    let mut bytes = fs::read(&path).expect("readable");
    let at = 3 * 4096;
    bytes[at..at + 8].copy_from_slice(b"rcST\x07\x00\xf8\xff");
    fs::write(&path, &bytes).expect("writes");
    let flash = FileFlash::open(&path, GEOMETRY).expect("opens");
    let error = RecordStore::open(flash, LIMITS).expect_err("newer");
    assert!(matches!(
        error,
        StoreError::NewerFormat {
            found: 7,
            supported: 2
        }
    ));
    assert_eq!(fs::read(&path).expect("readable"), bytes);
}

#[test]
fn state_dir_flash_replaces_the_file_by_rename() {
    let dir = TempDir::new("state-dir");
    let open = |dir: &Path| {
        let flash = StateDirFlash::open(dir, "ringcast.state", GEOMETRY).expect("opens");
        RecordStore::open(flash, LIMITS).expect("store opens")
    };
    let (mut store, report) = open(dir.path());
    assert_eq!(report, OpenReport::Fresh);
    let path = store.flash().path().to_path_buf();
    assert!(!path.exists(), "nothing written before the first commit");
    store.put("node_id", &[5; 32]).expect("fits");
    store.commit().expect("commits");
    assert_eq!(
        fs::metadata(&path).expect("written").len(),
        GEOMETRY.total_bytes()
    );
    assert!(!dir.path().join("ringcast.state.tmp").exists());
    store.put("node_id", &[6; 32]).expect("fits");
    store.commit().expect("commits");
    drop(store);
    // A temporary file left by a crash is ignored.
    fs::write(dir.path().join("ringcast.state.tmp"), b"half written").expect("writes");
    let (store, report) = open(dir.path());
    assert_eq!(report, OpenReport::Loaded { sequence: 2 });
    assert_eq!(store.get("node_id"), Some(&[6; 32][..]));
    drop(store);
    // A newer format: the file stays as it was.
    let mut bytes = fs::read(&path).expect("readable");
    let at = 3 * 4096;
    bytes[at..at + 8].copy_from_slice(b"rcST\x03\x00\xfc\xff");
    fs::write(&path, &bytes).expect("writes");
    let flash = StateDirFlash::open(dir.path(), "ringcast.state", GEOMETRY).expect("opens");
    assert!(matches!(
        RecordStore::open(flash, LIMITS),
        Err(StoreError::NewerFormat { found: 3, .. })
    ));
    assert_eq!(fs::read(&path).expect("readable"), bytes);
    // A missing directory is an error at open.
    assert!(StateDirFlash::open(&dir.path().join("missing"), "x", GEOMETRY).is_err());
}
