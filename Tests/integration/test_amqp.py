"""The AMQP 0-9-1 gateway with stock RabbitMQ clients: pika, py-amqp, kombu and Debian's
amqp-tools, against journal-node's in-process gateway and the amqp-gateway executable
(docs/amqp.md)."""
import contextlib
import os
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time

import amqp
import kombu
import pika
import pytest

from conftest import GatewayProcess, Node, read_until_closed, users_file


def port_of(address):
    return int(address.rsplit(":", 1)[1])


@pytest.fixture
def broker(data_dir):
    node = Node(data_dir, ["--amqp-allow-anonymous"], gateways=("amqp", "kafka"))
    node.amqp_port = port_of(node.listeners["amqp"])
    yield node
    node.stop()


def connect(port, user="guest", password="guest", vhost="/", **options):
    return pika.BlockingConnection(pika.ConnectionParameters(
        host="127.0.0.1", port=port, virtual_host=vhost, credentials=pika.PlainCredentials(user, password),
        **options))


def drain(channel, queue, count, timeout=10):
    """`count` messages consumed with manual acks: (method, properties, body) each."""
    got = []
    for method, properties, body in channel.consume(queue, inactivity_timeout=timeout):
        assert method is not None, f"only {len(got)} of {count} messages arrived"
        got.append((method, properties, body))
        channel.basic_ack(method.delivery_tag)
        if len(got) == count:
            break
    channel.cancel()
    return got


def test_publish_confirm_consume_with_properties_and_prefetch(broker):
    connection = connect(broker.amqp_port)
    channel = connection.channel()
    declared = channel.queue_declare("orders", durable=True)
    assert declared.method.message_count == 0
    channel.confirm_delivery()
    properties = pika.BasicProperties(
        content_type="application/json", delivery_mode=2, correlation_id="c-1", reply_to="answers",
        message_id="m-1", priority=3, timestamp=1_700_000_000, type="order", app_id="shop",
        headers={"region": "eu", "count": 7, "vip": True, "nested": {"a": 1}})
    for i in range(20):
        channel.basic_publish("", "orders", b"order %d" % i, properties)
    assert channel.queue_declare("orders", passive=True).method.message_count == 20

    # Prefetch 3: a consumer that acknowledges nothing has exactly 3 messages.
    consumer = connection.channel()
    consumer.basic_qos(prefetch_count=3)
    held = []
    consumer.basic_consume("orders", lambda ch, method, props, body: held.append(method.delivery_tag))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        connection.process_data_events(time_limit=0.2)
    assert len(held) == 3
    consumer.close()  # the three go back, redelivered

    got = drain(channel, "orders", 20)
    assert sorted(body for _, _, body in got) == sorted(b"order %d" % i for i in range(20))
    assert sum(1 for method, _, _ in got if method.redelivered) == 3
    method, props, body = got[-1]
    assert props.content_type == "application/json" and props.correlation_id == "c-1"
    assert props.reply_to == "answers" and props.message_id == "m-1" and props.priority == 3
    assert props.timestamp == 1_700_000_000 and props.type == "order" and props.app_id == "shop"
    assert props.delivery_mode == 2
    assert props.headers == {"region": "eu", "count": 7, "vip": True, "nested": {"a": 1}}
    assert channel.queue_declare("orders", passive=True).method.message_count == 0
    connection.close()


def test_every_exchange_type_and_mandatory_returns(broker):
    connection = connect(broker.amqp_port)
    channel = connection.channel()
    channel.confirm_delivery()
    for name, kind in [("d", "direct"), ("f", "fanout"), ("t", "topic"), ("h", "headers")]:
        channel.exchange_declare(name, kind)
    queues = {}
    for name in ["direct-a", "fan-1", "fan-2", "topic-star", "topic-hash", "headers-all", "headers-any"]:
        queues[name] = channel.queue_declare(name).method.queue
    channel.queue_bind("direct-a", "d", "a")
    channel.queue_bind("fan-1", "f")
    channel.queue_bind("fan-2", "f")
    channel.queue_bind("topic-star", "t", "stock.*.nyse")
    channel.queue_bind("topic-hash", "t", "stock.#")
    channel.queue_bind("headers-all", "h", arguments={"x-match": "all", "kind": "x", "size": 2})
    channel.queue_bind("headers-any", "h", arguments={"x-match": "any", "kind": "x", "size": 2})
    channel.basic_publish("d", "a", b"direct")
    channel.basic_publish("d", "b", b"direct-nowhere")
    channel.basic_publish("f", "ignored", b"fanout")
    channel.basic_publish("t", "stock.ibm.nyse", b"t1")
    channel.basic_publish("t", "stock.ibm.x.nyse", b"t2")
    channel.basic_publish("t", "stock", b"t3")
    channel.basic_publish("h", "", b"h-both", pika.BasicProperties(headers={"kind": "x", "size": 2}))
    channel.basic_publish("h", "", b"h-one", pika.BasicProperties(headers={"kind": "x", "size": 3}))
    expected = {"direct-a": [b"direct"], "fan-1": [b"fanout"], "fan-2": [b"fanout"], "topic-star": [b"t1"],
                "topic-hash": [b"t1", b"t2", b"t3"], "headers-all": [b"h-both"],
                "headers-any": [b"h-both", b"h-one"]}
    for queue, bodies in expected.items():
        got = [body for _, _, body in drain(channel, queue, len(bodies))]
        assert sorted(got) == sorted(bodies), queue
        assert channel.queue_declare(queue, passive=True).method.message_count == 0

    # mandatory: an unroutable message comes back (pika raises it with confirms on).
    with pytest.raises(pika.exceptions.UnroutableError):
        channel.basic_publish("d", "nobody", b"lost?", mandatory=True)
    # Exchange-to-exchange bindings and alternate exchanges.
    channel.exchange_declare("upstream", "direct")
    channel.exchange_bind("f", "upstream", "x")
    channel.basic_publish("upstream", "x", b"via-e2e")
    assert [b for _, _, b in drain(channel, "fan-1", 1)] == [b"via-e2e"]
    channel.exchange_declare("with-ae", "direct", arguments={"alternate-exchange": "f"})
    channel.basic_publish("with-ae", "unbound", b"via-ae")
    assert [b for _, _, b in drain(channel, "fan-2", 2)] == [b"via-e2e", b"via-ae"]
    # A publish to an exchange that does not exist closes the channel with 404.
    bad = connection.channel()
    bad.confirm_delivery()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        bad.basic_publish("missing", "k", b"x")
    assert closed.value.reply_code == 404
    # The other channel goes on.
    channel.basic_publish("d", "a", b"still-here")
    assert [b for _, _, b in drain(channel, "direct-a", 1)] == [b"still-here"]
    connection.close()


