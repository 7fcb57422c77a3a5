"""Hypervolume of the Pareto front over all objectives as trials land, by trial number and by cumulative tokens."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from nas.dashboard.data import StudyView
from nas.dashboard.style import esc
from nas.pareto import hypervolume

MARGIN = 0.1  # the reference point lies this fraction of each objective's range beyond the worst completed value


@dataclass(frozen=True)
class HypervolumeHistory:
    """Hypervolume after each finished trial (by number) and the proxy tokens spent up to it."""

    numbers: list[int]
    tokens: list[int]
    values: list[float]
    reference: tuple[float, ...]  # (quality, *compute), Optuna's order of the objectives


def reference_point(view: StudyView) -> tuple[float, ...] | None:
    """(quality, *compute) just beyond the worst completed values; None without completed trials."""
    pts = np.array([t.vector for t in view.drawable()], dtype=float)
    if len(pts) == 0:
        return None
    worst, span = pts.max(axis=0), np.ptp(pts, axis=0)
    ref = worst + MARGIN * np.where(span > 0, span, np.maximum(np.abs(worst), 1.0))
    return tuple(float(r) for r in ref)


def hypervolume_history(view: StudyView) -> HypervolumeHistory:
    """Optuna's hypervolume of the completed points over all objectives after each finished trial."""
    ref = reference_point(view)
    numbers, tokens, values, spent = [], [], [], 0
    points: list[tuple[float, ...]] = []
    for t in view.trials:
        if t.state == "RUNNING":
            continue
        spent += t.tokens
        if t.state == "COMPLETE" and t.vector is not None:
            points.append(t.vector)
        hv = hypervolume(points, ref) if points and ref else 0.0
        numbers.append(t.number)
        tokens.append(spent)
        values.append(float(hv))
    return HypervolumeHistory(numbers, tokens, values, ref or (float("nan"),) * (1 + len(view.compute_keys)))


def plot_hypervolume(view: StudyView) -> go.Figure:
    """Two panels: hypervolume against trial number and against cumulative proxy training tokens."""
    h = hypervolume_history(view)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("over trials", "over cumulative trial compute"))
    text = [f"trial {n}<br>hypervolume {v:.4g}<br>tokens so far {k:,}" for n, k, v in zip(h.numbers, h.tokens,
                                                                                          h.values)]
    fig.add_trace(go.Scatter(x=h.numbers, y=h.values, mode="lines+markers", line_shape="hv", text=text,
                             hoverinfo="text", name="by trial"), row=1, col=1)
    fig.add_trace(go.Scatter(x=h.tokens, y=h.values, mode="lines+markers", line_shape="hv", text=text,
                             hoverinfo="text", name="by tokens"), row=1, col=2)
    fig.update_xaxes(title_text="trial number", row=1, col=1)
    fig.update_xaxes(title_text="proxy training tokens, all finished trials", row=1, col=2)
    fig.update_yaxes(title_text="hypervolume", row=1, col=1)
    reference = ", ".join(f"{esc(k)}={r:.4g}" for k, r in zip(["quality", *view.compute_keys], h.reference))
    fig.update_layout(title=f"Hypervolume over {1 + len(view.compute_keys)} objectives (reference point: {reference})",
                      template="plotly_white", showlegend=False)
    return fig
