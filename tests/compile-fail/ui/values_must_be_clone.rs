//! Every caller receives a clone of the value: a value that is not `Clone` is rejected
//! (put it in an `Arc`).
struct NotClone;

async fn run(group: singleflight_tokio::Group<String, NotClone>) {
    let _ = group.call("k", || async { NotClone }).await;
}

fn main() {
    drop(run(singleflight_tokio::Group::new()));
}
