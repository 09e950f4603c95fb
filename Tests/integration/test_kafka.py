"""The Kafka gateway driven by stock clients: kcat, confluent-kafka (librdkafka) and kafka-python."""
import json
import os
import signal
import socket
import struct
import subprocess
import time
import uuid

import kafka
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewPartitions, NewTopic

from conftest import BIN, GatewayProcess, Node, free_port, shard_info, users_file

TIMEOUT = 20


@pytest.fixture
def broker(data_dir):
    started = Node(data_dir, gateways=("kafka",))
    yield started
    started.stop()


def topic_name(prefix="t"):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def kcat(*args, stdin=None, timeout=TIMEOUT):
    return subprocess.run(["kcat", *args], input=stdin, capture_output=True, text=True, timeout=timeout, check=True).stdout


def consume_all(consumer, count, timeout=TIMEOUT):
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        message = consumer.poll(0.2)
        if message is None:
            continue
        assert not message.error(), message.error()
        got.append(message)
    return got


def produce(bootstrap, topic, values, **config):
    """Produces `values` and waits until every one is acknowledged."""
    producer = Producer({"bootstrap.servers": bootstrap, **config})
    for value in values:
        producer.produce(topic, value=value)
    assert producer.flush(TIMEOUT) == 0


def group_consumer(bootstrap, group, topics, **config):
    """A consumer-group member from the earliest offset, committing by hand."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False, **config})
    consumer.subscribe(topics)
    return consumer


def test_kcat_metadata_produce_consume_and_group(broker):
    topic = topic_name("kcat")
    lines = [f"line-{i}" for i in range(100)]
    kcat("-b", broker.kafka, "-P", "-t", topic, stdin="\n".join(lines) + "\n")  # auto-created
    metadata = kcat("-b", broker.kafka, "-L", "-t", topic)
    assert "broker 1 at " + broker.kafka in metadata and f'topic "{topic}" with 1 partitions' in metadata
    assert kcat("-b", broker.kafka, "-C", "-t", topic, "-o", "beginning", "-e", "-q").split() == lines
    # A balanced consumer group (-G): the group gets every line, and commits them.
    out = kcat("-b", broker.kafka, "-G", "kcat-group", topic, "-o", "beginning", "-e", "-q",
               "-X", "heartbeat.interval.ms=500", timeout=60)
    assert out.split() == lines
    admin = AdminClient({"bootstrap.servers": broker.kafka})
    committed = admin.list_consumer_group_offsets(
        [__import__("confluent_kafka").ConsumerGroupTopicPartitions("kcat-group")])["kcat-group"].result()
    assert [tp.offset for tp in committed.topic_partitions if tp.topic == topic] == [100]


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_idempotent_producer_with_compression(broker, compression):
    topic = topic_name(compression)
    admin = AdminClient({"bootstrap.servers": broker.kafka})
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])[topic].result()
    producer = Producer({"bootstrap.servers": broker.kafka, "enable.idempotence": True, "acks": "all",
                         "compression.type": compression, "linger.ms": 20})
    acked = []
    payload = ("strata " * 150).encode()  # compressible, ~1 KiB
    for i in range(1000):
        producer.produce(topic, key=str(i), value=payload + str(i).encode(), partition=i % 2,
                         on_delivery=lambda err, msg: acked.append(err))
    assert producer.flush(TIMEOUT) == 0
    assert len(acked) == 1000 and not any(acked)
    consumer = Consumer({"bootstrap.servers": broker.kafka, "group.id": topic, "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(2)])
    got = consume_all(consumer, 1000)
    consumer.close()
    for partition in range(2):
        values = [int(m.value()[len(payload):]) for m in got if m.partition() == partition]
        assert values == list(range(partition, 1000, 2))  # in order, each once
    # Batches are kept as the producer compressed them, not re-encoded.
    stored = sum(shard_info(broker, f"kafka/{topic}/{p}")["storedBytes"] for p in range(2))
    assert stored < 1000 * len(payload) / 5


def test_consumer_group_rebalances_as_members_join_and_leave(broker):
    topic = topic_name("group")
    admin = AdminClient({"bootstrap.servers": broker.kafka})
    admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)])[topic].result()
    producer = Producer({"bootstrap.servers": broker.kafka})
    for i in range(400):
        producer.produce(topic, value=f"m{i}", partition=i % 4)
    assert producer.flush(TIMEOUT) == 0

    def member():
        return group_consumer(broker.kafka, topic, [topic], **{
            "partition.assignment.strategy": "cooperative-sticky", "heartbeat.interval.ms": 300,
            "session.timeout.ms": 6000})

    first = member()
    assert len(consume_all(first, 400)) == 400
    assert len(first.assignment()) == 4
    first.commit(asynchronous=False)
    second = member()
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and (len(first.assignment()), len(second.assignment())) != (2, 2):
        first.poll(0.1)
        second.poll(0.1)
    assert (len(first.assignment()), len(second.assignment())) == (2, 2)
    assert {tp.partition for tp in first.assignment()} | {tp.partition for tp in second.assignment()} == {0, 1, 2, 3}
    second.close()  # leaves the group
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and len(first.assignment()) != 4:
        first.poll(0.1)
    assert len(first.assignment()) == 4
    described = admin.describe_consumer_groups([topic])[topic].result()
    assert len(described.members) == 1 and described.partition_assignor == "cooperative-sticky"
    first.close()


def test_commits_in_the_revoke_callback_are_kept_so_a_rebalance_redelivers_nothing(broker):
    """The at-least-once pattern Kafka documents: commit what was processed when partitions are
    revoked. The commit comes while the group prepares the rebalance; Kafka takes it, so the
    member the partitions move to starts after them and nothing is read twice."""
    topic = topic_name("revoke")
    admin = AdminClient({"bootstrap.servers": broker.kafka})
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])[topic].result()
    produce(broker.kafka, topic, [f"m{i}" for i in range(200)])
    commit_errors = []

    def member():
        consumer = Consumer({"bootstrap.servers": broker.kafka, "group.id": topic, "auto.offset.reset": "earliest",
                             "enable.auto.commit": False, "partition.assignment.strategy": "range",
                             "heartbeat.interval.ms": 300, "session.timeout.ms": 6000})

        def on_revoke(c, partitions):
            try:
                c.commit(asynchronous=False)
            except KafkaException as error:
                commit_errors.append(error.args[0])

        consumer.subscribe([topic], on_revoke=on_revoke)
        return consumer

    first = member()
    got = [m.value() for m in consume_all(first, 200)]
    assert len(got) == 200 and len(first.assignment()) == 2
    second = member()
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and (len(first.assignment()), len(second.assignment())) != (1, 1):
        for consumer in (first, second):
            message = consumer.poll(0.1)
            if message is not None and not message.error():
                got.append(message.value())
    assert (len(first.assignment()), len(second.assignment())) == (1, 1)
    # The new owner polls a while longer: nothing of what the first member processed comes again.
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        message = second.poll(0.2)
        if message is not None and not message.error():
            got.append(message.value())
    assert commit_errors == []
    assert len(got) == 200, f"{len(got) - 200} records delivered twice"
    second.close()
    first.close()


class KafkaGateway(GatewayProcess):
    """kafka-gateway as its own process on a journal-node."""

    def __init__(self, journal, extra=()):
        super().__init__("kafka-gateway", "kafka", journal, extra)
        self.kafka = self.address


def test_commits_survive_a_gateway_restart(data_dir):
    node = Node(data_dir, listeners=2)
    gateway = KafkaGateway(node.journal)
    try:
        topic = topic_name("commit")
        produce(gateway.kafka, topic, [f"a{i}" for i in range(50)])
        consumer = group_consumer(gateway.kafka, "keeper", [topic])
        assert len(consume_all(consumer, 50)) == 50
        consumer.commit(asynchronous=False)
        consumer.close()
        gateway.stop(signal.SIGKILL)  # no state of its own: commits and groups are in the journal
        gateway = KafkaGateway(node.journal)
        produce(gateway.kafka, topic, [f"b{i}" for i in range(5)])
        consumer = group_consumer(gateway.kafka, "keeper", [topic])
        # The killed gateway stays a member (and may be named the group's coordinator) for its
        # 5 s lease, and librdkafka's reconnect backoff towards it grows to 10 s: on a loaded
        # machine the first fetch comes after 20 s (seen once in a fresh-clone run).
        got = consume_all(consumer, 5, timeout=60)
        assert [m.value() for m in got] == [f"b{i}".encode() for i in range(5)]
        assert consumer.poll(1.0) is None  # nothing before the commit comes again
        consumer.close()
    finally:
        gateway.stop()
        node.stop()


def test_admin_create_describe_grow_delete(broker):
    admin = AdminClient({"bootstrap.servers": broker.kafka})
    topic = topic_name("admin")
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1,
                                  config={"retention.ms": "3600000"})])[topic].result()
    with pytest.raises(KafkaException) as refused:
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result()
    assert refused.value.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS
    for bad, code in ((NewTopic("bad name!", 1, 1), KafkaError.TOPIC_EXCEPTION),
                      (NewTopic(topic_name(), 1, 3), KafkaError.INVALID_REPLICATION_FACTOR),
                      (NewTopic(topic_name(), 1, 1, config={"cleanup.policy": "compact"}), KafkaError.INVALID_CONFIG)):
        with pytest.raises(KafkaException) as refused:
            admin.create_topics([bad])[bad.topic].result()
        assert refused.value.args[0].code() == code
    configs = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, topic)])
    described = list(configs.values())[0].result()
    assert described["retention.ms"].value == "3600000" and described["cleanup.policy"].value == "delete"
    admin.create_partitions([NewPartitions(topic, 5)])[topic].result()
    assert len(admin.list_topics(topic, timeout=10).topics[topic].partitions) == 5
    with pytest.raises(KafkaException) as refused:
        admin.create_partitions([NewPartitions(topic, 3)])[topic].result()
    assert refused.value.args[0].code() == KafkaError.INVALID_PARTITIONS
    admin.delete_topics([topic])[topic].result()
    assert topic not in admin.list_topics(timeout=10).topics
    with pytest.raises(KafkaException) as refused:
        admin.delete_topics([topic])[topic].result()
    assert refused.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART



def test_alter_configs_take_effect_and_unimplemented_configs_are_refused(broker):
    """IncrementalAlterConfigs and AlterConfigs change the partitions' shards (retention), and
    a config the gateway would not put into effect is INVALID_CONFIG, at create and at alter."""
    admin = AdminClient({"bootstrap.servers": broker.kafka})
    topic = topic_name("alter")
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])[topic].result()

    def shard_configs():
        return [shard_info(broker, f"kafka/{topic}/{p}")["config"] for p in range(2)]

    def described():
        return list(admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, topic)]).values())[0].result()

    # max.message.bytes is taken, but not below one batch header nor above the node's own limit.
    for bad in ({"segment.bytes": "1048576"}, {"max.message.bytes": "10"}, {"max.message.bytes": "1073741824"},
                {"min.insync.replicas": "2"}, {"compression.type": "zstd"}):
        other = topic_name("refused")
        with pytest.raises(KafkaException) as refused:
            admin.create_topics([NewTopic(other, 1, 1, config=bad)])[other].result()
        assert refused.value.args[0].code() == KafkaError.INVALID_CONFIG, bad
    def incremental(*entries):
        resource = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
            ConfigEntry(name, value, incremental_operation=op) for name, value, op in entries])
        admin.incremental_alter_configs([resource])[resource].result()

    incremental(("retention.ms", "60000", AlterConfigOpType.SET), ("retention.bytes", "1048576", AlterConfigOpType.SET))
    assert all(c["retentionMilliseconds"] == 60000 and c["retentionBytes"] == 1048576 for c in shard_configs())
    assert described()["retention.ms"].value == "60000"
    with pytest.raises(KafkaException) as refused:
        incremental(("segment.bytes", "1048576", AlterConfigOpType.SET))
    assert refused.value.args[0].code() == KafkaError.INVALID_CONFIG
    assert described()["retention.bytes"].value == "1048576"  # the refused change changed nothing
    incremental(("retention.ms", None, AlterConfigOpType.DELETE))
    assert all(c["retentionMilliseconds"] == 604_800_000 and c["retentionBytes"] == 1048576 for c in shard_configs())
    # AlterConfigs replaces the whole set: what it does not name goes back to its default.
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic, set_config={"retention.ms": "120000"})
    admin.alter_configs([resource])[resource].result()
    assert all(c["retentionMilliseconds"] == 120000 and c.get("retentionBytes") is None for c in shard_configs())
    broker_resource = ConfigResource(ConfigResource.Type.BROKER, "1", set_config={"num.partitions": "3"})
    with pytest.raises(KafkaException) as refused:
        admin.alter_configs([broker_resource])[broker_resource].result()
    assert refused.value.args[0].code() == KafkaError.INVALID_REQUEST

def test_kafka_python_producer_group_consumer_and_admin(broker):
    topic = topic_name("kp")
    admin = kafka.KafkaAdminClient(bootstrap_servers=broker.kafka)
    admin.create_topics([kafka.admin.NewTopic(topic, num_partitions=3, replication_factor=1)])
    assert topic in admin.list_topics()
    producer = kafka.KafkaProducer(bootstrap_servers=broker.kafka, compression_type="gzip", acks="all")
    for i in range(90):
        producer.send(topic, f"k{i}".encode(), partition=i % 3)
    producer.flush()
    consumer = kafka.KafkaConsumer(topic, bootstrap_servers=broker.kafka, group_id="kp-group",
                                   auto_offset_reset="earliest", consumer_timeout_ms=8000)
    values = sorted(int(m.value[1:]) for m in consumer)
    assert values == list(range(90))
    consumer.commit()
    assert consumer.committed(kafka.TopicPartition(topic, 0)) == 30
    consumer.close()
    listed = admin.list_groups()
    assert any((g.get("group_id") if isinstance(g, dict) else g[0]) == "kp-group" for g in listed), listed
    described = admin.describe_groups(["kp-group"])
    assert described, described
    admin.delete_topics([topic])
    admin.close()


def test_sasl_plain_scram_and_acls(data_dir):
    users = users_file(os.path.join(data_dir, "users"), ["alice", "bob"], "s3cret")
    acl = os.path.join(data_dir, "acl")
    with open(acl, "w") as f:
        f.write("alice produce sec*\nalice consume sec*\nalice admin sec*\nbob consume sec*\n")
    node = Node(os.path.join(data_dir, "node"), ["--kafka-users", users, "--kafka-acl", acl], gateways=("kafka",))
    try:
        def conf(user, password="s3cret", mechanism="SCRAM-SHA-256", **extra):
            return {"bootstrap.servers": node.kafka, "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": mechanism,
                    "sasl.username": user, "sasl.password": password, **extra}
        for mechanism in ("PLAIN", "SCRAM-SHA-256"):
            producer = Producer(conf("alice", mechanism=mechanism, **{"enable.idempotence": True}))
            for i in range(10):
                producer.produce("secure", value=f"{mechanism}-{i}")
            assert producer.flush(TIMEOUT) == 0
            errors = []
            wrong = Producer(conf("alice", "wrong", mechanism, error_cb=errors.append))
            wrong.produce("secure", value="never")
            wrong.flush(3)
            assert any(e.code() == KafkaError._AUTHENTICATION for e in errors)
        outcomes = []
        refused = Producer(conf("bob"))
        refused.produce("secure", value="bob", on_delivery=lambda err, msg: outcomes.append(err))
        refused.flush(TIMEOUT)
        assert outcomes[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
        consumer = Consumer(conf("bob", **{"group.id": "bob", "auto.offset.reset": "earliest"}))
        consumer.subscribe(["secure"])
        assert sorted(m.value().decode() for m in consume_all(consumer, 20)) == sorted(
            [f"PLAIN-{i}" for i in range(10)] + [f"SCRAM-SHA-256-{i}" for i in range(10)])
        consumer.close()
        bob_admin = AdminClient(conf("bob"))
        with pytest.raises(KafkaException) as denied:
            bob_admin.create_topics([NewTopic("sec-more", 1, 1)])["sec-more"].result()
        assert denied.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
        # kafka-python with SCRAM too; a client that does not authenticate is closed on.
        kp = kafka.KafkaProducer(bootstrap_servers=node.kafka, security_protocol="SASL_PLAINTEXT",
                                 sasl_mechanism="SCRAM-SHA-256", sasl_plain_username="alice",
                                 sasl_plain_password="s3cret")
        kp.send("secure", b"kafka-python").get(TIMEOUT)
        kp.close()
        host, port = node.kafka.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as raw:
            raw.sendall(request(3, 1, b"\x00\x00\x00\x00"))  # Metadata before SASL
            assert raw.recv(64) == b""
        assert "request before SASL authentication" in node.log()
        # Before authenticating, a request may not be large (64 KiB): refused from its size prefix.
        with socket.create_connection((host, int(port)), timeout=5) as raw:
            raw.sendall(struct.pack(">i", 1 << 20) + b"\x00" * 16)
            assert raw.recv(64) == b""
        assert "request size 1048576 outside 8...65536" in node.log()
        # Authenticated, the same size is fine (a large produce).
        big = Producer(conf("alice", **{"message.max.bytes": 2 << 20}))
        big.produce("secure", value=b"b" * (1 << 20))
        assert big.flush(TIMEOUT) == 0
    finally:
        node.stop()


def request(api_key, version, body, correlation=7, client=b"raw"):
    header = struct.pack(">hhih", api_key, version, correlation, len(client)) + client
    return struct.pack(">i", len(header) + len(body)) + header + body


def test_bad_requests_close_the_connection_with_a_log_line(broker):
    host, port = broker.kafka.rsplit(":", 1)
    # ApiVersions at an unknown version: answered in v0 with UNSUPPORTED_VERSION and the ranges.
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        raw.sendall(request(18, 99, b""))
        size, correlation, error, count = struct.unpack(">iihi", raw.recv(14))
        assert (correlation, error) == (7, 35) and count > 10
    for bad in (struct.pack(">i", 200 << 20),  # larger than socket.request.max.bytes: refused from the prefix
                request(999, 0, b""),  # an API the gateway does not serve
                request(3, 1, b"\x7f\xff\xff\xff")):  # Metadata claiming 2^31-1 topics in 4 bytes
        with socket.create_connection((host, int(port)), timeout=5) as raw:
            raw.sendall(bad)
            assert raw.recv(64) == b""  # closed, nothing allocated for it
    log = broker.log()
    assert log.count("kafka connection closed on a bad request") == 3
    assert "API key 999" in log and "beyond the" in log
    # Other clients are still served.
    assert "broker 1 at" in kcat("-b", broker.kafka, "-L")


def test_no_acknowledged_record_lost_or_doubled_across_journal_node_sigkill(data_dir):
    """An idempotent acks=all producer keeps producing through a SIGKILL of journal-node: every
    acknowledged record is there afterwards, and the producer's retries wrote nothing twice."""
    listen = f"127.0.0.1:{free_port()}"
    node = Node(data_dir, listeners=2, listen=listen)
    gateway = KafkaGateway(node.journal)
    try:
        topic = topic_name("crash")
        producer = Producer({"bootstrap.servers": gateway.kafka, "enable.idempotence": True, "acks": "all",
                             "linger.ms": 2, "message.timeout.ms": 60000, "retry.backoff.ms": 50})
        acknowledged, failed = [], []

        def delivered(err, msg):
            (failed if err else acknowledged).append(err or int(msg.value()))

        i = 0
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            producer.produce(topic, value=str(i).encode(), on_delivery=delivered)
            producer.poll(0)
            i += 1
            time.sleep(0.0005)
        node.stop(signal.SIGKILL)
        for _ in range(200):  # keeps producing while the node is down
            producer.produce(topic, value=str(i).encode(), on_delivery=delivered)
            i += 1
        producer.poll(0.5)
        node = Node(data_dir, listeners=2, listen=listen)
        assert producer.flush(60) == 0
        assert not failed, failed[:3]
        assert len(acknowledged) == i
        consumer = Consumer({"bootstrap.servers": gateway.kafka, "group.id": topic, "enable.auto.commit": False})
        consumer.assign([TopicPartition(topic, 0, 0)])
        values = [int(m.value()) for m in consume_all(consumer, i, timeout=60)]
        assert consumer.poll(1.0) is None
        consumer.close()
        assert sorted(values) == list(range(i))  # all there, none twice
        assert values == list(range(i))  # and in order
    finally:
        gateway.stop()
        node.stop()


