//! In-memory flash for the record store, with power cuts and wear counters.
//!
//! [`SimFlash`] behaves like a NOR/NAND partition: an erase sets a block to
//! `0xFF`, a program writes whole erased pages (programming a page that is
//! not erased is a bug in the caller and asserts), reads go anywhere. Every
//! page programmed and every block erased is one *op*.
//! [`SimFlash::cut_power_after_ops`] fails the op after the given number
//! of ops, doing nothing; [`SimFlash::cut_power_mid_page`] lets that op
//! program only the first bytes of its page (or erase only the first bytes
//! of its block); [`SimFlash::cut_power_at_next_sync`] fails the next sync
//! after all its writes. Either way the power stays off, every call fails with
//! [`SimError::PowerLost`], until [`SimFlash::reboot`], which keeps the
//! image as the cut left it. Erases are counted per block, for wear tests.

use super::error::{SimError, SimResult};
use crate::FlashGeometry;

/// What an erased byte reads as.
const ERASED: u8 = 0xFF;

/// A pending power cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cut {
    /// Ops that still complete before the cut.
    after_ops: u64,
    /// Bytes the cut op still writes (None: nothing).
    partial_bytes: Option<usize>,
}

/// What the power lets the next op do.
enum Power {
    Whole,
    Partial(usize),
}

/// Simulated flash; see the module documentation.
#[derive(Clone, Debug)]
pub struct SimFlash {
    geometry: FlashGeometry,
    image: Vec<u8>,
    erase_counts: Vec<u64>,
    ops: u64,
    syncs: u64,
    cut: Option<Cut>,
    /// Power fails in the next sync.
    cut_at_sync: bool,
    powered: bool,
}

impl SimFlash {
    /// Blank (erased) flash of `geometry`.
    ///
    /// # Panics
    ///
    /// If the geometry is malformed (see [`FlashGeometry::is_valid`]).
    pub fn new(geometry: FlashGeometry) -> Self {
        assert!(geometry.is_valid(), "malformed flash geometry {geometry:?}");
        Self {
            geometry,
            image: vec![ERASED; geometry.total_bytes() as usize],
            erase_counts: vec![0; geometry.blocks as usize],
            ops: 0,
            syncs: 0,
            cut: None,
            cut_at_sync: false,
            powered: true,
        }
    }

    /// Power fails at the op after `ops` more ops: that op does nothing.
    pub fn cut_power_after_ops(&mut self, ops: u64) {
        self.cut = Some(Cut {
            after_ops: ops,
            partial_bytes: None,
        });
    }

    /// Power fails during the op after `ops` more ops: it programs only the
    /// first `bytes` of its page (or erases only the first `bytes` of its
    /// block).
    pub fn cut_power_mid_page(&mut self, ops: u64, bytes: usize) {
        self.cut = Some(Cut {
            after_ops: ops,
            partial_bytes: Some(bytes),
        });
    }

    /// Power fails during the next sync, after every op before it is done
    /// (the writer never learns that its writes made it).
    pub fn cut_power_at_next_sync(&mut self) {
        self.cut_at_sync = true;
    }

    /// Pages programmed and blocks erased so far, whole.
    pub fn ops(&self) -> u64 {
        self.ops
    }

    /// Successful syncs so far.
    pub fn syncs(&self) -> u64 {
        self.syncs
    }

    /// Erases per block, partial ones included.
    pub fn erase_counts(&self) -> &[u64] {
        &self.erase_counts
    }

    /// The whole region.
    pub fn image(&self) -> &[u8] {
        &self.image
    }

    /// The whole region, to damage it on purpose.
    pub fn image_mut(&mut self) -> &mut [u8] {
        &mut self.image
    }

    /// False between a cut and the next [`SimFlash::reboot`].
    pub fn is_powered(&self) -> bool {
        self.powered
    }

    /// Power comes back; the image stays as the cut left it, and any cut
    /// still pending is cancelled.
    pub fn reboot(&mut self) {
        self.powered = true;
        self.cut = None;
        self.cut_at_sync = false;
    }

    /// Spends one op of the power left.
    fn spend(&mut self) -> SimResult<Power> {
        if !self.powered {
            return Err(SimError::PowerLost);
        }
        match &mut self.cut {
            None => Ok(Power::Whole),
            Some(cut) if cut.after_ops > 0 => {
                cut.after_ops -= 1;
                Ok(Power::Whole)
            }
            Some(cut) => {
                let partial = cut.partial_bytes;
                self.cut = None;
                self.powered = false;
                partial.map(Power::Partial).ok_or(SimError::PowerLost)
            }
        }
    }

    fn check_powered(&self) -> SimResult<()> {
        if self.powered {
            Ok(())
        } else {
            Err(SimError::PowerLost)
        }
    }
}

impl crate::Flash for SimFlash {
    type Error = SimError;

    fn geometry(&self) -> FlashGeometry {
        self.geometry
    }

