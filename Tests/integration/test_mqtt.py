"""The MQTT gateway driven by stock clients: paho-mqtt (3.1.1 and 5.0) and mosquitto_pub/sub."""
import json
import os
import queue
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
import pytest

from conftest import BIN, GatewayProcess, Node, metric, read_until_closed, shard_info, users_file

TIMEOUT = 10


def client(node, version=mqtt.MQTTv311, client_id=None, **kwargs):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"t-{uuid.uuid4().hex[:8]}",
                    protocol=version, **kwargs)
    c.inbox = queue.Queue()
    c.on_message = lambda _c, _u, message: c.inbox.put(message)
    return c


def connect(c, node, **kwargs):
    connected = queue.Queue()
    c.on_connect = lambda _c, _u, _flags, reason, props: connected.put((reason, props))
    c.connect("127.0.0.1", node.mqtt_port, keepalive=kwargs.pop("keepalive", 30), **kwargs)
    c.loop_start()
    return connected.get(timeout=TIMEOUT)


def close(*clients):
    """DISCONNECT each client and stop its network loop."""
    for c in clients:
        c.disconnect()
        c.loop_stop()


def subscribe(c, topic, qos=1, **kwargs):
    done = queue.Queue()
    c.on_subscribe = lambda _c, _u, mid, codes, props: done.put(codes)
    c.subscribe(topic, qos=qos, **kwargs)
    return done.get(timeout=TIMEOUT)


@pytest.mark.parametrize("version", [mqtt.MQTTv31, mqtt.MQTTv311, mqtt.MQTTv5])
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_publish_subscribe_each_qos(node, version, qos):
    sub, pub = client(node, version), client(node, version)
    assert not connect(sub, node)[0].is_failure
    subscribe(sub, "room/+/temp", qos=qos)
    assert not connect(pub, node)[0].is_failure
    for i in range(20):
        pub.publish(f"room/{i % 3}/temp", f"t{i}", qos=qos).wait_for_publish(TIMEOUT)
    got = [sub.inbox.get(timeout=TIMEOUT) for _ in range(20)]
    assert sorted(m.payload.decode() for m in got) == sorted(f"t{i}" for i in range(20))
    for room in range(3):  # order is kept per topic (topics in different shards may interleave)
        assert [m.payload.decode() for m in got if m.topic == f"room/{room}/temp"] == \
            [f"t{i}" for i in range(20) if i % 3 == room]
    assert all(m.qos == qos for m in got)
    close(sub, pub)


def test_v5_properties_travel(node):
    sub, pub = client(node, mqtt.MQTTv5), client(node, mqtt.MQTTv5)
    connect(sub, node)
    subscribe(sub, "req/#", qos=1)
    connect(pub, node)
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = "resp/1"
    props.CorrelationData = b"\x01\x02"
    props.UserProperty = [("k", "v"), ("k", "w")]
    props.ContentType = "text/plain"
    pub.publish("req/a", b"ping", qos=1, properties=props).wait_for_publish(TIMEOUT)
    message = sub.inbox.get(timeout=TIMEOUT)
    assert message.properties.ResponseTopic == "resp/1"
    assert message.properties.CorrelationData == b"\x01\x02"
    assert message.properties.UserProperty == [("k", "v"), ("k", "w")]
    assert message.properties.ContentType == "text/plain"
    close(sub, pub)


def test_retained_set_replace_clear(node):
    pub = client(node)
    connect(pub, node)
    pub.publish("cfg/a", "one", qos=1, retain=True).wait_for_publish(TIMEOUT)
    pub.publish("cfg/a", "two", qos=1, retain=True).wait_for_publish(TIMEOUT)
    late = client(node)
    connect(late, node)
    subscribe(late, "cfg/#")
    message = late.inbox.get(timeout=TIMEOUT)
    assert (message.payload, message.retain) == (b"two", True)
    pub.publish("cfg/a", b"", qos=1, retain=True).wait_for_publish(TIMEOUT)
    # The clearing publish itself reaches the live subscriber; a new subscriber gets nothing.
    assert late.inbox.get(timeout=TIMEOUT).payload == b""
    newest = client(node)
    connect(newest, node)
    subscribe(newest, "cfg/#")
    with pytest.raises(queue.Empty):
        newest.inbox.get(timeout=1)
    close(pub, late, newest)


def test_will_on_dropped_connection_not_on_disconnect(node):
    watcher = client(node)
    connect(watcher, node)
    subscribe(watcher, "wills/#")
    polite = client(node)
    polite.will_set("wills/polite", "gone", qos=1)
    connect(polite, node)
    close(polite)
    dropped = client(node)
    dropped.will_set("wills/dropped", "lost", qos=1)
    connect(dropped, node)
    dropped.loop_stop()
    dropped.socket().close()  # no DISCONNECT: the will goes out
    message = watcher.inbox.get(timeout=TIMEOUT)
    assert (message.topic, message.payload) == ("wills/dropped", b"lost")
    with pytest.raises(queue.Empty):
        watcher.inbox.get(timeout=1)
    close(watcher)


def test_dollar_topics_not_matched_by_leading_wildcards(node):
    sub, pub = client(node), client(node)
    connect(sub, node)
    subscribe(sub, "#")
    connect(pub, node)
    pub.publish("$internal/x", "hidden", qos=1).wait_for_publish(TIMEOUT)
    pub.publish("visible", "shown", qos=1).wait_for_publish(TIMEOUT)
    assert sub.inbox.get(timeout=TIMEOUT).payload == b"shown"
    close(sub, pub)


def test_mosquitto_clients(node):
    sub = subprocess.Popen(["mosquitto_sub", "-p", str(node.mqtt_port), "-t", "m/#", "-q", "1", "-C", "3", "-v",
                            "-V", "mqttv5"], stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)
    for i in range(3):
        subprocess.run(["mosquitto_pub", "-p", str(node.mqtt_port), "-t", f"m/{i}", "-m", f"v{i}", "-q", "1"],
                       check=True, timeout=TIMEOUT)
    out, _ = sub.communicate(timeout=TIMEOUT)
    assert out.splitlines() == ["m/0 v0", "m/1 v1", "m/2 v2"]


def test_mqtt_31_sessions_client_ids_and_mosquitto_clients(node):
    """MQTT 3.1 (protocol name MQIsdp, level 3), as old devices speak it: a persistent session
    resumes (3.1's CONNACK has no session present flag), a client id must be 1 to 23
    characters (else CONNACK 2), and mosquitto_pub/sub -V mqttv31 work."""
    cid = f"v31-{uuid.uuid4().hex[:6]}"
    first = persistent_client(node, cid, mqtt.MQTTv31)
    connect_persistent(first, node, mqtt.MQTTv31)
    subscribe(first, "old/#", qos=1)
    close(first)
    pub = client(node, mqtt.MQTTv31)
    connect(pub, node)
    pub.publish("old/1", "kept", qos=1).wait_for_publish(TIMEOUT)
    again = persistent_client(node, cid, mqtt.MQTTv31)
    flags, reason = connect_persistent(again, node, mqtt.MQTTv31)
    assert not reason.is_failure and not flags.session_present  # reserved in 3.1
    assert again.inbox.get(timeout=TIMEOUT).payload == b"kept"
    close(again, pub)
    for bad in ("x" * 24, ""):
        body = bytes([0, 6]) + b"MQIsdp" + bytes([3, 0x02, 0, 30]) + len(bad).to_bytes(2, "big") + bad.encode()
        with socket.create_connection(("127.0.0.1", node.mqtt_port), timeout=TIMEOUT) as raw:
            raw.sendall(bytes([0x10, len(body)]) + body)
            assert read_packet(raw) == (0x20, bytes([0, 2]))  # identifier rejected
    sub = subprocess.Popen(["mosquitto_sub", "-p", str(node.mqtt_port), "-t", "m31/#", "-q", "1", "-C", "2", "-v",
                            "-V", "mqttv31", "-i", "sub31"], stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)
    for i in range(2):
        subprocess.run(["mosquitto_pub", "-p", str(node.mqtt_port), "-t", f"m31/{i}", "-m", f"v{i}", "-q", "1",
                        "-V", "mqttv31", "-i", f"pub31-{i}"], check=True, timeout=TIMEOUT)
    out, _ = sub.communicate(timeout=TIMEOUT)
    assert out.splitlines() == ["m31/0 v0", "m31/1 v1"]


def test_max_keepalive_is_announced_to_v5_and_refused_to_v311(data_dir):
    """The operator's maximum keep-alive (journal-node --mqtt-max-keepalive, mqtt-gateway
    --max-keepalive): a 5.0 client asking for more, or for none, gets it as Server Keep Alive
    in CONNACK [MQTT-3.2.2-21]; a 3.1.1 client asking for more is refused (CONNACK 2)."""
    node = Node(data_dir, ["--mqtt-allow-anonymous", "--mqtt-max-keepalive", "20"])
    gateway = Gateway(node.journal, ["--allow-anonymous", "--max-keepalive", "20"])
    try:
        for served in (node, gateway):
            for asked in (60, 0):
                c = client(served, mqtt.MQTTv5)
                reason, props = connect(c, served, keepalive=asked)
                assert not reason.is_failure and props.ServerKeepAlive == 20, (asked, props)
                close(c)
            c = client(served, mqtt.MQTTv5)
            reason, props = connect(c, served, keepalive=15)
            assert not hasattr(props, "ServerKeepAlive")
            close(c)
            old = client(served, mqtt.MQTTv311)
            assert str(connect(old, served, keepalive=60)[0]) == "Client identifier not valid"  # CONNACK 2
            old.loop_stop()
            ok = client(served, mqtt.MQTTv311)
            assert not connect(ok, served, keepalive=20)[0].is_failure
            close(ok)
    finally:
        gateway.stop()
        node.stop()


