//! The call loop, written once: **register**, then **lead** or **wait**, and **lead** again
//! if promoted (takeover); with a reuse window, registration may instead hand out a kept
//! value, and start the key's refresh.
//!
//! Every way of calling runs these steps: the async call whose work runs in the caller's
//! task ([`Call`](crate::Call)), the detached call whose work is launched on a spawner
//! ([`Detached`](crate::rt::Detached)), and the blocking call on the caller's thread
//! ([`Group::call_here`], with `std`). They differ only in how they wait (a waker in the
//! flight's seat, or the flight's condition variable), which each does around [`Step`],
//! and in how they lead, which is the [`Lead`] they pass:
//!
//! | lead | the work runs | a leader that leads | refreshes |
//! |---|---|---|---|
//! | [`Inline`] | in the caller (async task or thread) | runs it in place ([`Step::Lead`]) | never: its work may borrow from the caller |
//! | [`Launched`] | on a spawner ([`Launch`]) | launches it and waits as the flight's launcher ([`Step::Launched`]) | launches it for the refresh |
//! | `InlineRefreshing` (`std`) | on the calling thread | runs it in place | on a blocking spawner |
//!
//! A caller that starts a refresh gives its work to it: the refresh is a flight of its own,
//! launched where no caller's cancellation reaches it, and the caller returns the kept value
//! at once. Work that may borrow from its caller cannot outlive the call, so such calls
//! never start a refresh: past the threshold they are served the kept value until the
//! window ends, and then lead a new flight as usual.

use alloc::borrow::ToOwned;
use core::borrow::Borrow;
use core::convert::Infallible;
use core::hash::{BuildHasher, Hash};
use core::task::Waker;

use crate::entered::{Entered, enter_with};
use crate::error::Error;
use crate::group::GroupRef;
use crate::leader::Leader;
use crate::rt::Launch;
use crate::types::Role;
use crate::waiter::{Waited, Waiter};

/// How a call leads, once it must run the work: the one thing the ways of calling do
/// differently (besides waiting).
pub(crate) trait Lead<G: GroupRef>: Sized {
    /// The work, as a caller that runs it in place runs it.
    type Here;

    /// Whether a leading caller runs the work in place ([`Step::Lead`]: the work stays in
    /// the caller's `how` until it takes it with [`here`](Self::here)), or launches it
    /// ([`launch`](Self::launch)).
    const IN_PLACE: bool;

    /// Whether this call's work can be handed to a refresh, to run detached from it.
    const REFRESHES: bool;

    /// The work, for a caller that runs it in place.
    #[cfg_attr(
        not(feature = "std"),
        expect(
            dead_code,
            reason = "the blocking loop's; `Call` unwraps its `Inline` itself"
        )
    )]
    fn here(self) -> Self::Here;

    /// Launches the work of the flight `leader` leads, and returns the waiter the caller
    /// waits on as its (uncounted) launcher. Only called when not [`IN_PLACE`](Self::IN_PLACE).
    fn launch(self, leader: Leader<G>, failed: fn(&G::Value) -> bool) -> Waiter<G> {
        let _ = (leader, failed);
        unreachable!("work run in place is never launched")
    }

    /// Hands the work to the refresh `leader` leads, to run where no caller's cancellation
    /// reaches it. Only called when [`REFRESHES`](Self::REFRESHES).
    fn refresh(self, leader: Leader<G>, failed: fn(&G::Value) -> bool) {
        let _ = failed;
        drop(leader);
    }
}

/// What a call does next.
pub(crate) enum Step<G: GroupRef> {
    /// Wait for the flight (joined as a waiter).
    Wait(Waiter<G>),
    /// Run the work in place, as the flight's leader: the work is still in the caller's
    /// `how` ([`Lead::here`]).
    Lead(Leader<G>),
    /// Wait for the work this caller launched, as its flight's leader.
    Launched(Waiter<G>),
    /// The call is over: its outcome and its role.
    Done(Result<G::Value, Error>, Role),
}

/// Work that runs in the caller, and may borrow from it: it never refreshes.
pub(crate) struct Inline<F>(pub(crate) F);

impl<G: GroupRef, F> Lead<G> for Inline<F> {
    type Here = F;
    const IN_PLACE: bool = true;
    const REFRESHES: bool = false;

