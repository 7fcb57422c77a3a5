"""Proxy fidelity: retrain the best points of a front at a reference proxy and compare rankings (Kendall tau-b)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from nas.data import TaskSpec
from nas.export.front import Point, load_points, pareto_front
from nas.objective import quality
from nas.proxy import ProxySpec, train_proxy
from nas.store import Fidelity, Store, code_version, now


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's tau-b rank correlation of two equal-length sequences; None when undefined (all tied)."""
    if len(x) != len(y):
        raise ValueError(f"kendall_tau_b: sequences of different lengths ({len(x)} and {len(y)})")
    concordant = discordant = ties_x = ties_y = pairs = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            dx, dy = x[i] - x[j], y[i] - y[j]
            pairs += 1
            if dx == 0 and dy == 0:
                ties_x, ties_y = ties_x + 1, ties_y + 1
            elif dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    denominator = math.sqrt((pairs - ties_x) * (pairs - ties_y))
    return (concordant - discordant) / denominator if denominator > 0 else None


def top_points(points: list[Point], k: int) -> list[Point]:
    """The k best-quality points of the front, topped up with the next best points when the front is smaller."""
    front = sorted(pareto_front(points), key=lambda p: (p.quality, p.number))
    rest = sorted((p for p in points if p not in front), key=lambda p: (p.quality, p.number))
    return (front + rest)[:k]


def verify(store: Store, study: str, top_k: int = 3, *, device: str = "auto", threads: int = 1,
           progress: bool = False) -> Fidelity:
    """Retrain the top-k points at the reference proxy (nas.reference); Kendall tau-b of proxy vs reference quality."""
    from nas.reference import reference_proxy

    if not (isinstance(top_k, int) and top_k >= 2):
        raise ValueError(f"verify_top_k={top_k!r} is invalid: expected an integer >= 2 (a ranking needs two points)")
    sp = load_points(store, study)
    chosen = top_points(sp.points, top_k)
    if len(chosen) < 2:
        raise ValueError(f"verify needs at least 2 COMPLETE trials; study {study!r} has {len(chosen)}")
    config = sp.study.config
    try:
        proxy, task = ProxySpec.from_dict(config["proxy"]), TaskSpec.from_dict(config["task"])
    except KeyError as err:
        raise ValueError(f"study={study!r} has no {err.args[0]} in its stored config: cannot retrain its "
                         "proxy") from err
    study_budget = config.get("budget_tokens") or proxy.budget_tokens
    reference = reference_proxy(proxy, config.get("budget_tokens"))
    reference_quality = []
    for p in chosen:  # the trial's proxy arch carries its knobs; train_proxy rescales them to the reference's size
        reports = list(train_proxy(p.trial.arch, reference, task, budget_tokens=reference.budget_tokens,
                                   seed=int(config.get("seed", 0)), threads=threads, device=device, progress=progress))
        reference_quality.append(quality(reports[-1], task))
    proxy_quality = [p.quality for p in chosen]
    return Fidelity([p.number for p in chosen], proxy_quality, reference_quality,
                    reference.budget_tokens / study_budget, reference.budget_tokens,
                    kendall_tau_b(proxy_quality, reference_quality), code_version(), now(),
                    dataclasses.asdict(reference))
