"""The object tier in a real journal-node: Kafka records offloaded to moto's S3 server or to the
WebHDFS test server, checked independently with boto3 / HdfsCLI, consumed from offset 0 across
the tiers by kcat and kafka-python, before and after a SIGKILL of the node."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import boto3
import hdfs
import kafka
import pytest

from conftest import BIN, Node, free_port, shard_info

MOTO = os.path.join(os.path.dirname(sys.executable), "moto_server")
RECORDS = 3000
EXPECTED = [(i, f"{i:06d}".encode()) for i in range(RECORDS)]  # (offset, value prefix) as consume_from_start reads them
BASE_TIMESTAMP = 1_700_000_000_000  # record i is stamped BASE_TIMESTAMP + i (2023: past any local retention)


def wait_for_port(port, process, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "server exited at start"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listening on {port}")


def start_moto(**env):
    """moto's standalone S3 server on a free loopback port: (endpoint, process)."""
    port = free_port()
    process = subprocess.Popen([MOTO, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env={**os.environ, **env})
    wait_for_port(port, process)
    return f"http://127.0.0.1:{port}", process


@pytest.fixture
def moto(monkeypatch):
    endpoint, process = start_moto()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    yield endpoint, process
    process.kill()
    process.wait()


def s3(endpoint, key="testing", secret="testing"):
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=key, aws_secret_access_key=secret)


def tiered_node(data_dir, tier_args):
    """A node with the Kafka gateway, 1 MiB WAL segments (so they seal quickly), and an object
    tier that takes every sealed batch at once, checking every 200 ms."""
    config = os.path.join(data_dir, "node.toml")
    with open(config, "w") as f:
        f.write("[journal]\nsegment_bytes = 1048576\nmax_batch_bytes = 262144\n")
    return Node(os.path.join(data_dir, "node"), gateways=("kafka",),
                extra=["--config", config, "--tier-local-retention-ms", "0", "--tier-interval-ms", "200", *tier_args])


def value(i):
    return f"{i:06d}".encode() + bytes(33 + (i * 7 + j * j) % 90 for j in range(994))  # printable: kcat prints one per line


def produce_records(node, topic):
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic
    # Kept however old: the records are stamped in 2023, and the default 7 days would let
    # retention remove them whenever maintenance runs (a restart's wait made that happen).
    admin = AdminClient({"bootstrap.servers": node.kafka})
    admin.create_topics([NewTopic(topic, 1, 1, config={"retention.ms": "-1"})])[topic].result(30)
    producer = Producer({"bootstrap.servers": node.kafka, "batch.size": 65536, "linger.ms": 5})
    for i in range(RECORDS):
        producer.produce(topic, value=value(i), timestamp=BASE_TIMESTAMP + i)
    assert producer.flush(30) == 0


def tier_status(node):
    with urllib.request.urlopen(f"http://{node.http}/admin/tier") as answer:
        return json.load(answer)


def wait_for_offload(node, shard, timeout=60):
    """Waits for a pass that started after now (two passes end after now) and finds nothing
    waiting for the shard, which has data in the object tier."""
    since = time.time() * 1000
    first_pass = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = tier_status(node)
        entry = next((s for s in status["shards"] if s["name"] == shard), None)
        last_pass = status.get("lastPassMilliseconds", 0)
        if first_pass is None and last_pass > since:
            first_pass = last_pass
        if (first_pass is not None and last_pass > first_pass and entry and entry["tierBytes"] > 0
                and entry["offloadLagBytes"] == 0 and entry["tierObjects"] > 0):
            return status, entry
        time.sleep(0.1)
    raise AssertionError(f"no offload of {shard}: {tier_status(node)}")


def consume_from_start(node, topic):
    """Every value of partition 0 from offset 0, with kcat."""
    out = subprocess.run(["kcat", "-b", node.kafka, "-C", "-t", topic, "-p", "0", "-o", "beginning", "-e", "-q",
                          "-f", "%o %s\n"], capture_output=True, timeout=60, check=True).stdout
    lines = out.split(b"\n")[:-1]
    return [(int(line[:line.index(b" ")]), line[line.index(b" ") + 1:line.index(b" ") + 7]) for line in lines]


def check_reads_across_tiers(node, topic, tier_end):
    got = consume_from_start(node, topic)
    assert got == EXPECTED
    # A timestamp lookup (ListOffsets) that lands in the object tier.
    consumer = kafka.KafkaConsumer(bootstrap_servers=node.kafka)
    partition = kafka.TopicPartition(topic, 0)
    found = consumer.offsets_for_times({partition: BASE_TIMESTAMP + 123})[partition]
    assert found.offset == 123 and 123 < tier_end
    consumer.close()


