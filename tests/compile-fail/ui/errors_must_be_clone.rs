//! Every caller receives a copy of the leader's error: an error that is not `Clone` is
//! rejected with a message that names `try_call_arc`, which shares it behind an `Arc`.
use std::io;

async fn run(group: singleflight_tokio::Group<String, Result<u64, io::Error>>) {
    let _ = group.try_call("k", || async { Ok(1) }).await;
}

fn blocking(group: singleflight_blocking::Group<String, Result<u64, io::Error>>) {
    let _ = group.try_call("k", || Ok(1));
}

fn main() {
    drop(run(singleflight_tokio::Group::new()));
    blocking(singleflight_blocking::Group::new());
}
