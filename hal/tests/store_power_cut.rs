//! Power cuts, exhaustively: a scripted sequence of updates is replayed with
//! the simulated flash losing power at every low-level write (page program
//! or block erase) it makes, and again with every write torn part-way
//! through its page. After each cut the store is reopened, and it must hold,
//! record for record, either everything before the interrupted update or
//! everything after it; then the rest of the script runs on the reopened
//! store and must end in the script's final state.

use std::collections::BTreeMap;
use std::time::Instant;

use ringcast_hal::sim::{SimError, SimFlash};
use ringcast_hal::store::{OpenReport, RecordStore, StoreError, StoreLimits};
use ringcast_hal::FlashGeometry;

const LIMITS: StoreLimits = StoreLimits {
    records_max: 8,
    value_bytes_max: 200,
};

type State = BTreeMap<String, Vec<u8>>;

#[derive(Clone, Debug)]
enum Change {
    Put(&'static str, Vec<u8>),
    Remove(&'static str),
}

/// One update: changes applied together, then one commit.
type Update = Vec<Change>;

fn bytes(length: usize, seed: usize) -> Vec<u8> {
    (0..length)
        .map(|index| (index * 31 + seed * 7) as u8)
        .collect()
}

/// Two hundred updates over seven records: first writes, overwrites,
/// removals, values growing to the limit and shrinking to nothing, several
/// records in one update, and updates that change nothing.
fn script() -> Vec<Update> {
    let mut updates = vec![vec![
        Change::Put("node_id", bytes(32, 1)),
        Change::Put("dlna_uuid", bytes(16, 2)),
        Change::Put("friendly_name", b"ringcast on box".to_vec()),
    ]];
    for round in 0..199usize {
        let update = match round % 9 {
            0 => vec![Change::Put("peer_cache", bytes(round * 37 % 201, round))],
            1 => vec![Change::Put("dht", bytes(round * 53 % 180, round))],
            2 => vec![Change::Put("friendly_name", bytes(5 + round % 60, round))],
            3 if round % 2 == 0 => vec![Change::Put("pcp_nonce", bytes(12, round))],
            3 => vec![Change::Remove("pcp_nonce")],
            4 => vec![Change::Put("peer_cache", bytes(200, round))],
            5 => vec![
                Change::Put("settings", bytes(3, round)),
                Change::Remove("dht"),
            ],
            // Nothing changes: the commit writes nothing.
            6 => vec![Change::Put("node_id", bytes(32, 1))],
            7 => vec![Change::Put("peer_cache", Vec::new())],
            _ => vec![
                Change::Put("dht", bytes(150, round)),
                Change::Put("peer_cache", bytes(90, round)),
                Change::Put("settings", bytes(8, round)),
            ],
        };
        updates.push(update);
    }
    updates
}

fn apply_to_model(state: &mut State, update: &Update) {
    for change in update {
        match change {
            Change::Put(name, value) => {
                state.insert(name.to_string(), value.clone());
            }
            Change::Remove(name) => {
                state.remove(*name);
            }
        }
    }
}

fn apply_to_store(store: &mut RecordStore<SimFlash>, update: &Update) {
    for change in update {
        match change {
            Change::Put(name, value) => store.put(name, value).expect("within the limits"),
            Change::Remove(name) => {
                store.remove(name);
            }
        }
    }
}

fn state_of(store: &RecordStore<SimFlash>) -> State {
    store
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_vec()))
        .collect()
}

/// The model's state after each prefix of the script: `states[k]` is the
/// state before update `k`.
fn model_states(script: &[Update]) -> Vec<State> {
    let mut states = vec![State::new()];
    for update in script {
        let mut next = states.last().expect("at least one").clone();
        apply_to_model(&mut next, update);
        states.push(next);
    }
    states
}

fn open(flash: SimFlash) -> (RecordStore<SimFlash>, OpenReport) {
    RecordStore::open(flash, LIMITS).expect("the store opens")
}

/// The store just before each update of an uncut run, and the flash ops
/// made before it; the last entry is the end of the script.
struct Run {
    before: Vec<(RecordStore<SimFlash>, u64)>,
    ops: u64,
}

/// Runs the whole script without a cut, keeping a copy of the store before
/// each update.
fn uncut_run(geometry: FlashGeometry, script: &[Update], states: &[State]) -> Run {
    let (mut store, report) = open(SimFlash::new(geometry));
    assert_eq!(report, OpenReport::Fresh);
    let mut before = Vec::new();
    for (index, update) in script.iter().enumerate() {
        before.push((store.clone(), store.flash().ops()));
        apply_to_store(&mut store, update);
        store.commit().expect("no cut");
        assert_eq!(state_of(&store), states[index + 1]);
    }
    let ops = store.flash().ops();
    let (reopened, _) = open(store.into_flash());
    assert_eq!(&state_of(&reopened), states.last().expect("final"));
    Run { before, ops }
}

/// What a cut left.
struct Outcome {
    /// The interrupted update survived (its commit was already whole).
    kept_new: bool,
    /// `open` saw a newer but damaged copy.
    recovered_older: bool,
}

