//! Hot keys: which keys are joined and executed most, in fixed memory.
//!
//! # Implementation
//!
//! Each ranking (joins, executions) is a space-saving sketch (Metwally, Agrawal and El
//! Abbadi, "Efficient Computation of Frequent and Top-k Elements in Data Streams", 2005)
//! kept as their *stream summary*, so every record is O(1):
//!
//! * `slots`: one per monitored key, with the key's hash, full length and the
//!   overestimation it was admitted with (`error`); its first `key_bytes` bytes live in
//!   `keys` at `slot × key_bytes`.
//! * `buckets`: one per distinct count, in a doubly linked list sorted by count (`min` to
//!   `max`); each holds a doubly linked list of the slots with that count (`Slot::prev`,
//!   `Slot::next`). A record moves its slot to the bucket of `count + 1`, which is the next
//!   bucket or a new one linked right after.
//! * `index`: an open-addressing table (linear probing, backward-shift deletion) from a key
//!   to its slot, at least twice as large as `slots`, so a probe always ends.
//!
//! A key that is not monitored, once every slot is taken, replaces a key of the smallest
//! count `c` and starts at `c + 1` with `error = c`: a count never underestimates, and
//! overestimates by at most `error`, which is at most `events / slots`.
//!
//! Invariants: non-empty buckets only (so there are never more buckets than slots, and the
//! bucket array never runs out); counts strictly increase from `min` to `max`; the counts
//! of the slots in use add up to the events recorded. Every array is allocated when the
//! sketch is made and never grows.

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::hash::{BuildHasher, Hasher};
use core::mem::size_of;
use std::sync::{Mutex, MutexGuard, PoisonError};

use singleflight_core::ObservedKey;

/// The end of a list, and an empty index entry.
const NIL: u32 = u32::MAX;

/// A fixed-memory record of the keys joined and executed most: a space-saving top-K sketch
/// for each, with a fixed number of slots and each key's bytes capped, so its memory is
/// set when it is made, whatever the number and size of the keys it sees.
///
/// Feed it the key of each call: [`record_join`](Self::record_join) for a call that joined
/// a flight (a hit), [`record_execution`](Self::record_execution) for one that ran the work
/// (a miss). Read the hottest with [`top_joins`](Self::top_joins) and
/// [`top_executions`](Self::top_executions). Keys by joins are the ones that stampede
/// (coalescing saves work on them); keys by executions are the ones that cost the backend
/// most.
///
/// **Fed by a group** through [`Stats::with_hot_keys`](crate::Stats::with_hot_keys): the
/// observer hooks offer each call's key by reference, recorded with
/// [`record_observed_join`](Self::record_observed_join) and
/// [`record_observed_execution`](Self::record_observed_execution). A key is then held
/// as the group gives it to observers: formatted (`"<group>/<key>"`, or the key alone for
/// a group with no name) if the group has a key format (`with_key_format`,
/// `with_key_debug`), and otherwise as its hash (8 bytes, little-endian, under this
/// record's random seed), so no key type has to be printable. It can also be fed by hand,
/// with the bytes of any key, where the key is known.
///
/// # Accuracy
///
/// Counts are estimates that never undercount: a [`HotKey`]'s true count lies between
/// `count - error` and `count`, and `error` is at most the events recorded divided by the
/// slots. Any key whose true count exceeds that is sure to be held. With skewed traffic
/// (a few keys take most calls, as stampedes do), a few hundred slots find the top ten
/// exactly.
///
/// # Keys are kept, not exported
///
/// The keys held are the application's data. Nothing in this crate sends them anywhere;
/// to export them, turn each into a keyed hash first (see `KeyHmac`, feature `key-hmac`).
/// A key longer than the cap is held by its first bytes (and told apart from other keys
/// with the same prefix by its hash and length).
///
/// # Cost
///
/// A record hashes the key (outside any lock) and takes one short lock of that ranking:
/// O(1), no allocation. Under heavy contention on one ranking the lock is the limit.
/// Fed by a group that formats its keys, a record also formats the key, and the group
/// formats the key's owned form: a key whose owned form allocates (a `String` called
/// with a `&str`) costs one allocation per recorded call (one in `N` with
/// [`sampled(N)`](Self::sampled)); a word-sized key, or a key held as its hash, none
/// (`tests/allocations.rs`).
///
/// # Examples
///
/// ```
/// use singleflight_stats::HotKeys;
///
/// let hot = HotKeys::new(100);
/// for key in ["a", "b", "a", "c", "a", "b"] {
///     hot.record_join(key.as_bytes());
/// }
/// let top = hot.top_joins(2);
/// assert_eq!(top[0].key, b"a");
/// assert_eq!(top[0].count, 3);
/// assert_eq!(top[1].key, b"b");
/// assert!(hot.top_executions(2).is_empty());
/// ```
pub struct HotKeys {
    joins: Mutex<Sketch>,
    executions: Mutex<Sketch>,
    hasher: foldhash::quality::RandomState,
    /// Records one event in `sample` (see [`HotKeys::sampled`]).
    sample: u32,
    /// An event is recorded if a random `u64` is at most this (`u64::MAX`: every one).
    threshold: u64,
}

