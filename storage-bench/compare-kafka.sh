#!/usr/bin/env bash
# The Kafka gateway against the disk under it, in one invocation: produce with acks=all (fsync
# before the answer) and 1 KiB records, beside the durable write limit of the same disk measured
# by the same process before and after the run; then zstd-compressed and acks=1 runs; then
# consume of the first topic from the hot tier (memory tails and the page cache).
# No Apache Kafka broker installs on this machine (no Debian package, no network beyond Debian
# and PyPI), so the peer in this comparison is the hardware limit.
# Usage: storage-bench/compare-kafka.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-10}"
swift build -c release --product storage-bench >/dev/null
swift build -c release --product journal-node >/dev/null
bin="$(swift build -c release --show-bin-path)"
work="$(mktemp -d /tmp/strata-kafka-compare-XXXXXX)"
trap 'kill "$node" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
"$bin/journal-node" --data-dir "$work/data" --listen 127.0.0.1:0 --http 127.0.0.1:0 --gateways kafka \
    --kafka-listen 127.0.0.1:0 --log-level warning >"$work/node.out" 2>&1 &
node=$!
for _ in $(seq 100); do grep -q '^kafka ' "$work/node.out" 2>/dev/null && break; sleep 0.1; done
broker="$(awk '/^kafka / {print $2}' "$work/node.out")"
mkdir -p "$work/limit"
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/Model name: *//p'), kernel $(uname -r); data in $work (same disk as the limit files)"
run() {
    echo "### storage-bench kafka --bootstrap $broker $*"
    "$bin/storage-bench" kafka --bootstrap "$broker" "$@" 2>/dev/null
}
run --topic acks-all --producers 4 --partitions 4 --size 1024 --acks all --compression none --seconds "$seconds" --limit-dir "$work/limit" --json
run --topic acks-all-zstd --producers 4 --partitions 4 --size 1024 --acks all --compression zstd --seconds "$seconds" --no-limit --json
run --topic acks-one --producers 4 --partitions 4 --size 1024 --acks 1 --compression none --seconds "$seconds" --no-limit --json
run --topic acks-all --partitions 4 --consume --json
