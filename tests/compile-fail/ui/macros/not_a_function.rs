// The attribute goes on functions only.
use singleflight_blocking::coalesce;

#[coalesce]
struct Cache;

fn main() {}
