#!/usr/bin/env bash
# The object tier against an S3 endpoint on this machine: moto's standalone server from the
# project's venv (`make venv`), started here on loopback. `storage-bench tier` itself starts no
# server; it writes BYTES of batches, offloads every sealed one, reads back cold, and measures the
# endpoint's own PUT and GET on objects and ranges of the same sizes in the same run. moto is a
# Python server sharing the 2 cores with the bench: its figures are this endpoint's, not S3's.
# Usage: storage-bench/compare-tier.sh [BYTES]
set -euo pipefail
cd "$(dirname "$0")/.."
bytes="${1:-1000000000}"
swift build -c release --product storage-bench >/dev/null
bin="$(swift build -c release --show-bin-path)"
port="$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
.venv/bin/moto_server -H 127.0.0.1 -p "$port" >/dev/null 2>&1 &
moto=$!
trap 'kill -9 "$moto" 2>/dev/null || true' EXIT
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/Model name: *//p'), kernel $(uname -r); endpoint: moto_server $(.venv/bin/python -c 'import moto; print(moto.__version__)') on 127.0.0.1:$port"
for payload in json random; do
    echo "### storage-bench tier --endpoint http://127.0.0.1:$port --bucket bench --create-bucket --bytes $bytes --payload $payload"
    "$bin/storage-bench" tier --endpoint "http://127.0.0.1:$port" --bucket bench --create-bucket --bytes "$bytes" \
        --payload "$payload" --json 2>/dev/null
done
