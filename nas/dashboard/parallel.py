"""Parallel coordinates of the knobs against the objectives (completed trials)."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from nas.dashboard.reader import StudyView
from nas.dashboard.style import esc


def _axis(label: str, values: list[Any]) -> dict[str, Any]:
    """A numeric axis, or a categorical one (None shown as 'n/a') with its labels."""
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return {"label": esc(label), "values": values}
    distinct = sorted(set(values), key=_order)
    cats = ["n/a" if v is None else str(v) for v in distinct]
    index = {c: i for i, c in enumerate(cats)}
    return {"label": esc(label), "values": [index["n/a" if v is None else str(v)] for v in values],
            "tickvals": list(range(len(cats))), "ticktext": [esc(c) for c in cats]}


def _order(v: Any) -> tuple:
    """n/a first, then numbers by value, then text."""
    if v is None:
        return (0, 0.0, "")
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return (1, float(v), "")
    return (2, 0.0, str(v))


def plot_parallel_coordinates(view: StudyView) -> go.Figure:
    """One line per completed trial through every knob, then every compute objective and quality (coloured by it)."""
    done = view.drawable()
    knobs = list(dict.fromkeys(k for t in done for k in t.params))
    dims = [_axis(k, [t.params.get(k) for t in done]) for k in knobs]
    dims += [_axis(key, [t.drawn[1 + i] for t in done]) for i, key in enumerate(view.compute_keys)]
    dims += [_axis(view.quality_label, [t.quality for t in done])]
    fig = go.Figure(go.Parcoords(line={"color": [t.quality for t in done], "colorscale": "Viridis_r",
                                       "showscale": True, "colorbar": {"title": "quality"}}, dimensions=dims))
    fig.update_layout(title="Knobs against objectives (completed trials)", template="plotly_white")
    return fig
