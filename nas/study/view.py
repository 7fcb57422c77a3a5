"""One view of a study's results, shared by every reader (the search's summary, export, dashboard, replay, claims).

It owns:
- the configuration key: a configuration's identity (its parameters as canonical JSON);
- baseline detection: a trial is the dense baseline when its configuration is the search space's baseline;
- a trial's objective vector (quality, *compute), read one way from a store row;
- the Pareto front: non-dominated over every objective (nas.study.dominance, the one dominance rule), one trial per
  configuration (the earliest: a configuration trained again with the same seed lands on the same point), by
  increasing compute (primary first), then quality, then trial number;
- the quality noise: the study's tie margin on quality (`quality_margin`, from the proxy's seed noise stored with
  the study, nas.evaluation.noise) under which quality differences are ties when the front is built, and the summary's
  verdict on the front's spread (`noise_verdict`);
- the free ranking beside the proxy's: one trial per configuration, ranked by quality and by the primary compute
  objective (`free_ranking_line`, nas.study.ranking: what the proxy says that the cost model does not);
- the hypervolume reference point and the hypervolume history, with one reference rule (`reference_point`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from nas.study.dominance import hypervolume, pareto_front
from nas.study.objectives import QUALITY
from nas.study.ranking import free_ranking_verdict

REFERENCE_MARGIN = 0.1  # the reference point lies this share of each objective's range beyond its worst value
TIE_SE = 2.0  # quality differences within this many standard errors of a difference of two trials are ties

Vector = Sequence[float]


def config_key(params: Mapping[str, Any]) -> str:
    """A configuration's identity: its active parameters as canonical JSON."""
    return json.dumps(dict(params), sort_keys=True, default=str)


