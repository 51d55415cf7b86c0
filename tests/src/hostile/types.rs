//! The hostile user code: keys, values, work and an observer that panic (or call back into
//! the group) exactly where a case asks them to, and nowhere else.

use std::fmt;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use singleflight_core::{Execution, FlightInfo, Observer, Wait};

use crate::Gate;

/// A shared clone counter: the `k`-th clone of any value that carries it panics.
#[derive(Debug, Default)]
pub struct ClonePlan {
    clones: AtomicUsize,
    panic_at: usize,
}

impl ClonePlan {
    /// The `panic_at`-th clone panics (counting from 1); `0` never panics.
    pub fn new(panic_at: usize) -> Arc<Self> {
        Arc::new(Self {
            clones: AtomicUsize::new(0),
            panic_at,
        })
    }

    /// Clones made so far (the panicking one included).
    pub fn clones(&self) -> usize {
        self.clones.load(Ordering::SeqCst)
    }
}

/// The value every hostile group shares: a number, and maybe a plan that makes one of its
/// clones panic.
pub struct HValue {
    /// What the callers compare.
    pub n: u64,
    plan: Option<Arc<ClonePlan>>,
}

impl HValue {
    /// A value whose clones never panic.
    pub fn new(n: u64) -> Self {
        Self { n, plan: None }
    }

    /// A value whose clones count in `plan`.
    pub fn planned(n: u64, plan: &Arc<ClonePlan>) -> Self {
        Self {
            n,
            plan: Some(Arc::clone(plan)),
        }
    }
}

impl Clone for HValue {
    fn clone(&self) -> Self {
        if let Some(plan) = &self.plan {
            let k = plan.clones.fetch_add(1, Ordering::SeqCst) + 1;
            if k == plan.panic_at {
                panic!("expected: clone #{k}");
            }
        }
        Self {
            n: self.n,
            plan: self.plan.clone(),
        }
    }
}

impl fmt::Debug for HValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HValue({})", self.n)
    }
}

/// What a key's own instance does when the group uses it (its clones are always benign).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trap {
    /// Nothing.
    None,
    /// `Hash::hash` panics.
    Hash,
    /// `PartialEq::eq` panics (when either side is this instance).
    Eq,
    /// `Clone::clone` (hence `ToOwned`) panics.
    Clone,
}

/// A callback a key runs when it is dropped.
pub type OnDrop = Arc<dyn Fn() + Send + Sync>;

/// The key every hostile group uses. It hashes only its `bucket`, so two keys of one bucket
/// collide and the group must compare them with `Eq`; equal keys have equal names.
pub struct HKey {
    bucket: u64,
    name: u64,
    trap: Trap,
    on_drop: Option<OnDrop>,
}

impl HKey {
    /// A benign key of its own bucket.
    pub fn new(name: u64) -> Self {
        Self {
            bucket: name,
            name,
            trap: Trap::None,
            on_drop: None,
        }
    }

    /// The same key placed in `bucket` (a collision when another key shares it).
    pub fn in_bucket(mut self, bucket: u64) -> Self {
        self.bucket = bucket;
        self
    }

    /// This instance (not its clones) panics as `trap` says.
    pub fn trap(mut self, trap: Trap) -> Self {
        self.trap = trap;
        self
    }

    /// This key and every clone of it (the group's own copy included) run `on_drop` when
    /// dropped.
    pub fn on_drop(mut self, on_drop: OnDrop) -> Self {
        self.on_drop = Some(on_drop);
        self
    }

    /// A benign copy (same bucket and name, no trap, no drop callback).
    pub fn plain(&self) -> Self {
        Self {
            bucket: self.bucket,
            name: self.name,
            trap: Trap::None,
            on_drop: None,
        }
    }
}

impl Hash for HKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        if self.trap == Trap::Hash {
            panic!("expected: hash");
        }
        self.bucket.hash(state);
    }
}

