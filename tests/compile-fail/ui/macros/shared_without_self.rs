// `shared` says that calls on every instance of a method share: a function without `self`
// has no instance.
use singleflight_blocking::coalesce;

#[coalesce(shared)]
fn load(id: u64) -> u64 {
    id
}

struct Config;

impl Config {
    #[coalesce(in_impl, shared)]
    fn load(name: String) -> String {
        name
    }
}

fn main() {}
