#!/usr/bin/env bash
# The QEMU and control-plane scenarios (`make scenarios`), run in lanes.
#
# Every guest has one vCPU under TCG, so one scenario at a time leaves the
# second core of a two-core machine mostly idle. Two lanes run side by side,
# balanced by measured run times (one lane's scenarios one after another).
# Each line of output is prefixed with
# its scenario; a summary with each scenario's result and time ends the run,
# and the exit status is non-zero if any failed.
#
# The test executables are built once, with the workspace's features (the
# build `make unit` made), and run directly: nothing is compiled while the
# lanes run, even if a source file changes meanwhile.
#
# KEELSON_LANES=1 runs everything in one lane (one machine core, or to read
# one scenario's output alone). Arguments name scenarios to run (default:
# all of them), e.g. `scripts/scenarios.sh upgrade api`.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}

# The lanes when all run, balanced by their times measured side by side on
# two cores (session 5): boot 829 s + api 202 s | upgrade 965 s + drain
# 41 s + control_plane 29 s (the two without a VM last, beside nothing);
# netboot (session 7: 188 s alone, it installs now) and install (169 s
# alone): boot 813 + api 210 + netboot ~250 | upgrade 984 + install ~230
# + drain 45 + control_plane 34 (side by side, session 6's CI times).
lane_a=(boot api netboot)
lane_b=(upgrade install drain control_plane)
if [ "$#" -gt 0 ]; then
    wanted=("$@")
    # Given names: the first alone, the rest in the other lane.
    lane_a=("$1")
    lane_b=("${@:2}")
else
    wanted=("${lane_a[@]}" "${lane_b[@]}")
fi
lanes=${KEELSON_LANES:-}
if [ -z "$lanes" ]; then
    if [ "$(nproc)" -ge 2 ]; then lanes=2; else lanes=1; fi
fi

test_args=()
for s in "${wanted[@]}"; do test_args+=(--test "$s"); done
build_json=$(mktemp)
results=$(mktemp)
trap 'rm -f "$build_json" "$results"' EXIT
$CARGO test --workspace --locked "${test_args[@]}" --no-run --message-format=json >"$build_json"
declare -A exe
for s in "${wanted[@]}"; do
    exe[$s]=$(grep -o "\"target\":{[^}]*\"name\":\"$s\"[^}]*}.*\"executable\":\"[^\"]*\"" "$build_json" |
        grep -o '"executable":"[^"]*"' | head -n1 | cut -d'"' -f4)
    if [ -z "${exe[$s]}" ]; then
        echo "scenarios: no test executable for $s" >&2
        exit 1
    fi
done

run_one() {
    local name=$1 start=$SECONDS
    echo "[$name] starting at $(date -u +%T)"
    # Run from the package directory, as `cargo test` would.
    if (cd tests && "${exe[$name]}" --ignored --test-threads=1 --nocapture) 2>&1 |
        sed -u "s/^/[$name] /"; then
        echo "$name ok $((SECONDS - start))" >>"$results"
    else
        echo "$name FAILED $((SECONDS - start))" >>"$results"
    fi
}

run_lane() {
    local name
    for name in "$@"; do run_one "$name"; done
}

start=$SECONDS
if [ "$lanes" -ge 2 ] && [ "${#lane_b[@]}" -ge 1 ]; then
    run_lane "${lane_a[@]}" &
    a=$!
    run_lane "${lane_b[@]}" &
    b=$!
    wait "$a" || true
    wait "$b" || true
else
    run_lane "${wanted[@]}"
fi

echo
echo "scenarios ($lanes lane(s)), $((SECONDS - start)) s in all:"
failed=0
while read -r name outcome secs; do
    printf '  %-14s %-7s %5d s\n' "$name" "$outcome" "$secs"
    [ "$outcome" = ok ] || failed=1
done <"$results"
ran=$(wc -l <"$results")
if [ "$ran" -ne "${#wanted[@]}" ]; then
    echo "  only $ran of ${#wanted[@]} scenarios reported" >&2
    failed=1
fi
exit "$failed"