def test_pika_select_connection_confirms_and_consumes(broker):
    """pika's asynchronous SelectConnection: declare, confirmed publishes, a consumer with acks."""
    events = {"confirmed": 0, "received": [], "error": None}
    count = 50

    def on_open(connection):
        connection.channel(on_open_callback=on_channel)

    def on_channel(channel):
        channel.add_on_close_callback(lambda ch, reason: events.__setitem__("error", events["error"] or reason))
        channel.queue_declare("select-q", durable=True, callback=lambda frame: on_declared(channel))

    def on_declared(channel):
        channel.confirm_delivery(lambda frame: on_confirm(channel, frame), callback=lambda frame: publish(channel))

    def publish(channel):
        for i in range(count):
            channel.basic_publish("", "select-q", b"s%d" % i, pika.BasicProperties(delivery_mode=2))

    def on_confirm(channel, frame):
        assert isinstance(frame.method, pika.spec.Basic.Ack), frame
        tag = frame.method.delivery_tag
        events["confirmed"] = tag if frame.method.multiple else max(events["confirmed"], tag)
        if events["confirmed"] == count:
            channel.basic_qos(prefetch_count=10, callback=lambda f: channel.basic_consume("select-q", on_message))

    def on_message(channel, method, properties, body):
        events["received"].append(body)
        channel.basic_ack(method.delivery_tag)
        if len(events["received"]) == count:
            channel.connection.close()

    connection = pika.SelectConnection(
        pika.ConnectionParameters(host="127.0.0.1", port=broker.amqp_port,
                                  credentials=pika.PlainCredentials("guest", "guest")),
        on_open_callback=on_open,
        on_open_error_callback=lambda c, error: events.__setitem__("error", error),
        on_close_callback=lambda c, reason: c.ioloop.stop())
    timer = connection.ioloop.call_later(20, connection.ioloop.stop)
    connection.ioloop.start()
    connection.ioloop.remove_timeout(timer)
    assert events["confirmed"] == count, events
    assert events["received"] == [b"s%d" % i for i in range(count)], events["error"]


def test_a_global_prefetch_holds_for_every_consumer_of_the_channel_together(broker):
    connection = connect(broker.amqp_port)
    publisher = connection.channel()
    publisher.confirm_delivery()
    for queue in ["left", "right"]:
        publisher.queue_declare(queue)
        for i in range(20):
            publisher.basic_publish("", queue, b"%s-%d" % (queue.encode(), i))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=5, global_qos=True)
    got = []
    for queue in ["left", "right"]:
        channel.basic_consume(queue, lambda ch, m, p, body: got.append((m.delivery_tag, body)))
    assert pump([connection], lambda: len(got) >= 5)
    assert not pump([connection], lambda: len(got) > 5, timeout=1.5), len(got)
    # Room for two more: two more come, whichever queue they are from.
    channel.basic_ack(got[1][0], multiple=True)
    assert pump([connection], lambda: len(got) == 7)
    assert not pump([connection], lambda: len(got) > 7, timeout=1)
    connection.close()


def test_nack_reject_requeue_and_recover(broker):
    connection = connect(broker.amqp_port)
    channel = connection.channel()
    channel.queue_declare("work")
    channel.confirm_delivery()
    for i in range(3):
        channel.basic_publish("", "work", b"job %d" % i)
    method, _, body = channel.basic_get("work")
    assert not method.redelivered
    channel.basic_nack(method.delivery_tag, requeue=True)
    method, _, again = channel.basic_get("work")
    assert again == body and method.redelivered
    channel.basic_reject(method.delivery_tag, requeue=False)  # dropped (no dead-letter exchange)
    first, _, _ = channel.basic_get("work")
    second, _, _ = channel.basic_get("work")
    channel.basic_nack(second.delivery_tag, multiple=True, requeue=True)
    assert channel.queue_declare("work", passive=True).method.message_count == 2
    got = drain(channel, "work", 2)
    assert all(method.redelivered for method, _, _ in got)
    assert channel.basic_get("work") == (None, None, None)
    # basic.recover gives back what is unacknowledged.
    channel.basic_publish("", "work", b"late")
    method, _, _ = channel.basic_get("work")
    channel.basic_recover(requeue=True)
    method, _, body = channel.basic_get("work", auto_ack=True)
    assert body == b"late" and method.redelivered
    # An unknown delivery tag is 406 and closes the channel.
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        channel.basic_ack(999)
        channel.queue_declare("work", passive=True)
    assert closed.value.reply_code == 406
    connection.close()


def test_transactions_commit_whole_and_roll_back_nothing(broker):
    connection = connect(broker.amqp_port)
    channel = connection.channel()
    channel.queue_declare("tx-a")
    channel.queue_declare("tx-b")
    channel.tx_select()
    channel.basic_publish("", "tx-a", b"rolled back")
    channel.basic_publish("", "tx-b", b"rolled back")
    channel.tx_rollback()
    assert channel.queue_declare("tx-a", passive=True).method.message_count == 0
    channel.basic_publish("", "tx-a", b"a1")
    channel.basic_publish("", "tx-b", b"b1")
    channel.basic_publish("", "tx-a", b"a2")
    assert channel.queue_declare("tx-a", passive=True).method.message_count == 0  # not before commit
    channel.tx_commit()
    assert channel.queue_declare("tx-a", passive=True).method.message_count == 2
    assert channel.queue_declare("tx-b", passive=True).method.message_count == 1
    # An acknowledgement inside a rolled-back transaction does not take effect.
    method, _, _ = channel.basic_get("tx-b")
    channel.basic_ack(method.delivery_tag)
    channel.tx_rollback()
    channel.close()
    other = connection.channel()
    method, _, body = other.basic_get("tx-b", auto_ack=True)
    assert body == b"b1" and method.redelivered
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        other.tx_commit()
    assert closed.value.reply_code == 406
    connection.close()


def test_queue_lifecycle_exclusive_auto_delete_purge_and_refusals(broker):
    connection = connect(broker.amqp_port)
    channel = connection.channel()
    generated = channel.queue_declare("", exclusive=True).method.queue
    assert generated.startswith("amq.gen-")
    # Another connection cannot use it (405) and it goes with its connection.
    other = connect(broker.amqp_port)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        other.channel().queue_declare(generated, passive=True)
    assert closed.value.reply_code == 405
    # Redeclaring with other flags is 406; a missing queue 404; amq. names 403.
    channel.queue_declare("plain", durable=True)
    for call, code in [
        (lambda ch: ch.queue_declare("plain", durable=False), 406),
        (lambda ch: ch.queue_declare("missing", passive=True), 404),
        (lambda ch: ch.queue_declare("amq.mine"), 403),
        (lambda ch: ch.queue_declare("sac", arguments={"x-single-active-consumer": "yes"}), 406),
        (lambda ch: ch.queue_declare("bad-arg", arguments={"x-unknown": 1}), 406),
        (lambda ch: ch.exchange_declare("amq.custom", "direct"), 403),
        (lambda ch: ch.exchange_delete("amq.direct"), 403),
        # Binding arguments are part of the binding's key in the journal: bounded (this one used
        # to stop the process).
        (lambda ch: ch.queue_bind("plain", "amq.direct", "k", arguments={"big": "x" * 70000}), 406),
    ]:
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
            call(other.channel())
        assert closed.value.reply_code == code
    # Purge counts and removes ready messages; delete if-empty refuses a queue with some.
    channel.confirm_delivery()
    for i in range(5):
        channel.basic_publish("", "plain", b"%d" % i)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        other.channel().queue_delete("plain", if_empty=True)
    assert closed.value.reply_code == 406
    assert channel.queue_purge("plain").method.message_count == 5
    assert channel.queue_declare("plain", passive=True).method.message_count == 0
    assert channel.queue_delete("plain").method.message_count == 0
    # Auto-delete: the queue goes when its last consumer is cancelled.
    channel.queue_declare("transient", auto_delete=True)
    tag = channel.basic_consume("transient", lambda *a: None)
    channel.basic_cancel(tag)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        other.channel().queue_declare("transient", passive=True)
    assert closed.value.reply_code == 404
    connection.close()
    time.sleep(0.5)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        other.channel().queue_declare(generated, passive=True)
    assert closed.value.reply_code == 404
    other.close()


