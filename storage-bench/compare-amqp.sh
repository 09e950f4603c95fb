#!/usr/bin/env bash
# Strata's AMQP gateway and Debian's RabbitMQ side by side, same workloads, one invocation:
# durable queues with persistent messages and publisher confirms, 4 publishers -> 4 queues ->
# 4 consumers, 1 KiB bodies, manual acknowledgements; then transient messages without
# confirms. Strata runs with fsync durability (a confirm means the message is on disk);
# RabbitMQ runs classic durable queues with its defaults (it confirms persistent messages once
# they are written to its message store, fsynced in batches).
# Usage: storage-bench/compare-amqp.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-10}"
sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
dpkg -s rabbitmq-server >/dev/null 2>&1 || { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq rabbitmq-server; }
swift build -c release --product storage-bench >/dev/null
swift build -c release --product journal-node >/dev/null
bin="$(swift build -c release --show-bin-path)"
work="$(mktemp -d /tmp/strata-amqp-compare-XXXXXX)"
chmod 755 "$work"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -n "${rabbit_env:-}" ] && env $rabbit_env /usr/lib/rabbitmq/bin/rabbitmqctl -n rabbit@localhost stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# RabbitMQ without systemd, everything in the scratch folder (../shared/PEERS.md).
rport="$(free_port)"
mkdir -p "$work/rabbit"
echo '[].' >"$work/rabbit/enabled_plugins"
: >"$work/rabbit/rabbitmq.conf"
rabbit_env="HOME=$work/rabbit RABBITMQ_NODENAME=rabbit@localhost RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT=$rport RABBITMQ_DIST_PORT=$(free_port) RABBITMQ_MNESIA_BASE=$work/rabbit/mnesia RABBITMQ_LOG_BASE=$work/rabbit/log RABBITMQ_ENABLED_PLUGINS_FILE=$work/rabbit/enabled_plugins RABBITMQ_CONFIG_FILE=$work/rabbit/rabbitmq"
env $rabbit_env /usr/lib/rabbitmq/bin/rabbitmq-server >"$work/rabbit.out" 2>&1 &
pids+=($!)
sport="$(free_port)"
"$bin/journal-node" --data-dir "$work/strata" --listen 127.0.0.1:0 --http 127.0.0.1:0 --gateways amqp \
    --amqp-listen "127.0.0.1:$sport" --amqp-allow-anonymous --log-level warning ${NODE_ARGS:-} >"$work/strata.out" 2>&1 &
strata_pid=$!
pids+=("$strata_pid")
for _ in $(seq 600); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $rport), 1)" 2>/dev/null && break
    sleep 0.1
done
for _ in $(seq 100); do grep -q '^amqp ' "$work/strata.out" 2>/dev/null && break; sleep 0.1; done
sleep 2
rabbit_pid="$(pgrep -n beam.smp || pgrep -n beam)"
written() { awk '/^write_bytes/ {print $2}' "/proc/$1/io"; }
# CPU seconds a process used so far (user + system, /proc/PID/stat).
cpu() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"; }
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/Model name: *//p'), kernel $(uname -r), rabbitmq $(dpkg-query -W -f '${Version}' rabbitmq-server)"
for workload in "--confirms --persistent" ""; do
    for broker in rabbitmq strata; do
        port=$([ "$broker" = rabbitmq ] && echo "$rport" || echo "$sport")
        pid=$([ "$broker" = rabbitmq ] && echo "$rabbit_pid" || echo "$strata_pid")
        echo "### $broker: storage-bench amqp --url amqp://127.0.0.1:$port --publishers 4 --consumers 4 --queues 4 --size 1024 $workload --seconds $seconds --json"
        before="$(written "$pid")"
        cpu_before="$(cpu "$pid")"
        # The bench client's own CPU time (getrusage of the child) goes to stderr's last line.
        line="$(python3 -c 'import resource, subprocess, sys
r = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
u = resource.getrusage(resource.RUSAGE_CHILDREN)
print(r.stdout.strip().splitlines()[-1], u.ru_utime + u.ru_stime, sep="\t")' \
            "$bin/storage-bench" amqp --url "amqp://127.0.0.1:$port" --publishers 4 --consumers 4 --queues 4 \
            --size 1024 $workload --seconds "$seconds" --json)"
        cpu_after="$(cpu "$pid")"
        after="$(written "$pid")"
        client_cpu="${line##*$'\t'}"
        line="${line%$'\t'*}"
        echo "$line"
        # Write amplification: bytes the broker process wrote (/proc/PID/io write_bytes) per
        # body byte published; CPU: microseconds of broker and client CPU per delivered message
        # (both share the machine's cores).
        python3 -c "import json,sys; r=json.loads(sys.argv[1]); n=max(1,r['delivered']); print(json.dumps({'mode':'amqp-write-amplification','broker':'$broker','written_bytes':$after-$before,'body_bytes':r['published']*r['size'],'write_amplification':round(($after-$before)/max(1,r['published']*r['size']),2),'broker_cpu_s':round($cpu_after-$cpu_before,2),'client_cpu_s':round($client_cpu,2),'broker_cpu_us_per_msg':round(($cpu_after-$cpu_before)*1e6/n,1),'client_cpu_us_per_msg':round($client_cpu*1e6/n,1)}))" "$line"
    done
done
