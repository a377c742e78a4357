//! The record store owns everything ringcast keeps across restarts: a small
//! set of named records (node identity, keys, DLNA UUID, settings, peer
//! cache...) kept on a [`Flash`] so that a power cut at any instant leaves
//! either the last committed set of records or the one before, whole, and
//! never anything else. Records are staged in RAM ([`RecordStore::put`]) and
//! written together as one *copy* by [`RecordStore::commit`]; the
//! [`Saver`] decides when a commit is worth the flash wear.
//!
//! # Layout (format version 2)
//!
//! The region is a ring of *slots*, each big enough for the largest copy the
//! [`StoreLimits`] allow. When a copy fits in an erase block, a block holds
//! several slots; otherwise a slot takes whole blocks. The blocks erased
//! together (one block, or the blocks of one big slot) form a *unit*, and the
//! region needs at least two units (else [`StoreError::TooSmall`]).
//!
//! A copy starts on a page boundary with a 32-byte header (integers
//! little-endian):
//!
//! | bytes  | field                                                 |
//! |--------|-------------------------------------------------------|
//! | 0..4   | magic `rcST`                                          |
//! | 4..6   | format version (2)                                    |
//! | 6..8   | bitwise complement of the version                     |
//! | 8..16  | sequence: 1 for the first commit, +1 for each one     |
//! | 16..20 | payload bytes                                         |
//! | 20..22 | records in the payload                                |
//! | 22..24 | reserved, 0                                           |
//! | 24..28 | CRC-32 of the payload                                 |
//! | 28..32 | CRC-32 of bytes 0..28                                 |
//!
//! The payload follows: one record after another, each the postcard
//! encoding of `(name: &str, changed: u64, value: bytes)` (`changed` is the
//! sequence of the commit that last changed the value) followed by the
//! CRC-32 of those bytes. It fills the rest of the first page, then the
//! following pages, each of which starts with a `0x00` *page mark*. So the
//! first byte of any page of a copy is either `r` (a header) or `0x00`:
//! bytes from a record (a peer's address, a friendly name) can never pass for
//! a header, and the store can look for headers at every page start, which
//! keeps copies written with other limits readable.
//!
//! # Commit and open
//!
//! [`RecordStore::commit`] encodes the staged records in RAM, takes the next
//! slot of the ring (erasing its unit if the slot is the unit's first;
//! otherwise the slot must read as erased, or it is skipped), programs the
//! copy's later pages, then its first page with the header, and syncs. The
//! unit holding the copy loaded or last committed is never erased, so a cut
//! at any point leaves that copy intact, and the new copy is only valid once
//! its last byte is in place.
//!
//! [`RecordStore::open`] reads every page, checks every header it finds
//! (preamble, header CRC, bounds, page marks, payload CRC, every record's
//! CRC, name and size, no duplicate names) and keeps the valid copy with the
//! highest sequence. It never writes. The report says whether the flash was
//! blank ([`OpenReport::Fresh`]), the newest copy was intact
//! ([`OpenReport::Loaded`]), a newer copy was damaged and an older one used
//! ([`OpenReport::RecoveredOlder`]), or nothing valid was found
//! ([`OpenReport::Damaged`]: the store starts empty and the next commit
//! writes over the damage). A preamble with a version above
//! [`FORMAT_VERSION`] at any page start is [`StoreError::NewerFormat`], and
//! the flash is left as it was.
//!
//! # Format version 1 (read only, migrated)
//!
//! Version 1 kept two banks, A at offset 0 and B at half the region (whole
//! blocks: `blocks / 2 × block_bytes`), each holding one copy: a 20-byte
//! header (magic `rcST`, version 1 and its complement, sequence `u32`,
//! payload bytes `u32`, CRC-32 `u32` of header bytes 0..16 and the payload),
//! then the payload: a record count (`u8`), then per record the name length
//! (`u8`), the name, the value length (`u16`) and the value, unframed. When
//! no version-2 copy is valid, `open` takes the newer valid bank, reports
//! [`OpenReport::Migrated`] and marks the store dirty; the caller's next
//! commit writes version 2 into slots that do not overlap the bank it came
//! from, so a cut during that commit leaves version 1 to migrate again.
//!
//! # Wear
//!
//! Each commit programs one copy (only the pages its records need) and
//! erases at most one unit; slots are used in ring order, so over `C`
//! commits no block is erased more than `ceil(C / copies)` times
//! ([`erases_per_block_max`]). [`SavePolicy::commits_max`] bounds `C`.
//!
//! # Limits and memory
//!
//! A store holds at most `records_max` records of at most `value_bytes_max`
//! bytes each, named by 1 to [`NAME_BYTES_MAX`] printable ASCII characters.
//! `open` allocates the record table, one copy's worth of image buffer, one
//! page and one value of scratch; nothing allocates afterwards. Copies
//! written with larger limits than the current ones are treated as damaged,
//! so limits may grow between releases but should not shrink. The page
//! size must not change for a given region.