/// Forks the uncut run just before the update that makes op `op`, lets
/// `arm` schedule a cut relative to that update's first op, and checks the
/// state after the cut and the end of the script.
fn fork_with_cut(
    run: &Run,
    script: &[Update],
    states: &[State],
    op: u64,
    arm: impl FnOnce(&mut SimFlash, u64),
    label: &str,
) -> Outcome {
    let index = run.before.partition_point(|(_, ops)| *ops <= op) - 1;
    let (store, ops_before) = &run.before[index];
    let mut store = store.clone();
    arm(store.flash_mut(), op - ops_before);
    let update = &script[index];
    apply_to_store(&mut store, update);
    match store.commit() {
        Err(StoreError::Flash(SimError::PowerLost)) => {}
        other => panic!("{label}: update {index}: expected a power cut, got {other:?}"),
    }
    let mut flash = store.into_flash();
    flash.reboot();
    let (mut store, report) = open(flash);
    let (before, after) = (&states[index], &states[index + 1]);
    let found = state_of(&store);
    assert!(
        found == *before || found == *after,
        "{label}: update {index}: reopened to {found:?} ({report:?}), \
         neither {before:?} nor {after:?}"
    );
    if !before.is_empty() {
        assert!(
            matches!(
                report,
                OpenReport::Loaded { .. } | OpenReport::RecoveredOlder { .. }
            ),
            "{label}: update {index}: {report:?}"
        );
    }
    let outcome = Outcome {
        kept_new: found == *after && found != *before,
        recovered_older: matches!(report, OpenReport::RecoveredOlder { .. }),
    };
    if found == *before {
        // The update was lost with the power: the node makes it again.
        apply_to_store(&mut store, update);
    }
    finish(
        store,
        &script[index + 1..],
        states.last().expect("final"),
        label,
    );
    outcome
}

/// Runs the rest of the script and checks the final state, also reopened.
fn finish(mut store: RecordStore<SimFlash>, rest: &[Update], last: &State, label: &str) {
    store.commit().expect("power is back");
    for update in rest {
        apply_to_store(&mut store, update);
        store.commit().expect("power is back");
    }
    assert_eq!(&state_of(&store), last, "{label}: final state");
    let (reopened, report) = open(store.into_flash());
    assert!(
        matches!(report, OpenReport::Loaded { .. }),
        "{label}: {report:?}"
    );
    assert_eq!(&state_of(&reopened), last, "{label}: final state reopened");
}

/// Every cut point is checked (stride 1), except where `RINGCAST_CUT_STRIDE`
/// says otherwise: `cross/test` samples every 13th one under qemu-user, where
/// the full sweep takes minutes per target; `tests/run` runs it in full on
/// the host.
fn cut_stride() -> usize {
    std::env::var("RINGCAST_CUT_STRIDE")
        .ok()
        .and_then(|value| value.parse().ok())
        .filter(|&stride| stride >= 1)
        .unwrap_or(1)
}

fn cut_everywhere(geometry: FlashGeometry) {
    let started = Instant::now();
    let script = script();
    let states = model_states(&script);
    let run = uncut_run(geometry, &script, &states);
    assert!(
        run.ops >= 1000,
        "only {} flash ops: too few cut points",
        run.ops
    );
    let page_bytes = geometry.page_bytes as usize;
    let (mut cuts, mut kept_new, mut recovered_older) = (0, 0, 0);
    let mut count = |outcome: Outcome| {
        cuts += 1;
        kept_new += usize::from(outcome.kept_new);
        recovered_older += usize::from(outcome.recovered_older);
    };
    for op in (0..run.ops).step_by(cut_stride()) {
        let label = format!("cut before op {op}");
        let arm = |flash: &mut SimFlash, ops: u64| flash.cut_power_after_ops(ops);
        count(fork_with_cut(&run, &script, &states, op, arm, &label));
        for bytes in [1, page_bytes / 2, page_bytes - 1] {
            let label = format!("cut in op {op} after {bytes} bytes");
            let arm = |flash: &mut SimFlash, ops: u64| flash.cut_power_mid_page(ops, bytes);
            count(fork_with_cut(&run, &script, &states, op, arm, &label));
        }
    }
    // Power lost in the sync that ends each commit: every write is done, so
    // the new state is there although the commit reported an error.
    let mut syncs = 0;
    for (index, update) in script.iter().enumerate() {
        if states[index] == states[index + 1] {
            continue;
        }
        let op = run.before[index].1;
        let label = format!("cut in the sync of update {index}");
        let arm = |flash: &mut SimFlash, _: u64| flash.cut_power_at_next_sync();
        let outcome = fork_with_cut(&run, &script, &states, op, arm, &label);
        assert!(outcome.kept_new, "{label}: {update:?}");
        syncs += 1;
    }
    println!(
        "{geometry:?}: {} updates, {} flash ops, {cuts} cuts checked in {:?}; \
         {kept_new} kept the new state, {recovered_older} recovered an older copy; \
         {syncs} cuts in a sync kept the new state",
        script.len(),
        run.ops,
        started.elapsed()
    );
    // A cut in the header page's last byte leaves an intact header over a
    // torn payload; a cut never keeps the new state (the header goes last).
    assert!(recovered_older > 0);
    assert_eq!(kept_new, 0);
}

/// Copies a few pages long, several to an erase block.
#[test]
fn every_cut_keeps_the_old_or_the_new_state_small_copies() {
    cut_everywhere(FlashGeometry {
        block_bytes: 4096,
        page_bytes: 64,
        blocks: 3,
    });
}

/// Copies that span several erase blocks.
#[test]
fn every_cut_keeps_the_old_or_the_new_state_large_copies() {
    cut_everywhere(FlashGeometry {
        block_bytes: 256,
        page_bytes: 64,
        blocks: 16,
    });
}
