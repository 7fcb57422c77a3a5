"""Two rankings of the same configurations compared, and a study's proxy beside the free ranking.

A trained proxy is a search's whole cost; the cost model ranks for free by "more compute = better quality". What the
proxy adds is only where it disagrees with that rule beyond its own seed noise, or separates configurations of equal
compute. The fidelity benchmark scores rankings against a reference with these functions; the search's summary and
the dashboard print `free_ranking_verdict` for every study.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Pair = tuple[int, int]

ISO_TOLERANCE = 0.05  # two configurations are of equal compute within 5% of the larger on the primary axis


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


def ordered_right(a: Sequence[float], b: Sequence[float], pairs: Sequence[Pair]) -> int:
    """How many of `pairs` (i, j) `a` orders as `b` does; a tie in `a` orders nothing, so it is not right."""
    return sum((a[i] < a[j]) == (b[i] < b[j]) and a[i] != a[j] for i, j in pairs)


def resolved_pairs(b: Sequence[float], noise: float) -> list[Pair]:
    """The pairs (i < j) whose values in `b` differ by more than `noise`."""
    return [(i, j) for i in range(len(b)) for j in range(i + 1, len(b)) if abs(b[i] - b[j]) > noise]


def iso_compute_pairs(compute: Sequence[float], tolerance: float = ISO_TOLERANCE) -> list[Pair]:
    """The pairs (i < j) whose compute differs by at most `tolerance` of the larger of the two."""
    return [(i, j) for i in range(len(compute)) for j in range(i + 1, len(compute))
            if abs(compute[i] - compute[j]) <= tolerance * max(compute[i], compute[j])]


def beyond_compute(qualities: Sequence[float], primary: Sequence[float], margin: float) -> tuple[list[Pair],
                                                                                                  list[Pair]]:
    """The pairs a proxy's `qualities` separate by more than `margin` that the free ranking (more `primary` compute
    = better quality) cannot give: those ordered against compute, and those of equal compute (ISO_TOLERANCE)."""
    iso = set(iso_compute_pairs(primary))
    separated = resolved_pairs(qualities, margin)
    against = [(i, j) for i, j in separated if (i, j) not in iso
               and (qualities[i] < qualities[j]) != (primary[i] > primary[j])]
    return against, [p for p in separated if p in iso]


def free_ranking_verdict(qualities: Sequence[float], primary: Sequence[float], primary_name: str,
                         margin: float) -> str:
    """One line on what a study's proxy says beyond the free ranking (more `primary` compute = better quality;
    quality lower = better), one quality per configuration: their Kendall tau-b, and of the pairs the proxy separates
    by more than `margin` (its seed-noise tie margin; 0: every difference), how many follow compute, go against it,
    or are of equal compute (within ISO_TOLERANCE): the last two are all the proxy adds to the cost model."""
    head = f"free ranking (more {primary_name} = better quality)"
    if len(qualities) < 2:
        return f"{head}: fewer than two configurations, nothing to compare"
    tau = kendall_tau_b(qualities, [-c for c in primary])
    iso = iso_compute_pairs(primary)
    separated = resolved_pairs(qualities, margin)
    contrary, equal = beyond_compute(qualities, primary, margin)
    against = len(contrary)
    follow = len(separated) - against - len(equal)
    n_pairs = len(qualities) * (len(qualities) - 1) // 2
    beyond = f"beyond its noise ({margin:.4f})" if margin > 0 else "by any difference (its noise is not measured)"
    agreement = "undefined (one compute or one quality)" if tau is None else f"{tau:.3f}"
    told = against + len(equal)
    adds = (f"What the proxy adds to the cost model is those {told} pair{'s' * (told != 1)}, where a small proxy can "
            "also be biased: check them at a reference (nas.export verify=true)." if told else
            "It adds nothing the cost model does not say for free.")
    return (f"{head} over {len(qualities)} configurations: Kendall tau-b with the proxy's quality {agreement}. "
            f"The proxy separates {len(separated)} of {n_pairs} pairs {beyond}: {follow} as compute orders them, "
            f"{against} against it, {len(equal)} of the {len(iso)} equal-compute pairs (within "
            f"{ISO_TOLERANCE:.0%}). {adds}")