pub(crate) mod format;
mod layout;
mod records;
mod saver;

use core::ops::Range;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{Flash, FlashGeometry};
use format::{
    decode_record, encode_record, frame, is_valid_name, pages_for_payload, preamble_version,
    record_bytes_max, unframe, v1, Header, RecordRef, ERASED, HEADER_BYTES,
};
use layout::{overlaps, Layout, LayoutError};
use records::{Records, StageError};

pub use format::crc32;
pub use layout::PAGE_BYTES_MIN;
pub use saver::{
    SavePolicy, Saver, DAY_MS, DURABLE_COMMITS_BURST, DURABLE_REFILL_MS, RETRY_MS,
    VOLATILE_INTERVAL_MS_DEFAULT,
};

/// Longest record name, in bytes.
pub const NAME_BYTES_MAX: usize = 16;
/// The format version this store writes; it reads this one and version 1.
pub const FORMAT_VERSION: u16 = 2;
/// Upper bound for [`StoreLimits::records_max`].
pub const RECORDS_MAX_LIMIT: usize = 1024;
/// Upper bound for [`StoreLimits::value_bytes_max`].
pub const VALUE_BYTES_MAX_LIMIT: usize = 1 << 20;

/// How many records a store holds and how large each may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreLimits {
    /// Records at most (1 to [`RECORDS_MAX_LIMIT`]).
    pub records_max: usize,
    /// Bytes of one value at most (1 to [`VALUE_BYTES_MAX_LIMIT`]).
    pub value_bytes_max: usize,
}

impl StoreLimits {
    /// Bytes of the largest payload these limits allow.
    pub fn payload_bytes_max(&self) -> usize {
        self.records_max * record_bytes_max(self.value_bytes_max)
    }

    /// Limits come from the program, not from input: out-of-range limits are
    /// a programmer error.
    fn assert_valid(&self) {
        assert!(
            (1..=RECORDS_MAX_LIMIT).contains(&self.records_max),
            "records_max must be 1 to {RECORDS_MAX_LIMIT}"
        );
        assert!(
            (1..=VALUE_BYTES_MAX_LIMIT).contains(&self.value_bytes_max),
            "value_bytes_max must be 1 to {VALUE_BYTES_MAX_LIMIT}"
        );
    }
}

/// Why a store operation failed. None of these is a panic: the caller
/// decides (typically: log, and run on with what it has).
#[derive(Debug)]
pub enum StoreError<E> {
    /// The flash reported an error.
    Flash(E),
    /// All `records_max` records are in use.
    Full { records_max: usize },
    /// The value is `bytes` long; at most `max` are allowed.
    TooLarge { bytes: usize, max: usize },
    /// The name is not 1 to [`NAME_BYTES_MAX`] printable ASCII characters.
    BadName,
    /// The flash holds a store written by a newer format version. Nothing
    /// was written.
    NewerFormat { found: u16, supported: u16 },
    /// The flash cannot hold two copies of the largest store the limits
    /// allow, or its pages are under [`PAGE_BYTES_MIN`].
    TooSmall,
    /// A record could not be encoded (postcard failed).
    Encode,
    /// The geometry is malformed: a zero size, blocks that are not whole
    /// pages, or a region over 4 GiB.
    BadGeometry,
    /// The sequence number is at its maximum (only a crafted flash image
    /// can get there); the store cannot be written.
    SequenceExhausted,
}

