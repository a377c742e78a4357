//! The channel ring: a fixed byte region of whole MPEG-TS packets, cut into
//! numbered chunks, read by any number of independent cursors.
//!
//! The region is allocated once (by the HAL, a memfd on Linux) and never grows.
//! The single writer appends whole 188-byte packets at `head`, an absolute byte
//! position that only increases; the byte at absolute position `p` lives at
//! offset `p % capacity`. Because the capacity is a multiple of 188 and every
//! write is whole packets, every packet boundary in the stream is a packet
//! boundary in the region, so a reader never sees half a packet.
//!
//! Chunks are the unit the swarm and the keyframe index will speak about: each
//! has a sequence number, its start position, a length and flags. The open
//! chunk grows until [`limits::CHUNK_BYTES`] or until the writer closes it
//! early (at a keyframe or a discontinuity). The chunk table is fixed too; the
//! oldest entries are dropped when their bytes are overwritten.
//!
//! Readers hold only a position ([`Cursor`]). The writer never waits for them:
//! a reader whose position fell out of the readable window is *lapped*, and the
//! caller decides what to do (see `lan` for the policy). The readable window
//! stops `guard_bytes` short of the oldest byte still in the region, because
//! bytes handed to the kernel with `sendfile` stay referenced until sent; the
//! guard keeps the writer away from them.

use ringcast_hal::Region;

use crate::limits::{CHUNKS_MAX, CHUNK_BYTES, TS_PACKET_BYTES};

/// Flags carried by a chunk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChunkFlags(pub u8);

impl ChunkFlags {
    pub const NONE: Self = Self(0);
    /// The chunk begins with a random-access point.
    pub const KEYFRAME: Self = Self(1);
    /// The chunk follows a break in the source (reconnect, switch).
    pub const DISCONTINUITY: Self = Self(2);
    /// The keyframe this chunk starts with has arrived whole (the next
    /// picture began): a reader starting here decodes a picture at once.
    pub const DECODABLE: Self = Self(4);

    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
    pub fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

/// One chunk's place in the stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChunkInfo {
    pub seq: u64,
    /// Absolute byte position of the first byte.
    pub start: u64,
    pub length_bytes: u32,
    pub flags: ChunkFlags,
    /// Ingest clock (ms) when the chunk's first byte arrived.
    pub time_ms: u64,
}

/// A reader's place in the stream: an absolute byte position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub position: u64,
}

/// A contiguous range of the region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub offset: usize,
    pub length: usize,
}

/// What a reader may send next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readable {
    /// The reader is at the head: nothing new yet.
    Empty,
    /// The reader fell out of the window; its bytes were (or may be) overwritten.
    Lapped,
    /// Up to two spans (the second when the range wraps), in stream order.
    Data { first: Span, second: Option<Span> },
}

impl Readable {
    pub fn length(&self) -> usize {
        match self {
            Readable::Data { first, second } => first.length + second.map_or(0, |s| s.length),
            _ => 0,
        }
    }
}

/// The ring of one channel.
pub struct Ring<R: Region> {
    region: R,
    capacity_bytes: u64,
    guard_bytes: u64,
    head: u64,
    chunks: Box<[ChunkInfo]>,
    /// Sequence number of the oldest chunk still in the table.
    oldest_seq: u64,
    /// Sequence number of the open chunk (being written).
    open_seq: u64,
    /// The writer's clock, stamped on chunks as they open.
    now_ms: u64,
    /// The latest PAT and PMT packets of the stream, for new readers.
    psi: [u8; PSI_BYTES_MAX],
    psi_len: usize,
    /// Bumped by every [`Ring::set_psi`].
    psi_generation: u64,
}

/// Bytes of PAT and PMT packets kept for new readers.
pub const PSI_BYTES_MAX: usize = 8 * TS_PACKET_BYTES;

/// The number of chunk slots for a ring of `capacity_bytes`: enough for
/// chunks closed early (at every keyframe, say) at an eighth of full size.
pub fn chunk_slots_for(capacity_bytes: usize) -> usize {
    let slots = capacity_bytes / (CHUNK_BYTES / 8) + 2;
    slots.clamp(4, CHUNKS_MAX)
}

