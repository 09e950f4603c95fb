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
