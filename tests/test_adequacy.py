"""nas.evaluation.adequacy: each check against known metrics, the structural depth check, and one real (micro) run."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from nas.evaluation import adequacy
from nas.evaluation.data import TaskSpec
from nas.evaluation.proxy import ProxySpec, load_proxy, proxy_arch
from nas.study.space import load, path_of

TINY = load_proxy("tiny")
LONG = TaskSpec(name="long_range", kind="mixed", mqar={"vocab": 16, "num_pairs": 4, "min_distance": 4},
                objective={"bpb_late": 1.0, "mqar_error": 1.0})


def _spec(name: str, proxy: ProxySpec = TINY):
    return load(path_of(name), proxy_arch({}, proxy))


def test_recall_beyond_the_largest_window_decides_the_attention_check() -> None:
    spec = _spec("sparse_attn")
    assert adequacy.largest_window(spec, TINY) == 16
    metrics = {"mqar_acc_dist4": 0.0, "mqar_acc_dist8": 0.0, "mqar_acc_dist16": 0.5, "mqar_acc_dist32": 0.4,
               "bpb_late": 2.0, "bpb_pos0": 2.5}
    checks, fix = adequacy.attention_checks(metrics, spec, TINY, LONG)
    assert [c["passed"] for c in checks] == [True, True]
    assert checks[0]["measured"] == pytest.approx(0.45) and checks[0]["threshold"] == pytest.approx(0.25 + 0.15)
    # near recall does not count: only the buckets at or beyond the largest window (16)
    weak = {**metrics, "mqar_acc_dist4": 1.0, "mqar_acc_dist16": 0.3, "mqar_acc_dist32": 0.3, "bpb_late": 2.49}
    checks, fix = adequacy.attention_checks(weak, spec, TINY, LONG)
    assert [c["passed"] for c in checks] == [False, False]
    assert "proxy.seq_len=64" in fix


def test_the_largest_window_of_a_space_with_window_choices() -> None:
    from nas.profiles import REPO_ROOT

    grid = load(REPO_ROOT / "benchmarks" / "spaces" / "sparse_attn_grid.yaml", proxy_arch({}, TINY))
    assert adequacy.largest_window(grid, TINY) == 16  # categorical windows 4..16


def test_a_task_without_recall_or_a_context_without_far_queries_fails() -> None:
    spec = _spec("sparse_attn")
    checks, fix = adequacy.attention_checks({"bpb_late": 1.0, "bpb_pos0": 2.0}, spec, TINY, TaskSpec(kind="lm"))
    assert not checks[0]["passed"] and fix == "task=long_range"
    checks, _ = adequacy.attention_checks({"mqar_acc_dist8": 1.0}, spec, TINY, LONG)
    assert not checks[0]["passed"] and "no query is that far" in checks[0]["meaning"]


def test_unigram_entropy_matches_closed_forms() -> None:
    assert adequacy.unigram_entropy(np.arange(256, dtype=np.uint8)) == pytest.approx(8.0)
    assert adequacy.unigram_entropy(np.array([1, 1, 1, 2], dtype=np.uint8)) == pytest.approx(
        -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25)))


def test_two_layers_merge_sharing_patterns_that_four_layers_keep_apart() -> None:
    check, fix = adequacy.depth_check(_spec("sharing"), TINY)
    assert not check["passed"] and check["measured"] > 0 and "one model" in check["meaning"]
    assert fix.startswith("proxy.n_layers=4")
    deep = load_proxy("tiny_deep")
    check, _ = adequacy.depth_check(_spec("sharing", deep), deep)
    assert check["passed"] and check["measured"] == 0


@pytest.mark.parametrize("space", ["sharing", "full"])
def test_no_two_sharing_choices_of_a_shipped_space_are_one_model(space: str) -> None:
    # regression: `sequence` at its default M = L/2 is [0, 0, 1, 1, ..], the map of `adjacent`, at every depth:
    # a search trained both and its front could hold the same model twice
    spec = _spec(space, load_proxy("tiny_deep"))
    configs = [spec.knobs(c) for c in adequacy._sharing_configs(spec)]
    structures = [adequacy._structure(c, TINY, adequacy.COMPARE_DEPTH) for c in configs]
    same = [(a, b) for i, a in enumerate(configs) for j, b in enumerate(configs[i + 1:], i + 1)
            if structures[i] == structures[j]]
    assert len(configs) > 10 and not same, same


def test_coarsest_format_of_the_precision_space() -> None:
    assert adequacy.coarsest_format(_spec("precision")) == "fp8_e5m2"
    assert adequacy.coarsest_format(_spec("sparse_attn")) is None


def test_a_micro_proxy_is_refused_with_its_fix(tmp_path) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("def f(x):\n    return x * 2\n" * 400)
    micro = replace(load_proxy("tiny"), name="micro", n_layers=2, d_model=32, n_heads=4, seq_len=32, batch_size=4,
                    warmup_steps=2, budget_tokens=8 * 128, rungs=2, eval_batches=1)
    task = replace(LONG, corpus=str(corpus))
    spec = load(path_of("sparse_attn"), proxy_arch({}, micro))
    result = adequacy.check_adequacy(spec, micro, task, device="cpu", cache_dir=tmp_path)
    assert not result.passed  # 8 steps cannot learn recall
    assert result.summary.startswith("proxy 'micro' cannot resolve the sparse_attn knobs")
    assert "\n" not in result.summary
    assert "proxy.seq_len" in result.fix
    assert {c["name"] for c in result.checks} >= {"recall at distances >= 16 (largest window)"}
    assert result.to_dict()["checks"] == result.checks
