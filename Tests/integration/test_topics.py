"""One topic space: what MQTT clients publish, Kafka clients read, and the other way round
(docs/topics.md). Stock clients on both sides: paho-mqtt and mosquitto_pub/sub, kcat,
confluent-kafka and kafka-python, against one journal-node with both gateways."""
import json
import os
import queue
import subprocess
import time
import urllib.error
import urllib.request
import uuid

import kafka
import paho.mqtt.client as mqtt
import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from conftest import BIN, Node, metric, shard_info, users_file
from test_mqtt import client, close, connect, connect_persistent, persistent_client, subscribe

TIMEOUT = 20


@pytest.fixture
def both(data_dir):
    started = Node(data_dir, ["--mqtt-allow-anonymous"], gateways=("mqtt", "kafka"))
    yield started
    started.stop()


def name(prefix="s"):
    return f"{prefix}{uuid.uuid4().hex[:6]}"


def kafka_records(node, topic, count, partition=None):
    """The first `count` records of `topic` (or of one partition), read with confluent-kafka."""
    consumer = Consumer({"bootstrap.servers": node.kafka, "group.id": name("g"), "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    if partition is None:
        consumer.subscribe([topic])
    else:
        consumer.assign([TopicPartition(topic, partition, 0)])
    got = []
    deadline = time.monotonic() + TIMEOUT
    while len(got) < count and time.monotonic() < deadline:
        message = consumer.poll(0.2)
        if message is None or (message.error() and message.error().code() == -191):  # partition EOF
            continue
        assert not message.error(), message.error()
        got.append(message)
    consumer.close()
    return got


def create_topic(node, topic, partitions):
    """Creates a topic through Kafka's admin API and waits a registry poll, after which the MQTT
    gateway follows it."""
    admin = AdminClient({"bootstrap.servers": node.kafka})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(TIMEOUT)
    time.sleep(0.5)  # the MQTT gateway notices registry changes within 100 ms


def received(c, count, timeout=TIMEOUT):
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        got.append(c.inbox.get(timeout=max(0.1, deadline - time.monotonic())))
    return got


def user_properties(message):
    return getattr(message.properties, "UserProperty", None) or []


def test_mqtt_publish_is_a_record_of_the_kafka_topic_named_by_its_first_level(both):
    topic = name("sensors")
    pub = client(both, mqtt.MQTTv5)
    connect(pub, both)
    props = Properties(PacketTypes.PUBLISH)
    props.ContentType = "text/plain"
    props.ResponseTopic = f"{topic}/replies"
    props.CorrelationData = b"\x00\x01req"
    props.MessageExpiryInterval = 3600
    props.PayloadFormatIndicator = 1
    props.UserProperty = [("unit", "C"), ("unit", "K"), ("content-type", "not the envelope's")]
    pub.publish(f"{topic}/room1/temp", b"21.5", qos=1, properties=props).wait_for_publish(TIMEOUT)
    pub.publish(f"{topic}/room1/temp", b"21.7", qos=1, retain=True).wait_for_publish(TIMEOUT)
    pub.publish(topic, b"bare", qos=0).wait_for_publish(TIMEOUT)
    close(pub)

    # kcat sees the topic, its key and headers.
    listing = subprocess.run(["kcat", "-L", "-J", "-b", both.kafka], capture_output=True, text=True,
                             timeout=TIMEOUT, check=True).stdout
    assert topic in [t["topic"] for t in json.loads(listing)["topics"]]
    out = subprocess.run(["kcat", "-C", "-b", both.kafka, "-t", topic, "-o", "beginning", "-e", "-c", "3",
                          "-f", "%k|%s\n"], capture_output=True, text=True, timeout=TIMEOUT, check=True).stdout
    assert out.splitlines() == [f"{topic}/room1/temp|21.5", f"{topic}/room1/temp|21.7", f"{topic}|bare"]

    first, second, third = kafka_records(both, topic, 3)
    assert first.key() == f"{topic}/room1/temp".encode() and first.value() == b"21.5"
    headers = first.headers()
    assert ("unit", b"C") in headers and ("unit", b"K") in headers
    assert [v for k, v in headers if k == "unit"] == [b"C", b"K"]  # in order
    assert ("content-type", b"text/plain") in headers
    assert ("strata.user.content-type", b"not the envelope's") in headers
    assert ("reply-to", f"{topic}/replies".encode()) in headers
    assert ("correlation-id", b"\x00\x01req") in headers
    assert ("ttl-ms", b"3600000") in headers
    assert ("payload-format", b"utf-8") in headers
    assert ("mqtt.qos", b"1") in headers and ("mqtt.retain", b"0") in headers
    assert ("mqtt.retain", b"1") in second.headers()
    assert ("mqtt.qos", b"0") in third.headers()

    # kafka-python reads the same records.
    consumer = kafka.KafkaConsumer(topic, bootstrap_servers=both.kafka, auto_offset_reset="earliest",
                                   consumer_timeout_ms=5000)
    seen = [(r.key, r.value) for _, r in zip(range(3), consumer)]
    consumer.close()
    assert seen == [(f"{topic}/room1/temp".encode(), b"21.5"), (f"{topic}/room1/temp".encode(), b"21.7"),
                    (topic.encode(), b"bare")]


@pytest.mark.parametrize("compression", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_kafka_records_reach_mqtt_subscribers_under_their_keys(both, compression):
    topic = name("sensors")
    create_topic(both, topic, 1)
    below, exact = client(both, mqtt.MQTTv5), client(both, mqtt.MQTTv5)
    connect(below, both)
    connect(exact, both)
    subscribe(below, f"{topic}/room2/+", qos=2)
    subscribe(exact, topic, qos=1)
    producer = Producer({"bootstrap.servers": both.kafka, "compression.type": compression, "linger.ms": 20})
    producer.produce(topic, key=f"{topic}/room2/hum", value=b"55",
                     headers=[("unit", b"pct"), ("content-type", b"application/json"), ("bin", b"\xff\xfe")])
    producer.produce(topic, value=b"no key")
    producer.produce(topic, key="elsewhere/x", value=b"foreign key")
    producer.produce(topic, key=f"{topic}/room2/+", value=b"wildcard key")
    for i in range(50):
        producer.produce(topic, key=f"{topic}/room2/t{i}", value=f"v{i}".encode())
    assert producer.flush(TIMEOUT) == 0

    messages = received(below, 51)
    first = messages[0]
    assert first.topic == f"{topic}/room2/hum" and first.payload == b"55"
    assert first.qos == 1  # a Kafka record is stored before it is acknowledged: QoS 1 at most
    assert not first.retain
    assert ("unit", "pct") in user_properties(first)
    assert first.properties.ContentType == "application/json"
    assert [m.payload for m in messages[1:]] == [f"v{i}".encode() for i in range(50)]  # in order
    assert [(m.topic, m.payload) for m in received(exact, 3)] == [
        (topic, b"no key"), (topic, b"foreign key"), (topic, b"wildcard key")]
    # The header whose value is no UTF-8 string could not be carried, and was counted.
    assert metric(both, "strata_mqtt_unmapped_headers_total") >= 1
    assert metric(both, "strata_mqtt_unreadable_batches_total") == 0
    close(below, exact)


def test_kcat_and_mosquitto(both):
    topic = name("plant")
    subprocess.run(["kcat", "-P", "-b", both.kafka, "-t", topic, "-z", "snappy"], input="warmup\n", text=True,
                   timeout=TIMEOUT, check=True)  # auto-created
    time.sleep(0.3)
    sub = subprocess.Popen(["mosquitto_sub", "-p", str(both.mqtt_port), "-t", f"{topic}/#", "-v", "-C", "1",
                            "-W", "15", "-V", "mqttv5", "-F", "%t %p %P"], stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)
    subprocess.run(["kcat", "-P", "-b", both.kafka, "-t", topic, "-K", ":", "-H", "line=3", "-z", "lz4"],
                   input=f"{topic}/line3/speed:1200\n", text=True, timeout=TIMEOUT, check=True)
    out, _ = sub.communicate(timeout=TIMEOUT)
    assert out.strip() == f"{topic}/line3/speed 1200 line:3"
    subprocess.run(["mosquitto_pub", "-p", str(both.mqtt_port), "-t", f"{topic}/line4/speed", "-m", "900", "-q", "1"],
                   timeout=TIMEOUT, check=True)
    out = subprocess.run(["kcat", "-C", "-b", both.kafka, "-t", topic, "-o", "beginning", "-e", "-c", "3",
                          "-f", "%k=%s\n"], capture_output=True, text=True, timeout=TIMEOUT, check=True).stdout
    assert out.splitlines()[1:] == [f"{topic}/line3/speed=1200", f"{topic}/line4/speed=900"]


def test_mqtt_messages_land_where_kafkas_partitioner_puts_their_keys(both):
    topic = name("fleet")
    create_topic(both, topic, 4)
    keys = [f"{topic}/truck{i}/gps" for i in range(12)]
    pub = client(both)
    connect(pub, both)
    for key in keys:
        pub.publish(key, b"mqtt", qos=1).wait_for_publish(TIMEOUT)
    close(pub)
    # kafka-python's default partitioner (murmur2, as the Java client's) on the same keys.
    producer = kafka.KafkaProducer(bootstrap_servers=both.kafka)
    placed = {key: producer.send(topic, key=key.encode(), value=b"kafka").get(TIMEOUT).partition for key in keys}
    producer.close()
    assert len(set(placed.values())) > 1
    for partition in range(4):
        records = kafka_records(both, topic, 2 * list(placed.values()).count(partition), partition=partition)
        for record in records:
            assert placed[record.key().decode()] == partition


def test_an_offline_session_gets_what_kafka_producers_wrote(both):
    topic = name("orders")
    create_topic(both, topic, 2)
    cid = name("away")
    sub = persistent_client(both, cid)
    connect_persistent(sub, both)
    subscribe(sub, f"{topic}/#", qos=1)
    close(sub)
    time.sleep(0.3)
    producer = Producer({"bootstrap.servers": both.kafka})
    for i in range(20):
        producer.produce(topic, key=f"{topic}/eu/{i % 3}", value=f"o{i}".encode())
    assert producer.flush(TIMEOUT) == 0
    again = persistent_client(both, cid)
    flags, _ = connect_persistent(again, both)
    assert flags.session_present
    got = received(again, 20)
    assert sorted(m.payload for m in got) == sorted(f"o{i}".encode() for i in range(20))
    for key in range(3):  # per MQTT topic, in order
        assert [m.payload for m in got if m.topic == f"{topic}/eu/{key}"] == [
            f"o{i}".encode() for i in range(20) if i % 3 == key]
    close(again)


def test_topics_outside_the_registry_and_shared_topics_off(data_dir):
    node = Node(data_dir, ["--mqtt-allow-anonymous", "--mqtt-shared-topics", "false"], gateways=("mqtt", "kafka"))
    try:
        topic = name("local")
        pub, sub = client(node), client(node)
        connect(pub, node)
        connect(sub, node)
        subscribe(sub, f"{topic}/#")
        pub.publish(f"{topic}/a", b"kept in a bucket", qos=1).wait_for_publish(TIMEOUT)
        assert sub.inbox.get(timeout=TIMEOUT).payload == b"kept in a bucket"
        close(pub, sub)
        listing = json.loads(subprocess.run(["kcat", "-L", "-J", "-b", node.kafka], capture_output=True, text=True,
                                            timeout=TIMEOUT, check=True).stdout)
        assert topic not in [t["topic"] for t in listing["topics"]]
    finally:
        node.stop()


def strata(node, *args, check=True):
    return subprocess.run([os.path.join(BIN, "strata"), "--node", node.journal, *args], capture_output=True,
                          text=True, timeout=TIMEOUT, check=check)


def test_strata_topic_commands_act_on_the_registry_kafka_and_mqtt_share(both):
    topic = name("cli")
    assert strata(both, "topic", "create", topic, "--partitions", "3", "--config", "retention.ms=60000").returncode == 0
    assert f"{topic}\t3" in strata(both, "topic", "list").stdout
    meta = json.loads(subprocess.run(["kcat", "-L", "-J", "-t", topic, "-b", both.kafka], capture_output=True,
                                     text=True, timeout=TIMEOUT, check=True).stdout)
    assert len(meta["topics"][0]["partitions"]) == 3
    assert shard_info(both, f"kafka/{topic}/2")["config"]["retentionMilliseconds"] == 60000
    # Configs take effect on every partition; what Strata does not implement is refused.
    strata(both, "topic", "alter", topic, "--config", "retention.ms=5000", "--partitions", "4")
    # The Kafka gateway had the topic cached with 3 partitions: it sees another process's change
    # within a registry watch tick, not after a cache lifetime.
    time.sleep(0.3)
    meta = json.loads(subprocess.run(["kcat", "-L", "-J", "-t", topic, "-b", both.kafka], capture_output=True,
                                     text=True, timeout=TIMEOUT, check=True).stdout)
    assert len(meta["topics"][0]["partitions"]) == 4
    assert {shard_info(both, f"kafka/{topic}/{p}")["config"]["retentionMilliseconds"] for p in range(4)} == {5000}
    refused = strata(both, "topic", "alter", topic, "--config", "segment.bytes=1024", check=False)
    assert refused.returncode == 1 and "segment.bytes" in refused.stderr
    refused = strata(both, "topic", "create", "bad name", check=False)
    assert refused.returncode == 1 and "invalid topic name" in refused.stderr
    described = strata(both, "topic", "describe", topic).stdout
    assert "config retention.ms=5000\n" in described and "config cleanup.policy=delete (default)" in described
    assert f"partition 3: shard kafka/{topic}/3" in described
    # The admin HTTP API shows the same registry.
    listed = json.loads(urllib.request.urlopen(f"http://{both.http}/admin/topics").read())
    mine = next(t for t in listed if t["name"] == topic)
    assert mine["partitions"] == 4 and mine["configs"]["retention.ms"] == "5000" and len(mine["id"]) == 32
    one = json.loads(urllib.request.urlopen(f"http://{both.http}/admin/topics/{topic}").read())
    assert [s["name"] for s in one["shards"]] == [f"kafka/{topic}/{p}" for p in range(4)]
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"http://{both.http}/admin/topics/no-such-topic")
    assert missing.value.code == 404
    # The MQTT gateway follows the topic: a Kafka record under an MQTT key reaches a subscriber.
    time.sleep(0.3)
    sub = client(both)
    connect(sub, both)
    subscribe(sub, f"{topic}/#")
    subprocess.run(["kcat", "-P", "-b", both.kafka, "-t", topic, "-K", ":"], input=f"{topic}/x:hello\n", text=True,
                   timeout=TIMEOUT, check=True)
    assert sub.inbox.get(timeout=TIMEOUT).payload == b"hello"
    close(sub)
    assert strata(both, "topic", "delete", topic).returncode == 0
    assert strata(both, "topic", "describe", topic, check=False).returncode == 4
    with pytest.raises(subprocess.CalledProcessError):
        subprocess.run(["kcat", "-C", "-b", both.kafka, "-t", topic, "-e", "-m", "5"], capture_output=True,
                       timeout=TIMEOUT, check=True)


def test_max_message_bytes_bounds_each_batch_for_kafka_and_mqtt(both):
    """A topic's max.message.bytes is its shards' batch limit: a larger Kafka batch is
    MESSAGE_TOO_LARGE, an MQTT 5 publish that cannot fit is refused in its PUBACK, small MQTT
    publishes sent together are cut into batches that fit, and a change takes effect."""
    topic = name("limited")
    strata(both, "topic", "create", topic, "--config", "max.message.bytes=2048")
    assert shard_info(both, f"kafka/{topic}/0")["config"]["maxBatchBytes"] == 2048
    assert "config max.message.bytes=2048\n" in strata(both, "topic", "describe", topic).stdout
    time.sleep(0.5)  # the MQTT gateway follows the topic within a registry poll
    outcomes = []
    producer = Producer({"bootstrap.servers": both.kafka, "linger.ms": 0})
    producer.produce(topic, value=os.urandom(4000), on_delivery=lambda err, msg: outcomes.append(err))
    producer.flush(TIMEOUT)
    producer.produce(topic, value=b"small", on_delivery=lambda err, msg: outcomes.append(err))
    producer.flush(TIMEOUT)
    assert outcomes[0] is not None and outcomes[0].code() == KafkaError.MSG_SIZE_TOO_LARGE, outcomes
    assert outcomes[1] is None, outcomes

    pub = client(both, mqtt.MQTTv5)
    acked = queue.Queue()
    pub.on_publish = lambda _c, _u, mid, reason, props: acked.put((mid, reason.value))
    connect(pub, both)
    big = pub.publish(f"{topic}/big", os.urandom(4000), qos=1)
    assert acked.get(timeout=TIMEOUT) == (big.mid, 0x80)
    sent = [pub.publish(f"{topic}/m", bytes([65 + i]) * 500, qos=1).mid for i in range(20)]
    codes = dict(acked.get(timeout=TIMEOUT) for _ in sent)
    assert all(codes[mid] == 0 for mid in sent), codes
    close(pub)
    records = kafka_records(both, topic, 21)
    assert [r.value() for r in records] == [b"small"] + [bytes([65 + i]) * 500 for i in range(20)]

    strata(both, "topic", "alter", topic, "--config", "max.message.bytes=8192")
    assert shard_info(both, f"kafka/{topic}/0")["config"]["maxBatchBytes"] == 8192
    producer.produce(topic, value=os.urandom(4000), on_delivery=lambda err, msg: outcomes.append(err))
    producer.flush(TIMEOUT)
    assert outcomes[2] is None, outcomes
    refused = strata(both, "topic", "alter", topic, "--config", "max.message.bytes=1073741824", check=False)
    assert refused.returncode == 1 and "max_batch_bytes" in refused.stderr, refused.stderr


def test_a_registry_prefix_overrides_the_default_mapping(both):
    """`strata.mqtt.prefix` maps an MQTT prefix to a Kafka topic of another name, both ways; the
    topic's own name is then no MQTT root any more, and MQTT topics outside the prefix keep the
    default rule."""
    topic = name("telemetry")
    plant = name("plant")
    prefix = f"{plant}/line1"
    admin = AdminClient({"bootstrap.servers": both.kafka})
    admin.create_topics([NewTopic(topic, 2, 1, config={"strata.mqtt.prefix": prefix})])[topic].result(TIMEOUT)
    refused = admin.create_topics([NewTopic(name("bad"), 1, 1, config={"strata.mqtt.prefix": "a/+"})])
    with pytest.raises(Exception):
        list(refused.values())[0].result(TIMEOUT)  # wildcards are no prefix
    time.sleep(0.5)  # the MQTT gateway notices registry changes within 100 ms
    sub = client(both, mqtt.MQTTv5)
    connect(sub, both)
    subscribe(sub, f"{plant}/#", qos=1)
    subscribe(sub, f"{topic}/#", qos=1)
    pub = client(both, mqtt.MQTTv5)
    connect(pub, both)
    pub.publish(f"{prefix}/temp", b"21.5", qos=1).wait_for_publish(TIMEOUT)
    pub.publish(f"{topic}/x", b"by-name", qos=1).wait_for_publish(TIMEOUT)  # not under the prefix
    # MQTT → Kafka: the prefix's topics are records of the topic, keyed by the MQTT topic.
    records = kafka_records(both, topic, 1)
    assert [(r.key(), r.value()) for r in records] == [(f"{prefix}/temp".encode(), b"21.5")]
    # Kafka → MQTT: keys under the prefix are MQTT topics; other records arrive on the prefix.
    producer = Producer({"bootstrap.servers": both.kafka})
    producer.produce(topic, key=f"{prefix}/hum".encode(), value=b"40")
    producer.produce(topic, value=b"keyless")
    assert producer.flush(TIMEOUT) == 0
    got = {m.payload: m.topic for m in received(sub, 4)}
    assert got == {b"21.5": f"{prefix}/temp", b"by-name": f"{topic}/x", b"40": f"{prefix}/hum", b"keyless": prefix}
    # The MQTT topic named after the topic went to the MQTT buckets, not to the topic.
    assert sum(shard_info(both, f"kafka/{topic}/{p}")["endOffset"] for p in (0, 1)) == 3
    # A prefix created a moment before a publish claims it (the publish does not wait for the
    # registry poll and make a first-level topic <plant> instead).
    second = name("line2")
    admin.create_topics([NewTopic(second, 1, 1, config={"strata.mqtt.prefix": f"{plant}/line2"})])[second].result(TIMEOUT)
    pub.publish(f"{plant}/line2/x", b"claimed", qos=1).wait_for_publish(TIMEOUT)
    assert [r.value() for r in kafka_records(both, second, 1)] == [b"claimed"]
    # Outside the prefixes the default rule holds: `<plant>/other` is a record of topic <plant>.
    pub.publish(f"{plant}/other", b"default", qos=1).wait_for_publish(TIMEOUT)
    assert [r.value() for r in kafka_records(both, plant, 1)] == [b"default"]
    close(sub, pub)


def test_one_users_file_serves_mqtt_and_kafka(data_dir):
    """journal-node --users: one file of `strata scram-user` lines checks MQTT CONNECT passwords
    and Kafka SASL PLAIN and SCRAM-SHA-256 logins; a wrong password is refused by both."""
    users = users_file(os.path.join(data_dir, "users"), ["carol"], "pa55")
    node = Node(os.path.join(data_dir, "node"), ["--users", users], gateways=("mqtt", "kafka"))
    try:
        for version in (mqtt.MQTTv311, mqtt.MQTTv5):
            good = client(node, version)
            good.username_pw_set("carol", "pa55")
            reason, _ = connect(good, node)
            assert reason == 0
            close(good)
            bad = client(node, version)
            bad.username_pw_set("carol", "wrong")
            reason, _ = connect(bad, node)
            assert reason != 0  # 5.0: 0x86 bad user name or password; 3.1.1: 4
            bad.loop_stop()
        topic = name("users")
        for mechanism in ("PLAIN", "SCRAM-SHA-256"):
            producer = Producer({"bootstrap.servers": node.kafka, "security.protocol": "SASL_PLAINTEXT",
                                 "sasl.mechanism": mechanism, "sasl.username": "carol", "sasl.password": "pa55"})
            producer.produce(topic, value=mechanism.encode())
            assert producer.flush(TIMEOUT) == 0
    finally:
        node.stop()
