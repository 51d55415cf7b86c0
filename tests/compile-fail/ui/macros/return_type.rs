// Every caller receives a clone of one value: it must be owned, named and `Clone`.
use singleflight_blocking::coalesce;

struct Report;

#[coalesce]
fn report(id: u64) -> Report {
    let _ = id;
    Report
}

#[coalesce]
fn label(id: u64) -> impl std::fmt::Display {
    id
}

#[coalesce(key: String = name.to_string())]
fn first_word(name: &str) -> &str {
    name.split(' ').next().unwrap_or_default()
}

#[derive(Clone)]
struct Row;

#[coalesce]
fn fallible(id: u64) -> Result<Row, Report> {
    let _ = id;
    Ok(Row)
}

fn main() {}
