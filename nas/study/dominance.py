"""Pareto dominance over objective vectors, every objective minimised: the one definition the search, pruner,
export and dashboards use (where an Optuna study is at hand, `study.best_trials` computes the same front)."""

from __future__ import annotations

from collections.abc import Sequence

Vector = Sequence[float]


def dominates(a: Vector, b: Vector, margin: float = 0.0) -> bool:
    """a Pareto-dominates b: no worse on every objective and strictly better on at least one.

    With `margin` > 0 (additive epsilon-dominance on the first objective, quality): a counts as `margin` worse on
    it than measured, so a dominates b only when it is better in quality by at least `margin` (more than it, unless
    a is strictly cheaper somewhere) and no worse on every other objective: quality differences within the margin
    are ties that never drop a point. margin = 0 is plain dominance.
    """
    if len(a) != len(b):
        raise ValueError(f"dominates: vectors of different lengths ({len(a)} and {len(b)})")
    if margin < 0:
        raise ValueError(f"dominates: margin={margin!r} is invalid: expected a number >= 0")
    shifted = (a[0] + margin, *a[1:]) if margin else a
    return all(x <= y for x, y in zip(shifted, b)) and any(x < y for x, y in zip(shifted, b))


def dominates_by_margin(a: Vector, b: Vector, margin: float) -> bool:
    """a beats b on the first objective by more than `margin` * |b[0]| and is no worse on every other one.

    The pruner's test (first objective: quality at a rung; the rest: compute), stricter than dominance on the
    first objective so that a peer within noise of b never counts against it.
    """
    if len(a) != len(b):
        raise ValueError(f"dominates_by_margin: vectors of different lengths ({len(a)} and {len(b)})")
    return a[0] < b[0] - margin * abs(b[0]) and all(x <= y for x, y in zip(a[1:], b[1:]))


def pareto_front(points: Sequence[Vector], margin: float = 0.0) -> list[int]:
    """Indices (in input order) of the points no other point dominates (`dominates` with `margin` on the first
    objective); equal points all stay.

    A dominator precedes the point it dominates in lexicographic order, and dominance is transitive (with a margin
    too: a beats b by `margin` and b beats c by `margin`, so a beats c by 2 x `margin`), so each point, taken in
    that order, is checked against the front found so far only (O(n log n + n * front)).
    """
    order = sorted(range(len(points)), key=lambda i: tuple(points[i]))
    kept: list[int] = []
    for i in order:
        if not any(dominates(points[j], points[i], margin) for j in kept):
            kept.append(i)
    return sorted(kept)


def hypervolume(points: Sequence[Vector], reference: Vector) -> float:
    """Volume dominated by `points` and bounded by `reference` (all objectives minimised), by slicing.

    Exact: the points are sorted on the last objective, and each slab between consecutive values is the
    (k-1)-dimensional hypervolume of the points below it times its thickness. O(n^k): for the tens of points
    of a study's front.
    """
    inside = [tuple(p) for p in points if all(x < r for x, r in zip(p, reference))]
    if not inside:
        return 0.0
    if len(reference) == 1:
        return reference[0] - min(p[0] for p in inside)
    inside.sort(key=lambda p: p[-1])
    total = 0.0
    for i, p in enumerate(inside):
        upper = inside[i + 1][-1] if i + 1 < len(inside) else reference[-1]
        if upper > p[-1]:
            total += (upper - p[-1]) * hypervolume([q[:-1] for q in inside[: i + 1]], reference[:-1])
    return total