    fn read(&mut self, offset: u32, buffer: &mut [u8]) -> SimResult<()> {
        self.check_powered()?;
        let start = offset as usize;
        let source = start
            .checked_add(buffer.len())
            .and_then(|end| self.image.get(start..end))
            .ok_or(SimError::InvalidInput)?;
        buffer.copy_from_slice(source);
        Ok(())
    }

    fn program(&mut self, offset: u32, data: &[u8]) -> SimResult<()> {
        let page_bytes = self.geometry.page_bytes as usize;
        let start = offset as usize;
        assert!(
            start.is_multiple_of(page_bytes) && data.len().is_multiple_of(page_bytes),
            "programs are whole pages"
        );
        assert!(
            start + data.len() <= self.image.len(),
            "program past the end"
        );
        for (index, page) in data.chunks(page_bytes).enumerate() {
            let at = start + index * page_bytes;
            let power = self.spend()?;
            let target = &mut self.image[at..at + page_bytes];
            assert!(
                target.iter().all(|&byte| byte == ERASED),
                "programming page at {at} that is not erased"
            );
            match power {
                Power::Whole => {
                    target.copy_from_slice(page);
                    self.ops += 1;
                }
                Power::Partial(bytes) => {
                    let bytes = bytes.min(page_bytes);
                    target[..bytes].copy_from_slice(&page[..bytes]);
                    return Err(SimError::PowerLost);
                }
            }
        }
        Ok(())
    }

    fn erase(&mut self, block: u32) -> SimResult<()> {
        assert!(block < self.geometry.blocks, "erase past the end");
        let block_bytes = self.geometry.block_bytes as usize;
        let power = self.spend()?;
        let start = block as usize * block_bytes;
        let target = &mut self.image[start..start + block_bytes];
        self.erase_counts[block as usize] += 1;
        match power {
            Power::Whole => {
                target.fill(ERASED);
                self.ops += 1;
                Ok(())
            }
            Power::Partial(bytes) => {
                target[..bytes.min(block_bytes)].fill(ERASED);
                Err(SimError::PowerLost)
            }
        }
    }

    fn sync(&mut self) -> SimResult<()> {
        self.check_powered()?;
        if self.cut_at_sync {
            self.cut_at_sync = false;
            self.powered = false;
            return Err(SimError::PowerLost);
        }
        self.syncs += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Flash;

    fn flash() -> SimFlash {
        SimFlash::new(FlashGeometry {
            block_bytes: 256,
            page_bytes: 64,
            blocks: 2,
        })
    }

    #[test]
    fn programs_erases_and_counts() {
        let mut flash = flash();
        flash.program(64, &[7; 128]).expect("powered");
        assert_eq!(flash.ops(), 2);
        let mut buffer = [0; 4];
        flash.read(126, &mut buffer).expect("in range");
        assert_eq!(buffer, [7, 7, 7, 7]);
        flash.erase(0).expect("powered");
        assert_eq!(flash.erase_counts(), &[1, 0]);
        assert!(flash.image().iter().all(|&byte| byte == ERASED));
        assert_eq!(flash.read(510, &mut buffer), Err(SimError::InvalidInput));
    }

    #[test]
    fn a_cut_stops_the_op_and_everything_after_it() {
        let mut flash = flash();
        flash.cut_power_after_ops(1);
        assert_eq!(flash.program(0, &[1; 128]), Err(SimError::PowerLost));
        assert_eq!(&flash.image()[..64], &[1; 64]);
        assert!(flash.image()[64..].iter().all(|&byte| byte == ERASED));
        let mut buffer = [0; 1];
        assert_eq!(flash.read(0, &mut buffer), Err(SimError::PowerLost));
        assert_eq!(flash.sync(), Err(SimError::PowerLost));
        flash.reboot();
        flash.read(0, &mut buffer).expect("power is back");
        assert_eq!(flash.ops(), 1);
    }

    #[test]
    fn a_mid_page_cut_programs_part_of_the_page() {
        let mut flash = flash();
        flash.cut_power_mid_page(0, 10);
        assert_eq!(flash.program(64, &[2; 64]), Err(SimError::PowerLost));
        assert_eq!(&flash.image()[64..74], &[2; 10]);
        assert_eq!(flash.image()[74], ERASED);
        flash.reboot();
        flash.program(128, &[3; 64]).expect("powered");
        flash.cut_power_mid_page(0, 100);
        assert_eq!(flash.erase(0), Err(SimError::PowerLost));
        assert!(flash.image()[..100].iter().all(|&byte| byte == ERASED));
        assert_eq!(flash.image()[128], 3);
        assert_eq!(flash.erase_counts(), &[1, 0]);
    }

    #[test]
    #[should_panic(expected = "not erased")]
    fn programming_twice_is_a_bug() {
        let mut flash = flash();
        let _ = flash.program(0, &[1; 64]);
        let _ = flash.program(0, &[1; 64]);
    }
}
