"""Knob importance for each objective, from Optuna's importance evaluators on the study's completed trials."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import plotly.graph_objects as go

from nas.dashboard.style import esc


def param_importances(study: Any, objectives: list[str]) -> dict[str, dict[str, float]]:
    """objective name -> {knob: importance} from Optuna's default evaluator (PED-ANOVA), one target per objective."""
    from optuna.importance import get_param_importances

    with warnings.catch_warnings():  # PED-ANOVA warns on few trials per regime; the page shows what it has
        warnings.simplefilter("ignore", UserWarning)
        return {name: get_param_importances(study, target=_objective(i)) for i, name in enumerate(objectives)}


def _objective(i: int) -> Callable[[Any], float]:
    """The accessor of a trial's i-th objective value."""
    return lambda t: t.values[i]


def plot_importances(importances: dict[str, dict[str, float]]) -> go.Figure:
    """Grouped horizontal bars: one group per knob, one bar per objective."""
    knobs = list(dict.fromkeys(k for imp in importances.values() for k in imp))
    fig = go.Figure([go.Bar(y=[esc(k) for k in knobs], x=[imp.get(k, 0.0) for k in knobs], name=esc(name),
                            orientation="h", text=[f"{imp.get(k, 0.0):.3f}" for k in knobs], textposition="auto")
                     for name, imp in importances.items()])
    fig.update_layout(title="Knob importance per objective (Optuna, PED-ANOVA)", barmode="group",
                      xaxis_title="importance (normalised per objective)", template="plotly_white",
                      yaxis={"autorange": "reversed"})
    return fig
