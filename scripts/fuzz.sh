#!/usr/bin/env bash
# Runs nmsg's fuzz targets (fuzz/: cargo-fuzz, libFuzzer), each for SECONDS
# (default 60), one after the other, at the lowest CPU priority.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#   scripts/fuzz.sh merge [TARGET...]
#
# Needs nightly Rust and cargo-fuzz (`cargo install cargo-fuzz`). TARGETs
# default to all of them: framing, msgpack_message, json_message.
#
# Each target starts from the checked-in seeds (fuzz/corpus/TARGET) and the
# crashes found before (fuzz/regressions/TARGET). The inputs it finds go to
# fuzz/found/TARGET (not checked in; the next run goes on from them). A crash
# stops that target (the others still run) and its input is written to
# fuzz/artifacts/TARGET/crash-*; the script ends with a list of them and
# status 1. For each: minimise it with
#   (cd fuzz && cargo +nightly fuzz tmin TARGET artifacts/TARGET/crash-…)
# copy the minimised input into fuzz/regressions/TARGET/ (then
# `cargo test --test fuzz_corpus` replays it on stable Rust), and fix it.
#
# `merge` adds to the checked-in corpus the inputs of fuzz/found/TARGET that
# reach code it does not (new edges only, so it stays a few hundred files),
# named by their SHA-1; commit them so `cargo test` replays them.
#
# FUZZ_JOBS (default 1) runs that many fuzzing processes per target; FUZZ_NICE
# (default 19) is the niceness; FUZZ_FLAGS adds libFuzzer flags.
set -euo pipefail
seconds=${1:-60}
shift || true
cd "$(dirname "$0")/../fuzz"
targets=("$@")
if ((${#targets[@]} == 0)); then
    targets=(framing msgpack_message json_message)
fi

if [[ $seconds == merge ]]; then
    for target in "${targets[@]}"; do
        [[ -d found/$target ]] || continue
        echo "== $target: merging fuzz/found/$target into fuzz/corpus/$target" >&2
        nice -n "${FUZZ_NICE:-19}" cargo +nightly fuzz run "$target" "corpus/$target" "found/$target" -- \
            -merge=1 -use_counters=0 2>&1 | grep -E '^MERGE-OUTER: [0-9]+ new files' >&2
    done
    exit 0
fi
read -r -a extra <<<"${FUZZ_FLAGS:-}"
jobs=${FUZZ_JOBS:-1}

crashed=()
for target in "${targets[@]}"; do
    dirs=("found/$target" "corpus/$target")
    [[ -d regressions/$target ]] && dirs+=("regressions/$target")
    mkdir -p "found/$target" "artifacts/$target"
    before=$(find "artifacts/$target" -type f | sort)
    echo "== $target: ${seconds}s, $jobs job(s); crashes go to fuzz/artifacts/$target/" >&2
    parallel=()
    ((jobs > 1)) && parallel=(--jobs "$jobs")
    # -timeout: an input taking over 10 s is a hang, reported as a crash.
    status=0
    nice -n "${FUZZ_NICE:-19}" cargo +nightly fuzz run "${parallel[@]}" "$target" "${dirs[@]}" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 "${extra[@]}" || status=$?
    found=$(comm -13 <(echo "$before") <(find "artifacts/$target" -type f | sort))
    if ((status != 0)) || [[ -n $found ]]; then
        crashed+=("$target (exit $status): ${found:-no new artifact}")
    fi
done

if ((${#crashed[@]})); then
    echo "== crashes (inputs under fuzz/):" >&2
    printf '   %s\n' "${crashed[@]}" >&2
    exit 1
fi
echo "== no crash in ${targets[*]}" >&2
