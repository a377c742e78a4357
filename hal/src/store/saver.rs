//! When to commit: the flash wear policy as a sans-IO timer. The caller
//! stages records in the store, tells the [`Saver`] whether the change is
//! *durable* (identity, keys, settings: must survive the next power cut) or
//! *volatile* (peer cache, DHT table: losing the last hour costs little),
//! and asks [`Saver::commit_due`] with the current time. Volatile changes are
//! written at most every `volatile_interval_ms`; durable changes at once,
//! but from a bucket of [`DURABLE_COMMITS_BURST`] commits that refills one
//! every [`DURABLE_REFILL_MS`], so even a runaway stream of durable changes
//! has a bounded write rate ([`SavePolicy::commits_max`]).

/// Default for [`SavePolicy::volatile_interval_ms`]: one hour.
pub const VOLATILE_INTERVAL_MS_DEFAULT: u64 = 60 * 60 * 1000;
/// Durable commits that may happen back to back (a start-up writes a few).
pub const DURABLE_COMMITS_BURST: u32 = 8;
/// One more durable commit is allowed per this many milliseconds.
pub const DURABLE_REFILL_MS: u64 = 10 * 60 * 1000;
/// After a failed commit, the next is asked for no sooner than this.
pub const RETRY_MS: u64 = 60 * 1000;
/// A day in milliseconds.
pub const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// How often the store may be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SavePolicy {
    /// Volatile changes are committed at most this often (and only if
    /// something changed). 0 means "with the next call".
    pub volatile_interval_ms: u64,
}

impl Default for SavePolicy {
    fn default() -> Self {
        Self {
            volatile_interval_ms: VOLATILE_INTERVAL_MS_DEFAULT,
        }
    }
}

impl SavePolicy {
    /// The most commits a [`Saver`] asks for in any `duration_ms`, whatever
    /// the changes: one per volatile interval (plus one), and the durable
    /// bucket's burst plus its refills. Failed commits count too.
    pub fn commits_max(&self, duration_ms: u64) -> u64 {
        let volatile = duration_ms / self.volatile_interval_ms.max(1) + 1;
        let durable = u64::from(DURABLE_COMMITS_BURST) + duration_ms / DURABLE_REFILL_MS;
        volatile + durable
    }
}

/// Decides when the store is committed; see the module documentation.
#[derive(Clone, Debug)]
pub struct Saver {
    policy: SavePolicy,
    durable_pending: bool,
    volatile_pending: bool,
    /// When the last commit was handed out (or the saver was made).
    last_commit_ms: u64,
    /// Durable commits left in the bucket.
    tokens: u32,
    /// When the bucket last gained a token, or was last seen full.
    refilled_ms: u64,
    /// No commit is handed out before this (after a failure).
    retry_ms: u64,
    /// What the last handed-out commit carried, to re-arm it if it fails.
    handed_durable: bool,
    handed_volatile: bool,
    /// The latest time seen.
    now_ms: u64,
}

impl Saver {
    /// A saver with nothing pending and a full durable bucket. The first
    /// volatile commit comes no sooner than one interval after `now_ms`.
    pub fn new(policy: SavePolicy, now_ms: u64) -> Self {
        Self {
            policy,
            durable_pending: false,
            volatile_pending: false,
            last_commit_ms: now_ms,
            tokens: DURABLE_COMMITS_BURST,
            refilled_ms: now_ms,
            retry_ms: 0,
            handed_durable: false,
            handed_volatile: false,
            now_ms,
        }
    }

    /// The policy it enforces.
    pub fn policy(&self) -> SavePolicy {
        self.policy
    }

    /// Records that a staged record changed; `durable` for records that
    /// must survive the next power cut.
    pub fn note_change(&mut self, durable: bool) {
        if durable {
            self.durable_pending = true;
        } else {
            self.volatile_pending = true;
        }
    }

    /// True if changes are waiting for a commit.
    pub fn is_pending(&self) -> bool {
        self.durable_pending || self.volatile_pending
    }

    fn refill(&mut self, now_ms: u64) {
        let gained = now_ms.saturating_sub(self.refilled_ms) / DURABLE_REFILL_MS;
        if gained > 0 {
            let tokens = u64::from(self.tokens) + gained;
            self.tokens = tokens.min(u64::from(DURABLE_COMMITS_BURST)) as u32;
            self.refilled_ms += gained * DURABLE_REFILL_MS;
        }
        if self.tokens == DURABLE_COMMITS_BURST {
            self.refilled_ms = now_ms;
        }
    }