/// One of the hottest keys, as [`HotKeys::top_joins`] and [`HotKeys::top_executions`]
/// report it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct HotKey {
    /// The key's bytes, up to the cap ([`HotKeys::key_bytes`]).
    pub key: Vec<u8>,
    /// The key's full length in bytes: more than `key.len()` when it was truncated.
    pub len: usize,
    /// The estimated count: never less than the true count.
    pub count: u64,
    /// How much `count` may overestimate by: the true count is at least
    /// `count - error`.
    pub error: u64,
}

impl HotKey {
    /// Whether the key was longer than the cap, so [`key`](Self::key) is a prefix.
    pub fn is_truncated(&self) -> bool {
        self.len > self.key.len()
    }

    /// The count this key is sure to have reached: `count - error`.
    pub fn guaranteed(&self) -> u64 {
        self.count - self.error
    }
}

impl HotKeys {
    /// The default cap on the bytes kept of each key.
    pub const DEFAULT_KEY_BYTES: usize = 64;

    /// Creates a record of `slots` keys per ranking, keeping the first
    /// [`DEFAULT_KEY_BYTES`](Self::DEFAULT_KEY_BYTES) (64) bytes of each key.
    ///
    /// # Panics
    ///
    /// If `slots` is `0` or above `u32::MAX / 4`.
    pub fn new(slots: usize) -> Self {
        Self::with_key_bytes(slots, Self::DEFAULT_KEY_BYTES)
    }

    /// Creates a record of `slots` keys per ranking, keeping the first `key_bytes` bytes of
    /// each key. It takes at most [`memory_bound(slots, key_bytes)`](Self::memory_bound)
    /// bytes, all allocated now.
    ///
    /// # Panics
    ///
    /// If `slots` is `0` or above `u32::MAX / 4`, or if `slots × key_bytes` overflows.
    pub fn with_key_bytes(slots: usize, key_bytes: usize) -> Self {
        Self {
            joins: Mutex::new(Sketch::new(slots, key_bytes)),
            executions: Mutex::new(Sketch::new(slots, key_bytes)),
            hasher: foldhash::quality::RandomState::default(),
            sample: 1,
            threshold: u64::MAX,
        }
    }