impl<E: core::fmt::Display> core::fmt::Display for StoreError<E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Flash(error) => write!(f, "flash error: {error}"),
            Self::Full { records_max } => {
                write!(f, "the store is full (at most {records_max} records)")
            }
            Self::TooLarge { bytes, max } => {
                write!(f, "a {bytes}-byte record is over the {max}-byte limit")
            }
            Self::BadName => write!(
                f,
                "a record name must be 1 to {NAME_BYTES_MAX} printable ASCII characters"
            ),
            Self::NewerFormat { found, supported } => write!(
                f,
                "written by a newer ringcast (store format {found}; this one reads up to \
                 {supported}); left untouched"
            ),
            Self::TooSmall => write!(f, "the flash region is too small for two copies"),
            Self::Encode => write!(f, "a record could not be encoded"),
            Self::BadGeometry => write!(f, "malformed flash geometry"),
            Self::SequenceExhausted => write!(f, "the store's sequence number is exhausted"),
        }
    }
}

impl<E: core::fmt::Debug + core::fmt::Display> std::error::Error for StoreError<E> {}

/// What [`RecordStore::open`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenReport {
    /// The flash was blank: a new store.
    Fresh,
    /// The newest copy was intact.
    Loaded { sequence: u64 },
    /// The newest copy was torn or corrupt; this older one was used.
    RecoveredOlder { sequence: u64 },
    /// An older format was read; the store is dirty and the next commit
    /// writes the current format.
    Migrated { from_version: u16 },
    /// Data was present but no copy was valid: the store starts empty.
    Damaged,
}

impl core::fmt::Display for OpenReport {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Fresh => write!(f, "blank flash, new store"),
            Self::Loaded { sequence } => write!(f, "loaded copy #{sequence}"),
            Self::RecoveredOlder { sequence } => {
                write!(f, "newest copy damaged, recovered older copy #{sequence}")
            }
            Self::Migrated { from_version } => {
                write!(f, "migrated from format version {from_version}")
            }
            Self::Damaged => write!(f, "no intact copy, started empty"),
        }
    }
}

/// The most times any block is erased by `commits` commits of a store that
/// holds `copies` copies ([`RecordStore::copies`]), when no commit fails.
pub fn erases_per_block_max(commits: u64, copies: u32) -> u64 {
    commits.div_ceil(u64::from(copies.max(1)))
}

/// The smallest geometry with `block_bytes` blocks and `page_bytes` pages
/// that holds `copies` (at least 2) copies of a store with `limits`, or None
/// if there is none under 4 GiB or the page is under [`PAGE_BYTES_MIN`].
pub fn geometry_for(
    limits: StoreLimits,
    block_bytes: u32,
    page_bytes: u32,
    copies: u32,
) -> Option<FlashGeometry> {
    if page_bytes < PAGE_BYTES_MIN || block_bytes == 0 || !block_bytes.is_multiple_of(page_bytes) {
        return None;
    }
    let copy_pages = pages_for_payload(limits.payload_bytes_max(), page_bytes as usize);
    let copy_pages = u32::try_from(copy_pages).ok()?;
    let pages_per_block = block_bytes / page_bytes;
    let copies = copies.max(2);
    let blocks = if copy_pages <= pages_per_block {
        copies.div_ceil(pages_per_block / copy_pages).max(2)
    } else {
        copy_pages.div_ceil(pages_per_block).checked_mul(copies)?
    };
    let geometry = FlashGeometry {
        block_bytes,
        page_bytes,
        blocks,
    };
    geometry.is_valid().then_some(geometry)
}

/// A copy found valid while scanning.
#[derive(Clone, Copy)]
struct Found {
    page: u32,
    pages: u32,
    header: Header,
}

/// What a scan of every page found.
struct Scan {
    /// A newer format's version, if any page starts with one.
    newer: Option<u16>,
    /// Every byte read as erased.
    blank: bool,
    /// The valid copy with the highest sequence.
    best: Option<Found>,
    /// The highest sequence of any intact header, valid copy or not.
    sequence_max: u64,
    /// The copy whose records the table holds, if it holds one whole.
    in_table: Option<u32>,
}

