"""Seeds a store (nas_* tables and the Optuna study in the same SQLite file) with known trials."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import TrialState

from nas.study.store import Store

SPACE = {"name": "sparse_attn", "params": {}, "fixed": {}, "baseline": {"attention": "dense"}}
DISTRIBUTIONS = {"attention": CategoricalDistribution(["dense", "local_global"]),
                 "window": IntDistribution(8, 96, log=True), "global_tokens": IntDistribution(0, 16, step=2),
                 "gate": CategoricalDistribution(["none", "dynamic"])}
STEPS = (10, 20, 40)


@dataclass
class Seed:
    """One trial to seed: final quality (COMPLETE) or the rungs it reached (PRUNED), compute ratio(s)."""

    number: int
    state: str
    params: dict[str, Any]
    quality: float | None
    compute: float | tuple[float, ...]  # a tuple for a study with several compute objectives
    rungs: int = 3
    error: str | None = None


def lg(window: int, g: int = 0, gate: str = "none") -> dict[str, Any]:
    """Parameters of a local_global trial."""
    return {"attention": "local_global", "window": window, "global_tokens": g, "gate": gate}


DENSE = {"attention": "dense"}
KNOWN = [  # (compute, quality): front = 0, 1, 2, 6 (tie with 2), 7; 3 and 8 dominated; 4 pruned; 5 failed
    Seed(0, "COMPLETE", DENSE, 1.00, 1.0),
    Seed(1, "COMPLETE", lg(16), 1.10, 0.5),
    Seed(2, "COMPLETE", lg(32, 4, "dynamic"), 1.05, 0.7),
    Seed(3, "COMPLETE", lg(64, 2), 1.08, 0.8),
    Seed(4, "PRUNED", lg(8, 0, "dynamic"), 1.40, 0.4, rungs=2),
    Seed(5, "FAIL", lg(12, 6), None, 0.45, rungs=1, error="RuntimeError: <b>out of memory</b>"),
    Seed(6, "COMPLETE", lg(24, 8), 1.05, 0.7),
    Seed(7, "COMPLETE", lg(8), 1.30, 0.45),
    Seed(8, "COMPLETE", DENSE, 1.02, 1.0),
]
KNOWN_FRONT = {0, 1, 2, 6, 7}
BETA = [Seed(0, "COMPLETE", DENSE, 0.98, 1.0), Seed(1, "COMPLETE", lg(16, 2), 1.03, 0.6),
        Seed(2, "PRUNED", lg(8), 1.5, 0.5, rungs=1), Seed(3, "COMPLETE", lg(48, 4, "dynamic"), 1.01, 0.75)]
EVIL = "<script>alert(1)</script>"  # a study name that must show as text
GAMMA_KEYS = ("flops_ratio", "memory_ratio")
GAMMA = [  # (flops, memory), quality. By hand: 3 is dominated by 2, 6 by 1; 4 trades memory for quality
    Seed(0, "COMPLETE", DENSE, 1.00, (1.0, 1.0)),
    Seed(1, "COMPLETE", lg(16), 1.20, (0.5, 1.1)),
    Seed(2, "COMPLETE", lg(32), 1.10, (0.6, 0.9)),
    Seed(3, "COMPLETE", lg(48), 1.15, (0.6, 0.95)),
    Seed(4, "COMPLETE", lg(64, 4, "dynamic"), 1.05, (0.7, 1.2)),
    Seed(5, "PRUNED", lg(8), 1.5, (0.4, 0.8), rungs=2),
    Seed(6, "COMPLETE", lg(12), 1.30, (0.5, 1.1)),
]
GAMMA_FRONT = {0, 1, 2, 4}


def curve(s: Seed) -> list[float]:
    """The quality at each rung the trial reached: a finished trial improves to its final quality over 3 rungs;
    a pruned or failed one ends at its `quality` (failed: 2.0) after `rungs` rungs."""
    final = s.quality if s.quality is not None else 2.0
    if s.state == "COMPLETE":
        return [final + 0.5, final + 0.25, final]
    return [final + 0.2 * (s.rungs - 1 - k) for k in range(s.rungs)]


def seed_study(url: str, name: str, seeds: list[Seed], compute_key: str | tuple[str, ...] = "flops_ratio",
               with_optuna: bool = True) -> None:
    """Write the study and its trials (with rung reports) to the store, and the same values to Optuna.

    One compute key is stored as older versions did (objectives.compute: NAME); a tuple as a list.
    """
    store = Store(url)
    keys = (compute_key,) if isinstance(compute_key, str) else compute_key
    config = {"objectives": {"compute": compute_key if isinstance(compute_key, str) else list(keys)},
              "task": {"objective": {"bpb": 1.0}}}
    store.create_study(name, config, SPACE, "0" * 64)
    for s in seeds:
        values = s.compute if isinstance(s.compute, tuple) else (s.compute,)
        computed = dict(zip(keys, values))
        cost = {**computed, "step_flops": values[0] * 6e12, "train_flops": values[0] * 6e16,
                "params_unique": 1e9, "memory_bytes": 4e10 * values[-1], "step_time_s": values[0] * 0.5}
        store.start_trial(name, s.number, s.params, {}, cost=cost)
        qs = curve(s)
        for k, q in enumerate(qs):
            store.add_report(name, s.number, STEPS[k], STEPS[k] * 1024, {"quality": q, "bpb": q})
        objectives = {**computed, **({"quality": s.quality} if s.state == "COMPLETE" else {})}
        store.finish_trial(name, s.number, s.state, objectives=objectives, error=s.error)
    store.close()
    if with_optuna:
        study = optuna.create_study(storage=url, study_name=name, directions=["minimize"] * (1 + len(keys)))
        for s in seeds:
            study.add_trial(optuna_trial(s))


def optuna_trial(s: Seed) -> optuna.trial.FrozenTrial:
    """The seed as an Optuna trial (values for COMPLETE ones)."""
    state = TrialState[s.state]
    return optuna.trial.create_trial(
        params=s.params, distributions={k: DISTRIBUTIONS[k] for k in s.params}, state=state,
        values=[s.quality, *(s.compute if isinstance(s.compute, tuple) else (s.compute,))]
        if state == TrialState.COMPLETE else None,
        intermediate_values={STEPS[k]: q for k, q in enumerate(curve(s))} if state == TrialState.PRUNED else None)
