#!/usr/bin/env bash
# Strata's MQTT gateway and Debian's mosquitto side by side, same workloads, one invocation:
# QoS 0 and QoS 1 (4 publishers -> 4 subscribers, 128-byte payloads), QoS 1 with the
# subscribers as one shared-subscription group, then the resident memory
# of each broker holding 10,000 idle connections. Strata runs with fsync durability (every QoS 1
# message is on disk before its PUBACK); mosquitto runs with its defaults (in-memory, no
# persistence), which is what its users get out of the box.
# Usage: storage-bench/compare-mqtt.sh [SECONDS]   (NODE_ARGS: more journal-node arguments,
# for example NODE_ARGS="--mqtt-shared-topics false" to keep every message in bucket shards)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-10}"
ulimit -n "$(ulimit -Hn)"  # 10,000 connections need 10,000 descriptors on each side
swift build -c release --product storage-bench >/dev/null
swift build -c release --product journal-node >/dev/null
bin="$(swift build -c release --show-bin-path)"
work="$(mktemp -d /tmp/strata-mqtt-compare-XXXXXX)"
chmod 755 "$work"
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Fresh brokers for each phase, so that the idle-connection memory is not confused with
# what the throughput runs left behind.
start_brokers() {
    mport="$(free_port)"
    printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\n' "$mport" >"$work/mosquitto.conf"
    /usr/sbin/mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
    mosquitto_pid=$!
    pids+=("$mosquitto_pid")
    sport="$(free_port)"
    rm -rf "$work/strata"
    "$bin/journal-node" --data-dir "$work/strata" --listen 127.0.0.1:0 --http 127.0.0.1:0 --gateways mqtt \
        --mqtt-listen "127.0.0.1:$sport" --mqtt-allow-anonymous --log-level warning ${NODE_ARGS:-} >"$work/strata.out" 2>&1 &
    strata_pid=$!
    pids+=("$strata_pid")
    for _ in $(seq 100); do grep -q '^mqtt ' "$work/strata.out" 2>/dev/null && break; sleep 0.1; done
    sleep 0.5
}
stop_brokers() {
    kill "$mosquitto_pid" "$strata_pid"
    wait "$mosquitto_pid" "$strata_pid" 2>/dev/null || true
}
start_brokers

rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/Model name: *//p'), kernel $(uname -r)"
for qos in 0 1; do
    for broker in mosquitto strata; do
        port=$([ "$broker" = mosquitto ] && echo "$mport" || echo "$sport")
        echo "### $broker: storage-bench mqtt --url mqtt://127.0.0.1:$port --publishers 4 --subscribers 4 --qos $qos --size 128 --topics 4 --seconds $seconds --json"
        "$bin/storage-bench" mqtt --url "mqtt://127.0.0.1:$port" --publishers 4 --subscribers 4 --qos "$qos" \
            --size 128 --topics 4 --seconds "$seconds" --json 2>/dev/null
    done
done
# A shared subscription: the 4 subscribers are one group ($share/workers/...), each message
# delivered once, at QoS 1. Strata keeps the group in a journal queue (a synced write per
# receive and per batch of acknowledgements); mosquitto round-robins in memory.
for broker in mosquitto strata; do
    port=$([ "$broker" = mosquitto ] && echo "$mport" || echo "$sport")
    echo "### $broker: storage-bench mqtt --url mqtt://127.0.0.1:$port --publishers 4 --subscribers 4 --qos 1 --size 128 --topics 4 --share workers --seconds $seconds --json"
    "$bin/storage-bench" mqtt --url "mqtt://127.0.0.1:$port" --publishers 4 --subscribers 4 --qos 1 \
        --size 128 --topics 4 --share workers --seconds "$seconds" --json 2>/dev/null
done
stop_brokers
start_brokers
for broker in mosquitto strata; do
    port=$([ "$broker" = mosquitto ] && echo "$mport" || echo "$sport")
    pid=$([ "$broker" = mosquitto ] && echo "$mosquitto_pid" || echo "$strata_pid")
    before="$(rss "$pid")"
    "$bin/storage-bench" mqtt --url "mqtt://127.0.0.1:$port" --idle-connections 10000 --hold 8 >"$work/idle.out" 2>&1 &
    idle=$!
    for _ in $(seq 600); do grep -q holding "$work/idle.out" 2>/dev/null && break; sleep 0.1; done
    sleep 2
    during="$(rss "$pid")"
    wait "$idle" || true
    echo "{\"mode\":\"mqtt-idle\",\"broker\":\"$broker\",\"connections\":10000,\"rss_kib_before\":$before,\"rss_kib_with_connections\":$during,\"kib_per_connection\":$(python3 -c "print(round(($during-$before)/10000,2))")}"
done