def test_sys_topics_as_mosquitto_publishes_them(data_dir):
    """$SYS/broker/... (mosquitto's names): retained for a new subscriber, updated every
    --mqtt-sys-interval seconds, counting this gateway's clients and publishes; not matched by a
    leading wildcard."""
    node = Node(data_dir, ["--mqtt-allow-anonymous", "--mqtt-sys-interval", "1"])
    try:
        pub = client(node)
        connect(pub, node)
        for i in range(3):
            pub.publish(f"sys-test/{i}", "x", qos=1).wait_for_publish(TIMEOUT)
        time.sleep(1.5)
        out = subprocess.run(["mosquitto_sub", "-p", str(node.mqtt_port), "-t", "$SYS/broker/#", "-v", "-W", "3"],
                             capture_output=True, text=True, timeout=TIMEOUT).stdout
        values = {}
        for line in out.splitlines():
            topic, _, value = line.partition(" ")
            values[topic] = value
        assert values["$SYS/broker/version"].startswith("Strata")
        assert values["$SYS/broker/uptime"].endswith(" seconds")
        assert int(values["$SYS/broker/clients/connected"]) >= 1
        assert int(values["$SYS/broker/publish/messages/received"]) >= 3
        assert int(values["$SYS/broker/publish/bytes/received"]) >= 3
        assert float(values["$SYS/broker/load/publish/received/1min"]) >= 0
        # Retained: a new subscriber has every value at once, flagged retained; live updates follow.
        sub = client(node)
        connect(sub, node)
        subscribe(sub, "$SYS/broker/uptime", qos=0)
        first = sub.inbox.get(timeout=TIMEOUT)
        assert first.retain and first.payload.endswith(b" seconds")
        second = sub.inbox.get(timeout=TIMEOUT)
        assert not second.retain
        # "#" alone does not match $ topics [MQTT-4.7.2-1].
        everything = client(node)
        connect(everything, node)
        subscribe(everything, "#", qos=0)
        time.sleep(1.5)
        assert all(not m.topic.startswith("$") for m in list(everything.inbox.queue))
        close(pub, sub, everything)
    finally:
        node.stop()


def test_anonymous_refused_unless_allowed(data_dir):
    closed = Node(data_dir)
    try:
        # paho reports the 3.1.1 return code 5 under the 5.0 name as well.
        for version in (mqtt.MQTTv311, mqtt.MQTTv5):
            c = client(closed, version)
            reason, _ = connect(c, closed)
            assert str(reason) == "Not authorized"
            c.loop_stop()
        c = client(closed, mqtt.MQTTv5)
        c.username_pw_set("user", "secret")
        reason, _ = connect(c, closed)
        assert str(reason) == "Bad user name or password"  # no password file: no credentials are right
        c.loop_stop()
    finally:
        closed.stop()


def test_malformed_packet_gets_disconnect_and_others_still_served(node):
    raw = socket.create_connection(("127.0.0.1", node.mqtt_port), timeout=TIMEOUT)
    # CONNECT v5 (clean start, keep-alive 30, empty properties, client id "raw"), then a
    # PUBLISH with QoS 3: malformed.
    raw.sendall(bytes([0x10, 0x10, 0, 4]) + b"MQTT" + bytes([5, 2, 0, 30, 0, 0, 3]) + b"raw")
    connack = raw.recv(64)
    assert connack[0] == 0x20
    raw.sendall(bytes([0x36, 0x05, 0x00, 0x01, 0x61, 0x00, 0x01]))
    rest = read_until_closed(raw, 64)
    assert rest[:1] == b"\xe0" and rest[2] == 0x81  # DISCONNECT, reason 0x81 malformed packet
    ok = client(node)
    assert not connect(ok, node)[0].is_failure
    close(ok)


def test_malformed_connects_are_closed_without_connack(node):
    """[MQTT-3.1.4-1]: a CONNECT that breaks the rules gets no CONNACK, only a closed socket:
    bytes its flags do not announce (a user name with the user name flag clear), a will topic
    that is empty or has wildcards."""
    v311 = bytes([0, 4]) + b"MQTT" + bytes([4])
    cases = [
        # flags 0x02 (clean session, no user name), client id "raw", then a user name "u" anyway.
        v311 + bytes([0x02, 0, 30, 0, 3]) + b"raw" + bytes([0, 1]) + b"u",
        # flags 0x06 (will), will topic "" and payload "x".
        v311 + bytes([0x06, 0, 30, 0, 3]) + b"raw" + bytes([0, 0, 0, 1]) + b"x",
        # will topic "a/#".
        v311 + bytes([0x06, 0, 30, 0, 3]) + b"raw" + bytes([0, 3]) + b"a/#" + bytes([0, 1]) + b"x",
    ]
    for body in cases:
        with socket.create_connection(("127.0.0.1", node.mqtt_port), timeout=TIMEOUT) as raw:
            raw.sendall(bytes([0x10, len(body)]) + body)
            received = b""
            while True:
                chunk = raw.recv(64)
                if not chunk:
                    break
                received += chunk
            assert received == b"", (body, received)
    ok = client(node)
    assert not connect(ok, node)[0].is_failure
    close(ok)


