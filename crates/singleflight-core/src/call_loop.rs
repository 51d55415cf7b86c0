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

use crate::entry::{Entry, enter_with};
use crate::error::Error;
use crate::group::GroupRef;
use crate::leader::Leader;
use crate::rt::Launch;
use crate::types::Role;
use crate::waiter::{Waited, Waiter};

/// How a call leads, once it must run the work: the one thing the ways of calling do
/// differently (besides waiting).
pub(crate) trait Lead<G: GroupRef>: Sized {
    /// What a leading caller runs in its own place (its work), or [`Infallible`] for a
    /// call that never does (its work is launched).
    type Here;

    /// Whether this call's work can be handed to a refresh, to run detached from it.
    const REFRESHES: bool;

    /// Starts leading the flight `leader` leads.
    fn lead(self, leader: Leader<G>, failed: fn(&G::Value) -> bool) -> Led<G, Self::Here>;

    /// Hands the work to the refresh `leader` leads, to run where no caller's cancellation
    /// reaches it. Only called when [`REFRESHES`](Self::REFRESHES).
    fn refresh(self, leader: Leader<G>, failed: fn(&G::Value) -> bool) {
        let _ = failed;
        drop(leader);
    }
}

/// How a caller started leading.
pub(crate) enum Led<G: GroupRef, H> {
    /// The caller runs the work `H` in place, with the flight's guard.
    Here(Leader<G>, H),
    /// The work was launched; the caller waits for it as the flight's (uncounted) launcher.
    Launched(Waiter<G>),
}

/// What a call does next.
pub(crate) enum Step<G: GroupRef, H> {
    /// Wait for the flight (joined as a waiter).
    Wait(Waiter<G>),
    /// Run the work `H` in place, as the flight's leader.
    Lead(Leader<G>, H),
    /// Wait for the work this caller launched, as its flight's leader.
    Launched(Waiter<G>),
    /// The call is over: its outcome and its role.
    Done(Result<G::Value, Error>, Role),
}

/// Work that runs in the caller, and may borrow from it: it never refreshes.
pub(crate) struct Inline<F>(pub(crate) F);

impl<G: GroupRef, F> Lead<G> for Inline<F> {
    type Here = F;
    const REFRESHES: bool = false;

    #[inline]
    fn lead(self, leader: Leader<G>, _failed: fn(&G::Value) -> bool) -> Led<G, F> {
        Led::Here(leader, self.0)
    }
}

/// Work launched on a spawner ([`Launch`]): the launcher waits for it as a waiter, and a
/// refresh launches it the same way.
pub(crate) struct Launched<L>(pub(crate) L);

impl<G: GroupRef, L: Launch<G>> Lead<G> for Launched<L> {
    type Here = Infallible;
    const REFRESHES: bool = true;

    fn lead(self, leader: Leader<G>, failed: fn(&G::Value) -> bool) -> Led<G, Infallible> {
        // Subscribe before launching: the task may finish at once on another thread.
        let waiter = Waiter::launcher(&leader);
        self.0.launch(leader, failed);
        Led::Launched(waiter)
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
) -> Step<G, L::Here>
where
    G: GroupRef,
    G::Key: Hash + Eq + Borrow<Q>,
    G::Hasher: BuildHasher,
    G::Value: Clone,
    Q: ?Sized + Hash + Eq + ToOwned<Owned = G::Key>,
    L: Lead<G>,
{
    let entry = if L::REFRESHES {
        let mut refresh = |leader: Leader<G>| {
            if let Some(how) = how.take() {
                how.refresh(leader, failed);
            }
        };
        enter_with(group, key, waker, Some(&mut refresh))
    } else {
        enter_with(group, key, waker, None)
    };
    match entry {
        Err(error) => Step::Done(Err(error), Role::Waiter),
        Ok(Entry::Leader(leader)) => lead(leader, how, failed),
        Ok(Entry::Waiter(waiter)) => Step::Wait(waiter),
        Ok(Entry::Reused(reused)) => {
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
) -> Step<G, L::Here>
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
fn lead<G, L>(
    leader: Leader<G>,
    how: &mut Option<L>,
    failed: fn(&G::Value) -> bool,
) -> Step<G, L::Here>
where
    G: GroupRef,
    L: Lead<G>,
{
    match how.take() {
        Some(how) => match how.lead(leader, failed) {
            Led::Here(leader, work) => Step::Lead(leader, work),
            Led::Launched(waiter) => Step::Launched(waiter),
        },
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

    use super::{Inline, Lead, Led, Step, register, waited};
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
        const REFRESHES: bool = true;

        #[inline]
        fn lead(
            self,
            leader: Leader<&'a Group<K, T, S>>,
            _failed: fn(&T) -> bool,
        ) -> Led<&'a Group<K, T, S>, F> {
            Led::Here(leader, self.work)
        }

        fn refresh(self, leader: Leader<&'a Group<K, T, S>>, failed: fn(&T) -> bool) {
            let leader = leader.rebind(Arc::clone(self.group));
            SpawnBlockingWork::new(self.spawner, self.work).launch(leader, failed);
        }
    }

    /// The blocking call loop: registers, then runs the work on this thread or blocks on
    /// the flight until `deadline`.
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
        let mut step = register(group, key, None, &mut how, failed);
        loop {
            step = match step {
                Step::Done(outcome, role) => return (outcome, role),
                Step::Lead(leader, work) => {
                    let (value, role) = leader.run_with_role(work, failed);
                    return (Ok(value), role);
                }
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