@pytest.mark.parametrize("backend", ["s3", "webhdfs"])
def test_kafka_records_offloaded_read_back_and_surviving_sigkill(data_dir, backend, request):
    if backend == "s3":
        endpoint, _ = request.getfixturevalue("moto")
        s3(endpoint).create_bucket(Bucket="strata")
        tier_args = ["--tier-endpoint", endpoint, "--tier-bucket", "strata", "--tier-prefix", "node-1/"]
    else:
        endpoint = request.getfixturevalue("webhdfs")
        tier_args = ["--tier-webhdfs", endpoint]
    node = tiered_node(data_dir, tier_args)
    topic = f"cold-{backend}"
    shard = f"kafka/{topic}/0"
    try:
        produce_records(node, topic)
        status, entry = wait_for_offload(node, shard)
        assert status.get("lastError") is None and status["uploadedObjects"] >= entry["tierObjects"]
        info = shard_info(node, shard)
        tier_end = info["tierEndOffset"]
        assert 0 < tier_end < RECORDS and info["tierBytes"] == entry["tierBytes"]

        # What the store holds, seen by a third-party client.
        if backend == "s3":
            listed = s3(endpoint).list_objects_v2(Bucket="strata", Prefix="node-1/")["Contents"]
            keys = [o["Key"] for o in listed if o["Key"] != "node-1/strata-node"]  # the node's claim on the prefix
            assert len(keys) == entry["tierObjects"] and all(k.endswith(".strata") for k in keys)
            tail = s3(endpoint).get_object(Bucket="strata", Key=keys[0], Range="bytes=-12")["Body"].read()
        else:
            client = hdfs.InsecureClient(endpoint, user="strata")
            shard_dirs = [d for d in client.list("/strata") if d != "strata-node"]  # the node's claim
            keys = [f"/strata/{d}/{name}" for d in shard_dirs for name in client.list(f"/strata/{d}")]
            assert len(keys) == entry["tierObjects"]
            with client.read(keys[0], offset=client.status(keys[0])["length"] - 12) as reader:
                tail = reader.read()
        assert tail[:8] == b"STRATOBJ"

        # The CLI's view, and the metrics.
        cli = subprocess.run([os.path.join(BIN, "strata"), "tier", "status", "--http", node.http],
                             capture_output=True, text=True, timeout=30, check=True).stdout
        row = next(line.split("\t") for line in cli.splitlines() if line.startswith(shard + "\t"))
        assert int(row[3]) == entry["tierBytes"] and int(row[4]) == entry["tierObjects"] and row[7] == "-"
        metrics = urllib.request.urlopen(f"http://{node.http}/metrics").read().decode()
        line = next(l for l in metrics.splitlines() if l.startswith(f'strata_tier_shard_bytes{{shard="{shard}"}} '))
        assert float(line.split()[1]) == entry["tierBytes"]

        check_reads_across_tiers(node, topic, tier_end)

        # SIGKILL, restart: the catalog and the local tail come back, reads cross the tiers again.
        node.stop(signal.SIGKILL)
        node = tiered_node(data_dir, tier_args)
        info = shard_info(node, shard)
        assert info["endOffset"] == RECORDS and info["tierEndOffset"] >= tier_end and info["startOffset"] == 0
        check_reads_across_tiers(node, topic, tier_end)
    finally:
        node.stop()


def test_wrong_credentials_are_reported_and_local_data_stays(data_dir, monkeypatch):
    """moto with its authentication switched on (the first 3 requests, which create an IAM user
    and its key, go unchecked): a node with a wrong secret reports SignatureDoesNotMatch, keeps
    its data local and readable; restarted with the right secret it catches up."""
    endpoint, moto = start_moto(INITIAL_NO_AUTH_ACTION_COUNT="3")
    node = None
    try:
        iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                           aws_access_key_id="x", aws_secret_access_key="x")
        iam.create_user(UserName="strata")
        iam.put_user_policy(UserName="strata", PolicyName="s3", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="strata")["AccessKey"]
        s3(endpoint, key["AccessKeyId"], key["SecretAccessKey"]).create_bucket(Bucket="strata")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"] + "-wrong")
        tier_args = ["--tier-endpoint", endpoint, "--tier-bucket", "strata"]
        node = tiered_node(data_dir, tier_args)
        topic = "cold-refused"
        shard = f"kafka/{topic}/0"
        produce_records(node, topic)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status = tier_status(node)
            entry = next((s for s in status["shards"] if s["name"] == shard), None)
            # The node-wide error can come from a pass before the shard had sealed data; wait
            # for the shard's own.
            if status.get("lastError") and entry and entry["offloadLagBytes"] > 0 and entry.get("lastError"):
                break
            time.sleep(0.2)
        assert "403 SignatureDoesNotMatch" in status.get("lastError") and status["uploadFailures"] >= 1
        assert entry["tierBytes"] == 0 and "SignatureDoesNotMatch" in entry.get("lastError", "")
        assert "object tier pass failed" in node.log()
        assert consume_from_start(node, topic) == EXPECTED

        node.stop()
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
        node = tiered_node(data_dir, tier_args)
        wait_for_offload(node, shard)
        assert consume_from_start(node, topic) == EXPECTED
    finally:
        if node:
            node.stop()
        moto.kill()
        moto.wait()


def test_a_tier_without_credentials_is_refused_at_start(data_dir):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    result = subprocess.run([os.path.join(BIN, "journal-node"), "--data-dir", os.path.join(data_dir, "node"),
                             "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--tier-bucket", "strata",
                             "--log-level", "warning"], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "object tier: object store error 0 NoCredentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set" \
        in result.stderr