def test_message_ttl_per_queue_and_per_message(broker):
    connection = connect(broker.amqp_port)
    channel = connection.channel()
    channel.queue_declare("short", arguments={"x-message-ttl": 300})
    channel.queue_declare("plain-ttl")
    channel.confirm_delivery()
    channel.basic_publish("", "short", b"expires")
    channel.basic_publish("", "plain-ttl", b"expires too", pika.BasicProperties(expiration="300"))
    channel.basic_publish("", "plain-ttl", b"stays")
    time.sleep(1.0)
    assert channel.basic_get("short") == (None, None, None)
    method, props, body = channel.basic_get("plain-ttl", auto_ack=True)
    assert body == b"stays"
    assert channel.basic_get("plain-ttl") == (None, None, None)
    connection.close()


def test_durable_messages_survive_sigkill_of_journal_node(data_dir):
    node = Node(data_dir, ["--amqp-allow-anonymous"], gateways=("amqp",))
    port = port_of(node.listeners["amqp"])
    connection = connect(port)
    channel = connection.channel()
    channel.exchange_declare("events", "fanout", durable=True)
    channel.queue_declare("kept", durable=True)
    channel.queue_bind("kept", "events")
    channel.confirm_delivery()
    for i in range(50):
        channel.basic_publish("events", "", b"event %d" % i, pika.BasicProperties(delivery_mode=2))
    # One taken and acknowledged: after the crash the other 49 are there, nothing else.
    method, _, _ = channel.basic_get("kept")
    channel.basic_ack(method.delivery_tag)
    node.stop(signal.SIGKILL)
    node = Node(data_dir, ["--amqp-allow-anonymous"], gateways=("amqp",))
    try:
        connection = connect(port_of(node.listeners["amqp"]))
        channel = connection.channel()
        assert channel.queue_declare("kept", passive=True).method.message_count == 49
        got = drain(channel, "kept", 49)
        assert sorted(body for _, _, body in got) == sorted(b"event %d" % i for i in range(1, 50))
        # The exchange and its binding survived too.
        channel.confirm_delivery()
        channel.basic_publish("events", "", b"after")
        assert [b for _, _, b in drain(channel, "kept", 1)] == [b"after"]
        connection.close()
    finally:
        node.stop()


@contextlib.contextmanager
def two_gateways(data_dir, extra=()):
    """A journal-node without gateways and two amqp-gateway processes on it."""
    node = Node(data_dir, listeners=2, gateways=())
    gateways = [GatewayProcess("amqp-gateway", "amqp", node.journal, ["--allow-anonymous", *extra])
                for _ in range(2)]
    try:
        yield gateways
    finally:
        for gateway in gateways:
            gateway.stop()
        node.stop()


def wait_until_deleted(connection, queue, since, timeout=15):
    """Waits until `queue` is gone (404; 405 while still locked); seconds since `since`."""
    while True:
        try:
            connection.channel().queue_declare(queue, passive=True)
        except pika.exceptions.ChannelClosedByBroker as closed:
            if closed.reply_code == 404:
                return time.monotonic() - since
            assert closed.reply_code == 405
        assert time.monotonic() - since < timeout, f"queue {queue} stayed"
        time.sleep(0.5)


def test_two_gateway_processes_share_a_queue_and_survive_a_gateway_sigkill(data_dir):
    with two_gateways(data_dir, ["--lease-ms", "2000"]) as (first, second):
        a = connect(port_of(first.address))
        b = connect(port_of(second.address))
        ca, cb = a.channel(), b.channel()
        ca.exchange_declare("shared-x", "direct")
        ca.queue_declare("shared", durable=True)
        ca.queue_bind("shared", "shared-x", "k")
        time.sleep(0.5)  # the other gateway loads the change within a tick
        cb.confirm_delivery()
        for i in range(10):
            cb.basic_publish("shared-x", "k", b"m%d" % i)
        # Both gateways' consumers take from one queue: each message goes to one of them.
        method, _, held = ca.basic_get("shared")  # held, never acknowledged
        got_b = drain(cb, "shared", 4)
        first.stop(signal.SIGKILL)
        # The message the killed gateway held comes back once its lease ran out.
        got = drain(cb, "shared", 6, timeout=15)
        bodies = [body for _, _, body in got_b + got]
        assert sorted(bodies) == sorted(b"m%d" % i for i in range(10))
        assert any(m.redelivered and body == held for m, _, body in got)
        b.close()


def pump(connections, until, timeout=10):
    """Serves the connections' callbacks until `until()` holds; false after `timeout`."""
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            return False
        for connection in connections:
            connection.process_data_events(time_limit=0.05)
    return True


