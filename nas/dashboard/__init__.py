"""Pareto dashboards built from the store alone: `python -m nas.dashboard`, or build() after a search."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from nas.dashboard.pages import (
    BUILD_JSON,
    combined_digest,
    comparison_name,
    comparison_page,
    index_page,
    page_name,
    study_page,
    write_plotlyjs,
    write_text,
)
from nas.dashboard.reader import DashboardError, StoreReader, StudyView, TrialView
from nas.profiles import REPO_ROOT

__all__ = ["DEFAULT_OUT", "DashboardError", "StudyView", "TrialView", "build", "build_comparison"]

DEFAULT_OUT = REPO_ROOT / "dashboards"


def _prepare(store_url: str | None, names: Sequence[str], out_dir: str | Path | None) -> tuple[StoreReader, Path]:
    """Open the store, check the study names, then make the output folder with plotly.js in it."""
    from nas.study.store import DEFAULT_URL

    reader = StoreReader(store_url or DEFAULT_URL)
    try:
        reader.check(list(names))
    except DashboardError:
        reader.close()
        raise
    out = Path(out_dir) if out_dir else DEFAULT_OUT
    out.mkdir(parents=True, exist_ok=True)
    write_plotlyjs(out)
    return reader, out


def _record(out: Path, digests: dict[str, str]) -> None:
    """Merge page digests into build.json (what served pages poll)."""
    write_text(out / BUILD_JSON, json.dumps({**_recorded(out), **digests}, indent=1, sort_keys=True))


def _recorded(out: Path) -> dict[str, str]:
    try:
        return json.loads((out / BUILD_JSON).read_text())
    except (OSError, ValueError):
        return {}


def build(store_url: str | None, study_names: Sequence[str] | None, out_dir: str | Path | None, *,
          refresh_s: float | None = None, only_changed: bool = False) -> list[Path]:
    """Write index.html (every study) and one page per named study (all when none named); the paths written.

    refresh_s: pages poll build.json and reload when their data changes (for serve); only_changed: skip pages
    whose data digest is already recorded in build.json.
    """
    reader, out = _prepare(store_url, study_names or [], out_dir)
    try:
        names = list(study_names or reader.names)
        views = {n: reader.study(n) for n in reader.names}
        recorded = _recorded(out) if only_changed else {}
        paths, digests = [], {}
        for name in names:
            page = page_name(name)
            if recorded.get(page) == views[name].digest() and (out / page).is_file():
                continue
            paths.append(write_text(out / page, study_page(views[name], reader.optuna_study(name), refresh_s)))
            digests[page] = views[name].digest()
        index_digest = combined_digest(list(views.values()))
        if recorded.get("index.html") != index_digest or not (out / "index.html").is_file():
            built = {p.name for p in out.glob("*.html")}
            paths.insert(0, write_text(out / "index.html", index_page(list(views.values()), built, refresh_s)))
            digests["index.html"] = index_digest
        _record(out, digests)
        return paths
    finally:
        reader.close()


def build_comparison(store_url: str | None, study_names: Sequence[str], out_dir: str | Path | None, *,
                     refresh_s: float | None = None) -> Path:
    """Write one page with the named studies' fronts on one plot; its path."""
    if len(study_names) < 2:
        raise DashboardError(f"studies={list(study_names)!r} is invalid: a comparison needs at least two study names")
    reader, out = _prepare(store_url, study_names, out_dir)
    try:
        views = [reader.study(n) for n in study_names]
        page = comparison_name(study_names)
        path = write_text(out / page, comparison_page(views, refresh_s))
        _record(out, {page: combined_digest(views)})
        return path
    finally:
        reader.close()
