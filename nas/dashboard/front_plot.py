"""The Pareto front: quality against compute when every study has one compute objective (several studies share
the plot); with more, a grid with one panel per pair of objectives (quality vs each compute, compute vs compute)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from nas.dashboard.reader import StudyView, TrialView
from nas.dashboard.style import COLORS, esc, hover_text
from nas.study import view as study_view
from nas.study.objectives import QUALITY

GRID_COLS = 3


def front(view: StudyView) -> list[TrialView]:
    """The study's COMPLETE trials no other dominates over all its objectives, one per configuration, by increasing
    compute, quality differences within the study's seed noise ties (nas.study.view.front, quality_margin)."""
    return study_view.front(view.drawable(), margin=study_view.quality_margin(view.adequacy))


def quality_band(view: StudyView) -> float | None:
    """Two standard deviations of one trial's quality (the proxy's seed sd / sqrt(proxy.seeds)); None when the
    study's noise is unknown."""
    noise = study_view.study_noise(view.adequacy)
    if noise is None:
        return None
    return 2.0 * float(noise["sd"]) / math.sqrt(int(noise.get("seeds_per_trial", 1)))


def _value(view: StudyView, name: str) -> Callable[[TrialView], float]:
    """The accessor of objective `name` (quality or one of the view's compute keys)."""
    if name == QUALITY:
        return lambda t: t.drawn[0]
    i = view.compute_keys.index(name)
    return lambda t: t.drawn[1 + i]


def _traces(view: StudyView, x: str, y: str, prefix: str, color: str, line: bool) -> list[go.Scatter]:
    """Completed, pruned (last rung, dimmed), front (with ±2 sd seed-noise bars on quality when the study's noise
    is known) and dense baseline at objectives (x, y) of one study."""
    fx, fy = _value(view, x), _value(view, y)

    def scatter(trials: list[TrialView], name: str, **kw) -> go.Scatter:
        return go.Scatter(x=[fx(t) for t in trials], y=[fy(t) for t in trials], name=esc(prefix + name),
                          text=[hover_text(t, view) for t in trials], hoverinfo="text", legendgroup=esc(prefix + name),
                          marker={"color": color, **kw.pop("marker", {})}, **kw)

    best = sorted(front(view), key=lambda t: (fx(t), fy(t)))
    base = [t for t in view.trials if t.is_baseline and t.vector is not None]
    band = quality_band(view) if y == QUALITY else None
    bars = {"error_y": {"type": "constant", "value": band, "visible": True, "thickness": 1.5, "width": 6,
                        "color": color}} if band else {}
    return [
        scatter(view.drawable(), "completed", mode="markers", marker={"size": 9, "symbol": "circle"}),
        scatter(view.drawable("PRUNED"), "pruned (last rung)", mode="markers", opacity=0.35,
                marker={"size": 8, "symbol": "circle-open"}),
        scatter(best, "Pareto front", mode="lines+markers" if line else "markers", line={"width": 2},
                marker={"size": 11, "symbol": "diamond"}, **bars),
        scatter(base, "dense baseline", mode="markers",
                marker={"size": 18, "symbol": "star", "line": {"width": 1, "color": "black"}}),
    ]


def plot_pareto_front(views: Sequence[StudyView]) -> go.Figure:
    """Every trial at its objectives: completed, pruned (dimmed, last rung), front, dense marked."""
    if all(len(v.compute_keys) == 1 for v in views):
        return _one_compute(views)
    return _pair_grid(views)


def _one_compute(views: Sequence[StudyView]) -> go.Figure:
    """(compute ratio, quality) of each study on one plot, its front connected."""
    fig = go.Figure()
    several = len(views) > 1
    for k, view in enumerate(views):
        prefix = f"{view.name}: " if several else ""
        fig.add_traces(_traces(view, view.compute_keys[0], QUALITY, prefix, COLORS[k % len(COLORS)], line=True))
    fig.add_vline(x=1.0, line_dash="dash", line_color="gray", annotation_text="dense = 1.0",
                  annotation_position="top right")
    keys = sorted({v.compute_keys[0] for v in views})
    fig.update_layout(
        title="Pareto front: compute against quality (lower is better on both)",
        xaxis_title=esc(f"compute: {' / '.join(keys)} (ratio to dense; absolute in hover)"),
        yaxis_title=esc(" / ".join(sorted({v.quality_label for v in views}))),
        hovermode="closest", template="plotly_white", legend={"orientation": "h", "y": -0.2},
    )
    return fig


def objective_pairs(views: Sequence[StudyView]) -> list[tuple[str, str]]:
    """(x, y) of every panel: each compute objective against quality, then each pair of compute objectives."""
    keys = list(dict.fromkeys(k for v in views for k in v.compute_keys))
    return [(k, QUALITY) for k in keys] + list(itertools.combinations(keys, 2))


def _pair_grid(views: Sequence[StudyView]) -> go.Figure:
    """One panel per pair of objectives; the front (over all objectives) as diamonds in each."""
    pairs = objective_pairs(views)
    cols = min(GRID_COLS, len(pairs))
    rows = math.ceil(len(pairs) / cols)
    quality = " / ".join(sorted({v.quality_label for v in views}))
    fig = make_subplots(rows=rows, cols=cols, horizontal_spacing=0.08, vertical_spacing=0.12,
                        subplot_titles=[esc(f"{y if y != QUALITY else 'quality'} vs {x}") for x, y in pairs])
    several = len(views) > 1
    for i, (x, y) in enumerate(pairs):
        row, col = divmod(i, cols)
        for k, view in enumerate(views):
            if not {x, y} - {QUALITY} <= set(view.compute_keys):
                continue
            prefix = f"{view.name}: " if several else ""
            for trace in _traces(view, x, y, prefix, COLORS[k % len(COLORS)], line=False):
                trace.showlegend = i == 0
                fig.add_trace(trace, row=row + 1, col=col + 1)
        fig.update_xaxes(title_text=esc(f"{x} (ratio to dense)"), row=row + 1, col=col + 1)
        fig.update_yaxes(title_text=esc(quality if y == QUALITY else f"{y} (ratio to dense)"), row=row + 1,
                         col=col + 1)
    fig.update_layout(title="Pareto front over all objectives, one panel per pair (lower is better on every axis)",
                      hovermode="closest", template="plotly_white", height=420 * rows,
                      legend={"orientation": "h", "y": -0.12 / rows})
    return fig
