//! Detached work moves into a spawned task: a future that is not `Send` is rejected.
use std::rc::Rc;

async fn run(group: singleflight_tokio::Group<String, u64>) {
    let _ = group
        .call_detached("k", || async {
            let not_send = Rc::new(1);
            async {}.await;
            *not_send
        })
        .await;
}

fn main() {
    drop(run(singleflight_tokio::Group::new()));
}
