#!/usr/bin/env bash
# Fuzz the machine config parser: runs every cargo-fuzz target in fuzz/ for
# a bounded time each (FUZZ_SECONDS, default 60), and fails if one finds a
# crash. Installs cargo-fuzz from crates.io when it is missing.
#
# Stable Rust only: libFuzzer's coverage instrumentation is driven by
# `-Cpasses=sancov-module` and friends, which cargo-fuzz passes with
# unstable `-Z` flags; RUSTC_BOOTSTRAP=1 lets the stable compiler accept
# them, and `--sanitizer none` avoids AddressSanitizer (a nightly-only
# runtime). The parser is `#![forbid(unsafe)]`-clean Rust, so panics and
# timeouts are what we hunt; memory errors would need ASan.
set -euo pipefail

cd "$(dirname "$0")/../fuzz"
seconds="${FUZZ_SECONDS:-60}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz (crates.io)" >&2
    cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
for target in $(cargo fuzz list); do
    # Seed the (git-ignored) corpus with the example configs.
    mkdir -p "corpus/$target"
    cp ../examples/*.yaml "corpus/$target/"
    echo "fuzz.sh: $target for ${seconds}s" >&2
    # -timeout: one input taking more than 10 s is a finding (the parser's
    # budgets should make every input fast); -rss_limit_mb: memory blow-ups
    # (alias bombs) are findings too.
    cargo fuzz run --sanitizer none --release "$target" "corpus/$target" -- \
        -max_total_time="$seconds" \
        -max_len=65536 \
        -timeout=10 \
        -rss_limit_mb=1024 \
        -print_final_stats=1
done
echo "fuzz.sh: every target ran ${seconds}s without a finding" >&2