impl PartialEq for HKey {
    fn eq(&self, other: &Self) -> bool {
        if self.trap == Trap::Eq || other.trap == Trap::Eq {
            panic!("expected: eq");
        }
        self.bucket == other.bucket && self.name == other.name
    }
}

impl Eq for HKey {}

impl Clone for HKey {
    fn clone(&self) -> Self {
        if self.trap == Trap::Clone {
            panic!("expected: key clone");
        }
        Self {
            bucket: self.bucket,
            name: self.name,
            trap: Trap::None,
            on_drop: self.on_drop.clone(),
        }
    }
}

impl Drop for HKey {
    fn drop(&mut self) {
        if let Some(on_drop) = &self.on_drop {
            on_drop();
        }
    }
}

impl fmt::Debug for HKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HKey({}/{}, {:?})", self.bucket, self.name, self.trap)
    }
}

/// Panics when dropped (unless the thread is already unwinding, which would abort).
#[derive(Debug)]
pub struct Bomb;

impl Drop for Bomb {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("expected: work dropped");
        }
    }
}

/// A case's work: counts its start, waits for its gate (if any), returns its value (planned
/// or not); with a bomb, dropping the work's state panics.
#[derive(Clone, Debug)]
pub struct HWork {
    started: Arc<AtomicUsize>,
    gate: Option<Gate>,
    n: u64,
    plan: Option<Arc<ClonePlan>>,
    bomb: bool,
}

impl HWork {
    /// Work returning `n` at once.
    pub fn value(started: &Arc<AtomicUsize>, n: u64) -> Self {
        Self {
            started: Arc::clone(started),
            gate: None,
            n,
            plan: None,
            bomb: false,
        }
    }

    /// The same work, waiting for `gate` first.
    pub fn gated(mut self, gate: &Gate) -> Self {
        self.gate = Some(gate.clone());
        self
    }

    /// The same work, returning a value whose clones count in `plan`.
    pub fn planned(mut self, plan: &Arc<ClonePlan>) -> Self {
        self.plan = Some(Arc::clone(plan));
        self
    }

    /// The same work, whose state panics when dropped after producing its value.
    pub fn bomb(mut self) -> Self {
        self.bomb = true;
        self
    }

    fn make(&self) -> HValue {
        match &self.plan {
            Some(plan) => HValue::planned(self.n, plan),
            None => HValue::new(self.n),
        }
    }

    /// As a blocking closure's body. A bomb goes off at the end of the work, after the value
    /// is made, as a closure's captured state would: inside the work.
    pub fn run_blocking(self) -> HValue {
        let bomb = self.bomb.then(|| Bomb);
        self.started.fetch_add(1, Ordering::SeqCst);
        if let Some(gate) = &self.gate {
            gate.wait();
        }
        let value = self.make();
        drop(bomb);
        value
    }

    /// As a future. A bomb stays in the future after it returned its value, and goes off
    /// when the caller drops the finished future.
    pub fn run_async(self) -> WorkFuture {
        let bomb = self.bomb.then(|| Bomb);
        let inner = Box::pin(async move {
            self.started.fetch_add(1, Ordering::SeqCst);
            if let Some(gate) = &self.gate {
                gate.opened().await;
            }
            self.make()
        });
        WorkFuture { inner, _bomb: bomb }
    }
}

/// The future of [`HWork::run_async`].
pub struct WorkFuture {
    inner: Pin<Box<dyn Future<Output = HValue> + Send>>,
    _bomb: Option<Bomb>,
}

impl Future for WorkFuture {
    type Output = HValue;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<HValue> {
        self.inner.as_mut().poll(cx)
    }
}

impl fmt::Debug for WorkFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkFuture").finish_non_exhaustive()
    }
}

