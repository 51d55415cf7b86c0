// A custom key must be `Hash + Eq + Clone` too.
use singleflight_blocking::coalesce;

#[derive(Clone)]
struct Filter(f64);

#[coalesce(key: Filter = Filter(*threshold))]
fn select(threshold: f64) -> Vec<u64> {
    vec![threshold as u64]
}

fn main() {}
