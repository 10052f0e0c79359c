#!/usr/bin/env bash
# Bounded fuzz smoke run for CI: each target (ftp_parse, stream, engine, engine_restart; pcap_read, config_toml,
# control_request, metrics_request) for a fixed number of executions
# with a fixed seed (FUZZ_SEED, default 1), so a CI run is reproducible: the same commit explores the same
# inputs on any machine, and a new finding comes from a change, not from luck. FUZZ_SECONDS (default 120)
# only caps the time of a slow machine. Exploration with other seeds and longer runs is done by hand:
#   FUZZ_SEED=$RANDOM FUZZ_RUNS=0 FUZZ_SECONDS=1800 fuzz/smoke.sh
# Runs start from the committed corpus in fuzz/corpus/<target>/. New inputs go to a scratch
# directory, so the committed corpus is never modified; a crash leaves its input in fuzz/artifacts/<target>/
# and makes this script exit non-zero. Prints one summary line per target (executions, crashes).
# Needs cargo-fuzz (installed from crates.io if missing); runs on stable Rust without a sanitizer.
set -euo pipefail
cd "$(dirname "$0")"
secs="${FUZZ_SECONDS:-120}"
seed="${FUZZ_SEED:-1}"
targets="${FUZZ_TARGETS:-ftp_parse stream engine engine_restart pcap_read config_toml control_request metrics_request}"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
cargo fuzz build -s none
# Executions per target: about 30-60 s each on a 2-vCPU machine for the first four (engine_restart runs
# each program twice, restarting before every step: ~30 programs/s), 5-15 s for the
# four input readers (about 40 s together). FUZZ_RUNS=0 means "until FUZZ_SECONDS".
runs_of() {
    if [ -n "${FUZZ_RUNS:-}" ]; then
        [ "$FUZZ_RUNS" = 0 ] && echo -1 || echo "$FUZZ_RUNS"
        return
    fi
    case "$1" in
        ftp_parse) echo 1500000 ;;
        stream) echo 60000 ;;
        engine_restart) echo 3000 ;;
        pcap_read) echo 50000 ;;
        config_toml) echo 250000 ;;
        control_request | metrics_request) echo 1500000 ;;
        *) echo 80000 ;;
    esac
}
status=0
for t in $targets; do
    mkdir -p "$scratch/$t"
    log="$scratch/$t.log"
    # engine_restart explores from the engine's corpus (the same programs, run with restarts).
    seeds="corpus/$t"
    [ "$t" != engine_restart ] || seeds=corpus/engine
    if cargo fuzz run -s none "$t" "$scratch/$t" "$seeds" -- \
        -seed="$seed" -runs="$(runs_of "$t")" -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1; then
        crashes=0
    else
        crashes=1
        status=1
        grep -E "panicked|Test unit written" -A3 "$log" || tail -n 40 "$log"
    fi
    runs="$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo '?')"
    echo "fuzz $t: seed $seed, $runs executions, $crashes crashes"
done
exit "$status"
