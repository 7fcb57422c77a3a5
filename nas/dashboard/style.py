"""Shared look of the figures: colours, escaping and the hover text of a trial."""

from __future__ import annotations

import html
from typing import Any

from nas.dashboard.reader import ABSOLUTE_OF, StudyView, TrialView

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
COST_KEYS = ("train_flops", "step_flops", "params_unique", "params_total", "memory_bytes", "step_time_s")


def esc(value: Any) -> str:
    """HTML-escaped text of a user value (study names, parameters, errors)."""
    return html.escape(str(value), quote=True)


def num(value: Any) -> str:
    """A float in 4 significant digits; integers and other values as they are."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def params_text(params: dict[str, Any]) -> str:
    """'k=v, ...' of a trial's knobs (unescaped)."""
    return ", ".join(f"{k}={v}" for k, v in params.items())


def hover_text(t: TrialView, view: StudyView) -> str:
    """Escaped hover lines: trial, state, objectives, absolute costs and knob values."""
    lines = [f"<b>{esc(view.name)} trial {t.number}</b> ({esc(t.state)}{', dense baseline' if t.is_baseline else ''})",
             f"{esc(view.quality_label)} = {num(t.quality)}"]
    lines += [f"{esc(k)} = {num(v)}" for k, v in zip(view.compute_keys, t.compute or (None,) * len(view.compute_keys))]
    absolute = [ABSOLUTE_OF[k] for k in view.compute_keys if k in ABSOLUTE_OF]
    keys = list(dict.fromkeys([*absolute, *COST_KEYS]))
    lines += [f"{esc(k)} = {num(t.cost[k])}" for k in keys if k in t.cost]
    lines += [f"{esc(k)} = {esc(v)}" for k, v in t.params.items()]
    return "<br>".join(lines)
