//! The node's state that outlives a restart: its identity, the DLNA UUID and
//! friendly name TVs know it by, and a boot counter, kept in the HAL's
//! power-safe record store (`ringcast_hal::store`).
//!
//! [`NodeState::load_or_create`] reads the records, creating what is missing
//! (random identity and UUID) and counting the boot; the caller commits. What
//! a damaged or newer store means for the node is decided here too: damage
//! starts fresh records (and is logged by the caller), a store from a newer
//! ringcast is never written to. Values are postcard-encoded by the store.

use core::fmt::Write as _;

use heapless::String as FixedString;
use ringcast_hal::store::{RecordStore, StoreError, StoreLimits};
use ringcast_hal::Flash;

/// Record names.
pub const NODE_ID: &str = "node_id";
pub const DLNA_UUID: &str = "dlna_uuid";
pub const FRIENDLY_NAME: &str = "friendly_name";
pub const BOOTS: &str = "boots";

/// Bytes of the node identity.
pub const NODE_ID_BYTES: usize = 32;
/// Longest friendly name (UPnP recommends under 64 characters).
pub const FRIENDLY_NAME_BYTES_MAX: usize = 64;

/// Records and their sizes the daemon's store is opened with.
pub const LIMITS: StoreLimits = StoreLimits {
    records_max: 32,
    value_bytes_max: 1024,
};

/// Record of the PCP mapping of the peer port (its nonce; see
/// `portmap::PcpRecord`), and of the LAN HTTP port when that is mapped.
pub const PORTMAP_PCP: &str = "portmap_pcp";
pub const PORTMAP_PCP_LAN_HTTP: &str = "portmap_pcp_http";

/// The DLNA SystemUpdateID and the channel list it was counted for.
pub const DLNA_UPDATE_ID: &str = "dlna_update_id";

/// The DLNA content's SystemUpdateID for this channel list: the stored one
/// if the list is the one it was counted for, else one more (and the store
/// remembers the new list; the caller commits). TVs cache a server's
/// content and look again when this number changes.
pub fn content_update_id<F: Flash>(
    store: &mut RecordStore<F>,
    names: &[&str],
) -> Result<u32, StoreError<F::Error>> {
    let hash = names_hash(names);
    let (id, stored_hash) = store.get_as::<(u32, u64)>(DLNA_UPDATE_ID).unwrap_or((0, 0));
    if stored_hash == hash && id != 0 {
        return Ok(id);
    }
    let next = id.wrapping_add(1).max(1);
    store.put_as(DLNA_UPDATE_ID, &(next, hash))?;
    Ok(next)
}

/// FNV-1a over the names, in order, each ended by a zero byte.
fn names_hash(names: &[&str]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for name in names {
        for byte in name.bytes().chain(core::iter::once(0)) {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3);
        }
    }
    hash
}

/// Records the running node reads and writes after start-up, through the
/// store `main` keeps open (object-safe, so the driver needs no flash type).
pub trait Persist {
    /// The value of record `name`, if any.
    fn load(&self, name: &str) -> Option<&[u8]>;
    /// Sets record `name` (or removes it, for `None`) and commits at once
    /// if that changed anything. The error is the store's, as text for the log.
    fn save(&mut self, name: &str, value: Option<&[u8]>) -> Result<(), StoreFailure>;
}

/// A record could not be kept (the store is full or the flash failed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreFailure;

impl core::fmt::Display for StoreFailure {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("the state store could not keep the record")
    }
}

impl<F: Flash> Persist for RecordStore<F> {
    fn load(&self, name: &str) -> Option<&[u8]> {
        self.get(name)
    }

    fn save(&mut self, name: &str, value: Option<&[u8]>) -> Result<(), StoreFailure> {
        if self.get(name) == value {
            return Ok(());
        }
        match value {
            Some(value) => self.put(name, value).map_err(|_| StoreFailure)?,
            None => {
                self.remove(name);
            }
        }
        self.commit().map_err(|_| StoreFailure)
    }
}

/// What the node keeps across restarts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeState {
    pub node_id: [u8; NODE_ID_BYTES],
    pub dlna_uuid: [u8; 16],
    pub friendly_name: FixedString<FRIENDLY_NAME_BYTES_MAX>,
    /// Starts of this node, this one included.
    pub boots: u64,
}

impl NodeState {
    /// A node that keeps nothing: fresh random identity each start.
    pub fn ephemeral(random: &mut impl FnMut(&mut [u8]), hostname: &str) -> Self {
        let mut node_id = [0u8; NODE_ID_BYTES];
        random(&mut node_id);
        Self {
            node_id,
            dlna_uuid: new_uuid(random),
            friendly_name: default_friendly_name(hostname),
            boots: 1,
        }
    }

