// Options are checked: a misspelt one is an error, as is a bad leader-drop policy.
use singleflight_tokio::coalesce;

#[coalesce(detach)]
async fn one(id: u64) -> u64 {
    id
}

#[coalesce(leader_drop = Sometimes)]
async fn two(id: u64) -> u64 {
    id
}

#[coalesce(timeout = std::time::Duration::from_secs(1), timeout = std::time::Duration::from_secs(2))]
async fn three(id: u64) -> u64 {
    id
}

fn main() {}