def read_packet(sock):
    """One MQTT packet from a raw socket: (first byte, body)."""
    def exactly(n):
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            assert chunk, "connection closed"
            data += chunk
        return data
    first = exactly(1)[0]
    length, shift = 0, 0
    while True:
        byte = exactly(1)[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if byte & 0x80 == 0:
            break
    return first, exactly(length)


def test_a_disconnect_that_breaks_the_rules_does_not_suppress_the_will(node):
    """MQTT 3.14.4: only a valid DISCONNECT with reason 0 discards the will. One that sets a
    session expiry after 0 at CONNECT (3.14.2.2.2) is a protocol error: DISCONNECT 0x82, and the
    will is published."""
    watcher = client(node)
    connect(watcher, node)
    subscribe(watcher, "wills/#", qos=1)
    with socket.create_connection(("127.0.0.1", node.mqtt_port), timeout=TIMEOUT) as raw:
        will_topic, will_payload = b"wills/bad-disconnect", b"gone"
        body = bytes([0, 4]) + b"MQTT" + bytes([5, 0x0E, 0, 30, 0])  # clean start, will QoS 1
        body += bytes([0, 3]) + b"wil" + bytes([0])  # client id, will properties (none)
        body += len(will_topic).to_bytes(2, "big") + will_topic + len(will_payload).to_bytes(2, "big") + will_payload
        raw.sendall(bytes([0x10, len(body)]) + body)
        assert read_packet(raw)[0] == 0x20
        raw.sendall(bytes([0xE0, 7, 0x00, 5, 0x11, 0, 0, 0, 10]))  # DISCONNECT 0, session expiry 10
        first_byte, packet = read_packet(raw)
        assert first_byte == 0xE0 and packet[0] == 0x82, (first_byte, packet)
    message = watcher.inbox.get(timeout=TIMEOUT)
    assert (message.topic, message.payload) == ("wills/bad-disconnect", b"gone")
    close(watcher)


def read_varint(data, at):
    value, shift = 0, 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte & 0x80 == 0:
            return value, at


def test_outbound_topic_aliases_honour_the_clients_maximum(node):
    """MQTT 3.3.2.3.4: a 5.0 client that announced Topic Alias Maximum 2 gets a topic's first
    PUBLISH with its name and an alias, later ones with the alias alone (an empty topic), and a
    third topic with its name and no alias."""
    with socket.create_connection(("127.0.0.1", node.mqtt_port), timeout=TIMEOUT) as raw:
        props = bytes([0x22, 0, 2])  # Topic Alias Maximum 2
        body = bytes([0, 4]) + b"MQTT" + bytes([5, 0x02, 0, 30, len(props)]) + props + bytes([0, 3]) + b"als"
        raw.sendall(bytes([0x10, len(body)]) + body)
        assert read_packet(raw)[0] == 0x20
        filt = b"alias/#"
        sub = bytes([0, 1, 0]) + len(filt).to_bytes(2, "big") + filt + bytes([0x00])
        raw.sendall(bytes([0x82, len(sub)]) + sub)
        assert read_packet(raw)[0] == 0x90
        pub = client(node)
        connect(pub, node)
        sent = ["alias/a", "alias/b", "alias/a", "alias/c", "alias/b", "alias/c"]
        for topic in sent:
            pub.publish(topic, topic, qos=0)
        received = []
        for _ in sent:
            first_byte, packet = read_packet(raw)
            assert first_byte >> 4 == 3
            length = int.from_bytes(packet[:2], "big")
            topic = packet[2:2 + length].decode()
            props_length, at = read_varint(packet, 2 + length)
            props_bytes = packet[at:at + props_length]
            alias = int.from_bytes(props_bytes[1:3], "big") if props_bytes[:1] == b"\x23" else None
            received.append((topic, alias, packet[at + props_length:].decode()))
        close(pub)
    assert received == [
        ("alias/a", 1, "alias/a"), ("alias/b", 2, "alias/b"), ("", 1, "alias/a"),
        ("alias/c", None, "alias/c"), ("", 2, "alias/b"), ("alias/c", None, "alias/c"),
    ], received


def test_no_reason_strings_for_a_client_that_asked_for_no_problem_information(data_dir):
    """[MQTT-3.1.2-29]: a 5.0 client whose CONNECT says Request Problem Information 0 gets no
    Reason String (or User Property) on a PUBACK; one that did not gets the reason. The journal
    refuses every append here (its disk reserve is above what is free), so PUBACK is 0x80."""
    os.makedirs(data_dir, exist_ok=True)
    stat = os.statvfs(data_dir)
    config = os.path.join(data_dir, "node.toml")
    with open(config, "w") as f:
        f.write(f"[journal]\nmin_free_disk_bytes = {2 * stat.f_bavail * stat.f_frsize}\n")
    started = Node(os.path.join(data_dir, "node"), ["--config", config, "--mqtt-allow-anonymous"])
    try:
        for problem_information, expect_reason in ((b"", True), (bytes([0x17, 0]), False)):
            with socket.create_connection(("127.0.0.1", started.mqtt_port), timeout=TIMEOUT) as raw:
                props = problem_information
                body = bytes([0, 4]) + b"MQTT" + bytes([5, 0x02, 0, 30, len(props)]) + props + bytes([0, 3]) + b"rpi"
                raw.sendall(bytes([0x10, len(body)]) + body)
                assert read_packet(raw)[0] == 0x20
                topic = b"refused/1"
                publish = len(topic).to_bytes(2, "big") + topic + bytes([0, 9, 0]) + b"x"
                raw.sendall(bytes([0x32, len(publish)]) + publish)
                first_byte, ack = read_packet(raw)
                assert first_byte == 0x40 and ack[:2] == bytes([0, 9]) and ack[2] == 0x80, ack
                properties = b""
                if len(ack) > 3:
                    length, at = read_varint(ack, 3)
                    properties = ack[at:at + length]
                has_reason = properties[:1] == bytes([0x1F])
                assert has_reason == expect_reason, ack
    finally:
        started.stop()


def test_receive_maximum_exceeded_gets_disconnect_0x93(node):
    """MQTT 4.9: a 5.0 client with more unacknowledged QoS 1/2 publishes than the receive
    maximum the gateway announced (1024; a QoS 2 one counts until PUBCOMP) gets DISCONNECT 0x93;
    QoS 0 publishes do not count."""
    watcher = client(node)
    connect(watcher, node)
    subscribe(watcher, "flow/zero", qos=0)
    with socket.create_connection(("127.0.0.1", node.mqtt_port), timeout=TIMEOUT) as raw:
        raw.sendall(bytes([0x10, 0x10, 0, 4]) + b"MQTT" + bytes([5, 2, 0, 30, 0, 0, 3]) + b"flw")
        first_byte, connack = read_packet(raw)
        assert first_byte == 0x20
        topic = b"flow/q2"

        def publish(first, packet_id, payload, topic=topic):
            body = len(topic).to_bytes(2, "big") + topic
            if packet_id is not None:
                body += packet_id.to_bytes(2, "big")
            body += bytes([0]) + payload
            length = len(body)
            encoded = bytes([length]) if length < 128 else bytes([length & 0x7F | 0x80, length >> 7])
            return bytes([first]) + encoded + body

        # 1024 QoS 2 publishes never released (no PUBREL): all in flight.
        raw.sendall(b"".join(publish(0x34, i, b"q2") for i in range(1, 1025)))
        for i in range(1, 1025):
            assert read_packet(raw) == (0x50, i.to_bytes(2, "big"))  # PUBREC
        # QoS 0 still goes through, and takes no slot.
        raw.sendall(publish(0x30, None, b"zero", b"flow/zero"))
        assert watcher.inbox.get(timeout=TIMEOUT).payload == b"zero"
        # One more QoS 1 publish is one too many.
        raw.sendall(publish(0x32, 2000, b"one too many"))
        first_byte, packet = read_packet(raw)
        assert first_byte == 0xE0 and packet[0] == 0x93, (first_byte, packet)
    close(watcher)


def test_a_pubrec_with_a_failure_reason_ends_the_flow_without_pubrel(node):
    """MQTT 5 4.3.3: a PUBREC with reason 0x80 or above releases the packet id; the server
    sends no PUBREL for it and the connection goes on."""
    with socket.create_connection(("127.0.0.1", node.mqtt_port), timeout=TIMEOUT) as raw:
        raw.sendall(bytes([0x10, 0x10, 0, 4]) + b"MQTT" + bytes([5, 2, 0, 30, 0, 0, 3]) + b"rec")
        assert read_packet(raw)[0] == 0x20
        raw.sendall(bytes([0x82, 0x0A, 0, 1, 0]) + bytes([0, 4]) + b"rec/" + bytes([0x02]))  # SUBSCRIBE rec/ QoS 2
        first, body = read_packet(raw)
        assert first == 0x90 and body[-1] == 0x02
        pub = client(node)
        connect(pub, node)
        pub.publish("rec/", "x", qos=2).wait_for_publish(TIMEOUT)
        first, body = read_packet(raw)
        assert first & 0xF0 == 0x30 and (first >> 1) & 0x03 == 2
        packet_id = body[2 + body[1]:4 + body[1]]
        raw.sendall(bytes([0x50, 0x03]) + packet_id + bytes([0x80]))  # PUBREC, unspecified error
        raw.sendall(bytes([0xC0, 0x00]))  # PINGREQ: the next packet must be PINGRESP, not PUBREL
        assert read_packet(raw) == (0xD0, b"")
        close(pub)


def test_acknowledged_publishes_survive_node_sigkill(data_dir):
    first = Node(data_dir, ["--mqtt-allow-anonymous"])
    pub = client(first)
    connect(pub, first)
    for i in range(50):
        pub.publish("durable/t", f"d{i}", qos=1).wait_for_publish(TIMEOUT)  # PUBACK came: on disk
    pub.loop_stop()
    first.stop(signal.SIGKILL)
    second = Node(data_dir, ["--mqtt-allow-anonymous"])
    try:
        listing = subprocess.run([os.path.join(BIN, "strata"), "--node", second.journal, "shard", "list"],
                                 capture_output=True, text=True, check=True).stdout
        # "durable" is a legal topic name: the messages are records of registry topic "durable".
        total = sum(int(line.split("\t")[2]) for line in listing.splitlines())
        assert total == 50
        assert any(line.startswith("kafka/durable/0\t") for line in listing.splitlines())
        values = []
        for line in listing.splitlines():
            shard = line.split("\t")[0]
            out = subprocess.run([os.path.join(BIN, "strata"), "--node", second.journal, "consume", shard],
                                 capture_output=True, text=True, check=True).stdout
            values += out.splitlines()
        assert values == [f"d{i}" for i in range(50)]
    finally:
        second.stop()


def resumed(served, cid):
    """The 5.0 persistent session `cid` connected again; it must have been there."""
    again = persistent_client(served, cid, mqtt.MQTTv5)
    flags, _ = connect_persistent(again, served, mqtt.MQTTv5)
    assert flags.session_present
    return again


def leave_backlog(served, cid, subscription, topics):
    """A 5.0 persistent session subscribed to `subscription` and disconnected, then one QoS 1
    message per topic in `topics` (payloads m0, m1, …) for it to find: returns the publisher,
    its publishes in `sent`."""
    first = persistent_client(served, cid, mqtt.MQTTv5)
    connect_persistent(first, served, mqtt.MQTTv5)
    subscribe(first, subscription, qos=1)
    close(first)
    pub = client(served)
    connect(pub, served)
    pub.sent = [pub.publish(topic, f"m{i}", qos=1) for i, topic in enumerate(topics)]
    return pub


def persistent_client(node, client_id, version=mqtt.MQTTv311):
    if version == mqtt.MQTTv5:
        return client(node, version, client_id=client_id)
    return client(node, version, client_id=client_id, clean_session=False)


def connect_persistent(c, node, version=mqtt.MQTTv311, expiry=3600):
    if version == mqtt.MQTTv5:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = expiry
        connected = queue.Queue()
        c.on_connect = lambda _c, _u, flags, reason, p: connected.put((flags, reason))
        c.connect("127.0.0.1", node.mqtt_port, keepalive=30, clean_start=False, properties=props)
        c.loop_start()
        return connected.get(timeout=TIMEOUT)
    connected = queue.Queue()
    c.on_connect = lambda _c, _u, flags, reason, p: connected.put((flags, reason))
    c.connect("127.0.0.1", node.mqtt_port, keepalive=30)
    c.loop_start()
    return connected.get(timeout=TIMEOUT)


@pytest.mark.parametrize("version", [mqtt.MQTTv311, mqtt.MQTTv5])
def test_persistent_session_keeps_subscriptions_and_offline_messages(node, version):
    cid = f"persist-{uuid.uuid4().hex[:6]}"
    first = persistent_client(node, cid, version)
    flags, _ = connect_persistent(first, node, version)
    assert not flags.session_present
    subscribe(first, "offline/#", qos=1)
    close(first)
    pub = client(node)
    connect(pub, node)
    for i in range(5):
        pub.publish(f"offline/{i}", f"o{i}", qos=1).wait_for_publish(TIMEOUT)
    again = persistent_client(node, cid, version)
    flags, _ = connect_persistent(again, node, version)
    assert flags.session_present
    got = sorted(again.inbox.get(timeout=TIMEOUT).payload.decode() for _ in range(5))
    assert got == [f"o{i}" for i in range(5)]
    # Still subscribed without subscribing again: live messages arrive too.
    pub.publish("offline/live", "now", qos=1).wait_for_publish(TIMEOUT)
    assert again.inbox.get(timeout=TIMEOUT).payload == b"now"
    close(pub, again)


def test_clean_start_and_zero_expiry_keep_nothing(node):
    cid = f"clean-{uuid.uuid4().hex[:6]}"
    c = persistent_client(node, cid, mqtt.MQTTv5)
    connect_persistent(c, node, mqtt.MQTTv5, expiry=0)
    subscribe(c, "x/#")
    close(c)
    again = persistent_client(node, cid, mqtt.MQTTv5)
    flags, _ = connect_persistent(again, node, mqtt.MQTTv5)
    assert not flags.session_present
    close(again)


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGKILL])
def test_session_survives_journal_node_restart(data_dir, stop_signal):
    first = Node(data_dir, ["--mqtt-allow-anonymous"])
    cid = "restart-me"
    c = persistent_client(first, cid)
    connect_persistent(c, first)
    subscribe(c, "r/#", qos=1)
    close(c)
    time.sleep(0.3)  # the session record is written when the gateway sees the connection end
    first.stop(stop_signal)
    second = Node(data_dir, ["--mqtt-allow-anonymous"])
    try:
        pub = client(second)
        connect(pub, second)
        pub.publish("r/1", "after-restart", qos=1).wait_for_publish(TIMEOUT)
        again = persistent_client(second, cid)
        flags, _ = connect_persistent(again, second)
        assert flags.session_present
        assert again.inbox.get(timeout=TIMEOUT).payload == b"after-restart"
        close(pub, again)
    finally:
        second.stop()