    /// Reads the node's records from `store`, creating missing ones, and
    /// counts this boot. Returns the state and whether the store changed
    /// (the caller commits).
    pub fn load_or_create<F: Flash>(
        store: &mut RecordStore<F>,
        random: &mut impl FnMut(&mut [u8]),
        hostname: &str,
    ) -> Result<Self, StoreError<F::Error>> {
        let mut state = Self::ephemeral(random, hostname);
        match store.get_as::<[u8; NODE_ID_BYTES]>(NODE_ID) {
            Some(node_id) => state.node_id = node_id,
            None => store.put_as(NODE_ID, &state.node_id)?,
        }
        match store.get_as::<[u8; 16]>(DLNA_UUID) {
            Some(uuid) => state.dlna_uuid = uuid,
            None => store.put_as(DLNA_UUID, &state.dlna_uuid)?,
        }
        let stored_name = store
            .get(FRIENDLY_NAME)
            .and_then(|bytes| postcard::from_bytes::<&str>(bytes).ok());
        match stored_name {
            Some(name) if name.len() <= FRIENDLY_NAME_BYTES_MAX => {
                state.friendly_name.clear();
                let _ = state.friendly_name.push_str(name);
            }
            _ => store.put_as(FRIENDLY_NAME, &state.friendly_name.as_str())?,
        }
        state.boots = store.get_as::<u64>(BOOTS).unwrap_or(0).saturating_add(1);
        store.put_as(BOOTS, &state.boots)?;
        Ok(state)
    }

    /// The node identity as lowercase hex.
    pub fn node_id_hex(&self) -> FixedString<{ 2 * NODE_ID_BYTES }> {
        let mut text = FixedString::new();
        for byte in self.node_id {
            let _ = write!(text, "{byte:02x}");
        }
        text
    }

    /// The DLNA UUID in its text form (`uuid:` prefix not included).
    pub fn dlna_uuid_text(&self) -> FixedString<36> {
        uuid_text(&self.dlna_uuid)
    }
}

/// A random (version 4, RFC 9562 §5.4) UUID.
pub fn new_uuid(random: &mut impl FnMut(&mut [u8])) -> [u8; 16] {
    let mut uuid = [0u8; 16];
    random(&mut uuid);
    uuid[6] = (uuid[6] & 0x0F) | 0x40;
    uuid[8] = (uuid[8] & 0x3F) | 0x80;
    uuid
}

/// `8-4-4-4-12` hex form of a UUID.
pub fn uuid_text(uuid: &[u8; 16]) -> FixedString<36> {
    let mut text = FixedString::new();
    for (index, byte) in uuid.iter().enumerate() {
        if matches!(index, 4 | 6 | 8 | 10) {
            let _ = text.push('-');
        }
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// "ringcast on HOST", cut to fit.
pub fn default_friendly_name(hostname: &str) -> FixedString<FRIENDLY_NAME_BYTES_MAX> {
    let mut name = FixedString::new();
    let _ = name.push_str("ringcast on ");
    for character in hostname.chars() {
        if name.push(character).is_err() {
            break;
        }
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringcast_hal::sim::SimFlash;
    use ringcast_hal::FlashGeometry;

    fn counter_random() -> impl FnMut(&mut [u8]) {
        let mut next = 0u8;
        move |bytes: &mut [u8]| {
            for byte in bytes {
                next = next.wrapping_add(1);
                *byte = next;
            }
        }
    }

    fn flash() -> SimFlash {
        SimFlash::new(FlashGeometry {
            block_bytes: 64 * 1024,
            page_bytes: 4096,
            blocks: 2,
        })
    }

    #[test]
    fn identity_is_created_once_and_kept() {
        let mut random = counter_random();
        let (mut store, _) = RecordStore::open(flash(), LIMITS).expect("open");
        let first = NodeState::load_or_create(&mut store, &mut random, "box").expect("load");
        store.commit().expect("commit");
        assert_eq!(first.boots, 1);
        assert_eq!(first.friendly_name.as_str(), "ringcast on box");
        let second = NodeState::load_or_create(&mut store, &mut random, "other").expect("load");
        assert_eq!(second.node_id, first.node_id);
        assert_eq!(second.dlna_uuid, first.dlna_uuid);
        assert_eq!(second.friendly_name, first.friendly_name);
        assert_eq!(second.boots, 2);
    }

    #[test]
    fn update_id_changes_with_the_channel_list_only() {
        let (mut store, _) = RecordStore::open(flash(), LIMITS).expect("open");
        let first = content_update_id(&mut store, &["tv", "radio"]).unwrap();
        assert_eq!(first, 1);
        assert_eq!(content_update_id(&mut store, &["tv", "radio"]).unwrap(), 1);
        assert_eq!(content_update_id(&mut store, &["radio", "tv"]).unwrap(), 2);
        assert_eq!(content_update_id(&mut store, &["radio"]).unwrap(), 3);
        assert_eq!(content_update_id(&mut store, &["radio"]).unwrap(), 3);
    }

    #[test]
    fn persist_commits_only_changes() {
        let (mut store, _) = RecordStore::open(flash(), LIMITS).expect("open");
        store.commit().expect("commit");
        let sequence = store.sequence();
        let persist: &mut dyn Persist = &mut store;
        persist.save(PORTMAP_PCP, Some(b"abc")).expect("save");
        persist.save(PORTMAP_PCP, Some(b"abc")).expect("save again");
        assert_eq!(persist.load(PORTMAP_PCP), Some(&b"abc"[..]));
        persist.save(PORTMAP_PCP, None).expect("remove");
        assert_eq!(persist.load(PORTMAP_PCP), None);
        assert_eq!(store.sequence(), sequence + 2);
    }

    #[test]
    fn uuid_is_version_4_in_text_form() {
        let uuid = new_uuid(&mut counter_random());
        let text = uuid_text(&uuid);
        assert_eq!(text.len(), 36);
        assert_eq!(&text[14..15], "4");
        assert!(matches!(&text[19..20], "8" | "9" | "a" | "b"));
    }
}
