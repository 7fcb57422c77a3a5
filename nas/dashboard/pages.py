"""HTML assembly: the index of every study, one page per study and comparison pages (offline: local plotly.js)."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from nas.dashboard.front_plot import front, plot_pareto_front
from nas.dashboard.hypervolume import plot_hypervolume
from nas.dashboard.importance import param_importances, plot_importances
from nas.dashboard.learning_curves import plot_learning_curves
from nas.dashboard.parallel import plot_parallel_coordinates
from nas.dashboard.proxy_checks import adequacy_html, fidelity_html
from nas.dashboard.reader import StudyView
from nas.dashboard.style import esc, num, params_text
from nas.dashboard.table import SORTER, trial_table
from nas.study.view import free_ranking_line, noise_verdict, quality_margin

PLOTLY_JS = "plotly.min.js"
BUILD_JSON = "build.json"  # page file -> digest of its data; a served page reloads when its entry changes
SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.5em; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: left; }
th { background: #f0f0f0; cursor: pointer; user-select: none; }
th[data-dir="asc"]::after { content: " \\25B2"; } th[data-dir="desc"]::after { content: " \\25BC"; }
tr.pruned td { color: #888; } tr.fail td { color: #b00; } tr.baseline td { font-weight: bold; }
.note { color: #666; font-style: italic; } .plot { min-height: 420px; }
"""


def page_name(label: str) -> str:
    """The page file of a study (its own name when file-safe, else a slug plus a hash)."""
    if SAFE.fullmatch(label) and label != "index" and len(label) <= 120:
        return f"{label}.html"
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("._-")[:60] or "study"
    return f"{slug}-{hashlib.sha1(label.encode()).hexdigest()[:8]}.html"


def comparison_name(names: Sequence[str]) -> str:
    """The page file comparing several studies."""
    return page_name("compare--" + "--".join(names))


def write_text(path: Path, text: str) -> Path:
    """Write atomically (a served page is never read half-written)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_plotlyjs(out_dir: Path) -> Path:
    """plotly.js next to the pages (written once per plotly version)."""
    from plotly.offline import get_plotlyjs

    path = out_dir / PLOTLY_JS
    js = get_plotlyjs()
    if not path.is_file() or path.stat().st_size != len(js.encode()):
        write_text(path, js)
    return path


def figure_html(fig: go.Figure, div_id: str) -> str:
    """A figure as an HTML fragment (plotly.js loaded once by the page)."""
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                       config={"responsive": True, "displaylogo": False}, default_height="520px")


def _poll(page: str, digest: str, refresh_s: float | None) -> str:
    """While serving: reload when build.json says this page's data changed."""
    if not refresh_s:
        return ""
    return (f"<script>(function () {{ var page = {json.dumps(page)}, digest = {json.dumps(digest)};\n"
            f"setInterval(function () {{ fetch({json.dumps(BUILD_JSON)}, {{cache: 'no-store'}})"
            ".then(function (r) { return r.json(); }).then(function (b) {"
            " if (b[page] && b[page] !== digest) { location.reload(); } }).catch(function () {}); }, "
            f"{int(refresh_s * 1000)}); }})();</script>")


def document(title: str, body: str, page: str, digest: str, refresh_s: float | None, plotly: bool = True) -> str:
    """A whole page: the shared style, local plotly.js, and (when served) the reload poll."""
    script = f'<script src="{PLOTLY_JS}"></script>' if plotly else ""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f'<meta name="nas-digest" content="{digest}"><link rel="icon" href="data:,"><style>{CSS}</style>'
            f"{script}</head>\n<body>\n{body}\n{_poll(page, digest, refresh_s)}\n</body></html>\n")


def _counts(view: StudyView) -> str:
    return ", ".join(f"{n} {s.lower()}" for s, n in view.counts().items() if n or s != "RUNNING")


def _importance_html(view: StudyView, optuna_study: Any) -> str:
    if len(view.by_state("COMPLETE")) < 2:
        return '<p class="note">Knob importance needs at least 2 completed trials.</p>'
    if optuna_study is None:
        return '<p class="note">No Optuna study of this name in the store: knob importance unavailable.</p>'
    try:
        importances = param_importances(optuna_study, view.labels)
    except (ValueError, RuntimeError) as err:
        return f'<p class="note">Knob importance unavailable: {esc(err)}</p>'
    if not any(importances.values()):
        return '<p class="note">Knob importance unavailable: no knob varies across completed trials.</p>'
    return figure_html(plot_importances(importances), "importance")


def _failed_html(view: StudyView) -> str:
    failed = view.by_state("FAIL")
    if not failed:
        return '<p class="note">No failed trials.</p>'
    items = "".join(f"<li>trial {t.number}: {esc(t.error or 'no error text')} ({esc(params_text(t.params))})</li>"
                    for t in failed)
    return f"<ul id=\"failed\">{items}</ul>"


