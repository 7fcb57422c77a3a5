"""Pareto dominance over objective vectors, every objective minimised: the one definition the search, pruner,
export and dashboards use (where an Optuna study is at hand, `study.best_trials` computes the same front)."""

from __future__ import annotations

from collections.abc import Sequence

Vector = Sequence[float]


def dominates(a: Vector, b: Vector) -> bool:
    """a Pareto-dominates b: no worse on every objective and strictly better on at least one."""
    if len(a) != len(b):
        raise ValueError(f"dominates: vectors of different lengths ({len(a)} and {len(b)})")
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def dominates_by_margin(a: Vector, b: Vector, margin: float) -> bool:
    """a beats b on the first objective by more than `margin` * |b[0]| and is no worse on every other one.

    The pruner's test (first objective: quality at a rung; the rest: compute), stricter than dominance on the
    first objective so that a peer within noise of b never counts against it.
    """
    if len(a) != len(b):
        raise ValueError(f"dominates_by_margin: vectors of different lengths ({len(a)} and {len(b)})")
    return a[0] < b[0] - margin * abs(b[0]) and all(x <= y for x, y in zip(a[1:], b[1:]))


def pareto_front(points: Sequence[Vector]) -> list[int]:
    """Indices (in input order) of the points no other point dominates; equal points all stay."""
    return [i for i, p in enumerate(points) if not any(dominates(q, p) for q in points)]
