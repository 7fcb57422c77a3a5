"""The Pareto front of compute (ratio to dense) against quality, for one study or several on one plot."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from nas.dashboard.data import StudyView, TrialView
from nas.dashboard.style import COLORS, esc, hover_text


def non_dominated(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point dominates (both coordinates minimised; ties all stay)."""
    return [i for i, p in enumerate(points)
            if not any(q[0] <= p[0] and q[1] <= p[1] and q != p for q in points)]


def front(view: StudyView) -> list[TrialView]:
    """The study's non-dominated COMPLETE trials, by increasing compute."""
    done = [t for t in view.by_state("COMPLETE") if t.quality is not None and t.compute is not None]
    keep = non_dominated([(t.compute, t.quality) for t in done])
    return sorted((done[i] for i in keep), key=lambda t: (t.compute, t.quality))


def _scatter(trials: list[TrialView], view: StudyView, name: str, color: str, **kw) -> go.Scatter:
    return go.Scatter(x=[t.compute for t in trials], y=[t.quality for t in trials], name=esc(name),
                      text=[hover_text(t, view) for t in trials], hoverinfo="text", legendgroup=esc(view.name),
                      marker={"color": color, **kw.pop("marker", {})}, **kw)


def plot_pareto_front(views: Sequence[StudyView]) -> go.Figure:
    """Every trial at (compute ratio, quality): completed, pruned (dimmed, last rung), front connected, dense marked."""
    fig = go.Figure()
    several = len(views) > 1
    for k, view in enumerate(views):
        color = COLORS[k % len(COLORS)]
        prefix = f"{view.name}: " if several else ""
        done = [t for t in view.by_state("COMPLETE") if t.quality is not None and t.compute is not None]
        pruned = [t for t in view.by_state("PRUNED") if t.quality is not None and t.compute is not None]
        best = front(view)
        fig.add_trace(_scatter(done, view, prefix + "completed", color, mode="markers",
                               marker={"size": 9, "symbol": "circle"}))
        fig.add_trace(_scatter(pruned, view, prefix + "pruned (last rung)", color, mode="markers", opacity=0.35,
                               marker={"size": 8, "symbol": "circle-open"}))
        fig.add_trace(_scatter(best, view, prefix + "Pareto front", color, mode="lines+markers",
                               line={"width": 2}, marker={"size": 11, "symbol": "diamond"}))
        base = [t for t in view.trials if t.is_baseline and t.quality is not None and t.compute is not None]
        fig.add_trace(_scatter(base, view, prefix + "dense baseline", color, mode="markers",
                               marker={"size": 18, "symbol": "star", "line": {"width": 1, "color": "black"}}))
    fig.add_vline(x=1.0, line_dash="dash", line_color="gray", annotation_text="dense = 1.0",
                  annotation_position="top right")
    keys = sorted({v.compute_key for v in views})
    fig.update_layout(
        title="Pareto front: compute against quality (lower is better on both)",
        xaxis_title=esc(f"compute: {' / '.join(keys)} (ratio to dense; absolute in hover)"),
        yaxis_title=esc(" / ".join(sorted({v.quality_label for v in views}))),
        hovermode="closest", template="plotly_white", legend={"orientation": "h", "y": -0.2},
    )
    return fig

