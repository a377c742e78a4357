//! Flash for the record store on Linux, two ways.
//!
//! [`FileFlash`] treats a file or a block device as a raw MTD-style region:
//! an erase writes `0xFF` over the pages of an erase block that are not
//! erased yet, a program writes pages in place (`pwrite`), a sync is
//! `fdatasync`; nothing is ever renamed. The
//! record store's slot ring makes that power-cut safe on its own. A file
//! shorter than the region (truncated by a crash or by hand) reads as erased
//! past its end and is extended with `0xFF` when written there.
//!
//! [`StateDirFlash`] keeps the region as one file in a state directory and
//! replaces that file whole on every sync: write `NAME.tmp`, `fdatasync`,
//! rename over `NAME`, `fsync` the directory. The region lives in RAM in
//! between. If the filesystem refuses the rename, it falls back to writing
//! the file in place, where the slot ring still protects the copies.
//!
//! Both allocate in `open` only. With a filesystem underneath, use pages of
//! at least the filesystem's block (4 KiB), so that no two copies share a
//! filesystem block: a torn block write then only touches the copy being
//! written.

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use rustix::io::Errno;

use super::Error;
use crate::FlashGeometry;

/// What an erased byte reads as.
const ERASED: u8 = 0xFF;

type Result<T> = core::result::Result<T, Error>;

fn invalid_geometry() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "malformed flash geometry")
}

/// Checks that `length` bytes at `offset` lie inside a region of
/// `total_bytes`, and returns the end.
fn end_within(offset: u32, length: usize, total_bytes: u64) -> Result<u64> {
    let end = u64::from(offset) + length as u64;
    if end > total_bytes {
        return Err(Error(Errno::INVAL));
    }
    Ok(end)
}

/// Checks that a program of `length` bytes at `offset` is whole pages.
fn check_pages(geometry: &FlashGeometry, offset: u32, length: usize) -> Result<u64> {
    let page_bytes = geometry.page_bytes as usize;
    if !(offset as usize).is_multiple_of(page_bytes) || !length.is_multiple_of(page_bytes) {
        return Err(Error(Errno::INVAL));
    }
    end_within(offset, length, geometry.total_bytes())
}

