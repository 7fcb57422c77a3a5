"""What one Ray Tune trial runs: the proxy trainer by default, behind the TrialRunner call signature."""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from nas.data import TaskSpec
from nas.model.config import ArchConfig
from nas.objective import quality
from nas.proxy import ProxySpec, train_proxy


class TrialRunner(Protocol):
    """A sampled trial (its knobs, and the proxy ArchConfig the driver built from them) -> reports: dicts with step,
    tokens, quality (lower is better), final and metrics."""

    def __call__(self, knobs: dict[str, Any], *, arch: ArchConfig | None, seed: int, threads: int
                 ) -> Iterator[dict[str, Any]]: ...


@dataclass
class ProxyRunner:
    """The real trial: train the knobs at proxy size on the task, report the task quality at every rung."""

    proxy: ProxySpec
    task: TaskSpec
    budget_tokens: int | None = None
    device: str = "auto"

    def __call__(self, knobs: dict[str, Any], *, arch: ArchConfig | None, seed: int, threads: int
                 ) -> Iterator[dict[str, Any]]:
        for report in train_proxy(arch if arch is not None else knobs, self.proxy, self.task,
                                  budget_tokens=self.budget_tokens, seed=seed, threads=threads, device=self.device):
            metrics = report.to_dict()
            yield {"step": report.step, "tokens": report.tokens, "quality": quality(report, self.task),
                   "final": report.final, "metrics": metrics}


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

