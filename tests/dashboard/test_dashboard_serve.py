"""Serving on 127.0.0.1 while a search writes: pages are rebuilt as trials land and tell browsers to reload."""

from __future__ import annotations

import io
import json
import shutil
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from nas.dashboard import DashboardError, build
from nas.dashboard.serve import DashboardServer, serve
from nas.study.store import Store


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.status == 200 and r.headers["Cache-Control"] == "no-store"
        return r.read().decode()


def test_server_binds_loopback_and_serves_pages(seeded, tmp_path: Path) -> None:
    build(seeded.url, ["alpha"], tmp_path)
    server = DashboardServer(tmp_path, 0).start()
    try:
        assert server.httpd.server_address[0] == "127.0.0.1"
        assert "<h1>Study alpha</h1>" in _get(server.url + "alpha.html")
        assert "alpha.html" in json.loads(_get(server.url + "build.json"))
        with pytest.raises(DashboardError, match=r"port=\d+ on 127.0.0.1 cannot be used"):
            DashboardServer(tmp_path, server.httpd.server_address[1])
    finally:
        server.stop()
    with pytest.raises(DashboardError, match=r"port=70000 is invalid: expected 0..65535"):
        DashboardServer(tmp_path, 70000)


def test_served_pages_rebuild_when_a_trial_lands(seeded, tmp_path: Path) -> None:
    db = tmp_path / "live.db"
    shutil.copy(seeded.path, db)
    url, out = f"sqlite:///{db}", tmp_path / "dash"
    build(url, ["alpha"], out, refresh_s=0.2)
    page = (out / "alpha.html").read_text()
    assert "fetch(\"build.json\"" in page and "location.reload()" in page  # served pages poll for new data
    server, stop = DashboardServer(out, 0), threading.Event()
    rebuilds: list[int] = []

    def rebuild() -> None:
        rebuilds.append(len(build(url, ["alpha"], out, refresh_s=0.2, only_changed=True)))

    thread = threading.Thread(target=serve, args=(server, rebuild, 0.2, stop), kwargs={"out": io.StringIO()})
    thread.start()
    try:
        before = json.loads(_get(server.url + "build.json"))["alpha.html"]
        deadline = time.monotonic() + 20  # a few refreshes (0.2 s apart; slower on a busy machine)
        while len(rebuilds) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(rebuilds) >= 3 and set(rebuilds) == {0}  # nothing changed: nothing rewritten
        store = Store(url)
        store.start_trial("alpha", 9, {"attention": "local_global", "window": 40}, {}, cost={"flops_ratio": 0.3})
        store.add_report("alpha", 9, 10, 10240, {"quality": 0.9})
        store.finish_trial("alpha", 9, "COMPLETE", objectives={"quality": 0.9, "flops_ratio": 0.3})
        store.close()
        deadline = time.monotonic() + 20
        while json.loads(_get(server.url + "build.json"))["alpha.html"] == before and time.monotonic() < deadline:
            time.sleep(0.1)
        assert json.loads(_get(server.url + "build.json"))["alpha.html"] != before
        assert "trial 9" in _get(server.url + "alpha.html")
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()
    with pytest.raises(OSError):
        urllib.request.urlopen(server.url, timeout=2)
