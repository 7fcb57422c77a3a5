"""The context ladder's verdict on cost tables whose answer is known by construction, and its grid."""

from __future__ import annotations

import importlib.util
import math
import random
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "context_ladder.py"


def _ladder():
    spec = importlib.util.spec_from_file_location("context_ladder_bench", SCRIPT)
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


L = _ladder()
GRID = L.cells()


def _seed_costs(cost, noise_sd, seeds=2, rng_seed=0):
    """Per-seed costs: the true cost of each cell plus Gaussian seed noise."""
    rng = random.Random(rng_seed)
    return {c: [cost(*c) + rng.gauss(0.0, noise_sd) for _ in range(seeds)] for c in GRID}


def test_grid_and_classes_are_the_ladders():
    assert GRID == [(64, 8), (64, 16), (128, 8), (128, 16), (128, 32), (256, 8), (256, 16), (256, 32)]
    assert L.equivalence_classes("context_share", GRID) == [[(128, 8), (256, 16)], [(64, 8), (128, 16), (256, 32)],
                                                            [(64, 16), (128, 32)]]
    assert L.equivalence_classes("context_tokens", GRID) == [[(64, 8), (128, 8), (256, 8)],
                                                             [(64, 16), (128, 16), (256, 16)], [(128, 32), (256, 32)]]
    with pytest.raises(ValueError, match="rule='share'"):
        L.equivalence_classes("share", GRID)


def test_share_consistent_costs_choose_the_share_rule():
    decided = L.decide(_seed_costs(lambda s, w: 0.4 * math.log2(s / w), 0.005))
    assert decided["rule"] == "context_share"
    assert decided["share_spread"] < 0.02 < decided["count_spread"]


def test_count_consistent_costs_choose_the_token_rule():
    decided = L.decide(_seed_costs(lambda s, w: 0.8 / w, 0.001))
    assert decided["rule"] == "context_tokens"
    assert decided["count_spread"] < decided["share_spread"] - decided["noise"]


def test_costs_within_seed_noise_are_undecided():
    for rng_seed in range(5):  # no cost at all, only seed noise: neither rule is tighter beyond it
        assert L.decide(_seed_costs(lambda s, w: 0.0, 0.05, rng_seed=rng_seed))["rule"] == "undecided"
    # a share-shaped cost smaller than the noise is not a verdict either
    assert L.decide(_seed_costs(lambda s, w: 0.01 * math.log2(s / w), 0.05))["rule"] == "undecided"


def test_statistic_by_hand():
    cost = {(64, 8): 0.3, (128, 16): 0.1, (256, 32): 0.2}
    assert L.spread(cost, [[(64, 8), (128, 16), (256, 32)]]) == pytest.approx((0.2 + 0.1 + 0.1) / 3)
    assert math.isnan(L.spread(cost, []))
    noise, sd, dof = L.cost_noise({(64, 8): [1.0, 3.0], (128, 16): [2.0, 2.0]})
    assert (sd, dof) == (pytest.approx(1.0), 2)  # (1 + 1 + 0 + 0) / 2
    assert noise == pytest.approx(2 * 1.0 * math.sqrt(2 / 2))
    assert L.verdict(0.1, 0.3, 0.1) == "context_share"
    assert L.verdict(0.3, 0.1, 0.1) == "context_tokens"
    assert L.verdict(0.1, 0.15, 0.1) == "undecided"
    assert L.verdict(0.1, 0.3, math.nan) == "undecided"


def test_beyond_window_matches_mqar_batches():
    from nas.evaluation.data import MQARSpec, mqar_batch

    spec = MQARSpec(num_pairs=4)
    for s, w in ((64, 8), (256, 32)):
        _, y, dist = mqar_batch(spec, 1500, s, torch.Generator().manual_seed(0))
        d = dist[y != -100]
        measured = float((d > w).float().mean())
        assert L.beyond_window(w, s, spec.min_distance, spec.max_distance) == pytest.approx(measured, abs=0.03)


def test_ladder_proxy_keeps_tokens_per_step_and_validation_sequences():
    from nas.evaluation.proxy import load_proxy

    base = load_proxy("tiny")
    for s in L.CONTEXTS:
        p = L.ladder_proxy(base, s)
        assert (p.seq_len, p.tokens_per_step, p.budget_tokens) == (s, base.tokens_per_step, base.budget_tokens)
        assert p.eval_batches * p.batch_size == base.eval_batches * base.batch_size


def test_report_from_a_synthetic_log():
    """The report reads a log of 22 runs and its last line carries the verdict of their costs."""
    from nas.evaluation.data import load_task
    from nas.evaluation.proxy import load_proxy

    base, task = load_proxy("tiny"), load_task("long_range")
    runs = {}
    for key, _, proxy, _, knobs, seed in L.ladder_runs(base, task):
        s, w = proxy["seq_len"], knobs.get("window")
        recall = 0.2 if w is None else 0.2 + 0.3 * math.log2(s / w)  # a share-shaped recall cost
        text = 2.0 if w is None else 2.0 + 0.5 / w  # a count-shaped text cost
        jitter = 0.001 * seed
        runs[key] = {"quality": recall + text + jitter,
                     "metrics": {"mqar_acc": 1 - recall - jitter, "bpb_late": text + jitter}}
    lines = L.report(base, task, runs)
    assert len(L.ladder_runs(base, task)) == 22
    assert lines[-1].startswith("context_ladder rule=context_share ")
    assert " recall_rule=context_share " in lines[-1] and " text_rule=context_tokens " in lines[-1]
    del runs[next(iter(runs))]
    assert L.report(base, task, runs)[0].startswith("context ladder: 21 of 22 runs recorded")