    /// Records each event with probability `1 / one_in` (independently, from a per-thread
    /// random stream), and reports every count multiplied by `one_in`: the cost of a
    /// record is paid once in `one_in` events, and the hottest keys stand out all the
    /// same, since a key's sampled count follows its true count. Counts are then
    /// estimates, off by a few times `one_in` (no longer a bound from above: the
    /// [`error`](HotKey::error) bounds the sketch's overestimate of the sample only). A
    /// group's `Stats` records every call of every key: sampling is what keeps that
    /// within a few percent of a call (see the crate docs' *Cost*).
    ///
    /// # Panics
    ///
    /// If `one_in` is `0`.
    ///
    /// # Examples
    ///
    /// ```
    /// use singleflight_stats::HotKeys;
    ///
    /// let hot = HotKeys::new(100).sampled(16);
    /// for _ in 0..16_000 {
    ///     hot.record_join(b"hot");
    /// }
    /// let top = hot.top_joins(1);
    /// assert_eq!(top[0].key, b"hot");
    /// assert!((12_000..20_000).contains(&top[0].count), "{}", top[0].count);
    /// ```
    #[must_use]
    pub fn sampled(self, one_in: u32) -> Self {
        assert!(one_in > 0, "HotKeys::sampled needs a rate of at least 1");
        Self {
            sample: one_in,
            threshold: u64::MAX / u64::from(one_in),
            ..self
        }
    }

    /// The sampling rate: one event recorded in this many ([`sampled`](Self::sampled)).
    pub fn sample_rate(&self) -> u32 {
        self.sample
    }

    /// Whether to record this event.
    #[inline]
    pub(crate) fn sampled_now(&self) -> bool {
        self.threshold == u64::MAX || random() <= self.threshold
    }

    /// Scales a sketch's report by the sampling rate.
    fn scale(&self, mut top: Vec<HotKey>) -> Vec<HotKey> {
        let rate = u64::from(self.sample);
        for hot in &mut top {
            hot.count = hot.count.saturating_mul(rate);
            hot.error = hot.error.saturating_mul(rate);
        }
        top
    }

    /// The most memory a `HotKeys` made with these parameters takes, in bytes: per slot and
    /// ranking, the capped key, its bookkeeping, its share of the index and of the count
    /// buckets (80 bytes besides the key on 64-bit targets).
    pub const fn memory_bound(slots: usize, key_bytes: usize) -> usize {
        let per_slot = key_bytes
            + size_of::<Slot>()
            + size_of::<Bucket>()
            // The index has at most four entries per slot (twice the slots, rounded up to
            // a power of two).
            + 4 * size_of::<u32>();
        size_of::<Self>() + 2 * slots * per_slot
    }

    /// The memory this takes, in bytes: its fixed arrays (allocated when it was made,
    /// never grown) and itself. Never above [`memory_bound`](Self::memory_bound).
    pub fn memory_bytes(&self) -> usize {
        size_of::<Self>() + lock(&self.joins).memory_bytes() + lock(&self.executions).memory_bytes()
    }

    /// The number of slots per ranking.
    pub fn slots(&self) -> usize {
        lock(&self.joins).slots.len()
    }

    /// The cap on the bytes kept of each key.
    pub fn key_bytes(&self) -> usize {
        lock(&self.joins).key_bytes
    }

    /// Counts a call for `key` that joined a flight (a hit).
    pub fn record_join(&self, key: &[u8]) {
        if !self.sampled_now() {
            return;
        }
        let hash = self.hasher.hash_one(key);
        lock(&self.joins).record(hash, Bytes::whole(key));
    }

    /// Counts a call for `key` that ran the work (a miss).
    pub fn record_execution(&self, key: &[u8]) {
        if !self.sampled_now() {
            return;
        }
        let hash = self.hasher.hash_one(key);
        lock(&self.executions).record(hash, Bytes::whole(key));
    }

    /// Counts a call for an observed `key` of the group called `group` that joined a
    /// flight (see the type's docs for how the key is held).
    pub fn record_observed_join(&self, group: Option<&str>, key: &dyn ObservedKey) {
        if self.sampled_now() {
            self.record_sampled(group, key, Ranking::Joins);
        }
    }

    /// Counts a call for an observed `key` of the group called `group` that ran the work.
    pub fn record_observed_execution(&self, group: Option<&str>, key: &dyn ObservedKey) {
        if self.sampled_now() {
            self.record_sampled(group, key, Ranking::Executions);
        }
    }

