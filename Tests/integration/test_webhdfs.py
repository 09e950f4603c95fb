"""The WebHDFS test server the object tier's tests use, checked with the third-party HdfsCLI
client (`hdfs` from PyPI): what it accepts and answers is what a WebHDFS client expects."""
import hdfs
import pytest


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
