"""nas.study.dominance: the one dominance rule, against a hand-computed 3-objective front and Optuna's best_trials."""

from __future__ import annotations

import random

import optuna
import pytest

from nas.study.dominance import dominates, dominates_by_margin, pareto_front

optuna.logging.set_verbosity(optuna.logging.WARNING)

# (quality, flops_ratio, memory_ratio), all minimised. By hand: 0 is the best quality; 1 the least flops; 2 the
# least memory; 3 ties 2 on quality and flops but uses more memory (dominated by 2); 4 is worse than 0 everywhere;
# 5 is equal to 1 (equal points both stay); 6 trades between 0 and 2 and is beaten by neither.
POINTS = [(1.0, 0.9, 0.9), (1.4, 0.3, 0.8), (1.2, 0.6, 0.4), (1.2, 0.6, 0.5), (1.1, 0.95, 0.95), (1.4, 0.3, 0.8),
          (1.1, 0.7, 0.7)]
FRONT = [0, 1, 2, 5, 6]


def test_hand_computed_three_objective_front() -> None:
    assert pareto_front(POINTS) == FRONT
    assert dominates(POINTS[2], POINTS[3]) and dominates(POINTS[0], POINTS[4])
    assert not dominates(POINTS[1], POINTS[5]) and not dominates(POINTS[5], POINTS[1])  # equal: neither
    assert not dominates(POINTS[0], POINTS[6]) and not dominates(POINTS[6], POINTS[0])


def _optuna_front(points: list[tuple[float, ...]]) -> set[int]:
    study = optuna.create_study(directions=["minimize"] * len(points[0]))
    for p in points:
        study.add_trial(optuna.trial.create_trial(values=list(p)))
    return {t.number for t in study.best_trials}


@pytest.mark.parametrize("dims", [2, 3, 4])
@pytest.mark.parametrize("seed", range(4))
def test_random_fronts_match_optunas_best_trials(dims: int, seed: int) -> None:
    rng = random.Random(seed)
    points = [tuple(round(rng.uniform(0, 1), 1) for _ in range(dims)) for _ in range(60)]  # coarse: ties, duplicates
    assert set(pareto_front(points)) == _optuna_front(points)


def test_margin_dominance_is_strict_on_the_first_objective_and_weak_on_the_rest() -> None:
    trial = (2.0, 0.6, 0.5)
    assert dominates_by_margin((1.9, 0.6, 0.5), trial, 0.01)  # better quality beyond 1%, equal compute
    assert not dominates_by_margin((1.99, 0.5, 0.4), trial, 0.01)  # within the margin
    assert not dominates_by_margin((1.0, 0.5, 0.6), trial, 0.01)  # more memory
    assert not dominates_by_margin((2.0, 0.1, 0.1), trial, 0.0)  # equal quality never counts, even with margin 0
    assert dominates_by_margin((-2.1, 1.0), (-2.0, 1.0), 0.01)  # |quality| for negative objectives
    with pytest.raises(ValueError, match="different lengths"):
        dominates((1.0, 2.0), (1.0,))


def test_hypervolume_matches_closed_forms_and_optunas() -> None:
    import numpy as np
    from optuna._hypervolume import compute_hypervolume  # oracle only: Optuna's own (private) implementation

    from nas.study.dominance import hypervolume

    assert hypervolume([(1.0, 1.0)], (3.0, 2.0)) == pytest.approx(2.0)  # one box: (3-1) x (2-1)
    assert hypervolume([(1.0, 2.0), (2.0, 1.0)], (3.0, 3.0)) == pytest.approx(3.0)  # boxes 2 + 2, overlap 1
    assert hypervolume([(4.0, 0.0)], (3.0, 3.0)) == 0.0  # outside the reference box
    rng = np.random.default_rng(0)
    for k in (2, 3, 4):
        points = rng.random((12, k))
        ref = np.full(k, 1.1)
        assert hypervolume(points.tolist(), ref.tolist()) == pytest.approx(compute_hypervolume(points, ref), rel=1e-9)


def test_a_quality_margin_makes_differences_within_it_ties() -> None:
    a, b = (2.470, 0.5), (2.481, 1.0)  # a better and cheaper, by less than the margin on quality
    assert dominates(a, b) and not dominates(a, b, margin=0.074)
    assert dominates((2.400, 0.5), b, margin=0.074)  # better by more than the margin: dominates
    assert dominates((2.407, 0.5), b, margin=0.074)  # by exactly the margin and strictly cheaper: dominates
    assert not dominates((2.407, 1.0), b, margin=0.074)  # by exactly the margin at equal compute: a tie
    assert not dominates((2.300, 1.1), b, margin=0.074)  # never when it costs more
    assert dominates((1.0, 0.5), (1.0, 1.0)) and not dominates((1.0, 0.5), (1.0, 1.0), margin=0.01)
    with pytest.raises(ValueError, match="margin=-0.1 is invalid"):
        dominates(a, b, margin=-0.1)
    points = [(2.470, 0.5), (2.481, 1.0), (2.600, 0.9), (2.540, 0.4)]
    assert pareto_front(points) == [0, 3]
    # with margin 0.074: 2 (2.600 at 0.9) is beaten by 0 (2.470 at 0.5) by 0.13 and stays dominated; 1 and 0 tie
    assert pareto_front(points, margin=0.074) == [0, 1, 3]


@pytest.mark.parametrize("seed", range(5))
def test_the_margin_front_is_the_brute_force_one(seed: int) -> None:
    rng = random.Random(seed)
    points = [(round(rng.uniform(2.0, 2.3), 3), rng.choice([0.25, 0.5, 0.75, 1.0]), rng.random()) for _ in range(40)]
    for margin in (0.0, 0.02, 0.1):
        brute = [i for i, p in enumerate(points) if not any(dominates(q, p, margin) for q in points)]
        assert pareto_front(points, margin) == brute
