//! In-memory flash for the record store, with A/B slots and power cuts.
//!
//! Each record key owns two slots. A copy is laid out as
//! `sequence: u64 LE | length: u32 LE | value | crc32: u32 LE`, the CRC
//! covering everything before it. A write erases the slot that does not hold
//! the newest valid copy and programs the new copy there with the next
//! sequence number, one byte at a time; a read returns the valid copy with the
//! highest sequence. So a write cut short leaves a slot whose CRC fails, and
//! the other slot still holds the previous value in full.
//!
//! [`SimStorage::cut_power_after_bytes`] makes the flash lose power after a
//! given number of programmed bytes, counted across writes; the write in
//! progress when the count runs out stops there and returns
//! [`SimError::PowerLost`] (a count that ends exactly at the end of a write
//! stops the next one before its first byte). Power is back for the call
//! after that, as after a reboot. Erasing a slot is modelled as instant and
//! uncut.

use std::cell::RefCell;
use std::rc::Rc;

use super::error::{SimError, SimResult};
use crate::store::format::crc32_update;

const SEQUENCE_BYTES: usize = 8;
const LENGTH_BYTES: usize = 4;
const HEADER_BYTES: usize = SEQUENCE_BYTES + LENGTH_BYTES;
const CRC_BYTES: usize = 4;
/// What an erased flash byte reads as.
const ERASED: u8 = 0xFF;

/// A copy found intact in a slot.
struct Copy<'a> {
    sequence: u64,
    value: &'a [u8],
}

fn parse_slot(slot: &[u8]) -> Option<Copy<'_>> {
    let (header, rest) = slot.split_at_checked(HEADER_BYTES)?;
    let sequence = u64::from_le_bytes(header[..SEQUENCE_BYTES].try_into().ok()?);
    let length = u32::from_le_bytes(header[SEQUENCE_BYTES..].try_into().ok()?) as usize;
    let value = rest.get(..length)?;
    let stored = rest.get(length..length + CRC_BYTES)?;
    let stored = u32::from_le_bytes(stored.try_into().ok()?);
    let computed = crc32_update(crc32_update(0xFFFF_FFFF, header), value) ^ 0xFFFF_FFFF;
    (stored == computed).then_some(Copy { sequence, value })
}

struct Record {
    key: u32,
    slots: [Box<[u8]>; 2],
}

impl Record {
    /// The index and contents of the newest intact copy.
    fn newest(&self) -> Option<(usize, Copy<'_>)> {
        let copies = [parse_slot(&self.slots[0]), parse_slot(&self.slots[1])];
        let [first, second] = copies;
        match (first, second) {
            (Some(a), Some(b)) if b.sequence > a.sequence => Some((1, b)),
            (Some(a), _) => Some((0, a)),
            (None, Some(b)) => Some((1, b)),
            (None, None) => None,
        }
    }
}

struct Flash {
    record_bytes_max: usize,
    records_max: usize,
    records: Vec<Record>,
    /// Bytes that may still be programmed before power fails.
    power_budget_bytes: Option<usize>,
}

/// Programs `bytes` at `offset`, spending the power budget byte by byte.
fn program(
    slot: &mut [u8],
    offset: usize,
    bytes: &[u8],
    budget: &mut Option<usize>,
) -> SimResult<()> {
    for (index, &byte) in bytes.iter().enumerate() {
        if let Some(left) = budget {
            if *left == 0 {
                *budget = None;
                return Err(SimError::PowerLost);
            }
            *left -= 1;
        }
        slot[offset + index] = byte;
    }
    Ok(())
}

impl Flash {
    fn slot_bytes(&self) -> usize {
        HEADER_BYTES + self.record_bytes_max + CRC_BYTES
    }

    fn record_index(&mut self, key: u32) -> SimResult<usize> {
        if let Some(index) = self.records.iter().position(|record| record.key == key) {
            return Ok(index);
        }
        if self.records.len() >= self.records_max {
            return Err(SimError::StoreFull);
        }
        let erased = vec![ERASED; self.slot_bytes()].into_boxed_slice();
        self.records.push(Record {
            key,
            slots: [erased.clone(), erased],
        });
        Ok(self.records.len() - 1)
    }

    fn write(&mut self, key: u32, value: &[u8]) -> SimResult<()> {
        if value.len() > self.record_bytes_max {
            return Err(SimError::RecordTooLarge);
        }
        let index = self.record_index(key)?;
        let record = &mut self.records[index];
        let (target, sequence) = match record.newest() {
            Some((newest, copy)) => (1 - newest, copy.sequence + 1),
            None => (0, 1),
        };
        let mut header = [0; HEADER_BYTES];
        header[..SEQUENCE_BYTES].copy_from_slice(&sequence.to_le_bytes());
        header[SEQUENCE_BYTES..].copy_from_slice(&(value.len() as u32).to_le_bytes());
        let crc = crc32_update(crc32_update(0xFFFF_FFFF, &header), value) ^ 0xFFFF_FFFF;
        let slot = &mut record.slots[target];
        slot.fill(ERASED);
        let budget = &mut self.power_budget_bytes;
        program(slot, 0, &header, budget)?;
        program(slot, HEADER_BYTES, value, budget)?;
        program(slot, HEADER_BYTES + value.len(), &crc.to_le_bytes(), budget)
    }

    fn read(&self, key: u32, buffer: &mut [u8]) -> SimResult<Option<usize>> {
        let Some(record) = self.records.iter().find(|record| record.key == key) else {
            return Ok(None);
        };
        let Some((_, copy)) = record.newest() else {
            return Ok(None);
        };
        let target = buffer
            .get_mut(..copy.value.len())
            .ok_or(SimError::BufferTooSmall)?;
        target.copy_from_slice(copy.value);
        Ok(Some(copy.value.len()))
    }
}

