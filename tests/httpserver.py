"""A loopback HTTP file server for the fetch tests: Range requests and switchable faults.

Serves `files` ({name: bytes}) on 127.0.0.1 at an ephemeral port from a background thread and logs
every request (path, Range header). Faults, set on the instance between requests:
  drop_after / drops: send the headers with the full length, then only `drop_after` body bytes and
      close the connection, for the next `drops` requests;
  stall_after / stalls / stall_s: send `stall_after` body bytes, then go silent for `stall_s` seconds
      (the client's read timeout must fire) before closing, for the next `stalls` requests;
  ignore_range: answer 200 with the whole file even when a Range is asked;
  status / status_times: answer HTTP `status` to the next `status_times` requests (-1: always).
"""

from __future__ import annotations

import re
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"

    def log_message(self, format, *args):  # keep pytest output quiet
        pass

    def do_GET(self):
        st = self.server.state
        name = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
        rng = self.headers.get("Range")
        with st.lock:
            st.requests.append({"path": name, "range": rng})
            status = None
            if st.status is not None and st.status_times != 0:
                status, st.status_times = st.status, st.status_times - 1
            drop = None
            if st.drop_after is not None and st.drops > 0:
                drop, st.drops = st.drop_after, st.drops - 1
            stall = None
            if st.stall_after is not None and st.stalls > 0:
                stall, st.stalls = st.stall_after, st.stalls - 1
        if status is not None:
            self.send_error(status)
            return
        data = st.files.get(name)
        if data is None:
            self.send_error(404)
            return
        m = re.match(r"^bytes=(\d+)-$", rng or "")
        if m and not st.ignore_range:
            start = int(m.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            body = data[start:]
        else:
            self.send_response(200)
            body = data
        self.send_header("Content-Type", "application/gzip")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if drop is not None or stall is not None:
            self.wfile.write(body[: drop if drop is not None else stall])
            self.wfile.flush()
            if stall is not None:
                time.sleep(st.stall_s)
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: "FileServer"


class FileServer:
    def __init__(self, files: dict[str, bytes] | None = None):
        self.files = dict(files or {})
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.drop_after: int | None = None
        self.drops = 0
        self.stall_after: int | None = None
        self.stalls = 0
        self.stall_s = 1.0
        self.ignore_range = False
        self.status: int | None = None
        self.status_times = 0
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.state = self
        # a short poll interval: shutdown() waits for it, and every test starts and stops a server
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, name: str) -> str:
        return f"{self.base_url}/{urllib.parse.quote(name)}"

    def __enter__(self) -> "FileServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
