"""The decision at the end of a search: a study's completed points, its Pareto front and the export policies.

Every objective is minimised: quality (the proxy task's objective, e.g. bits per byte) and one or more compute
ratios to the dense target (e.g. flops_ratio), the first of them the space's primary. The front is over all
objectives (nas.study.view: one point per configuration). The policies read the primary compute objective: knee is
the knee of the front of quality against it, max_quality bounds it, min_compute minimises it; ties go to the lower
other compute objectives in order. The quality ratio of a point is dense_quality / quality: 1.0 is as good as the dense
baseline, 0.97 means a 3% worse objective (for lower-is-better quality).
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nas.checks import check_int
from nas.study import dominance
from nas.study import view as study_view
from nas.study.objectives import QUALITY, stored_compute_keys
from nas.study.store import Store, Study, Trial, shown_url

POLICIES = ("knee", "max_quality", "min_compute", "trial")


@dataclass(frozen=True)
class Point:
    """A COMPLETE trial as a point of (quality, compute objectives...), all lower-is-better."""

    number: int
    quality: float
    compute: tuple[float, ...]  # in the study's compute_keys order; compute[0] is the primary
    trial: Trial

    @property
    def primary(self) -> float:
        """The primary compute objective (what the policies bound and minimise)."""
        return self.compute[0]

    @property
    def vector(self) -> tuple[float, ...]:
        """(quality, *compute): the point in objective space."""
        return (self.quality, *self.compute)

    @property
    def params(self) -> dict[str, Any]:
        """The trial's configuration (its searched parameters)."""
        return self.trial.params

    def describe(self, compute_keys: tuple[str, ...]) -> str:
        """'trial N (quality=..., key=..., ...)'."""
        values = ", ".join(f"{k}={v:.4f}" for k, v in zip(compute_keys, self.compute))
        return f"trial {self.number} (quality={self.quality:.4f}, {values})"


@dataclass(frozen=True)
class StudyPoints:
    """A study, the names of its compute objectives, its completed points and how many trials are in each state."""

    study: Study
    compute_keys: tuple[str, ...]
    points: list[Point]
    states: dict[str, int]

    def dense_quality(self) -> float | None:
        """Quality of the dense baseline: the COMPLETE trial whose parameters are the search space's baseline."""
        baseline = self.study.search_space.get("baseline")
        found = [p.quality for p in self.points if study_view.is_baseline(p.params, baseline)]
        return min(found) if found else None


def load_points(store: Store, study: str) -> StudyPoints:
    """The study's COMPLETE trials with finite objectives (nas.study.view.trial_objectives); ValueError naming the
    valid studies when unknown."""
    meta = store.study(study)
    if meta is None:
        names = ", ".join(s.name for s in store.studies()) or "none"
        raise ValueError(f"study={study!r} not found in the store {shown_url(store.url)}: studies are {names}")
    trials = store.trials(study)
    keys = stored_compute_keys(meta.config, (t.objectives for t in trials))
    points = []
    for t in trials:
        q, c = study_view.trial_objectives(t, keys)
        if t.state == "COMPLETE" and q is not None and c is not None:
            points.append(Point(t.number, q, c, t))
    return StudyPoints(meta, keys, points, dict(Counter(t.state for t in trials)))


def pareto_front(points: list[Point]) -> list[Point]:
    """The points no other point dominates over all objectives, one per configuration, by increasing compute
    (primary first): nas.study.view.front."""
    return study_view.front(points)


def knee(points: list[Point]) -> Point:
    """The knee of the front of quality against the primary compute objective: the point farthest from the line
    joining the front's two extremes, on the side of the ideal point.

    Both are normalised to [0, 1] over that front. Ties (a front of one or two points, or points on the line)
    go to the point nearest the ideal (0, 0), then to the lower compute objectives in order.
    """
    front = [points[i] for i in dominance.pareto_front([(p.quality, p.primary) for p in points])]
    lo_c, hi_c = min(p.primary for p in front), max(p.primary for p in front)
    lo_q, hi_q = min(p.quality for p in front), max(p.quality for p in front)

    def norm(p: Point) -> tuple[float, float]:
        return ((p.primary - lo_c) / (hi_c - lo_c) if hi_c > lo_c else 0.0,
                (p.quality - lo_q) / (hi_q - lo_q) if hi_q > lo_q else 0.0)

    # the extremes are (0, 1) (least compute) and (1, 0) (best quality): the line x + y = 1; distance
    # towards the ideal point is (1 - x - y) / sqrt(2)
    def key(p: Point) -> tuple[float, ...]:
        x, y = norm(p)
        return (round((1.0 - x - y) / math.sqrt(2.0), 12), -math.hypot(x, y), *(-c for c in p.compute))

    return max(front, key=key)