def test_single_active_consumer_across_gateways_hands_over_in_order(data_dir):
    with two_gateways(data_dir, ["--lease-ms", "2000"]) as (first, second):
        a, b = connect(port_of(first.address)), connect(port_of(second.address))
        ca, cb = a.channel(), b.channel()
        arguments = {"x-single-active-consumer": True}
        ca.queue_declare("single", durable=True, arguments=arguments)
        time.sleep(0.5)  # the other gateway loads the queue within a tick
        cb.queue_declare("single", durable=True, arguments=arguments)
        ca.confirm_delivery()

        def publish(numbers):
            for i in numbers:
                ca.basic_publish("", "single", b"m%d" % i)

        publish(range(20))
        got = {"a": [], "b": [], "b2": []}

        def keep(name, ack):
            def callback(channel, method, properties, body):
                got[name].append((method.delivery_tag, body))
                if ack:
                    channel.basic_ack(method.delivery_tag)
            return callback

        def bodies(name):
            return [body for _, body in got[name]]

        ca.basic_qos(prefetch_count=5)
        tag_a = ca.basic_consume("single", keep("a", ack=False))
        assert pump([a], lambda: len(got["a"]) == 5)
        tag_b = cb.basic_consume("single", keep("b", ack=True))
        cb.basic_consume("single", keep("b2", ack=True))  # stands by behind tag_b on its channel
        # Only the first consumer gets messages, whichever gateway the others are on.
        assert not pump([a, b], lambda: got["b"] or got["b2"] or len(got["a"]) > 5, timeout=1.5)
        ca.basic_ack(got["a"][1][0], multiple=True)
        assert pump([a], lambda: len(got["a"]) == 7)
        assert bodies("a") == [b"m%d" % i for i in range(7)]
        # Cancelled with five unacknowledged: the next consumer takes over after them, in
        # order, and the cancelled one may still acknowledge what it holds (RabbitMQ's rule).
        ca.basic_cancel(tag_a)
        assert pump([b], lambda: len(got["b"]) == 13), bodies("b")
        assert bodies("b") == [b"m%d" % i for i in range(7, 20)] and not got["b2"]
        ca.basic_ack(got["a"][-1][0], multiple=True)
        # The second consumer of that channel is next.
        cb.basic_cancel(tag_b)
        publish(range(20, 25))
        assert pump([b], lambda: len(got["b2"]) == 5)
        assert bodies("b2") == [b"m%d" % i for i in range(20, 25)] and len(got["b"]) == 13
        # The active consumer's gateway is killed: a consumer on the other gateway takes over
        # once the dead one has been silent for its lease (2 s here).
        cc = a.channel()
        got["c"] = []
        cc.basic_consume("single", keep("c", ack=True))
        assert not pump([a], lambda: got["c"], timeout=0.5)
        second.stop(signal.SIGKILL)
        killed = time.monotonic()
        publish(range(25, 30))
        assert pump([a], lambda: len(got["c"]) == 5, timeout=15)
        assert time.monotonic() - killed >= 1.5
        assert bodies("c") == [b"m%d" % i for i in range(25, 30)]
        # Nothing was lost or delivered twice on the way.
        assert not a.channel().queue_declare("single", passive=True, arguments=arguments).method.message_count
        a.close()


def test_consumer_priorities_serve_the_highest_with_room_first(broker):
    connection = connect(broker.amqp_port)
    publisher, high, low = connection.channel(), connection.channel(), connection.channel()
    publisher.queue_declare("ranked", durable=True)
    publisher.confirm_delivery()
    got = {"high": [], "low": []}
    high.basic_qos(prefetch_count=3)
    high.basic_consume("ranked", lambda ch, m, p, body: got["high"].append((m.delivery_tag, body)),
                       arguments={"x-priority": 10})
    low.basic_consume("ranked", lambda ch, m, p, body: got["low"].append(body), auto_ack=True)
    connection.process_data_events(time_limit=0.3)

    def publish(numbers):
        for i in numbers:
            publisher.basic_publish("", "ranked", b"m%d" % i)

    # The higher consumer has room for three: it gets them, the lower one nothing.
    publish(range(3))
    assert pump([connection], lambda: len(got["high"]) == 3)
    assert not pump([connection], lambda: got["low"], timeout=1)
    # Its prefetch is full: the lower one gets the rest.
    publish(range(3, 7))
    assert pump([connection], lambda: len(got["low"]) == 4)
    assert got["low"] == [b"m%d" % i for i in range(3, 7)] and len(got["high"]) == 3
    # Room again: the higher consumer first.
    high.basic_ack(got["high"][-1][0], multiple=True)
    connection.process_data_events(time_limit=0.3)
    publish(range(7, 10))
    assert pump([connection], lambda: len(got["high"]) == 6)
    assert not pump([connection], lambda: len(got["low"]) > 4, timeout=1)
    assert [body for _, body in got["high"]] == [b"m%d" % i for i in [0, 1, 2, 7, 8, 9]]
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
        connection.channel().basic_consume("ranked", lambda *args: None, arguments={"x-priority": "high"})
    assert refused.value.reply_code == 406
    connection.close()


def test_a_gateway_shutting_down_closes_connections_with_320_and_hands_back_leases(data_dir):
    with two_gateways(data_dir) as (stopping, staying):
        a = connect(port_of(stopping.address))
        ca = a.channel()
        ca.queue_declare("handed-back", durable=True)
        ca.confirm_delivery()
        ca.basic_publish("", "handed-back", b"held")
        method, _, body = ca.basic_get("handed-back")  # held, unacknowledged, leased for 60 s
        assert body == b"held"
        stopping.process.send_signal(signal.SIGTERM)
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed:
            a.process_data_events(time_limit=10)
        assert closed.value.reply_code == 320 and "CONNECTION_FORCED" in closed.value.reply_text
        assert stopping.process.wait(timeout=15) == 0
        # The message it held is back in the queue at once, not after its lease.
        b = connect(port_of(staying.address))
        got = drain(b.channel(), "handed-back", 1, timeout=5)
        assert got[0][2] == b"held" and got[0][0].redelivered
        b.close()


def test_exclusive_queues_of_a_killed_gateway_are_deleted(data_dir):
    with two_gateways(data_dir) as (doomed, survivor):
        a = connect(port_of(doomed.address))
        a.channel().queue_declare("mine", exclusive=True)
        b = connect(port_of(survivor.address))
        time.sleep(1)  # the survivor loads the queue within a tick
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as locked:
            b.channel().queue_declare("mine", passive=True)
        assert locked.value.reply_code == 405
        time.sleep(6)  # a live owner keeps its queue past the 5 s grace
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as locked:
            b.channel().queue_declare("mine", passive=True)
        assert locked.value.reply_code == 405
        doomed.stop(signal.SIGKILL)
        # Its connection is gone, so is its exclusive queue (RabbitMQ's rule), once its gateway
        # has been silent for 5 s.
        assert wait_until_deleted(b, "mine", since=time.monotonic()) >= 4
        b.channel().queue_declare("mine", exclusive=True)  # free to take
        b.close()


def test_consumer_counts_exclusive_use_and_auto_delete_span_gateways(data_dir):
    with two_gateways(data_dir) as (first, second):
        a, b = connect(port_of(first.address)), connect(port_of(second.address))
        ca, cb = a.channel(), b.channel()
        ca.queue_declare("spanned", auto_delete=True)
        time.sleep(0.5)  # the other gateway loads the queue within a tick
        tag_a = ca.basic_consume("spanned", lambda *args: None)
        cb.basic_consume("spanned", lambda *args: None)
        assert cb.queue_declare("spanned", passive=True).method.consumer_count == 2
        assert ca.queue_declare("spanned", passive=True).method.consumer_count == 2
        # The other gateway's consumer keeps the queue when this one's last goes.
        ca.basic_cancel(tag_a)
        assert ca.queue_declare("spanned", passive=True).method.consumer_count == 1
        for call, code in [
            (lambda ch: ch.basic_consume("spanned", lambda *args: None, exclusive=True), 403),
            (lambda ch: ch.queue_delete("spanned", if_unused=True), 406),
        ]:
            with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
                call(a.channel())
            assert refused.value.reply_code == code
        # Its gateway is killed: once it is silent for 5 s, its consumer no longer counts and
        # the auto-delete queue goes, as when its last consumer goes.
        second.stop(signal.SIGKILL)
        assert wait_until_deleted(a, "spanned", since=time.monotonic()) >= 4
        a.close()


