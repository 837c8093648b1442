#!/usr/bin/env bash
# Compares two builds of examples/bench.rs side by side: runs them alternately,
# in both arrangements (one runtime for both ends, and --split-runtimes), and
# prints the median of each figure per build and the ratio new / old.
#
#   scripts/compare-bench.sh OLD_BENCH_BINARY NEW_BENCH_BINARY [ROUNDS] [SCENARIOS] [IMPLS]
#
# Build each binary with `cargo build --release --example bench` in a checkout
# of the commit to compare (target/release/examples/bench). ROUNDS defaults to
# 5, SCENARIOS to seq,inflight64,fire, IMPLS to nmsg. Each run is `--quick`
# unless BENCH_FLAGS says otherwise (BENCH_FLAGS= for the full windows).
set -euo pipefail
old=${1:?usage: compare-bench.sh OLD NEW [ROUNDS] [SCENARIOS] [IMPLS]}
new=${2:?usage: compare-bench.sh OLD NEW [ROUNDS] [SCENARIOS] [IMPLS]}
rounds=${3:-5}
read -r -a bench_flags <<<"${BENCH_FLAGS---quick}"
scenarios=${4:-seq,inflight64,fire}
impls=${5:-nmsg}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for round in $(seq "$rounds"); do
    for arrangement in one split; do
        flags=()
        [[ $arrangement == split ]] && flags=(--split-runtimes)
        # alternate which build goes first, so neither always runs on a warmer machine
        if (( round % 2 )); then order=(old new); else order=(new old); fi
        for build in "${order[@]}"; do
            bin=$old
            [[ $build == new ]] && bin=$new
            "$bin" "${bench_flags[@]}" --json --scenario "$scenarios" --impl "$impls" "${flags[@]}" 2>/dev/null |
                sed "s/^/$build $arrangement /" >>"$out"
        done
    done
    echo "round $round of $rounds done" >&2
done
python3 - "$out" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    build, arrangement, rest = line.split(" ", 2)
    r = json.loads(rest)
    value = r.get("ops_per_sec", r.get("bytes_per_conn"))
    rows.setdefault((arrangement, r["scenario"], r["impl"]), {}).setdefault(build, []).append(value)
print(f"{'arrangement':<12} {'scenario':<11} {'impl':<10} {'old median':>12} {'new median':>12} {'new/old':>8}  old range / new range")
for (arrangement, scenario, impl), v in sorted(rows.items()):
    o, n = statistics.median(v.get("old", [0])), statistics.median(v.get("new", [0]))
    ratio = n / o if o else float("nan")
    spread = lambda xs: f"{min(xs):.0f}-{max(xs):.0f}" if xs else "-"
    print(f"{arrangement:<12} {scenario:<11} {impl:<10} {o:>12.0f} {n:>12.0f} {ratio:>8.3f}  {spread(v.get('old', []))} / {spread(v.get('new', []))}")
PY
