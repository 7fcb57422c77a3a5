"""Every page opens in headless Chromium with its plots drawn, no console errors and nothing fetched online.

Screenshots are saved under $NAS_TEST_ARTIFACTS (default tests/artifacts/dashboard/, git-ignored) as artefacts.
"""

from __future__ import annotations

import io
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from dashboard_browser import Browser, chromium
from dashboard_seed import EVIL, KNOWN

from nas.dashboard import build, build_comparison
from nas.dashboard.pages import page_name
from nas.dashboard.serve import DashboardServer, serve
from nas.study.store import Store

pytestmark = pytest.mark.skipif(chromium() is None, reason="Debian's chromium is not installed "
                                "(CI installs it with .ci/system-deps: apt-get install chromium)")
ARTIFACTS = Path(os.environ.get("NAS_TEST_ARTIFACTS") or Path(__file__).resolve().parents[1] / "artifacts") \
    / "dashboard"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    b = Browser()
    yield b
    b.close()


@pytest.fixture(scope="module")
def pages(seeded, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dash")
    build(seeded.url, None, out)
    build_comparison(seeded.url, ["alpha", "beta"], out)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return out


SORT_BY_QUALITY = """(function () {
  var th = document.querySelectorAll('#trials th')[3], rows = function () {
    return Array.prototype.map.call(document.querySelectorAll('#trials tbody tr'), function (r) {
      return r.cells[0].textContent; }); };
  th.click(); var up = rows(); th.click(); return [th.textContent, up, rows()];
})()"""


def _check_sorted(header: str, ascending: list[str], descending: list[str]) -> None:
    """Clicking the quality header sorts ascending, clicking again descending; failed trials (no value) last."""
    rated = [s for s in KNOWN if s.quality is not None]  # pruned: the last rung's quality; failed: none (last)
    assert header.startswith("quality")
    assert ascending == [str(s.number) for s in sorted(rated, key=lambda s: s.quality)] + ["5"]
    assert descending == [str(s.number) for s in sorted(rated, key=lambda s: -s.quality)] + ["5"]


@pytest.mark.parametrize("page, plots, text", [
    ("index.html", 0, "alpha"),
    ("alpha.html", 5, "Study alpha"),  # front, hypervolume, curves, parallel coordinates, importance
    (page_name(EVIL), 4, f"Study {EVIL}"),  # no Optuna study of that name: no importance plot
    ("gamma.html", 5, "Study gamma"),  # two compute objectives: the front is one grid of pairwise panels
    ("compare--alpha--beta.html", 1, "Comparison: alpha, beta"),
])
def test_page_renders_offline_without_errors(browser: Browser, pages: Path, page: str, plots: int,
                                             text: str) -> None:
    shot = ARTIFACTS / f"{Path(page).stem}.png"
    sort = page == "alpha.html"  # the trial table is checked once, on the seeded study with known values
    result = browser.open((pages / page).as_uri(), plots, screenshot=shot, script=SORT_BY_QUALITY if sort else "")
    if sort:
        _check_sorted(*result.value)
    assert result.errors == []
    assert result.plots == plots
    assert text in result.text  # an HTML-like study name shows as text
    assert all(u.startswith("file://") for u in result.requests), result.requests
    assert shot.stat().st_size > 10_000


def test_served_page_reloads_when_a_trial_lands(browser: Browser, seeded, tmp_path: Path) -> None:
    db = tmp_path / "live.db"
    shutil.copy(seeded.path, db)
    url, out = f"sqlite:///{db}", tmp_path / "dash"
    build(url, ["alpha"], out, refresh_s=0.5)
    server, stop = DashboardServer(out, 0), threading.Event()
    thread = threading.Thread(target=serve, args=(server, lambda: build(url, ["alpha"], out, refresh_s=0.5,
                                                                        only_changed=True), 0.5, stop),
                              kwargs={"out": io.StringIO()})
    thread.start()
    landed = "#42: quality 0.9, flops_ratio 0.3"  # a new best point of alpha in the index

    def land() -> None:
        store = Store(url)
        store.start_trial("alpha", 42, {"attention": "local_global", "window": 40}, {}, cost={"flops_ratio": 0.3})
        store.finish_trial("alpha", 42, "COMPLETE", objectives={"quality": 0.9, "flops_ratio": 0.3})
        store.close()

    try:  # the index polls like every served page, and needs no plotly.js (quick under a loaded CPU)
        result = browser.open(server.url + "index.html", 0, then=land, wait_text=landed)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert landed in result.text and result.errors == []
    assert all(u.startswith(server.url) for u in result.requests), result.requests
