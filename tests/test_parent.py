"""nas.evaluation.parent: the inherit-and-distill proxy kind (the parent's cache, its digest, the rung reports)."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest
import torch

import nas.evaluation.parent as parent_mod
from nas.device import resolve_device
from nas.evaluation.data import TaskData, TaskSpec
from nas.evaluation.proxy import ProxySpec, distill_loss, load_proxy, proxy_arch, train_proxy

INHERIT = replace(load_proxy("tiny"), name="micro_inherit", n_layers=2, d_model=32, n_heads=4, seq_len=32,
                  batch_size=4, warmup_steps=2, budget_tokens=8 * 4 * 32, rungs=2, eval_batches=1, evaluation="inherit",
                  parent_budget_tokens=16 * 4 * 32, parent_warmup_steps=2, distill_kl_weight=1.0)
GATED = {"attention": "local_global", "window": 8, "global_tokens": 2, "gate": "dynamic"}


@pytest.fixture
def task(tmp_path) -> TaskSpec:
    (tmp_path / "c.txt").write_text("def add(a, b):\n    return a + b\n\n" * 400)
    return TaskSpec(kind="mixed", corpus=str(tmp_path / "c.txt"), objective={"bpb_late": 1.0, "mqar_error": 1.0})


@pytest.fixture
def count(monkeypatch) -> list[int]:
    """How many times a parent was trained."""
    calls = [0]
    real = parent_mod._train_parent

    def counted(*args, **kwargs):
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(parent_mod, "_train_parent", counted)
    return calls


def _load(proxy: ProxySpec, task: TaskSpec, folder, seed: int = 0):
    data = {proxy.seq_len: TaskData(task, proxy.seq_len, cache_dir=folder)}
    return parent_mod.load_parent(proxy_arch({}, proxy), proxy, task, data, seed, 1, resolve_device("cpu"),
                                  parent_dir=folder / "parents")


def test_a_cached_parent_is_not_trained_again(task, tmp_path, count) -> None:
    first, digest = _load(INHERIT, task, tmp_path)
    second, again = _load(INHERIT, task, tmp_path)
    assert count[0] == 1 and digest == again
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)
    assert sorted(p.name for p in (tmp_path / "parents").iterdir()) == [f"{digest}.lock", f"{digest}.pt"]


def test_racing_trials_train_the_parent_once(task, tmp_path, count) -> None:
    digests: list[str] = []
    threads = [threading.Thread(target=lambda: digests.append(_load(INHERIT, task, tmp_path)[1])) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert count[0] == 1 and len(set(digests)) == 1 and len(digests) == 3
    assert not [p for p in (tmp_path / "parents").iterdir() if p.suffix == ".tmp"]


def test_the_digest_follows_what_determines_the_parent(task, tmp_path) -> None:
    def digest(proxy: ProxySpec, seed: int = 0, task: TaskSpec = task) -> str:
        data = TaskData(task, proxy.seq_len, cache_dir=tmp_path)
        return parent_mod.parent_digest(proxy_arch({}, proxy), proxy, task, data, seed)

    base = digest(INHERIT)
    for changed in (replace(INHERIT, parent_lr=1e-3), replace(INHERIT, parent_budget_tokens=32 * 4 * 32),
                    replace(INHERIT, parent_warmup_steps=3), replace(INHERIT, weight_decay=0.0),
                    replace(INHERIT, d_model=64), replace(INHERIT, n_layers=3)):
        assert digest(changed) != base
    assert digest(INHERIT, seed=1) != base
    assert digest(INHERIT, task=replace(task, mqar_fraction=0.25)) != base
    (tmp_path / "other.txt").write_text("x = 1\n" * 2000)
    assert digest(INHERIT, task=replace(task, corpus=str(tmp_path / "other.txt"))) != base
    # what only the trial's own training uses leaves the parent as it is
    for same in (replace(INHERIT, budget_tokens=4 * 4 * 32), replace(INHERIT, distill_kl_weight=0.0),
                 replace(INHERIT, parent_lr=INHERIT.lr, lr=1e-4, warmup_steps=0), replace(INHERIT, name="renamed"),
                 replace(INHERIT, gate_init="default"), replace(INHERIT, eval_batches=2)):
        assert digest(same) == base


def test_an_inherit_run_reports_rungs_like_a_scratch_run(task, tmp_path, count) -> None:
    scratch = [r.to_dict() for r in train_proxy(GATED, replace(INHERIT, evaluation="scratch"), task,
                                                cache_dir=tmp_path)]
    inherit = [r.to_dict() for r in train_proxy(GATED, INHERIT, task, cache_dir=tmp_path,
                                                parent_dir=tmp_path / "parents")]
    assert [r["step"] for r in inherit] == [r["step"] for r in scratch] == [4, 8]
    assert [r["final"] for r in inherit] == [False, True]
    for a, b in zip(scratch, inherit):
        assert a.keys() == b.keys() and a["metrics"].keys() == b["metrics"].keys()
        assert a["gate_stats"].keys() == b["gate_stats"].keys()
    assert all(r["parent"] is None for r in scratch)
    digest = _load(INHERIT, task, tmp_path)[1]
    assert {r["parent"] for r in inherit} == {digest} and count[0] == 1
    # the trial starts from the parent: its first rung beats the same model trained from scratch for as long
    assert inherit[0]["val_loss"] < scratch[0]["val_loss"]


def test_distill_loss_is_zero_against_itself_and_positive_otherwise(task, tmp_path) -> None:
    parent, _ = _load(INHERIT, task, tmp_path)
    x = torch.randint(0, 256, (2, 32))
    with torch.no_grad():
        logits = parent(x)
    assert distill_loss(logits, parent, x, 2.0).abs() < 1e-5
    assert distill_loss(torch.zeros_like(logits), parent, x, 2.0) > 0.01


@pytest.mark.parametrize("key,value", [("evaluation", "distill"), ("gate_init", "zeros"), ("distill_kl_weight", -1),
                                       ("distill_temperature", 0), ("parent_lr", 0), ("parent_budget_tokens", 0),
                                       ("parent_warmup_steps", -1)])
def test_bad_inherit_settings_are_refused_by_name(key, value) -> None:
    with pytest.raises(ValueError, match=f"proxy.{key}="):
        replace(INHERIT, **{key: value})
