//! Where the store puts its copies: the region is cut into *units* (the
//! blocks erased together) and each unit into *slots* (room for the largest
//! copy the limits allow). Copies are written to slot after slot around the
//! ring, so every block is erased once per lap, not once per commit. A copy
//! smaller than a block shares its block with the next copies; a copy larger
//! than a block takes whole blocks. Pure arithmetic on the geometry.

use core::ops::Range;

use super::format::pages_for_payload;
use crate::FlashGeometry;

/// The smallest program page the store works with (a copy header and some
/// records must fit the first page).
pub const PAGE_BYTES_MIN: u32 = 64;

/// Why a geometry cannot hold the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LayoutError {
    /// Zero sizes, blocks that are not whole pages, or a region past 4 GiB.
    BadGeometry,
    /// Pages under [`PAGE_BYTES_MIN`], or room for fewer than two units.
    TooSmall,
}

/// The slot ring for one geometry and one set of limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    pub page_bytes: u32,
    pub pages_per_block: u32,
    pub pages_total: u32,
    /// Pages of the largest copy the limits allow.
    pub copy_pages_max: u32,
    /// Blocks erased together.
    pub unit_blocks: u32,
    pub slots_per_unit: u32,
    /// Pages from one slot's start to the next in a unit.
    pub slot_pages: u32,
    pub units: u32,
}

/// True if two page ranges share a page.
pub(crate) fn overlaps(a: &Range<u32>, b: &Range<u32>) -> bool {
    a.start < b.end && b.start < a.end
}

impl Layout {
    /// The ring for `geometry` when a copy's records take at most
    /// `payload_bytes_max`.
    pub fn new(geometry: FlashGeometry, payload_bytes_max: usize) -> Result<Self, LayoutError> {
        if !geometry.is_valid() {
            return Err(LayoutError::BadGeometry);
        }
        if geometry.page_bytes < PAGE_BYTES_MIN {
            return Err(LayoutError::TooSmall);
        }
        let pages_per_block = geometry.pages_per_block();
        let pages_total = geometry.pages() as u32;
        let copy_pages = pages_for_payload(payload_bytes_max, geometry.page_bytes as usize);
        let copy_pages_max = match u32::try_from(copy_pages) {
            Ok(pages) if pages <= pages_total => pages,
            _ => return Err(LayoutError::TooSmall),
        };
        let (unit_blocks, slots_per_unit, slot_pages) = if copy_pages_max <= pages_per_block {
            (1, pages_per_block / copy_pages_max, copy_pages_max)
        } else {
            let unit_blocks = copy_pages_max.div_ceil(pages_per_block);
            (unit_blocks, 1, unit_blocks * pages_per_block)
        };
        let units = geometry.blocks / unit_blocks;
        if units < 2 {
            return Err(LayoutError::TooSmall);
        }
        Ok(Self {
            page_bytes: geometry.page_bytes,
            pages_per_block,
            pages_total,
            copy_pages_max,
            unit_blocks,
            slots_per_unit,
            slot_pages,
            units,
        })
    }

    /// Slots in the ring: how many copies fit side by side.
    pub fn slots(&self) -> u32 {
        self.units * self.slots_per_unit
    }

    /// The first page of `slot`.
    pub fn slot_first_page(&self, slot: u32) -> u32 {
        let unit = slot / self.slots_per_unit;
        let within = slot % self.slots_per_unit;
        unit * self.unit_blocks * self.pages_per_block + within * self.slot_pages
    }

    /// True if `slot` is the first of its unit: writing there erases first.
    pub fn is_unit_start(&self, slot: u32) -> bool {
        slot.is_multiple_of(self.slots_per_unit)
    }

    /// The blocks that hold `pages`.
    pub fn blocks_of(&self, pages: &Range<u32>) -> Range<u32> {
        pages.start / self.pages_per_block..pages.end.div_ceil(self.pages_per_block)
    }

    /// The pages of `blocks`.
    pub fn pages_of(&self, blocks: &Range<u32>) -> Range<u32> {
        blocks.start * self.pages_per_block..blocks.end * self.pages_per_block
    }

    /// The first slot that starts at or after `page`, or slot 0 if none does
    /// (the ring wraps).
    pub fn slot_at_or_after(&self, page: u32) -> u32 {
        (0..self.slots())
            .find(|&slot| self.slot_first_page(slot) >= page)
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry(block_bytes: u32, page_bytes: u32, blocks: u32) -> FlashGeometry {
        FlashGeometry {
            block_bytes,
            page_bytes,
            blocks,
        }
    }

    #[test]
    fn small_copies_share_blocks() {
        // 3 pages per copy, 16 pages per block: 5 slots per block.
        let layout = Layout::new(geometry(1024, 64, 4), 32 + 63 + 10).expect("fits");
        assert_eq!(layout.copy_pages_max, 3);
        assert_eq!((layout.unit_blocks, layout.slots_per_unit), (1, 5));
        assert_eq!(layout.slots(), 20);
        assert_eq!(layout.slot_first_page(4), 12);
        assert_eq!(layout.slot_first_page(5), 16);
        assert!(layout.is_unit_start(5) && !layout.is_unit_start(6));
        assert_eq!(layout.slot_at_or_after(13), 5);
        assert_eq!(layout.slot_at_or_after(62), 0);
        assert_eq!(layout.blocks_of(&(15..17)), 0..2);
    }

    #[test]
    fn large_copies_take_whole_blocks() {
        let layout = Layout::new(geometry(256, 64, 9), 32 + 63 * 5).expect("fits");
        assert_eq!(layout.copy_pages_max, 6);
        assert_eq!((layout.unit_blocks, layout.slots_per_unit), (2, 1));
        assert_eq!(layout.units, 4);
        assert_eq!(layout.slot_first_page(3), 24);
    }

    #[test]
    fn too_small_and_malformed_geometries_are_refused() {
        assert_eq!(
            Layout::new(geometry(256, 64, 3), 32 + 63 * 5),
            Err(LayoutError::TooSmall)
        );
        assert_eq!(
            Layout::new(geometry(256, 32, 8), 10),
            Err(LayoutError::TooSmall)
        );
        assert_eq!(
            Layout::new(geometry(100, 64, 8), 10),
            Err(LayoutError::BadGeometry)
        );
        assert_eq!(
            Layout::new(geometry(0, 64, 8), 10),
            Err(LayoutError::BadGeometry)
        );
        assert_eq!(
            Layout::new(geometry(1 << 20, 64, 1 << 13), 10),
            Err(LayoutError::BadGeometry)
        );
        assert_eq!(
            Layout::new(geometry(256, 64, 2), usize::MAX / 2),
            Err(LayoutError::TooSmall)
        );
    }
}
