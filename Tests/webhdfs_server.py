"""A small WebHDFS server for the object tier's tests: namenode and datanode in one process.

It speaks the REST API that Hadoop's WebHDFS documents, for the operations the tier uses:
CREATE (namenode answers 307 with a datanode Location; the data goes there), OPEN with offset
and length (also through a 307), LISTSTATUS, GETFILESTATUS, MKDIRS and DELETE, with Hadoop's
RemoteException JSON for errors. Files live under a directory given on the command line.
The tests run HdfsCLI (the `hdfs` package) against it too, to show it behaves like WebHDFS.

Usage: python webhdfs_server.py ROOT PORT   (prints "webhdfs PORT" once listening)
"""
import json
import os
import shutil
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PREFIX = "/webhdfs/v1"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _parse(self):
        url = urllib.parse.urlsplit(self.path)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query, keep_blank_values=True).items()}
        if not url.path.startswith(PREFIX):
            return None, query
        hdfs_path = urllib.parse.unquote(url.path[len(PREFIX):]) or "/"
        local = os.path.normpath(os.path.join(self.server.root, hdfs_path.lstrip("/")))
        if not (local == self.server.root or local.startswith(self.server.root + os.sep)):
            return None, query
        return (hdfs_path, local), query

    def _send(self, status, body=b"", content_type="application/json", headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status, document):
        self._send(status, json.dumps(document).encode())

    def _error(self, status, exception, message):
        self._json(status, {"RemoteException": {"exception": exception, "javaClassName": "java.io." + exception,
                                                "message": message}})

    def _body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _redirect(self, query):
        location = f"http://127.0.0.1:{self.server.server_address[1]}{urllib.parse.urlsplit(self.path).path}?" + \
            urllib.parse.urlencode({**query, "datanode": "true"})
        self._send(307, headers=[("Location", location)])

    def _status(self, name, local):
        stat = os.stat(local)
        return {"pathSuffix": name, "type": "DIRECTORY" if os.path.isdir(local) else "FILE", "length": stat.st_size,
                "modificationTime": int(stat.st_mtime * 1000), "accessTime": int(stat.st_atime * 1000),
                "blockSize": 134217728, "replication": 1, "owner": "strata", "group": "strata", "permission": "644"}

    def _handle(self, handler):
        """Parses the request path and query once, then calls handler(hdfs_path, local, OP, query)."""
        paths, query = self._parse()
        if paths is None:
            return self._error(404, "FileNotFoundException", "not a WebHDFS path")
        hdfs_path, local = paths
        handler(hdfs_path, local, query.get("op", "").upper(), query)

    def do_PUT(self):
        self._handle(self._put)

    def do_GET(self):
        self._handle(self._get)

    def do_DELETE(self):
        self._handle(self._delete)

    def _put(self, hdfs_path, local, op, query):
        if op == "CREATE":
            if "datanode" not in query:
                self._body()  # a client that sent data anyway: ignored, as the namenode does
                return self._redirect(query)
            data = self._body()
            if os.path.exists(local) and query.get("overwrite", "false") != "true":
                return self._error(403, "FileAlreadyExistsException", f"{hdfs_path} already exists")
            os.makedirs(os.path.dirname(local), exist_ok=True)
            with open(local, "wb") as f:
                f.write(data)
            return self._send(201, headers=[("Location", "hdfs://" + hdfs_path)])
        if op == "MKDIRS":
            os.makedirs(local, exist_ok=True)
            return self._json(200, {"boolean": True})
        self._error(400, "IllegalArgumentException", f"unsupported PUT op {op}")

    def _get(self, hdfs_path, local, op, query):
        if not os.path.exists(local):
            return self._error(404, "FileNotFoundException", f"File does not exist: {hdfs_path}")
        if op == "OPEN":
            if "datanode" not in query:
                return self._redirect(query)
            offset = int(query.get("offset", 0))
            with open(local, "rb") as f:
                f.seek(offset)
                length = query.get("length")
                data = f.read(int(length)) if length is not None else f.read()
            return self._send(200, data, "application/octet-stream")
        if op == "LISTSTATUS":
            if os.path.isdir(local):
                entries = [self._status(name, os.path.join(local, name)) for name in sorted(os.listdir(local))]
            else:
                entries = [self._status("", local)]
            return self._json(200, {"FileStatuses": {"FileStatus": entries}})
        if op == "GETFILESTATUS":
            return self._json(200, {"FileStatus": self._status("", local)})
        self._error(400, "IllegalArgumentException", f"unsupported GET op {op}")

    def _delete(self, hdfs_path, local, op, query):
        if not os.path.exists(local):
            return self._json(200, {"boolean": False})
        if os.path.isdir(local):
            if query.get("recursive", "false") != "true" and os.listdir(local):
                return self._error(403, "PathIsNotEmptyDirectoryException", "directory is not empty")
            shutil.rmtree(local)
        else:
            os.remove(local)
        self._json(200, {"boolean": True})


def main():
    root, port = os.path.abspath(sys.argv[1]), int(sys.argv[2])
    os.makedirs(root, exist_ok=True)
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.root = root
    print(f"webhdfs {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
