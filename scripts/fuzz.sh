#!/usr/bin/env bash
# Fuzz the machine config parser and the upgrade bundle reader: runs every
# cargo-fuzz target in fuzz/ for a bounded time each (FUZZ_SECONDS, default
# 60), and fails if one finds a crash. Installs cargo-fuzz from crates.io
# when it is missing.
#
# Stable Rust only: libFuzzer's coverage instrumentation is driven by
# `-Cpasses=sancov-module` and friends, which cargo-fuzz passes with
# unstable `-Z` flags; RUSTC_BOOTSTRAP=1 lets the stable compiler accept
# them, and `--sanitizer none` avoids AddressSanitizer (a nightly-only
# runtime). The parser and the reader are safe Rust, so panics and
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
    # Seed the (git-ignored) corpus.
    mkdir -p "corpus/$target"
    case "$target" in
        parse_config) cp ../examples/*.yaml "corpus/$target/" ;;
        read_bundle)
            # Mode 2 of the target: a valid bundle (version "1.0", payloads of
            # 11, 21 and 31 bytes, no mutation), so the run starts with the
            # payload stages covered; mode 1: signed, truncated manifest JSON.
            printf '\x02\x05\x0a\x14\x1e\x02\x00\x00\x00\x00\x01\x0a\x00%s' \
                abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123456789 \
                > "corpus/$target/seed-valid"
            printf '\x01\x03\x20\x00{"format_version":1,"os_version":"1' \
                > "corpus/$target/seed-json"
            ;;
    esac
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