def test_py_amqp_kombu_and_amqp_tools(broker):
    port = broker.amqp_port
    # py-amqp (AMQPLAIN login, as Celery's default transport sends it).
    with amqp.Connection(f"127.0.0.1:{port}", userid="guest", password="guest", login_method="AMQPLAIN") as c:
        channel = c.channel()
        channel.queue_declare("py-amqp", durable=True, auto_delete=False)
        channel.confirm_select()
        channel.basic_publish(amqp.Message("from py-amqp", application_headers={"n": 1}), routing_key="py-amqp")
        message = channel.basic_get("py-amqp", no_ack=True)
        assert message.body == "from py-amqp" and message.headers["n"] == 1
    # kombu: a producer and a consumer through a topic exchange.
    with kombu.Connection(f"amqp://guest:guest@127.0.0.1:{port}//") as conn:
        exchange = kombu.Exchange("kombu-x", type="topic")
        queue = kombu.Queue("kombu-q", exchange, routing_key="jobs.#")
        conn.Producer().publish({"job": 42}, exchange=exchange, routing_key="jobs.print", declare=[queue],
                                serializer="json")
        got = []
        with conn.Consumer(queue, callbacks=[lambda body, message: (got.append(body), message.ack())]):
            conn.drain_events(timeout=10)
        assert got == [{"job": 42}]
    # amqp-tools.
    url = f"amqp://guest:guest@127.0.0.1:{port}"
    name = subprocess.run(["amqp-declare-queue", "--url", url, "-q", "tools", "-d"], capture_output=True, text=True,
                          check=True, timeout=30).stdout.strip()
    assert name == "tools"
    for i in range(3):
        subprocess.run(["amqp-publish", "--url", url, "-r", "tools", "-b", f"tool {i}", "-p"], check=True, timeout=30)
    out = subprocess.run(["amqp-consume", "--url", url, "-q", "tools", "-c", "3", "cat"], capture_output=True,
                         timeout=30, check=True).stdout
    assert out == b"tool 0tool 1tool 2"


EXAMPLES = "/usr/share/doc/librabbitmq-dev/examples"


def build_c_examples(directory, names):
    """The RabbitMQ C client's example programs (librabbitmq-dev ships their source), built
    against Debian's librabbitmq."""
    built = {}
    for name in names:
        target = os.path.join(directory, name)
        subprocess.run(
            ["cc", "-O1", "-o", target, f"{EXAMPLES}/{name}.c", f"{EXAMPLES}/utils.c",
             f"{EXAMPLES}/unix/platform_utils.c", f"-I{EXAMPLES}", "-lrabbitmq"],
            check=True, capture_output=True)
        built[name] = target
    return built


