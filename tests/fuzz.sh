#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time (FUZZ_SECONDS each, 45 by default) from
# the corpora kept in fuzz/corpus; new inputs go to a temporary directory, so the tree
# stays as it is. A crash fails the run and leaves its input in fuzz/artifacts.
#
# Needs the nightly toolchain (rustup) and cargo-fuzz, which it installs from crates.io
# when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "fuzz: $*"; }
rustup toolchain list | grep -q '^nightly' \
    || { echo "fuzz: FAIL: the nightly toolchain is missing (cargo fuzz needs it)" >&2; exit 1; }
command -v cargo-fuzz >/dev/null || { say "installing cargo-fuzz"; cargo install cargo-fuzz --locked -q; }

SECONDS_EACH=${FUZZ_SECONDS:-45}
NEW=$(mktemp -d /tmp/mailfront-fuzz.XXXXXX)
trap 'rm -rf "$NEW"' EXIT
say "building the targets"
cargo +nightly fuzz build -O
for target in $(cargo +nightly fuzz list); do
    say "$target for ${SECONDS_EACH}s"
    mkdir -p "$NEW/$target"
    cargo +nightly fuzz run -O "$target" "$NEW/$target" "fuzz/corpus/$target" -- \
        -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -print_final_stats=1 \
        > "$NEW/$target.log" 2>&1 \
        || { tail -40 "$NEW/$target.log"; echo "fuzz: FAIL: $target" >&2; exit 1; }
    grep -E '^stat::number_of_executed_units' "$NEW/$target.log" | sed "s/^/fuzz: $target: /"
done
say "all passed"
