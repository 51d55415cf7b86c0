// The blocking attribute is for plain functions; the async ones for `async fn`.
#[singleflight_blocking::coalesce]
async fn blocking(id: u64) -> u64 {
    id
}

#[singleflight_tokio::coalesce]
fn tokio(id: u64) -> u64 {
    id
}

fn main() {}
