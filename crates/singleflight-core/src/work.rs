//! The leader's work future, kept in its call: inline when it is small, boxed when it is
//! large. The one module of the crate with `unsafe` code.
//!
//! Every caller's [`Call`](crate::Call) has room for the work's future, since any caller may
//! lead; in a herd, thousands of waiting tasks each hold that room and never use it. Kept
//! inline, a large future (a timer, a client's request state: a few hundred bytes and up)
//! made each waiting task that much larger: measured on a herd of 10,000 tokio tasks whose
//! work sleeps, 256-byte calls against 120 with the future boxed, the last caller arrived
//! 35% later and the herd's peak memory was 57% higher. Boxed always, every uncontended
//! call paid an allocation (12% slower). So a future of at most [`INLINE_BYTES`] (and an
//! alignment of at most 8) lives in a fixed buffer inside the call, with no allocation, and
//! a larger one is boxed by the one caller that leads; the choice is made at compile time
//! per future type. A call always holds [`INLINE_BYTES`] for the work, whatever its size.
//!
//! Safe code can't choose a field's type by the size of a generic type on stable Rust,
//! hence the union below. Nothing in it is shared between threads (a `Work` moves with its
//! call as a whole), so there is no interleaving for loom to explore; what can go wrong is
//! layout, pinning and dropping, which the tests below exercise for both layouts and an
//! over-aligned future. Run them under Miri after any change here:
//! `cargo +nightly miri test -p singleflight-core --lib work::` (CI runs stable only).

use alloc::boxed::Box;
use core::marker::PhantomData;
use core::mem::{ManuallyDrop, MaybeUninit};
use core::pin::Pin;
use core::ptr;

/// The largest work future kept inline in a call: four words.
pub(crate) const INLINE_BYTES: usize = 32;

#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct Buf([MaybeUninit<u8>; INLINE_BYTES]);

union Storage<Fut> {
    inline: Buf,
    boxed: ManuallyDrop<Pin<Box<Fut>>>,
}

/// A work future, inline or boxed (see the module docs). Pinned where it lives: the future
/// inside is never moved once the `Work` is pinned. `PhantomData<Fut>` gives it `Fut`'s
/// auto traits (`Send`, `Sync`, `Unpin`, unwind safety), as a plain field of `Fut` would.
pub(crate) struct Work<Fut> {
    storage: Storage<Fut>,
    _fut: PhantomData<Fut>,
}

impl<Fut> Work<Fut> {
    /// Whether a `Fut` lives inline: decided at compile time.
    const INLINE: bool = size_of::<Fut>() <= INLINE_BYTES && align_of::<Fut>() <= align_of::<Buf>();

    /// Keeps `fut`: inline if it is small, else in a box.
    #[inline]
    pub(crate) fn new(fut: Fut) -> Self {
        if Self::INLINE {
            let mut storage = Storage {
                inline: Buf([MaybeUninit::uninit(); INLINE_BYTES]),
            };
            // SAFETY: `INLINE` says a `Fut` fits the buffer in size and alignment (the
            // union is aligned as the buffer is, at offset 0), and the buffer is
            // uninitialised space of ours: writing moves `fut` in without dropping anything.
            unsafe { ptr::addr_of_mut!(storage.inline).cast::<Fut>().write(fut) };
            Self {
                storage,
                _fut: PhantomData,
            }
        } else {
            Self {
                storage: Storage {
                    boxed: ManuallyDrop::new(Box::pin(fut)),
                },
                _fut: PhantomData,
            }
        }
    }

