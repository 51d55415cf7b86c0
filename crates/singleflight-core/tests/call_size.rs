//! Calls keep the work's future inline (see `lone_leader.rs`): every call has room for it.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use singleflight_core::Group;

fn ready<F: Future>(future: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(future).poll(&mut cx) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("work that is ready at once makes a call that is ready at once"),
    }
}

/// The other side of keeping the work inline: every call has room for the work's future.
/// Boxing the future in the work closure, as the docs advise for large futures and big
/// herds, leaves each call a pointer's worth of room instead.
#[test]
fn boxing_a_large_work_future_keeps_calls_small() {
    async fn large() -> [u8; 4] {
        let buffer = [7u8; 4096];
        std::future::ready(()).await;
        let buffer = std::hint::black_box(buffer);
        [buffer[0]; 4]
    }
    let group = Group::<u64, [u8; 4]>::new();
    let inline = group.call(&1, large);
    let boxed = group.call(&2, || Box::pin(large()));
    assert!(
        size_of_val(&inline) > 4096,
        "{} bytes",
        size_of_val(&inline)
    );
    assert!(size_of_val(&boxed) <= 128, "{} bytes", size_of_val(&boxed));
    assert_eq!(ready(inline), Ok([7; 4]));
    assert_eq!(ready(boxed), Ok([7; 4]));
}
