// A custom key names the type of the function's static group, so it must be written out.
use singleflight_blocking::coalesce;

#[coalesce(key = format!("user:{id}"))]
fn user(id: u64, verbose: bool) -> String {
    format!("{id} {verbose}")
}

fn main() {}
