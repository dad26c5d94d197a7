#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for a bounded time, one at a time, and prints
# a table: target, seconds, executions, crashes. Exits non-zero if any target crashed.
#
#   fuzz/run.sh [seconds-per-target] [target...]      # default 60 s, every target
#
# Needs cargo-fuzz (installed from crates.io when missing). cargo-fuzz passes nightly-only
# `-Z` flags to rustc; RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them. Targets are
# built with AddressSanitizer (FUZZ_SANITIZER=none to build without) and debug assertions,
# so integer overflow panics as a crash. libFuzzer grows a working corpus under
# target/corpus/<target> seeded from the committed corpus/<target>; crash inputs land in
# artifacts/<target>/ and reproduce with `cargo fuzz run <target> <file>`.
set -euo pipefail

cd "$(dirname "$0")"
seconds="${1:-60}"
shift || true
sanitizer="${FUZZ_SANITIZER:-address}"
export RUSTC_BOOTSTRAP=1

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

# One build for all targets up front, so the timed runs below measure fuzzing only.
cargo fuzz build --debug-assertions --sanitizer "$sanitizer" >&2

mkdir -p target/fuzz-logs
rows=()
failed=0
for target in "${targets[@]}"; do
    work="target/corpus/$target"
    artifacts="artifacts/$target"
    log="target/fuzz-logs/$target.log"
    mkdir -p "$work" "$artifacts"
    before=$(find "$artifacts" -type f | wc -l)
    echo "fuzzing $target for ${seconds}s (log: fuzz/$log)" >&2
    start=$(date +%s)
    status=ok
    # -timeout: an input taking over 10 s counts as a hang; -rss_limit_mb: 2 GiB per run.
    if ! cargo fuzz run --debug-assertions --sanitizer "$sanitizer" "$target" "$work" "corpus/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
        >"$log" 2>&1; then
        status=FAILED
        failed=1
    fi
    elapsed=$(( $(date +%s) - start ))
    # libFuzzer's final stats; on a crash the last `#N` status line is the best count.
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    if [ -z "$execs" ]; then
        execs=$(sed -n 's/^#\([0-9][0-9]*\).*/\1/p' "$log" | tail -n 1)
    fi
    crashes=$(( $(find "$artifacts" -type f | wc -l) - before ))
    rows+=("$(printf '%-22s %8s %14s %9s %7s' "$target" "$elapsed" "${execs:-?}" "$crashes" "$status")")
done

printf '%-22s %8s %14s %9s %7s\n' target seconds executions crashes status
printf '%s\n' "${rows[@]}"
if [ "$failed" -ne 0 ]; then
    echo "some targets crashed: inputs under fuzz/artifacts/, logs under fuzz/target/fuzz-logs/" >&2
fi
exit "$failed"
