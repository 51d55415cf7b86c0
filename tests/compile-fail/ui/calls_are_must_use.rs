//! A call registers on its first poll: one that is never awaited does nothing, and says so.
#![deny(unused_must_use)]

fn main() {
    let group = singleflight_tokio::Group::<String, u64>::new();
    group.call("k", || async { 1 });
    group.call_detached("k", || async { 1 });
}