    #[inline]
    fn here(self) -> F {
        self.0
    }
}

/// Work launched on a spawner ([`Launch`]): the launcher waits for it as a waiter, and a
/// refresh launches it the same way.
pub(crate) struct Launched<L>(pub(crate) L);

impl<G: GroupRef, L: Launch<G>> Lead<G> for Launched<L> {
    type Here = Infallible;
    const IN_PLACE: bool = false;
    const REFRESHES: bool = true;

    fn here(self) -> Infallible {
        unreachable!("launched work never runs in place")
    }

    fn launch(self, leader: Leader<G>, failed: fn(&G::Value) -> bool) -> Waiter<G> {
        // Subscribe before launching: the task may finish at once on another thread.
        let waiter = Waiter::launcher(&leader);
        self.0.launch(leader, failed);
        waiter
    }

    fn refresh(self, leader: Leader<G>, failed: fn(&G::Value) -> bool) {
        self.0.launch(leader, failed);
    }
}

/// **register**: the caller leads a new flight, joins the current one, or (with a reuse
/// window) takes the key's kept value, and hands its work to the key's refresh if that
/// value is past its threshold and `how` can refresh.
#[inline]
pub(crate) fn register<G, Q, L>(
    group: G,
    key: &Q,
    waker: Option<&Waker>,
    how: &mut Option<L>,
    failed: fn(&G::Value) -> bool,
) -> Step<G>
where
    G: GroupRef,
    G::Key: Hash + Eq + Borrow<Q>,
    G::Hasher: BuildHasher,
    G::Value: Clone,
    Q: ?Sized + Hash + Eq + ToOwned<Owned = G::Key>,
    L: Lead<G>,
{
    let entry = enter(group, key, waker, how, failed);
    entered(entry, how, failed)
}

/// The first half of [`register`]: the entry, with the refresh started if this caller is
/// the one to start it. A caller whose uncontended path matters matches the entry's
/// [`Entered::Leader`] itself and hands every other entry to [`entered`].
#[inline]
pub(crate) fn enter<G, Q, L>(
    group: G,
    key: &Q,
    waker: Option<&Waker>,
    how: &mut Option<L>,
    failed: fn(&G::Value) -> bool,
) -> Result<Entered<G>, Error>
where
    G: GroupRef,
    G::Key: Hash + Eq + Borrow<Q>,
    G::Hasher: BuildHasher,
    Q: ?Sized + Hash + Eq + ToOwned<Owned = G::Key>,
    L: Lead<G>,
{
    if L::REFRESHES {
        let mut refresh = |leader: Leader<G>| {
            if let Some(how) = how.take() {
                how.refresh(leader, failed);
            }
        };
        enter_with(group, key, waker, Some(&mut refresh))
    } else {
        enter_with(group, key, waker, None)
    }
}

/// The second half of [`register`]: what the entry means for the call.
#[inline]
pub(crate) fn entered<G, L>(
    entry: Result<Entered<G>, Error>,
    how: &mut Option<L>,
    failed: fn(&G::Value) -> bool,
) -> Step<G>
where
    G: GroupRef,
    G::Value: Clone,
    L: Lead<G>,
{
    match entry {
        Err(error) => Step::Done(Err(error), Role::Waiter),
        Ok(Entered::Leader(leader)) => lead(leader, how, failed),
        Ok(Entered::Waiter(waiter)) => Step::Wait(waiter),
        Ok(Entered::Reused(reused)) => {
            let age = reused.age();
            Step::Done(Ok(reused.into_value()), Role::Reused { age })
        }
    }
}

/// After a wait: the outcome, with the waiting caller's `role`, or the lead after a
/// promotion (takeover).
#[inline]
pub(crate) fn waited<G, L>(
    waited: Waited<G>,
    role: Role,
    how: &mut Option<L>,
    failed: fn(&G::Value) -> bool,
) -> Step<G>
where
    G: GroupRef,
    L: Lead<G>,
{
    match waited {
        Waited::Outcome(outcome) => Step::Done(outcome, role),
        Waited::Promoted(leader) => lead(leader, how, failed),
    }
}

