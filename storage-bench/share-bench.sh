#!/usr/bin/env bash
# One shared-subscription run (QoS 1, 4 publishers, 4 subscribers in one $share group) against
# a fresh release journal-node: storage-bench/share-bench.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-8}"
swift build -c release --product journal-node >/dev/null
swift build -c release --product storage-bench >/dev/null
bin="$(swift build -c release --show-bin-path)"
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin/journal-node" --data-dir "$work/d" --listen 127.0.0.1:0 --http 127.0.0.1:0 --gateways mqtt --mqtt-listen 127.0.0.1:$port --mqtt-allow-anonymous --log-level warning > "$work/out" 2>&1 &
pid=$!
for _ in $(seq 100); do grep -q '^mqtt ' "$work/out" 2>/dev/null && break; sleep 0.1; done
sleep 0.5
"$bin/storage-bench" mqtt --url mqtt://127.0.0.1:$port --publishers 4 --subscribers 4 --qos 1 --size 128 --topics 4 --share workers --seconds "$seconds" --json 2>/dev/null
kill $pid; wait $pid 2>/dev/null || true
rm -rf "$work"