def drain(members, total, timeout=TIMEOUT * 2):
    """Payloads each member received until `total` arrived in all (or the time ran out), then
    whatever else comes within a second (a message delivered twice would)."""
    got = [[] for _ in members]
    deadline = time.monotonic() + timeout
    while sum(map(len, got)) < total and time.monotonic() < deadline:
        for i, m in enumerate(members):
            try:
                got[i].append(m.inbox.get(timeout=0.05).payload.decode())
            except queue.Empty:
                pass
    time.sleep(1)
    for i, m in enumerate(members):
        while not m.inbox.empty():
            got[i].append(m.inbox.get().payload.decode())
    return got


@pytest.mark.parametrize("version", [mqtt.MQTTv311, mqtt.MQTTv5])
def test_shared_subscription_delivers_each_message_once_per_group(node, version):
    members = [client(node, version) for _ in range(2)]
    for m in members:
        connect(m, node)
        assert subscribe(m, "$share/workers/jobs/#", qos=1)[0] == 1
    plain = client(node, version)
    connect(plain, node)
    subscribe(plain, "jobs/#", qos=1)
    pub = client(node)
    connect(pub, node)
    for i in range(20):
        pub.publish(f"jobs/{i}", f"j{i}", qos=1).wait_for_publish(TIMEOUT)
    assert sorted(plain.inbox.get(timeout=TIMEOUT).payload.decode() for _ in range(20)) == sorted(f"j{i}" for i in range(20))
    per_member = drain(members, 20)
    shared = [x for got in per_member for x in got]
    assert sorted(shared) == sorted(f"j{i}" for i in range(20))  # each exactly once across the group
    # The group is a queue in the journal: its state in the CLI, the admin API and /metrics.
    name = "mqtt/default/$share/workers/jobs/#"
    listing = subprocess.run([os.path.join(BIN, "strata"), "--node", node.journal, "queue", "list"],
                             capture_output=True, text=True, timeout=TIMEOUT, check=True).stdout
    assert f"{name}\t0\t0\t0\t0\t0\t0" in listing.splitlines()  # all settled, nothing in flight
    with urllib.request.urlopen(f"http://{node.http}/admin/queues/" + urllib.parse.quote(name, safe="")) as answer:
        status = json.load(answer)
    assert status["name"] == name and status["depth"] == 0 and status["sources"]
    assert metric(node, "strata_queue_in_flight", queue=name) == 0
    close(*members, plain, pub)
    for command in ("describe", "delete"):
        missing = subprocess.run([os.path.join(BIN, "strata"), "--node", node.journal, "queue", command, "nope"],
                                 capture_output=True, text=True, timeout=TIMEOUT)
        assert missing.returncode == 4, command


VICTIM = r"""
import sys
import paho.mqtt.client as mqtt
port, cid, session, filt, qos = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv311,
                clean_session=session == "clean", manual_ack=True)  # acknowledges nothing
c.on_connect = lambda c, u, f, r, p: c.subscribe(filt, qos=qos)
c.on_subscribe = lambda c, u, mid, codes, p: print("subscribed", flush=True)
c.on_message = lambda c, u, m: print(m.payload.decode(), flush=True)
c.connect("127.0.0.1", port, keepalive=30)
c.loop_forever()
"""


class Victim:
    """A shared-subscription member in its own process that never acknowledges, to be SIGKILLed."""

    def __init__(self, port, client_id, session, filt, qos=1):
        import sys
        import threading
        self.process = subprocess.Popen([sys.executable, "-c", VICTIM, str(port), client_id, session, filt, str(qos)],
                                        stdout=subprocess.PIPE, text=True)
        self.lines = queue.Queue()
        threading.Thread(target=lambda: [self.lines.put(line.strip()) for line in self.process.stdout],
                         daemon=True).start()
        assert self.lines.get(timeout=TIMEOUT) == "subscribed"

    def received(self, count):
        return [self.lines.get(timeout=TIMEOUT * 2) for _ in range(count)]

    def kill(self):
        self.process.kill()
        self.process.wait(timeout=TIMEOUT)


def test_shared_member_killed_gets_its_messages_on_resume(node):
    """[MQTT-4.8.2-4]: what a member with a persistent session had not acknowledged when it died
    is completed to it when it resumes (DUP=1), and never goes to another member meanwhile."""
    filt = "$share/k/kill/#"
    cid = f"victim-{uuid.uuid4().hex[:6]}"
    victim = Victim(node.mqtt_port, cid, "persistent", filt)
    pub = client(node)
    connect(pub, node)
    sent = [f"k{i}" for i in range(80)]
    for i, payload in enumerate(sent):
        pub.publish(f"kill/{i}", payload, qos=1).wait_for_publish(TIMEOUT)
    # The only member, acknowledging nothing: it holds as many as its window (64), the rest wait.
    first = victim.received(64)
    assert set(first) <= set(sent)
    other = client(node)
    connect(other, node)
    subscribe(other, filt)
    time.sleep(1.5)  # the victim's session checkpoint (every second) holds its unacknowledged messages
    victim.kill()
    later = [f"late{i}" for i in range(10)]
    for i, payload in enumerate(later):
        pub.publish(f"kill/late/{i}", payload, qos=1).wait_for_publish(TIMEOUT)
    time.sleep(3)
    to_other = []
    while not other.inbox.empty():
        to_other.append(other.inbox.get().payload.decode())
    assert not set(to_other) & set(first)  # the victim's messages stay with its session
    back = persistent_client(node, cid)
    flags, _ = connect_persistent(back, node)
    assert flags.session_present
    resumed = {}
    deadline = time.monotonic() + TIMEOUT * 2
    while not set(first) <= set(resumed) and time.monotonic() < deadline:
        try:
            message = back.inbox.get(timeout=0.1)
        except queue.Empty:
            continue
        resumed[message.payload.decode()] = message.dup
    assert set(first) <= set(resumed)
    assert all(resumed[payload] for payload in first)  # DUP=1 on redelivery
    got = drain([other, back], len(sent) + len(later) - len(to_other) - len(resumed), timeout=TIMEOUT)
    to_other += got[0]
    to_back = set(resumed) | set(got[1])
    assert not set(to_other) & to_back  # no message to two members
    assert sorted(set(to_other) | to_back) == sorted(sent + later)
    close(back, other, pub)


@pytest.mark.parametrize("redispatch", [False, True])
def test_shared_messages_of_an_ended_session_go_to_another_member(data_dir, redispatch):
    """When a member's session ends (here: a clean session whose client died) its unacknowledged
    QoS 1 messages go to another member; a QoS 2 one it was sent does not ([MQTT-4.8.2-5]) and is
    counted. With redispatch the group owns them: a persistent member's go over as soon as its
    connection ends, QoS 2 too."""
    extra = ["--mqtt-allow-anonymous"] + (["--mqtt-shared-redispatch"] if redispatch else [])
    node = Node(data_dir, extra)
    try:
        filt = "$share/e/ended/#"
        victim = Victim(node.mqtt_port, f"v-{uuid.uuid4().hex[:6]}", "persistent" if redispatch else "clean", filt,
                        qos=2)
        pub = client(node)
        connect(pub, node)
        qos1 = [f"one{i}" for i in range(10)]
        qos2 = [f"two{i}" for i in range(10)]
        for i in range(10):
            pub.publish(f"ended/{i}", qos1[i], qos=1).wait_for_publish(TIMEOUT)
            pub.publish(f"ended/{i}", qos2[i], qos=2).wait_for_publish(TIMEOUT)
        assert sorted(victim.received(20)) == sorted(qos1 + qos2)
        other = client(node)
        connect(other, node)
        subscribe(other, filt, qos=2)
        victim.kill()
        expected = qos1 + qos2 if redispatch else qos1
        got = drain([other], len(expected))[0]
        assert sorted(got) == sorted(expected)
        if not redispatch:
            assert metric(node, "strata_mqtt_shared_dropped_total") == 10
        close(other, pub)
    finally:
        node.stop()


@pytest.fixture
def secured(data_dir):
    """A node with a password file made by mosquitto_passwd and an ACL file."""
    passwords = os.path.join(data_dir, "passwords")
    open(passwords, "w").close()
    subprocess.run(["mosquitto_passwd", "-b", passwords, "alice", "wonderland"], check=True)
    subprocess.run(["mosquitto_passwd", "-b", passwords, "bob", "builder"], check=True)
    acl = os.path.join(data_dir, "acl")
    with open(acl, "w") as f:
        f.write("# anonymous: nothing\nuser alice\ntopic readwrite sensors/#\ntopic deny sensors/secret\n"
                "user bob\ntopic read sensors/#\npattern write clients/%u/#\n")
    started = Node(os.path.join(data_dir, "data"), ["--mqtt-passwords", passwords, "--mqtt-acl", acl])
    yield started
    started.stop()


