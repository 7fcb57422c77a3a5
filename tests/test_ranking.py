"""Rankings compared (nas.study.ranking): Kendall tau-b and a study's proxy beside the free ranking, by hand."""

from __future__ import annotations

import pytest

from nas.study.ranking import beyond_compute, free_ranking_verdict, kendall_tau_b


def test_kendall_tau_b_hand_computed():
    assert kendall_tau_b([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)  # 5 concordant, 1 discordant
    assert kendall_tau_b([1, 1, 2, 3], [1, 2, 2, 3]) == pytest.approx(0.8)  # C=4, D=0, one tie each: 4/sqrt(5*5)
    assert kendall_tau_b([1, 2, 3], [3, 2, 1]) == -1.0
    assert kendall_tau_b([1, 2, 3], [5, 5, 5]) is None


def test_free_ranking_verdict_counts_what_the_proxy_says_beyond_compute():
    # compute 0.25 and 0.26 are equal within 5%; every other pair differs
    follows = free_ranking_verdict([1.0, 2.0, 3.0, 2.5], [1.0, 0.5, 0.25, 0.26], "flops_ratio", 0.1)
    assert "over 4 configurations: Kendall tau-b with the proxy's quality 1.000" in follows
    assert "separates 6 of 6 pairs beyond its noise (0.1000): 5 as compute orders them, 0 against it, 1 of the 1 " \
           "equal-compute pairs" in follows and "adds to the cost model is those 1 pair, " in follows
    # configuration 1 is cheaper than 2 and better, and 3 cheaper than 2 and better: two pairs against compute
    against = free_ranking_verdict([1.0, 2.0, 3.0, 2.5], [1.0, 0.25, 0.5, 0.26], "flops_ratio", 0.1)
    assert "3 as compute orders them, 2 against it, 1 of the 1 equal-compute pairs" in against
    assert "is those 3 pairs, " in against


def test_free_ranking_verdict_within_the_noise_and_without_it():
    tied = free_ranking_verdict([2.0, 2.05, 2.1], [1.0, 0.7, 0.4], "flops_ratio", 0.2)
    assert "separates 0 of 3 pairs" in tied and "adds nothing the cost model does not say for free" in tied
    unmeasured = free_ranking_verdict([2.0, 2.05], [1.0, 0.4], "flops_ratio", 0.0)
    assert "by any difference (its noise is not measured): 1 as compute orders them" in unmeasured
    assert "undefined" in free_ranking_verdict([2.0, 2.0], [1.0, 0.4], "flops_ratio", 0.0)
    assert free_ranking_verdict([2.0], [1.0], "flops_ratio", 0.0).endswith("fewer than two configurations, "
                                                                             "nothing to compare")


def test_beyond_compute_is_what_the_free_ranking_cannot_say():
    # 1 is cheaper than 2 and better, 3 cheaper than 2 and better: against compute; 1 and 3 are equal compute
    against, equal = beyond_compute([1.0, 2.0, 3.0, 2.5], [1.0, 0.25, 0.5, 0.26], 0.1)
    assert against == [(1, 2), (2, 3)] and equal == [(1, 3)]
    assert beyond_compute([1.0, 2.0, 3.0, 2.5], [1.0, 0.25, 0.5, 0.26], 0.6) == ([(1, 2)], [])  # 0.5 apart: ties