/// **lead**, the way `how` says.
#[inline]
fn lead<G, L>(leader: Leader<G>, how: &mut Option<L>, failed: fn(&G::Value) -> bool) -> Step<G>
where
    G: GroupRef,
    L: Lead<G>,
{
    if L::IN_PLACE {
        return Step::Lead(leader);
    }
    match how.take() {
        Some(how) => Step::Launched(how.launch(leader, failed)),
        None => {
            // Unreachable: a caller gives its work away only to a launch (whose waiter
            // is never promoted: a launched leader never abandons its flight) or to a
            // refresh (and returns the kept value at once). Ended as a dropped leader's.
            drop(leader);
            Step::Done(Err(Error::LeaderDropped), Role::Waiter)
        }
    }
}

#[cfg(feature = "std")]
mod blocking {
    use alloc::borrow::ToOwned;
    use alloc::sync::Arc;
    use core::borrow::Borrow;
    use core::hash::{BuildHasher, Hash};
    use std::time::Instant;

    use super::{Inline, Lead, Step, enter, waited};
    use crate::entered::Entered;
    use crate::error::Error;
    use crate::group::Group;
    use crate::leader::Leader;
    use crate::rt::{Launch, SpawnBlocking, SpawnBlockingWork};
    use crate::types::Role;