/// Named records on a [`Flash`], committed atomically; see the module
/// documentation for the layout and the guarantees.
pub struct RecordStore<F: Flash> {
    flash: F,
    layout: Layout,
    limits: StoreLimits,
    records: Records,
    /// One copy, framed: built by `commit`, read into by `open`.
    image: Box<[u8]>,
    /// One page, for scanning and erase checks.
    page: Box<[u8]>,
    /// One value, for `put_as`.
    scratch: Box<[u8]>,
    /// Sequence of the copy loaded or last committed (0: none).
    sequence: u64,
    /// The highest sequence any header carried or any commit tried.
    sequence_seen: u64,
    /// The slot the next commit tries first.
    next_slot: u32,
    /// Pages of the copy loaded or last committed: never erased.
    protected: Range<u32>,
    dirty: bool,
}

/// A copy of the whole store, flash included (tests use it to fork a run;
/// it allocates, like `open`).
impl<F: Flash + Clone> Clone for RecordStore<F> {
    fn clone(&self) -> Self {
        Self {
            flash: self.flash.clone(),
            layout: self.layout,
            limits: self.limits,
            records: self.records.clone(),
            image: self.image.clone(),
            page: self.page.clone(),
            scratch: self.scratch.clone(),
            sequence: self.sequence,
            sequence_seen: self.sequence_seen,
            next_slot: self.next_slot,
            protected: self.protected.clone(),
            dirty: self.dirty,
        }
    }
}

impl<F: Flash> core::fmt::Debug for RecordStore<F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RecordStore")
            .field("records", &self.records.len())
            .field("sequence", &self.sequence)
            .field("dirty", &self.dirty)
            .field("copies", &self.layout.slots())
            .finish_non_exhaustive()
    }
}

impl<F: Flash> RecordStore<F> {
    /// Reads every copy on `flash` and loads the newest valid one. Allocates
    /// the store's buffers here, never after. Writes nothing.
    ///
    /// # Panics
    ///
    /// If `limits` are outside 1..=[`RECORDS_MAX_LIMIT`] records and
    /// 1..=[`VALUE_BYTES_MAX_LIMIT`] bytes (a programmer error).
    pub fn open(flash: F, limits: StoreLimits) -> Result<(Self, OpenReport), StoreError<F::Error>> {
        limits.assert_valid();
        let layout = match Layout::new(flash.geometry(), limits.payload_bytes_max()) {
            Ok(layout) => layout,
            Err(LayoutError::BadGeometry) => return Err(StoreError::BadGeometry),
            Err(LayoutError::TooSmall) => return Err(StoreError::TooSmall),
        };
        let page_bytes = layout.page_bytes as usize;
        let mut store = Self {
            flash,
            layout,
            limits,
            records: Records::new(limits),
            image: vec![ERASED; layout.copy_pages_max as usize * page_bytes].into_boxed_slice(),
            page: vec![ERASED; page_bytes].into_boxed_slice(),
            scratch: vec![0; limits.value_bytes_max].into_boxed_slice(),
            sequence: 0,
            sequence_seen: 0,
            next_slot: 0,
            protected: 0..0,
            dirty: false,
        };
        let report = store.load()?;
        Ok((store, report))
    }