def same_config(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two parameter mappings are one configuration."""
    return config_key(a) == config_key(b)


def is_baseline(params: Mapping[str, Any], baseline: Mapping[str, Any] | None) -> bool:
    """Whether `params` is the search space's dense baseline configuration (None: the space names none)."""
    return baseline is not None and same_config(params, baseline)


def last_quality(reports: Iterable[Any]) -> float | None:
    """The quality at the last rung that reported one (reports have `.metrics`)."""
    for r in reversed(tuple(reports)):
        q = r.metrics.get(QUALITY)
        if isinstance(q, (int, float)) and not isinstance(q, bool):
            return float(q)
    return None


def _finite(value: Any) -> float | None:
    """`value` as a finite float, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def trial_objectives(trial: Any, compute_keys: Sequence[str]) -> tuple[float | None, tuple[float, ...] | None]:
    """(quality, compute) of a stored trial (nas.study.store.Trial); None for what is unknown or not finite.

    Quality: a COMPLETE trial's objective; a PRUNED or RUNNING trial's last reported rung; a FAIL trial has none.
    Compute: each of `compute_keys` from the trial's objectives, else from its cost (the same ratios, recorded
    before training); None unless every one is known.
    """
    objectives, cost = trial.objectives or {}, trial.cost or {}
    if trial.state == "COMPLETE":
        quality = _finite(objectives.get(QUALITY))
    elif trial.state in ("PRUNED", "RUNNING"):
        quality = _finite(last_quality(trial.reports))
    else:
        quality = None
    values = [_finite(objectives.get(k, cost.get(k))) for k in compute_keys]
    compute = None if any(v is None for v in values) else tuple(float(v) for v in values)  # type: ignore[arg-type]
    return quality, compute


def vector(quality: float | None, compute: Sequence[float] | None) -> tuple[float, ...] | None:
    """(quality, *compute) when both are known: a trial in objective space."""
    return None if quality is None or compute is None else (quality, *compute)


class Pointlike(Protocol):
    """What the front reads of a trial: its number and configuration (the objective vector comes by accessor)."""

    @property
    def number(self) -> int: ...

    @property
    def params(self) -> Mapping[str, Any]: ...


P = TypeVar("P", bound=Pointlike)


def _own_vector(p: Any) -> Vector:
    return p.vector


def front(points: Sequence[P], vector_of: Callable[[P], Vector] = _own_vector, margin: float = 0.0) -> list[P]:
    """The points no other dominates over all objectives, one per configuration (the earliest trial of it), by
    increasing compute (primary first), then quality, then trial number. `vector_of` gives (quality, *compute);
    `margin` (the study's `quality_margin`): a point is dominated only by one no worse in every compute objective
    and better in quality by at least `margin` (nas.study.dominance.dominates): differences within it are ties."""
    vectors = [tuple(vector_of(p)) for p in points]
    keep = sorted(pareto_front(vectors, margin), key=lambda i: points[i].number)
    first: dict[str, int] = {}
    for i in keep:
        first.setdefault(config_key(points[i].params), i)
    return [points[i] for i in sorted(first.values(), key=lambda i: (vectors[i][1:], vectors[i][0], points[i].number))]


def distinct(points: Sequence[P]) -> list[P]:
    """One point per configuration, the earliest trial of each, in trial order."""
    first: dict[str, P] = {}
    for p in sorted(points, key=lambda p: p.number):
        first.setdefault(config_key(p.params), p)
    return list(first.values())


def free_ranking_line(points: Sequence[P], vector_of: Callable[[P], Vector], primary_name: str,
                      margin: float) -> str:
    """The study's completed trials (one per configuration) against the free ranking by the primary compute
    objective, differences within `margin` (the study's `quality_margin`) ties: nas.study.ranking's verdict."""
    vectors = [tuple(vector_of(p)) for p in distinct(points)]
    return free_ranking_verdict([v[0] for v in vectors], [v[1] for v in vectors], primary_name, margin)


def reference_point(vectors: Sequence[Vector]) -> tuple[float, ...] | None:
    """The hypervolume reference point: each objective's worst value plus REFERENCE_MARGIN of its range; an
    objective that never varies gets REFERENCE_MARGIN of max(|worst|, 1) instead, so that it still spans a
    non-zero width and does not zero the hypervolume. None without vectors."""
    if not vectors:
        return None
    ref = []
    for column in zip(*vectors):
        worst, span = max(column), max(column) - min(column)
        ref.append(worst + REFERENCE_MARGIN * (span if span > 0 else max(abs(worst), 1.0)))
    return tuple(ref)


def hypervolume_history(steps: Iterable[tuple[int, Vector | None]], reference: Vector | None) \
        -> tuple[list[int], list[float]]:
    """Cumulative tokens and the hypervolume of the completed points against `reference` after each step.

    A step is (the tokens it spent, its objective vector when it completed, else None); with no reference or no
    completed point yet the hypervolume is 0.
    """
    tokens, values, done, spent = [], [], [], 0
    for spent_here, v in steps:
        spent += spent_here
        if v is not None:
            done.append(tuple(v))
        tokens.append(spent)
        values.append(float(hypervolume(done, reference)) if done and reference else 0.0)
    return tokens, values


def tie_margin(sd: float, seeds_per_trial: int = 1) -> float:
    """Two standard errors of the difference of two trials' qualities, each the mean of `seeds_per_trial` seeds
    of a proxy whose one-seed quality has standard deviation `sd`: TIE_SE * sqrt(2) * sd / sqrt(seeds)."""
    return TIE_SE * math.sqrt(2.0) * sd / math.sqrt(seeds_per_trial)


def study_noise(adequacy: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The proxy's seed noise stored with a study (nas.evaluation.noise.SeedNoise as a dict, in its adequacy record), or
    None (not measured: adequacy=skip with nothing cached, or a study that predates it)."""
    noise = (adequacy or {}).get("noise")
    return noise if isinstance(noise, Mapping) and _finite(noise.get("margin")) is not None else None


def quality_margin(adequacy: Mapping[str, Any] | None) -> float:
    """The study's tie margin on quality (0 when its noise is unknown: plain dominance)."""
    noise = study_noise(adequacy)
    return float(noise["margin"]) if noise is not None else 0.0


def noise_verdict(qualities: Sequence[float], adequacy: Mapping[str, Any] | None) -> str:
    """One line on the front's quality spread against the study's seed noise."""
    noise = study_noise(adequacy)
    if noise is None:
        return ("quality noise: not measured for this study (adequacy=skip, nothing cached): the front is plain "
                "Pareto, and quality differences of any size count")
    margin, sd = float(noise["margin"]), float(noise["sd"])
    head = (f"quality noise: seed sd {sd:.4f} ({len(noise['qualities'])} seeds of the dense baseline"
            f"{', cached' if noise.get('cached') else ''}; {noise.get('seeds_per_trial', 1)} per trial): "
            f"differences within {margin:.4f} are ties")
    if len(qualities) < 2:
        return f"{head}; the front has one point"
    spread = max(qualities) - min(qualities)
    if spread <= margin:
        return (f"{head}; the front's qualities span {spread:.4f}: indistinguishable at this proxy; decided by "
                "compute")
    best = min(qualities)
    tied = sum(1 for q in qualities if q - best <= margin)
    return (f"{head}; the front's qualities span {spread:.4f}, beyond the noise; {tied} of {len(qualities)} points "
            "are within it of the best (itself included)")