def test_rabbitmq_c_client_example_programs(broker, tmp_path):
    c = build_c_examples(str(tmp_path), ["amqp_exchange_declare", "amqp_bind", "amqp_unbind", "amqp_sendstring",
                                         "amqp_listenq", "amqp_producer", "amqp_consumer"])
    host, port = "127.0.0.1", str(broker.amqp_port)
    connection = connect(broker.amqp_port)
    channel = connection.channel()
    channel.queue_declare("from-c")

    def run(name, *args):
        done = subprocess.run([c[name], host, port, *args], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, (name, done.stdout, done.stderr)
        return done.stdout

    run("amqp_exchange_declare", "c-exchange", "direct")
    run("amqp_bind", "c-exchange", "c-key", "from-c")
    run("amqp_sendstring", "c-exchange", "c-key", "hello from C")
    method, _, body = channel.basic_get("from-c", auto_ack=True)
    assert body == b"hello from C" and method.exchange == "c-exchange" and method.routing_key == "c-key"
    run("amqp_unbind", "c-exchange", "c-key", "from-c")
    run("amqp_sendstring", "c-exchange", "c-key", "unrouted")
    assert channel.queue_declare("from-c", passive=True).method.message_count == 0

    # amqp_listenq prints what it consumes (line-buffered through stdbuf: it never exits).
    channel.basic_publish("", "from-c", b"to the C consumer", pika.BasicProperties(content_type="text/plain"))
    listener = subprocess.Popen(["stdbuf", "-oL", c["amqp_listenq"], host, port, "from-c"], stdout=subprocess.PIPE,
                                text=True)
    try:
        lines = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not any("Content-type: text/plain" in line for line in lines):
            lines.append(listener.stdout.readline())
        assert "Delivery 1, exchange  routingkey from-c\n" in lines and "Content-type: text/plain\n" in lines
    finally:
        listener.kill()
        listener.wait()

    # amqp_producer publishes 256-byte messages to amq.direct under "test queue"; amqp_consumer
    # (a server-named exclusive queue bound there) counts what it receives.
    channel.queue_declare("c-produced")
    channel.queue_bind("c-produced", "amq.direct", "test queue")
    consumer = subprocess.Popen(["stdbuf", "-oL", c["amqp_consumer"], host, port], stdout=subprocess.PIPE,
                                text=True)
    try:
        time.sleep(1)  # to bind its queue; the three seconds of publishing leave it room anyway
        out = run("amqp_producer", "1500", "4500")
        assert "PRODUCER - Message count: 4500" in out
        received = 0
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and received < 1000:
            line = consumer.stdout.readline()
            if "Received" in line:
                received = int(line.split("Received ")[1].split(" ")[0])
        assert received >= 1000, received
    finally:
        consumer.kill()
        consumer.wait()
    got = drain(channel, "c-produced", 4500)
    assert all(body == bytes(range(256)) for _, _, body in got)
    connection.close()


def test_amqp_messages_are_a_kafka_topic(broker):
    connection = connect(broker.amqp_port)
    channel = connection.channel()
    channel.queue_declare("to-kafka", durable=True)
    channel.confirm_delivery()
    channel.basic_publish("", "to-kafka", b"hello kafka", pika.BasicProperties(content_type="text/plain",
                                                                               headers={"who": "amqp"}))
    connection.close()
    out = subprocess.run(["kcat", "-C", "-b", broker.kafka, "-t", "amqp.to-kafka", "-o", "beginning", "-e", "-c", "1",
                          "-f", "%k %s %h\n"], capture_output=True, text=True, timeout=30, check=True).stdout
    # The routing key is the record key; the properties are headers of the one envelope.
    assert out.startswith("to-kafka hello kafka ")
    assert "content-type=text/plain" in out and "who=amqp" in out and "amqp.routing-key=to-kafka" in out


def test_permissions_and_credentials(data_dir):
    users = users_file(os.path.join(data_dir, "users"), ["alice", "bob"], "s3cret")
    permissions = os.path.join(data_dir, "permissions")
    with open(permissions, "w") as f:
        f.write("# vhost user configure write read\n/ alice .* .* .*\n/ bob ^$ ^$ ^bob-.*\n")
    node = Node(os.path.join(data_dir, "node"), ["--amqp-users", users, "--amqp-permissions", permissions],
                gateways=("amqp",))
    port = port_of(node.listeners["amqp"])
    try:
        with pytest.raises(pika.exceptions.ProbableAuthenticationError):
            connect(port, "alice", "wrong")
        alice = connect(port, "alice", "s3cret")
        channel = alice.channel()
        channel.queue_declare("bob-inbox")
        channel.queue_declare("secret")
        bob = connect(port, "bob", "s3cret")
        for call in [lambda ch: ch.queue_declare("bob-new"),
                     lambda ch: ch.basic_publish("amq.direct", "k", b"x") or ch.queue_declare("bob-inbox", passive=True),
                     lambda ch: ch.basic_get("secret")]:
            with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
                call(bob.channel())
            assert closed.value.reply_code == 403
        channel.basic_publish("", "bob-inbox", b"for bob")
        time.sleep(0.3)
        assert bob.channel().basic_get("bob-inbox", auto_ack=True)[2] == b"for bob"
        with pytest.raises(pika.exceptions.ProbableAccessDeniedError):
            connect(port, "alice", "s3cret", vhost="other")
        alice.close()
        bob.close()
    finally:
        node.stop()


def frame(kind, channel, payload):
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + b"\xce"


def test_malformed_and_oversized_frames_close_with_frame_error_while_others_are_served(broker):
    healthy = connect(broker.amqp_port)
    healthy_channel = healthy.channel()
    healthy_channel.queue_declare("alive")

    def handshake():
        s = socket.create_connection(("127.0.0.1", broker.amqp_port), timeout=5)
        s.sendall(b"AMQP\x00\x00\x09\x01")
        return s

    # A wrong protocol header is answered with the server's own, then closed.
    s = socket.create_connection(("127.0.0.1", broker.amqp_port), timeout=5)
    s.sendall(b"AMQP\x01\x01\x00\x0a")
    assert s.recv(8) == b"AMQP\x00\x00\x09\x01"
    assert s.recv(1) == b""
    s.close()
    # A frame larger than frame-max (declared in its header) and a frame with a bad end octet:
    # connection.close 501, then the socket closes.
    for payload in [struct.pack(">BHI", 1, 0, 1 << 30), frame(1, 0, b"\x00\x0a\x00\x0b")[:-1] + b"\x00"]:
        s = handshake()
        s.recv(4096)  # connection.start
        s.sendall(payload)
        data = read_until_closed(s)
        assert data[0] == 1 and data[7:11] == b"\x00\x0a\x00\x32"  # connection.close
        assert struct.unpack(">H", data[11:13])[0] == 501
        s.close()
    healthy_channel.confirm_delivery()
    healthy_channel.basic_publish("", "alive", b"fine")
    assert healthy_channel.basic_get("alive", auto_ack=True)[2] == b"fine"
    healthy.close()


def test_dead_lettering_with_x_death_for_rejected_and_expired_messages(broker):
    connection = connect(broker.amqp_port)
    channel = connection.channel()
    channel.exchange_declare("dlx", "direct")
    channel.queue_declare("dead")
    channel.queue_bind("dead", "dlx", "to-dead")
    channel.queue_bind("dead", "dlx", "work-dl")
    channel.queue_declare("work-dl", arguments={"x-dead-letter-exchange": "dlx"})
    channel.queue_declare("expiring", arguments={"x-dead-letter-exchange": "dlx",
                                                 "x-dead-letter-routing-key": "to-dead", "x-message-ttl": 200})
    channel.confirm_delivery()
    channel.basic_publish("", "work-dl", b"rejected one", pika.BasicProperties(headers={"id": 1}))
    channel.basic_publish("", "expiring", b"expired one")
    method, _, _ = channel.basic_get("work-dl")
    channel.basic_reject(method.delivery_tag, requeue=False)
    got = {}
    for method, props, body in drain(channel, "dead", 2, timeout=15):
        got[body] = (method, props)
    method, props = got[b"rejected one"]
    assert method.exchange == "dlx" and method.routing_key == "work-dl"
    death = props.headers["x-death"][0]
    assert (death["queue"], death["reason"], death["count"]) == ("work-dl", "rejected", 1)
    assert death["exchange"] == "" and death["routing-keys"] == ["work-dl"]
    assert props.headers["x-first-death-reason"] == "rejected" and props.headers["id"] == 1
    method, props = got[b"expired one"]
    assert method.routing_key == "to-dead"
    death = props.headers["x-death"][0]
    assert (death["queue"], death["reason"]) == ("expiring", "expired") and props.expiration is None
    connection.close()


def test_max_length_drops_the_head_or_rejects_publishes(broker):
    connection = connect(broker.amqp_port)
    channel = connection.channel()
    channel.exchange_declare("capped-dlx", "fanout")
    channel.queue_declare("capped-dead")
    channel.queue_bind("capped-dead", "capped-dlx")
    channel.queue_declare("capped", arguments={"x-max-length": 3, "x-dead-letter-exchange": "capped-dlx"})
    channel.queue_declare("capped-bytes", arguments={"x-max-length-bytes": 10})
    channel.queue_declare("full", arguments={"x-max-length": 2, "x-overflow": "reject-publish"})
    channel.queue_declare("full-dlx", arguments={"x-max-length": 1, "x-overflow": "reject-publish-dlx",
                                                 "x-dead-letter-exchange": "capped-dlx"})
    channel.confirm_delivery()

    # drop-head: five published, the newest three kept, the two oldest dead-lettered (maxlen).
    for i in range(5):
        channel.basic_publish("", "capped", b"m%d" % i)
    assert channel.queue_declare("capped", passive=True).method.message_count == 3
    assert [body for _, _, body in drain(channel, "capped", 3)] == [b"m2", b"m3", b"m4"]
    dead = drain(channel, "capped-dead", 2, timeout=15)
    assert sorted(body for _, _, body in dead) == [b"m0", b"m1"]
    assert {props.headers["x-death"][0]["reason"] for _, props, _ in dead} == {"maxlen"}
    assert {props.headers["x-death"][0]["queue"] for _, props, _ in dead} == {"capped"}

    # Bytes: 4-byte bodies, at most 10 bytes ready: the newest two stay.
    for i in range(4):
        channel.basic_publish("", "capped-bytes", b"b%03d" % i)
    assert channel.queue_declare("capped-bytes", passive=True).method.message_count == 2
    assert [body for _, _, body in drain(channel, "capped-bytes", 2)] == [b"b002", b"b003"]

    # reject-publish: the third is nacked and not stored; a leased message does not count.
    channel.basic_publish("", "full", b"f0")
    channel.basic_publish("", "full", b"f1")
    with pytest.raises(pika.exceptions.NackError):
        channel.basic_publish("", "full", b"f2")
    assert channel.queue_declare("full", passive=True).method.message_count == 2
    method, _, body = channel.basic_get("full")
    assert body == b"f0"
    channel.basic_publish("", "full", b"f3")  # f0 is leased: one ready, room for one more
    with pytest.raises(pika.exceptions.NackError):
        channel.basic_publish("", "full", b"f4")
    channel.basic_ack(method.delivery_tag)
    assert [body for _, _, body in drain(channel, "full", 2)] == [b"f1", b"f3"]

    # reject-publish-dlx: the refused message is nacked and dead-lettered.
    channel.basic_publish("", "full-dlx", b"kept")
    with pytest.raises(pika.exceptions.NackError):
        channel.basic_publish("", "full-dlx", b"refused")
    (_, props, body), = drain(channel, "capped-dead", 1, timeout=15)
    assert body == b"refused" and props.headers["x-death"][0]["reason"] == "maxlen"
    assert props.headers["x-death"][0]["queue"] == "full-dlx"
    assert [body for _, _, body in drain(channel, "full-dlx", 1)] == [b"kept"]
    connection.close()


def test_priority_queue_delivers_the_highest_priority_first(broker):
    connection = connect(broker.amqp_port)
    channel = connection.channel()
    channel.queue_declare("urgent", durable=True, arguments={"x-max-priority": 5})
    channel.confirm_delivery()
    for body, priority in [(b"p0", 0), (b"p3", 3), (b"p9", 9), (b"none", None), (b"p1", 1), (b"p5", 5)]:
        channel.basic_publish("", "urgent", body, pika.BasicProperties(priority=priority, delivery_mode=2))
    assert channel.queue_declare("urgent", passive=True).method.message_count == 6
    # 9 is above x-max-priority and counts as 5; within a priority, first in first out.
    method, props, body = channel.basic_get("urgent")
    assert body == b"p9" and props.priority == 9 and method.message_count == 5
    channel.basic_nack(method.delivery_tag, requeue=True)  # back, still the highest
    got = drain(channel, "urgent", 6)
    assert [body for _, _, body in got] == [b"p9", b"p5", b"p3", b"p1", b"p0", b"none"]
    assert got[0][0].redelivered and not got[1][0].redelivered
    # Its priorities are fixed: another x-max-priority is a different queue (406).
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
        channel.queue_declare("urgent", durable=True, arguments={"x-max-priority": 2})
    assert refused.value.reply_code == 406
    connection.close()


def test_queues_expire_when_unused_for_x_expires(broker):
    connection = connect(broker.amqp_port)
    channel = connection.channel()

    def exists(name):
        """queue.bind neither uses nor renews a queue (as in RabbitMQ)."""
        probe = connection.channel()
        try:
            probe.queue_bind(name, "amq.fanout")
        except pika.exceptions.ChannelClosedByBroker as closed:
            assert closed.reply_code == 404
            return False
        probe.queue_unbind(name, "amq.fanout")
        probe.close()
        return True

    for name in ["idle", "read", "consumed"]:
        channel.queue_declare(name, arguments={"x-expires": 1500})
    channel.basic_publish("", "idle", b"goes with its queue")
    tag = channel.basic_consume("consumed", lambda *args: None)
    start = time.monotonic()
    idle_gone = None
    while time.monotonic() - start < 4:  # "read" is kept by basic.get, "consumed" by its consumer
        channel.basic_get("read")
        connection.process_data_events(time_limit=0.5)
        if idle_gone is None and not exists("idle"):
            idle_gone = time.monotonic() - start
    assert idle_gone is not None and 1.3 <= idle_gone <= 3.5, idle_gone
    assert exists("read") and exists("consumed")
    channel.basic_cancel(tag)
    cancelled = time.monotonic()
    while exists("consumed"):
        assert time.monotonic() - cancelled < 8, "a queue unused since its consumer went stays"
        time.sleep(0.2)
    assert time.monotonic() - cancelled >= 1.3
    # Its messages went with it: declared again, the queue is empty.
    assert channel.queue_declare("idle").method.message_count == 0
    connection.close()


def test_connection_blocked_while_the_disk_reserve_is_reached(data_dir):
    os.makedirs(data_dir, exist_ok=True)
    stat = os.statvfs(data_dir)
    reserve = stat.f_bavail * stat.f_frsize - (512 << 20)  # met once 512 MiB more are used
    config = os.path.join(data_dir, "node.toml")
    with open(config, "w") as f:
        f.write(f"[journal]\nsegment_bytes = 1048576\nmax_batch_bytes = 262144\nmin_free_disk_bytes = {reserve}\n")
    node = Node(os.path.join(data_dir, "node"), ["--config", config, "--amqp-allow-anonymous"], gateways=("amqp",))
    ballast = os.path.join(data_dir, "ballast")
    try:
        connection = connect(port_of(node.listeners["amqp"]))
        events = []
        connection.add_on_connection_blocked_callback(lambda _, frame: events.append(("blocked", frame.method.reason)))
        connection.add_on_connection_unblocked_callback(lambda _, frame: events.append(("unblocked", None)))
        channel = connection.channel()
        channel.queue_declare("alarmed")
        channel.confirm_delivery()
        channel.basic_publish("", "alarmed", b"before")
        subprocess.run(["fallocate", "-l", str(1 << 30), ballast], check=True)
        deadline = time.monotonic() + 10
        while not events and time.monotonic() < deadline:
            connection.process_data_events(time_limit=0.2)
        assert events and events[0][0] == "blocked" and "disk" in events[0][1], events
        # A publish meanwhile is held (the connection is not read from, as RabbitMQ does) and
        # goes through once the alarm ends: here when the ballast goes, 2 s from now.
        remover = threading.Timer(2.0, os.remove, [ballast])
        remover.start()
        started = time.monotonic()
        channel.basic_publish("", "alarmed", b"during")  # returns with its confirm
        held = time.monotonic() - started
        remover.join()
        assert held >= 1.5, held
        deadline = time.monotonic() + 10
        while len(events) < 2 and time.monotonic() < deadline:
            connection.process_data_events(time_limit=0.2)
        assert events[1:] == [("unblocked", None)], events
        channel.basic_publish("", "alarmed", b"after")
        assert [body for _, _, body in drain(channel, "alarmed", 3)] == [b"before", b"during", b"after"]
        connection.close()
    finally:
        if os.path.exists(ballast):
            os.remove(ballast)
        node.stop()


def test_connection_blocked_above_the_memory_high_watermark(data_dir):
    os.makedirs(data_dir, exist_ok=True)
    config = os.path.join(data_dir, "node.toml")
    with open(config, "w") as f:
        f.write("[journal]\nmemory_high_watermark_bytes = 1\n")  # always above it
    node = Node(os.path.join(data_dir, "node"), ["--config", config, "--amqp-allow-anonymous"], gateways=("amqp",))
    try:
        connection = connect(port_of(node.listeners["amqp"]), blocked_connection_timeout=2)
        events = []
        connection.add_on_connection_blocked_callback(lambda _, frame: events.append(frame.method.reason))
        channel = connection.channel()
        channel.queue_declare("memory")  # everything but publishing goes on
        deadline = time.monotonic() + 10
        while not events and time.monotonic() < deadline:
            connection.process_data_events(time_limit=0.2)
        assert events and "memory high watermark" in events[0], events
        # A publish is held; pika gives up after its blocked_connection_timeout.
        channel.confirm_delivery()
        with pytest.raises(pika.exceptions.ConnectionBlockedTimeout):
            channel.basic_publish("", "memory", b"held")
    finally:
        node.stop()


def make_certificates(directory):
    """A CA, a server certificate for 127.0.0.1 and client certificates it signed (CN device-1 and
    stranger), with openssl."""
    def path(name):
        return os.path.join(directory, name)

    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", path("ca.key"), "-out", path("ca.pem"),
        "-days", "2", "-subj", "/CN=strata-test-ca")
    extensions = path("san.ext")
    with open(extensions, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, subject in [("server", "/CN=localhost"), ("device", "/CN=device-1"), ("stranger", "/CN=stranger")]:
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", path(f"{name}.key"), "-out", path(f"{name}.csr"),
            "-subj", subject)
        run("x509", "-req", "-in", path(f"{name}.csr"), "-CA", path("ca.pem"), "-CAkey", path("ca.key"),
            "-CAcreateserial", "-out", path(f"{name}.pem"), "-days", "2",
            *(["-extfile", extensions] if name == "server" else []))
    return path


