"""What one Ray Tune trial runs: the proxy trainer by default, behind the TrialRunner call signature."""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from nas.evaluation.data import TaskSpec
from nas.evaluation.proxy import ProxySpec, train_proxy
from nas.evaluation.scoring import quality
from nas.model.config import ArchConfig


class TrialRunner(Protocol):
    """A sampled trial (its knobs, and the proxy ArchConfig the driver built from them) -> reports: dicts with step,
    tokens, quality (lower is better), final and metrics."""

    def __call__(self, knobs: dict[str, Any], *, arch: ArchConfig | None, seed: int, threads: int
                 ) -> Iterator[dict[str, Any]]: ...


@dataclass
class ProxyRunner:
    """The real trial: train the knobs at proxy size on the task, report the task quality at every rung.

    With proxy.seeds = N the trial trains N models (seeds seed .. seed+N-1) in step and reports, at each rung, the
    mean of their qualities and metrics, the per-seed qualities (metrics `quality_seeds`) and the tokens of all N.
    Every trial of a study runs at the study's seed, and its batches come from a generator of that seed alone
    (nas.evaluation.optim.seeded_start), apart from the model's initialisation: trials of different knobs see the same
    data order and the same validation set (common random numbers), seed for seed.
    """

    proxy: ProxySpec
    task: TaskSpec
    budget_tokens: int | None = None
    device: str = "auto"

    def __call__(self, knobs: dict[str, Any], *, arch: ArchConfig | None, seed: int, threads: int
                 ) -> Iterator[dict[str, Any]]:
        runs = [train_proxy(arch if arch is not None else knobs, self.proxy, self.task,
                            budget_tokens=self.budget_tokens, seed=seed + k, threads=threads, device=self.device)
                for k in range(self.proxy.seeds)]
        for reports in zip(*runs):
            qualities = [quality(r, self.task) for r in reports]
            metrics = mean_report([r.to_dict() for r in reports])
            if len(reports) > 1:
                metrics["quality_seeds"] = qualities
                metrics["seeds"] = [seed + k for k in range(len(reports))]
            yield {"step": reports[0].step, "tokens": sum(r.tokens for r in reports),
                   "quality": sum(qualities) / len(qualities), "final": reports[0].final, "metrics": metrics}


def mean_report(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One rung of several seeds as one report (RungReport.to_dict): every number (and every number in a nested
    mapping: metrics, gate_stats) the mean over the seeds; the rest, and the step, as the first seed's."""
    first = reports[0]
    if len(reports) == 1:
        return dict(first)

    def mean(values: list[Any]) -> Any:
        v0 = values[0]
        if isinstance(v0, dict):
            return {k: mean([v.get(k) for v in values]) for k in v0}
        if isinstance(v0, (int, float)) and not isinstance(v0, bool) and \
                all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            return sum(values) / len(values)
        return v0

    out = {k: mean([r.get(k) for r in reports]) for k in first}
    for k in ("rung", "step", "tokens", "final", "precision_switch_step"):
        out[k] = first[k]
    return out


def trainable(config: dict[str, Any], runner: TrialRunner) -> None:
    """Ray Tune function trainable: one result per rung; an exception becomes a final `error` result."""
    import torch
    from ray import tune

    threads = int(config["threads"])
    torch.set_num_threads(threads)
    try:
        for report in runner(config["knobs"], arch=config.get("arch"), seed=int(config["seed"]), threads=threads):
            tune.report({**report, "number": config["number"]})
    except Exception as err:  # recorded as FAIL with its reason; the partial curve is already reported
        tune.report({"number": config["number"], "error": f"{type(err).__name__}: {err}",
                     "traceback": traceback.format_exc(), "final": True})

