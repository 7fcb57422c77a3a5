"""Learning curves: each trial's quality at its rungs against proxy training tokens; pruned ones cut short."""

from __future__ import annotations

import plotly.graph_objects as go

from nas.dashboard.reader import QUALITY, StudyView
from nas.dashboard.style import esc, params_text

DASH = {"COMPLETE": "solid", "PRUNED": "dot", "FAIL": "dash", "RUNNING": "longdash"}


def plot_learning_curves(view: StudyView) -> go.Figure:
    """One line per trial (quality by tokens); a pruned trial ends in an x at its last rung."""
    fig = go.Figure()
    for t in view.trials:
        pts = [(r.tokens, r.metrics[QUALITY], r.step) for r in t.reports if isinstance(r.metrics.get(QUALITY),
                                                                                          (int, float))]
        if not pts:
            continue
        label = f"trial {t.number} ({t.state.lower()}{', dense' if t.is_baseline else ''})"
        text = [f"{esc(label)}<br>step {s}, tokens {k:,}<br>{esc(view.quality_label)} = {q:.4g}<br>"
                f"{esc(params_text(t.params))}" for k, q, s in pts]
        symbols = ["circle"] * (len(pts) - 1) + ["x" if t.state == "PRUNED" else "circle"]
        fig.add_trace(go.Scatter(
            x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers", name=esc(label), text=text,
            hoverinfo="text", opacity=0.45 if t.state == "PRUNED" else 1.0,
            line={"dash": DASH.get(t.state, "solid"), "width": 3 if t.is_baseline else 1.5},
            marker={"symbol": symbols, "size": [6] * (len(pts) - 1) + [12 if t.state == "PRUNED" else 6]},
        ))
    fig.update_layout(title="Learning curves (pruned: dotted, cut with an x at the last rung)",
                      xaxis_title="proxy training tokens", yaxis_title=esc(view.quality_label),
                      template="plotly_white", hovermode="closest")
    return fig