def test_amqps_with_client_certificates_and_sasl_external(data_dir):
    os.makedirs(data_dir, exist_ok=True)
    cert = make_certificates(data_dir)
    users = users_file(os.path.join(data_dir, "users"), ["device-1", "alice"], "s3cret")
    node = Node(os.path.join(data_dir, "node"),
                ["--amqp-users", users, "--amqp-tls-cert", cert("server.pem"), "--amqp-tls-key", cert("server.key"),
                 "--amqp-tls-client-ca", cert("ca.pem"), "--amqp-tls-port", "0"],
                gateways=("amqp",), listeners=4)
    try:
        secure = port_of(node.listeners["amqps"])

        def tls(client):
            context = ssl.create_default_context(cafile=cert("ca.pem"))
            if client:
                context.load_cert_chain(cert(f"{client}.pem"), cert(f"{client}.key"))
            return pika.SSLOptions(context, "127.0.0.1")

        def external(client):
            return pika.BlockingConnection(pika.ConnectionParameters(
                host="127.0.0.1", port=secure, credentials=pika.credentials.ExternalCredentials(),
                ssl_options=tls(client)))

        # EXTERNAL: the certificate's common name is the user, no password.
        connection = external("device")
        channel = connection.channel()
        channel.queue_declare("certified")
        channel.confirm_delivery()
        channel.basic_publish("", "certified", b"signed")
        assert channel.basic_get("certified", auto_ack=True)[2] == b"signed"
        connection.close()
        # PLAIN still works over AMQPS (with a certificate: the listener requires one).
        connection = pika.BlockingConnection(pika.ConnectionParameters(
            host="127.0.0.1", port=secure, credentials=pika.PlainCredentials("alice", "s3cret"),
            ssl_options=tls("device")))
        connection.close()
        # A certificate whose name is no user is refused (403), and no certificate fails the handshake.
        with pytest.raises(pika.exceptions.ProbableAuthenticationError):
            external("stranger")
        with pytest.raises(pika.exceptions.AMQPConnectionError):
            external(None)
        # The plain listener does not offer EXTERNAL.
        with pytest.raises((pika.exceptions.AuthenticationError, pika.exceptions.ProbableAuthenticationError)):
            pika.BlockingConnection(pika.ConnectionParameters(
                host="127.0.0.1", port=port_of(node.listeners["amqp"]),
                credentials=pika.credentials.ExternalCredentials()))
    finally:
        node.stop()


