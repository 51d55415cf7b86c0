// A borrowed argument can't be kept in the key while the call is in flight.
use singleflight_tokio::coalesce;

#[coalesce]
async fn greet(name: &str) -> String {
    format!("hello {name}")
}

fn main() {}
