"""nas.evaluation.proxy: rungs, determinism, bad inputs, and the MQAR / unigram-entropy oracles."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from nas.evaluation.data import TaskSpec, load_corpus
from nas.evaluation.proxy import load_proxy, proxy_arch, rung_steps, train_proxy
from nas.evaluation.scoring import NonFiniteLoss, quality
from nas.model import ArchConfig

MICRO = replace(load_proxy("tiny"), name="micro", n_layers=2, d_model=32, n_heads=4, seq_len=32, batch_size=4,
                warmup_steps=2, budget_tokens=16 * 4 * 32, rungs=3, eval_batches=1)


@pytest.fixture
def text_task(tmp_path) -> TaskSpec:
    (tmp_path / "c.txt").write_text("def add(a, b):\n    return a + b\n\n" * 400)
    return TaskSpec(corpus=str(tmp_path / "c.txt"))


def test_rungs_are_geometric_and_end_at_the_budget() -> None:
    assert rung_steps(256, 4, 2.0) == [32, 64, 128, 256]
    assert rung_steps(3, 4, 2.0) == [1, 2, 3]


def test_reports_at_each_rung_with_the_last_final(text_task, tmp_path) -> None:
    reports = [r.to_dict() for r in train_proxy({}, MICRO, text_task, cache_dir=tmp_path)]
    assert [r["step"] for r in reports] == [4, 8, 16]
    assert [r["tokens"] for r in reports] == [s * 4 * 32 for s in (4, 8, 16)]
    assert [r["final"] for r in reports] == [False, False, True]
    last = reports[-1]
    assert last["val_bpb"] == pytest.approx(last["val_loss"] / math.log(2))
    assert 0.0 <= last["val_acc"] <= 1.0 and last["val_acc"] == last["metrics"]["byte_acc"]
    assert quality(last, text_task) == pytest.approx(last["val_bpb"])


def test_same_seed_same_numbers(text_task, tmp_path) -> None:
    def run(seed: int) -> list[dict]:
        return [{k: v for k, v in r.to_dict().items() if k != "wall_s"}
                for r in train_proxy({"attention": "local_global", "window": 8, "global_tokens": 2, "gate": "dynamic"},
                                     MICRO, text_task, seed=seed, cache_dir=tmp_path)]

    first = run(1)
    assert first == run(1)
    assert first != run(2)
    assert len(first[-1]["gate_stats"]["local_mean"]) == MICRO.n_layers  # per layer, per head
    assert len(first[-1]["gate_stats"]["local_mean"][0]) == MICRO.n_heads


def test_bad_inputs_are_rejected_before_training(text_task, tmp_path) -> None:
    with pytest.raises(ValueError, match="budget_tokens=100 is too small for one rung"):
        train_proxy({}, MICRO, text_task, budget_tokens=100, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="task='imagenet' is unknown"):
        train_proxy({}, MICRO, "imagenet")
    with pytest.raises(ValueError, match="proxy='huge' is unknown"):
        train_proxy({}, "huge", text_task)
    with pytest.raises(ValueError, match="task.corpus='/no/such/corpus' does not exist"):
        train_proxy({}, MICRO, TaskSpec(corpus="/no/such/corpus"))


def test_divergence_raises_non_finite_loss(text_task, tmp_path) -> None:
    reports = train_proxy({}, replace(MICRO, lr=1e6, warmup_steps=0, grad_clip=1e9), text_task, cache_dir=tmp_path)
    with pytest.raises(NonFiniteLoss, match="training loss is (nan|inf) at step") as err:
        list(reports)
    assert err.value.step >= 1 and not math.isfinite(err.value.value)


def test_adaptive_precision_switches_when_the_loss_settles(text_task, tmp_path) -> None:
    # threshold 1.0: |mean(recent) - mean(before)| < |mean(before)| holds once 2*window losses are in
    arch = {"precision": {"ffn": "adaptive", "adaptive_window": 3, "adaptive_threshold": 1.0}}
    reports = list(train_proxy(arch, MICRO, text_task, cache_dir=tmp_path))
    assert reports[0].precision_switch_step is None  # rung at step 4 < 2 * window
    assert reports[-1].precision_switch_step == 6


def test_threads_are_set_for_the_run_and_restored(text_task, tmp_path) -> None:
    before = torch.get_num_threads()
    short = replace(MICRO, budget_tokens=2 * MICRO.tokens_per_step)
    seen = [torch.get_num_threads() for _ in train_proxy({}, short, text_task, threads=2, cache_dir=tmp_path)]
    assert seen == [2, 2]
    assert torch.get_num_threads() == before


def test_proxy_arch_takes_knobs_and_proxy_sizes() -> None:
    tiny = load_proxy("tiny")
    target = ArchConfig(seq_len=2048, n_layers=12, d_model=768, n_heads=12, attention="local_global", window=512,
                        global_tokens=4, kv_heads=3, sharing="cycle_rev", unique_layers=6, sharing_scope="both")
    arch = proxy_arch(target, tiny)
    assert (arch.n_layers, arch.d_model, arch.n_heads, arch.seq_len) == (2, 64, 4, 64)
    assert arch.window == 512 * 64 // 2048 and arch.global_tokens == 4  # a window is a share of the context
    assert arch.kv_heads == 1  # 3 of 12 heads -> 1 of 4
    assert arch.unique_layers == 1 and arch.sharing == "cycle_rev"  # 6 of 12 layers -> 1 of 2
    assert proxy_arch({"kv_heads": 2, "attention": "local_global", "window": 48}, tiny).window == 48  # proxy units
    with pytest.raises(ValueError, match="kv_heads"):
        proxy_arch({"kv_heads": 3}, tiny)  # ... and refused, not rounded, when the proxy cannot honour it
    with pytest.raises(ValueError, match=r"the knobs do not fit proxy 'tiny' "
                                         r"\(ArchConfig.window=321 is invalid: must be <= seq_len=64\)"):
        proxy_arch({"attention": "local_global", "window": 321}, tiny)
    with pytest.raises(ValueError, match="arch.windw is not a known field"):
        proxy_arch({"windw": 3}, tiny)


def test_dense_solves_mqar_that_a_short_window_cannot_reach() -> None:
    # queries sit >= 16 positions after their keys; 2 layers of window 8 reach back at most 14
    proxy = replace(load_proxy("tiny"), name="mqar", n_layers=2, d_model=64, n_heads=4, seq_len=32, batch_size=16,
                    lr=3e-3, weight_decay=0.0, warmup_steps=20, min_lr_ratio=1.0, budget_tokens=300 * 16 * 32, rungs=1,
                    eval_batches=4)
    task = TaskSpec(kind="mqar", mqar={"vocab": 16, "num_pairs": 2, "min_distance": 16})
    chance = 1 / 8  # 8 possible values
    dense = list(train_proxy({}, proxy, task))[-1]
    local = list(train_proxy({"attention": "local_global", "window": 8, "global_tokens": 0}, proxy, task))[-1]
    assert dense.metrics["mqar_acc"] > 0.6
    assert local.metrics["mqar_acc"] < 2 * chance
    assert quality(dense, task) == pytest.approx(1 - dense.val_acc)


def test_lm_loss_goes_below_the_unigram_entropy_of_the_stdlib(tmp_path) -> None:
    corpus = load_corpus(cache_dir=tmp_path)
    counts = np.bincount(np.asarray(corpus.val), minlength=256).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    unigram_bits = float(-(p * np.log2(p)).sum())
    proxy = replace(load_proxy("tiny"), budget_tokens=60 * 16 * 128, rungs=1)
    report = list(train_proxy({}, proxy, "lm", cache_dir=tmp_path))[-1]
    assert report.val_bpb < unigram_bits - 0.2  # 60 steps: ~4.14 against ~4.60 bits


def test_command_line_runs_one_proxy_without_littering(tmp_path) -> None:
    env = {**os.environ, "NAS_CACHE_DIR": str(tmp_path / "cache")}
    (tmp_path / "c.txt").write_text("print('hello')\n" * 500)
    out = subprocess.run(
        [sys.executable, "-m", "nas.evaluation.proxy", "proxy.eval_batches=1", "budget_tokens=16384",
         "arch.attention=local_global", "arch.window=16", f"task.corpus={tmp_path / 'c.txt'}", "progress=false"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "'attention': 'local_global'" in lines[0] and "'window': 16" in lines[0]
    assert [line.split()[1] for line in lines if line.startswith("rung")] == ["0", "1", "2", "3"]
    assert lines[-1].startswith("quality (1*bpb) = ")
    assert sorted(p.name for p in Path(tmp_path).iterdir()) == ["c.txt", "cache"]


def test_context_growth_trains_rung_phases_at_doubling_lengths_with_constant_tokens(text_task, tmp_path) -> None:
    grow = replace(MICRO, min_context=8, rungs=3, budget_tokens=16 * MICRO.tokens_per_step)
    assert [grow.context_at(k, 3) for k in range(3)] == [8, 16, 32]
    seen: list[tuple[int, int]] = []

    def record(model) -> None:
        model.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape)) if m.training else None)

    reports = list(train_proxy({}, grow, text_task, cache_dir=tmp_path, model_sink=record))
    steps = [r.step for r in reports]  # rungs at 4, 8, 16: phases of 4, 4 and 8 steps
    assert steps == [4, 8, 16]
    assert seen == [(16, 8)] * 4 + [(8, 16)] * 4 + [(4, 32)] * 8  # batch x length = 128 tokens every step
    with pytest.raises(ValueError, match="proxy.min_context=5"):
        replace(MICRO, min_context=5)


def test_per_position_and_per_distance_metrics_add_up_to_the_totals(tmp_path) -> None:
    (tmp_path / "c.txt").write_text("for i in range(10):\n    print(i)\n" * 300)
    task = TaskSpec(kind="mixed", corpus=str(tmp_path / "c.txt"), mqar={"vocab": 16, "num_pairs": 2, "min_distance": 2},
                    objective={"bpb_late": 1.0, "mqar_error": 1.0})
    proxy = replace(MICRO, eval_batches=3)
    final = list(train_proxy({}, proxy, task, cache_dir=tmp_path))[-1].metrics
    buckets = [k for k in final if k.startswith("bpb_pos")]
    assert buckets == ["bpb_pos0", "bpb_pos8", "bpb_pos16"]  # [0, 8), [8, 16), [16, 32)
    widths = {"bpb_pos0": 8, "bpb_pos8": 8, "bpb_pos16": 16}
    assert sum(final[k] * widths[k] for k in buckets) / 32 == pytest.approx(final["bpb"], rel=1e-5)
    assert final["bpb_late"] == pytest.approx(final["bpb_pos16"], rel=1e-6)  # the second half of 32 positions
    assert quality({"metrics": final}, task) == pytest.approx(final["bpb_late"] + 1 - final["mqar_acc"])
    dist = {int(k[len("mqar_acc_dist"):]): v for k, v in final.items() if k.startswith("mqar_acc_dist")}
    assert dist and all(lo & (lo - 1) == 0 and 0.0 <= v <= 1.0 for lo, v in dist.items())
