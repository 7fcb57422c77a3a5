"""Serve the dashboards on 127.0.0.1 and rebuild them from the store while a search runs."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TextIO

from nas.dashboard.reader import DashboardError

HOST = "127.0.0.1"


class _Handler(SimpleHTTPRequestHandler):
    """Static files from the dashboards folder, never cached, no request log."""

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        return


class DashboardServer:
    """An HTTP server over `out_dir` bound to 127.0.0.1 (port 0: any free port), running in a thread."""

    def __init__(self, out_dir: str | Path, port: int) -> None:
        self.out_dir = Path(out_dir)
        if not 0 <= int(port) <= 65535:
            raise DashboardError(f"port={port!r} is invalid: expected 0..65535 (0 = any free port)")
        try:
            self.httpd = ThreadingHTTPServer((HOST, int(port)), partial(_Handler, directory=str(out_dir)))
        except OSError as err:
            raise DashboardError(f"port={port} on {HOST} cannot be used ({err.strerror}): choose another port=") \
                from err
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="nas-dashboard", daemon=True)

    @property
    def url(self) -> str:
        """http://127.0.0.1:<port>/"""
        return f"http://{HOST}:{self.httpd.server_address[1]}/"

    def start(self) -> DashboardServer:
        """Start serving in the background."""
        self.thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def serve(server: DashboardServer, rebuild: Callable[[], Any], refresh_s: float,
          stop: threading.Event | None = None, out: TextIO = sys.stdout) -> None:
    """Start `server` and call rebuild() every refresh_s seconds until `stop` is set or Ctrl-C; then stop it."""
    if refresh_s <= 0:
        raise DashboardError(f"refresh_s={refresh_s!r} is invalid: expected seconds > 0")
    server.start()
    stop = stop or threading.Event()
    print(f"serving {server.url} (pages rebuilt from the store every {refresh_s:g} s; Ctrl-C stops)", file=out,
          flush=True)
    try:
        while not stop.wait(refresh_s):
            try:
                rebuild()
            except DashboardError as err:
                print(f"rebuild failed: {err}", file=out, flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