def study_page(view: StudyView, optuna_study: Any = None, refresh_s: float | None = None) -> str:
    """The full page of one study: front, hypervolume, curves, parallel coordinates, importance, table."""
    has_curves = any(t.reports for t in view.trials)
    body = [f'<p><a href="index.html">all studies</a></p><h1>Study {esc(view.name)}</h1>',
            f"<p>search space {esc(view.space or '?')}; trials: {esc(_counts(view))}; objectives: "
            f"{esc(', '.join(view.labels))}, all lower is better.</p>",
            "<h2>Proxy adequacy</h2>", adequacy_html(view),
            "<h2>Proxy fidelity</h2>", fidelity_html(view),
            "<h2>Pareto front</h2>", f'<p class="note" id="noise">{esc(_noise_line(view))}</p>',
            f'<p class="note" id="free-ranking">{esc(_free_ranking_line(view))}</p>',
            figure_html(plot_pareto_front([view]), "pareto"),
            "<h3>Failed trials</h3>", _failed_html(view),
            "<h2>Hypervolume</h2>", figure_html(plot_hypervolume(view), "hypervolume"),
            "<h2>Learning curves</h2>",
            figure_html(plot_learning_curves(view), "curves") if has_curves
            else '<p class="note">No intermediate reports yet.</p>',
            "<h2>Knobs against objectives</h2>", figure_html(plot_parallel_coordinates(view), "parallel"),
            "<h2>Knob importance</h2>", _importance_html(view, optuna_study),
            "<h2>Trials</h2><p class=\"note\">Click a column header to sort.</p>", trial_table(view),
            f"<script>{SORTER}</script>"]
    return document(f"nas study {view.name}", "\n".join(body), page_name(view.name), view.digest(), refresh_s)


def comparison_page(views: Sequence[StudyView], refresh_s: float | None = None) -> str:
    """Several studies' fronts on one plot."""
    names = [v.name for v in views]
    links = ", ".join(f'<a href="{esc(page_name(n))}">{esc(n)}</a>' for n in names)
    body = [f'<p><a href="index.html">all studies</a></p><h1>Comparison: {esc(", ".join(names))}</h1>',
            f"<p>studies: {links}</p>", "<h2>Pareto fronts</h2>", figure_html(plot_pareto_front(views), "pareto")]
    return document(f"nas comparison {', '.join(names)}", "\n".join(body), comparison_name(names),
                     combined_digest(views), refresh_s)


def combined_digest(views: Sequence[StudyView]) -> str:
    """One digest over several studies."""
    return hashlib.sha256("".join(v.digest() for v in views).encode()).hexdigest()[:16]


def _noise_line(view: StudyView) -> str:
    """The front's quality spread against the study's seed noise (nas.study.view.noise_verdict)."""
    return noise_verdict([t.quality for t in front(view) if t.quality is not None], view.adequacy)


def _free_ranking_line(view: StudyView) -> str:
    """The completed trials against the free ranking by the primary compute objective (nas.study.view)."""
    return free_ranking_line(view.drawable(), lambda t: t.drawn, view.compute_keys[0], quality_margin(view.adequacy))


def _best(view: StudyView, limit: int = 5) -> str:
    best = front(view)
    if not best:
        return "none yet"
    shown = "<br>".join(f"#{t.number}: quality {num(t.quality)}, "
                        + ", ".join(f"{esc(k)} {num(c)}" for k, c in zip(view.compute_keys, t.drawn[1:]))
                        + f"{' (dense)' if t.is_baseline else ''}" for t in best[:limit])
    return shown + (f"<br>... {len(best) - limit} more" if len(best) > limit else "")


def index_page(views: Sequence[StudyView], built: set[str], refresh_s: float | None = None) -> str:
    """Every study: name, trials by state, its front's best points and a link to its page (when built)."""
    rows = []
    for v in views:
        page = page_name(v.name)
        name = f'<a href="{esc(page)}">{esc(v.name)}</a>' if page in built else esc(v.name)
        c = v.counts()
        rows.append(f"<tr><td data-v=\"{esc(v.name)}\">{name}</td><td data-v=\"{esc(v.space)}\">{esc(v.space)}</td>"
                    + "".join(f'<td data-v="{c[s]}">{c[s]}</td>' for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING"))
                    + f'<td data-v="{len(front(v))}">{_best(v)}</td></tr>')
    head = "".join(f"<th>{h}</th>" for h in ("study", "space", "complete", "pruned", "failed", "running",
                                              "Pareto front (best points)"))
    body = ("<h1>nas studies</h1>"
            f'<table class="sortable" id="studies"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
            f"<script>{SORTER}</script>")
    return document("nas studies", body, "index.html", combined_digest(views), refresh_s, plotly=False)