    /// Records an observed key, already sampled, in `ranking`: hashed (with its group's
    /// name) and formatted, if it can be, outside the lock, as both run user code.
    #[inline(never)]
    pub(crate) fn record_sampled(
        &self,
        group: Option<&str>,
        key: &dyn ObservedKey,
        ranking: Ranking,
    ) {
        let sketch = match ranking {
            Ranking::Joins => &self.joins,
            Ranking::Executions => &self.executions,
        };
        let mut hasher = self.hasher.build_hasher();
        hasher.write(group.unwrap_or("").as_bytes());
        hasher.write_u8(0xff);
        key.hash_with(&mut hasher);
        let hash = hasher.finish();
        let mut held = Held::new();
        if let Some(group) = group {
            held.push(group.as_bytes());
            held.push(b"/");
        }
        match key.write_key(&mut held) {
            Some(Ok(())) => lock(sketch).record(hash, held.bytes()),
            // No format, or one that failed: the key is known by its hash alone.
            _ => lock(sketch).record(hash, Bytes::whole(&hash.to_le_bytes())),
        }
    }

    /// The `k` keys joined most, hottest first (ties: the smaller error, then the key).
    pub fn top_joins(&self, k: usize) -> Vec<HotKey> {
        self.scale(lock(&self.joins).top(k))
    }

    /// The `k` keys executed most, hottest first (ties: the smaller error, then the key).
    pub fn top_executions(&self, k: usize) -> Vec<HotKey> {
        self.scale(lock(&self.executions).top(k))
    }

    /// Joins recorded since this was made or cleared.
    pub fn joins(&self) -> u64 {
        lock(&self.joins).events * u64::from(self.sample)
    }

    /// Executions recorded since this was made or cleared.
    pub fn executions(&self) -> u64 {
        lock(&self.executions).events * u64::from(self.sample)
    }

    /// Forgets every key, keeping the memory.
    pub fn clear(&self) {
        lock(&self.joins).clear();
        lock(&self.executions).clear();
    }
}

/// Which ranking an event counts in.
#[derive(Clone, Copy)]
pub(crate) enum Ranking {
    Joins,
    Executions,
}

/// The bytes held of an observed key: its formatted first [`Held::CAP`] bytes, and its
/// whole length (longer keys are told apart by their hash and length, as any key over the
/// record's cap is; a record keeping more than `CAP` bytes a key holds zeros past them).
struct Held {
    bytes: [u8; Held::CAP],
    len: usize,
}

impl Held {
    /// The most bytes of a formatted key kept on the stack (a record keeps at most its
    /// own `key_bytes`).
    const CAP: usize = 256;

    fn new() -> Self {
        Self {
            bytes: [0; Self::CAP],
            len: 0,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.len < Self::CAP {
            let kept = bytes.len().min(Self::CAP - self.len);
            self.bytes[self.len..self.len + kept].copy_from_slice(&bytes[..kept]);
        }
        self.len += bytes.len();
    }

    fn bytes(&self) -> Bytes<'_> {
        Bytes {
            kept: &self.bytes[..self.len.min(Self::CAP)],
            len: self.len,
        }
    }
}

/// A key as a sketch sees it: its first bytes (at least as many as the sketch keeps, when
/// it has them) and its whole length.
#[derive(Clone, Copy)]
struct Bytes<'a> {
    kept: &'a [u8],
    len: usize,
}

impl<'a> Bytes<'a> {
    fn whole(key: &'a [u8]) -> Self {
        Self {
            kept: key,
            len: key.len(),
        }
    }

    /// The first `cap` bytes (or all of them, if fewer are kept).
    fn prefix(&self, cap: usize) -> &'a [u8] {
        &self.kept[..self.kept.len().min(cap)]
    }
}

impl fmt::Write for Held {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push(s.as_bytes());
        Ok(())
    }
}