    /// The value of record `name`, as staged.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.records.get(name.as_bytes())
    }

    /// The value of record `name` decoded with postcard; None if absent or
    /// undecodable.
    pub fn get_as<T: DeserializeOwned>(&self, name: &str) -> Option<T> {
        postcard::from_bytes(self.get(name)?).ok()
    }

    /// The sequence of the commit that last changed record `name` (0 while
    /// the change is only staged).
    pub fn sequence_of(&self, name: &str) -> Option<u64> {
        self.records.changed(name.as_bytes())
    }

    /// Stages `value` under `name`. The store becomes dirty only if the
    /// value differs from the staged one.
    pub fn put(&mut self, name: &str, value: &[u8]) -> Result<(), StoreError<F::Error>> {
        if !is_valid_name(name.as_bytes()) {
            return Err(StoreError::BadName);
        }
        let changed = self.records.put(name.as_bytes(), value);
        self.staged(changed, value.len())
    }

    /// Stages `value` encoded with postcard (into a fixed scratch buffer).
    pub fn put_as<T: Serialize + ?Sized>(
        &mut self,
        name: &str,
        value: &T,
    ) -> Result<(), StoreError<F::Error>> {
        if !is_valid_name(name.as_bytes()) {
            return Err(StoreError::BadName);
        }
        let bytes = match postcard::to_slice(value, &mut self.scratch) {
            Ok(encoded) => encoded.len(),
            Err(postcard::Error::SerializeBufferFull) => {
                let size = postcard::ser_flavors::Size::default();
                let bytes = postcard::serialize_with_flavor(value, size).unwrap_or(usize::MAX);
                let max = self.limits.value_bytes_max;
                return Err(StoreError::TooLarge { bytes, max });
            }
            Err(_) => return Err(StoreError::Encode),
        };
        let changed = self.records.put(name.as_bytes(), &self.scratch[..bytes]);
        self.staged(changed, bytes)
    }

    /// Turns the table's answer to a put into the store's.
    fn staged(
        &mut self,
        changed: Result<bool, StageError>,
        bytes: usize,
    ) -> Result<(), StoreError<F::Error>> {
        match changed {
            Ok(changed) => {
                self.dirty |= changed;
                Ok(())
            }
            Err(StageError::Full) => Err(StoreError::Full {
                records_max: self.limits.records_max,
            }),
            Err(StageError::TooLarge) => Err(StoreError::TooLarge {
                bytes,
                max: self.limits.value_bytes_max,
            }),
        }
    }

    /// Unstages record `name`; false if there was none.
    pub fn remove(&mut self, name: &str) -> bool {
        let removed = self.records.remove(name.as_bytes());
        self.dirty |= removed;
        removed
    }

    /// True if staged records differ from the copy on flash.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Records staged.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True if no record is staged.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The staged records as `(name, value)`.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.records.iter().map(|staged| {
            (
                core::str::from_utf8(staged.name).unwrap_or(""),
                staged.value,
            )
        })
    }

    /// The sequence of the copy loaded or last committed (0 if none).
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// How many copies the flash holds side by side (the slot ring's size).
    pub fn copies(&self) -> u32 {
        self.layout.slots()
    }

    /// The limits the store was opened with.
    pub fn limits(&self) -> StoreLimits {
        self.limits
    }

    /// The flash underneath.
    pub fn flash(&self) -> &F {
        &self.flash
    }

    /// The flash underneath, mutably: for tests that schedule power cuts or
    /// damage the flash on purpose. Writing to it behind the store's back
    /// voids the store's guarantees until it is reopened.
    pub fn flash_mut(&mut self) -> &mut F {
        &mut self.flash
    }

    /// Gives the flash back (for example to reopen it after a simulated
    /// power cut).
    pub fn into_flash(self) -> F {
        self.flash
    }

    /// Writes the staged records as a new copy. Atomic: after a power cut at
    /// any point, `open` yields the previous copy or this one, whole. A
    /// no-op if nothing changed. On an error the records stay staged and
    /// dirty; a later commit writes them to another slot.
    pub fn commit(&mut self) -> Result<(), StoreError<F::Error>> {
        if !self.dirty {
            return Ok(());
        }
        let sequence = self
            .sequence_seen
            .checked_add(1)
            .ok_or(StoreError::SequenceExhausted)?;
        let pages = self.encode_image(sequence)?;
        let first = self.claim_slot(pages)?;
        // From here a copy with this sequence may reach the flash, whole or
        // not: never reuse the number.
        self.sequence_seen = sequence;
        self.program_image(first, pages)
            .and_then(|()| self.flash.sync())
            .map_err(StoreError::Flash)?;
        self.sequence = sequence;
        self.protected = first..first + pages;
        self.records.mark_committed(sequence);
        self.dirty = false;
        Ok(())
    }

    /// Builds the copy for `sequence` in the image buffer; returns its pages.
    fn encode_image(&mut self, sequence: u64) -> Result<u32, StoreError<F::Error>> {
        let payload_max = self.limits.payload_bytes_max();
        let area = &mut self.image[HEADER_BYTES..HEADER_BYTES + payload_max];
        let (mut used, mut count) = (0usize, 0u16);
        for staged in self.records.iter() {
            let record = RecordRef {
                name: core::str::from_utf8(staged.name).map_err(|_| StoreError::Encode)?,
                changed: if staged.modified {
                    sequence
                } else {
                    staged.changed
                },
                value: staged.value,
            };
            used += encode_record(&mut area[used..], record).ok_or(StoreError::Encode)?;
            count += 1;
        }
        let header = Header {
            sequence,
            payload_bytes: used as u32,
            records: count,
            payload_crc: crc32(&area[..used]),
        };
        let pages = frame(&mut self.image, used, self.layout.page_bytes as usize);
        self.image[..HEADER_BYTES].copy_from_slice(&header.encode());
        Ok(pages as u32)
    }

    /// Finds the next slot that can take a copy of `pages` pages, erasing
    /// its unit if it is the unit's first slot; returns its first page.
    fn claim_slot(&mut self, pages: u32) -> Result<u32, StoreError<F::Error>> {
        let slots = self.layout.slots();
        for _ in 0..slots {
            let slot = self.next_slot;
            self.next_slot = (slot + 1) % slots;
            let first = self.layout.slot_first_page(slot);
            let copy = first..first + pages;
            if self.layout.is_unit_start(slot) {
                let blocks = self.layout.blocks_of(&copy);
                if overlaps(&self.layout.pages_of(&blocks), &self.protected) {
                    continue;
                }
                for block in blocks {
                    self.flash.erase(block).map_err(StoreError::Flash)?;
                }
                return Ok(first);
            }
            if !overlaps(&copy, &self.protected) && self.is_erased(&copy)? {
                return Ok(first);
            }
        }
        Err(StoreError::TooSmall)
    }

    /// True if every byte of `pages` reads as erased.
    fn is_erased(&mut self, pages: &Range<u32>) -> Result<bool, StoreError<F::Error>> {
        let page_bytes = self.layout.page_bytes;
        for page in pages.clone() {
            self.flash
                .read(page * page_bytes, &mut self.page)
                .map_err(StoreError::Flash)?;
            if self.page.iter().any(|&byte| byte != ERASED) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Programs the copy in the image buffer at page `first`: the later
    /// pages, then the first page with the header, last.
    fn program_image(&mut self, first: u32, pages: u32) -> Result<(), F::Error> {
        let page_bytes = self.layout.page_bytes as usize;
        let offset = first * self.layout.page_bytes;
        if pages > 1 {
            let rest = &self.image[page_bytes..pages as usize * page_bytes];
            self.flash.program(offset + page_bytes as u32, rest)?;
        }
        self.flash.program(offset, &self.image[..page_bytes])
    }

    /// Finds and loads the newest valid copy (see the module documentation).
    fn load(&mut self) -> Result<OpenReport, StoreError<F::Error>> {
        let scan = self.scan().map_err(StoreError::Flash)?;
        if let Some(found) = scan.newer {
            return Err(StoreError::NewerFormat {
                found,
                supported: FORMAT_VERSION,
            });
        }
        self.sequence_seen = scan.sequence_max;
        if let Some(best) = scan.best {
            let loaded = scan.in_table == Some(best.page)
                || self
                    .load_copy(best.page, &best.header)
                    .map_err(StoreError::Flash)?
                    .is_some();
            if loaded {
                let sequence = best.header.sequence;
                self.adopt(sequence, best.page..best.page + best.pages);
                return Ok(if scan.sequence_max > sequence {
                    OpenReport::RecoveredOlder { sequence }
                } else {
                    OpenReport::Loaded { sequence }
                });
            }
        }
        if self.load_v1()? {
            self.dirty = true;
            return Ok(OpenReport::Migrated {
                from_version: v1::VERSION,
            });
        }
        self.records.clear();
        Ok(if scan.blank {
            OpenReport::Fresh
        } else {
            OpenReport::Damaged
        })
    }

    /// Takes the copy with `sequence` at `pages` as the current one.
    fn adopt(&mut self, sequence: u64, pages: Range<u32>) {
        self.sequence = sequence;
        self.sequence_seen = self.sequence_seen.max(sequence);
        self.next_slot = self.layout.slot_at_or_after(pages.end);
        self.protected = pages;
    }

    /// Reads every page, validating each version-2 copy that could beat the
    /// best so far.
    fn scan(&mut self) -> Result<Scan, F::Error> {
        let mut scan = Scan {
            newer: None,
            blank: true,
            best: None,
            sequence_max: 0,
            in_table: None,
        };
        for page in 0..self.layout.pages_total {
            self.flash
                .read(page * self.layout.page_bytes, &mut self.page)?;
            scan.blank &= self.page.iter().all(|&byte| byte == ERASED);
            match preamble_version(&self.page) {
                Some(version) if version > FORMAT_VERSION => {
                    scan.newer = Some(version);
                    return Ok(scan);
                }
                Some(FORMAT_VERSION) => {}
                _ => continue,
            }
            let Some(header) = Header::decode(&self.page) else {
                continue;
            };
            scan.sequence_max = scan.sequence_max.max(header.sequence);
            let best_sequence = scan.best.map_or(0, |best| best.header.sequence);
            if header.sequence <= best_sequence {
                continue;
            }
            scan.in_table = None;
            if let Some(pages) = self.load_copy(page, &header)? {
                scan.best = Some(Found {
                    page,
                    pages,
                    header,
                });
                scan.in_table = Some(page);
            }
        }
        Ok(scan)
    }

    /// Reads the copy at `page` whose header is `header` and, if every check
    /// passes, loads its records into the table. Returns its pages, or None
    /// if it is not valid (the table is then left in no useful state).
    fn load_copy(&mut self, page: u32, header: &Header) -> Result<Option<u32>, F::Error> {
        let page_bytes = self.layout.page_bytes as usize;
        let payload_bytes = header.payload_bytes as usize;
        if payload_bytes > self.limits.payload_bytes_max() {
            return Ok(None);
        }
        let pages = pages_for_payload(payload_bytes, page_bytes) as u32;
        if pages > self.layout.pages_total - page {
            return Ok(None);
        }
        let copy = &mut self.image[..pages as usize * page_bytes];
        self.flash.read(page * self.layout.page_bytes, copy)?;
        if Header::decode(copy) != Some(*header) || !unframe(copy, payload_bytes, page_bytes) {
            return Ok(None);
        }
        let payload = &copy[HEADER_BYTES..HEADER_BYTES + payload_bytes];
        if crc32(payload) != header.payload_crc {
            return Ok(None);
        }
        let valid = load_records(&mut self.records, payload, header);
        Ok(valid.then_some(pages))
    }

    /// Looks for a format-1 store and loads the newer valid bank. True if
    /// one was loaded.
    fn load_v1(&mut self) -> Result<bool, StoreError<F::Error>> {
        let offsets = v1::bank_offsets(self.flash.geometry());
        let checked = [self.check_v1(offsets[0])?, self.check_v1(offsets[1])?];
        let sequence = |index: usize| checked[index].map(|header| header.sequence);
        let order = if sequence(1) > sequence(0) {
            [1, 0]
        } else {
            [0, 1]
        };
        for index in order {
            let Some(header) = checked[index] else {
                continue;
            };
            // Read the bank again: the image buffer holds the other one.
            if self.check_v1(offsets[index])?.is_none() || !self.load_v1_records(&header) {
                continue;
            }
            let page_bytes = self.layout.page_bytes;
            let end = offsets[index] + v1::HEADER_BYTES as u32 + header.payload_bytes;
            let pages = offsets[index] / page_bytes..end.div_ceil(page_bytes);
            self.adopt(u64::from(header.sequence), pages);
            return Ok(true);
        }
        self.records.clear();
        Ok(false)
    }

    /// Reads the format-1 bank at `offset` into the image buffer and checks
    /// its header and CRC.
    fn check_v1(&mut self, offset: u32) -> Result<Option<v1::Header>, StoreError<F::Error>> {
        let geometry = self.flash.geometry();
        let bank_bytes = v1::bank_bytes(geometry) as usize;
        let end_max = geometry
            .total_bytes()
            .min(u64::from(offset) + bank_bytes as u64);
        let room = (end_max.saturating_sub(u64::from(offset)) as usize).min(self.image.len());
        if room < v1::HEADER_BYTES {
            return Ok(None);
        }
        let head = &mut self.image[..v1::HEADER_BYTES];
        self.flash.read(offset, head).map_err(StoreError::Flash)?;
        let Some(header) = v1::decode_header(head) else {
            return Ok(None);
        };
        let bytes = v1::HEADER_BYTES.saturating_add(header.payload_bytes as usize);
        if bytes > room {
            return Ok(None);
        }
        let copy = &mut self.image[..bytes];
        self.flash.read(offset, copy).map_err(StoreError::Flash)?;
        Ok(v1::check(copy, &header).then_some(header))
    }

    /// Loads the records of the format-1 copy in the image buffer, marked
    /// for the next commit. False if they break the current limits.
    fn load_v1_records(&mut self, header: &v1::Header) -> bool {
        let payload = &self.image[v1::HEADER_BYTES..][..header.payload_bytes as usize];
        let records = &mut self.records;
        records.clear();
        let sequence = u64::from(header.sequence);
        v1::decode_records(payload, |name, value| {
            is_valid_name(name) && records.load(name, value, sequence, true)
        })
    }
}

/// Loads the records of a version-2 payload into `records` (cleared first).
/// False if any record is damaged, breaks the limits or repeats a name, or
/// the count is off.
fn load_records(records: &mut Records, payload: &[u8], header: &Header) -> bool {
    records.clear();
    let mut rest = payload;
    for _ in 0..header.records {
        let Some((record, used)) = decode_record(rest) else {
            return false;
        };
        let name = record.name.as_bytes();
        let changed_valid = (1..=header.sequence).contains(&record.changed);
        if !is_valid_name(name)
            || !changed_valid
            || !records.load(name, record.value, record.changed, false)
        {
            return false;
        }
        rest = &rest[used..];
    }
    rest.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimFlash;

    const LIMITS: StoreLimits = StoreLimits {
        records_max: 4,
        value_bytes_max: 100,
    };

    fn flash() -> SimFlash {
        SimFlash::new(FlashGeometry {
            block_bytes: 1024,
            page_bytes: 128,
            blocks: 4,
        })
    }

    #[test]
    fn put_commit_reopen() {
        let (mut store, report) = RecordStore::open(flash(), LIMITS).expect("opens");
        assert_eq!(report, OpenReport::Fresh);
        store.put("a", b"one").expect("fits");
        store.put_as("b", &7u32).expect("fits");
        assert!(store.is_dirty());
        store.commit().expect("commits");
        assert!(!store.is_dirty());
        assert_eq!(store.sequence(), 1);
        assert_eq!(store.sequence_of("a"), Some(1));
        let (store, report) = RecordStore::open(store.into_flash(), LIMITS).expect("opens");
        assert_eq!(report, OpenReport::Loaded { sequence: 1 });
        assert_eq!(store.get("a"), Some(&b"one"[..]));
        assert_eq!(store.get_as::<u32>("b"), Some(7));
        assert_eq!(store.get_as::<u32>("c"), None);
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn unchanged_values_do_not_dirty_the_store() {
        let (mut store, _) = RecordStore::open(flash(), LIMITS).expect("opens");
        store.put("a", b"one").expect("fits");
        store.commit().expect("commits");
        let ops = store.flash().ops();
        store.put("a", b"one").expect("fits");
        assert!(!store.is_dirty());
        store.commit().expect("no-op");
        assert_eq!(store.flash().ops(), ops);
        assert!(!store.remove("missing"));
        assert!(!store.is_dirty());
    }

    #[test]
    fn geometry_for_fits_the_copies_asked_for() {
        let geometry = geometry_for(LIMITS, 1024, 128, 8).expect("fits");
        let (store, _) = RecordStore::open(SimFlash::new(geometry), LIMITS).expect("opens");
        assert!(store.copies() >= 8);
        let fewer = FlashGeometry {
            blocks: geometry.blocks - 1,
            ..geometry
        };
        if let Ok((store, _)) = RecordStore::open(SimFlash::new(fewer), LIMITS) {
            assert!(store.copies() < 8);
        }
        assert_eq!(geometry_for(LIMITS, 1024, 32, 8), None);
        assert_eq!(erases_per_block_max(17, 8), 3);
    }
}