def find_coordinator(bootstrap, group):
    """FindCoordinator v1 over a raw socket: (node id, host, port) the gateway names."""
    host, port = bootstrap.rsplit(":", 1)
    key = group.encode()
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as raw:
        raw.sendall(request(10, 1, struct.pack(">h", len(key)) + key + b"\x00"))
        size = struct.unpack(">i", raw.recv(4))[0]
        body = b""
        while len(body) < size:
            body += raw.recv(size - len(body))
    error, message_length = struct.unpack(">hh", body[8:12])
    assert error == 0, error
    rest = body[12 + max(message_length, 0):]
    node_id, host_length = struct.unpack(">ih", rest[:6])
    return node_id, rest[6:6 + host_length].decode(), struct.unpack(">i", rest[6 + host_length:10 + host_length])[0]


def values_from(members, count):
    """Record values from every member until `count` arrived (or the timeout)."""
    got = []
    deadline = time.monotonic() + TIMEOUT
    while len(got) < count and time.monotonic() < deadline:
        for member in members:
            got += [message.value() for message in member.consume(500, 0.05) if not message.error()]
    return got


def stable_assignment(consumers, partitions, timeout=60):
    """Polls every member until the group's partitions are each assigned to exactly one of them."""
    deadline = time.monotonic() + timeout
    while True:
        for consumer in consumers:
            message = consumer.poll(0.1)
            assert message is None or message.error() is not None, "records before any were produced"
        assigned = [{(tp.topic, tp.partition) for tp in consumer.assignment()} for consumer in consumers]
        if all(assigned) and sum(len(a) for a in assigned) == partitions and len(set().union(*assigned)) == partitions:
            return assigned
        assert time.monotonic() < deadline, f"no single assignment: {assigned}"