def login(node, user, password, version=mqtt.MQTTv5):
    c = client(node, version)
    c.username_pw_set(user, password)
    return c, connect(c, node)[0]


def test_password_file_from_mosquitto_passwd(secured):
    for version in (mqtt.MQTTv311, mqtt.MQTTv5):
        c, reason = login(secured, "alice", "wonderland", version)
        assert not reason.is_failure
        close(c)
        c, reason = login(secured, "alice", "wrong", version)
        assert str(reason) == "Bad user name or password"
        c.loop_stop()
        c, reason = login(secured, "nobody", "x", version)
        assert str(reason) == "Bad user name or password"
        c.loop_stop()
    anon = client(secured)
    assert str(connect(anon, secured)[0]) == "Not authorized"
    anon.loop_stop()


def test_acl_refusals(secured):
    alice, _ = login(secured, "alice", "wonderland")
    bob, _ = login(secured, "bob", "builder")
    bob3, _ = login(secured, "bob", "builder", mqtt.MQTTv311)
    codes = subscribe(bob, "sensors/#", qos=1)
    assert [c.value for c in codes] == [1]
    assert [c.value for c in subscribe(bob, "admin/#", qos=1)] == [0x87]
    assert [c.value for c in subscribe(bob3, "admin/#", qos=1)] == [0x80]
    # bob may not write sensors: 5.0 gets PUBACK 0x87 and nothing is delivered.
    acked = queue.Queue()
    bob.on_publish = lambda _c, _u, mid, reason, props: acked.put(reason)
    bob.publish("sensors/1", "fake", qos=1)
    assert acked.get(timeout=TIMEOUT).value == 0x87
    # alice writes sensors; the denied topic never reaches anyone.
    alice.publish("sensors/secret", "hidden", qos=1).wait_for_publish(TIMEOUT)
    alice.publish("sensors/1", "21.5", qos=1).wait_for_publish(TIMEOUT)
    assert bob.inbox.get(timeout=TIMEOUT).payload == b"21.5"
    with pytest.raises(queue.Empty):
        bob.inbox.get(timeout=1)
    # The pattern rule lets bob write under his own user name.
    watcher = alice
    subscribe(watcher, "sensors/#")
    bob.publish("clients/bob/status", "ok", qos=1)
    assert acked.get(timeout=TIMEOUT).value == 0
    close(alice, bob, bob3)


def test_a_session_belongs_to_its_user(secured):
    """Another user cannot resume, end or take over a session by its client id (issue 17): bob's
    CONNECT with alice's client id is refused (5.0 0x87, 3.1.1 code 5) while her session is
    connected and while it is stored, and what waits in it stays hers."""
    cid = f"owned-{uuid.uuid4().hex[:6]}"
    alice = persistent_client(secured, cid, mqtt.MQTTv5)
    alice.username_pw_set("alice", "wonderland")
    flags, reason = connect_persistent(alice, secured, mqtt.MQTTv5)
    assert not reason.is_failure
    subscribe(alice, "sensors/#", qos=1)

    def bob_takes_over(version, clean):
        bob = client(secured, version, client_id=cid, **({} if version == mqtt.MQTTv5 else {"clean_session": clean}))
        bob.username_pw_set("bob", "builder")
        connected = queue.Queue()
        bob.on_connect = lambda _c, _u, _flags, reason, _p: connected.put(reason)
        if version == mqtt.MQTTv5:
            bob.connect("127.0.0.1", secured.mqtt_port, keepalive=30, clean_start=clean)
        else:
            bob.connect("127.0.0.1", secured.mqtt_port, keepalive=30)
        bob.loop_start()
        reason = connected.get(timeout=TIMEOUT)
        bob.loop_stop()
        return reason

    # While alice is connected: refused, and her connection is not taken over.
    assert str(bob_takes_over(mqtt.MQTTv5, False)) == "Not authorized"
    assert str(bob_takes_over(mqtt.MQTTv311, True)) == "Not authorized"
    close(alice)
    time.sleep(0.5)
    publisher, _ = login(secured, "alice", "wonderland")
    publisher.publish("sensors/waiting", "for alice", qos=1).wait_for_publish(TIMEOUT)
    # While her session is stored: refused with clean start 0 (resume) and 1 (discard).
    assert str(bob_takes_over(mqtt.MQTTv5, False)) == "Not authorized"
    assert str(bob_takes_over(mqtt.MQTTv5, True)) == "Not authorized"
    assert str(bob_takes_over(mqtt.MQTTv311, False)) == "Not authorized"
    # alice resumes: her session is there, with the message that waited in it.
    again = persistent_client(secured, cid, mqtt.MQTTv5)
    again.username_pw_set("alice", "wonderland")
    flags, reason = connect_persistent(again, secured, mqtt.MQTTv5)
    assert flags.session_present and not reason.is_failure
    assert again.inbox.get(timeout=TIMEOUT).payload == b"for alice"
    close(again, publisher)


def test_no_suback_for_a_subscription_whose_session_record_is_not_stored(data_dir):
    """SUBACK (and UNSUBACK) only after the persistent session's record is stored (issue 17):
    when the journal refuses the record (its metadata reserve is reached) the client gets
    DISCONNECT 0x80 instead, and the subscription is not part of the session it resumes."""
    os.makedirs(data_dir, exist_ok=True)
    stat = os.statvfs(data_dir)
    # Key-value writes are refused below a quarter of the reserve: once 512 MiB more are used.
    reserve = 4 * (stat.f_bavail * stat.f_frsize - (512 << 20))
    config = os.path.join(data_dir, "node.toml")
    with open(config, "w") as f:
        f.write(f"[journal]\nmin_free_disk_bytes = {reserve}\n")
    started = Node(os.path.join(data_dir, "node"), ["--config", config, "--mqtt-allow-anonymous"])
    ballast = os.path.join(data_dir, "ballast")
    cid = f"unstored-{uuid.uuid4().hex[:6]}"
    try:
        c = persistent_client(started, cid, mqtt.MQTTv5)
        flags, reason = connect_persistent(c, started, mqtt.MQTTv5)
        assert not reason.is_failure
        assert [code.value for code in subscribe(c, "kept/#")] == [1]
        ended = queue.Queue()
        c.on_disconnect = lambda _c, _u, _flags, reason, _p: ended.put(reason)
        acked = queue.Queue()
        c.on_subscribe = lambda _c, _u, mid, codes, props: acked.put(codes)
        subprocess.run(["fallocate", "-l", str(1 << 30), ballast], check=True)
        c.subscribe("lost/#", qos=1)
        assert ended.get(timeout=TIMEOUT).value == 0x80
        assert acked.empty()
        c.loop_stop()
        os.remove(ballast)
        # The node again without the reserve (which refuses appends here), on the same data.
        started.stop()
        started = Node(os.path.join(data_dir, "node"), ["--mqtt-allow-anonymous"])
        again = resumed(started, cid)
        pub = client(started)
        connect(pub, started)
        pub.publish("lost/1", "no", qos=1).wait_for_publish(TIMEOUT)
        pub.publish("kept/1", "yes", qos=1).wait_for_publish(TIMEOUT)
        assert again.inbox.get(timeout=TIMEOUT).payload == b"yes"
        with pytest.raises(queue.Empty):
            again.inbox.get(timeout=1)
        close(again, pub)
    finally:
        if os.path.exists(ballast):
            os.remove(ballast)
        started.stop()


def test_a_subscription_made_during_a_replay_is_stored_before_its_suback(data_dir):
    """A SUBSCRIBE while a resumed session's replay runs: its SUBACK comes only after the
    stored record has the subscription (issue 17), so a SIGKILLed gateway's session has it."""
    node = Node(data_dir, [], listeners=2)
    gateway = Gateway(node.journal, ["--allow-anonymous", "--max-queued-messages", "4"])
    cid = f"replaying-{uuid.uuid4().hex[:6]}"
    try:
        pub = leave_backlog(gateway, cid, "backlog/#", [f"backlog/{i}" for i in range(40)])
        for message in pub.sent:
            message.wait_for_publish(TIMEOUT)
        # Receive maximum 1: with no PUBACK from here the replay stops after a few messages
        # and stays under way.
        raw, present = raw_persistent_connect(gateway.mqtt_port, cid, receive_maximum=1)
        with raw:
            assert present
            topic = b"extra/#"
            sub = bytes([0, 7, 0]) + len(topic).to_bytes(2, "big") + topic + bytes([0x01])
            raw.sendall(bytes([0x82, len(sub)]) + sub)
            while True:
                first_byte, packet = read_packet(raw)
                if first_byte >> 4 == 9:
                    assert packet[:2] == bytes([0, 7]) and packet[-1] == 1
                    break
                assert first_byte >> 4 == 3  # the replay's PUBLISHes, not acknowledged
            gateway.stop(signal.SIGKILL)
        pub.loop_stop()
        gateway = Gateway(node.journal, ["--allow-anonymous"])
        again = resumed(gateway, cid)
        pub = client(gateway)
        connect(pub, gateway)
        pub.publish("extra/1", "subscribed", qos=1).wait_for_publish(TIMEOUT)
        deadline = time.monotonic() + TIMEOUT
        topics = []
        while "extra/1" not in topics and time.monotonic() < deadline:
            topics.append(again.inbox.get(timeout=TIMEOUT).topic)
        assert "extra/1" in topics, topics
        close(again, pub)
    finally:
        gateway.stop()
        node.stop()


