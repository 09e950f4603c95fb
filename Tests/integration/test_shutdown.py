"""SIGTERM stops a node within its documented bound (docs/operations.md) whatever its clients
are doing at that moment: connecting, publishing, producing or idling."""
import random
import signal
import socket
import threading
import time

import paho.mqtt.client as mqtt

from conftest import Node


def _publisher(port, name, stop):
    while not stop.is_set():
        try:
            client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name)
            client.connect("127.0.0.1", port, keepalive=30)
            client.loop_start()
            for n in range(200):
                if stop.is_set():
                    break
                client.publish(f"shutdown/{name}", b"x" * 100, qos=1)
            client.loop_stop()
            client.disconnect()
        except Exception:
            time.sleep(0.01)


def _connector(ports, stop):
    """Opens connections and sends half a frame, over and over."""
    while not stop.is_set():
        for port in ports:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.sendall(b"\x10\x20\x00\x04MQ")
            except OSError:
                pass


def test_sigterm_is_bounded_with_clients_at_every_stage(data_dir):
    rng = random.Random()
    for round in range(3):
        node = Node(f"{data_dir}/node", ["--mqtt-allow-anonymous"], gateways=("mqtt", "kafka"))
        kafka_port = int(node.kafka.rsplit(":", 1)[1])
        stop = threading.Event()
        threads = [threading.Thread(target=_publisher, args=(node.mqtt_port, f"p{round}-{i}", stop)) for i in range(3)]
        threads.append(threading.Thread(target=_connector, args=([node.mqtt_port, kafka_port], stop)))
        idle = [socket.create_connection(("127.0.0.1", port)) for port in (node.mqtt_port, kafka_port) for _ in range(5)]
        for thread in threads:
            thread.start()
        time.sleep(rng.uniform(0.05, 1.5))
        started = time.monotonic()
        node.process.send_signal(signal.SIGTERM)
        try:
            code = node.process.wait(timeout=30)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
            for s in idle:
                s.close()
        elapsed = time.monotonic() - started
        assert code == 0, f"round {round}: exit {code} after {elapsed:.1f} s\n{node.log()}"
        assert elapsed < 12, f"round {round}: SIGTERM took {elapsed:.1f} s\n{node.log()}"


def test_standalone_gateways_exit_within_the_bound_when_their_journal_hangs(data_dir):
    """mqtt-gateway and kafka-gateway run their services as journal-node does (NodeShutdown):
    with their journal-node stopped (SIGSTOP) their graceful shutdown cannot finish — a
    persistent session's record cannot be stored — and the watchdog ends them after 15 s."""
    import os
    import subprocess
    from conftest import BIN
    from test_mqtt import Gateway, connect_persistent, persistent_client
    node = Node(f"{data_dir}/node", [], listeners=2)
    mqtt_gateway = Gateway(node.journal, ["--allow-anonymous"])
    kafka_gateway = subprocess.Popen([os.path.join(BIN, "kafka-gateway"), "--journal", node.journal, "--listen",
                                      "127.0.0.1:0", "--log-level", "error"], stdout=subprocess.PIPE, text=True)
    assert kafka_gateway.stdout.readline().startswith("kafka ")
    try:
        c = persistent_client(mqtt_gateway, "stuck-on-shutdown")
        connect_persistent(c, mqtt_gateway)
        node.process.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        mqtt_gateway.process.send_signal(signal.SIGTERM)
        kafka_gateway.send_signal(signal.SIGTERM)
        mqtt_code = mqtt_gateway.process.wait(timeout=40)
        kafka_code = kafka_gateway.wait(timeout=40)
        elapsed = time.monotonic() - started
        assert elapsed < 25, f"the gateways took {elapsed:.1f} s"
        assert mqtt_code in (0, 70) and kafka_code in (0, 70), (mqtt_code, kafka_code)
        c.loop_stop()
    finally:
        node.process.send_signal(signal.SIGCONT)
        for process in (mqtt_gateway.process, kafka_gateway):
            if process.poll() is None:
                process.kill()
        node.stop()