def test_two_gateways_coordinate_each_group_once_and_take_over_a_dead_ones_groups(data_dir):
    """Two kafka-gateway processes on one journal are two brokers of one cluster: each group has
    one coordinator (FindCoordinator from either names it), so members connected to either
    form one group; when a gateway is killed the other takes its groups over."""
    node = Node(data_dir, listeners=2)
    first = KafkaGateway(node.journal, ["--node-id", "1"])
    second = KafkaGateway(node.journal, ["--node-id", "2"])
    survivor = None
    try:
        time.sleep(2.5)  # a newcomer coordinates groups once every gateway has seen it (two heartbeats)
        clash = subprocess.run([os.path.join(BIN, "kafka-gateway"), "--journal", node.journal, "--listen",
                                "127.0.0.1:0", "--node-id", "2"], capture_output=True, text=True, timeout=30)
        assert clash.returncode != 0 and "gateway id 2 is in use" in clash.stderr
        metadata = json.loads(kcat("-L", "-J", "-b", second.kafka))
        assert sorted(b["id"] for b in metadata["brokers"]) == [1, 2]
        owners = {}
        for i in range(12):
            group = f"g{i}"
            owners[group] = find_coordinator(first.kafka, group)
            assert find_coordinator(second.kafka, group) == owners[group]
        assert {owner[0] for owner in owners.values()} == {1, 2}  # groups spread over both

        topic = topic_name("two")
        admin = AdminClient({"bootstrap.servers": first.kafka})
        admin.create_topics([NewTopic(topic, 4, 1)])[topic].result(TIMEOUT)
        group = "shared"
        members = [group_consumer(gateway.kafka, group, [topic], **{"session.timeout.ms": 6000})
                   for gateway in (first, second, first, second)]
        stable_assignment(members, 4)
        produce(first.kafka, topic, [f"r{i}" for i in range(200)])
        produce(second.kafka, topic, [f"s{i}" for i in range(200)])
        got = values_from(members, 400)
        assert sorted(got) == sorted([f"r{i}".encode() for i in range(200)] + [f"s{i}".encode() for i in range(200)])
        for member in members:
            try:
                member.commit(asynchronous=False)
            except KafkaException as error:
                # librdkafka's sticky partitioner puts a burst of keyless records in one partition:
                # a member whose partitions got none has nothing to commit (and nothing to read again).
                assert error.args[0].code() == KafkaError._NO_OFFSET, error

        # The group's coordinator dies: after its lease the other gateway coordinates the group,
        # the members rejoin there, and nothing committed is read again.
        coordinator = find_coordinator(first.kafka, group)[0]
        dead, survivor = (first, second) if coordinator == 1 else (second, first)
        dead.stop(signal.SIGKILL)
        deadline = time.monotonic() + 30
        while find_coordinator(survivor.kafka, group)[0] == coordinator:  # until the dead one's lease ran out
            assert time.monotonic() < deadline, "the surviving gateway did not take the group over"
            for member in members:
                member.poll(0.05)
        stable_assignment(members, 4, timeout=90)
        produce(survivor.kafka, topic, [f"t{i}" for i in range(50)])
        got = values_from(members, 50)
        assert sorted(got) == sorted(f"t{i}".encode() for i in range(50))
        for member in members:
            member.close()
    finally:
        first.stop()
        second.stop()
        node.stop()