    /// True if the caller should commit the store now. Each true counts as
    /// one commit; if that commit fails, call [`Saver::note_commit_failed`].
    pub fn commit_due(&mut self, now_ms: u64) -> bool {
        let now_ms = now_ms.max(self.now_ms);
        self.now_ms = now_ms;
        self.refill(now_ms);
        if !self.is_pending() || now_ms < self.retry_ms {
            return false;
        }
        let interval_over = now_ms
            >= self
                .last_commit_ms
                .saturating_add(self.policy.volatile_interval_ms);
        let durable_now = self.durable_pending && self.tokens > 0;
        if !interval_over && !durable_now {
            return false;
        }
        if !interval_over {
            self.tokens -= 1;
        }
        self.handed_durable = self.durable_pending;
        self.handed_volatile = self.volatile_pending;
        self.durable_pending = false;
        self.volatile_pending = false;
        self.last_commit_ms = now_ms;
        true
    }

    /// The commit handed out last failed: its changes are pending again,
    /// and no commit is asked for during the next [`RETRY_MS`].
    pub fn note_commit_failed(&mut self, now_ms: u64) {
        self.durable_pending |= self.handed_durable;
        self.volatile_pending |= self.handed_volatile;
        self.retry_ms = now_ms.max(self.now_ms).saturating_add(RETRY_MS);
    }

    /// When [`Saver::commit_due`] may next return true, or None while
    /// nothing is pending. A deadline at or before now means "call it now".
    pub fn next_deadline_ms(&self) -> Option<u64> {
        if !self.is_pending() {
            return None;
        }
        let interval_at = self
            .last_commit_ms
            .saturating_add(self.policy.volatile_interval_ms);
        let at = match (self.durable_pending, self.tokens) {
            (true, 0) => interval_at.min(self.refilled_ms + DURABLE_REFILL_MS),
            (true, _) => self.now_ms,
            (false, _) => interval_at,
        };
        Some(at.max(self.retry_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE_MS: u64 = 60 * 1000;

    #[test]
    fn volatile_changes_wait_for_the_interval() {
        let mut saver = Saver::new(SavePolicy::default(), 0);
        assert!(!saver.commit_due(0));
        assert_eq!(saver.next_deadline_ms(), None);
        saver.note_change(false);
        assert!(!saver.commit_due(59 * MINUTE_MS));
        assert_eq!(saver.next_deadline_ms(), Some(60 * MINUTE_MS));
        assert!(saver.commit_due(60 * MINUTE_MS));
        assert!(!saver.commit_due(60 * MINUTE_MS));
        saver.note_change(false);
        assert!(!saver.commit_due(119 * MINUTE_MS));
        assert!(saver.commit_due(120 * MINUTE_MS));
    }

    #[test]
    fn durable_changes_commit_at_once_within_the_bucket() {
        let mut saver = Saver::new(SavePolicy::default(), 0);
        for _ in 0..DURABLE_COMMITS_BURST {
            saver.note_change(true);
            assert_eq!(saver.next_deadline_ms(), Some(0));
            assert!(saver.commit_due(0));
        }
        saver.note_change(true);
        assert!(!saver.commit_due(2));
        assert_eq!(saver.next_deadline_ms(), Some(DURABLE_REFILL_MS));
        assert!(saver.commit_due(DURABLE_REFILL_MS));
        // The same change also carries volatile ones.
        saver.note_change(false);
        saver.note_change(true);
        assert!(!saver.commit_due(DURABLE_REFILL_MS + 1));
        assert!(saver.commit_due(2 * DURABLE_REFILL_MS));
        assert!(!saver.is_pending());
    }

    #[test]
    fn a_failed_commit_is_retried_later() {
        let mut saver = Saver::new(SavePolicy::default(), 0);
        saver.note_change(true);
        assert!(saver.commit_due(10));
        saver.note_commit_failed(10);
        assert!(saver.is_pending());
        assert!(!saver.commit_due(10 + RETRY_MS - 1));
        assert_eq!(saver.next_deadline_ms(), Some(10 + RETRY_MS));
        assert!(saver.commit_due(10 + RETRY_MS));
    }

    #[test]
    fn commits_never_exceed_the_bound() {
        // Every kind of change, every second, for two days.
        let policy = SavePolicy {
            volatile_interval_ms: 15 * MINUTE_MS,
        };
        let mut saver = Saver::new(policy, 0);
        let mut commits = 0;
        for second in 0..2 * DAY_MS / 1000 {
            saver.note_change(second % 2 == 0);
            saver.note_change(false);
            if saver.commit_due(second * 1000) {
                commits += 1;
            }
        }
        assert!(commits <= policy.commits_max(2 * DAY_MS), "{commits}");
        assert!(commits > 2 * DAY_MS / DURABLE_REFILL_MS, "{commits}");
    }
}
