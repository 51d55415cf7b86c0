// Detached work outlives its caller, so it can't borrow `self` or an argument.
use singleflight_tokio::coalesce;

struct Client;

impl Client {
    #[coalesce(detached, shared)]
    async fn fetch(&self, id: u64) -> u64 {
        id
    }

    #[coalesce(detached, key: String = name.to_string())]
    async fn fetch_by_name(self: std::sync::Arc<Self>, name: &str) -> usize {
        name.len()
    }
}

fn main() {}