@dataclass(frozen=True)
class Policy:
    """How to pick the exported point."""

    name: str = "knee"
    max_compute: float | None = None  # max_quality: primary compute objective <= this
    min_quality_ratio: float | None = None  # min_compute: dense_quality / quality >= this
    dense_quality: float | None = None  # min_compute: overrides the study's baseline trial
    trial: int | None = None  # trial: the trial number

    def __post_init__(self) -> None:
        if self.name not in POLICIES:
            raise ValueError(f"policy={self.name!r} is unknown: expected one of {', '.join(POLICIES)}")
        needs = {"max_quality": "max_compute", "min_compute": "min_quality_ratio", "trial": "trial"}.get(self.name)
        if needs is not None and getattr(self, needs) is None:
            raise ValueError(f"policy={self.name} needs {needs}=<value>")
        for key in ("max_compute", "min_quality_ratio", "dense_quality"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not (isinstance(value, (int, float)) and value > 0)):
                raise ValueError(f"{key}={value!r} is invalid: expected a number > 0")
        if self.trial is not None:
            check_int("trial", self.trial, low=0)

    def to_dict(self) -> dict[str, Any]:
        """The policy and the bound it used (for provenance)."""
        bound = {"max_quality": "max_compute", "min_compute": "min_quality_ratio", "trial": "trial"}.get(self.name)
        out: dict[str, Any] = {"policy": self.name}
        if bound is not None:
            out[bound] = getattr(self, bound)
        if self.name == "min_compute" and self.dense_quality is not None:
            out["dense_quality"] = self.dense_quality
        return out


def select(sp: StudyPoints, policy: Policy) -> Point:
    """The point the policy picks; ValueError naming the closest point when none qualifies."""
    name, keys, points = sp.study.name, sp.compute_keys, sp.points
    if not points:
        states = ", ".join(f"{n} {s}" for s, n in sorted(sp.states.items())) or "no trials"
        raise ValueError(f"study={name!r} has no COMPLETE trial with objectives {QUALITY} and {', '.join(keys)} "
                         f"({states}): "
                         "nothing to export; run or resume the search first")
    if policy.name == "knee":
        return knee(pareto_front(points))
    if policy.name == "trial":
        trial = policy.trial
        assert trial is not None, "Policy requires trial for policy=trial"
        found = [p for p in points if p.number == trial]
        if not found:
            closest = min(points, key=lambda p: (abs(p.number - trial), p.number))
            raise ValueError(f"trial={policy.trial} is not a COMPLETE trial of study {name!r}: the closest is "
                             f"{closest.describe(keys)}")
        return found[0]
    if policy.name == "max_quality":
        max_compute = policy.max_compute
        assert max_compute is not None, "Policy requires max_compute for policy=max_quality"
        ok = [p for p in points if p.primary <= max_compute]
        if not ok:
            closest = min(points, key=lambda p: (p.primary, p.quality))
            raise ValueError(f"no COMPLETE trial of study {name!r} has {keys[0]} <= "
                             f"max_compute={policy.max_compute:g}: "
                             f"the closest is {closest.describe(keys)}")
        return min(ok, key=lambda p: (p.quality, p.compute, p.number))
    dense = policy.dense_quality if policy.dense_quality is not None else sp.dense_quality()
    if dense is None:
        raise ValueError(f"policy=min_compute needs the dense quality, but study {name!r} has no COMPLETE dense "
                         "baseline trial: pass dense_quality=<value>")
    def ratio(p: Point) -> float:
        return dense / p.quality if p.quality > 0 else math.inf

    min_ratio = policy.min_quality_ratio
    assert min_ratio is not None, "Policy requires min_quality_ratio for policy=min_compute"
    ok = [p for p in points if ratio(p) >= min_ratio]
    if not ok:
        closest = min(points, key=lambda p: (p.quality, p.compute))
        raise ValueError(f"no COMPLETE trial of study {name!r} has quality ratio (dense {dense:.4f} / quality) >= "
                         f"min_quality_ratio={policy.min_quality_ratio:g}: the closest is {closest.describe(keys)}, "
                         f"ratio {ratio(closest):.4f}")
    return min(ok, key=lambda p: (p.primary, p.quality, p.compute, p.number))


