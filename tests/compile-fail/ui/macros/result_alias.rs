// The error type of a fallible function must be visible: it is shared with every caller.
use singleflight_blocking::coalesce;

#[coalesce]
fn read(path: String) -> std::io::Result<String> {
    std::fs::read_to_string(path)
}

fn main() {}
