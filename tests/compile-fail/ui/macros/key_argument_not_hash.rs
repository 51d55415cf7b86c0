// An argument that is not `Hash + Eq + Clone` can't be part of the automatic key: the error
// names the argument and says how to fix it.
use singleflight_blocking::coalesce;

struct Query {
    sql: String,
}

#[coalesce]
fn run(id: u64, query: Query) -> u64 {
    id + query.sql.len() as u64
}

fn main() {}
