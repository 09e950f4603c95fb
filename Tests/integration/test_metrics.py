"""The gateways' Prometheus metrics on journal-node's /metrics, after stock clients used them."""
import json
import os
import queue
import signal
import subprocess
import urllib.request
import uuid

import paho.mqtt.client as mqtt
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from conftest import BIN, Node, metric

TIMEOUT = 20


def test_gateway_metrics_count_what_clients_did(data_dir):
    node = Node(data_dir, ["--mqtt-allow-anonymous"], gateways=("mqtt", "kafka"))
    try:
        inbox = queue.Queue()
        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"m-{uuid.uuid4().hex[:6]}")
        sub.on_message = lambda _c, _u, message: inbox.put(message)
        subscribed = queue.Queue()
        sub.on_subscribe = lambda *_: subscribed.put(True)
        sub.connect("127.0.0.1", node.mqtt_port)
        sub.loop_start()
        sub.subscribe("metrics/#", qos=1)
        subscribed.get(timeout=TIMEOUT)
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"p-{uuid.uuid4().hex[:6]}")
        pub.connect("127.0.0.1", node.mqtt_port)
        pub.loop_start()
        for i in range(10):
            pub.publish(f"metrics/{i}", b"x" * 100, qos=1).wait_for_publish(TIMEOUT)
        assert metric(node, "strata_mqtt_connections") == 2
        for _ in range(10):
            inbox.get(timeout=TIMEOUT)
        assert metric(node, "strata_mqtt_messages_in_total") == 10
        assert metric(node, "strata_mqtt_bytes_in_total") == 1000
        assert metric(node, "strata_mqtt_messages_out_total") == 10
        assert metric(node, "strata_mqtt_publish_ack_seconds_count") == 10
        for c in (pub, sub):
            c.disconnect()
            c.loop_stop()

        topic = f"metrics-{uuid.uuid4().hex[:6]}"
        producer = Producer({"bootstrap.servers": node.kafka, "linger.ms": 50})
        for i in range(20):
            producer.produce(topic, value=f"v{i}".encode())
        assert producer.flush(TIMEOUT) == 0
        assert metric(node, "strata_kafka_produce_records_total") == 20
        assert metric(node, "strata_kafka_requests_total", api="produce") >= 1
        assert metric(node, "strata_kafka_request_seconds_count", api="produce") >= 1
        group = f"g-{uuid.uuid4().hex[:6]}"
        consumer = Consumer({"bootstrap.servers": node.kafka, "group.id": group, "auto.offset.reset": "earliest",
                             "enable.auto.commit": False})
        consumer.subscribe([topic])
        got = 0
        while got < 20:
            message = consumer.poll(TIMEOUT)
            assert message is not None and not message.error()
            got += 1
            if got == 15:
                consumer.commit(message=message, asynchronous=False)  # 5 records behind the end
        consumer.close()
        # Consumer lag, from the committed offsets in the journal, in Kafka's terms.
        assert metric(node, "strata_kafka_consumer_lag", group=group, topic=topic, partition="0") == 5
        admin = AdminClient({"bootstrap.servers": node.kafka})
        admin.delete_topics([topic])[topic].result(TIMEOUT)
        assert metric(node, "strata_kafka_consumer_lag", group=group, topic=topic, partition="0") == 0  # gone
        assert metric(node, "strata_kafka_requests_total", api="fetch") >= 1
        assert metric(node, "strata_kafka_response_bytes_total", api="fetch") > 0
        assert metric(node, "strata_kafka_produce_errors_total") == 0
    finally:
        node.stop()


class Standalone:
    """A gateway executable on its own with --metrics-listen: its two listeners, by name."""

    def __init__(self, executable, journal, extra=()):
        self.process = subprocess.Popen(
            [os.path.join(BIN, executable), "--journal", journal, "--listen", "127.0.0.1:0", "--metrics-listen",
             "127.0.0.1:0", "--log-level", "warning", *extra], stdout=subprocess.PIPE, text=True)
        self.listeners = dict(self.process.stdout.readline().split() for _ in range(2))
        self.http = self.listeners["metrics"]

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)


def test_standalone_gateways_serve_their_own_metrics(data_dir):
    node = Node(data_dir, listeners=2)
    mqtt_gateway = Standalone("mqtt-gateway", node.journal, ["--allow-anonymous"])
    kafka_gateway = Standalone("kafka-gateway", node.journal)
    try:
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"p-{uuid.uuid4().hex[:6]}")
        pub.connect("127.0.0.1", int(mqtt_gateway.listeners["mqtt"].rsplit(":", 1)[1]))
        pub.loop_start()
        for i in range(4):
            pub.publish(f"alone/{i}", b"y" * 10, qos=1).wait_for_publish(TIMEOUT)
        pub.disconnect()
        pub.loop_stop()
        assert metric(mqtt_gateway, "strata_mqtt_messages_in_total") == 4
        assert metric(mqtt_gateway, "strata_mqtt_bytes_in_total") == 40
        producer = Producer({"bootstrap.servers": kafka_gateway.listeners["kafka"]})
        for i in range(3):
            producer.produce("alone-topic", value=b"z")
        assert producer.flush(TIMEOUT) == 0
        assert metric(kafka_gateway, "strata_kafka_produce_records_total") == 3
        with urllib.request.urlopen(f"http://{kafka_gateway.http}/health") as answer:
            assert json.loads(answer.read()) == {"status": "ok"}
    finally:
        mqtt_gateway.stop()
        kafka_gateway.stop()
        node.stop()
