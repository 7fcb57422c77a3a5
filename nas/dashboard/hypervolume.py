"""Hypervolume of the Pareto front over all objectives as trials land, by trial number and by cumulative tokens."""

from __future__ import annotations

from dataclasses import dataclass

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from nas.dashboard.reader import StudyView
from nas.dashboard.style import esc
from nas.study import view as study_view


@dataclass(frozen=True)
class HypervolumeHistory:
    """Hypervolume after each finished trial (by number) and the proxy tokens spent up to it."""

    numbers: list[int]
    tokens: list[int]
    values: list[float]
    reference: tuple[float, ...]  # (quality, *compute), Optuna's order of the objectives


def reference_point(view: StudyView) -> tuple[float, ...] | None:
    """(quality, *compute) just beyond the worst completed values (nas.study.view.reference_point); None without
    completed trials."""
    return study_view.reference_point([t.vector for t in view.drawable() if t.vector is not None])


def hypervolume_history(view: StudyView) -> HypervolumeHistory:
    """The hypervolume of the completed points over all objectives after each finished trial
    (nas.study.view.hypervolume_history)."""
    ref = reference_point(view)
    finished = [t for t in view.trials if t.state != "RUNNING"]
    tokens, values = study_view.hypervolume_history(
        ((t.tokens, t.vector if t.state == "COMPLETE" else None) for t in finished), ref)
    return HypervolumeHistory([t.number for t in finished], tokens, values,
                              ref or (float("nan"),) * (1 + len(view.compute_keys)))


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
