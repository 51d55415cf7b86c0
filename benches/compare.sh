#!/usr/bin/env bash
# A/B of our scenarios: the library at a git ref against the working tree, rounds
# interleaved in one run (one process per round, the order alternating), so that a
# regression shows before it lands.
#
#   benches/compare.sh <git-ref> [rounds=9] [--quick]
#
# It checks the ref out into a temporary git worktree, builds `src/bin/ab.rs` (with the
# working tree's scenario sources) once against that copy and once against the working
# tree, each in a throwaway project and target directory of its own, and prints the
# medians of each figure, old and new, and their ratio. With valgrind installed it also
# counts the instructions of one uncontended call (callgrind: repeatable where times are
# not). Nothing is committed or vendored; the worktree and the builds are removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

ref=${1:?usage: benches/compare.sh <git-ref> [rounds] [--quick]}
rounds=${2:-9}
quick=""
for arg in "$@"; do [[ "$arg" == --quick ]] && quick=--quick; done
[[ "$rounds" =~ ^[0-9]+$ ]] || rounds=9

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sf-compare.XXXXXX")
cleanup() {
    git -C "$root" worktree remove --force "$tmp/old-tree" >/dev/null 2>&1 || true
    rm -rf "$tmp"
    git -C "$root" worktree prune >/dev/null 2>&1 || true
}
trap cleanup EXIT

git -C "$root" worktree add --detach --quiet "$tmp/old-tree" "$ref"
old_commit=$(git -C "$tmp/old-tree" rev-parse --short HEAD)

# A standalone project that builds `ab` against the crates of tree $2.
project() {
    local dir=$1 tree=$2
    mkdir -p "$dir/src/bin"
    cp "$root"/benches/src/{coalescer,ours,scenarios,blocking_herd}.rs "$dir/src/"
    cp "$root/benches/src/bin/ab.rs" "$dir/src/bin/ab.rs"
    # The working tree's lock file pins the third-party versions alike on both sides.
    cp "$root/Cargo.lock" "$dir/Cargo.lock"
    cat >"$dir/Cargo.toml" <<TOML
[package]
name = "sf-ab"
version = "0.0.0"
edition = "2024"
publish = false

[[bin]]
name = "ab"
path = "src/bin/ab.rs"

[dependencies]
singleflight-tokio = { path = "$tree/crates/singleflight-tokio" }
singleflight-blocking = { path = "$tree/crates/singleflight-blocking" }
tokio = { version = "1", features = ["rt", "rt-multi-thread", "sync", "time"] }
bytes = "1"

[profile.release]
debug = 1

[workspace]
TOML
    echo "building $dir against $tree" >&2
    CARGO_TARGET_DIR="$dir/target" cargo build --quiet --release --bin ab \
        --manifest-path "$dir/Cargo.toml"
}

project "$tmp/old" "$tmp/old-tree"
project "$tmp/new" "$root"
old="$tmp/old/target/release/ab"
new="$tmp/new/target/release/ab"

echo "interleaving $rounds rounds: $ref ($old_commit) against the working tree" >&2
for ((i = 0; i < rounds; i++)); do
    if ((i % 2 == 0)); then order="old new"; else order="new old"; fi
    for side in $order; do
        bin=$old; [[ $side == new ]] && bin=$new
        "$bin" round $quick | sed "s/^/$side /" >>"$tmp/figures"
    done
    printf '.' >&2
done
echo >&2

if command -v valgrind >/dev/null 2>&1; then
    # Instructions per call: the difference between two call counts, so that set-up and
    # tear-down cancel out.
    instructions() {
        valgrind --tool=callgrind --callgrind-out-file=/dev/null "$@" 2>&1 \
            | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
    }
    for side in old new; do
        bin=$old; [[ $side == new ]] && bin=$new
        for kind in async blocking; do
            a=$(instructions "$bin" count "$kind" 20000)
            b=$(instructions "$bin" count "$kind" 40000)
            echo "$side callgrind_${kind}_instructions_per_call $(( (b - a) / 20000 ))" >>"$tmp/figures"
        done
    done
fi

python3 - "$tmp/figures" "$ref ($old_commit)" <<'PY'
import sys, statistics
from collections import defaultdict
figures = defaultdict(lambda: defaultdict(list))
for line in open(sys.argv[1]):
    side, name, value = line.split()
    figures[name][side].append(float(value))
print(f"| figure | {sys.argv[2]} | working tree | new / old |")
print("|---|---:|---:|---:|")
for name, sides in figures.items():
    old, new = statistics.median(sides["old"]), statistics.median(sides["new"])
    if name.endswith("_executions"):
        old, new = sum(sides["old"]), sum(sides["new"])
        print(f"| {name} (sum over {len(sides['old'])} rounds) | {old:.0f} | {new:.0f} | |")
        continue
    ratio = f"{new / old:.3f}" if old else ""
    print(f"| {name} | {old:.2f} | {new:.2f} | {ratio} |")
PY