/// Simulated power-loss-safe flash. Clones share the flash, so a test can
/// "reboot" a node by handing a clone to its replacement.
#[derive(Clone)]
pub struct SimStorage {
    flash: Rc<RefCell<Flash>>,
}

impl core::fmt::Debug for SimStorage {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let flash = self.flash.borrow();
        f.debug_struct("SimStorage")
            .field("records", &flash.records.len())
            .field("record_bytes_max", &flash.record_bytes_max)
            .finish_non_exhaustive()
    }
}

impl SimStorage {
    /// Empty flash for up to `records_max` keys of up to `record_bytes_max`
    /// bytes each.
    pub fn new(records_max: usize, record_bytes_max: usize) -> Self {
        let flash = Flash {
            record_bytes_max,
            records_max,
            records: Vec::new(),
            power_budget_bytes: None,
        };
        Self {
            flash: Rc::new(RefCell::new(flash)),
        }
    }

    /// The bytes a write of `value_bytes` programs: header, value and CRC.
    pub fn copy_bytes(value_bytes: usize) -> usize {
        HEADER_BYTES + value_bytes + CRC_BYTES
    }

    /// Power fails once `bytes` more bytes have been programmed, by this
    /// write or later ones: the write in progress then stops with
    /// [`SimError::PowerLost`], and the cut is spent.
    pub fn cut_power_after_bytes(&self, bytes: usize) {
        self.flash.borrow_mut().power_budget_bytes = Some(bytes);
    }

    /// Flips one bit of the newest intact copy of `key`, as bit rot would.
    /// Returns false if there was no intact copy.
    pub fn corrupt_newest(&self, key: u32) -> bool {
        let mut flash = self.flash.borrow_mut();
        let Some(record) = flash.records.iter_mut().find(|record| record.key == key) else {
            return false;
        };
        let Some((newest, _)) = record.newest() else {
            return false;
        };
        record.slots[newest][HEADER_BYTES - 1] ^= 0x01;
        true
    }
}

impl crate::Storage for SimStorage {
    type Error = SimError;

    fn read(&mut self, key: u32, buffer: &mut [u8]) -> SimResult<Option<usize>> {
        self.flash.borrow().read(key, buffer)
    }

    fn write(&mut self, key: u32, value: &[u8]) -> SimResult<()> {
        self.flash.borrow_mut().write(key, value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Storage;

    const KEY: u32 = 7;

    fn read_value(storage: &mut SimStorage) -> Option<Vec<u8>> {
        let mut buffer = [0; 64];
        let length = storage
            .read(KEY, &mut buffer)
            .expect("buffer is large enough")?;
        Some(buffer[..length].to_vec())
    }

    #[test]
    fn newest_write_wins_and_slots_alternate() {
        let mut storage = SimStorage::new(4, 64);
        assert_eq!(read_value(&mut storage), None);
        for round in 0u8..5 {
            storage.write(KEY, &[round; 3]).expect("fits");
            assert_eq!(read_value(&mut storage), Some(vec![round; 3]));
        }
    }

    #[test]
    fn power_cut_at_every_byte_keeps_old_or_new_value_whole() {
        let old = b"old identity".as_slice();
        let new = b"a new and longer identity".as_slice();
        let total = SimStorage::copy_bytes(new.len());
        for history in 1..=3 {
            for cut in 0..=total {
                let mut storage = SimStorage::new(1, 64);
                for _ in 0..history {
                    storage.write(KEY, old).expect("no cut yet");
                }
                storage.cut_power_after_bytes(cut);
                let outcome = storage.write(KEY, new);
                let expected = if cut < total { old } else { new };
                assert_eq!(outcome.is_err(), cut < total, "cut at {cut}");
                assert_eq!(
                    read_value(&mut storage).as_deref(),
                    Some(expected),
                    "cut at {cut}"
                );
                if outcome.is_ok() {
                    // Power died right after the last byte: the next write
                    // programs nothing, and the new value stays.
                    assert_eq!(storage.write(KEY, b"lost"), Err(SimError::PowerLost));
                    assert_eq!(read_value(&mut storage).as_deref(), Some(new));
                }
                // Power is back: the next write lands whole.
                storage.write(KEY, b"after").expect("power is back");
                assert_eq!(read_value(&mut storage).as_deref(), Some(&b"after"[..]));
            }
        }
    }

    #[test]
    fn torn_first_write_reads_as_never_written() {
        let mut storage = SimStorage::new(1, 64);
        storage.cut_power_after_bytes(5);
        assert_eq!(storage.write(KEY, b"value"), Err(SimError::PowerLost));
        assert_eq!(read_value(&mut storage), None);
    }

    #[test]
    fn bit_rot_falls_back_to_the_older_copy() {
        let mut storage = SimStorage::new(1, 64);
        storage.write(KEY, b"one").expect("fits");
        storage.write(KEY, b"two").expect("fits");
        assert!(storage.corrupt_newest(KEY));
        assert_eq!(read_value(&mut storage).as_deref(), Some(&b"one"[..]));
    }

    #[test]
    fn limits_are_errors_not_panics() {
        let mut storage = SimStorage::new(1, 4);
        assert_eq!(
            storage.write(KEY, b"too long"),
            Err(SimError::RecordTooLarge)
        );
        storage.write(KEY, b"ok").expect("fits");
        assert_eq!(storage.write(KEY + 1, b"ok"), Err(SimError::StoreFull));
        let mut small = [0; 1];
        assert_eq!(storage.read(KEY, &mut small), Err(SimError::BufferTooSmall));
    }
}