/// Fills `buffer` from `file` at `offset`; bytes past the end of the file
/// (a truncated file) read as erased.
fn read_into(file: &File, offset: u64, buffer: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buffer.len() {
        match file.read_at(&mut buffer[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(count) => done += count,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    buffer[done..].fill(ERASED);
    Ok(())
}

/// A raw flash region over a file or block device; see the module
/// documentation.
#[derive(Debug)]
pub struct FileFlash {
    file: File,
    geometry: FlashGeometry,
    /// The file's length as far as this handle knows.
    length: u64,
    /// One erase block of `0xFF`.
    erased: Box<[u8]>,
    /// One page, to check what an erase must write.
    page: Box<[u8]>,
}

impl FileFlash {
    /// Opens the region at `path`, creating the file (erased, full size) if
    /// it is missing or empty. An existing file is not written to.
    pub fn open(path: &Path, geometry: FlashGeometry) -> io::Result<Self> {
        if !geometry.is_valid() {
            return Err(invalid_geometry());
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let length = file.metadata()?.len();
        let mut flash = Self {
            file,
            geometry,
            length,
            erased: vec![ERASED; geometry.block_bytes as usize].into_boxed_slice(),
            page: vec![0; geometry.page_bytes as usize].into_boxed_slice(),
        };
        if length == 0 {
            flash.extend_to(geometry.total_bytes())?;
            flash.file.sync_data()?;
        }
        Ok(flash)
    }

    /// Fills the file with `0xFF` from its end up to `end`.
    fn extend_to(&mut self, end: u64) -> io::Result<()> {
        while self.length < end {
            let chunk = (end - self.length).min(self.erased.len() as u64) as usize;
            self.file.write_all_at(&self.erased[..chunk], self.length)?;
            self.length += chunk as u64;
        }
        Ok(())
    }

    /// Writes `data` at `offset`, extending the file first if it ends before.
    fn write_at(&mut self, offset: u32, data: &[u8], end: u64) -> Result<()> {
        self.extend_to(u64::from(offset))?;
        self.file.write_all_at(data, u64::from(offset))?;
        self.length = self.length.max(end);
        Ok(())
    }
}

impl crate::Flash for FileFlash {
    type Error = Error;

    fn geometry(&self) -> FlashGeometry {
        self.geometry
    }

    fn read(&mut self, offset: u32, buffer: &mut [u8]) -> Result<()> {
        end_within(offset, buffer.len(), self.geometry.total_bytes())?;
        Ok(read_into(&self.file, u64::from(offset), buffer)?)
    }

    fn program(&mut self, offset: u32, data: &[u8]) -> Result<()> {
        let end = check_pages(&self.geometry, offset, data.len())?;
        self.write_at(offset, data, end)
    }

    /// Writes `0xFF` over the block's pages that are not erased already:
    /// the store programs only the pages a copy needs, so rewriting the
    /// whole block would multiply what the filesystem writes.
    fn erase(&mut self, block: u32) -> Result<()> {
        if block >= self.geometry.blocks {
            return Err(Error(Errno::INVAL));
        }
        let page_bytes = self.geometry.page_bytes;
        let first = block * self.geometry.block_bytes;
        for page in 0..self.geometry.pages_per_block() {
            let offset = u64::from(first + page * page_bytes);
            read_into(&self.file, offset, &mut self.page)?;
            if self.page.iter().all(|&byte| byte == ERASED) {
                continue;
            }
            self.extend_to(offset)?;
            let fill = &self.erased[..page_bytes as usize];
            self.file.write_all_at(fill, offset)?;
            self.length = self.length.max(offset + u64::from(page_bytes));
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        Ok(self.file.sync_data()?)
    }
}

/// A flash region kept as one file in a state directory, replaced whole by
/// rename on every sync; see the module documentation.
#[derive(Debug)]
pub struct StateDirFlash {
    geometry: FlashGeometry,
    /// The region.
    mirror: Box<[u8]>,
    /// The state directory, kept open to sync renames in it.
    directory: File,
    path: PathBuf,
    temporary: PathBuf,
    /// Erased or programmed since the last sync.
    changed: bool,
    /// False once the filesystem refused a rename: write in place.
    rename_works: bool,
}

impl StateDirFlash {
    /// Opens (or prepares) the region kept in `directory/name`. Reads the
    /// file if it exists; a missing file reads as erased and is created by
    /// the first sync. Writes nothing.
    pub fn open(directory: &Path, name: &str, geometry: FlashGeometry) -> io::Result<Self> {
        if !geometry.is_valid() {
            return Err(invalid_geometry());
        }
        let mut flash = Self {
            geometry,
            mirror: vec![ERASED; geometry.total_bytes() as usize].into_boxed_slice(),
            directory: File::open(directory)?,
            path: directory.join(name),
            temporary: directory.join(format!("{name}.tmp")),
            changed: false,
            rename_works: true,
        };
        match File::open(&flash.path) {
            Ok(file) => flash.load(&file)?,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
        Ok(flash)
    }

    /// The file the region is kept in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn load(&mut self, file: &File) -> io::Result<()> {
        read_into(file, 0, &mut self.mirror)
    }

    /// Writes the region to the temporary file and renames it into place.
    fn replace_by_rename(&self) -> io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&self.temporary)?;
        file.write_all(&self.mirror)?;
        file.sync_data()?;
        drop(file);
        std::fs::rename(&self.temporary, &self.path)?;
        self.directory.sync_all()
    }

    /// Writes the region over the file in place.
    fn replace_in_place(&self) -> io::Result<()> {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.path)?;
        file.write_all_at(&self.mirror, 0)?;
        file.sync_data()
    }
}

/// Errors by which a filesystem says it cannot rename here.
fn rename_unsupported(error: &io::Error) -> bool {
    let errno = Errno::from_io_error(error);
    matches!(
        errno,
        Some(Errno::XDEV | Errno::PERM | Errno::NOSYS | Errno::OPNOTSUPP | Errno::INVAL)
    )
}

impl crate::Flash for StateDirFlash {
    type Error = Error;

    fn geometry(&self) -> FlashGeometry {
        self.geometry
    }

    fn read(&mut self, offset: u32, buffer: &mut [u8]) -> Result<()> {
        let end = end_within(offset, buffer.len(), self.geometry.total_bytes())?;
        buffer.copy_from_slice(&self.mirror[offset as usize..end as usize]);
        Ok(())
    }

    fn program(&mut self, offset: u32, data: &[u8]) -> Result<()> {
        let end = check_pages(&self.geometry, offset, data.len())?;
        let target = &mut self.mirror[offset as usize..end as usize];
        if target.iter().any(|&byte| byte != ERASED) {
            return Err(Error(Errno::INVAL));
        }
        target.copy_from_slice(data);
        self.changed = true;
        Ok(())
    }

    fn erase(&mut self, block: u32) -> Result<()> {
        if block >= self.geometry.blocks {
            return Err(Error(Errno::INVAL));
        }
        let block_bytes = self.geometry.block_bytes as usize;
        let start = block as usize * block_bytes;
        self.mirror[start..start + block_bytes].fill(ERASED);
        self.changed = true;
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        if !self.changed {
            return Ok(());
        }
        if self.rename_works {
            match self.replace_by_rename() {
                Ok(()) => {
                    self.changed = false;
                    return Ok(());
                }
                Err(error) if rename_unsupported(&error) => {
                    log::warn!(
                        "state: {}: the filesystem refused a rename ({error}); writing in place",
                        self.path.display()
                    );
                    self.rename_works = false;
                }
                Err(error) => return Err(error.into()),
            }
        }
        self.replace_in_place()?;
        self.changed = false;
        Ok(())
    }
}
