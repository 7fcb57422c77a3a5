"""Pareto-aware successive halving: stop a trial that enough peers dominate in (quality at the rung, compute)."""

from __future__ import annotations

from typing import Any

import optuna
from optuna.pruners import BasePruner
from optuna.trial import FrozenTrial, TrialState

from nas.study.dominance import dominates_by_margin

COMPUTE_ATTR = "compute"  # user attr: the trial's compute objectives (a list), known analytically before training


def compute_vector(value: Any) -> tuple[float, ...]:
    """A COMPUTE_ATTR value as a tuple (a list now; one float in studies from before k compute objectives)."""
    return tuple(float(v) for v in value) if isinstance(value, (list, tuple)) else (float(value),)


class ParetoPruner(BasePruner):
    """At each reported step (a rung), prune when >= min_dominators trials that reached the rung dominate.

    Trial j dominates trial t at step s by `margin` when compute_j <= compute_t on every compute objective and
    quality_j(s) < quality_t(s) - margin * |quality_t(s)| (nas.study.dominance.dominates_by_margin; quality lower is
    better; the study's objective is the rung quality). Nothing is pruned before `n_warmup_steps`, or at a rung
    that fewer than `n_startup_trials` other trials have reached.
    """

    def __init__(self, margin: float = 0.01, min_dominators: int = 2, n_startup_trials: int = 3,
                 n_warmup_steps: int = 0) -> None:
        if margin < 0:
            raise ValueError(f"pruner.margin={margin!r} is invalid: expected a number >= 0")
        if min_dominators < 1:
            raise ValueError(f"pruner.min_dominators={min_dominators!r} is invalid: expected an integer >= 1")
        if n_startup_trials < 0 or n_warmup_steps < 0:
            raise ValueError("pruner.n_startup_trials and pruner.n_warmup_steps must be >= 0")
        self.margin, self.min_dominators = margin, min_dominators
        self.n_startup_trials, self.n_warmup_steps = n_startup_trials, n_warmup_steps

    def prune(self, study: optuna.study.Study, trial: FrozenTrial) -> bool:
        """Whether `trial` should stop at its last reported step."""
        step = trial.last_step
        if step is None or step < self.n_warmup_steps or COMPUTE_ATTR not in trial.user_attrs:
            return False
        mine = (trial.intermediate_values[step], *compute_vector(trial.user_attrs[COMPUTE_ATTR]))
        states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        peers = [t for t in study.get_trials(deepcopy=False, states=states)
                 if t.number != trial.number and step in t.intermediate_values and COMPUTE_ATTR in t.user_attrs]
        if len(peers) < self.n_startup_trials:
            return False
        dominators = sum(1 for t in peers if dominates_by_margin(
            (t.intermediate_values[step], *compute_vector(t.user_attrs[COMPUTE_ATTR])), mine, self.margin))
        return dominators >= self.min_dominators
