#!/usr/bin/env bash
# The retention soak of docs/benchmarks.md: a journal-node with the MQTT and Kafka gateways, one
# MQTT QoS 1 publisher → subscriber pair (16 in flight) and one Kafka acks=all producer of 1 KiB
# records to a 2-partition topic with retention.bytes 256 MiB per partition, for SECONDS; the
# node's RSS and each protocol's rate and p50/p99/max are printed per minute, then a verdict.
# Extra arguments go to `storage-bench soak` (e.g. --retention-bytes 0 for the baseline without
# retention, --baseline-max-ms MS to hold the max latency to twice that baseline's).
# NODE_ARGS adds journal-node flags (e.g. NODE_ARGS="--slow-log-ms 50" to see slow steps);
# NODE_LOG=FILE keeps every warning the node logged.
# Usage: storage-bench/soak.sh [SECONDS] [DATA_PARENT_DIR] [storage-bench soak options…]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-3600}"
parent="${2:-/tmp}"
shift $(( $# < 2 ? $# : 2 ))
swift build -c release --product storage-bench >/dev/null
swift build -c release --product journal-node >/dev/null
bin="$(swift build -c release --show-bin-path)"
work="$(mktemp -d "$parent/strata-soak-XXXXXX")"
trap 'kill "$node" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
"$bin/journal-node" --data-dir "$work/data" --listen 127.0.0.1:0 --http 127.0.0.1:0 --gateways all \
    --mqtt-listen 127.0.0.1:0 --mqtt-allow-anonymous --kafka-listen 127.0.0.1:0 --log-level warning ${NODE_ARGS:-} >"$work/node.out" 2>&1 &
node=$!
for _ in $(seq 100); do grep -q '^kafka ' "$work/node.out" 2>/dev/null && grep -q '^mqtt ' "$work/node.out" && break; sleep 0.1; done
mqtt="$(awk '/^mqtt / {print $2; exit}' "$work/node.out")"
kafka="$(awk '/^kafka / {print $2; exit}' "$work/node.out")"
echo "machine: $(nproc) cores, $(free -g | awk '/Mem/ {print $2}') GiB, $(lscpu | sed -n 's/Model name: *//p'), kernel $(uname -r)"
echo "disk: $(df -h "$parent" | tail -1); node pid $node, mqtt $mqtt, kafka $kafka"
echo "### storage-bench soak --seconds $seconds $*"
status=0
"$bin/storage-bench" soak --pid "$node" --mqtt-url "mqtt://$mqtt" --kafka-bootstrap "$kafka" --seconds "$seconds" "$@" || status=$?
grep -v '^\(mqtt\|mqtt-ws\|kafka\|journal\|http\) ' "$work/node.out" >"${NODE_LOG:-/dev/null}" || true
http="$(awk '/^http / {print $2; exit}' "$work/node.out")"
echo "index memory at the end: $(curl -fsS "http://$http/metrics" 2>/dev/null | awk '/^strata_journal_index_/ {printf "%s %.1f MiB  ", $1, $2 / 1048576}')"
logged="$(grep -cv '^\(mqtt\|mqtt-ws\|kafka\|journal\|http\) ' "$work/node.out" || true)"
echo "node log: $logged lines at warning or above$([ "$logged" -gt 0 ] && echo ', the last ones:')"
grep -v '^\(mqtt\|mqtt-ws\|kafka\|journal\|http\) ' "$work/node.out" | tail -10 || true
exit "$status"