    /// The pinned future.
    #[inline]
    pub(crate) fn future(self: Pin<&mut Self>) -> Pin<&mut Fut> {
        // SAFETY: nothing is moved out of `self`: it only gives a pinned reference to the
        // future it holds.
        let this = unsafe { self.get_unchecked_mut() };
        if Self::INLINE {
            // SAFETY: with `INLINE`, `new` wrote a `Fut` at the start of the buffer, and it
            // stays there, initialised, until `drop`. It is pinned because `self` is: the
            // buffer is part of `self` and `Work` never moves it out.
            unsafe {
                Pin::new_unchecked(&mut *ptr::addr_of_mut!(this.storage.inline).cast::<Fut>())
            }
        } else {
            // SAFETY: without `INLINE`, `new` stored the box, which stays until `drop`.
            unsafe { (*this.storage.boxed).as_mut() }
        }
    }
}

impl<Fut> Drop for Work<Fut> {
    #[inline]
    fn drop(&mut self) {
        if Self::INLINE {
            // SAFETY: the `Fut` that `new` wrote is still there (see `future`) and is
            // dropped once, here, in place, as pinned data must be.
            unsafe { ptr::drop_in_place(ptr::addr_of_mut!(self.storage.inline).cast::<Fut>()) }
        } else {
            // SAFETY: the box that `new` stored is still there, and is dropped once, here.
            unsafe { ManuallyDrop::drop(&mut self.storage.boxed) }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use alloc::rc::Rc;
    use core::cell::Cell;
    use core::future::Future;
    use core::task::{Context, Poll, Waker};

    /// Counts its drops; `N` words of padding set its size.
    struct Probe<const N: usize> {
        drops: Rc<Cell<u32>>,
        polls: u32,
        _pad: [u64; N],
        // Not `Unpin`, like most async blocks.
        _pinned: core::marker::PhantomPinned,
    }

    impl<const N: usize> Future for Probe<N> {
        type Output = u32;
        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<u32> {
            // SAFETY: only a plain counter is touched; nothing is moved.
            let this = unsafe { self.get_unchecked_mut() };
            this.polls += 1;
            if this.polls == 2 {
                Poll::Ready(7)
            } else {
                Poll::Pending
            }
        }
    }

    impl<const N: usize> Drop for Probe<N> {
        fn drop(&mut self) {
            self.drops.set(self.drops.get() + 1);
        }
    }

    fn run<const N: usize>() -> u32 {
        let drops = Rc::new(Cell::new(0));
        let probe = Probe::<N> {
            drops: Rc::clone(&drops),
            polls: 0,
            _pad: [0; N],
            _pinned: core::marker::PhantomPinned,
        };
        {
            let mut work = core::pin::pin!(Work::new(probe));
            let mut cx = Context::from_waker(Waker::noop());
            assert_eq!(work.as_mut().future().poll(&mut cx), Poll::Pending);
            assert_eq!(work.as_mut().future().poll(&mut cx), Poll::Ready(7));
            assert_eq!(drops.get(), 0);
        }
        drops.get()
    }

    #[test]
    fn a_small_future_lives_inline_and_a_large_one_in_a_box_each_dropped_once() {
        const { assert!(Work::<Probe<0>>::INLINE) };
        const { assert!(!Work::<Probe<8>>::INLINE) };
        assert_eq!(run::<0>(), 1);
        assert_eq!(run::<2>(), 1);
        assert_eq!(run::<8>(), 1);
        assert_eq!(run::<100>(), 1);
        // Whatever the future's size, a call holds the same room for it.
        assert_eq!(size_of::<Work<Probe<0>>>(), INLINE_BYTES);
        assert_eq!(size_of::<Work<Probe<100>>>(), INLINE_BYTES);
    }

    #[test]
    fn an_overaligned_future_is_boxed() {
        #[repr(align(32))]
        struct Wide(#[allow(dead_code, reason = "only its alignment matters")] u8);
        impl Future for Wide {
            type Output = ();
            fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
                Poll::Ready(())
            }
        }
        const { assert!(!Work::<Wide>::INLINE) };
        let work = core::pin::pin!(Work::new(Wide(1)));
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(work.future().poll(&mut cx), Poll::Ready(()));
    }
}