/// An observer hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// `flight_started` (called by the default `leader_started`).
    FlightStarted,
    /// `execution_started` (the default `leader_started`, and takeovers).
    ExecutionStarted,
    /// `leader_started`.
    LeaderStarted,
    /// `leader_finished`.
    LeaderFinished,
    /// `execution_finished` of an execution that ended (the default `leader_finished`).
    ExecutionFinished,
    /// `execution_finished` of a dropped leader's execution ([`Execution::Dropped`]).
    ExecutionDropped,
    /// `flight_finished` (the default `leader_finished`, and abandoned flights).
    FlightFinished,
    /// `waiter_finished` (but for a promoted waiter).
    WaiterFinished,
    /// `takeover`.
    Takeover,
    /// `timeout`.
    Timeout,
}

type Before = Box<dyn FnOnce() + Send>;

/// An observer that panics once in each armed hook, after running an optional callback the
/// first time one fires (to let other callers join at that very moment).
#[derive(Default)]
pub struct Tripwire {
    armed: Mutex<Vec<Hook>>,
    fired: Mutex<Vec<Hook>>,
    before: Mutex<Option<Before>>,
}

impl Tripwire {
    /// Panics once in each of `hooks`.
    pub fn new(hooks: &[Hook]) -> Arc<Self> {
        Arc::new(Self {
            armed: Mutex::new(hooks.to_vec()),
            ..Self::default()
        })
    }

    /// Runs `before` (once) right before the first armed hook panics.
    pub fn before(&self, before: impl FnOnce() + Send + 'static) {
        *self.before.lock().unwrap() = Some(Box::new(before));
    }

    /// The hooks that panicked, in order.
    pub fn fired(&self) -> Vec<Hook> {
        self.fired.lock().unwrap().clone()
    }

    fn trip(&self, hook: Hook) {
        let fire = {
            let mut armed = self.armed.lock().unwrap();
            match armed.iter().position(|armed| *armed == hook) {
                Some(i) => {
                    armed.swap_remove(i);
                    true
                }
                None => false,
            }
        };
        if fire {
            let before = self.before.lock().unwrap().take();
            if let Some(before) = before {
                before();
            }
            self.fired.lock().unwrap().push(hook);
            panic!("expected: observer {hook:?}");
        }
    }
}

impl fmt::Debug for Tripwire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tripwire")
            .field("armed", &self.armed.lock().unwrap())
            .field("fired", &self.fired.lock().unwrap())
            .finish_non_exhaustive()
    }
}

impl Observer for Tripwire {
    fn flight_started(&self, _: &FlightInfo<'_>) {
        self.trip(Hook::FlightStarted);
    }
    fn flight_finished(&self, _: &FlightInfo<'_>) {
        self.trip(Hook::FlightFinished);
    }
    fn execution_started(&self, _: &FlightInfo<'_>) -> u64 {
        self.trip(Hook::ExecutionStarted);
        0
    }
    fn execution_finished(&self, _: &FlightInfo<'_>, _started: u64, execution: Execution) {
        self.trip(if execution == Execution::Dropped {
            Hook::ExecutionDropped
        } else {
            Hook::ExecutionFinished
        });
    }
    fn leader_started(&self, flight: &FlightInfo<'_>) -> u64 {
        self.trip(Hook::LeaderStarted);
        self.flight_started(flight);
        self.execution_started(flight)
    }
    fn leader_finished(&self, flight: &FlightInfo<'_>, started: u64, execution: Execution) {
        self.trip(Hook::LeaderFinished);
        self.execution_finished(flight, started, execution);
        self.flight_finished(flight);
    }
    fn waiter_finished(&self, _: &FlightInfo<'_>, _started: u64, wait: Wait) {
        if wait == Wait::Promoted {
            return;
        }
        self.trip(Hook::WaiterFinished);
    }
    fn takeover(&self, _: &FlightInfo<'_>) {
        self.trip(Hook::Takeover);
    }
    fn timeout(&self) {
        self.trip(Hook::Timeout);
    }
}
