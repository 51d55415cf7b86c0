//! The hostile-types suite (see `singleflight_tests::hostile`): user code that panics or
//! calls back into the group, on every front-end, each case in a process of its own.
//!
//! Its own harness (`harness = false`): the live heap is counted by this binary's global
//! allocator, and a case is measured alone in its process, so nothing else allocates
//! meanwhile. Arguments filter cases by id (`blocking::clone_panics_on_the_leaders_side`);
//! the summary ends like libtest's.

#[global_allocator]
static HEAP: &stats_alloc::StatsAlloc<std::alloc::System> = &stats_alloc::INSTRUMENTED_SYSTEM;

fn main() {
    singleflight_tests::hostile::main();
}