def test_amq_topic_is_the_mqtt_topic_space(data_dir):
    node = Node(data_dir, ["--amqp-allow-anonymous", "--mqtt-allow-anonymous"], gateways=("amqp", "mqtt"))
    try:
        connection = connect(port_of(node.listeners["amqp"]))
        channel = connection.channel()
        channel.queue_declare("from-mqtt")
        channel.queue_bind("from-mqtt", "amq.topic", "sensors.*.temp")
        time.sleep(1.0)  # the bridge starts within half a second of the first binding
        # MQTT → AMQP: the routing key is the MQTT topic with . for /.
        for topic, payload in [("sensors/kitchen/temp", "21.5"), ("sensors/kitchen/hum", "40")]:
            subprocess.run(["mosquitto_pub", "-p", str(node.mqtt_port), "-t", topic, "-m", payload, "-q", "1"],
                           check=True, timeout=30)
        got = drain(channel, "from-mqtt", 1, timeout=15)
        method, _, body = got[0]
        assert (method.exchange, method.routing_key, body) == ("amq.topic", "sensors.kitchen.temp", b"21.5")
        assert channel.basic_get("from-mqtt") == (None, None, None)
        # AMQP → MQTT: a publish to amq.topic reaches an MQTT subscriber (and an AMQP queue once).
        sub = subprocess.Popen(["mosquitto_sub", "-p", str(node.mqtt_port), "-t", "sensors/#", "-C", "1", "-v",
                                "-W", "20"], stdout=subprocess.PIPE, text=True)
        time.sleep(1.0)
        channel.confirm_delivery()
        channel.basic_publish("amq.topic", "sensors.garage.temp", b"9.5")
        out, _ = sub.communicate(timeout=30)
        assert out.strip() == "sensors/garage/temp 9.5"
        got = drain(channel, "from-mqtt", 1, timeout=15)
        assert got[0][2] == b"9.5"
        time.sleep(1.0)
        assert channel.basic_get("from-mqtt") == (None, None, None)  # not a second time via the bridge
        connection.close()
    finally:
        node.stop()


def test_an_acknowledgement_held_in_a_transaction_keeps_its_lease(data_dir):
    node = Node(data_dir, listeners=2, gateways=())
    gateway = GatewayProcess("amqp-gateway", "amqp", node.journal, ["--allow-anonymous", "--lease-ms", "1000"])
    try:
        connection = connect(port_of(gateway.address))
        channel = connection.channel()
        channel.queue_declare("tx-lease")
        channel.confirm_delivery()
        channel.basic_publish("", "tx-lease", b"once")
        tx = connection.channel()
        tx.tx_select()
        method, _, _ = tx.basic_get("tx-lease")
        tx.basic_ack(method.delivery_tag)
        time.sleep(2.5)  # longer than the lease: renewed while the transaction holds the ack
        assert channel.basic_get("tx-lease") == (None, None, None)
        tx.tx_commit()
        tx.close()
        time.sleep(1.5)
        assert channel.basic_get("tx-lease") == (None, None, None)
        connection.close()
    finally:
        gateway.stop()
        node.stop()
