// A generic function has one `static` group, which can't depend on its type parameters.
use singleflight_blocking::coalesce;

#[coalesce]
fn describe<T: std::fmt::Debug + std::hash::Hash + Eq + Clone>(value: T) -> String {
    format!("{value:?}")
}

#[coalesce]
fn render(value: impl std::fmt::Display) -> String {
    value.to_string()
}

fn main() {}
