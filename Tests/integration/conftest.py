"""Fixtures that start real Strata processes on free loopback ports and stop them by PID."""
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

BIN = os.environ.get("STRATA_BIN_DIR") or os.path.join(os.path.dirname(__file__), "..", "..", ".build", "debug")


class Node:
    """A journal-node process with the MQTT gateway in-process."""

    def __init__(self, data_dir, extra=(), listeners=3):
        self.data_dir = data_dir
        gateways = ["--gateways", "mqtt", "--mqtt-listen", "127.0.0.1:0"] if listeners >= 3 else []
        args = [os.path.join(BIN, "journal-node"), "--data-dir", data_dir, "--listen", "127.0.0.1:0",
                "--http", "127.0.0.1:0", *gateways, "--log-level", "warning", *extra]
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        self.listeners = {}
        deadline = time.monotonic() + 60
        while len(self.listeners) < listeners:
            assert time.monotonic() < deadline, "journal-node did not announce its listeners"
            line = self.process.stdout.readline()
            assert line, "journal-node exited at start"
            name, address = line.split()
            self.listeners[name] = address
        self.mqtt_port = int(self.listeners["mqtt"].rsplit(":", 1)[1]) if "mqtt" in self.listeners else None
        self.journal = self.listeners["journal"]

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
