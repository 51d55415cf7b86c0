//! Running tests on embassy's executor on the host (the `platform-std` executor and
//! embassy-time's `std` driver), with gates instead of sleeps.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test binary uses part of this module"
)]

use std::any::Any;
use std::boxed::Box;
use std::cell::{Cell, RefCell};
use std::future::{Future, poll_fn};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Poll, Waker};
use std::vec::Vec;

use embassy_executor::{Executor, Spawner};

type Task = Pin<Box<dyn Future<Output = ()>>>;

/// Every test's futures run as tasks of this one task function: embassy's tasks are static
/// and non-generic, so a test hands it its future boxed. The pool is shared by the tests of
/// a binary running on parallel threads.
#[embassy_executor::task(pool_size = 64)]
async fn task(future: Task) {
    future.await;
}

/// Runs `test` as a task on a fresh embassy executor on this thread, until it returns.
///
/// # Panics
///
/// If a task panics (the panic leaves the executor), or the task pool is exhausted.
pub fn run<F, Fut>(test: F)
where
    F: FnOnce(Spawner) -> Fut,
    Fut: Future<Output = ()> + 'static,
{
    let done = Arc::new(AtomicBool::new(false));
    let finished = done.clone();
    // `run_until` needs the executor for `'static`; each test leaks one (a few words).
    let executor = Box::leak(Box::new(Executor::new()));
    executor.run_until(
        |spawner| {
            let test = test(spawner);
            spawner.spawn(
                task(Box::pin(async move {
                    test.await;
                    finished.store(true, Ordering::Release);
                }))
                .expect("the task pool has room"),
            );
        },
        || done.load(Ordering::Acquire),
    );
}

/// Spawns `future` as a task of its own on `spawner`'s executor; the handle resolves to its
/// output.
pub fn spawn<T: 'static>(spawner: Spawner, future: impl Future<Output = T> + 'static) -> Join<T> {
    let join = Join(Rc::new(Slot {
        value: RefCell::new(None),
        waker: RefCell::new(None),
    }));
    let slot = join.0.clone();
    spawner.spawn(
        task(Box::pin(async move {
            let value = future.await;
            *slot.value.borrow_mut() = Some(value);
            if let Some(waker) = slot.waker.borrow_mut().take() {
                waker.wake();
            }
        }))
        .expect("the task pool has room"),
    );
    join
}

struct Slot<T> {
    value: RefCell<Option<T>>,
    waker: RefCell<Option<Waker>>,
}

/// The output of a task made by [`spawn`].
pub struct Join<T>(Rc<Slot<T>>);

impl<T> Future for Join<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<T> {
        match self.0.value.borrow_mut().take() {
            Some(value) => Poll::Ready(value),
            None => {
                *self.0.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// A one-way gate: tasks wait until the test opens it.
#[derive(Clone, Default)]
pub struct Gate(Rc<GateState>);

#[derive(Default)]
struct GateState {
    open: Cell<bool>,
    wakers: RefCell<Vec<Waker>>,
}

impl Gate {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn open(&self) {
        self.0.open.set(true);
        for waker in self.0.wakers.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    pub async fn wait(&self) {
        poll_fn(|cx| {
            if self.0.open.get() {
                Poll::Ready(())
            } else {
                self.0.wakers.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
    }
}

/// Yields to the executor until `condition` holds (a waiter count, a flag): ordering by
/// state, never by time.
pub async fn until(mut condition: impl FnMut() -> bool) {
    while !condition() {
        embassy_futures::yield_now().await;
    }
}

/// Polls `future`, catching a panic of any poll (as an unwinding host or an executor that
/// survives a panicking task would); the future is dropped after the panic was caught.
pub async fn catch_panic<F: Future>(future: F) -> Result<F::Output, Box<dyn Any + Send>> {
    let mut future = Box::pin(future);
    poll_fn(
        move |cx| match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(payload) => Poll::Ready(Err(payload)),
        },
    )
    .await
}
