//! Detached work outlives its callers: it cannot borrow from them.
async fn run(group: singleflight_tokio::Group<String, usize>) {
    let local = String::from("borrowed");
    let _ = group.call_detached("k", || async { local.len() }).await;
}

fn main() {
    drop(run(singleflight_tokio::Group::new()));
}
