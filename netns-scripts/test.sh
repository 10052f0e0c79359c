#!/usr/bin/env bash
# netns-scripts/test.sh: the whole test suite, as CI runs it: formatting, lints, then every test
# (unit, engine scenarios, pcap cases, and the namespace tests that run the real binary; the latter
# need root, and under CI=true they fail rather than skip without it).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$FTPNAT_REPO"
ftpnat_find_cargo

if [[ $EUID -ne 0 ]]; then
    echo "test.sh: not root: namespace tests will SKIP (or FAIL under CI=true); run with sudo" >&2
fi
# The namespace tests expect these tools; say so up front instead of failing deep inside a test.
for tool in ip ss ping curl python3 timeout; do
    command -v "$tool" >/dev/null || ftpnat_die "missing $tool: run netns-scripts/deps.sh"
done

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings
# Plain `cargo test` (not --all-targets) so doc tests run too; clippy above already built every target.
echo "== cargo test --release"
cargo test --release
# A bounded, seeded fuzz smoke run (a fixed execution count per target, reproducible): cargo-fuzz on stable via
# RUSTC_BOOTSTRAP, no sanitizer; the committed corpora already ran above in tests/fuzz_corpus.rs.
echo "== fuzz smoke (fuzz/smoke.sh)"
fuzz/smoke.sh
echo "test.sh: all passed"