impl fmt::Debug for HotKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // No keys: they are the application's data.
        f.debug_struct("HotKeys")
            .field("slots", &self.slots())
            .field("key_bytes", &self.key_bytes())
            .field("joins", &self.joins())
            .field("executions", &self.executions())
            .finish_non_exhaustive()
    }
}

/// A random number from the calling thread's own xorshift stream, seeded from the
/// process's random hasher state and the stream's address.
#[inline]
fn random() -> u64 {
    use core::cell::Cell;
    std::thread_local! {
        static STATE: Cell<u64> = const { Cell::new(0) };
    }
    STATE.with(|state| {
        let mut x = state.get();
        if x == 0 {
            let seed = foldhash::fast::RandomState::default().hash_one(core::ptr::from_ref(state));
            x = seed | 1;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        x
    })
}

fn lock(sketch: &Mutex<Sketch>) -> MutexGuard<'_, Sketch> {
    // Nothing in `Sketch` panics while the lock is held (indices are kept in range), so a
    // poisoned sketch is still whole.
    sketch.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A monitored key.
#[derive(Clone, Copy)]
struct Slot {
    /// The hash of the whole key.
    hash: u64,
    /// The key's whole length.
    len: usize,
    /// The count of the key it replaced: how much its count may overestimate.
    error: u64,
    /// The bucket of its count.
    bucket: u32,
    /// The other slots of its bucket.
    prev: u32,
    next: u32,
}

/// The slots that share one count.
#[derive(Clone, Copy)]
struct Bucket {
    count: u64,
    /// The first of its slots (`NIL` only while free).
    head: u32,
    /// The buckets of the next smaller and larger counts; `next` links the free list.
    prev: u32,
    next: u32,
}

const FREE_SLOT: Slot = Slot {
    hash: 0,
    len: 0,
    error: 0,
    bucket: NIL,
    prev: NIL,
    next: NIL,
};

/// One ranking: a space-saving stream summary (see the module's docs).
struct Sketch {
    slots: Box<[Slot]>,
    /// Slots `0..used` hold keys.
    used: u32,
    keys: Box<[u8]>,
    key_bytes: usize,
    index: Box<[u32]>,
    buckets: Box<[Bucket]>,
    /// The free buckets, linked by `next`.
    free: u32,
    /// The buckets of the smallest and the largest count.
    min: u32,
    max: u32,
    events: u64,
}

impl Sketch {
    fn new(slots: usize, key_bytes: usize) -> Self {
        assert!(
            slots > 0 && slots <= (u32::MAX / 4) as usize,
            "HotKeys needs between 1 and u32::MAX / 4 slots"
        );
        let key_memory = slots
            .checked_mul(key_bytes)
            .expect("HotKeys: slots × key_bytes overflows");
        let mut sketch = Self {
            slots: vec![FREE_SLOT; slots].into_boxed_slice(),
            used: 0,
            keys: vec![0; key_memory].into_boxed_slice(),
            key_bytes,
            index: vec![NIL; (2 * slots).next_power_of_two()].into_boxed_slice(),
            buckets: vec![
                Bucket {
                    count: 0,
                    head: NIL,
                    prev: NIL,
                    next: NIL,
                };
                slots
            ]
            .into_boxed_slice(),
            free: NIL,
            min: NIL,
            max: NIL,
            events: 0,
        };
        sketch.clear();
        sketch
    }

    fn clear(&mut self) {
        self.used = 0;
        self.events = 0;
        self.min = NIL;
        self.max = NIL;
        self.index.fill(NIL);
        self.slots.fill(FREE_SLOT);
        let last = self.buckets.len() - 1;
        for (i, bucket) in self.buckets.iter_mut().enumerate() {
            bucket.head = NIL;
            bucket.next = if i == last { NIL } else { i as u32 + 1 };
        }
        self.free = 0;
    }

    fn memory_bytes(&self) -> usize {
        size_of::<Self>()
            + self.slots.len() * size_of::<Slot>()
            + self.keys.len()
            + self.index.len() * size_of::<u32>()
            + self.buckets.len() * size_of::<Bucket>()
    }

    fn record(&mut self, hash: u64, key: Bytes<'_>) {
        self.events += 1;
        if let Some(slot) = self.find(hash, key) {
            self.increment(slot);
        } else if (self.used as usize) < self.slots.len() {
            let slot = self.used;
            self.used += 1;
            self.store(slot, hash, key, 0);
            self.attach_new(slot);
        } else {
            // Replace a key of the smallest count: the newcomer inherits that count as its
            // possible overestimation.
            let slot = self.buckets[self.min as usize].head;
            let error = self.buckets[self.min as usize].count;
            self.unindex(slot);
            self.store(slot, hash, key, error);
            self.increment(slot);
        }
    }

    /// Writes `key` into `slot` and indexes it.
    fn store(&mut self, slot: u32, hash: u64, key: Bytes<'_>, error: u64) {
        let kept = key.prefix(self.key_bytes);
        let start = slot as usize * self.key_bytes;
        let end = start + key.len.min(self.key_bytes);
        // Bytes past those given (a formatted key over `Held::CAP`) are zeros.
        self.keys[start..start + kept.len()].copy_from_slice(kept);
        self.keys[start + kept.len()..end].fill(0);
        let s = &mut self.slots[slot as usize];
        s.hash = hash;
        s.len = key.len;
        s.error = error;
        let mask = self.index.len() - 1;
        let mut at = hash as usize & mask;
        while self.index[at] != NIL {
            at = (at + 1) & mask;
        }
        self.index[at] = slot;
    }

    /// The bytes kept of `slot`'s key.
    fn key(&self, slot: u32) -> &[u8] {
        let kept = self.slots[slot as usize].len.min(self.key_bytes);
        let start = slot as usize * self.key_bytes;
        &self.keys[start..start + kept]
    }

    fn find(&self, hash: u64, key: Bytes<'_>) -> Option<u32> {
        let mask = self.index.len() - 1;
        let mut at = hash as usize & mask;
        loop {
            let slot = self.index[at];
            if slot == NIL {
                return None;
            }
            let s = &self.slots[slot as usize];
            let want = key.prefix(self.key_bytes);
            if s.hash == hash && s.len == key.len && self.key(slot).get(..want.len()) == Some(want)
            {
                return Some(slot);
            }
            at = (at + 1) & mask;
        }
    }

    /// Removes `slot` from the index, shifting back the entries probed past it.
    fn unindex(&mut self, slot: u32) {
        let mask = self.index.len() - 1;
        let mut hole = self.slots[slot as usize].hash as usize & mask;
        while self.index[hole] != slot {
            hole = (hole + 1) & mask;
        }
        let mut at = hole;
        loop {
            at = (at + 1) & mask;
            let entry = self.index[at];
            if entry == NIL {
                break;
            }
            let home = self.slots[entry as usize].hash as usize & mask;
            // `entry` may move back to the hole if its home is not after the hole (on its
            // way around the table to `at`).
            if at.wrapping_sub(home) & mask >= at.wrapping_sub(hole) & mask {
                self.index[hole] = entry;
                hole = at;
            }
        }
        self.index[hole] = NIL;
    }

    /// Puts a newly monitored `slot` at count 1.
    fn attach_new(&mut self, slot: u32) {
        let bucket = if self.min != NIL && self.buckets[self.min as usize].count == 1 {
            self.min
        } else {
            let bucket = self.allocate(1);
            self.buckets[bucket as usize].next = self.min;
            match self.min {
                NIL => self.max = bucket,
                min => self.buckets[min as usize].prev = bucket,
            }
            self.min = bucket;
            bucket
        };
        self.attach(slot, bucket);
    }

    /// Adds one to `slot`'s count: moves it to the bucket of the next count.
    fn increment(&mut self, slot: u32) {
        let from = self.slots[slot as usize].bucket;
        let Bucket { count, next, .. } = self.buckets[from as usize];
        let alone =
            self.buckets[from as usize].head == slot && self.slots[slot as usize].next == NIL;
        if next != NIL && self.buckets[next as usize].count == count + 1 {
            self.detach(slot);
            self.attach(slot, next);
            if alone {
                self.release(from);
            }
        } else if alone {
            // The next count has no bucket yet: this one becomes it.
            self.buckets[from as usize].count = count + 1;
        } else {
            let to = self.allocate(count + 1);
            self.buckets[to as usize].prev = from;
            self.buckets[to as usize].next = next;
            match next {
                NIL => self.max = to,
                next => self.buckets[next as usize].prev = to,
            }
            self.buckets[from as usize].next = to;
            self.detach(slot);
            self.attach(slot, to);
        }
    }

    fn attach(&mut self, slot: u32, bucket: u32) {
        let head = self.buckets[bucket as usize].head;
        let s = &mut self.slots[slot as usize];
        s.bucket = bucket;
        s.prev = NIL;
        s.next = head;
        if head != NIL {
            self.slots[head as usize].prev = slot;
        }
        self.buckets[bucket as usize].head = slot;
    }

    fn detach(&mut self, slot: u32) {
        let Slot {
            bucket, prev, next, ..
        } = self.slots[slot as usize];
        match prev {
            NIL => self.buckets[bucket as usize].head = next,
            prev => self.slots[prev as usize].next = next,
        }
        if next != NIL {
            self.slots[next as usize].prev = prev;
        }
    }

    fn allocate(&mut self, count: u64) -> u32 {
        let bucket = self.free;
        debug_assert!(bucket != NIL, "more buckets than slots");
        self.free = self.buckets[bucket as usize].next;
        self.buckets[bucket as usize] = Bucket {
            count,
            head: NIL,
            prev: NIL,
            next: NIL,
        };
        bucket
    }

    /// Unlinks an empty bucket and frees it.
    fn release(&mut self, bucket: u32) {
        let Bucket { prev, next, .. } = self.buckets[bucket as usize];
        match prev {
            NIL => self.min = next,
            prev => self.buckets[prev as usize].next = next,
        }
        match next {
            NIL => self.max = prev,
            next => self.buckets[next as usize].prev = prev,
        }
        self.buckets[bucket as usize].head = NIL;
        self.buckets[bucket as usize].next = self.free;
        self.free = bucket;
    }

    fn top(&self, k: usize) -> Vec<HotKey> {
        let mut top = Vec::new();
        let mut bucket = self.max;
        // Whole buckets, largest count first, until `k` keys are in; then order the last
        // bucket's ties and cut.
        while bucket != NIL && top.len() < k {
            let Bucket {
                count, head, prev, ..
            } = self.buckets[bucket as usize];
            let mut slot = head;
            while slot != NIL {
                let s = &self.slots[slot as usize];
                top.push(HotKey {
                    key: self.key(slot).to_vec(),
                    len: s.len,
                    count,
                    error: s.error,
                });
                slot = s.next;
            }
            bucket = prev;
        }
        top.sort_by(|a, b| {
            (b.count, a.error, &a.key, a.len).cmp(&(a.count, b.error, &b.key, b.len))
        });
        top.truncate(k);
        top
    }

    /// Whether the index leads to `slot` from its key's hash (tests only).
    #[cfg(test)]
    fn indexed(&self, slot: u32) -> bool {
        let mask = self.index.len() - 1;
        let mut at = self.slots[slot as usize].hash as usize & mask;
        while self.index[at] != NIL {
            if self.index[at] == slot {
                return true;
            }
            at = (at + 1) & mask;
        }
        false
    }

    /// Checks every invariant of the module's docs (tests only).
    #[cfg(test)]
    fn check(&self) {
        let mut total = 0;
        let mut seen = 0;
        let mut bucket = self.min;
        let mut last = 0;
        let mut prev = NIL;
        while bucket != NIL {
            let b = self.buckets[bucket as usize];
            assert!(b.count > last, "counts increase");
            assert_eq!(b.prev, prev);
            assert!(b.head != NIL, "no empty bucket");
            let mut slot = b.head;
            while slot != NIL {
                let s = self.slots[slot as usize];
                assert_eq!(s.bucket, bucket);
                assert!(s.error < b.count);
                assert!(self.indexed(slot), "every held key is in the index");
                total += b.count;
                seen += 1;
                slot = s.next;
            }
            last = b.count;
            prev = bucket;
            bucket = b.next;
        }
        assert_eq!(prev, self.max);
        assert_eq!(seen, self.used);
        assert_eq!(total, self.events, "counts add up to the events");
        let indexed = self.index.iter().filter(|&&e| e != NIL).count();
        assert_eq!(indexed, self.used as usize);
    }
}

#[cfg(test)]
mod tests {
    use super::HotKeys;
    use std::format;

    #[test]
    fn counts_exactly_while_every_key_fits() {
        let hot = HotKeys::new(8);
        for (key, times) in [("x", 5), ("y", 3), ("z", 1)] {
            for _ in 0..times {
                hot.record_execution(key.as_bytes());
            }
        }
        let top = hot.top_executions(10);
        let got: std::vec::Vec<_> = top.iter().map(|h| (&h.key[..], h.count, h.error)).collect();
        assert_eq!(got, [(&b"x"[..], 5, 0), (b"y", 3, 0), (b"z", 1, 0)]);
        assert_eq!(hot.executions(), 9);
        assert_eq!(hot.joins(), 0);
        lock_check(&hot);
    }

    #[test]
    fn a_new_key_replaces_the_smallest_and_inherits_its_count_as_error() {
        let hot = HotKeys::new(2);
        for key in ["a", "a", "a", "b", "c"] {
            hot.record_join(key.as_bytes());
        }
        let top = hot.top_joins(2);
        assert_eq!(
            (&top[0].key[..], top[0].count, top[0].error),
            (&b"a"[..], 3, 0)
        );
        assert_eq!(
            (&top[1].key[..], top[1].count, top[1].error),
            (&b"c"[..], 2, 1)
        );
        assert_eq!(top[1].guaranteed(), 1);
        lock_check(&hot);
    }

    #[test]
    fn long_keys_are_capped_but_told_apart() {
        let hot = HotKeys::with_key_bytes(16, 4);
        hot.record_join(b"prefix-one");
        hot.record_join(b"prefix-two");
        hot.record_join(b"prefix-two");
        let top = hot.top_joins(5);
        assert_eq!(top.len(), 2, "same first bytes, different keys");
        assert_eq!(top[0].key, b"pref");
        assert_eq!((top[0].len, top[0].count), (10, 2));
        assert!(top[0].is_truncated());
        lock_check(&hot);
    }

    #[test]
    fn clear_forgets_and_keeps_the_memory() {
        let hot = HotKeys::new(4);
        let memory = hot.memory_bytes();
        for i in 0..100 {
            hot.record_join(format!("k{}", i % 7).as_bytes());
        }
        hot.clear();
        assert!(hot.top_joins(3).is_empty());
        assert_eq!(hot.memory_bytes(), memory);
        hot.record_join(b"again");
        assert_eq!(hot.top_joins(1)[0].count, 1);
        lock_check(&hot);
    }

    #[test]
    fn churn_keeps_the_summary_whole() {
        // Every eviction path, with many ties: a small sketch under a stream that cycles.
        let hot = HotKeys::with_key_bytes(5, 3);
        for i in 0u64..20_000 {
            let key = (i * 7919 % 13 + i % 3).to_le_bytes();
            hot.record_join(&key);
            if i % 97 == 0 {
                lock_check(&hot);
            }
        }
        lock_check(&hot);
    }

    fn lock_check(hot: &HotKeys) {
        super::lock(&hot.joins).check();
        super::lock(&hot.executions).check();
    }
}