/// The guard for a ring of `capacity_bytes`: an eighth, between 1 MiB and half.
pub fn guard_bytes_for(capacity_bytes: usize) -> usize {
    (capacity_bytes / 8)
        .max(1024 * 1024)
        .min(capacity_bytes / 2)
}

impl<R: Region> Ring<R> {
    /// Builds a ring over `region`. Allocates the chunk table; call at start-up.
    pub fn new(region: R, guard_bytes: usize) -> Self {
        let capacity = region.len_bytes() - region.len_bytes() % TS_PACKET_BYTES;
        assert!(capacity >= 2 * CHUNK_BYTES, "ring region too small");
        assert!(guard_bytes < capacity, "guard must leave room to read");
        let slots = chunk_slots_for(capacity);
        let mut chunks = vec![ChunkInfo::default(); slots].into_boxed_slice();
        chunks[0] = ChunkInfo::default();
        Self {
            region,
            capacity_bytes: capacity as u64,
            guard_bytes: (guard_bytes - guard_bytes % TS_PACKET_BYTES) as u64,
            head: 0,
            chunks,
            oldest_seq: 0,
            open_seq: 0,
            now_ms: 0,
            psi: [0; PSI_BYTES_MAX],
            psi_len: 0,
            psi_generation: 0,
        }
    }