    /// Blocking work that runs on the calling thread when it leads, and that a refresh
    /// runs on a thread of `spawner`'s: see [`Group::call_here_refreshing`].
    pub(crate) struct InlineRefreshing<'a, K, T, S, F, Sp> {
        group: &'a Arc<Group<K, T, S>>,
        work: F,
        spawner: Sp,
    }

    impl<'a, K, T, S, F, Sp> Lead<&'a Group<K, T, S>> for InlineRefreshing<'a, K, T, S, F, Sp>
    where
        K: Send + 'static,
        T: Clone + Send + 'static,
        S: Send + Sync + 'static,
        F: FnOnce() -> T + Send + 'static,
        Sp: SpawnBlocking,
    {
        type Here = F;
        const IN_PLACE: bool = true;
        const REFRESHES: bool = true;

        #[inline]
        fn here(self) -> F {
            self.work
        }

        fn refresh(self, leader: Leader<&'a Group<K, T, S>>, failed: fn(&T) -> bool) {
            let leader = leader.rebind(Arc::clone(self.group));
            SpawnBlockingWork::new(self.spawner, self.work).launch(leader, failed);
        }
    }

    /// The blocking call loop: registers, then runs the work on this thread or blocks on
    /// the flight until `deadline`.
    #[inline]
    fn run<'g, K, T, S, Q, L>(
        group: &'g Group<K, T, S>,
        key: &Q,
        deadline: Option<Instant>,
        how: L,
        failed: fn(&T) -> bool,
    ) -> (Result<T, Error>, Role)
    where
        K: Hash + Eq + Borrow<Q>,
        S: BuildHasher,
        T: Clone,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
        L: Lead<&'g Group<K, T, S>>,
        L::Here: FnOnce() -> T,
    {
        let mut how = Some(how);
        let leader = match enter(group, key, None, &mut how, failed) {
            // The uncontended path, matched at once.
            Ok(Entered::Leader(leader)) => leader,
            // The other entries are taken apart here, not passed on whole (`entered`'s
            // arms, inline), so that the entry can stay in registers: see `Call::poll`.
            Ok(Entered::Waiter(waiter)) => return wait(Step::Wait(waiter), deadline, how, failed),
            Ok(Entered::Reused(reused)) => {
                let age = reused.age();
                return (Ok(reused.into_value()), Role::Reused { age });
            }
            Err(error) => return (Err(error), Role::Waiter),
        };
        run_here(leader, how, failed)
    }

    /// Runs the work on this thread as the flight's leader.
    #[inline]
    fn run_here<'g, K, T, S, L>(
        leader: Leader<&'g Group<K, T, S>>,
        how: Option<L>,
        failed: fn(&T) -> bool,
    ) -> (Result<T, Error>, Role)
    where
        T: Clone,
        L: Lead<&'g Group<K, T, S>>,
        L::Here: FnOnce() -> T,
    {
        let work = how.expect("a caller keeps its work until it leads").here();
        let (value, role) = leader.run_with_role(work, failed);
        (Ok(value), role)
    }

    /// The rest of the loop, once this thread waits: block until the outcome (or until
    /// `deadline`), and lead if promoted.
    #[inline(never)]
    fn wait<'g, K, T, S, L>(
        mut step: Step<&'g Group<K, T, S>>,
        deadline: Option<Instant>,
        mut how: Option<L>,
        failed: fn(&T) -> bool,
    ) -> (Result<T, Error>, Role)
    where
        T: Clone,
        L: Lead<&'g Group<K, T, S>>,
        L::Here: FnOnce() -> T,
    {
        loop {
            step = match step {
                Step::Done(outcome, role) => return (outcome, role),
                Step::Lead(leader) => return run_here(leader, how, failed),
                Step::Wait(waiter) | Step::Launched(waiter) => {
                    let role = waiter.role();
                    let outcome = match deadline {
                        None => waiter.wait(),
                        Some(deadline) => match waiter.wait_deadline(deadline) {
                            Some(outcome) => outcome,
                            None => return (Err(Error::Timeout), role),
                        },
                    };
                    // A blocking leader is never dropped mid-work, but a promotion is
                    // honoured all the same: this thread runs its own work for the flight.
                    waited(outcome, role, &mut how, failed)
                }
            };
        }
    }

    impl<K, T, S> Group<K, T, S>
    where
        K: Hash + Eq,
        S: BuildHasher,
        T: Clone,
    {
        /// A blocking call on the current thread: runs `work` here if this thread leads,
        /// or blocks until the flight's outcome (or `deadline`, if any). Returns the
        /// outcome and this caller's role. `failed` tells whether a value stands for a
        /// failure (`Result::is_err` for fallible work), for observers and the reuse
        /// window's error policy.
        ///
        /// This is the loop of the blocking front-end (`singleflight-blocking`). Its work
        /// may borrow from the caller, so it never starts a refresh
        /// ([`refresh_after`](Self::refresh_after)): past the threshold it is served the
        /// kept value until the window ends. [`call_here_refreshing`](Self::call_here_refreshing)
        /// takes `'static` work and does.
        ///
        /// # Errors
        ///
        /// [`Error::Timeout`] if `deadline` passed while this thread waited,
        /// [`Error::Panicked`] if the leader's work panicked, [`Error::Reentrant`] if
        /// called from inside this key's own work on this thread.
        ///
        /// # Panics
        ///
        /// If this thread runs the work and it panics, the panic resumes here after every
        /// waiter has been handed [`Error::Panicked`]; and if user code this thread runs
        /// for the call panics (see the crate docs' table).
        pub fn call_here<Q, F>(
            &self,
            key: &Q,
            deadline: Option<Instant>,
            work: F,
            failed: fn(&T) -> bool,
        ) -> (Result<T, Error>, Role)
        where
            K: Borrow<Q>,
            Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
            F: FnOnce() -> T,
        {
            run(self, key, deadline, Inline(work), failed)
        }

        /// Like [`call_here`](Self::call_here), for work that can move to another thread:
        /// with a refresh threshold ([`refresh_after`](Self::refresh_after)), a call that
        /// finds its key's value past it returns the value at once and hands `work` to the
        /// key's refresh, which runs it on `spawner` (one refresh per key at a time).
        ///
        /// # Errors
        ///
        /// As [`call_here`](Self::call_here).
        ///
        /// # Panics
        ///
        /// As [`call_here`](Self::call_here), and if `spawner` panics.
        pub fn call_here_refreshing<Q, F, Sp>(
            self: &Arc<Self>,
            key: &Q,
            deadline: Option<Instant>,
            work: F,
            spawner: Sp,
            failed: fn(&T) -> bool,
        ) -> (Result<T, Error>, Role)
        where
            K: Borrow<Q> + Send + 'static,
            T: Send + 'static,
            S: Send + Sync + 'static,
            Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
            F: FnOnce() -> T + Send + 'static,
            Sp: SpawnBlocking,
        {
            let how = InlineRefreshing {
                group: self,
                work,
                spawner,
            };
            run(&**self, key, deadline, how, failed)
        }
    }
}
