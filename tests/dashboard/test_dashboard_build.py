"""build() and `python -m nas.dashboard`: pages from the store alone, escaping, offline, bad input."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from dashboard_seed import EVIL, Seed, lg, seed_study

from nas.dashboard import DashboardError, build, build_comparison
from nas.dashboard.pages import page_name
from nas.study.store import Store

REPO = Path(__file__).resolve().parents[2]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_build_writes_index_and_pages_without_touching_the_store(seeded, tmp_path: Path) -> None:
    before = _sha(seeded.path)
    paths = build(seeded.url, None, tmp_path)
    assert _sha(seeded.path) == before  # read-only
    assert [p.name for p in paths] == ["index.html", "alpha.html", "beta.html", page_name(EVIL), "gamma.html"]
    index = (tmp_path / "index.html").read_text()
    for name in ("alpha", "beta"):
        assert f'<a href="{name}.html">{name}</a>' in index
    assert re.search(r'<a href="alpha.html">alpha</a></td><td[^>]*>sparse_attn</td><td data-v="7">7</td>'
                     r'<td data-v="1">1</td><td data-v="1">1</td>', index)  # complete, pruned, failed
    assert "#7: quality 1.3, flops_ratio 0.45" in index  # a best point of alpha's front
    page = (tmp_path / "alpha.html").read_text()
    for div in ("pareto", "hypervolume", "curves", "parallel", "importance", "trials", "failed"):
        assert f'id="{div}"' in page
    assert "trial 5: RuntimeError: &lt;b&gt;out of memory&lt;/b&gt;" in page  # failed trials listed, escaped
    assert re.search(r'id="free-ranking">free ranking \(more flops_ratio = better quality\) over \d+ '
                     r"configurations: Kendall tau-b with the proxy&#x27;s quality", page)  # beside the proxy's


def test_pages_are_offline(seeded, tmp_path: Path) -> None:
    build(seeded.url, ["alpha"], tmp_path)
    page = (tmp_path / "alpha.html").read_text()
    assert re.findall(r'<script src="([^"]+)"', page) == ["plotly.min.js"]
    assert "cdn" not in page.lower() and "https://" not in re.sub(r"<script>.*?</script>", "", page, flags=re.S)
    js = (tmp_path / "plotly.min.js").read_text()
    assert len(js) > 1_000_000 and "plotly.js" in js[:400]


def test_html_like_names_and_params_are_escaped(seeded, tmp_path: Path) -> None:
    build(seeded.url, [EVIL], tmp_path)
    page = (tmp_path / page_name(EVIL)).read_text()
    assert "alert(1)" in page and "<script>alert(1)" not in page
    assert "<h1>Study &lt;script&gt;alert(1)&lt;/script&gt;</h1>" in page
    assert "<script>alert" not in (tmp_path / "index.html").read_text()
    assert "/" not in page_name(EVIL) and page_name("alpha") == "alpha.html" and page_name("index") != "index.html"


def test_comparison_page(seeded, tmp_path: Path) -> None:
    path = build_comparison(seeded.url, ["alpha", "beta"], tmp_path)
    page = path.read_text()
    assert path.name == "compare--alpha--beta.html" and 'id="pareto"' in page
    assert "alpha: Pareto front" in page and "beta: Pareto front" in page
    with pytest.raises(DashboardError, match=r"studies=\['alpha'\] is invalid: a comparison needs at least two"):
        build_comparison(seeded.url, ["alpha"], tmp_path)


def test_unknown_study_lists_known_ones(seeded, tmp_path: Path) -> None:
    with pytest.raises(DashboardError) as err:
        build(seeded.url, ["nope"], tmp_path / "out")
    assert str(err.value).startswith("study='nope' not found in sqlite:///") and "alpha, beta" in str(err.value)
    assert "\n" not in str(err.value) and not (tmp_path / "out").exists()


def test_empty_and_unreachable_stores(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    Store(f"sqlite:///{empty}").close()  # the nas tables, no study
    with pytest.raises(DashboardError, match=r"holds no studies: run python -m nas.search first"):
        build(f"sqlite:///{empty}", None, tmp_path)
    bare = tmp_path / "bare.db"
    bare.write_bytes(b"")  # a SQLite file without tables
    with pytest.raises(DashboardError, match="holds no studies"):
        build(f"sqlite:///{bare}", None, tmp_path)
    missing = f"sqlite:///{tmp_path / 'missing' / 'nas.db'}"
    with pytest.raises(DashboardError, match=re.escape(f"store.url={missing} is unreachable: no such SQLite file")):
        build(missing, None, tmp_path)
    assert not (tmp_path / "missing").exists()  # nothing created
    server = "postgresql://nas@127.0.0.1:9/nas"  # the discard port: nothing listens
    with pytest.raises(DashboardError, match=re.escape(f"store.url={server}")) as err:
        build(server, None, tmp_path)
    assert "\n" not in str(err.value)


def test_studies_without_results_still_get_pages(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'edge.db'}"
    seed_study(url, "fresh", [])
    seed_study(url, "broken", [Seed(0, "FAIL", lg(8), None, 0.5, rungs=1, error="boom")])
    build(url, None, tmp_path)
    fresh, broken = (tmp_path / "fresh.html").read_text(), (tmp_path / "broken.html").read_text()
    assert "No intermediate reports yet." in fresh and "needs at least 2 completed trials" in fresh
    assert "fewer than two configurations, nothing to compare" in fresh
    assert "trial 0: boom" in broken and 'id="curves"' in broken and 'id="pareto"' in broken


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "nas.dashboard", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env=env)


def test_cli_builds_pages_and_fails_cleanly(seeded, tmp_path: Path) -> None:
    ok = _cli(f"store.url={seeded.url}", f"out_dir={tmp_path}", "studies=[alpha,beta]")
    assert ok.returncode == 0, ok.stderr
    printed = [line.removeprefix("dashboard: ") for line in ok.stdout.splitlines() if line.startswith("dashboard: ")]
    assert [Path(p).name for p in printed] == ["index.html", "alpha.html", "beta.html", "compare--alpha--beta.html"]
    bad = _cli(f"store.url={seeded.url}", f"out_dir={tmp_path}", "study=nope")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [f"error: study='nope' not found in {seeded.url}: known studies are "
                                               f"alpha, beta, {EVIL}, gamma"]


def test_a_study_page_shows_the_latest_fidelity_check_and_the_adequacy_record(tmp_path: Path) -> None:
    import datetime as dt

    from nas.study.store import Fidelity

    url = f"sqlite:///{tmp_path / 'f.db'}"
    seed_study(url, "checked", [Seed(0, "COMPLETE", lg(8), 1.0, 0.5), Seed(1, "COMPLETE", lg(16), 0.9, 0.6)])
    store = Store(url)
    old = Fidelity([1, 0], [0.9, 1.0], [0.8, 0.95], 4.0, 4096, 1.0, "v0", dt.datetime(2026, 1, 2, 3, 4))
    new = Fidelity([1, 0], [0.9, 1.0], [0.85, 0.8], 8.0, 65536, -1.0, "v1", dt.datetime(2026, 2, 3, 4, 5),
                   {"name": "tiny-ref", "n_layers": 8, "d_model": 64, "seq_len": 512, "budget_tokens": 65536})
    store.record_fidelity("checked", old)
    build(url, ["checked"], tmp_path / "a")
    first = (tmp_path / "a" / "checked.html").read_text()
    assert "Kendall tau-b <b>1.0000</b> over the top k=2 trials" in first
    assert "the study&#x27;s proxy at 4x its budget (4,096 tokens)" in first and "2026-01-02 03:04" in first
    store.record_fidelity("checked", new)
    store.close()
    build(url, ["checked"], tmp_path / "b")
    page = (tmp_path / "b" / "checked.html").read_text()
    assert 'id="fidelity"' in page and "Kendall tau-b <b>-1.0000</b> over the top k=2 trials" in page
    assert "reference proxy tiny-ref: 8 layers x 64 wide, ? heads, 512 positions, 65,536 tokens" in page
    assert "2026-02-03 04:05 UTC (latest of 2)" in page
    assert 'id="adequacy"' in page and "predates it" in page  # seeded without an adequacy record


def test_a_store_from_before_revision_0003_still_loads_read_only(seeded, tmp_path: Path) -> None:
    """Older stores: two objectives with objectives.compute: NAME, no adequacy / reference columns."""
    import shutil

    from alembic import command
    from alembic.config import Config

    db = tmp_path / "old.db"
    shutil.copy(seeded.path, db)
    store = Store(f"sqlite:///{db}")
    cfg = Config()
    cfg.set_main_option("script_location", str(REPO / "nas" / "study" / "migrations"))
    with store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0002")
    store.close()
    before = _sha(db)
    build(f"sqlite:///{db}", ["alpha", "gamma"], tmp_path / "out")
    assert _sha(db) == before  # read-only: not upgraded by the dashboard
    alpha = (tmp_path / "out" / "alpha.html").read_text()
    assert "predates it" in alpha and "No fidelity check yet" in alpha and 'id="pareto"' in alpha
