#!/usr/bin/env bash
# Runs the engine benchmark set of docs/benchmarks.md, each engine figure beside the disk limit
# measured in the same invocation, and keeps the JSON lines in storage-bench/results/.
# Usage: storage-bench/run-suite.sh [DATA_PARENT_DIR]   (default /tmp; must be on the disk to measure)
# STORAGE_BENCH=PATH runs another build of storage-bench (an older commit's, for a before/after
# comparison) instead of building this one; STRATA_SUITE_LABEL=NAME goes into the file names.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${STORAGE_BENCH:-}" ]; then
    bench="$STORAGE_BENCH"
else
    swift build -c release --product storage-bench >/dev/null
    bench="$(swift build -c release --show-bin-path)/storage-bench"
fi
parent="${1:-/tmp}"
out="storage-bench/results/$(date -u +%Y%m%dT%H%M%SZ)${STRATA_SUITE_LABEL:+-$STRATA_SUITE_LABEL}.jsonl"
run() {
    local dir
    dir="$(mktemp -d "$parent/strata-bench-XXXXXX")"
    echo "### storage-bench $*" | tee -a "$out.txt"
    "$bench" "$@" --data-dir "$dir" --json 2>/dev/null | tee -a "$out" | grep -v '"mode":"limit"' | tee -a "$out.txt"
    rm -rf "$dir"
}
{ echo "machine: $(nproc) cores, $(free -g | awk '/Mem/ {print $2}') GiB, $(lscpu | sed -n 's/Model name: *//p'), kernel $(uname -r)"
  echo "disk: $(df -h "$parent" | tail -1)"; } | tee "$out.txt"
run append --writers 4 --batch 64 --record-size 1024 --durability fsync --inflight 1 --seconds 10
run append --writers 4 --batch 64 --record-size 1024 --durability fsync --inflight 4 --seconds 10
run append --writers 4 --batch 64 --record-size 1024 --durability async --inflight 4 --seconds 10
run append --shards 10000 --writers 16 --batch 64 --record-size 1024 --durability fsync --inflight 4 --seconds 10
run append --shards 10000 --writers 64 --batch 1 --record-size 256 --durability fsync --inflight 4 --seconds 10
run read --shards 4 --writers 4 --batch 64 --record-size 1024 --bytes 2000000000 --seconds 10
echo "results: $out"
