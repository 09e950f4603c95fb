#!/usr/bin/env bash
# Remote vs in-process append, same workload, one invocation: the workload in-process on a fresh
# directory, then through a release journal-node (`storage-bench append --node`) on another fresh
# directory of the same disk, alternating, ROUNDS times (default 4).
# Usage: storage-bench/compare-remote.sh [extra storage-bench append flags]
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product storage-bench >/dev/null
swift build -c release --product journal-node >/dev/null
bin="$(swift build -c release --show-bin-path)"
rounds="${ROUNDS:-4}"
flags=(--writers 4 --batch 64 --record-size 1024 --durability fsync --seconds 5 --no-limit --json "$@")
work="$(mktemp -d /tmp/strata-compare-XXXXXX)"
node_pid=""
trap '[ -n "$node_pid" ] && kill "$node_pid" 2>/dev/null; rm -rf "$work"' EXIT
# Alternate in-process and remote runs: this machine's disk drifts by tens of percent within
# minutes, so short alternating runs are compared by their medians.
for round in $(seq "$rounds"); do
    echo "### round $round in-process: storage-bench append ${flags[*]}"
    "$bin/storage-bench" append --data-dir "$work/local-$round" "${flags[@]}" 2>/dev/null | tee -a "$work/local.jsonl"
    "$bin/journal-node" --data-dir "$work/node-$round" --listen 127.0.0.1:0 --http 127.0.0.1:0 --log-level warning \
        >"$work/node-$round.out" &
    node_pid=$!
    for _ in $(seq 100); do grep -q '^journal ' "$work/node-$round.out" 2>/dev/null && break; sleep 0.1; done
    address="$(sed -n 's/^journal //p' "$work/node-$round.out")"
    echo "### round $round remote: storage-bench append --node $address ${flags[*]}"
    "$bin/storage-bench" append --node "$address" --data-dir "$work/remote-client-$round" "${flags[@]}" 2>/dev/null \
        | tee -a "$work/remote.jsonl"
    kill "$node_pid"
    wait "$node_pid" || true
done
median() { python3 -c 'import json,sys,statistics; print(statistics.median(json.loads(l)["mb_per_sec"] for l in open(sys.argv[1])))' "$1"; }
local_mb="$(median "$work/local.jsonl")"
remote_mb="$(median "$work/remote.jsonl")"
echo "median MB/s over $rounds rounds: in-process $local_mb, remote $remote_mb, remote/in-process $(python3 -c "print(round($remote_mb / $local_mb, 3))")"
