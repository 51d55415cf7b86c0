//! Blocking work runs on the runtime's blocking pool: a closure that is not `Send` is rejected.
use std::rc::Rc;

async fn run(group: singleflight_tokio::Group<String, u64>) {
    let not_send = Rc::new(1);
    let _ = group.call_blocking("k", move || *not_send).await;
}

fn main() {
    drop(run(singleflight_tokio::Group::new()));
}
