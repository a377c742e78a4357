//! The staged records in RAM: a fixed table of `records_max` entries and one
//! value buffer of `records_max × value_bytes_max` bytes, both allocated when
//! the store opens. Entry `i` keeps its value at `i × value_bytes_max`, so
//! staging, replacing and removing a record never allocates or moves other
//! records. The table knows nothing about flash.

use super::{StoreLimits, NAME_BYTES_MAX};

/// One record's bookkeeping (its value lives in [`Records::values`]).
#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    used: bool,
    name: [u8; NAME_BYTES_MAX],
    name_bytes: u8,
    value_bytes: u32,
    /// Sequence of the commit that last changed the value (as stored).
    changed: u64,
    /// Staged since the last commit: the next commit stamps `changed`.
    modified: bool,
}

impl Entry {
    fn name(&self) -> &[u8] {
        &self.name[..usize::from(self.name_bytes)]
    }
}

/// Why a record could not be staged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StageError {
    /// Every entry holds another record.
    Full,
    /// The value exceeds `value_bytes_max`.
    TooLarge,
}

/// The fixed table of staged records.
#[derive(Clone)]
pub(crate) struct Records {
    entries: Box<[Entry]>,
    values: Box<[u8]>,
    value_bytes_max: usize,
}

/// A record as the table hands it out for encoding.
pub(crate) struct Staged<'a> {
    pub name: &'a [u8],
    pub value: &'a [u8],
    pub changed: u64,
    pub modified: bool,
}

impl Records {
    /// An empty table for `limits` (the one allocation it ever makes).
    pub fn new(limits: StoreLimits) -> Self {
        Self {
            entries: vec![Entry::default(); limits.records_max].into_boxed_slice(),
            values: vec![0; limits.records_max * limits.value_bytes_max].into_boxed_slice(),
            value_bytes_max: limits.value_bytes_max,
        }
    }

    /// Forgets every record.
    pub fn clear(&mut self) {
        self.entries.fill(Entry::default());
    }

    fn find(&self, name: &[u8]) -> Option<usize> {
        self.entries
            .iter()
            .position(|entry| entry.used && entry.name() == name)
    }

    fn value_of(&self, index: usize) -> &[u8] {
        let start = index * self.value_bytes_max;
        &self.values[start..start + self.entries[index].value_bytes as usize]
    }

    /// The value of `name`, if staged.
    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.find(name).map(|index| self.value_of(index))
    }

    /// The sequence of the commit that last changed `name` (0 while its
    /// change is only staged).
    pub fn changed(&self, name: &[u8]) -> Option<u64> {
        let entry = &self.entries[self.find(name)?];
        Some(if entry.modified { 0 } else { entry.changed })
    }

    /// Stores `value` under `name` in entry `index`.
    fn write(&mut self, index: usize, name: &[u8], value: &[u8], changed: u64, modified: bool) {
        let entry = &mut self.entries[index];
        entry.used = true;
        entry.name = [0; NAME_BYTES_MAX];
        entry.name[..name.len()].copy_from_slice(name);
        entry.name_bytes = name.len() as u8;
        entry.value_bytes = value.len() as u32;
        entry.changed = changed;
        entry.modified = modified;
        let start = index * self.value_bytes_max;
        self.values[start..start + value.len()].copy_from_slice(value);
    }

    /// Stages `value` under `name` (already validated). Returns whether the
    /// staged value changed.
    pub fn put(&mut self, name: &[u8], value: &[u8]) -> Result<bool, StageError> {
        if value.len() > self.value_bytes_max {
            return Err(StageError::TooLarge);
        }
        let index = match self.find(name) {
            Some(index) if self.value_of(index) == value => return Ok(false),
            Some(index) => index,
            None => self
                .entries
                .iter()
                .position(|entry| !entry.used)
                .ok_or(StageError::Full)?,
        };
        self.write(index, name, value, 0, true);
        Ok(true)
    }

    /// Adds a record read from flash. False if the name is already there,
    /// the value is too large or the table is full.
    pub fn load(&mut self, name: &[u8], value: &[u8], changed: u64, modified: bool) -> bool {
        if value.len() > self.value_bytes_max || self.find(name).is_some() {
            return false;
        }
        let Some(index) = self.entries.iter().position(|entry| !entry.used) else {
            return false;
        };
        self.write(index, name, value, changed, modified);
        true
    }

    /// Removes `name`; false if it was not staged.
    pub fn remove(&mut self, name: &[u8]) -> bool {
        match self.find(name) {
            Some(index) => {
                self.entries[index] = Entry::default();
                true
            }
            None => false,
        }
    }

    /// Records staged.
    pub fn len(&self) -> usize {
        self.entries.iter().filter(|entry| entry.used).count()
    }

    /// The staged records, in table order.
    pub fn iter(&self) -> impl Iterator<Item = Staged<'_>> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, entry)| entry.used)
            .map(|(index, entry)| Staged {
                name: entry.name(),
                value: self.value_of(index),
                changed: entry.changed,
                modified: entry.modified,
            })
    }

    /// After a commit with `sequence`: stamps the records it wrote.
    pub fn mark_committed(&mut self, sequence: u64) {
        for entry in self.entries.iter_mut().filter(|entry| entry.modified) {
            entry.changed = sequence;
            entry.modified = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Records {
        Records::new(StoreLimits {
            records_max: 2,
            value_bytes_max: 4,
        })
    }

    #[test]
    fn put_reports_changes_and_limits() {
        let mut records = table();
        assert_eq!(records.put(b"a", b"1"), Ok(true));
        assert_eq!(records.put(b"a", b"1"), Ok(false));
        assert_eq!(records.put(b"a", b"12"), Ok(true));
        assert_eq!(records.put(b"b", b"1234"), Ok(true));
        assert_eq!(records.put(b"c", b""), Err(StageError::Full));
        assert_eq!(records.put(b"a", b"12345"), Err(StageError::TooLarge));
        assert_eq!(records.get(b"a"), Some(&b"12"[..]));
        assert_eq!(records.len(), 2);
        assert!(records.remove(b"a"));
        assert!(!records.remove(b"a"));
        assert_eq!(records.put(b"c", b""), Ok(true));
        assert_eq!(records.get(b"c"), Some(&b""[..]));
    }

    #[test]
    fn commits_stamp_modified_records() {
        let mut records = table();
        records.put(b"a", b"1").expect("fits");
        assert_eq!(records.changed(b"a"), Some(0));
        records.mark_committed(5);
        assert_eq!(records.changed(b"a"), Some(5));
        records.put(b"b", b"2").expect("fits");
        records.mark_committed(6);
        assert_eq!(records.changed(b"a"), Some(5));
        assert_eq!(records.changed(b"b"), Some(6));
    }

    #[test]
    fn load_refuses_duplicates() {
        let mut records = table();
        assert!(records.load(b"a", b"1", 3, false));
        assert!(!records.load(b"a", b"2", 3, false));
        assert!(!records.load(b"b", b"12345", 3, false));
        assert!(records.load(b"b", b"", 3, false));
        assert!(!records.load(b"c", b"", 3, false));
    }
}
