"""Headless Chromium driven over the DevTools protocol on a pipe (stdlib only): console errors, plots, screenshot."""

from __future__ import annotations

import base64
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-unsafe-swiftshader", "--remote-debugging-pipe", "--window-size=1400,1000"]
PLOTS_JS = ("Array.prototype.filter.call(document.querySelectorAll('.js-plotly-plot'),"
            " function (d) { return d.querySelector('.main-svg') !== null; }).length")


def chromium() -> str | None:
    """The Chromium executable (Debian's), or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class PageResult:
    """What loading one page gave."""

    plots: int
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    text: str = ""
    value: Any = None


class Browser:
    """One headless Chromium; open() loads a page in a fresh tab and reports what happened."""

    def __init__(self) -> None:
        self._profile = tempfile.TemporaryDirectory(prefix="nas-chromium-")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        def fds() -> None:  # the protocol pipe: the browser reads fd 3 and writes fd 4
            a, b = os.dup(to_child_r), os.dup(from_child_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen([chromium(), *FLAGS, f"--user-data-dir={self._profile.name}", "about:blank"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     pass_fds=(3, 4), preexec_fn=fds)
        os.close(to_child_r)
        os.close(from_child_w)
        self._inbox: queue.Queue = queue.Queue()
        self._next = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        buf = b""
        while chunk := os.read(self._from_child, 1 << 16):
            buf += chunk
            *messages, buf = buf.split(b"\0")
            for m in messages:
                self._inbox.put(json.loads(m))

    def _send(self, method: str, params: dict | None = None, session: str | None = None,
              events: list | None = None, timeout: float = 20.0) -> dict[str, Any]:
        self._next += 1
        msg: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_child, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._inbox.get(timeout=max(0.01, deadline - time.monotonic()))
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if events is not None and "method" in reply:
                events.append(reply)

    def open(self, url: str, expect_plots: int, screenshot: Path | None = None, timeout: float = 60.0,
             then: Callable[[], None] | None = None, wait_text: str = "", script: str = "") -> PageResult:
        """Load `url`, wait until `expect_plots` plotly plots rendered (or timeout), collect errors and requests.

        then/wait_text: after the load, call then() and wait until the page's text contains wait_text;
        script: a JavaScript expression evaluated after the load (its value is returned).
        """
        events: list[dict] = []
        target = self._send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self._send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for method in ("Runtime.enable", "Log.enable", "Page.enable", "Network.enable"):
            self._send(method, session=session, events=events)
        self._send("Emulation.setDeviceMetricsOverride", {"width": 1400, "height": 1000, "deviceScaleFactor": 1,
                                                           "mobile": False}, session, events)
        self._send("Page.navigate", {"url": url}, session, events)
        deadline, plots = time.monotonic() + timeout, 0
        while time.monotonic() < deadline:
            value = self._send("Runtime.evaluate", {"expression": PLOTS_JS, "returnByValue": True}, session, events)
            plots = int(value.get("result", {}).get("value") or 0)
            if plots >= expect_plots and any(e["method"] == "Page.loadEventFired" for e in events):
                break
            time.sleep(0.2)
        time.sleep(0.3)  # late errors from rendering
        text = self._text(session, events)
        if then is not None:
            then()
            while wait_text not in text and time.monotonic() < deadline + timeout:
                time.sleep(0.3)
                text = self._text(session, events)
        value = None
        if script:
            value = self._send("Runtime.evaluate", {"expression": script, "returnByValue": True}, session,
                               events)["result"].get("value")
        if screenshot is not None:
            size = self._send("Page.getLayoutMetrics", session=session, events=events)["cssContentSize"]
            clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
            shot = self._send("Page.captureScreenshot", {"format": "png", "clip": clip, "captureBeyondViewport": True},
                              session, events)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
        self._send("Target.closeTarget", {"targetId": target}, events=events)
        return PageResult(plots, _errors(events), _requests(events), text, value)

    def _text(self, session: str, events: list) -> str:
        reply = self._send("Runtime.evaluate", {"expression": "document.body ? document.body.innerText : ''",
                                                "returnByValue": True}, session, events)
        return reply["result"].get("value", "")

    def close(self) -> None:
        """Stop the browser."""
        try:
            self._send("Browser.close", timeout=5)
        except (RuntimeError, queue.Empty, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_child)
        self._profile.cleanup()


def _errors(events: list[dict]) -> list[str]:
    out = []
    for e in events:
        p = e.get("params", {})
        if e["method"] == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            out.append(d.get("exception", {}).get("description") or d.get("text", "exception"))
        elif e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append(" ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
        elif e["method"] == "Page.javascriptDialogOpening":
            out.append(f"dialog opened: {p.get('message')}")
        elif e["method"] == "Log.entryAdded" and p["entry"].get("level") == "error":
            out.append(f"{p['entry'].get('source')}: {p['entry'].get('text')} {p['entry'].get('url', '')}")
    return out


def _requests(events: list[dict]) -> list[str]:
    return [e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"]