def raw_persistent_connect(port, cid, receive_maximum=None):
    """A raw 5.0 CONNECT with clean start 0 and a session expiry of an hour (and the receive
    maximum, if given); returns the socket and whether the session was present."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    props = bytes([0x11, 0, 0, 0x0E, 0x10])
    if receive_maximum is not None:
        props += bytes([0x21]) + receive_maximum.to_bytes(2, "big")
    body = bytes([0, 4]) + b"MQTT" + bytes([5, 0x00, 0, 30, len(props)]) + props
    body += len(cid).to_bytes(2, "big") + cid.encode()
    raw.sendall(bytes([0x10, len(body)]) + body)
    first_byte, connack = read_packet(raw)
    assert first_byte == 0x20 and connack[1] == 0, connack
    return raw, connack[0] == 1


def test_qos2_exactly_once_across_a_gateway_sigkill(data_dir):
    """QoS 2 across a SIGKILLed gateway (issue 17): an inbound packet id is stored before
    PUBREC, so the DUP the client resends to the restarted gateway is not stored twice; an
    outbound message the client acknowledged with PUBREC is stored as released before PUBREL,
    so the restarted gateway sends PUBREL again, not the message as new."""
    node = Node(data_dir, [], listeners=2)
    gateway = Gateway(node.journal, ["--allow-anonymous"])
    try:
        watcher = client(gateway)
        connect(watcher, gateway)
        subscribe(watcher, "once/#", qos=2)
        # Inbound: PUBLISH QoS 2 id 5, PUBREC, SIGKILL at once (before the 1 s checkpoint).
        sender = f"sender-{uuid.uuid4().hex[:6]}"
        raw, _ = raw_persistent_connect(gateway.mqtt_port, sender)
        topic = b"once/in"
        publish = len(topic).to_bytes(2, "big") + topic + bytes([0, 5, 0]) + b"exactly"
        raw.sendall(bytes([0x34, len(publish)]) + publish)
        assert read_packet(raw) == (0x50, bytes([0, 5]))
        # Outbound: a QoS 2 subscriber's PUBREC, then PUBREL from the gateway, SIGKILL at once.
        receiver = f"receiver-{uuid.uuid4().hex[:6]}"
        sub_raw, _ = raw_persistent_connect(gateway.mqtt_port, receiver)
        filt = b"out/#"
        sub = bytes([0, 1, 0]) + len(filt).to_bytes(2, "big") + filt + bytes([0x02])
        sub_raw.sendall(bytes([0x82, len(sub)]) + sub)
        assert read_packet(sub_raw)[0] == 0x90
        watcher.publish("out/1", "to receiver", qos=2).wait_for_publish(TIMEOUT)
        first_byte, packet = read_packet(sub_raw)
        assert first_byte >> 4 == 3 and (first_byte >> 1) & 3 == 2
        out_id = packet[2 + int.from_bytes(packet[:2], "big"):][:2]
        sub_raw.sendall(bytes([0x50, 2]) + out_id)  # PUBREC
        assert read_packet(sub_raw) == (0x62, out_id)  # PUBREL
        gateway.stop(signal.SIGKILL)
        raw.close()
        sub_raw.close()
        watcher.loop_stop()
        gateway = Gateway(node.journal, ["--allow-anonymous"])
        watcher = client(gateway)
        connect(watcher, gateway)
        subscribe(watcher, "once/#", qos=2)
        raw, present = raw_persistent_connect(gateway.mqtt_port, sender)
        assert present
        raw.sendall(bytes([0x3C, len(publish)]) + publish)  # the same PUBLISH, DUP set
        assert read_packet(raw) == (0x50, bytes([0, 5]))
        raw.sendall(bytes([0x62, 2, 0, 5]))  # PUBREL
        assert read_packet(raw) == (0x70, bytes([0, 5]))  # PUBCOMP
        sub_raw, present = raw_persistent_connect(gateway.mqtt_port, receiver)
        assert present
        assert read_packet(sub_raw) == (0x62, out_id)  # PUBREL again, not the PUBLISH
        sub_raw.sendall(bytes([0x70, 2]) + out_id)  # PUBCOMP
        # The message stored before the crash is the only one: a later one comes next.
        probe = client(gateway)
        connect(probe, gateway)
        probe.publish("once/probe", "after", qos=1).wait_for_publish(TIMEOUT)
        seen = []
        while not seen or seen[-1] != "once/probe":
            seen.append(watcher.inbox.get(timeout=TIMEOUT).topic)
        assert seen == ["once/probe"], seen
        raw.close()
        sub_raw.close()
        close(watcher, probe)
    finally:
        gateway.stop()
        node.stop()


def test_v5_connack_properties_and_shutdown_reason(data_dir):
    started = Node(data_dir, ["--mqtt-allow-anonymous"])
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="", protocol=mqtt.MQTTv5)
    props = Properties(PacketTypes.CONNECT)
    props.RequestResponseInformation = 1
    connected = queue.Queue()
    c.on_connect = lambda _c, _u, flags, reason, p: connected.put(p)
    c.connect("127.0.0.1", started.mqtt_port, keepalive=30, properties=props)
    c.loop_start()
    connack = connected.get(timeout=TIMEOUT)
    assigned = connack.AssignedClientIdentifier
    assert assigned.startswith("strata-")
    assert connack.ResponseInformation == f"responses/{assigned}"
    assert connack.ReceiveMaximum == 1024 and connack.SharedSubscriptionAvailable == 1
    gone = queue.Queue()
    c.on_disconnect = lambda _c, _u, flags, reason, p: gone.put(reason)
    started.stop(signal.SIGTERM)
    assert str(gone.get(timeout=TIMEOUT)) == "Server shutting down"
    c.loop_stop()


def test_will_delay_waits_and_is_cancelled_by_a_reconnect(node):
    watcher = client(node)
    connect(watcher, node)
    subscribe(watcher, "delayed/#")

    def dropped_with_will(cid, topic):
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
        will_props = Properties(PacketTypes.WILLMESSAGE)
        will_props.WillDelayInterval = 2
        c.will_set(topic, "late", qos=1, properties=will_props)
        connect_props = Properties(PacketTypes.CONNECT)
        connect_props.SessionExpiryInterval = 60
        connected = queue.Queue()
        c.on_connect = lambda *_: connected.put(True)
        c.connect("127.0.0.1", node.mqtt_port, keepalive=30, clean_start=True, properties=connect_props)
        c.loop_start()
        connected.get(timeout=TIMEOUT)
        c.loop_stop()
        c.socket().close()

    dropped_with_will("comes-back", "delayed/back")
    time.sleep(0.5)
    back = client(node, mqtt.MQTTv5, client_id="comes-back")
    connect(back, node)
    dropped_with_will("stays-away", "delayed/away")
    started = time.monotonic()
    message = watcher.inbox.get(timeout=TIMEOUT)
    assert message.topic == "delayed/away"  # the reconnected client's will never came
    assert time.monotonic() - started >= 1.5
    with pytest.raises(queue.Empty):
        watcher.inbox.get(timeout=2.5)
    close(watcher, back)


def test_a_delayed_will_is_not_sent_when_a_half_open_connection_is_taken_over(node):
    """The mobile client's case: its old connection is still open (half-open) when it connects
    again; the takeover closes the old one, and its delayed will must not be sent
    [MQTT-3.1.3-9], however soon after the takeover the old connection's close runs."""
    watcher = client(node)
    connect(watcher, node)
    subscribe(watcher, "halfopen/#")
    old = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="half-open", protocol=mqtt.MQTTv5)
    will_props = Properties(PacketTypes.WILLMESSAGE)
    will_props.WillDelayInterval = 2
    old.will_set("halfopen/will", "late", qos=1, properties=will_props)
    connect_props = Properties(PacketTypes.CONNECT)
    connect_props.SessionExpiryInterval = 60
    connected = queue.Queue()
    old.on_connect = lambda *_: connected.put(True)
    old.connect("127.0.0.1", node.mqtt_port, keepalive=30, clean_start=True, properties=connect_props)
    old.loop_start()
    connected.get(timeout=TIMEOUT)
    old.loop_stop()  # the socket stays open, unanswered: half-open
    back = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="half-open", protocol=mqtt.MQTTv5)
    back_connected = queue.Queue()
    back.on_connect = lambda client, userdata, flags, reason, properties: back_connected.put(reason)
    back.connect("127.0.0.1", node.mqtt_port, keepalive=30, clean_start=False, properties=connect_props)
    back.loop_start()
    assert not back_connected.get(timeout=TIMEOUT).is_failure
    with pytest.raises(queue.Empty):
        watcher.inbox.get(timeout=3.5)
    old.socket().close()
    back.disconnect()
    back.loop_stop()
    close(watcher)


def test_mqtt_over_websocket(data_dir):
    started = Node(data_dir, ["--mqtt-allow-anonymous", "--mqtt-ws-listen", "127.0.0.1:0"], listeners=4)
    try:
        ws_port = int(started.listeners["mqtt-ws"].rsplit(":", 1)[1])
        for version in (mqtt.MQTTv311, mqtt.MQTTv5):
            ws = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"ws-{uuid.uuid4().hex[:6]}",
                             protocol=version, transport="websockets")
            ws.ws_set_options(path="/mqtt")
            ws.inbox = queue.Queue()
            ws.on_message = lambda _c, _u, m, ws=ws: ws.inbox.put(m)
            connected = queue.Queue()
            ws.on_connect = lambda _c, _u, _f, reason, _p: connected.put(reason)
            ws.connect("127.0.0.1", ws_port, keepalive=30)
            ws.loop_start()
            assert not connected.get(timeout=TIMEOUT).is_failure
            subscribe(ws, "web/#", qos=1)
            tcp = client(started)
            connect(tcp, started)
            tcp.publish("web/1", "from-tcp", qos=1).wait_for_publish(TIMEOUT)  # TCP in, WebSocket out
            assert ws.inbox.get(timeout=TIMEOUT).payload == b"from-tcp"
            subscribe(tcp, "back/#", qos=1)
            ws.publish("back/1", "from-ws", qos=1).wait_for_publish(TIMEOUT)  # and the other way
            assert tcp.inbox.get(timeout=TIMEOUT).payload == b"from-ws"
            close(ws, tcp)
    finally:
        started.stop()