    /// Keeps `packets` (the latest PAT, then the PMT) for new readers. Tables
    /// beyond [`PSI_BYTES_MAX`] are not kept (readers then wait for the
    /// source's next ones). The generation changes only if the tables did
    /// (continuity counters aside).
    pub fn set_psi<'p>(&mut self, packets: impl Iterator<Item = &'p [u8; TS_PACKET_BYTES]>) {
        let mut fresh = [0u8; PSI_BYTES_MAX];
        let mut length = 0;
        for packet in packets {
            if length + TS_PACKET_BYTES > PSI_BYTES_MAX {
                length = 0;
                break;
            }
            fresh[length..length + TS_PACKET_BYTES].copy_from_slice(packet);
            length += TS_PACKET_BYTES;
        }
        let same_tables = length == self.psi_len
            && fresh[..length]
                .chunks_exact(TS_PACKET_BYTES)
                .zip(self.psi[..length].chunks_exact(TS_PACKET_BYTES))
                .all(|(new, old)| new[..3] == old[..3] && new[4..] == old[4..]);
        if !same_tables {
            self.psi_generation += 1;
        }
        self.psi = fresh;
        self.psi_len = length;
    }

    /// Changes whenever the PAT or PMT changed (a new source, a new program
    /// version).
    pub fn psi_generation(&self) -> u64 {
        self.psi_generation
    }

    /// The latest PAT and PMT packets (empty until the stream had both).
    pub fn psi(&self) -> &[u8] {
        &self.psi[..self.psi_len]
    }

    /// The continuity_counter of the first packet on `pid` at or after
    /// `start` (a packet boundary), looking at most `limit_bytes` ahead.
    pub fn next_counter(&self, start: u64, pid: u16, limit_bytes: u64) -> Option<u8> {
        if start < self.window_start() {
            return None;
        }
        let end = self.head.min(start.saturating_add(limit_bytes));
        let memory = self.region.as_slice();
        let mut position = start;
        while position + TS_PACKET_BYTES as u64 <= end {
            // Packets never straddle the end of the region.
            let offset = (position % self.capacity_bytes) as usize;
            let header = &memory[offset..offset + 4];
            if u16::from_be_bytes([header[1], header[2]]) & 0x1FFF == pid {
                return Some(header[3] & 0x0F);
            }
            position += TS_PACKET_BYTES as u64;
        }
        None
    }

    /// The packet at `position` (a packet boundary the writer has passed),
    /// if it is still readable.
    pub fn packet_at(&self, position: u64) -> Option<[u8; TS_PACKET_BYTES]> {
        let Readable::Data { first, second } = self.readable(Cursor { position }, TS_PACKET_BYTES)
        else {
            return None;
        };
        if first.length + second.map_or(0, |s| s.length) < TS_PACKET_BYTES {
            return None;
        }
        let mut packet = [0u8; TS_PACKET_BYTES];
        packet[..first.length].copy_from_slice(self.bytes(first));
        if let Some(second) = second {
            packet[first.length..].copy_from_slice(self.bytes(second));
        }
        Some(packet)
    }

    /// Sets the writer's clock; chunks opened from now on carry this time.
    pub fn set_now_ms(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
        let slot = self.slot(self.open_seq);
        if self.chunks[slot].length_bytes == 0 {
            self.chunks[slot].time_ms = now_ms;
        }
    }

    pub fn region(&self) -> &R {
        &self.region
    }
    pub fn capacity_bytes(&self) -> u64 {
        self.capacity_bytes
    }
    /// Bytes behind the oldest readable byte that are kept away from readers.
    pub fn guard_bytes(&self) -> u64 {
        self.guard_bytes
    }
    /// Absolute position one past the newest byte.
    pub fn head(&self) -> u64 {
        self.head
    }
    pub fn oldest_seq(&self) -> u64 {
        self.oldest_seq
    }
    pub fn open_seq(&self) -> u64 {
        self.open_seq
    }

    /// The oldest position a reader may still read from.
    pub fn window_start(&self) -> u64 {
        let by_bytes = self
            .head
            .saturating_sub(self.capacity_bytes - self.guard_bytes);
        by_bytes.max(self.chunk_ref(self.oldest_seq).start)
    }

    fn slot(&self, seq: u64) -> usize {
        (seq % self.chunks.len() as u64) as usize
    }

    fn chunk_ref(&self, seq: u64) -> &ChunkInfo {
        &self.chunks[self.slot(seq)]
    }

    /// A chunk by sequence number, if it is still in the ring.
    pub fn chunk(&self, seq: u64) -> Option<ChunkInfo> {
        if seq < self.oldest_seq || seq > self.open_seq {
            return None;
        }
        let chunk = *self.chunk_ref(seq);
        debug_assert_eq!(chunk.seq, seq);
        (chunk.start >= self.window_start()).then_some(chunk)
    }

    /// Appends whole TS packets. The writer never waits: old chunks are dropped.
    pub fn append(&mut self, mut packets: &[u8]) {
        assert!(
            packets.len().is_multiple_of(TS_PACKET_BYTES),
            "append takes whole packets"
        );
        while !packets.is_empty() {
            let open = *self.chunk_ref(self.open_seq);
            let room = CHUNK_BYTES - open.length_bytes as usize;
            let take = room.min(packets.len());
            self.write_bytes(&packets[..take]);
            let slot = self.slot(self.open_seq);
            self.chunks[slot].length_bytes += take as u32;
            packets = &packets[take..];
            if take == room {
                self.close_chunk(ChunkFlags::NONE);
            }
        }
    }

    /// Seals the open chunk (if it holds anything) and opens the next one with
    /// `flags`. If the open chunk is empty, `flags` are added to it instead.
    pub fn close_chunk(&mut self, flags: ChunkFlags) {
        let slot = self.slot(self.open_seq);
        if self.chunks[slot].length_bytes == 0 {
            self.chunks[slot].flags = self.chunks[slot].flags.union(flags);
            return;
        }
        self.open_seq += 1;
        if self.open_seq - self.oldest_seq >= self.chunks.len() as u64 {
            self.oldest_seq += 1;
        }
        let slot = self.slot(self.open_seq);
        self.chunks[slot] = ChunkInfo {
            seq: self.open_seq,
            start: self.head,
            length_bytes: 0,
            flags,
            time_ms: self.now_ms,
        };
    }

    /// Seals the open chunk at `position` (a packet boundary inside it) and
    /// opens the next chunk there with `flags`, holding the bytes from
    /// `position` to the head. Used when the writer learns only later that a
    /// chunk should have started a few packets back (at the PAT before a
    /// keyframe). Returns false, changing nothing, if `position` is not in
    /// the open chunk.
    pub fn split_open_at(&mut self, position: u64, flags: ChunkFlags) -> bool {
        let open = *self.chunk_ref(self.open_seq);
        if position < open.start
            || position > self.head
            || !(position - open.start).is_multiple_of(TS_PACKET_BYTES as u64)
        {
            return false;
        }
        if position == open.start {
            self.mark_open(flags);
            return true;
        }
        let moved = (self.head - position) as u32;
        let slot = self.slot(self.open_seq);
        self.chunks[slot].length_bytes -= moved;
        self.close_chunk(flags);
        let slot = self.slot(self.open_seq);
        self.chunks[slot].start = position;
        self.chunks[slot].length_bytes = moved;
        true
    }

    fn write_bytes(&mut self, bytes: &[u8]) {
        let new_head = self.head + bytes.len() as u64;
        self.drop_overwritten(new_head);
        let offset = (self.head % self.capacity_bytes) as usize;
        let capacity = self.capacity_bytes as usize;
        let first = bytes.len().min(capacity - offset);
        let memory = self.region.as_mut_slice();
        memory[offset..offset + first].copy_from_slice(&bytes[..first]);
        memory[..bytes.len() - first].copy_from_slice(&bytes[first..]);
        self.head = new_head;
    }

    /// Drops chunks that start before the window once the head reaches `new_head`.
    fn drop_overwritten(&mut self, new_head: u64) {
        let lowest = new_head.saturating_sub(self.capacity_bytes);
        while self.oldest_seq < self.open_seq && self.chunk_ref(self.oldest_seq).start < lowest {
            self.oldest_seq += 1;
        }
    }

    /// Adds `flags` to the open chunk.
    pub fn mark_open(&mut self, flags: ChunkFlags) {
        let slot = self.slot(self.open_seq);
        self.chunks[slot].flags = self.chunks[slot].flags.union(flags);
    }

    /// Adds `flags` to chunk `seq`, if it is still in the table.
    pub fn mark_chunk(&mut self, seq: u64, flags: ChunkFlags) {
        if seq >= self.oldest_seq && seq <= self.open_seq {
            let slot = self.slot(seq);
            self.chunks[slot].flags = self.chunks[slot].flags.union(flags);
        }
    }

    /// Readable keyframe chunks with data, newest first.
    fn keyframes_newest_first(&self) -> impl Iterator<Item = ChunkInfo> + '_ {
        let window_start = self.window_start();
        (self.oldest_seq..=self.open_seq)
            .rev()
            .map(|seq| *self.chunk_ref(seq))
            .take_while(move |chunk| chunk.start >= window_start)
            .filter(|chunk| chunk.flags.contains(ChunkFlags::KEYFRAME) && chunk.length_bytes > 0)
    }

    /// The newest readable chunk flagged [`ChunkFlags::KEYFRAME`] whose
    /// keyframe arrived whole ([`ChunkFlags::DECODABLE`]), or else the newest
    /// keyframe chunk at all: where a new reader decodes a picture soonest.
    pub fn newest_keyframe(&self) -> Option<ChunkInfo> {
        let mut newest = None;
        for chunk in self.keyframes_newest_first() {
            if chunk.flags.contains(ChunkFlags::DECODABLE) {
                return Some(chunk);
            }
            newest = newest.or(Some(chunk));
        }
        newest
    }

    /// The newest keyframe chunk that arrived at or before `time_ms`, or the
    /// oldest readable keyframe chunk if all are newer: where a time-shifted
    /// reader starts.
    pub fn keyframe_at_or_before(&self, time_ms: u64) -> Option<ChunkInfo> {
        let mut oldest = None;
        for chunk in self.keyframes_newest_first() {
            if chunk.time_ms <= time_ms {
                return Some(chunk);
            }
            oldest = Some(chunk);
        }
        oldest
    }

    /// Milliseconds of stream between the oldest readable chunk and the
    /// writer's clock: how far back a reader can start.
    pub fn timeshift_ms(&self) -> u64 {
        let window_start = self.window_start();
        (self.oldest_seq..=self.open_seq)
            .map(|seq| *self.chunk_ref(seq))
            .find(|chunk| chunk.start >= window_start && chunk.length_bytes > 0)
            .map_or(0, |chunk| self.now_ms.saturating_sub(chunk.time_ms))
    }

    /// True if a reader may start at `position`: inside the readable window
    /// and on a byte the writer has written.
    pub fn holds(&self, position: u64) -> bool {
        position >= self.window_start() && position <= self.head
    }

    /// The live edge: the head, where a reader gets only new bytes.
    pub fn head_cursor(&self) -> Cursor {
        Cursor {
            position: self.head,
        }
    }

    /// Forgets everything written so far (a new source took over the ring):
    /// new readers start at the head, and cursors from before are lapped.
    pub fn restart(&mut self) {
        self.close_chunk(ChunkFlags::DISCONTINUITY);
        self.oldest_seq = self.open_seq;
    }

    /// Where a new reader starts: the newest keyframe chunk if there is one,
    /// else the start of the newest chunk with data.
    pub fn live_start(&self) -> Cursor {
        match self.newest_keyframe() {
            Some(chunk) => Cursor {
                position: chunk.start,
            },
            None => self.newest_chunk_start(),
        }
    }

    /// The start of the newest chunk with data.
    pub fn newest_chunk_start(&self) -> Cursor {
        let open = self.chunk_ref(self.open_seq);
        let position = if open.length_bytes > 0 || self.open_seq == self.oldest_seq {
            open.start
        } else {
            self.chunk_ref(self.open_seq - 1).start
        };
        Cursor {
            position: position.max(self.window_start()),
        }
    }

    /// What a reader at `cursor` may send, at most `limit_bytes`.
    pub fn readable(&self, cursor: Cursor, limit_bytes: usize) -> Readable {
        assert!(cursor.position <= self.head, "cursor ahead of the writer");
        if cursor.position < self.window_start() {
            return Readable::Lapped;
        }
        let available = ((self.head - cursor.position) as usize).min(limit_bytes);
        if available == 0 {
            return Readable::Empty;
        }
        let offset = (cursor.position % self.capacity_bytes) as usize;
        let capacity = self.capacity_bytes as usize;
        let first = available.min(capacity - offset);
        let second = (available > first).then_some(Span {
            offset: 0,
            length: available - first,
        });
        Readable::Data {
            first: Span {
                offset,
                length: first,
            },
            second,
        }
    }

    /// The bytes of a span, for copying readers.
    pub fn bytes(&self, span: Span) -> &[u8] {
        &self.region.as_slice()[span.offset..span.offset + span.length]
    }
}

