"""Fixtures that start real Strata processes on free loopback ports and stop them by PID."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest

BIN = os.environ.get("STRATA_BIN_DIR") or os.path.join(os.path.dirname(__file__), "..", "..", ".build", "debug")


class Node:
    """A journal-node process, by default with the MQTT gateway in-process (listeners=2: none).
    Its log (warnings and up) goes to `log_path`."""

    def __init__(self, data_dir, extra=(), listeners=None, gateways=None, listen="127.0.0.1:0"):
        self.data_dir = data_dir
        if gateways is None:
            gateways = ("mqtt",) if listeners is None or listeners >= 3 else ()
        if listeners is None:
            listeners = 2 + len(gateways)
        gateway_args = ["--gateways", ",".join(gateways)] if gateways else []
        for name in gateways:
            gateway_args += [f"--{name}-listen", "127.0.0.1:0"]
        args = [os.path.join(BIN, "journal-node"), "--data-dir", data_dir, "--listen", listen,
                "--http", "127.0.0.1:0", *gateway_args, "--log-level", "warning", *extra]
        os.makedirs(data_dir, exist_ok=True)
        self.log_path = os.path.join(data_dir, "node.log")  # the journal reads only its *.wal files here
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=open(self.log_path, "a"), text=True)
        self.listeners = {}
        deadline = time.monotonic() + 60
        while len(self.listeners) < listeners:
            assert time.monotonic() < deadline, "journal-node did not announce its listeners"
            line = self.process.stdout.readline()
            assert line, "journal-node exited at start"
            name, address = line.split()
            self.listeners[name] = address
        self.mqtt_port = int(self.listeners["mqtt"].rsplit(":", 1)[1]) if "mqtt" in self.listeners else None
        self.kafka = self.listeners.get("kafka")
        self.journal = self.listeners["journal"]
        self.http = self.listeners["http"]

    def log(self):
        with open(self.log_path) as f:
            return f.read()

    def stop(self, sig=signal.SIGTERM):
        if self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=30)


class GatewayProcess:
    """A gateway executable (mqtt-gateway, kafka-gateway) as its own process on a journal-node;
    `address` is the listener it announced."""

    def __init__(self, executable, announce, journal, extra=()):
        args = [os.path.join(BIN, executable), "--journal", journal, "--listen", "127.0.0.1:0",
                "--log-level", "warning", *extra]
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()
        assert line.startswith(announce + " "), f"{executable} did not start: {line!r}"
        self.address = line.split()[1]

    def stop(self, sig=signal.SIGTERM):
        if self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=30)


@pytest.fixture
def data_dir():
    path = tempfile.mkdtemp(prefix="strata-it-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def node(data_dir):
    started = Node(data_dir, ["--mqtt-allow-anonymous"])
    yield started
    started.stop()


def shard_info(node, name):
    """A shard's catalog entry from the node's admin API."""
    with urllib.request.urlopen(f"http://{node.http}/admin/shards/{urllib.request.quote(name, safe='')}") as answer:
        return json.load(answer)


def metric(node, name, **labels):
    """A metric's value on the node's /metrics: the sample named `name` whose labels include
    `labels` (0 when there is none yet: swift-metrics creates a metric at its first use)."""
    with urllib.request.urlopen(f"http://{node.http}/metrics") as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith("#"):
                continue
            sample, _, value = line.rpartition(" ")
            metric_name, _, label_text = sample.partition("{")
            if metric_name == name and all(f'{k}="{v}"' in label_text for k, v in labels.items()):
                return float(value)
    return 0.0


def users_file(path, users, password):
    """A users file (`strata scram-user` lines, the one every gateway takes) at `path`: each
    of `users` with `password`."""
    with open(path, "w") as f:
        for user in users:
            f.write(subprocess.run([os.path.join(BIN, "strata"), "scram-user", user], input=password + "\n",
                                   capture_output=True, text=True, check=True).stdout)
    return path


def read_until_closed(sock, chunk=4096):
    """Everything the peer sends until it closes the connection."""
    data = b""
    while True:
        part = sock.recv(chunk)
        if not part:
            return data
        data += part


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def webhdfs(data_dir):
    """The WebHDFS test server (Tests/webhdfs_server.py: namenode and datanode in one process)."""
    port = free_port()
    server = os.path.join(os.path.dirname(__file__), "..", "webhdfs_server.py")
    process = subprocess.Popen([sys.executable, server, os.path.join(data_dir, "hdfs"), str(port)],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().startswith("webhdfs ")
    yield f"http://127.0.0.1:{port}"
    process.kill()
    process.wait()


def pytest_configure(config):
    # kafka-python 3 reads its protocol schemas through deprecated importlib calls.
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning")