class Gateway(GatewayProcess):
    """mqtt-gateway as its own process, storing everything in a journal-node through the journal protocol."""

    def __init__(self, journal, extra=()):
        super().__init__("mqtt-gateway", "mqtt", journal, extra)
        self.mqtt_port = int(self.address.rsplit(":", 1)[1])


def test_standalone_gateway_process_and_its_restart(data_dir):
    node = Node(data_dir, [], listeners=2)  # journal-node alone; the MQTT gateway is a separate process
    gateway = Gateway(node.journal, ["--allow-anonymous"])
    try:
        cid = "standalone-persistent"
        sub = persistent_client(gateway, cid)
        connect_persistent(sub, gateway)
        subscribe(sub, "alone/#", qos=1)
        pub = client(gateway)
        connect(pub, gateway)
        pub.publish("alone/1", "live", qos=1).wait_for_publish(TIMEOUT)
        assert sub.inbox.get(timeout=TIMEOUT).payload == b"live"
        close(sub)
        pub.publish("alone/2", "while-away", qos=1).wait_for_publish(TIMEOUT)
        pub.loop_stop()
        time.sleep(0.3)
        gateway.stop(signal.SIGKILL)  # the gateway holds no state of its own
        gateway = Gateway(node.journal, ["--allow-anonymous"])
        again = persistent_client(gateway, cid)
        flags, _ = connect_persistent(again, gateway)
        assert flags.session_present
        assert again.inbox.get(timeout=TIMEOUT).payload == b"while-away"
        close(again)
    finally:
        gateway.stop()
        node.stop()


def test_connected_session_survives_gateway_sigkill(data_dir):
    """A persistent session is checkpointed while connected: a SIGKILLed gateway loses neither
    its subscription nor its acknowledgements (what it acknowledged is not delivered again)."""
    node = Node(data_dir, [], listeners=2)
    gateway = Gateway(node.journal, ["--allow-anonymous"])
    try:
        for version in (mqtt.MQTTv311, mqtt.MQTTv5):
            cid = f"crash-{uuid.uuid4().hex[:6]}"
            sub = persistent_client(gateway, cid, version)
            flags, _ = connect_persistent(sub, gateway, version)
            assert not flags.session_present
            subscribe(sub, "crash/#", qos=1)
            pub = client(gateway)
            connect(pub, gateway)
            for i in range(5):
                pub.publish(f"crash/{i}", f"c{i}", qos=1).wait_for_publish(TIMEOUT)
            assert sorted(sub.inbox.get(timeout=TIMEOUT).payload for _ in range(5)) == [f"c{i}".encode() for i in range(5)]
            time.sleep(1.5)  # a checkpoint interval (1 s) after the acknowledgements
            gateway.stop(signal.SIGKILL)  # never disconnected: no record written at a disconnect
            for c in (sub, pub):
                c.loop_stop()
            gateway = Gateway(node.journal, ["--allow-anonymous"])
            pub = client(gateway)
            connect(pub, gateway)
            pub.publish("crash/after", "after", qos=1).wait_for_publish(TIMEOUT)
            again = persistent_client(gateway, cid, version)
            flags, _ = connect_persistent(again, gateway, version)
            assert flags.session_present
            assert again.inbox.get(timeout=TIMEOUT).payload == b"after"
            with pytest.raises(queue.Empty):
                extra = again.inbox.get(timeout=1)
                pytest.fail(f"acknowledged message delivered again: {extra.payload!r}")
            close(again, pub)
    finally:
        gateway.stop()
        node.stop()


@pytest.fixture
def certificate(data_dir):
    cert, key = os.path.join(data_dir, "cert.pem"), os.path.join(data_dir, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True)
    return cert, key


def test_tls_on_tcp_and_websocket_listeners(data_dir, certificate):
    cert, key = certificate
    started = Node(os.path.join(data_dir, "node"), ["--mqtt-allow-anonymous", "--mqtt-ws-listen", "127.0.0.1:0",
                                                    "--mqtt-tls-cert", cert, "--mqtt-tls-key", key], listeners=4)
    try:
        ws_port = int(started.listeners["mqtt-ws"].rsplit(":", 1)[1])
        sub = client(started, mqtt.MQTTv5)
        sub.tls_set(ca_certs=cert)  # verifies the chain and the host name (IP SAN)
        assert not connect(sub, started).__getitem__(0).is_failure
        subscribe(sub, "tls/#", qos=1)
        for transport, port in (("tcp", started.mqtt_port), ("websockets", ws_port)):
            pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"tls-{transport}", transport=transport)
            pub.tls_set(ca_certs=cert)
            pub.connect("127.0.0.1", port, keepalive=30)
            pub.loop_start()
            pub.publish("tls/" + transport, transport, qos=1).wait_for_publish(TIMEOUT)
            assert sub.inbox.get(timeout=TIMEOUT).payload == transport.encode()
            close(pub)
        # mosquitto's own clients over TLS (--insecure skips only the host name check).
        out = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(started.mqtt_port), "--cafile", cert,
                                "--insecure", "-t", "tls/mosq", "-C", "1", "-W", "10", "-q", "1"],
                               stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)
        subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(started.mqtt_port), "--cafile", cert,
                        "--insecure", "-t", "tls/mosq", "-m", "via-mosquitto", "-q", "1"], check=True, timeout=10)
        assert out.communicate(timeout=15)[0].strip() == "via-mosquitto"
        # A plaintext client on a TLS listener gets no CONNACK, and the listener goes on serving.
        with socket.create_connection(("127.0.0.1", started.mqtt_port), timeout=5) as raw:
            raw.sendall(bytes([0x10, 0x0C, 0x00, 0x04]) + b"MQTT" + bytes([0x04, 0x02, 0x00, 0x1E, 0x00, 0x00]))
            answer = raw.recv(64)
            assert not answer.startswith(b"\x20\x02")
        close(sub)
    finally:
        started.stop()


def test_large_offline_backlog_is_replayed_in_order_with_bounded_queues(data_dir):
    """300 messages wait for a session whose gateway queues at most 20 per subscriber: the
    replay goes as fast as the client acknowledges, live messages published during the replay
    follow in order, nothing is lost or doubled."""
    node = Node(data_dir, [], listeners=2)
    gateway = Gateway(node.journal, ["--allow-anonymous", "--max-queued-messages", "20"])
    try:
        cid = "backlog-" + uuid.uuid4().hex[:6]
        pub = leave_backlog(gateway, cid, "backlog/t", ["backlog/t"] * 301)
        pub.sent[-1].wait_for_publish(TIMEOUT)
        again = persistent_client(gateway, cid, mqtt.MQTTv5)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        props.ReceiveMaximum = 5  # 5 in flight, the rest waits in the gateway's bounded queue
        connected = queue.Queue()
        again.on_connect = lambda _c, _u, flags, reason, p: connected.put(flags)
        again.connect("127.0.0.1", gateway.mqtt_port, keepalive=30, clean_start=False, properties=props)
        again.loop_start()
        assert connected.get(timeout=TIMEOUT).session_present
        for i in range(301, 400):  # live, while the replay runs
            pub.publish("backlog/t", f"m{i}", qos=1)
        pub.publish("backlog/t", "m400", qos=1).wait_for_publish(TIMEOUT)
        got = [again.inbox.get(timeout=TIMEOUT).payload.decode() for _ in range(401)]
        assert got == [f"m{i}" for i in range(401)]
        with pytest.raises(queue.Empty):
            again.inbox.get(timeout=0.5)
        close(again, pub)
    finally:
        gateway.stop()
        node.stop()


def _mqtt_packet(first_byte, body):
    length, encoded = len(body), b""
    while True:
        byte, length = length % 128, length // 128
        encoded += bytes([byte | (0x80 if length else 0)])
        if not length:
            return bytes([first_byte]) + encoded + body