/// A ring region on the heap, for unit tests of the ring and its writers.
#[cfg(test)]
pub(crate) mod test_support {
    use ringcast_hal::Region;

    pub(crate) struct VecRegion(pub(crate) Vec<u8>);

    /// `count` TS packets, each carrying its index (from `first_index`) in
    /// bytes 1..9, so tests can tell which packet a reader got.
    pub(crate) fn numbered_packets(count: usize, first_index: usize) -> Vec<u8> {
        let packet_bytes = crate::limits::TS_PACKET_BYTES;
        let mut bytes = vec![0u8; count * packet_bytes];
        for (i, packet) in bytes.chunks_mut(packet_bytes).enumerate() {
            packet[0] = 0x47;
            packet[1..9].copy_from_slice(&((first_index + i) as u64).to_le_bytes());
        }
        bytes
    }

    /// A ring of `chunks` chunks on the heap, with a half-chunk guard.
    pub(crate) fn vec_ring(chunks: usize) -> super::Ring<VecRegion> {
        let chunk_bytes = crate::limits::CHUNK_BYTES;
        super::Ring::new(VecRegion(vec![0; chunks * chunk_bytes]), chunk_bytes / 2)
    }

    impl Region for VecRegion {
        fn as_mut_slice(&mut self) -> &mut [u8] {
            &mut self.0
        }
        fn as_slice(&self) -> &[u8] {
            &self.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_support::{numbered_packets as packets, vec_ring as ring, VecRegion};

    fn collect(ring: &Ring<VecRegion>, cursor: Cursor) -> Vec<u8> {
        match ring.readable(cursor, usize::MAX) {
            Readable::Data { first, second } => {
                let mut out = ring.bytes(first).to_vec();
                if let Some(second) = second {
                    out.extend_from_slice(ring.bytes(second));
                }
                out
            }
            _ => Vec::new(),
        }
    }

    #[test]
    fn empty_ring_has_nothing_to_read() {
        let ring = ring(4);
        let cursor = ring.live_start();
        assert_eq!(cursor.position, 0);
        assert_eq!(ring.readable(cursor, 1000), Readable::Empty);
    }

    #[test]
    fn reader_gets_exact_bytes_in_order() {
        let mut ring = ring(4);
        let cursor = ring.live_start();
        let data = packets(10, 0);
        ring.append(&data);
        assert_eq!(collect(&ring, cursor), data);
    }

    #[test]
    fn chunks_are_numbered_and_full_sized() {
        let mut ring = ring(4);
        let per_chunk = CHUNK_BYTES / TS_PACKET_BYTES;
        ring.append(&packets(per_chunk * 2 + 1, 0));
        assert_eq!(ring.open_seq(), 2);
        let first = ring.chunk(0).expect("chunk 0 present");
        assert_eq!(first.length_bytes as usize, CHUNK_BYTES);
        assert_eq!(ring.chunk(1).map(|c| c.start), Some(CHUNK_BYTES as u64));
        assert_eq!(ring.live_start().position, 2 * CHUNK_BYTES as u64);
    }

    #[test]
    fn wrap_around_keeps_bytes_contiguous_for_the_reader() {
        let mut ring = ring(4);
        let per_chunk = CHUNK_BYTES / TS_PACKET_BYTES;
        ring.append(&packets(per_chunk * 3 + 5, 0));
        let cursor = Cursor {
            position: ring.head() - 20 * TS_PACKET_BYTES as u64,
        };
        let more = packets(per_chunk, 10_000);
        ring.append(&more);
        let got = collect(&ring, cursor);
        assert_eq!(got.len(), 20 * TS_PACKET_BYTES + more.len());
        assert_eq!(&got[20 * TS_PACKET_BYTES..], &more[..]);
        assert!(matches!(
            ring.readable(cursor, usize::MAX),
            Readable::Data {
                second: Some(_),
                ..
            }
        ));
    }

    #[test]
    fn slow_reader_is_lapped_never_served_overwritten_bytes() {
        let mut ring = ring(4);
        let cursor = ring.live_start();
        let per_chunk = CHUNK_BYTES / TS_PACKET_BYTES;
        ring.append(&packets(per_chunk * 4, 0));
        assert_eq!(ring.readable(cursor, usize::MAX), Readable::Lapped);
        let fresh = ring.live_start();
        assert!(fresh.position >= ring.window_start());
        assert_ne!(ring.readable(fresh, usize::MAX), Readable::Lapped);
    }

    #[test]
    fn early_close_makes_short_chunks_and_table_wraps() {
        let mut ring = ring(4);
        let slots = chunk_slots_for(4 * CHUNK_BYTES) as u64;
        for i in 0..(slots * 3) {
            ring.append(&packets(1, i as usize));
            ring.close_chunk(ChunkFlags::KEYFRAME);
        }
        assert_eq!(ring.open_seq(), slots * 3);
        assert!(ring.open_seq() - ring.oldest_seq() < slots);
        assert_eq!(ring.chunk(0), None);
        let newest = ring
            .chunk(ring.open_seq() - 1)
            .expect("newest sealed chunk");
        assert!(newest.flags.contains(ChunkFlags::KEYFRAME));
        assert_eq!(newest.length_bytes as usize, TS_PACKET_BYTES);
    }

    #[test]
    fn close_on_empty_chunk_merges_flags() {
        let mut ring = ring(4);
        ring.close_chunk(ChunkFlags::DISCONTINUITY);
        ring.close_chunk(ChunkFlags::KEYFRAME);
        assert_eq!(ring.open_seq(), 0);
        let open = ring.chunk(0).expect("open chunk");
        assert!(open.flags.contains(ChunkFlags::DISCONTINUITY));
        assert!(open.flags.contains(ChunkFlags::KEYFRAME));
    }

    #[test]
    fn new_readers_start_at_the_newest_keyframe() {
        let mut ring = ring(4);
        ring.append(&packets(3, 0));
        ring.close_chunk(ChunkFlags::KEYFRAME);
        let keyframe_at = ring.head();
        ring.append(&packets(3, 3));
        ring.close_chunk(ChunkFlags::NONE);
        ring.append(&packets(2, 6));
        assert_eq!(ring.live_start().position, keyframe_at);
        ring.mark_open(ChunkFlags::KEYFRAME);
        assert_eq!(
            ring.live_start().position,
            ring.newest_chunk_start().position
        );
    }

    #[test]
    fn restart_hides_old_data() {
        let mut ring = ring(4);
        let old = ring.live_start();
        ring.append(&packets(3, 0));
        ring.restart();
        assert_eq!(ring.readable(old, usize::MAX), Readable::Lapped);
        let fresh = ring.live_start();
        assert_eq!(fresh.position, ring.head());
        ring.append(&packets(1, 9));
        assert_eq!(collect(&ring, fresh), packets(1, 9));
    }

    #[test]
    fn split_moves_the_boundary_back_to_a_packet_in_the_open_chunk() {
        let mut ring = ring(4);
        ring.append(&packets(3, 0));
        let psi_at = ring.head();
        ring.append(&packets(2, 3));
        ring.append(&packets(4, 5));
        assert!(ring.split_open_at(psi_at, ChunkFlags::KEYFRAME));
        let keyframe = ring.newest_keyframe().expect("keyframe chunk");
        assert_eq!(keyframe.start, psi_at);
        assert_eq!(keyframe.length_bytes as u64, ring.head() - psi_at);
        assert_eq!(
            ring.chunk(keyframe.seq - 1)
                .map(|c| c.length_bytes as usize),
            Some(3 * TS_PACKET_BYTES)
        );
        assert_eq!(collect(&ring, ring.live_start()), packets(6, 3));
        // Outside the open chunk, or off a packet boundary: refused.
        assert!(!ring.split_open_at(0, ChunkFlags::KEYFRAME));
        assert!(!ring.split_open_at(psi_at + 1, ChunkFlags::KEYFRAME));
    }

    #[test]
    fn time_shift_finds_the_keyframe_at_or_before_a_time() {
        let mut ring = ring(8);
        let mut starts = Vec::new();
        for second in 0..5u64 {
            ring.set_now_ms(second * 1000);
            ring.close_chunk(ChunkFlags::KEYFRAME);
            starts.push(ring.head());
            ring.append(&packets(10, 0));
        }
        ring.set_now_ms(5000);
        assert_eq!(
            ring.keyframe_at_or_before(2500).map(|c| c.start),
            Some(starts[2])
        );
        assert_eq!(
            ring.keyframe_at_or_before(3000).map(|c| c.start),
            Some(starts[3])
        );
        // Further back than the ring: the oldest keyframe.
        assert_eq!(
            ring.keyframe_at_or_before(0).map(|c| c.start),
            Some(starts[0])
        );
        assert_eq!(ring.timeshift_ms(), 5000);
        assert!(ring.holds(starts[1]) && ring.holds(ring.head()));
        assert!(!ring.holds(ring.head() + 188));
    }

    #[test]
    fn limit_bounds_a_read() {
        let mut ring = ring(4);
        let cursor = ring.live_start();
        ring.append(&packets(10, 0));
        assert_eq!(ring.readable(cursor, 188).length(), 188);
    }
}
