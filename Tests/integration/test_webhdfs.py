"""The WebHDFS test server the object tier's tests use, checked with the third-party HdfsCLI
client (`hdfs` from PyPI): what it accepts and answers is what a WebHDFS client expects."""
import os
import socket
import subprocess
import sys

import hdfs
import pytest

SERVER = os.path.join(os.path.dirname(__file__), "..", "webhdfs_server.py")


@pytest.fixture
def webhdfs(data_dir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen([sys.executable, SERVER, os.path.join(data_dir, "hdfs"), str(port)],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().startswith("webhdfs ")
    yield f"http://127.0.0.1:{port}"
    process.kill()
    process.wait()


def test_hdfscli_against_the_webhdfs_test_server(webhdfs):
    client = hdfs.InsecureClient(webhdfs, user="strata")
    client.makedirs("/strata/kafka")
    client.write("/strata/kafka/object", data=b"x" * 100_000, overwrite=True)
    with client.read("/strata/kafka/object", offset=10, length=20) as reader:
        assert reader.read() == b"x" * 20
    assert client.list("/strata/kafka") == ["object"]
    assert client.status("/strata/kafka/object")["length"] == 100_000
    assert client.status("/strata/missing", strict=False) is None
    with pytest.raises(hdfs.HdfsError):
        client.read("/strata/missing").__enter__()
    assert client.delete("/strata/kafka/object") is True
    assert client.list("/strata/kafka") == []
