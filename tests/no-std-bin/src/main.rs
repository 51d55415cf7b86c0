//! A `#![no_std]`, `#![no_main]` program: two calls for one key, polled by a hand-written
//! loop, share one execution of the work. The library side links only `core` and `alloc`;
//! libc provides the entry point's caller, the heap and `write`, as a target's runtime
//! would. Prints what happened and exits with 0 if every check held, 1 otherwise.

#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

extern crate alloc;

use core::alloc::{GlobalAlloc, Layout};
use core::cell::Cell;
use core::ffi::{c_int, c_void};
use core::fmt::{self, Write as _};
use core::future::{Future, poll_fn};
use core::pin::pin;
use core::task::{Context, Poll, Waker};

use singleflight_core::{CallFuture as _, Group, Role};

// SAFETY: libc's own declarations of these four functions, with their C signatures.
#[link(name = "c")]
unsafe extern "C" {
    fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int;
    fn free(ptr: *mut c_void);
    fn write(fd: c_int, buf: *const c_void, count: usize) -> isize;
    fn abort() -> !;
}

/// The heap: libc's, through `posix_memalign`, which honours any power-of-two alignment.
struct LibcHeap;

// SAFETY: `posix_memalign` returns memory aligned to `align` (raised to a pointer's size, as it
// requires) and at least `size` bytes long, or reports failure; `free` releases it.
unsafe impl GlobalAlloc for LibcHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let align = layout.align().max(size_of::<usize>());
        let mut ptr = core::ptr::null_mut();
        // SAFETY: `align` is a power of two and a multiple of the pointer size.
        match unsafe { posix_memalign(&mut ptr, align, layout.size()) } {
            0 => ptr.cast(),
            _ => core::ptr::null_mut(),
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _: Layout) {
        // SAFETY: `ptr` came from `alloc` above, which got it from `posix_memalign`.
        unsafe { free(ptr.cast()) }
    }
}

#[global_allocator]
static HEAP: LibcHeap = LibcHeap;

/// A file descriptor to print to.
struct Fd(c_int);

impl fmt::Write for Fd {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s.as_bytes();
        while !rest.is_empty() {
            // SAFETY: `rest` is a live byte slice of `rest.len()` bytes.
            let written = unsafe { write(self.0, rest.as_ptr().cast(), rest.len()) };
            if written <= 0 {
                return Err(fmt::Error);
            }
            rest = &rest[written as usize..];
        }
        Ok(())
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let _ = writeln!(Fd(2), "no_std flight: panicked: {info}");
    // SAFETY: `abort` takes no arguments and never returns.
    unsafe { abort() }
}

/// The precompiled `alloc` of a std target is built to unwind and so names the unwinding
/// personality routine; with `panic = "abort"` nothing unwinds and it is never called (a
/// bare-metal target's `alloc` needs none).
#[unsafe(no_mangle)]
extern "C" fn rust_eh_personality() {}

/// Checks `condition`, printing `what` and whether it held; returns whether it held.
fn check(what: fmt::Arguments<'_>, condition: bool) -> bool {
    let verdict = if condition { "ok" } else { "FAILED" };
    let _ = writeln!(Fd(1), "{verdict}: {what}");
    condition
}

/// Polls `future` once with a waker that does nothing: the loop below polls everything
/// again until it is done, so nobody needs waking.
fn poll_once<F: Future + ?Sized>(future: core::pin::Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(Waker::noop()))
}

#[unsafe(no_mangle)]
extern "C" fn main(_argc: c_int, _argv: *const *const u8) -> c_int {
    let group = Group::<u32, u64>::new();
    let runs = Cell::new(0_u32);
    let gate = Cell::new(false);
    // The work counts its runs and finishes once the gate is open.
    let work = || async {
        runs.set(runs.get() + 1);
        poll_fn(|_| {
            if gate.get() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
        42
    };

    let mut first = pin!(group.call(&7, work).with_role());
    let mut second = pin!(group.call(&7, work).with_role());
    let mut ok = true;
    // The first call registers and leads; the second finds its flight and joins it.
    ok &= check(
        format_args!("the first call waits for its work"),
        poll_once(first.as_mut()).is_pending(),
    );
    ok &= check(
        format_args!("the second call waits too"),
        poll_once(second.as_mut()).is_pending(),
    );
    ok &= check(
        format_args!(
            "one flight, one waiter: in_flight {}, waiters {}",
            group.in_flight(),
            group.waiters(&7)
        ),
        group.in_flight() == 1 && group.waiters(&7) == 1,
    );

    gate.set(true);
    let (mut a, mut b) = (None, None);
    for _ in 0..100 {
        if a.is_none()
            && let Poll::Ready(done) = poll_once(first.as_mut())
        {
            a = Some(done);
        }
        if b.is_none()
            && let Poll::Ready(done) = poll_once(second.as_mut())
        {
            b = Some(done);
        }
        if a.is_some() && b.is_some() {
            break;
        }
    }
    ok &= check(
        format_args!("leader: {a:?}"),
        a == Some((Ok(42), Role::Leader { shared: true })),
    );
    ok &= check(
        format_args!("waiter: {b:?}"),
        b == Some((Ok(42), Role::Waiter)),
    );
    ok &= check(
        format_args!("the work ran {} time(s)", runs.get()),
        runs.get() == 1,
    );
    ok &= check(
        format_args!("no flight left: in_flight {}", group.in_flight()),
        group.in_flight() == 0,
    );

    let _ = writeln!(
        Fd(1),
        "no_std flight: {}, work ran {} time(s) for 2 callers",
        if ok { "passed" } else { "FAILED" },
        runs.get()
    );
    if ok { 0 } else { 1 }
}