def _read_mqtt_packet(sock):
    first = sock.recv(1)
    assert first, "connection closed"
    length, shift = 0, 0
    while True:
        byte = sock.recv(1)[0]
        length += (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    body = b""
    while len(body) < length:
        body += sock.recv(length - len(body))
    return first[0], body


def _auth_properties(packet_type, method, data):
    props = Properties(packet_type)
    props.AuthenticationMethod = method
    props.AuthenticationData = data
    return props.pack()


def _scram_connect(port, user, password, method="SCRAM-SHA-256"):
    """MQTT 5 enhanced authentication with SCRAM-SHA-256 (no stock client here speaks it:
    paho-mqtt and mosquitto's clients do not answer AUTH packets), from a raw socket."""
    import base64, hashlib, hmac
    nonce = base64.b64encode(os.urandom(18)).decode()
    bare = f"n={user},r={nonce}"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        variable = b"\x00\x04MQTT\x05\x02\x00\x1e" + _auth_properties(PacketTypes.CONNECT, method, ("n,," + bare).encode())
        sock.sendall(_mqtt_packet(0x10, variable + b"\x00\x05scram"))
        kind, body = _read_mqtt_packet(sock)
        if kind >> 4 == 2:  # CONNACK straight away: refused
            return body[1], None
        assert kind >> 4 == 15 and body[0] == 0x18, (kind, body)
        server_props = Properties(PacketTypes.AUTH)
        server_props.unpack(body[1:])
        server_first = bytes(server_props.AuthenticationData).decode()
        fields = dict(item.split("=", 1) for item in server_first.split(","))
        salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(fields["s"]), int(fields["i"]))
        client_key = hmac.new(salted, b"Client Key", "sha256").digest()
        without_proof = f"c=biws,r={fields['r']}"
        auth_message = f"{bare},{server_first},{without_proof}".encode()
        signature = hmac.new(hashlib.sha256(client_key).digest(), auth_message, "sha256").digest()
        proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, signature))).decode()
        final = f"{without_proof},p={proof}".encode()
        sock.sendall(_mqtt_packet(0xF0, b"\x18" + _auth_properties(PacketTypes.AUTH, method, final)))
        kind, body = _read_mqtt_packet(sock)
        assert kind >> 4 == 2, kind
        if body[1] != 0:
            return body[1], None
        connack = Properties(PacketTypes.CONNACK)
        connack.unpack(body[2:])
        server_key = hmac.new(salted, b"Server Key", "sha256").digest()
        expected = "v=" + base64.b64encode(hmac.new(server_key, auth_message, "sha256").digest()).decode()
        return 0, bytes(connack.AuthenticationData).decode() == expected


def test_enhanced_authentication_with_scram(data_dir):
    users = users_file(os.path.join(data_dir, "scram-users"), ["carol"], "pa55")
    started = Node(os.path.join(data_dir, "node"), ["--mqtt-scram-users", users])  # no anonymous access
    try:
        code, server_proved = _scram_connect(started.mqtt_port, "carol", "pa55")
        assert code == 0 and server_proved  # the client checked the server's signature too
        assert _scram_connect(started.mqtt_port, "carol", "wrong")[0] == 0x87
        assert _scram_connect(started.mqtt_port, "nobody", "pa55")[0] == 0x87
        assert _scram_connect(started.mqtt_port, "carol", "pa55", method="KERBEROS")[0] == 0x8C
    finally:
        started.stop()


def test_bucket_retention_and_a_session_below_its_floor(data_dir):
    """Bucket shards have retention (7 days by default; a setting given alters existing buckets at
    start and is stored for gateways started without one), and so do the registry topics the
    gateway creates for MQTT topics. A persistent session away longer than that loses what
    retention removed, and the node counts it on /metrics."""
    buckets = [f"mqtt/default/{b}" for b in range(16)]
    first = Node(data_dir, ["--mqtt-allow-anonymous"])
    try:
        assert {shard_info(first, b)["config"].get("retentionMilliseconds") for b in buckets} == {604_800_000}
    finally:
        first.stop()
    node = Node(data_dir, ["--mqtt-allow-anonymous", "--mqtt-retention-ms", "1000"])
    try:
        assert {shard_info(node, b)["config"].get("retentionMilliseconds") for b in buckets} == {1000}
        cid = f"away-{uuid.uuid4().hex[:6]}"
        sub = persistent_client(node, cid)
        connect_persistent(sub, node)
        subscribe(sub, "gone/#", qos=1)
        subscribe(sub, "gone place/#", qos=1)  # no legal topic name: kept in a bucket shard
        close(sub)
        time.sleep(0.3)  # the session record is written when the gateway sees the connection end
        pub = client(node)
        connect(pub, node)
        for i in range(5):
            pub.publish(f"gone/{i}", f"g{i}", qos=1).wait_for_publish(TIMEOUT)
            pub.publish(f"gone place/{i}", f"p{i}", qos=1).wait_for_publish(TIMEOUT)
        shards = buckets + ["kafka/gone/0"]
        assert shard_info(node, "kafka/gone/0")["config"].get("retentionMilliseconds") == 1000
        # Maintenance (every 5 s) removes them once they are a second old.
        deadline = time.monotonic() + 20
        while any(shard_info(node, b)["startOffset"] < shard_info(node, b)["endOffset"] for b in shards):
            assert time.monotonic() < deadline, "retention did not remove the messages"
            time.sleep(0.5)
        assert metric(node, "strata_mqtt_session_retention_skips_total") == 0
        again = persistent_client(node, cid)
        flags, _ = connect_persistent(again, node)
        assert flags.session_present
        with pytest.raises(queue.Empty):
            again.inbox.get(timeout=1.5)
        assert metric(node, "strata_mqtt_session_retention_skips_total") >= 1
        assert metric(node, "strata_mqtt_session_retention_skipped_offsets_total") >= 10
        # Still subscribed: what is published now arrives.
        pub.publish("gone/live", "now", qos=1).wait_for_publish(TIMEOUT)
        assert again.inbox.get(timeout=TIMEOUT).payload == b"now"
        close(pub, again)
    finally:
        node.stop()
    # A gateway started without a setting keeps the one stored by the last gateway given one.
    third = Node(data_dir, ["--mqtt-allow-anonymous"])
    try:
        assert {shard_info(third, b)["config"].get("retentionMilliseconds") for b in buckets} == {1000}
    finally:
        third.stop()


@pytest.mark.parametrize("version", [mqtt.MQTTv311, mqtt.MQTTv5])
def test_session_taken_over_through_another_gateway_process(data_dir, version):
    """Two mqtt-gateway processes on one journal: a client that reconnects through the other
    gateway takes its session over there. The first gateway closes the old connection (5.0:
    DISCONNECT 0x8E) and stores the session before the second resumes it; nothing is
    delivered twice or lost."""
    node = Node(data_dir, [], listeners=2)
    first = Gateway(node.journal, ["--allow-anonymous"])
    second = Gateway(node.journal, ["--allow-anonymous"])
    try:
        cid = f"roamer-{uuid.uuid4().hex[:6]}"
        old = persistent_client(first, cid, version)
        reasons = queue.Queue()
        old.on_disconnect = lambda _c, _u, _flags, reason, _p: reasons.put(reason)
        connect_persistent(old, first, version)
        subscribe(old, "roam/#", qos=1)
        pub = client(second)
        connect(pub, second)
        for i in range(5):  # published through the other gateway, routed by both
            pub.publish(f"roam/{i}", f"a{i}", qos=1).wait_for_publish(TIMEOUT)
        assert sorted(old.inbox.get(timeout=TIMEOUT).payload for _ in range(5)) == [f"a{i}".encode() for i in range(5)]
        # paho sends each PUBACK as it hands the message over: give the last ones a moment to
        # reach the first gateway, or the session taken over still holds them unacknowledged
        # and the new connection rightly gets them again (seen once: a4 redelivered).
        time.sleep(0.5)
        old.reconnect_delay_set(60, 60)  # paho must not reconnect the old connection to the first gateway

        new = persistent_client(second, cid, version)
        flags, _ = connect_persistent(new, second, version)
        assert flags.session_present
        reason = reasons.get(timeout=TIMEOUT)
        if version == mqtt.MQTTv5:
            assert reason == 0x8E  # session taken over
        for i in range(5):
            pub.publish(f"roam/{i}", f"b{i}", qos=1).wait_for_publish(TIMEOUT)
        assert sorted(new.inbox.get(timeout=TIMEOUT).payload for _ in range(5)) == [f"b{i}".encode() for i in range(5)]
        with pytest.raises(queue.Empty):
            extra = new.inbox.get(timeout=1)
            pytest.fail(f"delivered twice: {extra.payload!r}")
        assert old.inbox.empty()
        old.loop_stop()
        close(new, pub)
    finally:
        first.stop()
        second.stop()
        node.stop()


def test_shared_group_across_gateways_keeps_messages_while_offline(data_dir):
    """A shared subscription is one queue in the journal: members on two gateway processes get
    each message once between them; while every member is offline (persistent sessions) the
    group's messages wait, for whichever member returns first, through either gateway."""
    node = Node(data_dir, [], listeners=2)
    first = Gateway(node.journal, ["--allow-anonymous"])
    second = Gateway(node.journal, ["--allow-anonymous"])
    try:
        filt = "$share/workers/across/#"
        a = persistent_client(first, "across-a")
        connect_persistent(a, first)
        subscribe(a, filt)
        b = persistent_client(second, "across-b", mqtt.MQTTv5)
        connect_persistent(b, second, mqtt.MQTTv5)
        subscribe(b, filt)
        pub = client(first)
        connect(pub, first)
        sent = [f"x{i}" for i in range(40)]
        for i, payload in enumerate(sent):  # the topic `across` is created by the first publish
            pub.publish(f"across/{i % 4}", payload, qos=1).wait_for_publish(TIMEOUT)
        got = drain([a, b], len(sent))
        assert sorted(got[0] + got[1]) == sorted(sent)  # once across both gateways
        close(a, b)
        late = [f"late{i}" for i in range(100)]  # more than a member's window (64)
        for i, payload in enumerate(late):  # the whole group is offline
            pub.publish(f"across/late/{i}", payload, qos=1).wait_for_publish(TIMEOUT)
        b_again = persistent_client(first, "across-b", mqtt.MQTTv5)  # back through the other gateway
        flags, _ = connect_persistent(b_again, first, mqtt.MQTTv5)
        assert flags.session_present
        a_again = persistent_client(second, "across-a")
        connect_persistent(a_again, second)
        got = drain([a_again, b_again], len(late))
        assert sorted(got[0] + got[1]) == sorted(late)
        close(a_again, b_again, pub)
    finally:
        first.stop()
        second.stop()
        node.stop()
