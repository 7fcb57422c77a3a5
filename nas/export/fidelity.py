"""Proxy fidelity: retrain the best points of a front at a reference proxy and compare rankings (Kendall tau-b)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from nas.checks import check_int
from nas.evaluation.data import TaskSpec
from nas.evaluation.proxy import ProxySpec, train_proxy
from nas.evaluation.reference import reference_proxy
from nas.evaluation.scoring import quality
from nas.export.front import Point, StudyPoints, load_points, pareto_front
from nas.study.ranking import kendall_tau_b
from nas.study.store import Fidelity, Store, code_version, now


def top_points(points: list[Point], k: int) -> list[Point]:
    """The k best-quality points of the front, topped up with the next best points when the front is smaller."""
    front = sorted(pareto_front(points), key=lambda p: (p.quality, p.number))
    rest = sorted((p for p in points if p not in front), key=lambda p: (p.quality, p.number))
    return (front + rest)[:k]


@dataclass(frozen=True)
class VerifyPlan:
    """What `verify` retrains: the chosen points, the study's proxy and task, and their reference proxy."""

    chosen: list[Point]
    task: TaskSpec
    reference: ProxySpec
    study_budget: int
    seed: int


def plan_verify(sp: StudyPoints, top_k: int) -> VerifyPlan:
    """Check that the study can be verified with top_k points (ValueError naming what is missing) and plan it."""
    check_int("verify_top_k", top_k, low=2)
    chosen = top_points(sp.points, top_k)
    if len(chosen) < 2:
        raise ValueError(f"verify needs at least 2 COMPLETE trials; study {sp.study.name!r} has {len(chosen)}")
    config = sp.study.config
    try:
        proxy, task = ProxySpec.from_dict(config["proxy"]), TaskSpec.from_dict(config["task"])
    except KeyError as err:
        raise ValueError(f"study={sp.study.name!r} has no {err.args[0]} in its stored config: cannot retrain its "
                         "proxy") from err
    return VerifyPlan(chosen, task, reference_proxy(proxy, config.get("budget_tokens")),
                      config.get("budget_tokens") or proxy.budget_tokens, int(config.get("seed", 0)))


def verify(store: Store, study: str, top_k: int = 3, *, device: str = "auto", threads: int = 1,
           progress: bool = False) -> Fidelity:
    """Retrain the top-k points at the reference proxy (nas.evaluation.reference); Kendall tau-b of proxy vs reference
    quality."""
    plan = plan_verify(load_points(store, study), top_k)
    reference = plan.reference
    reference_quality = []
    for p in plan.chosen:  # the trial's proxy arch carries its knobs; train_proxy rescales them to the reference's size
        reports = list(train_proxy(p.trial.arch, reference, plan.task, budget_tokens=reference.budget_tokens,
                                   seed=plan.seed, threads=threads, device=device, progress=progress))
        reference_quality.append(quality(reports[-1], plan.task))
    proxy_quality = [p.quality for p in plan.chosen]
    return Fidelity([p.number for p in plan.chosen], proxy_quality, reference_quality,
                    reference.budget_tokens / plan.study_budget, reference.budget_tokens,
                    kendall_tau_b(proxy_quality, reference_quality), code_version(), now(),
                    asdict(reference))
