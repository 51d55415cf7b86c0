// `detached` and `leader_drop` have no meaning for blocking calls.
use singleflight_blocking::coalesce;

#[coalesce(detached, leader_drop = FailWaiters)]
fn load(id: u64) -> u64 {
    id
}

fn main() {}
