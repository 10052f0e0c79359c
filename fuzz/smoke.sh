#!/usr/bin/env bash
# Bounded fuzz smoke run for CI: each target (ftp_parse, stream, engine) for FUZZ_SECONDS (default 60)
# seconds, starting from the committed corpus in fuzz/corpus/<target>/. New inputs go to a scratch
# directory, so the committed corpus is never modified; a crash leaves its input in fuzz/artifacts/<target>/
# and makes this script exit non-zero. Prints one summary line per target (executions, crashes).
# Needs cargo-fuzz (installed from crates.io if missing); runs on stable Rust without a sanitizer.
set -euo pipefail
cd "$(dirname "$0")"
secs="${FUZZ_SECONDS:-60}"
targets="${FUZZ_TARGETS:-ftp_parse stream engine}"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
cargo fuzz build -s none
status=0
for t in $targets; do
    mkdir -p "$scratch/$t"
    log="$scratch/$t.log"
    if cargo fuzz run -s none "$t" "$scratch/$t" "corpus/$t" -- \
        -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1; then
        crashes=0
    else
        crashes=1
        status=1
        grep -E "panicked|Test unit written" -A3 "$log" || tail -n 40 "$log"
    fi
    runs="$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo '?')"
    echo "fuzz $t: ${secs}s, $runs executions, $crashes crashes"
done
exit "$status"