def free_pick_line(sp: StudyPoints, policy: Policy, chosen: Point) -> str | None:
    """For policy=max_quality, the free rule's pick under the same budget beside the proxy's: the point with the
    most primary compute within it ("more compute = better quality", nas.study.ranking; a tie goes to the earliest
    trial), and whether the proxy's preference is beyond the study's seed-noise tie margin. None for other
    policies (they have no budget to spend)."""
    if policy.name != "max_quality" or policy.max_compute is None:
        return None
    key = sp.compute_keys[0]
    within = [p for p in sp.points if p.primary <= policy.max_compute]
    most = max(p.primary for p in within)
    free = min((p for p in within if p.primary == most), key=lambda p: p.number)
    head = f"free rule (the most {key} within max_compute={policy.max_compute:g}): trial {free.number}"
    if free.number == chosen.number:
        return f"{head}, the same pick: the trained proxy did not change this decision"
    margin = study_view.quality_margin(sp.study.adequacy)
    gap = free.quality - chosen.quality
    if margin <= 0:
        noise = "(the proxy's seed noise is not measured for this study)"
    elif gap > margin:
        noise = f"beyond the proxy's seed noise (tie margin {margin:.4f})"
    else:
        noise = (f"within the proxy's seed noise (tie margin {margin:.4f}): at this proxy the two are a tie, and "
                 "the free pick is as good an answer")
    return (f"{head} ({free.describe(sp.compute_keys)}); the proxy's pick, trial {chosen.number}, is better by "
            f"{gap:.4f} {noise}")


def select_expressible(sp: StudyPoints, policy: Policy, refuse: Callable[[Point], str | None],
                       fmt: str) -> tuple[Point, list[tuple[Point, str]]]:
    """The point the policy picks among those a format can express (`refuse`: why not, or None), and the refused
    points it passed over with their reasons: for knee the refused points of the whole front, for max_quality the
    refused points within the bound of better quality, for min_compute those above the ratio of less compute.
    ValueError when the policy's own pick (policy=trial) or every point is refused."""
    reasons = {p.number: refuse(p) for p in sp.points}
    if policy.name == "trial":
        point = select(sp, policy)
        if reasons[point.number] is not None:
            raise ValueError(f"trial={point.number} cannot be exported as format={fmt}: {reasons[point.number]}")
        return point, []
    ok = [p for p in sp.points if reasons[p.number] is None]
    if sp.points and not ok:
        first = sp.points[0]
        raise ValueError(f"no COMPLETE trial of study {sp.study.name!r} can be exported as format={fmt} (e.g. trial "
                         f"{first.number}: {reasons[first.number]})")
    if policy.name == "min_compute" and policy.dense_quality is None:  # the dense baseline may itself be refused
        policy = dataclasses.replace(policy, dense_quality=sp.dense_quality())
    chosen = select(dataclasses.replace(sp, points=ok) if sp.points else sp, policy)
    refused = [p for p in sp.points if reasons[p.number] is not None]
    if policy.name == "knee":
        front = {p.number for p in pareto_front(sp.points)}
        passed = [p for p in refused if p.number in front]
    elif policy.name == "max_quality":
        bound = policy.max_compute if policy.max_compute is not None else math.inf
        passed = [p for p in refused if p.primary <= bound and p.quality < chosen.quality]
    else:
        dense, least = policy.dense_quality, policy.min_quality_ratio or 0.0
        passed = [p for p in refused if dense is not None and p.quality > 0 and dense / p.quality >= least
                  and p.primary < chosen.primary]
    passed.sort(key=lambda p: (p.primary, p.quality, p.number))
    return chosen, [(p, reasons[p.number] or "") for p in passed]
